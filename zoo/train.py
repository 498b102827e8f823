"""Training: a words file and a spec become a run directory, reproducibly and resumably.

    zoo train mlp-bn --data data/names.txt --out runs/mlp-bn

A window model trains on (context, next character) windows, a sequence model on whole words,
every position at once; both report the mean NLL per character, end token included. The same
seed on the same machine gives the same losses and weights, bit for bit. SIGINT and
SIGTERM save a checkpoint and stop; ``--resume DIR`` continues, and the resumed run ends with
the same weights as one that was never interrupted (the checkpoint holds the optimizer state,
both RNG states and the losses not yet written to metrics.jsonl). ``--resume DIR --steps N``
extends a run: the schedule is re-planned over N steps. A non-finite loss stops training before
it touches the weights.

Two entry paths (``_new_run``, ``_resume_run``) each produce a ``Loop`` — everything the loop
carries — and ``_loop`` runs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import signal
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from zoo import atomic, curves, rundir
from zoo.batchcheck import check_batch_size
from zoo.build import SEQUENCE, Model, build_model, model_kind
from zoo.checkpoint import checkpoint_step, load_checkpoint, save_checkpoint
from zoo.data import AUTO, IGNORE, Corpus, Dataset, Sequences, Vocab, Windows, make_dataset
from zoo.devices import pick_device
from zoo.errors import ArtifactError, RunWarning, SpecError, TrainingError, ZooError
from zoo.export.contract import versions
from zoo.findings import DIAGNOSTICS
from zoo.procgroup import Sync, World, check_processes, check_scale, peer_error
from zoo.recipe import NAMED, Recipe, default_eval_every, make_optimizer, resolve_recipe
from zoo.registry import Registry
from zoo.spec import DEFAULT_PRESET, Spec, load_spec
from zoo.threads import Adaptive, check_threads, reproducible
from zoo.threads import start as start_threads

__all__ = ["train", "TrainResult", "Interrupted", "evaluate", "make_optimizer", "train_step",
           "objective"]

EVAL_BATCH = 2048  # windows per evaluation chunk: its activations stay in cache
EVAL_WORDS = 256  # words per evaluation chunk of a sequence model (T positions each)
RESUME_OVERRIDES = ("steps",)  # what --resume may change: extending a run is all


class Interrupted(TrainingError):
    """Training was stopped by SIGINT or SIGTERM after saving a checkpoint."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


@dataclass
class TrainResult:
    """What ``train`` returns: where the run is and how it ended."""

    path: Path
    steps: int
    seconds: float
    metrics: dict[str, float]  # final train/val/test loss
    model: Model
    vocab: Vocab


@dataclass
class Loop:
    """Everything the training loop carries from one step to the next."""

    out: Path
    model: Model
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # draws the batches; its state is checkpointed
    recipe: Recipe
    dataset: Dataset
    meta: dict[str, Any]  # meta.json, updated at every checkpoint
    step: int = 0  # optimizer steps done
    rows: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl
    pending: list[float] = field(default_factory=list)  # losses since the last row
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=curves.RECENT))
    sync: Sync = field(default_factory=Sync)  # the other ranks, under torchrun
    draw: curves.Drawing | None = None  # redraws loss.png (set by _loop, on rank 0)
    threads: Adaptive | None = None  # moves the thread count with the load (zoo.threads)
    new: bool = False  # created by this process: removed if an error ends it before step 1
    diagnose: Any = None  # a zoo.diagnostics.Recorder with --diagnose (rank 0)
    diagnosed: list[dict[str, Any]] = field(default_factory=list)  # diagnostics.jsonl rows
    board: Any = None  # a zoo.tboard.Board with --tensorboard (rank 0)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor, sync: Sync | None = None) -> float:
    """One optimizer step on one batch; returns the loss, or NaN/inf without stepping.

    With ``sync`` the loss is the mean over every rank's slice, so all ranks skip together.
    A sequence model's slices hold different numbers of target positions, so there each rank
    divides its sum by the mean count over the ranks: DDP's average of the ranks' gradients is
    then the gradient of the global batch's mean per character, as in one process.
    """
    logits = model(x)
    if sync is not None and sync.world.distributed and y.dim() == 2:
        loss = objective(logits, y, "sum") / sync.mean((y != IGNORE).sum().to(logits.dtype))
    else:
        loss = objective(logits, y)
    value = (loss if sync is None else sync.mean(loss)).item()
    if not math.isfinite(value):
        return value  # leave the weights as they were: the last good state survives
    model.zero_grad(set_to_none=True)  # the same as the optimizer's, without its ~0.2 ms wrapper
    loss.backward()
    optimizer.step()
    return value


