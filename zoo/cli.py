"""The ``zoo`` command line: parses arguments, calls the library, prints.

Here: the group (its error handling, the command's plugin registry) and the commands that
describe the zoo (``layers``, ``plugins``, ``presets``, ``summary``, ``recipe``). The other
commands live beside it, by what they are for: ``zoo.cli_train`` (``train``),
``zoo.cli_deploy`` (``export``, ``sample``, ``check``, ``web``), ``zoo.cli_runs``
(``diagnose``, ``compare``) and ``zoo.cli_authors`` (``new-plugin``, ``test-plugin``).

Errors a user can cause (``zoo.ZooError``) print one line and exit with status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from typing import TYPE_CHECKING, Any

import click

from zoo.data import BUNDLED_VOCAB_SIZE
from zoo.errors import ZooError, one_line

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
    from zoo import report

    click.echo(report.summary_of(spec, vocab, context, registry(ctx)))


@main.command("recipe")
def recipe_cmd() -> None:
    """List the training recipe's fields, each optimizer's defaults and the named recipes."""
    from zoo.recipe import describe

    click.echo(describe())


from zoo.cli_authors import new_plugin_cmd, test_plugin_cmd  # noqa: E402  (they use registry)
from zoo.cli_deploy import check_cmd, export_cmd, sample_cmd, web_cmd  # noqa: E402
from zoo.cli_runs import compare_cmd, diagnose_cmd  # noqa: E402
from zoo.cli_train import train_cmd  # noqa: E402

for _command in (train_cmd, export_cmd, sample_cmd, check_cmd, web_cmd, new_plugin_cmd,
                 test_plugin_cmd, diagnose_cmd, compare_cmd):
    main.add_command(_command)

if __name__ == "__main__":  # python -m zoo.cli
    main(prog_name=os.path.basename(sys.argv[0]) or "zoo")
