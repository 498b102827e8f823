"""Training: a words file and a spec become a run directory, reproducibly and resumably.

    zoo train mlp-bn --data data/names.txt --out runs/mlp-bn

The same seed on the same machine gives the same losses and weights, bit for bit. SIGINT and
SIGTERM save a checkpoint and stop; ``--resume DIR`` continues, and the resumed run ends with
the same weights as one that was never interrupted (the checkpoint holds the optimizer state
and both RNG states). A non-finite loss stops training before it touches the weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save as st_save
from tqdm import tqdm

from zoo import atomic, rundir
from zoo.build import Model, build_model
from zoo.data import Dataset, Vocab, Windows, load_dataset
from zoo.errors import ArtifactError, SpecError, TrainingError
from zoo.recipe import Recipe
from zoo.spec import Spec, check_recipe, load_spec

__all__ = ["train", "TrainResult", "Interrupted", "evaluate", "make_optimizer", "train_step"]

CHECKPOINT_FORMAT = "layerzoo-checkpoint/1"
EVAL_BATCH = 16384


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


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over every parameter (the rate is set per step)."""
    params = list(model.parameters())
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor) -> float:
    """One optimizer step on one batch; returns the loss, or NaN/inf without stepping."""
    loss = F.cross_entropy(model(x), y)  # (B, V) logits vs (B,) targets
    value = loss.item()
    if not math.isfinite(value):
        return value  # leave the weights as they were: the last good state survives
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return value


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: Windows) -> float:
    """Mean cross-entropy over a whole split in eval mode; restores the model's mode."""
    was_training = model.training
    model.eval()
    try:
        total = 0.0
        for x, y in split.chunks(EVAL_BATCH):  # (C, T), (C,)
            total += F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y),
                                     reduction="sum").item()
        return total / max(len(split), 1)
    finally:
        model.train(was_training)


def resolve_recipe(spec: Spec, overrides: dict[str, Any]) -> Recipe:
    """The spec's recipe with command-line overrides; SpecError lists every bad key."""
    values, problems = check_recipe({**spec.train, **overrides})
    if problems:
        raise SpecError(problems, spec.source)
    return Recipe(**values)


# -- checkpoints ---------------------------------------------------------------------------