def objective(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of logits (B, V) against targets (B,), or of a sequence model's (B, T, V)
    against (B, T) with the positions after a word's end (``IGNORE``) left out."""
    if logits.dim() == 3:
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE,
                               reduction=reduction)  # (B*T, V) vs (B*T,)
    return F.cross_entropy(logits, y, reduction=reduction)  # (B, V) vs (B,)


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: Windows | Sequences) -> float:
    """Mean NLL per character over a whole split in eval mode; restores the model's mode."""
    was_training = model.training
    model.eval()
    try:
        total = 0.0
        device = next(model.parameters()).device
        sequences = isinstance(split, Sequences)
        for x, y in split.chunks(EVAL_WORDS if sequences else EVAL_BATCH):  # (C, T), (C,[T])
            total += objective(model(torch.from_numpy(x).to(device)),
                               torch.from_numpy(y).to(device), reduction="sum").item()
        return total / max(split.targets, 1)
    finally:
        model.train(was_training)


def train(spec: Any = None, *, data: str | Path | None = None, out: str | Path,
          overrides: dict[str, Any] | None = None, resume: bool = False,
          recipe: str | None = None, threads: int | None = None, progress: bool = True,
          log: Callable[[str], None] | None = None,
          on_step: Callable[[int, float], None] | None = None,
          registry: Registry | None = None, device: str = "auto",
          diagnose: bool | int = False, tensorboard: str | Path | None = None) -> TrainResult:
    """Train a spec (default mlp-bn) on a words file into run directory ``out``, or resume.

    ``spec`` is anything ``load_spec`` takes, a Spec too: ``zoo train`` hands over the one
    zoo.launch.check_launch read and checked, which is not read again.

    ``recipe`` names a recipe laid over the spec's (``zoo recipe`` lists them); ``threads``
    fixes torch's intra-op threads (default: chosen for the model, see zoo.threads).
    ``progress`` shows a bar with the running loss; ``log`` receives a line per evaluation;
    ``on_step(step, loss)`` is called after every optimizer step (for logging or tests).
    Every input is checked before the run directory is created or changed.
    ``device`` is auto|cpu|cuda|mps; started by torchrun, each rank trains its slice of every
    batch with DDP and rank 0 writes the run directory (zoo.procgroup).
    ``diagnose`` records per-layer statistics (zoo.diagnostics) at about 20 steps (True) or
    every N steps (an int) into ``diagnostics.jsonl``; a resumed run keeps its own setting.
    ``tensorboard`` writes the curves (and the diagnostics) as TensorBoard events there.
    """
    out = Path(out)
    if tensorboard is not None:  # before anything is written
        from zoo.tboard import check

        check(tensorboard)
    added, threads_before = reproducible(), torch.get_num_threads()
    try:
        return _train(spec, data, out, overrides, resume, recipe, threads, progress, log,
                      on_step, registry, device, diagnose, tensorboard)
    finally:  # the library leaves the process as it found it
        torch.set_num_threads(threads_before)
        for key in added:
            os.environ.pop(key, None)


