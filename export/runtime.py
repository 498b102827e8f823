"""The onnxruntime side: load a layerzoo .onnx file and sample from it, with no torch.

    model = OnnxModel.load("model.onnx")
    model.sample(n=20, seed=0)               # words, as zoo.sampling.sample gives them
    model.logits(np.zeros((1, model.context), np.int64))   # (1, V) float32

Imports numpy, onnxruntime and the standard library only. The file is read once and checked
before onnxruntime sees it: a file that is not ONNX, or any tensor that points at external data
(which onnxruntime would read from disk next to the file), is refused with one line.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from zoo import files
from zoo.errors import ArtifactError, one_line
from zoo.export.contract import (
    INPUT,
    INT8_DYNAMIC,
    OUTPUT,
    POSITION,
    TOKEN,
    Metadata,
    check_signature,
    past_name,
    present_name,
    read_metadata,
)
from zoo.export.protobuf import external_tensors, graph_ops
from zoo.sampling import BatchDependent, sample
from zoo.stepstate import entries_so_far

__all__ = ["OnnxModel", "QUANTIZED_OPS"]

# what onnxruntime's quantisers put in a graph, and no float model has
QUANTIZED_OPS = {"MatMulInteger", "DynamicQuantizeLinear", "QuantizeLinear", "QLinearMatMul",
                 "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}


class OnnxModel:
    """A layerzoo ONNX file in an onnxruntime session: int64 [B, T] contexts -> float32 [B, V]
    (``logits``, format 1), or a sequence model's step graph (``start`` and ``step``, format
    2). ``sample`` drives either."""

    def __init__(self, session: ort.InferenceSession, path: Path, meta: Metadata,
                 data: bytes, threads: int | None) -> None:
        self.session = session
        self.path = path
        self.meta = meta
        self.threads = threads  # onnxruntime's intra-op threads per call (None: one per core)
        self.data = data  # the file's bytes, as read and checked
        self._sampler: OnnxModel | None = None
        self.vocab = meta.vocab
        self.context = meta.context
        self.metadata = meta.props  # every metadata_prop, as stored
        self.format = meta.format
        self.state_names = [past_name(name) for name, _, _ in meta.state]
        self.present_names = [OUTPUT, *(present_name(name) for name, _, _ in meta.state)]
        self.caches = [cache for _, _, cache in meta.state]

    @classmethod
    def load(cls, path: str | Path, *, threads: int | None = None) -> OnnxModel:
        """Read, check and open ``path``; ArtifactError (one line) for anything unusable.
        ``threads``: onnxruntime's intra-op threads per call (None: one per core)."""
        path = Path(path)
        data = _read(path)
        external = external_tensors(data, path)
        if external:
            raise ArtifactError(f"{path} refers to external data ({', '.join(external[:3])}); "
                                "layerzoo files are self-contained and it will not read other "
                                "files; re-export it with `zoo export`")
        session = _session(data, threads, path)
        meta = read_metadata(session.get_modelmeta().custom_metadata_map, path)
        check_signature(session.get_inputs(), session.get_outputs(), path, meta)
        return cls(session, path, meta, data, threads)

    @property
    def spec(self) -> dict[str, Any]:
        """The spec the model was built from (as ``Spec.to_dict`` wrote it)."""
        return self.meta.spec

    @property
    def metrics(self) -> dict[str, float] | None:
        """The training run's final losses, if the file carries them."""
        return self.meta.metrics

    @functools.cached_property
    def quantized(self) -> str | None:
        """How the weights were quantised (``"int8-dynamic"``), or None for fp32: from the
        metadata, else from the graph (a file whose metadata key was removed is still int8)."""
        if self.meta.quantized:
            return self.meta.quantized
        return INT8_DYNAMIC if graph_ops(self.data) & QUANTIZED_OPS else None

    def logits(self, context: np.ndarray) -> np.ndarray:
        """Next-character logits float32 [B, V] for int64 token ids [B, T] (format 1)."""
        if self.meta.step:
            raise ArtifactError(f"{self.path} is a sequence model's step graph (layerzoo "
                                "format 2), which takes one position at a time: use its "
                                "start() and step(), or sample()")
        x = np.asarray(context)
        if x.ndim != 2 or x.shape[1] != self.context:
            raise ArtifactError(f"contexts must have shape [batch, {self.context}], got "
                                f"{list(x.shape)}")
        if x.dtype.kind not in "iu":
            raise ArtifactError(f"contexts must be integer token ids, got dtype {x.dtype}")
        if x.size and (x.min() < 0 or x.max() >= len(self.vocab)):
            # onnxruntime's Gather wraps -1 to the last row silently; refuse instead
            raise ArtifactError(f"token ids must be in [0, {len(self.vocab) - 1}], got "
                                f"{int(x.min())}..{int(x.max())}")
        if not len(x):
            return np.zeros((0, len(self.vocab)), np.float32)
        x = np.ascontiguousarray(x, np.int64)  # (B, T)
        try:
            return self.session.run([OUTPUT], {INPUT: x})[0]  # (B, V) float32
        except Exception as e:  # onnxruntime's errors share no base class
            raise ArtifactError(f"{self.path}: onnxruntime failed to run the model: "
                                f"{one_line(e)}") from None

    def start(self, rows: int) -> list[np.ndarray]:
        """A step graph's state before position 0 for ``rows`` sequences: zeros (format 2)."""
        return [np.zeros((dims[0], rows, *dims[1:]) if cache else (rows, *dims), np.float32)
                for _, dims, cache in self.meta.state]

    def step(self, ids: np.ndarray, state: list[np.ndarray],
             position: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """One position: token ids int64 [A] at ``position`` and the state -> logits float32
        [A, V] for the next id and the state for the next position (format 2). A cache's new
        entry is written into its ``state`` array in place: use the returned state only."""
        if not self.meta.step:
            raise ArtifactError(f"{self.path} is a window model's graph (layerzoo format 1); "
                                "use logits() on windows of ids, or sample()")
        x = np.ascontiguousarray(ids, np.int64)  # (A,)
        if x.ndim != 1 or len(state) != len(self.state_names):
            raise ArtifactError(f"step takes ids [batch] and {len(self.state_names)} state "
                                f"arrays, got ids {list(x.shape)} and {len(state)}")
        if not 0 <= position < self.context:
            raise ArtifactError(f"position must be in [0, {self.context - 1}], got {position}")
        if x.size and (x.min() < 0 or x.max() >= len(self.vocab)):
            raise ArtifactError(f"token ids must be in [0, {len(self.vocab) - 1}], got "
                                f"{int(x.min())}..{int(x.max())}")
        for array, (name, dims, cache) in zip(state, self.meta.state, strict=True):
            want = (dims[0], len(x), *dims[1:]) if cache else (len(x), *dims)
            if not (isinstance(array, np.ndarray) and array.dtype == np.float32
                    and array.shape == want and array.flags.c_contiguous
                    and array.flags.writeable):
                got = (f"{array.dtype} {list(array.shape)}" if isinstance(array, np.ndarray)
                       else type(array).__name__)
                raise ArtifactError(f"state {name!r} must be a writable contiguous float32 "
                                    f"array {list(want)} (as start() makes it), got {got}")
        # bound to numpy buffers: onnxruntime reads the entries so far where they lie and
        # writes each cache's new entry straight into it (entry ``position``)
        binding = self.session.io_binding()
        binding.bind_cpu_input(TOKEN, x)
        binding.bind_cpu_input(POSITION, np.array(position, np.int64))
        for name, given in zip(self.state_names, entries_so_far(state, self.caches, position),
                               strict=True):
            binding.bind_cpu_input(name, given)  # contiguous: checked above, cut time first
        logits = np.empty((len(x), len(self.vocab)), np.float32)  # (A, V)
        outputs = [logits]
        for old, cache in zip(state, self.caches, strict=True):
            outputs.append(old[position] if cache else np.empty((len(x), *old.shape[1:]),
                                                                np.float32))
        for name, out in zip(self.present_names, outputs, strict=True):
            binding.bind_output(name, "cpu", 0, np.float32, out.shape, out.ctypes.data)
        try:
            self.session.run_with_iobinding(binding)
        except Exception as e:  # onnxruntime's errors share no base class
            raise ArtifactError(f"{self.path}: onnxruntime failed to run the model: "
                                f"{one_line(e)}") from None
        new = [old if cache else out
               for old, out, cache in zip(state, outputs[1:], self.caches, strict=True)]
        return logits, new

    def sample(self, n: int, **options: Any) -> list[str]:
        """``zoo.sampling.sample`` over this model (same seed, same words as torch)."""
        return sample(self.sampling_model(), vocab=self.vocab, context=self.context, n=n, **options)

    def sampling_model(self) -> Any:
        """What ``zoo.sampling.sample`` takes for this file: ``logits`` (format 1) or a stepper
        (format 2), of this file opened with one intra-op thread: the sampler grows
        ``zoo.sampling.WORKERS`` chunks at once, one per core, and a pool of threads in every
        call would make them contend for the same cores (1.2-1.3x fewer chars/s,
        docs/benchmarks.md)."""
        if self.threads == 1:
            model = self
        else:
            if self._sampler is None:
                self._sampler = OnnxModel(_session(self.data, 1, self.path), self.path,
                                          self.meta, self.data, 1)
            model = self._sampler
        if self.meta.step:
            return model
        return BatchDependent(model.logits) if self.batch_dependent else model.logits

    @property
    def batch_dependent(self) -> bool:
        """Whether a row's outputs depend on the other rows of its batch: an int8 graph
        quantises its activations over the whole batch. The sampler runs rows with the same
        prefix once only for a file whose rows are independent (fp32)."""
        return self.quantized is not None


def _session(data: bytes, threads: int | None, path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures become ArtifactError; no stderr chatter
    # idle worker threads would otherwise busy-wait after each call, starving the caller
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's errors share no base class
        raise ArtifactError(f"{path} is not a valid ONNX model: {one_line(e)}") from None


def _read(path: Path) -> bytes:
    """The bytes of a regular file of at most 2 GiB (zoo.files) that may hold an ONNX model."""
    if path.is_dir():
        raise ArtifactError(f"{path} is a directory; expected an .onnx file (a run directory "
                            "is exported with `zoo export`)")
    data = files.read_bytes(path, files.ONNX, ArtifactError)
    if not data:
        raise ArtifactError(f"{path} is empty; expected an ONNX model")
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise ArtifactError(f"{path} is a Python pickle, not an ONNX model; layerzoo never "
                            "unpickles (it can run code)")
    if data[:2] == b"PK":
        raise ArtifactError(f"{path} is a zip archive (torch.save?), not an ONNX model")
    return data
