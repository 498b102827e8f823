"""int8 vs fp32 for every preset: file size, validation loss and sampling speed.

    .venv/bin/python benchmarks/bench_int8.py --steps 1000        # every registered preset
    .venv/bin/python benchmarks/bench_int8.py --presets mlp-bn wavenet --steps 15000

Each preset is trained with its own recipe (``--steps`` overrides the step count, to keep the
run short) on ../shared/data/names.txt when present (else the bundled corpus), exported as
fp32 and as int8 (export/quantize.py), and measured side by side in one process: file bytes,
validation loss through onnxruntime (``zoo.export.check``), and characters per second of
in-process sampling (fp32 and int8 timed alternately, median of ``--repeat``). Prints a
markdown table. The temporary folder is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from zoo.data import default_words_file
from zoo.export.check import check
from zoo.export.onnx import export_run
from zoo.export.runtime import OnnxModel
from zoo.registry import get_registry
from zoo.sampling import sample_text
from zoo.train import train

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "names.txt"


def chars_per_second(model: OnnxModel, n: int) -> float:
    """Characters (the closing '.' counted as its newline) per second of sampling n words."""
    start = time.perf_counter()
    chars = sum(len(text) for text in sample_text(model.sampling_model(), vocab=model.vocab,
                                                  context=model.context, n=n, seed=0))
    return chars / (time.perf_counter() - start)


def measure(preset: str, data: Path, work: Path, steps: int | None, n: int,
            repeat: int) -> list[str]:
    run_dir = work / preset
    train(preset, data=data, out=run_dir, overrides={"steps": steps} if steps else {},
          progress=False, log=lambda line: None)
    fp32 = export_run(run_dir, work / f"{preset}.onnx")
    int8 = export_run(run_dir, work / f"{preset}.int8.onnx", int8=True)
    loss32, loss8 = check(run_dir, fp32, samples=0), check(run_dir, int8, samples=0)
    models = OnnxModel.load(fp32), OnnxModel.load(int8)
    rates: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for model, out in zip(models, rates, strict=True):
            out.append(chars_per_second(model, n))
    speed32, speed8 = (statistics.median(r) for r in rates)
    return [preset, f"{fp32.stat().st_size:,}", f"{int8.stat().st_size:,}",
            f"{loss32.onnx_loss:.4f}", f"{loss8.onnx_loss:.4f}",
            f"{loss8.loss_drift:+.4f}", f"{speed32:,.0f}", f"{speed8:,.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="*", default=None,
                        help="presets to measure [default: every registered one]")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps [default: each preset's recipe]")
    parser.add_argument("-n", type=int, default=20000, help="words sampled per timing")
    parser.add_argument("--repeat", type=int, default=3, help="timings per file (median)")
    args = parser.parse_args()
    data = SHARED if SHARED.exists() else default_words_file()
    presets = args.presets or sorted(get_registry().presets)
    print(f"data: {data}; steps: {args.steps or 'recipe'}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print("| preset | bytes fp32 | bytes int8 | val loss fp32 | val loss int8 | drift | "
          "chars/s fp32 | chars/s int8 |\n|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        for preset in presets:
            row = measure(preset, data, Path(tmp), args.steps, args.n, args.repeat)
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