def save_checkpoint(path: Path, model: Model, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, step: int) -> None:
    """Weights, optimizer state, RNG states and step in one atomically written file."""
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    plain: dict[str, dict[str, Any]] = {}
    for pid, state in opt["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value.detach().contiguous()
            else:
                plain.setdefault(str(pid), {})[key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.batches"] = generator.get_state()
    meta = {"format": CHECKPOINT_FORMAT, "step": str(step),
            "optimizer": json.dumps({"param_groups": opt["param_groups"], "state": plain})}
    atomic.write_bytes(path / rundir.CHECKPOINT, st_save(tensors, metadata=meta))


def load_checkpoint(path: Path, model: Model, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator) -> int:
    """Restore a checkpoint written by save_checkpoint; returns its step."""
    file = path / rundir.CHECKPOINT
    tensors, meta = rundir.read_tensors(file)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ArtifactError(f"{file} is not a layerzoo checkpoint")
    try:
        step = int(meta["step"])
        saved = json.loads(meta["optimizer"])
        model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        rundir.load_model_state(model, model_state, file)
        state: dict[int, dict[str, Any]] = {}
        for pid, values in saved["state"].items():
            state.setdefault(int(pid), {}).update(values)
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, pid, name = key.split(".", 2)
                state.setdefault(int(pid), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        generator.set_state(tensors["rng.batches"])
    except ArtifactError:
        raise
    except (KeyError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"{file} is corrupted or from another model: {e}") from None
    return step


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


def _plot(path: Path, metrics: list[dict[str, Any]]) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [m["step"] for m in metrics]
    ax.plot(steps, [m["train_loss"] for m in metrics], label="train (running mean)")
    ax.plot(steps, [m["val_loss"] for m in metrics], label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic.write_bytes(path / rundir.PLOT, buf.getvalue())


def _read_metrics(path: Path, upto: int) -> list[dict[str, Any]]:
    file = path / rundir.METRICS
    if not file.exists():
        return []
    rows = []
    for line in file.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line cut by a crash is dropped
            row = json.loads(line)
            if row.get("step", math.inf) <= upto:
                rows.append(row)
    return rows


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"--out {out} is a file; expected a directory for the run")
    if out.is_dir() and any(out.iterdir()):
        raise ArtifactError(f"--out {out} is not empty; continue that run with "
                            f"`zoo train --resume {out}` or choose another --out")


def train(spec: Any = "mlp-bn", *, data: str | Path | None = None, out: str | Path,
          overrides: dict[str, Any] | None = None, resume: bool = False,
          progress: bool = True, log: Callable[[str], None] | None = None,
          on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train a spec on a words file into run directory ``out`` (or resume the run there).

    ``progress`` shows a bar with the running loss; ``log`` receives a line per evaluation;
    ``on_step(step, loss)`` is called after every optimizer step (for logging or tests).
    """
    out = Path(out)
    if resume:
        for stale in out.glob(".*.tmp"):  # left by a process killed mid-write
            stale.unlink()
        if overrides:
            raise SpecError("--resume continues a run with its own recipe; drop the overrides ("
                            + ", ".join(overrides) + ")")
        run_spec = rundir.read_spec(out)
        meta = rundir.read_json(out / rundir.META)
        recipe = resolve_recipe(run_spec, {})
        dataset = load_dataset(meta["data"]["path"], run_spec.context, recipe.seed)
        if dataset.sha256 != meta["data"]["sha256"]:
            raise ArtifactError(f"{dataset.path} changed since the run started (sha256 differs);"
                                " resuming would train on other data")
        loaded_spec = run_spec
    else:
        loaded_spec = load_spec(spec)
        recipe = resolve_recipe(loaded_spec, overrides or {})
        dataset = load_dataset(data, loaded_spec.context, recipe.seed)
        _prepare_out(out)
        meta = {}
    run_spec = Spec(loaded_spec.layers, loaded_spec.context, dataclasses.asdict(recipe),
                    loaded_spec.description, loaded_spec.source)
    torch.manual_seed(recipe.seed)
    model = build_model(run_spec, dataset.vocab.size)
    model.train()
    optimizer = make_optimizer(model, recipe)
    generator = torch.Generator().manual_seed(recipe.seed)
    start = 0
    if resume:
        start = load_checkpoint(out, model, optimizer, generator)
    else:
        try:  # only once the model is built: a failed start leaves no empty run dir behind
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ArtifactError(f"cannot create run directory {out}: {e.strerror}") from None
        rundir.write_json(out / rundir.SPEC, run_spec.qualified().to_dict())
        atomic.write_text(out / rundir.VOCAB, dataset.vocab.to_json() + "\n")
        meta = {"spec": run_spec.source, "seed": recipe.seed,
                "recipe": dataclasses.asdict(recipe), "versions": rundir.versions(),
                "data": {"path": dataset.path, "sha256": dataset.sha256,
                         "words": dataset.words,
                         "windows": {k: len(v) for k, v in dataset.splits.items()}},
                "parameters": model.num_parameters(), "status": "running", "step": 0,
                "seconds": 0.0}
        rundir.write_json(out / rundir.META, meta)
        save_checkpoint(out, model, optimizer, generator, 0)
        rundir.save_weights(out / rundir.WEIGHTS, model)
    return _loop(out, model, optimizer, generator, recipe, dataset, meta, start, progress, log,
                 on_step)


def _loop(out: Path, model: Model, optimizer: torch.optim.Optimizer,
          generator: torch.Generator, recipe: Recipe, dataset: Dataset, meta: dict[str, Any],
          start: int, progress: bool, log: Callable[[str], None] | None,
          on_step: Callable[[int, float], None] | None) -> TrainResult:
    train_split, val_split = dataset.splits["train"], dataset.splits["val"]
    metrics = _read_metrics(out, start)
    atomic.write_text(out / rundir.METRICS, "".join(json.dumps(m) + "\n" for m in metrics))
    began, seconds_before = time.perf_counter(), float(meta.get("seconds", 0.0))
    window: list[float] = []

    def checkpoint(step: int, status: str) -> None:
        save_checkpoint(out, model, optimizer, generator, step)
        rundir.save_weights(out / rundir.WEIGHTS, model)
        meta.update(status=status, step=step,
                    seconds=round(seconds_before + time.perf_counter() - began, 3))
        rundir.write_json(out / rundir.META, meta)

    bar = tqdm(total=recipe.steps, initial=start, disable=not progress, unit="step",
               dynamic_ncols=True, leave=False)
    with _stop_on_signals() as received, bar:
        for step in range(start, recipe.steps):
            if received:
                checkpoint(step, "interrupted")
                name = signal.Signals(received[0]).name
                raise Interrupted(f"{name} at step {step:,} of {recipe.steps:,}: checkpoint "
                                  f"saved; continue with `zoo train --resume {out}`",
                                  received[0])
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr_at(step)
            idx = torch.randint(0, len(train_split), (recipe.batch_size,), generator=generator)
            xb, yb = train_split.batch(idx.numpy())  # (B, T), (B,)
            loss = train_step(model, optimizer, torch.from_numpy(xb), torch.from_numpy(yb))
            if not math.isfinite(loss):
                meta.update(status="failed", error=f"non-finite loss at step {step}")
                rundir.write_json(out / rundir.META, meta)
                raise TrainingError(f"loss became {loss} at step {step:,} (lr "
                                    f"{recipe.lr_at(step):g}); the last good checkpoint in {out} "
                                    "is kept — try a lower --lr")
            window.append(loss)
            bar.update(1)
            if on_step is not None:
                on_step(step, loss)
            done = step + 1
            if done % 50 == 0:
                bar.set_postfix(loss=f"{sum(window[-50:]) / len(window[-50:]):.4f}")
            if done % recipe.eval_every == 0 or done == recipe.steps:
                row = {"step": done, "lr": recipe.lr_at(step),
                       "train_loss": sum(window) / len(window),
                       "val_loss": evaluate(model, val_split),
                       "seconds": round(seconds_before + time.perf_counter() - began, 3)}
                window.clear()
                metrics.append(row)
                atomic.write_text(out / rundir.METRICS,
                                  "".join(json.dumps(m) + "\n" for m in metrics))
                checkpoint(done, "running")
                if log is not None:
                    line = (f"step {done:>7,}  train {row['train_loss']:.4f}  "
                            f"val {row['val_loss']:.4f}")
                    if progress:
                        bar.write(line)
                    else:
                        log(line)
    final = {f"{k}_loss": evaluate(model, dataset.splits[k]) for k in ("train", "val", "test")}
    meta["metrics"] = final
    checkpoint(recipe.steps, "finished")
    if metrics:
        _plot(out, metrics)
    model.eval()
    return TrainResult(out, recipe.steps, float(meta["seconds"]), final, model, dataset.vocab)
