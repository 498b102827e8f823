"""The training recipe: a spec's ``[train]`` table, validated like a layer's parameters.

Everything about the recipe lives here: its fields, their checks, the per-optimizer defaults,
the named recipes (``--recipe fast``), and the dispatch tables that turn the ``Literal``
choices into an optimizer and a learning-rate schedule. A new choice needs an entry in each
table (a test checks it). torch is imported only when an optimizer is built, so specs can be
checked (and fuzzed) without it.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from zoo.errors import SpecError, did_you_mean, typed_repr
from zoo.layer import ParamInfo, param

__all__ = ["Recipe", "OptimizerName", "ScheduleName", "OPTIMIZERS", "SCHEDULES", "NAMED",
           "check_recipe", "resolve_recipe", "make_optimizer", "MAX_SEED", "MAX_BATCH"]

OptimizerName = Literal["adamw", "sgd"]
ScheduleName = Literal["onecycle", "cosine", "step", "constant"]
MAX_SEED = 2**64 - 1  # the largest seed anywhere: an unsigned 64-bit integer (torch.manual_seed
# takes at most that; the sampler's seeds and word indices are uint64)
MAX_BATCH = 1 << 16  # windows per batch; context 4,096 x 65,536 int64 ids is already 2 GiB
MAX_STEPS = 10**9
EVALUATIONS = 20  # eval_every left unset: about this many evaluations per run


@dataclass(frozen=True)
class Recipe:
    """How to train: every field may be set in the spec's [train] table or on the CLI.

    ``lr``, ``momentum`` and ``eval_every`` default to None, "unset" (a spec cannot write
    None): ``resolve_recipe`` fills them in with the optimizer's own defaults and about 20
    evaluations per run, so a resolved Recipe has a value in every field.
    """

    optimizer: OptimizerName = param("adamw", "the optimizer")
    lr: float = param(None, "peak learning rate [default: the optimizer's own, see "
                                   "`zoo recipe`]", min=0.0)
    schedule: ScheduleName = param("onecycle", "learning-rate schedule over the steps")
    steps: int = param(10_000, "optimizer steps (one batch each)", min=1, max=MAX_STEPS)
    batch_size: int = param(256, "windows per batch", min=1, max=MAX_BATCH)
    weight_decay: float = param(0.0, "decoupled weight decay (AdamW) or L2 (SGD)", min=0.0)
    momentum: float = param(None, "SGD momentum [default: 0.9; 0 is the lecture's plain "
                                         "SGD]", min=0.0, max=1.0)
    nesterov: bool = param(False, "SGD: Nesterov momentum")
    warmup: float = param(0.3, "fraction of the steps spent rising to the peak (onecycle, "
                               "cosine)", min=0.0, max=1.0)
    decay_at: float = param(0.75, "step schedule: fraction of the steps after which the rate "
                                  "drops", min=0.0, max=1.0)
    decay: float = param(0.1, "step schedule: factor the rate drops by", min=0.0)
    eval_every: int = param(None, "steps between validation-loss evaluations "
                                         f"[default: steps / {EVALUATIONS}]", min=1)
    seed: int = param(42, "seed of the split (42: the makemore lectures' split), the "
                          "initialisation and the batches", min=0, max=MAX_SEED)

    @classmethod
    def fields(cls) -> dict[str, ParamInfo]:
        """The declared fields by name (for validation, --set and docs)."""
        hints = typing.get_type_hints(cls)
        return {f.name: ParamInfo.from_field(f, hints[f.name]) for f in dataclasses.fields(cls)}

    def lr_at(self, step: int) -> float:
        """The learning rate for optimizer step ``step`` (0-based); a pure function.

        The schedule is a function of progress ``step / (steps - 1)``: a run extended to more
        steps follows the same schedule family stretched over the new total.
        """
        t = min(step / max(self.steps - 1, 1), 1.0)  # progress 0..1
        return SCHEDULES[self.schedule](self, float(self.lr or 0.0), t)


# -- optimizers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimizerChoice:
    """One optimizer: its defaults and how to build it (torch imported when built)."""

    lr: float  # default peak learning rate
    doc: str
    build: Callable[[Iterable[Any], Recipe], Any]
    momentum: float | None = None  # default momentum, where the optimizer has one


def _fused(params: list[Any]) -> bool | None:
    """torch's fused kernel where it has one for these parameters (float, on the CPU or a GPU):
    one pass per step instead of a dozen per-list ops (AdamW: 0.23 ms against 0.62 ms a step
    for mlp-bn), elementwise, so its result does not depend on the thread count."""
    ok = all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in params)
    return True if ok and params else None


def _adamw(params: Iterable[Any], r: Recipe) -> Any:
    import torch

    params = list(params)
    return torch.optim.AdamW(params, lr=r.lr, weight_decay=r.weight_decay,
                             fused=_fused(params))


def _sgd(params: Iterable[Any], r: Recipe) -> Any:
    import torch

    return torch.optim.SGD(list(params), lr=r.lr, momentum=r.momentum or 0.0,
                           nesterov=r.nesterov and bool(r.momentum),
                           weight_decay=r.weight_decay)


OPTIMIZERS: dict[str, OptimizerChoice] = {
    "adamw": OptimizerChoice(0.01, "AdamW (betas 0.9, 0.999); weight_decay is decoupled",
                             _adamw),
    "sgd": OptimizerChoice(0.1, "SGD with momentum (0 = the lecture's plain SGD); "
                                "weight_decay is L2", _sgd, momentum=0.9),
}


def make_optimizer(model: Any, recipe: Recipe) -> Any:
    """The recipe's optimizer over every parameter (the rate is set per step)."""
    return OPTIMIZERS[recipe.optimizer].build(model.parameters(), recipe)


