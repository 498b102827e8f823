"""The ``zoo`` command line: parses arguments, calls the library, prints.

Errors a user can cause (``zoo.ZooError``) print one line and exit with status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import os
import signal
import sys
import tomllib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from zoo.data import BUNDLED_VOCAB_SIZE
from zoo.errors import SpecError, ZooError, one_line
from zoo.options import Decimal, Whole

if TYPE_CHECKING:
    from zoo.registry import Registry

EXIT_USAGE = 2
MAX_MESSAGE = 2000  # characters of one error line; the rest is counted, not printed


def _error(text: str) -> None:
    click.echo(f"error: {one_line(text, MAX_MESSAGE)}", err=True)


class ZooGroup(click.Group):
    """Turns library and usage errors into one line on stderr and exit status 2."""

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        """click's main, but a usage error is one line (click prints usage, a hint and it)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else "zoo"
            _error(f"{e.format_message()} (see `{where} --help`)")
            sys.exit(e.exit_code)
        except click.ClickException as e:
            _error(e.format_message())
            sys.exit(e.exit_code)
        except click.Abort as e:
            if isinstance(e.__cause__, KeyboardInterrupt):  # Ctrl-C: the shell's convention
                sys.exit(128 + signal.SIGINT)
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ZooError as e:
            if ctx.meta.get("zoo.debug"):
                raise
            _error(str(e))
            ctx.exit(e.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:  # `zoo ... | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(0)
        except (OSError, MemoryError) as e:
            # the machine, not the code: a full disk, a read-only folder, too little memory
            if ctx.meta.get("zoo.debug"):
                raise
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            _error(f"{where}{reason}" if isinstance(e, OSError) else f"out of memory: {reason}")
            ctx.exit(EXIT_USAGE)
        except Exception as e:
            if ctx.meta.get("zoo.debug"):
                raise
            click.echo(one_line(f"internal error: {type(e).__name__}: {e} (run `zoo --debug "
                                "...` for the traceback and please report it)", MAX_MESSAGE),
                       err=True)
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


def registry(ctx: click.Context, *, lenient: bool = False) -> Registry:
    """The command's own registry (honouring --strict-plugins), loaded once; warns on stderr.

    Commands pass it to the library explicitly: nothing depends on a process-wide default.
    ``lenient`` loads it without strict mode, for the command that diagnoses plugins.
    """
    from zoo.registry import PluginWarning, Registry

    if "zoo.registry" not in ctx.meta:
        # for this command: warnings print as one "warning: ..." line; plugin problems are
        # printed below, once (a library default registry would repeat them)
        ctx.with_resource(warnings.catch_warnings())
        warnings.showwarning = _warning_line
        warnings.filterwarnings("ignore", category=PluginWarning)
        reg = Registry.load(strict=False if lenient else ctx.meta.get("zoo.strict"))
        for problem in reg.problems():
            click.echo(f"warning: {problem}", err=True)
        ctx.meta["zoo.registry"] = reg
    return ctx.meta["zoo.registry"]


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    click.echo(f"warning: {message}", err=True)


@main.command("layers")
@click.pass_context
def layers_cmd(ctx: click.Context) -> None:
    """List every layer type, the plugin it came from, and its parameters."""
    from zoo import report

    click.echo(report.layers(registry(ctx)))


@main.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for tools.")
@click.pass_context
def plugins_cmd(ctx: click.Context, as_json: bool) -> None:
    """List every plugin with its distribution, version, entry point and what it registered.

    A plugin with a problem (failed, or names reachable only qualified) is marked; the
    command exits 0, in strict mode too: it is where a strict failure is diagnosed.
    """
    from zoo import report

    reg = registry(ctx, lenient=True)
    click.echo(report.plugins_json(reg) if as_json else report.plugins(reg))


@main.command("presets")
@click.option("--vocab", type=click.IntRange(min=2), default=BUNDLED_VOCAB_SIZE, show_default=True,
              help="Vocabulary size used to count parameters.")
@click.pass_context
def presets_cmd(ctx: click.Context, vocab: int) -> None:
    """List the model zoo: every registered preset."""
    from zoo import report

    reg = registry(ctx)
    click.echo(report.presets(reg, report.preset_sizes(reg, vocab)))


@main.command("summary")
@click.argument("spec")
@click.option("--vocab", type=click.IntRange(min=2), default=None,
              help=f"Vocabulary size [default: a run's own, else {BUNDLED_VOCAB_SIZE} (a-z and "
                   "'.')].")
@click.option("--context", type=click.IntRange(min=1), default=None,
              help="Override the spec's context length.")
@click.pass_context
def summary_cmd(ctx: click.Context, spec: str, vocab: int | None, context: int | None) -> None:
    """Print each layer of SPEC (a preset, spec file or run directory) with shapes and sizes.

    A registered preset wins over a file of the same name in the current folder: write
    ./NAME for the file.
    """
    from zoo import report, rundir
    from zoo.build import build_model
    from zoo.spec import names_file

    reg = registry(ctx)
    if names_file(spec, reg) and rundir.is_run_dir(spec):
        run_vocab = rundir.read_vocab(Path(spec))
        spec_obj: Any = rundir.read_spec(Path(spec))
        vocab = vocab or run_vocab.size
    else:
        spec_obj = spec
    model = build_model(spec_obj, vocab or BUNDLED_VOCAB_SIZE, context=context, registry=reg)
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
    from zoo.train import Interrupted, train

    reg = registry(ctx)
    overrides = parse_set(sets)
    for key, value in (("steps", steps), ("batch_size", batch_size), ("lr", lr),
                       ("seed", seed)):
        if value is not None:
            overrides[key] = value
    if resume is None and out is None:
        from zoo.spec import DEFAULT_PRESET

        out = _fresh_dir(Path("runs") / Path(spec or DEFAULT_PRESET).stem)
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
                       progress=progress, log=click.echo, registry=reg, device=device,
                       diagnose=diagnose_every or diagnose, tensorboard=tensorboard)
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

        words = sample(result.model.sampling_model(), vocab=result.vocab.chars,
                       context=result.model.context, n=samples, seed=0)
        click.echo("samples: " + " ".join(words))
    if (result.path / "diagnostics.jsonl").is_file():
        from zoo.cli_runs import print_findings

        print_findings(result.path)