def _train(spec: Any, data: str | Path | None, out: Path, overrides: dict[str, Any] | None,
           resume: bool, recipe: str | None, threads: int | None, progress: bool,
           log: Callable[[str], None] | None, on_step: Callable[[int, float], None] | None,
           registry: Registry | None, device: str, diagnose: bool | int,
           tensorboard: str | Path | None) -> TrainResult:
    world = World.from_env()
    # the run directory's lock (rank 0's) is held in ``held`` for the whole run
    with Sync(world, pick_device(device, world)) as sync, contextlib.ExitStack() as held:
        with sync.together():  # a bad input on any rank stops every rank, reported once
            state = _start(spec, data, out, overrides, resume, recipe, threads, registry, sync,
                           held, log)
            _diagnosis(state, diagnose, resume)
            if tensorboard is not None and sync.writer:
                from zoo.tboard import Board

                state.board = Board(tensorboard)
                held.callback(state.board.close)
        try:
            return _loop(state, progress=progress and sync.writer, log=log, on_step=on_step)
        except RuntimeError as e:  # a collective failed: another rank went away
            if not world.distributed:
                raise
            raise peer_error(e, out, world.size, kept=not state.new or state.step > 0) from None


def _diagnosis(s: Loop, diagnose: bool | int, resume: bool) -> None:
    """Set up --diagnose: every how many steps (meta.json keeps it), the rows so far."""
    from zoo import diagnostics

    every = s.meta.get("diagnose_every") if resume and not diagnose else (
        diagnostics.default_every(s.recipe.steps) if diagnose is True else diagnose or None)
    if isinstance(every, bool) or (every is not None and (not isinstance(every, int)
                                                          or every < 1)):
        raise SpecError(f"--diagnose-every {every!r}: expected an integer >= 1")
    if not every:
        return
    s.meta["diagnose_every"] = every
    if s.sync.writer:
        s.diagnose = diagnostics.Recorder(s.model, s.optimizer, every)
        if resume:  # rows past the checkpoint were recorded by a process that died after it
            from zoo.findings import read_rows

            s.diagnosed = [r for r in read_rows(s.out / diagnostics.DIAGNOSTICS, missing_ok=True)
                           if r["step"] <= s.step]


def _start(spec: Any, data: str | Path | None, out: Path, overrides: dict[str, Any] | None,
           resume: bool, recipe: str | None, threads: int | None, registry: Registry | None,
           sync: Sync, held: contextlib.ExitStack, log: Callable[[str], None] | None) -> Loop:
    check_threads(threads)
    if resume:
        if spec is not None or data is not None or recipe is not None:
            given = [f"{name} {value}" for name, value in (("SPEC", spec), ("--data", data),
                                                           ("--recipe", recipe)) if value]
            raise SpecError(f"--resume continues {out} with its own spec, data and recipe; "
                            f"drop {', '.join(given)}")
        if sync.writer:  # rank 0 alone writes the run, so it alone holds the lock
            held.enter_context(rundir.lock(out))
        state = _resume_run(out, overrides or {}, registry, sync)
    else:
        state = _new_run(DEFAULT_PRESET if spec is None else spec, data, out, overrides or {},
                         recipe, registry, sync, held, log)
    split = state.dataset.splits["train"]
    xb, yb = split.batch(np.arange(min(state.recipe.batch_size, len(split))))  # (B, T), (B,)
    state.threads, record = start_threads(
        state.model, torch.from_numpy(xb), torch.from_numpy(yb), objective, threads,
        on_cpu=sync.device.type == "cpu", distributed=sync.world.distributed)
    state.meta.update(record)
    if log is not None and sync.writer and record["thread_choice"]["reason"].startswith("one"):
        log(f"threads: {record['thread_choice']['reason']}")
    return state


