"""Sampling speed of every preset: a whole `zoo sample MODEL.onnx -n N` process, side by side.

    .venv/bin/python benchmarks/bench_steps.py                    # every preset, -n 200000
    .venv/bin/python benchmarks/bench_steps.py --presets transformer seq-transformer --rounds 5

Each preset is trained briefly (``--steps``, default 300, so its words have realistic lengths)
on ../shared/data/names.txt when present (else the bundled corpus) and exported; then, round
after round, one ``zoo sample`` process per preset is timed in turn (start-up included), and
the table gives each preset's median characters per second (a character is a drawn id, the
closing '.' included: the output's bytes) and its ratio to the window ``transformer``. A window
model's file recomputes its T-position window for every character; a sequence model's step
graph (format 2) computes each position once. The temporary folder is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from zoo.data import default_words_file
from zoo.export.onnx import export_run
from zoo.export.runtime import OnnxModel
from zoo.registry import get_registry
from zoo.train import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "names.txt"
ZOO = Path(sys.executable).parent / "zoo"
BASELINE = "transformer"


# `zoo sample` with the sampler's grouping of words by prefix turned off (zoo.sampling.SHARED)
UNGROUPED = ("import sys, zoo.sampling; zoo.sampling.SHARED = 0; from zoo.cli import main; "
             "sys.argv[0] = 'zoo'; main()")


def _time(path: Path, n: int, grouped: bool = True) -> tuple[float, bytes]:
    """Characters per second of one whole `zoo sample` process, and its output."""
    command = [str(ZOO)] if grouped else [sys.executable, "-c", UNGROUPED]
    began = time.perf_counter()
    out = subprocess.run([*command, "sample", str(path), "-n", str(n), "--seed", "0"],
                         capture_output=True, check=True).stdout
    return len(out) / (time.perf_counter() - began), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="*", default=None)
    parser.add_argument("-n", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ungrouped", action="store_true",
                        help="also time each preset with grouping by prefix off")
    args = parser.parse_args()
    presets = args.presets or sorted(get_registry().presets)
    data = SHARED if SHARED.is_file() else default_words_file()
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for preset in presets:
            out = Path(tmp) / preset
            train(preset, data=data, out=out, overrides={"steps": args.steps}, progress=False)
            files[preset] = export_run(out)
        modes = [True, False] if args.ungrouped else [True]
        speeds: dict[tuple[str, bool], list[float]] = {(p, g): [] for p in presets for g in modes}
        for _ in range(args.rounds):  # presets in turn: drift between minutes hits all alike
            for preset in presets:
                outs = []
                for grouped in modes:
                    speed, out = _time(files[preset], args.n, grouped)
                    speeds[preset, grouped].append(speed)
                    outs.append(out)
                if len(set(outs)) != 1:
                    raise SystemExit(f"{preset}: grouping changed the words")
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        base = (statistics.median(speeds[BASELINE, modes[-1]])
                if (BASELINE, modes[-1]) in speeds else None)
        against = f"{BASELINE}{' ungrouped' if args.ungrouped else ''}"
        print(f"`zoo sample MODEL.onnx -n {args.n:,}`, median of {args.rounds} rounds "
              f"(load average {load})\n")
        print(f"| preset | graph | sampler | chars/s | vs {against} |")
        print("|---|---|---|---:|---:|")
        for preset in presets:
            kind = "step (format 2)" if OnnxModel.load(files[preset]).meta.step else "window"
            for grouped in modes:
                median = statistics.median(speeds[preset, grouped])
                ratio = f"{median / base:.2f}x" if base else "-"
                how = "grouped by prefix" if grouped else "a row per word"
                print(f"| {preset} | {kind} | {how} | {median:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
