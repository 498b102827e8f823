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


def _time(path: Path, n: int) -> float:
    """Characters per second of one whole `zoo sample` process."""
    began = time.perf_counter()
    out = subprocess.run([str(ZOO), "sample", str(path), "-n", str(n), "--seed", "0"],
                         capture_output=True, check=True).stdout
    return len(out) / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="*", default=None)
    parser.add_argument("-n", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    presets = args.presets or sorted(get_registry().presets)
    data = SHARED if SHARED.is_file() else default_words_file()
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for preset in presets:
            out = Path(tmp) / preset
            train(preset, data=data, out=out, overrides={"steps": args.steps}, progress=False)
            files[preset] = export_run(out)
        speeds: dict[str, list[float]] = {p: [] for p in presets}
        for _ in range(args.rounds):  # presets in turn: drift between minutes hits all alike
            for preset in presets:
                speeds[preset].append(_time(files[preset], args.n))
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        base = statistics.median(speeds[BASELINE]) if BASELINE in speeds else None
        print(f"`zoo sample MODEL.onnx -n {args.n:,}`, median of {args.rounds} rounds "
              f"(load average {load})\n")
        print(f"| preset | graph | chars/s | vs {BASELINE} |")
        print("|---|---|---:|---:|")
        for preset in presets:
            median = statistics.median(speeds[preset])
            kind = "step (format 2)" if OnnxModel.load(files[preset]).meta.step else "window"
            ratio = f"{median / base:.2f}x" if base else "-"
            print(f"| {preset} | {kind} | {median:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
