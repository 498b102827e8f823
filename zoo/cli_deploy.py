"""Commands that deploy a trained model: ``zoo export``, ``zoo sample``, ``zoo check`` and
``zoo web`` (parse and print; the work is in zoo.export, zoo.backends and zoo.sampling)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

from zoo.options import Decimal, Whole

__all__ = ["export_cmd", "sample_cmd", "check_cmd", "web_cmd"]


@click.command("export")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="The .onnx file to write [default: RUN/model.onnx, RUN/model.int8.onnx "
                   "with --int8].")
@click.option("--opset", type=int, default=20, show_default=True, help="ONNX opset version.")
@click.option("--int8", is_flag=True,
              help="Write a dynamically quantised int8 file (RUN may also be an fp32 .onnx).")
@click.pass_context
def export_cmd(ctx: click.Context, run: Path, output: Path | None, opset: int,
               int8: bool) -> None:
    """Export RUN's model to one self-contained ONNX file (eval mode, dynamic batch)."""
    from zoo import report
    from zoo.cli import registry
    from zoo.export.onnx import INT8_NAME, check_opset, export_run

    check_opset(opset)
    if int8 and run.suffix == ".onnx" and not run.is_dir():
        from zoo.export.quantize import quantize_onnx

        path = quantize_onnx(run, output if output is not None else run.with_name(INT8_NAME))
    else:
        path = export_run(run, output, opset=opset, int8=int8, registry=registry(ctx))
    click.echo(report.exported(path, int8))


@click.command("sample")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-n", "count", type=Whole(0), default=20, show_default=True,
              help="How many words (streamed: any number).")
@click.option("--start", type=Whole(0), default=0, show_default=True,
              help="Index of the first word: --start 5 -n 5 gives words 5..9 of -n 10.")
@click.option("--seed", type=Whole(0), default=0, show_default=True, help="In [0, 2**64).")
@click.option("--temperature", type=Decimal(), default=1.0, show_default=True,
              help="Divide the logits by this (> 0; lower is more conservative).")
@click.option("--top-k", type=Whole(1), default=None,
              help="Sample only from the K most likely characters (1 is greedy).")
@click.option("--prefix", default="", help="Start every word with this.")
@click.option("--max-length", type=Whole(1), default=64, show_default=True,
              help="Cut words at this many characters.")
@click.pass_context
def sample_cmd(ctx: click.Context, source: Path, count: int, start: int, seed: int,
               temperature: float, top_k: int | None, prefix: str, max_length: int) -> None:
    """Sample words from SOURCE: a .onnx file (onnxruntime, no torch) or a run directory."""
    from zoo.backends import open_backend
    from zoo.cli import registry
    from zoo.sampling import sample_text

    # a run directory needs the plugins its layers come from; an .onnx file needs none
    backend = open_backend(source, registry(ctx) if source.is_dir() else None)
    chunks = sample_text(backend.model, vocab=backend.vocab, context=backend.context, n=count,
                         seed=seed, start=start, temperature=temperature, top_k=top_k,
                         prefix=prefix, max_length=max_length)
    interrupted: list[int] = []  # Ctrl-C stops after the words being written: whole lines
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        for text in chunks:
            sys.stdout.write(text)
            if interrupted:
                break
        sys.stdout.flush()
    except BrokenPipeError:  # `zoo sample -n 10000000 | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        signal.signal(signal.SIGINT, previous)
        chunks.close()  # the chunks being made are finished and dropped
    if interrupted:
        ctx.exit(128 + signal.SIGINT)


@click.command("check")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("onnx_file", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option("--samples", type=click.IntRange(min=0), default=20, show_default=True,
              help="Words to sample through each backend with the same seed.")
@click.option("--seed", type=int, default=0, show_default=True, help="In [0, 2**64).")
@click.option("--max-loss-drift", type=float, default=0.01, show_default=True,
              help="For an int8 file: how many nats its validation loss may exceed torch's.")
@click.pass_context
def check_cmd(ctx: click.Context, run: Path, onnx_file: Path, samples: int, seed: int,
              max_loss_drift: float) -> None:
    """Compare RUN's torch model with MODEL.onnx; exit 1 if they disagree."""
    from zoo.cli import registry
    from zoo.export.check import check

    result = check(run, onnx_file, samples=samples, seed=seed, max_loss_drift=max_loss_drift,
                   registry=registry(ctx))
    for line in result.lines():
        click.echo(line)
    if not result.ok:
        ctx.exit(1)


@click.command("web")
@click.argument("onnx_file", metavar="[MODEL.onnx]", required=False,
                type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("site"),
              show_default=True, help="The folder to write (new or empty), or to --serve.")
@click.option("--serve", "serve", is_flag=True,
              help="Serve the folder on http://127.0.0.1:PORT/ until Ctrl-C.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port for --serve (0: any free port).")
@click.option("--ort-dir", type=click.Path(path_type=Path), default=None,
              help="Folder with onnxruntime-web's wasm files [default: $LAYERZOO_ORT_DIR, "
                   "else the wheel's copy (or node_modules/onnxruntime-web/dist of the "
                   "checkout, for an editable install), else that of the current folder].")
@click.pass_context
def web_cmd(ctx: click.Context, onnx_file: Path | None, output: Path, serve: bool, port: int,
            ort_dir: Path | None) -> None:
    """Write a static page (and a Node sampler) for MODEL.onnx; --serve serves the folder."""
    from zoo.cli import registry
    from zoo.export import web

    if onnx_file is None and not serve:
        raise click.UsageError("give MODEL.onnx to write a page, or --serve to serve one")
    if onnx_file is not None:
        site = web.build_site(onnx_file, output, ort_dir=ort_dir, registry=registry(ctx))
        click.echo(f"wrote {site.path}/ ({len(site.files)} files, {site.bytes:,} bytes)")
        click.echo(f"words in Node: node {site.path / 'sample.mjs'} -n 20 --seed 0")
    if serve:
        web.serve(output, port=port, ready=lambda url: click.echo(
            f"serving {output} at {url} (Ctrl-C to stop)"))
