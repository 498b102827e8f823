"""Training steps/s under CPU contention: the adaptive default vs 1 vs 2 threads.

    .venv/bin/python benchmarks/bench_threads.py                  # ~4 min on 2 quiet cores
    .venv/bin/python benchmarks/bench_threads.py --rounds 3       # medians of 3 (~12 min)

For each model (mlp-bn, wavenet and the largest preset) and each thread setting, a fresh
process trains for ``--seconds`` (after a warm-up) while 0, 1 or 2 other CPU-bound processes
(busy loops) run. The loads of one setting run back to back (busy loops started and stopped
around each cell, the order of loads reversed every other round), so that a slowdown is the
ratio of two cells a few seconds apart: this VM's speed drifts by up to 1.5x between minutes,
which a quiet cell and a loaded cell a minute apart would add to the ratio.
Prints a markdown table of median steps/s and the median of the rounds' slowdowns with the
most competitors. A fresh process per measurement because OpenMP reads its settings once,
when it starts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

SETTINGS = {"default": {}, "1": {"OMP_NUM_THREADS": "1"}, "2": {"OMP_NUM_THREADS": "2"},
            "2 passive": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}}


def worker(name: str, seconds: float) -> None:
    """Train ``name`` on random windows for ``seconds``; print steps/s and the thread count.

    The thread count is chosen as ``zoo train`` chooses it (zoo.threads.start: the adaptive
    controller unless OMP_NUM_THREADS fixes it), and the controller sees every step's time.
    """
    import torch
    import torch.nn.functional as F

    from zoo import threads
    from zoo.build import build_model
    from zoo.recipe import make_optimizer, resolve_recipe
    from zoo.spec import load_spec
    from zoo.train import train_step

    threads.reproducible()
    spec = load_spec(name)
    recipe = resolve_recipe(spec.train)
    torch.manual_seed(0)
    model = build_model(spec, 27)
    model.train()
    opt = make_optimizer(model, recipe)
    x = torch.randint(0, 27, (64, recipe.batch_size, spec.context))  # (R, B, T)
    y = torch.randint(0, 27, (64, recipe.batch_size))  # (R, B)
    control, _ = threads.start(model, x[0], y[0], F.cross_entropy, None, on_cpu=True,
                               distributed=False)
    for i in range(10):  # warm-up (the controller's first trial may start here)
        t0 = time.perf_counter()
        train_step(model, opt, x[i], y[i])
        if control is not None:
            control.observe(time.perf_counter() - t0)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        took = time.perf_counter()
        train_step(model, opt, x[steps % 64], y[steps % 64])
        if control is not None:
            control.observe(time.perf_counter() - took)
        steps += 1
    used = "adaptive" if control is not None else torch.get_num_threads()
    print(f"{steps / (time.perf_counter() - t0):.3f} {used}")


def largest_preset() -> str:
    from zoo.build import build_model
    from zoo.errors import ZooError
    from zoo.registry import get_registry

    sizes = {}
    for name in get_registry().presets:
        try:
            sizes[name] = build_model(name, 27).num_parameters()
        except ZooError:
            continue
    return max(sizes, key=sizes.__getitem__)


def measure(name: str, setting: str, seconds: float) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                           "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(SETTINGS[setting])
    out = subprocess.run([sys.executable, __file__, "--worker", name, "--seconds", str(seconds)],
                         env=env, capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--loads", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.seconds)
        return
    models = args.models or list(dict.fromkeys(["mlp-bn", "wavenet", largest_preset()]))
    print(f"uptime before: {os.getloadavg()}; cores {os.cpu_count()}", flush=True)
    rate: dict[tuple[str, str, int], list[float]] = {}
    used: dict[tuple[str, str], str] = {}
    for r in range(args.rounds):
        loads = args.loads if r % 2 == 0 else args.loads[::-1]  # cancels a steady drift
        for name in models:
            for setting in args.settings:
                for load in loads:
                    r, used[name, setting] = cell(name, setting, load, args.seconds)
                    rate.setdefault((name, setting, load), []).append(r)
    print(f"uptime after: {os.getloadavg()}")
    print_table(models, args.settings, args.loads, rate, used)


def cell(name: str, setting: str, load: int, seconds: float) -> tuple[float, str]:
    """(steps/s, threads used) of one fresh process with ``load`` busy loops beside it."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
    try:
        r, n = measure(name, setting, seconds)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    print(f"  {name} {setting} ({n} threads) load {load}: {r:.1f} steps/s", file=sys.stderr,
          flush=True)
    return r, n


def print_table(models: list[str], settings: list[str], loads: list[int],
                rate: dict[tuple[str, str, int], list[float]],
                used: dict[tuple[str, str], str]) -> None:
    top = max(loads)
    head = " | ".join(f"{load} other{'s' if load != 1 else ''}" for load in loads)
    print(f"\n| model | threads | {head} | slowdown with {top} (rounds) | vs best quiet |")
    print("|---|---|" + "---:|" * (len(loads) + 2))
    for name in models:
        quiet = {s: statistics.median(rate[name, s, loads[0]]) for s in settings}
        best = max(quiet.values())
        for s in settings:
            med = [statistics.median(rate[name, s, load]) for load in loads]
            cells = " | ".join(f"{m:.1f}" for m in med)
            ratios = [q / b for q, b in zip(rate[name, s, loads[0]], rate[name, s, top],
                                             strict=True)]
            spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
            print(f"| {name} | {s} ({used[name, s]}) | {cells} | "
                  f"{statistics.median(ratios):.2f}x{spread} | {quiet[s] / best:.2f} |")


if __name__ == "__main__":
    main()
