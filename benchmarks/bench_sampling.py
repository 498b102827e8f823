"""Sampling speed: a whole `zoo sample` process vs the seed notebook's one-word-at-a-time loop.

    .venv/bin/python benchmarks/bench_sampling.py                # trains mlp-bn
    .venv/bin/python benchmarks/bench_sampling.py --run runs/mlp-bn [-n 1000000]

Everything is measured side by side in one run on ../shared/data/names.txt when present (else
the bundled corpus), and printed as a markdown table. The promise: a whole
``zoo sample model.onnx -n 1000000 --seed 0`` process makes >= 100x the characters per second
of the seed-style loop, which samples one word at a time with one torch forward pass (batch 1)
per character. A character is one drawn id (the closing '.' included, as the loop counts it;
the process writes it as the word's newline). Also reported: the fraction of this CPU's
measured float32 Gemm throughput the process reaches. Works for any preset's run; the
hand-made-layer variant of the seed notebook's code is measured only for mlp-bn's layout.
The temporary folder is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
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


MLP_BN_LAYOUT = {"layers.0.weight": 2, "layers.2.weight": 2, "layers.3.running_mean": 1,
                 "layers.3.running_var": 1, "layers.3.weight": 1, "layers.3.bias": 1,
                 "layers.5.weight": 2, "layers.5.bias": 1}


def has_mlp_bn_layout(model: torch.nn.Module) -> bool:
    """Whether the state dict is mlp-bn's (the layout the notebook's hand-made layers use)."""
    state = model.state_dict()
    return all(k in state and state[k].dim() == d for k, d in MLP_BN_LAYOUT.items())


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


def gemm_gflops(seconds: float = 2.0) -> float:
    """This CPU's float32 Gemm throughput through onnxruntime (one 1024^3 MatMul, median)."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1024, 1024])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1024, 1024])
    w = onnx.numpy_helper.from_array(np.ones((1024, 1024), np.float32), "w")
    graph = onnx.helper.make_graph([onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                                   [x], [y], [w])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20)])
    proto.ir_version = 10
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {"x": np.ones((1024, 1024), np.float32)}
    session.run(None, feed)
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return 2 * 1024**3 / statistics.median(times) / 1e9


def flops_per_char(path: Path) -> int:
    """Multiply-adds x 2 of the file's Gemm/MatMul weights: the work of one context."""
    proto = onnx.load(path)
    shapes = {t.name: list(t.dims) for t in proto.graph.initializer}
    total = 0
    for node in proto.graph.node:
        if node.op_type in ("Gemm", "MatMul") and node.input[1] in shapes:
            total += 2 * int(np.prod(shapes[node.input[1]]))
    return total


def whole_process(onnx_path: Path, n: int, out: Path) -> tuple[float, int]:
    """(seconds, characters) of `zoo sample MODEL -n N --seed 0 > out` as a user runs it."""
    start = time.perf_counter()
    with out.open("wb") as sink:
        subprocess.run([str(ZOO), "sample", str(onnx_path), "-n", str(n), "--seed", "0"],
                       check=True, stdout=sink)
    seconds = time.perf_counter() - start
    return seconds, len(out.read_text(encoding="utf-8"))  # each newline stands for the '.'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="an existing run directory (skips training)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps for mlp-bn [default: its recipe's]")
    parser.add_argument("-n", type=int, default=1_000_000, help="words for `zoo sample`")
    parser.add_argument("--repeat", type=int, default=3, help="runs of `zoo sample` (median)")
    parser.add_argument("--loop-words", type=int, default=200,
                        help="words for the seed-style loop (it is slow)")
    args = parser.parse_args()
    data = SHARED if SHARED.exists() else default_words_file()
    with tempfile.TemporaryDirectory(prefix="bench-sampling-") as tmp:
        measure(args, data, Path(tmp))


def measure(args: argparse.Namespace, data: Path, work: Path) -> None:
    run_dir = args.run
    if run_dir is None:
        run_dir = work / "mlp-bn"
        train("mlp-bn", data=data, out=run_dir,
              overrides={"steps": args.steps} if args.steps else {},
              progress=False, log=lambda line: None)
    run = open_run(run_dir)
    onnx_path = work / "model.onnx"
    export_s = timed(lambda: export_run(run_dir, onnx_path))
    model = OnnxModel.load(onnx_path)

    runs = [whole_process(onnx_path, args.n, work / "words.txt") for _ in range(args.repeat)]
    process_s = statistics.median(s for s, _ in runs)
    chars = runs[0][1]
    torch.manual_seed(0)
    loop_words: list[str] = []
    loop_s = timed(lambda: loop_words.extend(notebook_loop(
        run.model.eval(), run.vocab.chars, run.spec.context, args.loop_words)))
    loop_rate = sum(map(len, loop_words)) / loop_s
    seed_rate = None
    if has_mlp_bn_layout(run.model):
        seed_words: list[str] = []
        seed_s = timed(lambda: seed_words.extend(seed_loop(
            run.model, run.vocab.chars, run.spec.context, args.loop_words)))
        seed_rate = sum(map(len, seed_words)) / seed_s
    process_rate = chars / process_s
    gemm = gemm_gflops()
    model_gflops = process_rate * flops_per_char(onnx_path) / 1e9

    x1 = np.zeros((1, run.spec.context), np.int64)  # (1, T)
    ort_call = latency(lambda: model.logits(x1))
    shell = [str(ZOO), "sample", str(onnx_path), "-n", "20"]
    shell_s = timed(lambda: subprocess.run(shell, check=True, capture_output=True), repeat=5)

    val_loss = run.meta.get("metrics", {}).get("val_loss", float("nan"))
    print(f"data: {data} ({sum(1 for _ in data.open(encoding='utf-8')):,} words); "
          f"run: {run_dir}; val loss {val_loss:.4f}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; onnxruntime "
          f"{ort.__version__}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
          "CPUs\n")
    rows = [
        (f"`zoo sample model.onnx -n {args.n:,} --seed 0 > file` (whole process)",
         f"{process_rate:,.0f} chars/s ({chars:,} chars in {process_s:.2f} s, median of "
         f"{args.repeat})"),
        ("seed-style loop (torch, batch 1, one forward per char)",
         f"{loop_rate:,.0f} chars/s ({args.loop_words} words)"),
    ]
    if seed_rate is not None:
        rows += [("seed notebook's own code (hand-made layers, batch 1)",
                  f"{seed_rate:,.0f} chars/s ({args.loop_words} words)")]
    baseline = max(loop_rate, seed_rate or 0.0)  # the faster loop: the conservative ratio
    rows += [("**ratio whole process / faster seed-style loop**",
              f"**{process_rate / baseline:,.0f}x** (aim >= 100x)")]
    rows += [
        ("Gemm work reached by the process / measured Gemm peak",
         f"{model_gflops:.1f} / {gemm:.1f} GFLOP/s = {model_gflops / gemm:.0%}"),
        ("latency per call, batch 1: onnxruntime", f"{ort_call * 1e6:,.1f} µs (median)"),
        ("export time", f"{export_s:.2f} s"),
        ("model.onnx size", f"{onnx_path.stat().st_size:,} bytes (one file)"),
        ("`zoo sample model.onnx -n 20` wall time", f"{shell_s:.3f} s (median of 5)"),
    ]
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
