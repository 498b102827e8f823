"""The thread count training picks: small models one thread, overrides win."""

from __future__ import annotations

import pytest

from zoo import threads
from zoo.build import build_model
from zoo.recipe import resolve_recipe
from zoo.spec import load_spec


@pytest.fixture
def no_thread_env(monkeypatch):
    for var in threads.ENV_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("preset", ["bigram", "mlp", "mlp-bn", "deep-bn", "wavenet"])
def test_every_builtin_preset_trains_on_one_thread(no_thread_env, preset):
    spec = load_spec(preset)
    work = threads.step_work(build_model(spec, 27).num_parameters(),
                             resolve_recipe(spec.train).batch_size, spec.context)
    assert threads.choose(work) == (1, "small model: one thread")


def test_threads_option_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose(1.0, requested=2) == (2, "--threads")


@pytest.mark.parametrize("var", threads.ENV_VARS)
def test_the_usual_environment_variables_leave_torch_as_it_is(no_thread_env, monkeypatch, var):
    monkeypatch.setenv(var, "2")
    assert threads.choose(1e12) == (None, var)


def test_large_steps_get_two_threads_only_when_openmp_sleeps_at_barriers(no_thread_env,
                                                                         monkeypatch):
    monkeypatch.setattr(threads, "_POLICY_AT_TORCH_IMPORT", {"policy": ""})
    assert threads.choose(threads.PARALLEL_WORK)[0] == 1
    monkeypatch.setattr(threads, "_POLICY_AT_TORCH_IMPORT", {"policy": "PASSIVE"})
    monkeypatch.setattr(threads, "_cores", lambda: 16)
    assert threads.choose(threads.PARALLEL_WORK) == (2, "large model")
    monkeypatch.setattr(threads, "_cores", lambda: 1)
    assert threads.choose(threads.PARALLEL_WORK)[0] == 1
