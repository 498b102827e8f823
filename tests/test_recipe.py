"""The recipe: one module, dispatch tables that cover every choice, per-optimizer defaults."""

from __future__ import annotations

import typing

import pytest
import torch
from click.testing import CliRunner

from zoo.cli import main
from zoo.errors import SpecError
from zoo.recipe import (
    MAX_SEED,
    NAMED,
    OPTIMIZERS,
    SCHEDULES,
    OptimizerName,
    Recipe,
    ScheduleName,
    make_optimizer,
    resolve_recipe,
)
from zoo.spec import load_spec


def test_every_choice_has_a_dispatch_entry():
    assert set(OPTIMIZERS) == set(typing.get_args(OptimizerName))
    assert set(SCHEDULES) == set(typing.get_args(ScheduleName))
    fields = Recipe.fields()
    assert set(typing.get_args(fields["optimizer"].annotation)) == set(OPTIMIZERS)
    assert set(typing.get_args(fields["schedule"].annotation)) == set(SCHEDULES)


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_every_schedule_peaks_at_lr_and_stays_positive(schedule):
    recipe = resolve_recipe({"schedule": schedule, "steps": 1000, "lr": 0.5})
    rates = [recipe.lr_at(s) for s in range(1000)]
    assert max(rates) == pytest.approx(0.5, rel=1e-3)
    assert min(rates) >= 0.0


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimizer_gets_its_own_default_lr(name):
    recipe = resolve_recipe({"optimizer": name})
    assert recipe.lr == OPTIMIZERS[name].lr
    optimizer = make_optimizer(torch.nn.Linear(2, 2), recipe)
    assert optimizer.param_groups[0]["lr"] == OPTIMIZERS[name].lr


def test_sgd_defaults_to_momentum_09_without_nesterov():
    recipe = resolve_recipe({"optimizer": "sgd"})
    assert (recipe.lr, recipe.momentum, recipe.nesterov) == (0.1, 0.9, False)
    group = make_optimizer(torch.nn.Linear(2, 2), recipe).param_groups[0]
    assert (group["momentum"], group["nesterov"]) == (0.9, False)
    lecture = resolve_recipe({"optimizer": "sgd", "momentum": 0.0, "lr": 0.1})
    assert make_optimizer(torch.nn.Linear(2, 2), lecture).param_groups[0]["momentum"] == 0.0


def test_switching_a_presets_optimizer_drops_the_lr_chosen_for_the_other_one():
    preset = load_spec("mlp-bn").train
    assert preset["optimizer"] == "adamw" and "lr" in preset
    assert resolve_recipe(preset, {"optimizer": "sgd"}).lr == OPTIMIZERS["sgd"].lr
    assert resolve_recipe(preset, {"optimizer": "sgd", "lr": 0.3}).lr == 0.3
    assert resolve_recipe(preset, {"optimizer": "adamw"}).lr == preset["lr"]


def test_eval_every_defaults_to_about_20_evaluations():
    assert resolve_recipe({"steps": 2000}).eval_every == 100
    assert resolve_recipe({"steps": 7}).eval_every == 1
    assert resolve_recipe({"steps": 2000, "eval_every": 7}).eval_every == 7


def test_named_recipe_lies_between_the_spec_and_the_overrides():
    fast = resolve_recipe({"steps": 5, "batch_size": 8}, named="fast")
    assert fast.steps == NAMED["fast"]["steps"]
    assert resolve_recipe({}, {"steps": 9}, named="fast").steps == 9
    with pytest.raises(SpecError, match="no named recipe 'fsat' \\(did you mean 'fast'\\?\\)"):
        resolve_recipe({}, named="fsat")


@pytest.mark.parametrize("table,fragment", [
    ({"seed": MAX_SEED + 1}, "train.seed: expected an integer >= 0 and <= "
                             "18,446,744,073,709,551,615"),
    ({"seed": 10**5000}, "train.seed: expected an integer >= 0 and <= "),
    ({"batch_size": 70_000}, "train.batch_size: expected an integer >= 1 and <= 65536"),
])
def test_out_of_range_values_are_refused(table, fragment):
    with pytest.raises(SpecError, match=fragment):
        resolve_recipe(table)


def test_largest_seed_is_accepted():
    assert resolve_recipe({"seed": MAX_SEED}).seed == MAX_SEED
    torch.Generator().manual_seed(MAX_SEED)  # torch takes it


def test_every_seed_has_the_one_bound(tmp_path):
    """The recipe, a run's meta.json, the sampler (seed and word index) and `zoo check` take
    seeds up to MAX_SEED (2**64 - 1) and each refuses one more."""
    import numpy as np

    from zoo.errors import ArtifactError
    from zoo.export.check import check
    from zoo.runschema import check_meta
    from zoo.sampling import sample

    assert MAX_SEED == 2**64 - 1
    with pytest.raises(SpecError, match="train.seed: expected an integer >= 0 and <= "):
        resolve_recipe({"seed": MAX_SEED + 1})
    assert check_meta({"seed": MAX_SEED}, "meta.json")["seed"] == MAX_SEED
    with pytest.raises(ArtifactError, match=r"field 'seed': expected an integer in \[0, 2\*\*64\)"):
        check_meta({"seed": MAX_SEED + 1}, "meta.json")

    def uniform(x: np.ndarray) -> np.ndarray:
        return np.zeros((len(x), 3), np.float32)  # (B, V)

    words = {"vocab": (".", "a", "b"), "context": 2, "n": 1}
    assert len(sample(uniform, **words, seed=MAX_SEED, start=MAX_SEED)) == 1
    with pytest.raises(SpecError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        sample(uniform, **words, seed=MAX_SEED + 1)
    with pytest.raises(SpecError, match="start must be an integer"):
        sample(uniform, **words, start=MAX_SEED + 1)
    with pytest.raises(SpecError, match="start \\+ n must be at most 2\\*\\*64"):
        sample(uniform, **{**words, "n": 2}, start=MAX_SEED)
    with pytest.raises(ArtifactError):  # the seed passes; there is no run to check
        check(tmp_path / "none", tmp_path / "none.onnx", seed=MAX_SEED)
    with pytest.raises(SpecError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        check(tmp_path / "none", tmp_path / "none.onnx", seed=MAX_SEED + 1)


def test_zoo_recipe_lists_fields_optimizer_defaults_and_named_recipes():
    result = CliRunner().invoke(main, ["recipe"])
    assert result.exit_code == 0, result.output
    assert "sgd: lr 0.1, momentum 0.9" in result.output
    assert "adamw: lr 0.01" in result.output
    for key in Recipe.fields():
        assert f"  {key}" in result.output
    assert "fast:" in result.output