def _build(spec: Spec, dataset: Dataset, recipe: Recipe, registry: Registry | None,
           sync: Sync) -> tuple[Model, torch.optim.Optimizer, torch.Generator]:
    if sync.world.distributed:  # checked before anything is written
        check_scale(sync.world.size, recipe.batch_size)
    torch.manual_seed(recipe.seed)
    model = build_model(spec, dataset.vocab.size, registry=registry).to(sync.device)
    model.train()
    return model, make_optimizer(model, recipe), torch.Generator().manual_seed(recipe.seed)


def _run_spec(spec: Spec, recipe: Recipe) -> Spec:
    """The spec as run: its model and the complete recipe."""
    return Spec(spec.layers, spec.context, dataclasses.asdict(recipe), spec.description,
                spec.source)


def _dataset(spec: Spec, corpus: Corpus, seed: int,
             registry: Registry | None) -> tuple[Spec, Dataset]:
    """The spec with its context settled, and the words file made ready for its kind of model:
    windows for a window model, whole words (every one fitting the context) for a sequence
    model."""
    auto = spec.context == AUTO
    if auto:
        spec = dataclasses.replace(spec, context=corpus.context(AUTO))
    kind = model_kind(spec, corpus.vocab.size, registry=registry)
    if auto and kind != SEQUENCE:
        raise SpecError("model.context = 'auto' (the longest word + 1) is for sequence models, "
                        "which predict at every position; this is a window model (its logits "
                        "have no time axis): give model.context a number", spec.source)
    return spec, make_dataset(corpus, spec.context, seed, sequence=kind == SEQUENCE)


def _new_run(spec: Any, data: str | Path | None, out: Path, overrides: dict[str, Any],
             named: str | None, registry: Registry | None, sync: Sync,
             held: contextlib.ExitStack, log: Callable[[str], None] | None) -> Loop:
    loaded = load_spec(spec, registry=registry)
    recipe = resolve_recipe(loaded.train, overrides, named=named, source=loaded.source)
    loaded, dataset = _dataset(loaded, Corpus.read(data), recipe.seed, registry)
    if sync.writer:
        rundir.check_new(out)
    run_spec = _run_spec(loaded, recipe)
    model, optimizer, generator = _build(run_spec, dataset, recipe, registry, sync)
    check_batch_size(model, recipe.batch_size, loaded.source)
    given = {**loaded.train, **NAMED.get(named or "", {}), **overrides}
    # the words file is stored resolved, so `--resume` works from any folder
    meta = {"spec": run_spec.source, "seed": recipe.seed, "recipe": dataclasses.asdict(recipe),
            "eval_every_auto": given.get("eval_every") is None,
            "versions": versions(),  # the one dict exported files record too
            "data": {"path": str(Path(dataset.path).resolve()), "sha256": dataset.sha256,
                     "words": dataset.words,
                     "windows": {k: v.targets for k, v in dataset.splits.items()}},
            "kind": model.kind, "parameters": model.num_parameters(),
            "processes": sync.world.size, "status": "running", "step": 0, "seconds": 0.0}

    def fill(tmp: Path) -> None:  # only once the model is built: a failed start leaves nothing
        rundir.write_json(tmp / rundir.SPEC, run_spec.qualified(registry).to_dict())
        atomic.write_text(tmp / rundir.VOCAB, dataset.vocab.to_json() + "\n")
        rundir.write_json(tmp / rundir.META, meta)
        save_checkpoint(tmp, model, optimizer, generator, 0)
        rundir.save_weights(tmp / rundir.WEIGHTS, model)
        curves.write_rows(tmp / rundir.METRICS, [])

    loop = Loop(out, model, optimizer, generator, recipe, dataset, meta, sync=sync, new=True)
    if sync.writer:  # rank 0 alone writes; the others wait in sync.together()
        held.enter_context(rundir.create(out, fill, note=log))  # whole, and locked
        held.push(_discard_unstarted(loop))  # runs before the lock is released
    return loop


