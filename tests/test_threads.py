"""Threads for training: the adaptive controller, the same-bits check, and what overrides it.

The controller is driven here with made-up step times and a fake clock: no test times
anything, so they hold on a loaded machine.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo import LayerType, rundir, threads
from zoo.build import build_model
from zoo.recipe import resolve_recipe
from zoo.registry import Registry, get_registry
from zoo.spec import load_spec
from zoo.train import train

pytestmark = pytest.mark.usefixtures("fresh_registry")


@pytest.fixture
def no_thread_env(monkeypatch):
    for var in threads.ENV_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# -- the choice ---------------------------------------------------------------------------


def test_the_ladder_doubles_up_to_the_usable_cores(monkeypatch):
    assert threads.ladder(1) == [1]
    assert threads.ladder(2) == [1, 2]
    assert threads.ladder(6) == [1, 2, 4]
    assert threads.ladder(64) == [1, 2, 4, 8]


def test_threads_option_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose(requested=2) == (2, "--threads")


@pytest.mark.parametrize("var", threads.ENV_VARS)
def test_the_usual_environment_variables_leave_torch_as_it_is(no_thread_env, monkeypatch, var):
    monkeypatch.setenv(var, "2")
    assert threads.choose() == (None, var)


def test_without_overrides_the_controller_decides_unless_there_is_one_core(no_thread_env,
                                                                           monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    assert threads.choose() == (None, "adaptive")
    monkeypatch.setattr(threads, "usable_cores", lambda: 1)
    assert threads.choose() == (1, "one core")


def test_other_processes_running_threads_are_read_from_loadavg(tmp_path, monkeypatch):
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("2.10 1.80 1.20 3/467 12345\n")
    monkeypatch.setattr(threads, "LOADAVG", str(loadavg))
    assert threads.others_running() == 2  # this process's own thread left out
    loadavg.write_text("garbled\n")
    assert threads.others_running() is None
    monkeypatch.setattr(threads, "LOADAVG", str(tmp_path / "absent"))
    assert threads.others_running() is None


# -- the controller, with made-up step times ------------------------------------------------


class Machine:
    """A fake machine: each thread count's step time, set by the test; a fake clock."""

    def __init__(self, cost: dict[int, float], others: int | None = 0) -> None:
        self.cost = cost
        self.others = others  # other processes' running threads; None: unknown
        self.clock = 0.0
        self.threads = 0
        self.log: list[int] = []  # the count of every step

    def set_threads(self, n: int) -> None:
        self.threads = n

    def run(self, control: threads.Adaptive, steps: int) -> None:
        for _ in range(steps):
            seconds = self.cost[self.threads]
            self.clock += seconds
            self.log.append(self.threads)
            control.observe(seconds)


def controller(machine: Machine, counts=(1, 2)) -> threads.Adaptive:
    return threads.Adaptive(list(counts), machine.set_threads, now=lambda: machine.clock,
                            others=lambda: machine.others, cores=max(counts))


def test_on_an_idle_machine_it_moves_to_the_faster_count_and_stays():
    m = Machine({1: 0.010, 2: 0.006})
    c = controller(m)
    m.run(c, 2000)
    assert c.current == 2
    assert m.log[-500:].count(2) > 490  # trials of one thread are rare once settled
    assert m.log[:20].count(1) >= threads.FIRST_TRIAL_STEPS  # it starts on one thread


def test_when_another_process_arrives_it_drops_to_one_thread_within_a_few_steps():
    m = Machine({1: 0.010, 2: 0.006})
    c = controller(m)
    m.run(c, 500)
    assert c.current == 2
    m.cost = {1: 0.015, 2: 0.080}  # two busy processes: two threads wait at every barrier
    m.others = 2
    arrived = len(m.log)
    m.run(c, 200)
    on_two = m.log[arrived:].index(1)  # steps until the first step on one thread
    assert on_two <= threads.SUDDEN + 1
    assert c.current == 1
    assert m.log[-100:].count(2) <= 2  # a short trial now and then, no more


def test_no_trial_of_more_threads_while_other_processes_leave_no_idle_core():
    m = Machine({1: 0.015, 2: 0.080}, others=1)
    c = controller(m)
    m.run(c, 5000)
    assert set(m.log) == {1}
    m.others, m.cost = 0, {1: 0.010, 2: 0.006}  # they finished
    m.run(c, 300)  # about 3 s
    assert c.current == 2


def test_where_the_load_is_unknown_losing_trials_back_off_so_they_cost_little():
    m = Machine({1: 0.010, 2: 0.050}, others=None)  # two threads always slower
    c = controller(m)
    m.run(c, 20_000)  # 200 seconds of fake time
    trials = sum(1 for a, b in zip(m.log, m.log[1:], strict=False) if a == 1 and b == 2)
    assert c.current == 1
    assert trials < 20  # backing off to one trial per 32 s
    assert m.log.count(2) / len(m.log) < 0.001  # each losing trial ends after one slow step


def test_when_the_load_goes_away_it_climbs_back():
    m = Machine({1: 0.015, 2: 0.080}, others=None)
    c = controller(m)
    m.run(c, 3000)
    assert c.current == 1
    m.cost = {1: 0.010, 2: 0.006}
    m.run(c, 5000)  # 50 s of fake time: longer than the longest back-off
    assert c.current == 2


