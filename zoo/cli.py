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
@click.option("--samples", type=click.IntRange(min=0), default=10, show_default=True,
              help="Names to sample from the trained model.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar [default: when stderr is a terminal].")
@click.option("--nproc", type=int, default=1, show_default=True,
              help="Train on N processes with DistributedDataParallel (launches torchrun; "
                   "batch_size is the global batch).")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda|mps",
              help="Where to train; auto is CUDA when present, else the CPU.")
@click.pass_context
def train_cmd(ctx: click.Context, spec: str | None, data: Path | None, out: Path | None,
              resume: Path | None, named: str | None, steps: int | None,
              batch_size: int | None, lr: float | None, seed: int | None,
              sets: tuple[str, ...], threads: int | None, samples: int,
              progress: bool | None, nproc: int, device: str) -> None:
    """Train SPEC (a preset or spec file; default mlp-bn) on a words file."""
    from zoo.threads import reproducible

    reproducible()  # before torch is imported: OpenMP reads its settings once
    from zoo.train import Interrupted, train

    reg = registry(ctx)
    overrides = parse_set(sets)
    for key, value in (("steps", steps), ("batch_size", batch_size), ("lr", lr),
                       ("seed", seed)):
        if value is not None:
            overrides[key] = value
    if resume is None and out is None:
        out = _fresh_dir(Path("runs") / Path(spec or "mlp-bn").stem)
    if progress is None:
        progress = sys.stderr.isatty()
    from zoo import distributed

    world = distributed.World.from_env()
    if distributed.preflight(spec, resume, overrides, nproc, device, world, named=named,
                             registry=reg):
        ctx.exit(distributed.launch(nproc, _rank_argv(ctx, out=out, nproc=None),
                                   out=resume or out))
    try:
        result = train(spec, data=data, out=resume or out, overrides=overrides,
                       resume=resume is not None, recipe=named, threads=threads,
                       progress=progress, log=click.echo, registry=reg, device=device)
    except Interrupted as e:
        click.echo(f"stopped: {e}", err=True)
        ctx.exit(128 + e.signum)
    except distributed.Quiet as e:  # rank 0 has reported it
        ctx.exit(e.exit_code)
    if world.rank:
        return
    m = result.metrics
    click.echo(f"trained {result.path} in {result.seconds:.1f} s ({result.steps:,} steps): "
               f"train {m['train_loss']:.4f}  val {m['val_loss']:.4f}  test {m['test_loss']:.4f}")
    if samples:
        from zoo.sampling import sample

        words = sample(result.model.numpy_logits, vocab=result.vocab.chars,
                       context=result.model.context, n=samples, seed=0)
        click.echo("samples: " + " ".join(words))


@main.command("recipe")
def recipe_cmd() -> None:
    """List the training recipe's fields, each optimizer's defaults and the named recipes."""
    from zoo.recipe import describe

    click.echo(describe())


@main.command("export")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="The .onnx file to write [default: RUN/model.onnx].")
@click.option("--opset", type=click.IntRange(min=18), default=20, show_default=True,
              help="ONNX opset version.")
@click.pass_context
def export_cmd(ctx: click.Context, run: Path, output: Path | None, opset: int) -> None:
    """Export RUN's model to one self-contained ONNX file (eval mode, dynamic batch)."""
    from collections import Counter

    import onnx

    from zoo.export.onnx import export_run

    registry(ctx)
    path = export_run(run, output, opset=opset)
    ops = Counter(n.op_type for n in onnx.load(path, load_external_data=False).graph.node)
    click.echo(f"wrote {path} ({path.stat().st_size:,} bytes)")
    click.echo("ops: " + ", ".join(f"{op} x{count}" if count > 1 else op
                                   for op, count in ops.items()))


@main.command("sample")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-n", "count", type=click.IntRange(min=0), default=20, show_default=True,
              help="How many words.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--temperature", type=float, default=1.0, show_default=True,
              help="Divide the logits by this (> 0; lower is more conservative).")
@click.option("--top-k", type=click.IntRange(min=1), default=None,
              help="Sample only from the K most likely characters (1 is greedy).")
@click.option("--prefix", default="", help="Start every word with this.")
@click.option("--max-length", type=click.IntRange(min=1), default=64, show_default=True,
              help="Cut words at this many characters.")
@click.pass_context
def sample_cmd(ctx: click.Context, source: Path, count: int, seed: int, temperature: float,
               top_k: int | None, prefix: str, max_length: int) -> None:
    """Sample words from SOURCE: a .onnx file (onnxruntime, no torch) or a run directory."""
    from zoo.sampling import sample

    if source.is_dir():
        from zoo.rundir import open_run

        registry(ctx)
        run = open_run(source)
        logits_fn, vocab, context = run.model.numpy_logits, run.vocab.chars, run.spec.context
    else:
        from zoo.export.runtime import OnnxModel

        model = OnnxModel.load(source)
        logits_fn, vocab, context = model.logits, model.vocab, model.context
    words = sample(logits_fn, vocab=vocab, context=context, n=count, seed=seed,
                   temperature=temperature, top_k=top_k, prefix=prefix, max_length=max_length)
    if words:
        click.echo("\n".join(words))


@main.command("check")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("onnx_file", metavar="MODEL.onnx", type=click.Path(path_type=Path))
@click.option("--samples", type=click.IntRange(min=0), default=20, show_default=True,
              help="Words to sample through each backend with the same seed.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.pass_context
def check_cmd(ctx: click.Context, run: Path, onnx_file: Path, samples: int, seed: int) -> None:
    """Compare RUN's torch model with MODEL.onnx; exit 1 if they disagree."""
    from zoo.export.check import check

    registry(ctx)
    result = check(run, onnx_file, samples=samples, seed=seed)
    verdict = "ok" if result.logits_match else "DIFFER"
    click.echo(f"logits: max |onnxruntime - torch| = {result.max_abs_diff:.3g} over "
               f"{result.contexts:,} validation contexts (atol {result.atol:g}, rtol "
               f"{result.rtol:g}): {verdict}")
    click.echo(f"samples: {result.samples} words with seed {seed}: "
               + ("identical" if result.samples_match
                  else f"{len(result.mismatches)} DIFFER, e.g. {result.mismatches[0]}"))
    if not result.ok:
        ctx.exit(1)


def _rank_argv(ctx: click.Context, **values: Any) -> list[str]:
    """This command line again (options given or in ``values``), for the ranks torchrun starts."""
    argv = [flag for flag, key in (("--debug", "debug"), ("--strict-plugins", "strict_plugins"))
            if ctx.parent is not None and ctx.parent.params.get(key)]
    argv.append(ctx.info_name or "train")
    for param in ctx.command.params:
        name = param.name or ""
        value = values.get(name, ctx.params.get(name))
        given = ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        if value is None or not (given or values.get(name) is not None):
            continue
        if isinstance(param, click.Argument):
            argv.append(str(value))
        elif isinstance(param, click.Option) and param.is_flag:
            argv.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            for item in value if param.multiple else (value,):
                argv += [param.opts[0], str(item)]
    return argv


def _fresh_dir(base: Path) -> Path:
    if not base.exists():
        return base
    n = 2
    while Path(f"{base}-{n}").exists():
        n += 1
    return Path(f"{base}-{n}")


if __name__ == "__main__":  # python -m zoo.cli
    main(prog_name=os.path.basename(sys.argv[0]) or "zoo")
