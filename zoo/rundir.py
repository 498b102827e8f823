"""The run directory: everything needed to rebuild, resume, sample and export a model.

    spec.json               the spec as run (model + the full recipe)
    vocab.json              the symbols, '.' first
    weights.safetensors     the model's state (parameters and buffers); no pickle anywhere
    checkpoint.safetensors  weights + optimizer state + RNG states + step, in one file, so a
                            crash can never pair the weights of one step with the optimizer of
                            another
    meta.json               versions, seed, recipe, data, status and final metrics
    metrics.jsonl           one line per evaluation
    loss.png                train and validation curves

Every file is written atomically (zoo.atomic) and read with a size bound (zoo.files). A new
run directory is built in a temporary sibling and renamed into place whole, and it stays locked
while a process writes it. The weights' and checkpoint's metadata hold the sha256 of spec.json's
model table and of vocab.json, so weights are never used with a model or vocabulary edited after
they were saved.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from zoo import atomic, files, runpaths, runschema
from zoo.build import Model, build_model
from zoo.data import Vocab
from zoo.errors import ArtifactError, ZooError, one_line
from zoo.registry import Registry
from zoo.spec import Spec

__all__ = ["Run", "open_run", "is_run_dir", "read_tensors", "save_weights", "load_model_state",
           "write_json", "read_json", "read_meta", "check_seed", "check_idle", "binding", "bound",
           "check_binding",
           "incomplete", "check_new", "create", "lock", "SPEC", "VOCAB", "WEIGHTS", "CHECKPOINT",
           "META", "METRICS", "PLOT"]

SPEC, VOCAB, WEIGHTS = runpaths.RUN_MARK, "vocab.json", "weights.safetensors"
CHECKPOINT, META, METRICS, PLOT = "checkpoint.safetensors", "meta.json", "metrics.jsonl", "loss.png"
REQUIRED = (SPEC, VOCAB, WEIGHTS, META)
BOUND = {"layerzoo.model_sha256": SPEC, "layerzoo.vocab_sha256": VOCAB}  # in weights' metadata
FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def is_run_dir(path: str | Path) -> bool:
    # exists(), not is_file(): a spec.json that is a FIFO or a device is refused by name later
    return runpaths.is_run(Path(path))


def write_json(path: Path, data: Any) -> None:
    atomic.write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    """Parse a JSON artifact (bounded, duplicate keys refused); ArtifactError naming the file."""
    kind = files.METRICS if path.name == METRICS else files.RUN_JSON
    return files.load_json(path, kind, ArtifactError)


def read_meta(path: Path) -> dict[str, Any]:
    """A run's meta.json, every field checked (zoo.runschema); ArtifactError naming the file
    and the field if one is wrong."""
    return runschema.read_meta(path)


def check_idle(path: Path, doing: str) -> None:
    """ArtifactError if a process is writing run ``path`` now (it holds the run's lock): what
    is read would be the weights of one checkpoint, soon replaced by the next."""
    pid = atomic.holder(path)
    if pid is not None:
        raise ArtifactError(f"{path} is being trained by another process (pid {pid}); {doing} "
                            "once that run has finished or stopped")


def check_seed(path: Path, meta: dict[str, Any], spec_seed: object) -> None:
    """ArtifactError if meta.json's seed (the split's) is not spec.json's ``train.seed``."""
    if "seed" in meta and spec_seed is not None and spec_seed != meta["seed"]:
        raise ArtifactError(f"{path / META} says seed {meta['seed']} but {path / SPEC} says "
                            f"train.seed {spec_seed!r}: one was edited, so the run's split is "
                            "unknown; restore the file")


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file (tensors, metadata) without running any code from it."""
    data = files.read_bytes(path, files.CHECKPOINT if path.name == CHECKPOINT else files.WEIGHTS,
                            ArtifactError)
    # a safetensors file is an 8-byte header length, then a JSON header starting with '{'; a
    # pickle starts with PROTO 0x80 (protocol 2+) or, protocols 0-1, ends with STOP '.';
    # torch.save writes a zip archive ('PK') of pickles
    if data[8:9] != b"{" and (data[:1] == b"\x80" or data[:2] == b"PK"
                              or (data[-1:] == b"." and data[:1] in b"(}]cN)")):
        raise ArtifactError(f"{path} is a pickle or torch.save file, not safetensors; layerzoo "
                            "never unpickles (it can run code)")
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
        metadata = dict(header.get("__metadata__") or {})
    except Exception as e:  # safetensors raises its own error types for every corruption
        raise ArtifactError(f"{path} is not a valid safetensors file "
                            f"({one_line(e, first=True)})") from None
    return tensors, metadata


def binding(run: Path) -> dict[str, str]:
    """The digests that bind weights to the spec.json and vocab.json beside them.

    Only what the weights depend on is digested (spec.json's model table, the symbols): a run
    extended with ``--steps`` rewrites its recipe and stays bound.
    """
    spec, vocab = read_json(run / SPEC), read_json(run / VOCAB)
    parts = {SPEC: spec.get("model") if isinstance(spec, dict) else spec, VOCAB: vocab}
    return {key: hashlib.sha256(json.dumps(parts[name], sort_keys=True, ensure_ascii=False)
                                .encode("utf-8")).hexdigest() for key, name in BOUND.items()}


def bound(run: Path) -> dict[str, str]:
    """``binding(run)`` where ``run`` holds a spec.json and a vocab.json, else nothing."""
    return binding(run) if all((run / name).is_file() for name in BOUND.values()) else {}


def check_binding(run: Path, metadata: dict[str, str], file: Path) -> None:
    """ArtifactError if ``run``'s spec.json or vocab.json is not the one ``file`` was saved with.

    Files saved before the binding existed carry no digest and are accepted.
    """
    for key, digest in binding(run).items():
        if key in metadata and metadata[key] != digest:
            what = "model table" if BOUND[key] == SPEC else "symbols"
            raise ArtifactError(f"{run / BOUND[key]} was changed after {file} was saved (its "
                                f"{what} differ from the digest stored there; or the file is "
                                "from another run); the weights would give wrong results: "
                                "restore the file or train again")


def save_weights(path: Path, model: Model, metadata: dict[str, str] | None = None) -> None:
    """Write the model's state atomically; inside a run directory, bound to its spec and vocab."""
    metadata = {**(metadata or {}), **bound(path.parent)}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic.write_bytes(path, st_save(state, metadata=metadata))


def load_model_state(model: Model, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load weights into ``model``; ArtifactError if they belong to another architecture."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or extra or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra
                  else f"{wrong[0]} is {tuple(state[wrong[0]].shape)}, the spec needs "
                       f"{tuple(own[wrong[0]].shape)}")
        raise ArtifactError(f"{path} holds weights of another model ({detail}); it does not "
                            "fit this run's spec")
    for key in sorted(own):
        want, got = own[key].dtype, state[key].dtype
        # an integer or bool tensor would be cast to float silently and sample garbage
        if (got not in FLOAT_DTYPES) if want.is_floating_point else (got != want):
            expected = ("float (" + ", ".join(_dtype(d) for d in FLOAT_DTYPES) + ")"
                        if want.is_floating_point else _dtype(want))
            raise ArtifactError(f"{path}: tensor {key!r} holds {_dtype(got)} values; "
                                f"expected {expected}")
    model.load_state_dict(state)


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass
class Run:
    """A run directory opened: the spec, vocabulary, metadata and the model (eval mode)."""

    path: Path
    spec: Spec
    vocab: Vocab
    meta: dict[str, Any]
    model: Model


def read_spec(path: Path) -> Spec:
    data = read_json(path / SPEC)
    try:
        return Spec.from_dict(data, source=str(path / SPEC))
    except ZooError as e:
        raise ArtifactError(f"{path / SPEC} is not a valid spec: {e}") from None


def read_vocab(path: Path) -> Vocab:
    data = read_json(path / VOCAB)
    chars = data.get("chars") if isinstance(data, dict) else None
    if not isinstance(chars, list) or Vocab.problem(chars):
        raise ArtifactError(f"{path / VOCAB} is corrupted: expected {{'chars': ['.', ...]}} "
                            "with distinct single characters")
    return Vocab(tuple(chars))


def open_run(path: str | Path, weights: str = WEIGHTS, *,
             registry: Registry | None = None) -> Run:
    """Open a run directory made by ``zoo train``; the model is returned in eval mode.

    The weights must be float and must have been saved with this spec.json and vocab.json
    (their digests are stored in the weights' metadata); anything else is an ArtifactError.
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no such run directory")
    if not path.is_dir():
        raise ArtifactError(f"{path} is a file, not a run directory (made by zoo train)")
    missing = [f for f in REQUIRED if not (path / f).exists()]
    if missing:
        raise ArtifactError(f"run directory {path} is missing {', '.join(missing)}; "
                            "was it made by zoo train?")
    spec, vocab, meta = read_spec(path), read_vocab(path), read_meta(path)
    try:
        model = build_model(spec, vocab.size, registry=registry)
    except ZooError as e:
        raise ArtifactError(f"{path / SPEC}: cannot build the model: {e}") from None
    state, metadata = read_tensors(path / weights)
    load_model_state(model, state, path / weights)
    check_binding(path, metadata, path / weights)
    model.eval()
    return Run(path, spec, vocab, meta, model)


# -- writing a run: created whole, locked while written, restartable after a kill ----------


def incomplete(path: Path) -> bool:
    """Whether ``path`` is a run stopped before its first checkpoint (nothing to resume).

    Only a folder holding nothing but a run's own files (and temporary ones) qualifies, so a
    folder of the user's is never taken for one.
    """
    if not path.is_dir() or (path / CHECKPOINT).exists():
        return False
    names = {p.name for p in path.iterdir()}
    own = {SPEC, VOCAB, META, WEIGHTS, METRICS, PLOT, atomic.LOCK_NAME}
    return bool(names & {SPEC, META}) and all(
        n in own or (n.startswith(".") and n.endswith(".tmp")) for n in names)


def check_new(out: Path) -> bool:
    """Whether ``out`` can become a new run: ArtifactError if not, True if it holds an
    incomplete run (stopped before its first checkpoint) that ``create`` will replace."""
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"--out {out} is a file; expected a directory for the run")
    if not (out.is_dir() and any(out.iterdir())):
        return False
    if (out / atomic.LOCK_NAME).exists():
        atomic.lock_dir(out).release()  # refuses, naming the pid, while another writes it
    if not incomplete(out):
        raise ArtifactError(f"--out {out} is not empty; continue that run with "
                            f"`zoo train --resume {out}` or choose another --out")
    return True


def create(out: Path, fill: Callable[[Path], None],
           note: Callable[[str], None] | None = None) -> atomic.DirLock:
    """Create run directory ``out`` whole: ``fill(tmp)`` writes it, then it is renamed into place.

    Returns the run's lock, held (release it when training ends). Refuses what ``check_new``
    refuses; an incomplete run there is replaced (``note`` says so).
    """
    replace = check_new(out)
    if replace and note is not None:
        note(f"replacing {out}: that run was stopped before its first checkpoint")
    return atomic.create_dir(out, fill, replace=replace)


def lock(out: Path) -> atomic.DirLock:
    """Lock an existing run directory to resume it; ArtifactError if it is not resumable."""
    if not out.is_dir():
        raise ArtifactError(f"{out}: no such run directory" if not out.exists()
                            else f"{out} is a file, not a run directory (made by zoo train)")
    if incomplete(out):
        raise ArtifactError(f"{out} was stopped before its first checkpoint, so there is "
                            "nothing to resume; start it again with `zoo train SPEC --out "
                            f"{out}` (the incomplete run is replaced)")
    if not (out / SPEC).exists():  # not a run: leave the folder as it is, no lock file in it
        raise ArtifactError(f"{out / SPEC} is missing; is {out} a run directory made by "
                            "zoo train?")
    return atomic.lock_dir(out)