def test_a_ladder_of_one_count_never_moves():
    m = Machine({1: 0.01})
    c = controller(m, counts=(1,))
    m.run(c, 100)
    assert set(m.log) == {1}
    assert c.summary() == {"now": 1, "steps": {"1": 100}, "moves": 0}


def test_it_climbs_a_longer_ladder_one_rung_at_a_time():
    m = Machine({1: 0.010, 2: 0.007, 4: 0.005})
    c = controller(m, counts=(1, 2, 4))
    m.run(c, 5000)
    assert c.current == 4
    assert c.moves >= 2


# -- the same-bits check ----------------------------------------------------------------------


def _check(model: nn.Module, batch: int, context: int, counts=(1, 2)) -> str | None:
    torch.manual_seed(1)
    x = torch.randint(0, 27, (batch, context))
    y = torch.randint(0, 27, (batch,))
    return threads.same_bits_on_every_count(threads.probe_step(model, x, y, F.cross_entropy),
                                            list(counts), torch.set_num_threads)


@pytest.mark.parametrize("preset", ["bigram", "mlp", "mlp-bn", "deep-bn", "wavenet",
                                    "transformer"])
def test_every_builtin_preset_gives_the_same_bits_on_one_and_two_threads(restore_threads,
                                                                         preset):
    spec = load_spec(preset)
    torch.manual_seed(0)
    model = build_model(spec, 27)
    model.train()
    assert _check(model, resolve_recipe(spec.train).batch_size, spec.context) is None


class FusedBatchNorm(nn.Module):
    """torch's own BatchNorm1d, whose CPU kernel splits its reduction across threads."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(features)

    def forward(self, x):
        return self.norm(x)


FUSED = LayerType(name="fusedbn", shape=lambda s, p, pl: s,
                  build=lambda s, p, pl: FusedBatchNorm(s[-1]), doc="test layer")


def _registry_with_fused() -> Registry:
    base = get_registry()
    reg = Registry(strict=base.strict)
    reg.layers = {**base.layers, "fusedbn": FUSED}
    reg.presets = dict(base.presets)
    reg.plugins = dict(base.plugins)
    return reg


FUSED_SPEC = {"model": {"context": 3,
                        "layers": [{"type": "embedding", "dim": 10}, "flatten",
                                   {"type": "linear", "out": 200}, "fusedbn", "tanh", "linear"]}}


def test_a_layer_whose_kernel_splits_across_threads_is_named(restore_threads):
    model = build_model(FUSED_SPEC, 27, registry=_registry_with_fused())
    model.train()
    found = _check(model, 512, 3)
    assert found is not None and "differs between 1 and 2 threads" in found


def test_training_such_a_model_keeps_one_thread_and_says_why(tmp_path, no_thread_env,
                                                             monkeypatch, restore_threads):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    lines: list[str] = []
    run = train({**FUSED_SPEC, "train": {"steps": 30, "batch_size": 512}},
                out=tmp_path / "run", progress=False, log=lines.append,
                registry=_registry_with_fused())
    meta = json.loads((run.path / rundir.META).read_text())
    assert meta["threads"] == 1
    assert meta["thread_choice"]["reason"].startswith("one thread: ")
    assert "would change the weights" in meta["thread_choice"]["reason"]
    assert lines[0].startswith("threads: one thread: ")


# -- training with a count that changes: the same bits ---------------------------------------


class Alternating(threads.Adaptive):
    """A controller that changes the thread count after every step: the worst case."""

    def observe(self, seconds: float) -> None:
        self.steps[self.current] += 1
        self.current = self.counts[(self.counts.index(self.current) + 1) % len(self.counts)]
        self.set_threads(self.current)


SAME_BITS_SPEC = {"model": {
    "context": 4,
    "layers": [{"type": "embedding", "dim": 16}, {"type": "flatten_consecutive", "n": 2},
               {"type": "linear", "out": 64}, "batchnorm", "tanh",
               {"residual": ["layernorm", {"type": "linear", "out": 64}, "gelu"]},
               {"type": "dropout", "p": 0.1}, "flatten", {"type": "linear", "out": 64},
               "batchnorm", "tanh", "linear"]},
    "train": {"steps": 40, "batch_size": 512, "eval_every": 20},
}


def test_a_run_whose_thread_count_changes_every_step_ends_with_the_same_bits(
        tmp_path, no_thread_env, monkeypatch, restore_threads):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "Adaptive", Alternating)
    moving = train(SAME_BITS_SPEC, out=tmp_path / "moving", progress=False)
    meta = json.loads((moving.path / rundir.META).read_text())
    assert meta["thread_choice"]["steps"] == {"1": 20, "2": 20}
    fixed = train(SAME_BITS_SPEC, out=tmp_path / "fixed", threads=1, progress=False)
    a = dict(moving.model.state_dict())
    b = dict(fixed.model.state_dict())
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (moving.path / rundir.METRICS).open()]
    fixed_rows = [json.loads(line) for line in (fixed.path / rundir.METRICS).open()]
    assert [r["losses"] for r in rows] == [r["losses"] for r in fixed_rows]
    assert [r["val_loss"] for r in rows] == [r["val_loss"] for r in fixed_rows]
