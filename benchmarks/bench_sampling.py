"""Sampling speed: onnxruntime batched sampling vs the seed notebook's one-word-at-a-time loop.

    .venv/bin/python benchmarks/bench_sampling.py                # trains mlp-bn briefly
    .venv/bin/python benchmarks/bench_sampling.py --run runs/mlp-bn

Everything is measured side by side in one process on ../shared/data/names.txt when present
(else the bundled corpus), and printed as a markdown table. The promise (DESIGN.md): batched
onnxruntime sampling gives >= 100x the words per second of the notebook's loop, which samples
one word at a time with one torch forward pass (batch 1) per character.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zoo.data import default_words_file
from zoo.export.onnx import export_run
from zoo.export.runtime import OnnxModel
from zoo.rundir import open_run
from zoo.train import train

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "names.txt"
ZOO = Path(sys.executable).parent / "zoo"


def one_at_a_time(forward: Callable[[list[int]], torch.Tensor], chars: tuple[str, ...],
                  context_len: int, count: int) -> list[str]:
    """The seed notebook's last cell: one word at a time, one forward (batch 1) per character."""
    names = []
    for _ in range(count):
        generated_chars = []
        context = [0] * context_len
        while True:
            prob_dist = F.softmax(forward(context), dim=1)  # (1, V)
            idx = torch.multinomial(prob_dist, 1).item()
            generated_chars.append(chars[idx])
            if idx == 0:
                break
            context = context[1:] + [idx]
        names.append("".join(generated_chars))
    return names


def notebook_loop(model: torch.nn.Module, chars: tuple[str, ...], context_len: int,
                  count: int) -> list[str]:
    """The notebook's loop with our model; like the notebook, no torch.no_grad."""
    return one_at_a_time(lambda context: model(torch.tensor([context])), chars, context_len,
                         count)


def seed_loop(model: torch.nn.Module, chars: tuple[str, ...], context_len: int,
              count: int) -> list[str]:
    """The seed notebook's own code: hand-made layers on raw tensors, one word at a time.

    The mlp-bn weights are copied into the notebook's layer maths (C[context], view, x @ W,
    BatchNorm on running statistics, tanh, x @ W + b), as its last cell runs them.
    """
    p = {k: v.detach() for k, v in model.state_dict().items()}
    emb, w1 = p["layers.0.weight"], p["layers.2.weight"].T
    w2, b2 = p["layers.5.weight"].T, p["layers.5.bias"]
    mean, var = p["layers.3.running_mean"], p["layers.3.running_var"]
    scale, shift, eps = p["layers.3.weight"], p["layers.3.bias"], 1e-5

    def forward(context: list[int]) -> torch.Tensor:
        h = emb[context].view(-1, context_len * emb.shape[1]) @ w1
        h = torch.tanh(scale * ((h - mean) / (var + eps) ** 0.5) + shift)
        return h @ w2 + b2  # (1, V)

    return one_at_a_time(forward, chars, context_len, count)


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Median wall time of ``repeat`` calls, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def latency(fn: Callable[[], object], calls: int = 2000) -> float:
    """Median seconds per call over ``calls`` calls (after a warm-up)."""
    for _ in range(50):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="an existing run directory (skips training)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps for mlp-bn [default: its recipe's]")
    parser.add_argument("-n", type=int, default=10000, help="words for batched sampling")
    parser.add_argument("--loop-words", type=int, default=200,
                        help="words for the notebook loop (it is slow)")
    args = parser.parse_args()
    data = SHARED if SHARED.exists() else default_words_file()
    work = Path(tempfile.mkdtemp(prefix="bench-sampling-"))

    run_dir = args.run
    if run_dir is None:
        run_dir = work / "mlp-bn"
        train("mlp-bn", data=data, out=run_dir,
              overrides={"steps": args.steps} if args.steps else {},
              progress=False, log=lambda line: None)
    run = open_run(run_dir)
    onnx_path = work / "model.onnx"
    export_s = timed(lambda: export_run(run_dir, onnx_path))
    export_warm_s = timed(lambda: export_run(run_dir, onnx_path))
    model = OnnxModel.load(onnx_path)

    model.sample(100, seed=1)  # warm-up
    ort_s = timed(lambda: model.sample(args.n, seed=0), repeat=5)
    torch.manual_seed(0)
    loop_s = timed(lambda: notebook_loop(run.model.eval(), run.vocab.chars, run.spec.context,
                                         args.loop_words))
    seed_s = timed(lambda: seed_loop(run.model, run.vocab.chars, run.spec.context,
                                     args.loop_words))
    ort_rate, loop_rate = args.n / ort_s, args.loop_words / loop_s
    seed_rate = args.loop_words / seed_s

    x1 = np.zeros((1, run.spec.context), np.int64)  # (1, T)
    ort_call = latency(lambda: model.logits(x1))
    torch_call = latency(lambda: run.model.numpy_logits(x1))
    shell = [str(ZOO), "sample", str(onnx_path), "-n", "20"]
    shell_s = timed(lambda: subprocess.run(shell, check=True, capture_output=True), repeat=5)

    val_loss = run.meta.get("metrics", {}).get("val_loss", float("nan"))
    print(f"data: {data} ({sum(1 for _ in data.open(encoding='utf-8')):,} words); "
          f"run: {run_dir}; val loss {val_loss:.4f}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    rows = [
        ("onnxruntime batched sampling", f"{ort_rate:,.0f} words/s (n={args.n:,}, one batch)"),
        ("notebook loop (torch, batch 1, one forward per char)",
         f"{loop_rate:,.0f} words/s ({args.loop_words} words)"),
        ("seed notebook's own code (hand-made layers, batch 1)",
         f"{seed_rate:,.0f} words/s ({args.loop_words} words)"),
        ("**ratio onnxruntime / notebook loop**", f"**{ort_rate / loop_rate:,.0f}x**"),
        ("**ratio onnxruntime / seed notebook's code**",
         f"**{ort_rate / seed_rate:,.0f}x** (aim >= 100x)"),
        ("latency per call, batch 1: onnxruntime", f"{ort_call * 1e6:,.1f} µs (median)"),
        ("latency per call, batch 1: torch (numpy_logits)", f"{torch_call * 1e6:,.1f} µs (median)"),
        ("export time (first in process / again)", f"{export_s:.2f} s / {export_warm_s:.2f} s"),
        ("model.onnx size", f"{onnx_path.stat().st_size:,} bytes (one file)"),
        ("`zoo sample model.onnx -n 20` wall time", f"{shell_s:.3f} s (median of 5)"),
    ]
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