def _discard_unstarted(s: Loop) -> Callable[..., bool]:
    """An exit handler removing the new run ``s`` if an error ends it before its first step:
    such a run holds nothing worth resuming, and the same command may simply be run again.
    A run stopped by SIGINT/SIGTERM keeps its checkpoint, as its message says."""
    def discard(kind: type[BaseException] | None, error: BaseException | None,
                trace: object) -> bool:
        if kind is not None and s.step == 0 and not issubclass(kind, Interrupted):
            shutil.rmtree(s.out, ignore_errors=True)
        return False  # the error goes on
    return discard


def _resume_run(out: Path, overrides: dict[str, Any], registry: Registry | None,
                sync: Sync) -> Loop:
    extra = [k for k in overrides if k not in RESUME_OVERRIDES]
    if extra:
        raise SpecError("--resume continues a run with its own recipe; only --steps may "
                        "extend it (drop " + ", ".join(extra) + ")")
    run_spec = rundir.read_spec(out)
    meta = rundir.read_meta(out)
    if not isinstance(meta.get("data"), dict):
        raise ArtifactError(f"{out / rundir.META} is corrupted: no 'data' table")
    recipe = resolve_recipe(run_spec.train, source=str(out / rundir.SPEC))
    rundir.check_seed(out, meta, recipe.seed)
    # older runs did not record their process count
    check_processes(out, meta.setdefault("processes", sync.world.size), sync.world.size)
    at = checkpoint_step(out)
    if "steps" in overrides:
        steps = overrides["steps"]
        if not isinstance(steps, int) or isinstance(steps, bool):
            raise SpecError(f"train.steps: expected an integer, got {steps!r} (--steps and "
                            "--set train.steps=N set it)")
        if steps < at:
            raise SpecError(f"--steps {steps}: {out} is at step {at:,}; a run can be extended "
                            f"to {at:,} steps or more, not shortened below where it is")
        if steps != recipe.steps:
            every = (default_eval_every(steps) if meta.get("eval_every_auto")
                     else recipe.eval_every)
            recipe = resolve_recipe(run_spec.train, {"steps": steps, "eval_every": every},
                                    source=str(out / rundir.SPEC))
    rows = curves.read_rows(out / rundir.METRICS, at)
    run_spec, dataset = _dataset(run_spec, Corpus.read(meta["data"].get("path")), recipe.seed,
                                 registry)
    if dataset.sha256 != meta["data"].get("sha256"):
        raise ArtifactError(f"{dataset.path} changed since the run started (sha256 differs);"
                            " resuming would train on other data")
    run_spec = _run_spec(run_spec, recipe)
    model, optimizer, generator = _build(run_spec, dataset, recipe, registry, sync)
    step, pending = load_checkpoint(out, model, optimizer, generator)
    _check_curves(out, rows, pending, step)
    before = meta.get("recipe", {}).get("steps", recipe.steps)
    extended = recipe.steps != before
    if extended:
        meta.setdefault("extended", []).append({"at": step, "from": before, "to": recipe.steps})
        meta["recipe"] = dataclasses.asdict(recipe)
    # every check has passed: from here on the run directory may change (rank 0 alone)
    if sync.writer:
        for stale in out.glob(".*.tmp"):  # left by a process killed mid-write
            stale.unlink()
        if extended:
            rundir.write_json(out / rundir.SPEC, run_spec.to_dict())
        curves.write_rows(out / rundir.METRICS, rows)
    state = Loop(out, model, optimizer, generator, recipe, dataset, meta, step, rows, pending,
                 sync=sync)
    state.recent.extend(curves.stream(rows) + pending)
    return state


