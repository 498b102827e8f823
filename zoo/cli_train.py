"""``zoo train`` (parse and print; the work is in zoo.launch, which checks the options and
starts the ranks, and zoo.train)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any

import click

from zoo.errors import SpecError

__all__ = ["train_cmd", "parse_set"]


def parse_set(items: tuple[str, ...]) -> dict[str, Any]:
    """``--set train.key=value`` pairs; values are TOML (numbers, true/false), else strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.startswith("train.") or len(key) <= 6:
            raise SpecError(f"--set {item!r}: expected train.KEY=VALUE, e.g. train.lr=0.01")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key[6:]] = value
    return out


@click.command("train")
@click.argument("spec", required=False, default=None)
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Words file, one word per line [default: the bundled data/names.txt].")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run directory to create [default: runs/NAME, made unique].")
@click.option("--resume", type=click.Path(path_type=Path), default=None,
              help="Continue the run in this directory (with --steps N: extend it to N).")
@click.option("--recipe", "named", default=None, metavar="NAME",
              help="A named recipe laid over the spec's (`zoo recipe` lists them).")
@click.option("--steps", type=int, default=None, help="Override train.steps.")
@click.option("--batch-size", type=int, default=None, help="Override train.batch_size.")
@click.option("--lr", type=float, default=None,
              help="Override train.lr [default: the optimizer's own, see `zoo recipe`].")
@click.option("--seed", type=int, default=None, help="Override train.seed.")
@click.option("--set", "sets", multiple=True, metavar="train.KEY=VALUE",
              help="Override any recipe field (repeatable; `zoo recipe` lists them).")
@click.option("--threads", type=int, default=None,
              help="Intra-op threads [default: OMP_NUM_THREADS, else chosen for the model].")
@click.option("--samples", type=click.IntRange(min=0, max=1_000_000), default=10,
              show_default=True,
              help="Names to sample from the trained model.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar [default: when stderr is a terminal].")
@click.option("--nproc", type=int, default=1, show_default=True,
              help="Train on N processes with DistributedDataParallel (launches torchrun; "
                   "batch_size is the global batch).")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda|mps",
              help="Where to train; auto is CUDA when present, else the CPU.")
@click.option("--diagnose", is_flag=True,
              help="Record each layer's statistics at about 20 steps (diagnostics.jsonl; "
                   "`zoo diagnose RUN`).")
@click.option("--diagnose-every", type=click.IntRange(min=1), default=None, metavar="N",
              help="Record them every N steps (implies --diagnose).")
@click.option("--tensorboard", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Also write the curves (and --diagnose's statistics) as TensorBoard "
                   "events into DIR (needs: pip install 'layerzoo[tensorboard]').")
@click.pass_context
def train_cmd(ctx: click.Context, spec: str | None, data: Path | None, out: Path | None,
              resume: Path | None, named: str | None, steps: int | None,
              batch_size: int | None, lr: float | None, seed: int | None,
              sets: tuple[str, ...], threads: int | None, samples: int,
              progress: bool | None, nproc: int, device: str, diagnose: bool,
              diagnose_every: int | None, tensorboard: Path | None) -> None:
    """Train SPEC (a preset or spec file; default mlp-bn) on a words file."""
    from zoo.threads import check_threads, reproducible

    check_threads(threads)  # before torch is imported: OpenMP would warn in its own words
    reproducible()  # before torch is imported: OpenMP reads its settings once
    from zoo import report
    from zoo.cli import registry
    from zoo.launch import check_launch, launch, rank_argv
    from zoo.procgroup import Quiet
    from zoo.runpaths import fresh_run_dir
    from zoo.train import Interrupted, train

    reg = registry(ctx)
    overrides = parse_set(sets)
    for key, value in (("steps", steps), ("batch_size", batch_size), ("lr", lr),
                       ("seed", seed)):
        if value is not None:
            overrides[key] = value
    if resume is None and out is None:
        out = fresh_run_dir(spec)
    start = check_launch(spec, resume, overrides, nproc, device, named=named, registry=reg)
    if start.ranks:
        ctx.exit(launch(start.ranks, rank_argv(ctx, out=out, nproc=None), out=resume or out))
    try:
        result = train(start.spec, data=data, out=resume or out, overrides=overrides,
                       resume=resume is not None, recipe=named, threads=threads,
                       progress=sys.stderr.isatty() if progress is None else progress,
                       log=click.echo, registry=reg, device=device,
                       diagnose=diagnose_every or diagnose, tensorboard=tensorboard)
    except Interrupted as e:
        click.echo(f"stopped: {e}", err=True)
        ctx.exit(128 + e.signum)
    except Quiet as e:  # rank 0 has reported it
        ctx.exit(e.exit_code)
    if start.world.rank:
        return
    click.echo(report.trained(result))
    if samples:
        from zoo.sampling import sample

        words = sample(result.model.sampling_model(), vocab=result.vocab.chars,
                       context=result.model.context, n=samples, seed=0)
        click.echo("samples: " + " ".join(words))
    if (result.path / "diagnostics.jsonl").is_file():
        from zoo.cli_runs import print_findings

        print_findings(result.path)
