"""Training benchmark: default recipes vs the lecture recipe, and zoo vs plain nn.Sequential.

    .venv/bin/python benchmarks/bench_train.py                 # everything (~12 min on 2 cores)
    .venv/bin/python benchmarks/bench_train.py --only step     # the step-cost ratio only
    .venv/bin/python benchmarks/bench_train.py --only ttq      # time to val <= 2.10 (~2 min quiet)

``ttq``: ``--ttq-rounds`` rounds, each the lecture recipe (plain torch, SGD batch 32, lr 0.1
then 0.01 after 150,000 steps, the lecture's own loop) timed over ``--ttq-lecture-steps`` steps,
half on 1 and half on 2 threads, scaled to 200,000 steps at its faster count; then the wall
time of the whole ``train("mlp-bn", recipe="fast")`` call (data loading, evaluations, curves
and checkpoints included), which picks its threads as ``zoo train`` does. The figure is the
median of the rounds' ratios. Module imports are outside both timings (see time_to_quality).

Reads ../shared/data/names.txt (the corpus of the published makemore figures) when present,
else the bundled data/names.txt. Prints markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from zoo.build import build_model
from zoo.data import Dataset, load_dataset
from zoo.recipe import NAMED, make_optimizer, resolve_recipe
from zoo.spec import load_spec
from zoo.train import train, train_step

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "names.txt"
LECTURE = {"optimizer": "sgd", "batch_size": 32, "steps": 200_000, "lr": 0.1,
           "schedule": "step", "decay_at": 0.75, "decay": 0.1, "momentum": 0.0,
           "weight_decay": 0.0, "eval_every": 20_000}
PUBLISHED = {"mlp-bn": 2.1048, "wavenet": 1.993}


class Consecutive(nn.Module):
    """The lecture's FlattenConsecutive, written by hand for the plain baseline."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x):
        b, t, c = x.shape
        x = x.reshape(b, t // self.n, c * self.n)
        return x.squeeze(1) if x.shape[1] == 1 else x


class BatchNormBT(nn.BatchNorm1d):
    """BatchNorm1d over (B, T) for [B, T, C], as the lecture's hand-made BatchNorm1d does."""

    def forward(self, x):
        if x.dim() == 3:
            b, t, c = x.shape
            return super().forward(x.reshape(b * t, c)).view(b, t, c)
        return super().forward(x)


def plain(name: str, vocab: int) -> nn.Module:
    if name == "mlp-bn":
        return nn.Sequential(nn.Embedding(vocab, 10), nn.Flatten(1),
                             nn.Linear(30, 200, bias=False), nn.BatchNorm1d(200), nn.Tanh(),
                             nn.Linear(200, vocab))
    layers: list[nn.Module] = [nn.Embedding(vocab, 24)]
    for fan_in in (48, 256, 256):
        layers += [Consecutive(2), nn.Linear(fan_in, 128, bias=False), BatchNormBT(128),
                   nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(128, vocab))


def step_cost(name: str, data: Path, rounds: int, steps: int) -> dict[str, float]:
    """Median per-step time of the zoo model and the plain one, timed alternately."""
    spec = load_spec(name)
    recipe = resolve_recipe(spec.train)
    ds = load_dataset(data, spec.context, 0)
    x, y = (torch.from_numpy(a) for a in ds.splits["train"].arrays())
    torch.manual_seed(0)
    zoo_model = build_model(spec, ds.vocab.size)
    base = plain(name, ds.vocab.size)
    base.load_state_dict(dict(zip(base.state_dict(), zoo_model.state_dict().values(),
                                  strict=True)))
    models = {"zoo": zoo_model, "plain": base}
    opts = {k: make_optimizer(m, recipe) for k, m in models.items()}
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, len(y), (recipe.batch_size,), generator=gen)
               for _ in range(steps)]
    times: dict[str, list[float]] = {"zoo": [], "plain": []}
    for r in range(rounds + 1):
        for key in (("zoo", "plain") if r % 2 else ("plain", "zoo")):
            t0 = time.perf_counter()
            for idx in batches:
                train_step(models[key], opts[key], x[idx], y[idx])
            if r:  # round 0 warms up both
                times[key].append((time.perf_counter() - t0) / steps)
    ratios = [z / p for z, p in zip(times["zoo"], times["plain"], strict=False)]
    return {"zoo_ms": 1e3 * statistics.median(times["zoo"]),
            "plain_ms": 1e3 * statistics.median(times["plain"]),
            "ratio": statistics.median(ratios), "batch": recipe.batch_size}


def run(name: str, data: Path, overrides: dict) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = train(name, data=data, out=Path(tmp) / "run", overrides=overrides,
                       progress=False)
        return time.perf_counter() - t0, result.metrics


def lecture_seconds_per_step(ds: Dataset, steps: int, seed: int) -> float:
    """The lecture's training loop on its mlp-bn, timed per step (steps of 200,000 total)."""
    xtr, ytr = (torch.from_numpy(a) for a in ds.splits["train"].arrays())
    torch.manual_seed(seed)
    model = plain("mlp-bn", ds.vocab.size)
    params = list(model.parameters())
    lossi = []
    t0 = time.perf_counter()
    for i in range(steps):
        ix = torch.randint(0, xtr.shape[0], (32,))
        loss = F.cross_entropy(model(xtr[ix]), ytr[ix])  # (32, V) vs (32,)
        for p in params:
            p.grad = None
        loss.backward()
        lr = 0.1 if i < 150_000 else 0.01
        with torch.no_grad():
            for p in params:
                p += -lr * p.grad
        lossi.append(loss.log10().item())
    return (time.perf_counter() - t0) / steps