def _check_curves(out: Path, rows: list[dict[str, Any]], pending: list[float], at: int) -> None:
    """Warn (RunWarning) when metrics.jsonl lacks the losses of steps before the checkpoint:
    the run resumes, and its curve shows the gap (rows of runs that kept no per-step losses
    are not counted)."""
    if rows and not any("losses" in r for r in rows):
        return
    held = sum(len(r.get("losses", ())) for r in rows) + len(pending)
    if held < at:
        where = f"its rows end at step {rows[-1]['step']:,}" if rows else "it holds no rows"
        warnings.warn(f"{out / rundir.METRICS} holds the losses of {held:,} of the {at:,} "
                      f"steps before the checkpoint ({where}: truncated, emptied or removed); "
                      "resuming, with that gap in the curve", RunWarning, stacklevel=1)


# -- the loop ------------------------------------------------------------------------------


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[list[int]]:
    """Turn SIGINT/SIGTERM into a flag the loop checks between steps."""
    received: list[int] = []
    handlers = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield received
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _checkpoint(s: Loop, status: str, seconds: float) -> None:
    s.meta.update(status=status, step=s.step, seconds=round(seconds, 3))
    if s.threads is not None:  # this process's steps per thread count, and the count now
        s.meta["threads"] = s.threads.threads
        s.meta["thread_choice"].update(s.threads.summary())
    with s.sync.writing() as writer:  # rank 0 writes between barriers; the others wait
        if writer:
            save_checkpoint(s.out, s.model, s.optimizer, s.generator, s.step, s.pending)
            if s.diagnose is not None:
                curves.write_rows(s.out / DIAGNOSTICS, s.diagnosed)
            rundir.save_weights(s.out / rundir.WEIGHTS, s.model)
            rundir.write_json(s.out / rundir.META, s.meta)


def _evaluation(s: Loop, seconds: float) -> dict[str, Any]:
    """Append a metrics row, write metrics.jsonl and loss.png, checkpoint."""
    row = {"step": s.step, "lr": s.recipe.lr_at(s.step - 1),
           "train_loss": sum(s.recent) / max(len(s.recent), 1),
           "val_loss": evaluate(s.model, s.dataset.splits["val"]) if s.sync.writer else math.nan,
           "seconds": round(seconds, 3), "losses": list(s.pending)}
    s.rows.append(row)
    s.pending = []
    if s.sync.writer:  # the other ranks wait for rank 0 in _checkpoint
        curves.write_rows(s.out / rundir.METRICS, s.rows)
    if s.board is not None:
        s.board.curves(row)
    _checkpoint(s, "running", seconds)
    _redraw(s, force=len(s.rows) == 1 or s.step == s.recipe.steps)
    return row


def _redraw(s: Loop, *, force: bool) -> None:
    """Redraw loss.png (rank 0), after the checkpoint: a plot is never worth the steps. One
    that cannot be written is a warning, and the run goes on without it."""
    if s.draw is None:
        return
    try:
        s.draw(s.rows, force=force)
    except PLOT_ERRORS as e:  # written atomically, or not
        s.draw = None
        _not_drawn(s.out / rundir.PLOT, e, "training goes on without it")


def _draw_diagnostics(s: Loop) -> None:
    """diagnostics.png (rank 0, --diagnose) when the run ends or stops; a failure is a warning."""
    if s.diagnose is None or not s.diagnosed:
        return
    from zoo import diagplot

    try:
        diagplot.write_png(s.diagnosed, s.out / diagplot.PLOT)
    except PLOT_ERRORS as e:
        _not_drawn(s.out / diagplot.PLOT, e, f"the rows are in {s.out / DIAGNOSTICS}")


PLOT_ERRORS = (ZooError, OSError, ValueError, RuntimeError)


def _not_drawn(path: Path, error: BaseException, then: str) -> None:
    """A plot that cannot be written: one RunWarning saying why and what happens instead."""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else error
    warnings.warn(f"cannot draw {path} ({reason}); {then}", RunWarning, stacklevel=2)


