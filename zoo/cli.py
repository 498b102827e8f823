"""The ``zoo`` command line: parses arguments, calls the library, prints.

Errors a user can cause (``zoo.ZooError``) print one line and exit with status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import Any

import click

from zoo.errors import SpecError, ZooError

EXIT_USAGE = 2


class ZooGroup(click.Group):
    """Turns library errors into one line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ZooError as e:
            if ctx.meta.get("zoo.debug"):
                raise
            click.echo(f"error: {e}", err=True)
            ctx.exit(getattr(e, "exit_code", EXIT_USAGE))
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as e:
            if ctx.meta.get("zoo.debug"):
                raise
            click.echo(f"internal error: {type(e).__name__}: {e} (run `zoo --debug ...` for the "
                       "traceback and please report it)", err=True)
            ctx.exit(1)


@click.group(cls=ZooGroup)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("--strict-plugins", is_flag=True,
              help="Fail if any plugin fails to load (same as LAYERZOO_STRICT_PLUGINS=1).")
@click.version_option(package_name="layerzoo")
@click.pass_context
def main(ctx: click.Context, debug: bool, strict_plugins: bool) -> None:
    """layerzoo: build, train, export and sample character-level language models."""
    ctx.meta["zoo.debug"] = debug
    ctx.meta["zoo.strict"] = True if strict_plugins else None


def registry(ctx: click.Context):
    """Load the plugins once per command and warn about the ones that failed."""
    from zoo.registry import load_plugins

    if "zoo.registry" not in ctx.meta:
        reg = load_plugins(strict=ctx.meta.get("zoo.strict"))
        for problem in reg.problems():
            click.echo(f"warning: {problem}", err=True)
        ctx.meta["zoo.registry"] = reg
    return ctx.meta["zoo.registry"]


@main.command("layers")
@click.pass_context
def layers_cmd(ctx: click.Context) -> None:
    """List every layer type, the plugin it came from, and its parameters."""
    from zoo import report

    click.echo(report.layers(registry(ctx)))


@main.command("plugins")
@click.pass_context
def plugins_cmd(ctx: click.Context) -> None:
    """List every plugin, built-in or installed, with version and what it registered."""
    from zoo import report

    click.echo(report.plugins(registry(ctx)))


@main.command("presets")
@click.option("--vocab", type=click.IntRange(min=2), default=27, show_default=True,
              help="Vocabulary size used to count parameters.")
@click.pass_context
def presets_cmd(ctx: click.Context, vocab: int) -> None:
    """List the model zoo: every registered preset."""
    from zoo import report
    from zoo.build import build_model

    reg = registry(ctx)
    sizes = {}
    for name in reg.presets:
        try:
            sizes[name] = f"{build_model(name, vocab, registry=reg).num_parameters():,}"
        except ZooError:
            sizes[name] = "invalid"
    click.echo(report.presets(reg, sizes))


@main.command("summary")
@click.argument("spec")
@click.option("--vocab", type=click.IntRange(min=2), default=None,
              help="Vocabulary size [default: a run's own, else 27 (a-z and '.')].")
@click.option("--context", type=click.IntRange(min=1), default=None,
              help="Override the spec's context length.")
@click.pass_context
def summary_cmd(ctx: click.Context, spec: str, vocab: int | None, context: int | None) -> None:
    """Print each layer of SPEC (a preset, spec file or run directory) with shapes and sizes."""
    from zoo import report, rundir
    from zoo.build import build_model

    reg = registry(ctx)
    if rundir.is_run_dir(spec):
        run_vocab = rundir.read_vocab(Path(spec))
        spec_obj: Any = rundir.read_spec(Path(spec))
        vocab = vocab or run_vocab.size
    else:
        spec_obj = spec
    model = build_model(spec_obj, vocab or 27, context=context, registry=reg)
    click.echo(report.summary(model, spec))


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


@main.command("train")
@click.argument("spec", required=False, default="mlp-bn")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Words file, one word per line [default: the bundled data/names.txt].")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run directory to create [default: runs/NAME, made unique].")
@click.option("--resume", type=click.Path(path_type=Path), default=None,
              help="Continue the interrupted run in this directory.")
@click.option("--steps", type=int, default=None, help="Override train.steps.")
@click.option("--batch-size", type=int, default=None, help="Override train.batch_size.")
@click.option("--lr", type=float, default=None, help="Override train.lr.")
@click.option("--seed", type=int, default=None, help="Override train.seed.")
@click.option("--set", "sets", multiple=True, metavar="train.KEY=VALUE",
              help="Override any recipe field (repeatable).")
@click.option("--samples", type=click.IntRange(min=0), default=10, show_default=True,
              help="Names to sample from the trained model.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar [default: when stderr is a terminal].")
@click.pass_context
def train_cmd(ctx: click.Context, spec: str, data: Path | None, out: Path | None,
              resume: Path | None, steps: int | None, batch_size: int | None,
              lr: float | None, seed: int | None, sets: tuple[str, ...], samples: int,
              progress: bool | None) -> None:
    """Train SPEC (a preset or spec file; default mlp-bn) on a words file."""
    from zoo.train import Interrupted, train

    registry(ctx)
    overrides = parse_set(sets)
    for key, value in (("steps", steps), ("batch_size", batch_size), ("lr", lr),
                       ("seed", seed)):
        if value is not None:
            overrides[key] = value
    if resume is None and out is None:
        out = _fresh_dir(Path("runs") / Path(spec).stem)
    if progress is None:
        progress = sys.stderr.isatty()
    try:
        result = train(spec, data=data, out=resume or out, overrides=overrides,
                       resume=resume is not None, progress=progress, log=click.echo)
    except Interrupted as e:
        click.echo(f"stopped: {e}", err=True)
        ctx.exit(128 + e.signum)
    m = result.metrics
    click.echo(f"trained {result.path} in {result.seconds:.1f} s ({result.steps:,} steps): "
               f"train {m['train_loss']:.4f}  val {m['val_loss']:.4f}  test {m['test_loss']:.4f}")
    if samples:
        from zoo.sampling import sample

        words = sample(result.model.numpy_logits, vocab=result.vocab.chars,
                       context=result.model.context, n=samples, seed=0)
        click.echo("samples: " + " ".join(words))


def _fresh_dir(base: Path) -> Path:
    if not base.exists():
        return base
    n = 2
    while Path(f"{base}-{n}").exists():
        n += 1
    return Path(f"{base}-{n}")


if __name__ == "__main__":  # python -m zoo.cli
    main(prog_name=os.path.basename(sys.argv[0]) or "zoo")