def time_to_quality(data: Path, lecture_steps: int, rounds: int, target: float) -> None:
    """Rounds of the lecture loop (half its steps on 1 thread, half on 2: its faster count is
    its time) side by side with one ``train("mlp-bn", recipe="fast")`` call, which picks its
    threads as ``zoo train`` does; the median of the per-round ratios is the figure.

    Module imports are outside both timings, as ``import torch`` is: the lecture loop imports
    nothing, and ``torch._dynamo`` (imported by torch.optim when the first optimizer is made)
    and matplotlib (loss.png) are paid once per process. Their cost is printed.
    """
    t0 = time.perf_counter()
    import torch._dynamo  # noqa: F401  (see the docstring)
    t1 = time.perf_counter()
    import matplotlib.pyplot  # noqa: F401
    t2 = time.perf_counter()
    print(f"\nimports outside the timings: torch._dynamo {t1 - t0:.1f} s, "
          f"matplotlib {t2 - t1:.1f} s; load before: {os.getloadavg()}")
    half = max(lecture_steps // 2, 1)
    ds = load_dataset(data, 3, 42)  # the lecture's split, read once for every round
    lectures, fasts, ratios, firsts = [], [], [], []
    for r in range(rounds):
        per_step = {}
        for n in ((1, 2) if r % 2 == 0 else (2, 1)):
            torch.set_num_threads(n)
            per_step[n] = lecture_seconds_per_step(ds, half, 10 * r + n)
        lecture = min(per_step.values()) * LECTURE["steps"]
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = train("mlp-bn", data=data, out=Path(tmp) / "run", recipe="fast",
                           progress=False)
            fast = time.perf_counter() - t0
            rows = [json.loads(line) for line in (result.path / "metrics.jsonl").open()]
            meta = json.loads((result.path / "meta.json").read_text())
        first = next((row["seconds"] for row in rows if row["val_loss"] <= target), None)
        lectures.append(lecture)
        fasts.append(fast)
        ratios.append(fast / lecture)
        firsts.append(math.nan if first is None else first / lecture)
        print(f"round {r + 1}: lecture {lecture:.1f} s (1 thread {per_step[1] * 2e5:.1f}, "
              f"2 threads {per_step[2] * 2e5:.1f}); fast {fast:.1f} s, val "
              f"{result.metrics['val_loss']:.4f}, ratio {fast / lecture:.3f}; threads "
              f"{meta['thread_choice'].get('steps')}", flush=True)
    print(f"load after: {os.getloadavg()}")
    named = NAMED["fast"]
    print("\n| mlp-bn recipe | steps | batch | wall time (s), median | val | ratio to lecture, "
          "median (min-max) |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| lecture (SGD, batch 32; {rounds} x {2 * half:,} steps timed, scaled) | 200,000 "
          f"| 32 | {statistics.median(lectures):.1f} | (2.1048 published) | 1.00 |")
    print(f"| `--recipe fast` ({named['optimizer']}, {named['schedule']}, lr {named['lr']}) | "
          f"{result.steps:,} | {named['batch_size']:,} | {statistics.median(fasts):.1f} | "
          f"{result.metrics['val_loss']:.4f} | **{statistics.median(ratios):.3f}** "
          f"({min(ratios):.3f}-{max(ratios):.3f}) |")
    print(f"\nval <= {target} first reached at {statistics.median(firsts):.3f} of the lecture's "
          f"wall time (median)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["quality", "step", "ttq"], default=None)
    parser.add_argument("--ttq-lecture-steps", type=int, default=10_000,
                        help="lecture steps timed in each time-to-quality round")
    parser.add_argument("--ttq-rounds", type=int, default=5,
                        help="time-to-quality rounds (lecture, then the fast recipe)")
    parser.add_argument("--models", nargs="+", default=["mlp-bn", "wavenet"])
    parser.add_argument("--lecture-steps", type=int, default=LECTURE["steps"],
                        help="steps of the lecture recipe (200k as published)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    data = SHARED if SHARED.exists() else None
    print(f"corpus: {data or 'bundled data/names.txt'}; torch threads {torch.get_num_threads()}")
    if args.only in (None, "quality"):
        print("\n| model | recipe | steps | wall time (s) | train | val | test | published val |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for name in args.models:
            default = resolve_recipe(load_spec(name).train)
            lecture = {**LECTURE, "steps": args.lecture_steps}
            for label, ov, steps in (("default", {}, default.steps),
                                     ("lecture (SGD, batch 32)", lecture, args.lecture_steps)):
                seconds, m = run(name, data, ov)
                print(f"| {name} | {label} | {steps:,} | {seconds:.1f} | {m['train_loss']:.4f} "
                      f"| {m['val_loss']:.4f} | {m['test_loss']:.4f} | {PUBLISHED[name]} |",
                      flush=True)
    if args.only in (None, "ttq"):
        time_to_quality(data, args.ttq_lecture_steps, args.ttq_rounds, target=2.10)
    if args.only in (None, "step"):
        print("\n| model | batch | zoo ms/step | plain nn.Sequential ms/step | ratio (median) |")
        print("|---|---:|---:|---:|---:|")
        for name in args.models:
            c = step_cost(name, data, args.rounds, steps=200)
            print(f"| {name} | {c['batch']} | {c['zoo_ms']:.3f} | {c['plain_ms']:.3f} | "
                  f"{c['ratio']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
