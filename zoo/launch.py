"""The launcher of ``zoo train --nproc N``: the checks made before anything starts, and the
ranks started with torchrun.

    start = check_launch(spec, resume, overrides, nproc, device, registry=registry)
    if start.ranks:   # this process starts the ranks, which train
        sys.exit(launch(start.ranks, rank_argv(ctx, out=out, nproc=None), out=out))
    train(start.spec, ...)   # the spec read and checked once, here

    zoo train SPEC --nproc 2                                  # launches torch.distributed.run
    torchrun --nproc_per_node 2 -m zoo train SPEC --out DIR    # the same, by hand

``check_launch`` refuses a process count or device that cannot work (the batch does not split
evenly, more processes than cores on the CPU, a rank count another resume would change) before
a run directory exists, and reads the spec a new run trains: ``train()`` is handed that Spec
and does not read it again. Each rank torchrun starts is a process of its own and reads the
spec itself, inside zoo.procgroup's ``Sync.together`` so that a bad spec is one line, not one
per rank. A rank that fails prints its own line; ``launch`` names a rank that could not
(killed by a signal) and returns the exit status the command ends with.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import TrainingError
from zoo.procgroup import LAUNCHED_ENV, SILENT_LOST_PEER, World, check_processes, check_scale

if TYPE_CHECKING:
    import click

    from zoo.registry import Registry

__all__ = ["Launch", "check_launch", "rank_argv", "launch"]


@dataclass(frozen=True)
class Launch:
    """What ``check_launch`` found: what ``train()`` takes as its spec, and who trains it."""

    spec: Any  # a new run's Spec, read and checked; a rank's or a resumed run's SPEC as given
    world: World  # where this process stands (torchrun's environment; rank 0 of 1 alone)
    ranks: int  # processes for this one to start with torchrun; 0: this one trains


def check_launch(spec: Any, resume: Path | None, overrides: dict[str, Any], nproc: int,
                 device: str, *, named: str | None = None,
                 registry: Registry | None = None) -> Launch:
    """Check ``--nproc`` and ``--device`` and read a new run's spec, before anything starts.

    A rank that torchrun started launches nothing: it is one of the ``nproc`` already, and
    reads its spec in ``train()``, where every rank's errors are reported once.
    """
    from zoo.devices import pick_device

    world = World.from_env()
    if world.distributed:
        if nproc not in (1, world.size):
            raise TrainingError(f"--nproc {nproc} in a process torchrun started as one of "
                                f"{world.size}: drop --nproc or match --nproc_per_node")
        return Launch(spec, world, 0)
    check_scale(nproc, max(nproc, 1))
    # the last rank needs a device too
    on_cpu = pick_device(device, World(nproc - 1, nproc, nproc - 1)).type == "cpu"
    from zoo import rundir
    from zoo.recipe import resolve_recipe
    from zoo.spec import DEFAULT_PRESET, load_spec

    loaded = spec if resume is not None else load_spec(DEFAULT_PRESET if spec is None else spec,
                                                       registry=registry)
    if nproc == 1:
        return Launch(loaded, world, 0)
    # the batch size the ranks will use: the run's own on resume, else the spec's + overrides
    if resume is not None:
        check_processes(Path(resume), rundir.read_meta(Path(resume)).get("processes", nproc),
                        nproc)
        run_spec = rundir.read_spec(Path(resume))
        batch_size = resolve_recipe(run_spec.train, source=run_spec.source).batch_size
    else:
        batch_size = resolve_recipe(loaded.train, overrides, named=named,
                                    source=loaded.source).batch_size
    check_scale(nproc, batch_size)
    from zoo.threads import usable_cores

    if on_cpu and nproc > usable_cores():
        raise TrainingError(f"--nproc {nproc} on {usable_cores()} usable CPU cores: each "
                            "process trains on a core of its own and holds its own copy of "
                            "the model and data, so more processes than cores only slow the "
                            f"run; use --nproc {usable_cores()} or fewer")
    return Launch(loaded, world, nproc)


def rank_argv(ctx: click.Context, **values: Any) -> list[str]:
    """The command line of ``ctx`` again (the options given, or in ``values``; a value of
    None drops one), for the ranks torchrun starts: ``["train", "SPEC", "--out", "DIR"]``."""
    from click.core import Argument, Option, ParameterSource

    argv = [flag for flag, key in (("--debug", "debug"), ("--strict-plugins", "strict_plugins"))
            if ctx.parent is not None and ctx.parent.params.get(key)]
    argv.append(ctx.info_name or "train")
    for param in ctx.command.params:
        name = param.name or ""
        value = values.get(name, ctx.params.get(name))
        given = ctx.get_parameter_source(name) is not ParameterSource.DEFAULT
        if value is None or not (given or values.get(name) is not None):
            continue
        if isinstance(param, Argument):
            argv.append(str(value))
        elif isinstance(param, Option) and param.is_flag:
            argv.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            for item in value if param.multiple else (value,):
                argv += [param.opts[0], str(item)]
    return argv


def launch(nproc: int, args: list[str], out: object = None) -> int:
    """Run ``python -m zoo ARGS`` on ``nproc`` ranks with torch.distributed.run; its exit status.

    ``--standalone`` lets the rendezvous pick a free port, so runs side by side do not
    collide on torchrun's default 29500. A rank that fails with an error has printed it in one
    line; a rank killed by a signal is named here (``out``: the run directory, for the hint).
    torchrun's own report (a traceback-like box) is kept out of the way.
    """
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    argv = ["--standalone", "--nnodes", "1", "--nproc-per-node", str(nproc),
            "--module", "zoo", *args]
    os.environ[LAUNCHED_ENV] = "1"  # the ranks inherit it
    try:
        with _quiet_elastic_loggers():
            run(parse_args(argv))
    except ChildFailedError as e:
        return _outcome(e.failures, nproc, out)
    except SignalException as e:  # Ctrl-C reached the launcher too; the ranks have stopped
        return 128 + int(e.sigval)
    finally:
        os.environ.pop(LAUNCHED_ENV, None)
    return 0


def _outcome(failures: dict[int, Any], nproc: int, out: object) -> int:
    """The launcher's exit status from its failed ranks, saying why when no rank could.

    A rank killed by a signal (SIGKILL, a crash) could not speak; the ranks left are then sent
    SIGTERM by torchrun, or stop silently (SILENT_LOST_PEER). A rank that exited with its own
    status has printed its reason.
    """
    codes = {rank: f.exitcode for rank, f in failures.items()}
    killed = [r for r, c in sorted(codes.items()) if c < 0 and c != -signal.SIGTERM]
    spoke = [c for c in codes.values() if c > 0 and c != SILENT_LOST_PEER]
    if not killed and spoke:
        return max(spoke, key=lambda c: (c == 2, c))  # bad input (2) first
    killed = killed or [r for r, c in sorted(codes.items()) if c < 0]
    hint = f": continue with `zoo train --resume {out} --nproc {nproc}`" if out else ""
    if killed:
        name = failures[killed[0]].signal_name()
        print(f"error: rank {killed[0]} was killed by {name}; the run directory keeps its last "
              f"checkpoint{hint}", file=sys.stderr)
    else:
        print(f"error: the ranks lost each other; the run directory keeps its last "
              f"checkpoint{hint}", file=sys.stderr)
    return 1


@contextlib.contextmanager
def _quiet_elastic_loggers() -> Iterator[None]:
    """torchrun's loggers silenced for the block, and their levels restored after it."""
    # torch.distributed.elastic gives every module logger its own level (LOGLEVEL, WARNING),
    # so the parent logger's level does not reach them
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name.startswith("torch.distributed")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