def _loop(s: Loop, *, progress: bool, log: Callable[[str], None] | None,
          on_step: Callable[[int, float], None] | None) -> TrainResult:
    recipe, train_split = s.recipe, s.dataset.splits["train"]
    began, before = time.perf_counter(), float(s.meta.get("seconds", 0.0))
    trainer, device = s.sync.wrap(s.model), s.sync.device  # DDP averages gradients over ranks
    s.draw = curves.Drawing(s.out / rundir.PLOT) if s.sync.writer else None

    def seconds() -> float:
        return before + time.perf_counter() - began

    bar = tqdm(total=recipe.steps, initial=s.step, disable=not progress, unit="step",
               dynamic_ncols=True, leave=False)
    with _stop_on_signals() as received, bar:
        while s.step < recipe.steps:
            signum = s.sync.max(received[0] if received else 0)  # all ranks stop at one step
            if signum:
                _checkpoint(s, "interrupted", seconds())
                _redraw(s, force=True)
                _draw_diagnostics(s)
                name = signal.Signals(signum).name
                raise s.sync.own(Interrupted(
                    f"{name} at step {s.step:,} of {recipe.steps:,}: checkpoint saved; continue "
                    f"with `zoo train --resume {s.out}{s.sync.nproc_flag}`", signum))
            lr = recipe.lr_at(s.step)
            for group in s.optimizer.param_groups:
                group["lr"] = lr
            idx = torch.randint(0, len(train_split), (recipe.batch_size,), generator=s.generator)
            xb, yb = train_split.batch(s.sync.shard(idx).numpy())  # (B / N, T), (B / N,)
            took = time.perf_counter()
            recording = s.diagnose is not None and s.diagnose.due(s.step)
            if recording:
                s.diagnose.attach()  # for this step only
            loss = train_step(trainer, s.optimizer, torch.from_numpy(xb).to(device),
                              torch.from_numpy(yb).to(device), s.sync)
            if recording:
                s.diagnosed.append(s.diagnose.record(s.step, loss))
                if s.board is not None:
                    s.board.diagnostics(s.diagnosed[-1])
            if s.threads is not None:
                s.threads.observe(time.perf_counter() - took)
            if not math.isfinite(loss):  # the mean over all ranks: every rank stops here
                s.meta.update(status="failed", error=f"non-finite loss at step {s.step}")
                if s.sync.writer:
                    rundir.write_json(s.out / rundir.META, s.meta)
                kept = (f"{s.out} was removed (it held no training)" if s.new and not s.step
                        else f"the last good checkpoint in {s.out} is kept")
                raise s.sync.own(TrainingError(
                    f"loss became {loss} at step {s.step:,} (lr {lr:g}); {kept} — try a lower "
                    "--lr"))
            kept = round(loss, 6)  # as metrics.jsonl stores it: a resumed window is the same
            s.pending.append(kept)
            s.recent.append(kept)
            bar.update(1)
            if on_step is not None:
                on_step(s.step, loss)
            s.step += 1
            if s.step % 50 == 0:
                bar.set_postfix(loss=f"{sum(s.recent) / len(s.recent):.4f}")
            if s.step % recipe.eval_every == 0 or s.step == recipe.steps:
                row = _evaluation(s, seconds())
                if log is not None and s.sync.writer:
                    line = (f"step {s.step:>7,}  train {row['train_loss']:.4f}  "
                            f"val {row['val_loss']:.4f}")
                    with bar.external_write_mode() if progress else contextlib.nullcontext():
                        log(line)
    splits = ("train", "val", "test")  # rank 0 evaluates; the other ranks receive its losses
    losses = s.sync.share([evaluate(s.model, s.dataset.splits[k]) if s.sync.writer else 0.0
                           for k in splits])
    final = {f"{k}_loss": loss for k, loss in zip(splits, losses, strict=True)}
    s.meta["metrics"] = final
    _checkpoint(s, "finished", seconds())
    _draw_diagnostics(s)
    s.model.eval().cpu()  # sampling and export read it on the CPU
    return TrainResult(s.out, recipe.steps, float(s.meta["seconds"]), final, s.model,
                       s.dataset.vocab)