@main.command("recipe")
def recipe_cmd() -> None:
    """List the training recipe's fields, each optimizer's defaults and the named recipes."""
    from zoo.recipe import describe

    click.echo(describe())


@main.command("export")
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
    from collections import Counter

    import onnx

    from zoo.export.onnx import INT8_NAME, check_opset, export_run

    check_opset(opset)
    if int8 and run.suffix == ".onnx" and not run.is_dir():
        from zoo.export.quantize import quantize_onnx

        path = quantize_onnx(run, output if output is not None else run.with_name(INT8_NAME))
    else:
        path = export_run(run, output, opset=opset, int8=int8, registry=registry(ctx))
    ops = Counter(n.op_type for n in onnx.load(path, load_external_data=False).graph.node)
    click.echo(f"wrote {path} ({path.stat().st_size:,} bytes{', int8' if int8 else ''})")
    click.echo("ops: " + ", ".join(f"{op} x{count}" if count > 1 else op
                                   for op, count in ops.items()))


@main.command("sample")
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
    from zoo.sampling import sample_text

    if source.is_dir():
        from zoo.rundir import open_run

        run = open_run(source, registry=registry(ctx))
        logits_fn, vocab, context = run.model.sampling_model(), run.vocab.chars, run.spec.context
    else:
        from zoo.export.runtime import OnnxModel

        model = OnnxModel.load(source)
        logits_fn, vocab, context = model.sampling_model(), model.vocab, model.context
    chunks = sample_text(logits_fn, vocab=vocab, context=context, n=count, seed=seed,
                         start=start, temperature=temperature, top_k=top_k, prefix=prefix,
                         max_length=max_length)
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


@main.command("check")
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
    from zoo.export.check import check

    result = check(run, onnx_file, samples=samples, seed=seed, max_loss_drift=max_loss_drift,
                   registry=registry(ctx))
    if result.quantized:
        click.echo(f"logits: max |onnxruntime - torch| = {result.max_abs_diff:.3g} over "
                   f"{result.contexts:,} {result.compared} ({result.quantized} file: judged "
                   "by loss)")
        click.echo(f"validation loss: torch {result.torch_loss:.4f}, onnxruntime "
                   f"{result.onnx_loss:.4f}, drift {result.loss_drift:+.4f} nats (max "
                   f"{result.max_loss_drift:g}): {'ok' if result.loss_ok else 'TOO HIGH'}")
        click.echo(f"samples: {result.samples} words with seed {seed}: "
                   f"{result.samples - len(result.mismatches)} identical (not required)")
    else:
        verdict = "ok" if result.logits_match else "DIFFER"
        click.echo(f"logits: max |onnxruntime - torch| = {result.max_abs_diff:.3g} over "
                   f"{result.contexts:,} {result.compared} (atol {result.atol:g}, rtol "
                   f"{result.rtol:g}): {verdict}")
        click.echo(f"validation loss: torch {result.torch_loss:.4f}, onnxruntime "
                   f"{result.onnx_loss:.4f}")
        click.echo(f"samples: {result.samples} words with seed {seed}: "
                   + ("identical" if result.samples_match
                      else f"{len(result.mismatches)} DIFFER, e.g. {result.mismatches[0]}"))
    if not result.ok:
        ctx.exit(1)


@main.command("web")
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
                   "else node_modules/onnxruntime-web/dist of the checkout or of the current "
                   "folder].")
@click.pass_context
def web_cmd(ctx: click.Context, onnx_file: Path | None, output: Path, serve: bool, port: int,
            ort_dir: Path | None) -> None:
    """Write a static page (and a Node sampler) for MODEL.onnx; --serve serves the folder."""
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


from zoo.cli_authors import new_plugin_cmd, test_plugin_cmd  # noqa: E402  (they use registry)
from zoo.cli_runs import compare_cmd, diagnose_cmd  # noqa: E402

for _command in (new_plugin_cmd, test_plugin_cmd, diagnose_cmd, compare_cmd):
    main.add_command(_command)

if __name__ == "__main__":  # python -m zoo.cli
    main(prog_name=os.path.basename(sys.argv[0]) or "zoo")