# -- schedules: (recipe, peak lr, progress 0..1) -> lr --------------------------------------


def _constant(r: Recipe, lr: float, t: float) -> float:
    return lr


def _step(r: Recipe, lr: float, t: float) -> float:
    return lr * (r.decay if t >= r.decay_at else 1.0)


def _cosine(r: Recipe, lr: float, t: float) -> float:
    """Linear warm-up, cosine decay to 1% of the peak."""
    w = r.warmup
    if t < w:
        return lr * t / w
    u = (t - w) / max(1.0 - w, 1e-12)
    return lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * u)))


def _onecycle(r: Recipe, lr: float, t: float) -> float:
    """As torch's OneCycleLR with cosine annealing: lr/25 -> lr -> lr/25e4."""
    w, start, end = r.warmup, lr / 25.0, lr / 25e4
    if t < w:
        return start + (lr - start) * 0.5 * (1.0 - math.cos(math.pi * t / w))
    u = (t - w) / max(1.0 - w, 1e-12)
    return end + (lr - end) * 0.5 * (1.0 + math.cos(math.pi * u))


SCHEDULES: dict[str, Callable[[Recipe, float, float], float]] = {
    "onecycle": _onecycle, "cosine": _cosine, "step": _step, "constant": _constant}

# Named recipes (`zoo train SPEC --recipe NAME`): laid over the spec's [train] table, under
# the command line's overrides. "fast" is the time-to-quality recipe of docs/benchmarks.md:
# mlp-bn reaches val <= 2.10 (2.0991) with 1,700 one-cycle AdamW steps of 2,048 windows — 3.5M
# windows against the lecture's 6.4M, in 118x fewer optimizer steps; a window costs less at
# batch 2,048 than at 512 or 1,024 (the step's fixed costs spread wider) and no less at 4,096.
# Tried and short of 2.10 or slower: 1,500 x 2,048 at lr 0.015 (2.1023), 1,700 x 2,048 at lr
# 0.012 (2.1027), 3,000 x 1,024 at lr 0.012 (2.0996, slower), 1,000 x 4,096 at lr 0.03
# (2.1015), 8,000 x 512 at lr 0.01 (2.0980, 1.6x slower). It evaluates 5 times, not about
# 20: each evaluation, with its checkpoint, costs about 50 ms, 5% of so short a run.
NAMED: dict[str, dict[str, Any]] = {
    "fast": {"optimizer": "adamw", "lr": 0.015, "schedule": "onecycle", "steps": 1700,
             "batch_size": 2048, "warmup": 0.3, "eval_every": 340},
}


# -- validation ----------------------------------------------------------------------------


def check_recipe(train: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A [train] table checked against Recipe's declared fields: (converted values, problems)."""
    fields = Recipe.fields()
    values: dict[str, Any] = {}
    problems = []
    for key, value in train.items():
        info = fields.get(key)
        if info is None:
            problems.append(f"train: unknown key {key!r}{did_you_mean(str(key), fields)}")
            continue
        if value is None and info.default is None:  # JSON null: "unset", the default applies
            values[key] = None
            continue
        ok, values[key], reason = info.check(value)
        if not ok:
            problems.append(f"train.{key}: {reason}, got {typed_repr(value)}")
    return values, problems


def resolve_recipe(train: dict[str, Any], overrides: dict[str, Any] | None = None, *,
                   named: str | None = None, source: str | None = None) -> Recipe:
    """The [train] table, a named recipe and overrides (in that order) as a complete Recipe.

    An override that changes the optimizer without giving ``lr`` (or ``momentum``) drops the
    spec's value: it was chosen for the spec's optimizer, and the new one gets its own default.
    SpecError lists every bad key.
    """
    table = dict(train)
    if named is not None:
        if named not in NAMED:
            raise SpecError(f"--recipe: no named recipe {named!r}"
                            f"{did_you_mean(named, NAMED)}; choose from "
                            + ", ".join(repr(n) for n in NAMED))
        table.update(NAMED[named])
    overrides = dict(overrides or {})
    if "optimizer" in overrides and overrides["optimizer"] != table.get("optimizer", "adamw"):
        for key in ("lr", "momentum", "nesterov"):
            if key not in overrides:
                table.pop(key, None)
    values, problems = check_recipe({**table, **overrides})
    if problems:
        raise SpecError(problems, source)
    recipe = Recipe(**values)
    choice = OPTIMIZERS[recipe.optimizer]
    return dataclasses.replace(
        recipe, lr=choice.lr if recipe.lr is None else recipe.lr,
        momentum=choice.momentum if recipe.momentum is None else recipe.momentum,
        eval_every=recipe.eval_every or default_eval_every(recipe.steps))


def default_eval_every(steps: int) -> int:
    """About ``EVALUATIONS`` evaluations over a run of ``steps``."""
    return max(1, math.ceil(steps / EVALUATIONS))


def describe() -> str:
    """The recipe's fields, each optimizer's defaults and the named recipes, for `zoo recipe`."""
    lines = ["recipe fields ([train] table, or --set train.KEY=VALUE):"]
    for name, info in Recipe.fields().items():
        default = "" if info.default is None else f" = {info.default!r}"
        lines.append(f"  {name}{default}: {info.expected()} — {info.doc}")
    lines.append("optimizers (default lr, momentum):")
    for name, choice in OPTIMIZERS.items():
        extra = "" if choice.momentum is None else f", momentum {choice.momentum:g}"
        lines.append(f"  {name}: lr {choice.lr:g}{extra} — {choice.doc}")
    lines.append("named recipes (--recipe NAME):")
    for name, table in NAMED.items():
        lines.append(f"  {name}: " + ", ".join(f"{k} = {v!r}" for k, v in table.items()))
    return "\n".join(lines)
