"""Bad-input matrix, artifacts: broken run directories, weights, checkpoints and ONNX files.

Each case copies a tiny trained run (with its model.onnx) into tmp_path, breaks one thing, runs
one command and expects one line naming the problem and the file, exit status 2, no traceback,
and every file under tmp_path exactly as it was before the command.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
import torch
from matrix import assert_clean_error, no_hang, snapshot, special
from safetensors import safe_open
from safetensors.torch import save as st_save

W, CKPT = "weights.safetensors", "checkpoint.safetensors"


@dataclass
class Place:
    """Where a case works: its own copy of an mlp-bn run, and the untouched wavenet run."""

    tmp: Path
    run: Path  # copy of the mlp-bn run, model.onnx included
    other: Path  # the shared wavenet run: read from, never written

    @property
    def onnx(self) -> Path:
        return self.run / "model.onnx"

    def fill(self, text: str) -> str:
        for key, path in (("{run}", self.run), ("{onnx}", self.onnx), ("{tmp}", self.tmp)):
            text = text.replace(key, str(path))
        return text


Breaker = Callable[[Place], None]


def nothing(place: Place) -> None:
    """The case needs no damage: the command is wrong for the file it is given."""


def write(name: str, data: bytes | str | Callable[[Place], bytes]) -> Breaker:
    def apply(place: Place) -> None:
        value = data(place) if callable(data) else data
        path = place.run / name
        if isinstance(value, str):
            path.write_text(value, encoding="utf-8")
        else:
            path.write_bytes(value)
    return apply


def cut(name: str, keep: int | float) -> Breaker:
    """Truncate to ``keep`` bytes (an int) or to that fraction of the file (a float)."""
    def apply(place: Place) -> None:
        data = (place.run / name).read_bytes()
        (place.run / name).write_bytes(data[:keep if isinstance(keep, int) else
                                            int(len(data) * keep)])
    return apply


def remove(name: str) -> Breaker:
    return lambda place: (place.run / name).unlink()


def from_other(name: str, to: str) -> Breaker:
    return lambda place: shutil.copy(place.other / name, place.run / to)


def noise(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def torch_saved(_: Place) -> bytes:
    buf = io.BytesIO()
    torch.save({"layers.0.weight": torch.zeros(27, 10)}, buf)
    return buf.getvalue()


def edit_onnx(change: Callable[[onnx.ModelProto, Place], None]) -> Breaker:
    def apply(place: Place) -> None:
        model = onnx.load(place.onnx)
        change(model, place)
        # serialized by hand: onnx.save would try to follow external-data entries itself
        place.onnx.write_bytes(model.SerializeToString())
    return apply


def drop_metadata(model: onnx.ModelProto, place: Place) -> None:
    del model.metadata_props[:]


def corrupt_vocab_metadata(model: onnx.ModelProto, place: Place) -> None:
    for prop in model.metadata_props:
        if prop.key == "vocab":
            prop.value = '[".", "a", '


def external(location: str, make_file: bool = False) -> Breaker:
    """Move the first initializer's bytes to external data at ``location``."""
    def change(model: onnx.ModelProto, place: Place) -> None:
        tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
        if make_file:
            (place.onnx.parent / location).write_bytes(tensor.raw_data)
        size = len(tensor.raw_data)
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"), ("length", str(size))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return edit_onnx(change)


def foreign_graph(place: Place) -> bytes:
    """A valid ONNX model with layerzoo metadata that is not a layerzoo model (Identity)."""
    h = onnx.helper
    graph = h.make_graph([h.make_node("Identity", ["x"], ["y"])], "foreign",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 3])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 3])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 20)])
    h.set_model_props(model, {"layerzoo.format": "1", "vocab": '[".", "a", "b"]',
                              "context": "3"})
    return model.SerializeToString()


def shrink_vocab(place: Place) -> bytes:
    return b'{"chars": [".", "a", "b", "c"]}'


def other_onnx(place: Place) -> None:
    shutil.copy(place.other / "model.onnx", place.tmp / "other.onnx")


def empty_dir(place: Place) -> None:
    (place.tmp / "empty").mkdir()


def retype(dtype: torch.dtype) -> Breaker:
    """The same tensor names and shapes (and metadata), stored as ``dtype``."""
    def apply(place: Place) -> None:
        with safe_open(place.run / W, "pt") as f:
            metadata = f.metadata()
            tensors = {k: f.get_tensor(k).to(dtype) for k in f.keys()}  # noqa: SIM118
        (place.run / W).write_bytes(st_save(tensors, metadata=metadata))
    return apply


def edit(name: str, old: str, new: str) -> Breaker:
    def apply(place: Place) -> None:
        text = (place.run / name).read_text(encoding="utf-8")
        assert old in text
        (place.run / name).write_text(text.replace(old, new, 1), encoding="utf-8")
    return apply


def permute_vocab(place: Place) -> None:
    data = json.loads((place.run / "vocab.json").read_text(encoding="utf-8"))
    chars = data["chars"]
    chars[1], chars[2] = chars[2], chars[1]  # same size, same symbols, other order
    (place.run / "vocab.json").write_text(json.dumps(data), encoding="utf-8")


def meta_field(key: str, value: object) -> Breaker:
    """Set meta.json's field ``key`` (``data.path``: a field of a table) to ``value``."""
    def apply(place: Place) -> None:
        path = place.run / "meta.json"
        meta = json.loads(path.read_text(encoding="utf-8"))
        *tables, last = key.split(".")
        inner = meta
        for name in tables:
            inner = inner[name]
        inner[last] = value
        path.write_text(json.dumps(meta), encoding="utf-8")
    return apply


def metrics_rows(change: Callable[[list[dict]], list]) -> Breaker:
    """Rewrite metrics.jsonl's rows (JSON lines) as ``change`` returns them."""
    def apply(place: Place) -> None:
        path = place.run / "metrics.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert len(rows) >= 2
        path.write_text("".join(json.dumps(r) + "\n" for r in change(rows)), encoding="utf-8")
    return apply


def first_row(key: str, value: object) -> Callable[[list[dict]], list]:
    def change(rows: list[dict]) -> list:
        if value is DROP:
            del rows[0][key]
        else:
            rows[0][key] = value
        return rows
    return change


DROP = object()


def special_file(name: str, kind: str) -> Breaker:
    """Replace a run's file by a FIFO, a socket, a link to /dev/zero or a directory."""
    def apply(place: Place) -> None:
        (place.run / name).unlink(missing_ok=True)
        special(kind, place.run / name)
    return apply


DEEP = "[" * 100_000 + "]" * 100_000


R, X, T = "{run}", "{onnx}", "{tmp}"  # the run copy, its model.onnx, tmp_path
NOT_ST = "is not a valid safetensors file"
PICKLE = ("is a pickle or torch.save file, not safetensors", "never unpickles")
OTHER = "holds weights of another model"

# (id, how to break the copy, command, fragments of the one-line error; {run}, {onnx}, {tmp}
# are filled in with the case's paths)
CASES: list[tuple[str, Breaker, list[str], list[str]]] = [
    # -- weights.safetensors --------------------------------------------------------------
    ("weights-truncated-header", cut(W, 100), ["sample", R], [f"{R}/{W}", NOT_ST]),
    ("weights-truncated-data", cut(W, 0.5), ["export", R], [f"{R}/{W}", NOT_ST]),
    ("weights-random-bytes", write(W, noise(4000)), ["sample", R], [f"{R}/{W}", NOT_ST]),
    ("weights-empty", write(W, b""), ["check", R, X], [f"{R}/{W}", NOT_ST]),
    ("weights-pickle", write(W, pickle.dumps({"layers.0.weight": [0.0] * 10})), ["sample", R],
     [f"{R}/{W}", *PICKLE]),
    ("weights-pickle-protocol-0", write(W, pickle.dumps({"w": [1.0]}, protocol=0)),
     ["export", R], [f"{R}/{W}", *PICKLE]),
    ("weights-torch-save", write(W, torch_saved), ["check", R, X], [f"{R}/{W}", *PICKLE]),
    ("weights-of-another-spec", from_other(W, W), ["sample", R], [f"{R}/{W}", OTHER]),
    ("weights-of-another-spec-export", from_other(W, W), ["export", R], [f"{R}/{W}", OTHER]),
    ("weights-of-another-vocab", write("vocab.json", shrink_vocab), ["sample", R],
     [f"{R}/{W}", OTHER, "layers.0.weight is (27, 10), the spec needs (4, 10)"]),
    # -- files missing from the run directory ---------------------------------------------
    ("no-spec", remove("spec.json"), ["sample", R], [f"run directory {R} is missing spec.json"]),
    ("no-spec-summary", remove("spec.json"), ["summary", R],
     [f"{R} is a directory, not a spec file", "no spec.json"]),
    ("no-vocab", remove("vocab.json"), ["export", R], [f"{R} is missing vocab.json"]),
    ("no-vocab-summary", remove("vocab.json"), ["summary", R], [f"{R}/vocab.json is missing"]),
    ("no-meta", remove("meta.json"), ["check", R, X], [f"{R} is missing meta.json"]),
    ("no-weights", remove(W), ["sample", R], [f"{R} is missing {W}"]),
    ("no-run-dir", nothing, ["export", f"{T}/nope"], [f"{T}/nope: no such run directory"]),
    ("sample-empty-dir", empty_dir, ["sample", f"{T}/empty"],
     [f"run directory {T}/empty is missing spec.json, vocab.json, {W}, meta.json"]),
    # -- corrupted JSON -------------------------------------------------------------------
    ("spec-json-syntax", write("spec.json", '{"model": {"layers": ['), ["summary", R],
     [f"{R}/spec.json:1:", "invalid JSON"]),
    ("spec-not-a-table", write("spec.json", "[1, 2, 3]"), ["sample", R],
     [f"{R}/spec.json is not a valid spec", "expected a table with 'model'"]),
    ("spec-unknown-layer", write("spec.json", '{"model": {"layers": ["embedding", "flatten", '
                                 '"tanhh", "linear"]}}'), ["export", R],
     [f"{R}/spec.json: cannot build the model", "unknown layer 'tanhh'"]),
    ("spec-not-utf8", write("spec.json", b'{"model": "\xff"}'), ["check", R, X],
     [f"{R}/spec.json:1: not UTF-8 (byte 0xff)"]),
    ("vocab-json-syntax", write("vocab.json", '{"chars": [".", "a"'), ["sample", R],
     [f"{R}/vocab.json:1:", "invalid JSON"]),
    ("vocab-wrong-shape", write("vocab.json", '{"chars": ["a"]}'), ["summary", R],
     [f"{R}/vocab.json is corrupted", "expected {'chars': ['.', ...]}"]),
    ("vocab-a-list", write("vocab.json", '[".", "a"]'), ["check", R, X],
     [f"{R}/vocab.json is corrupted", "expected {'chars': ['.', ...]}"]),
    ("meta-json-syntax", write("meta.json", "{"), ["check", R, X],
     [f"{R}/meta.json:1:", "invalid JSON"]),
    ("meta-not-utf8", write("meta.json", b"\xff\xfe{}"), ["sample", R],
     [f"{R}/meta.json:1: not UTF-8 (byte 0xff)"]),
    ("meta-without-data", write("meta.json", "{}"), ["check", R, X],
     [f"{R}/meta.json does not say which words file"]),
    # -- ONNX files -----------------------------------------------------------------------
    ("onnx-truncated", cut("model.onnx", 0.5), ["sample", X], [X, "is not a valid ONNX model"]),
    ("onnx-truncated-check", cut("model.onnx", 3000), ["check", R, X],
     [X, "is not a valid ONNX model"]),
    ("onnx-random-bytes", write("model.onnx", noise(5000)), ["sample", X],
     [X, "is not a valid ONNX model"]),
    ("onnx-empty", write("model.onnx", b""), ["sample", X], [f"{X} is empty"]),
    ("onnx-missing", remove("model.onnx"), ["sample", X], [f"{X}: no such ONNX file"]),
    ("onnx-pickle", write("model.onnx", pickle.dumps({"graph": 1})), ["sample", X],
     [f"{X} is a Python pickle", "never unpickles"]),
    ("onnx-torch-save", write("model.onnx", torch_saved), ["check", R, X],
     [f"{X} is a zip archive (torch.save?)"]),
    ("onnx-no-metadata", edit_onnx(drop_metadata), ["sample", X],
     [f"{X} has no layerzoo metadata"]),
    ("onnx-no-metadata-check", edit_onnx(drop_metadata), ["check", R, X],
     [f"{X} has no layerzoo metadata"]),
    ("onnx-corrupted-metadata", edit_onnx(corrupt_vocab_metadata), ["sample", X],
     [f"{X} has corrupted layerzoo metadata"]),
    ("onnx-not-a-layerzoo-graph", write("model.onnx", foreign_graph), ["sample", X],
     [f"{X} takes [x tensor(float)", "a layerzoo model takes context int64 [batch, 3]"]),
    ("onnx-external-data-outside", external("../../etc/passwd"), ["sample", X],
     [f"{X} refers to external data", "will not read other files"]),
    ("onnx-external-data-outside-check", external("../../etc/passwd"), ["check", R, X],
     [f"{X} refers to external data"]),
    ("onnx-external-data-absolute", external("/etc/passwd"), ["sample", X],
     [f"{X} refers to external data"]),
    ("onnx-external-data-beside-it", external("weights.bin", make_file=True), ["sample", X],
     [f"{X} refers to external data"]),
    ("onnx-of-another-run", other_onnx, ["check", R, f"{T}/other.onnx"],
     [f"{T}/other.onnx was not exported from {R}"]),
    # -- a run directory where a file is expected, and the other way round ------------------
    ("run-dir-as-onnx", nothing, ["check", R, R], [f"{R} is a directory; expected an .onnx file"]),
    ("onnx-as-run-dir-export", nothing, ["export", X],
     [f"{X} is a file, not a run directory"]),
    ("onnx-as-run-dir-check", nothing, ["check", X, X], [f"{X} is a file, not a run directory"]),
    ("onnx-as-spec-summary", nothing, ["summary", X], [f"{X} is an ONNX model, not a spec file"]),
    ("weights-as-onnx", nothing, ["sample", f"{R}/{W}"], [f"{R}/{W} is not a valid ONNX model"]),
    ("export-into-missing-folder", nothing, ["export", R, "-o", f"{T}/nope/m.onnx"],
     [f"cannot write {T}/nope/m.onnx: folder {T}/nope does not exist"]),
    ("export-onto-a-directory", nothing, ["export", R, "-o", R], [f"{R} is a directory"]),
    # -- train --resume -------------------------------------------------------------------
    ("resume-without-checkpoint", remove(CKPT), ["train", "--resume", R],
     [f"{R}/{CKPT} is missing"]),
    ("resume-truncated-checkpoint", cut(CKPT, 0.5), ["train", "--resume", R],
     [f"{R}/{CKPT}", NOT_ST]),
    ("resume-pickled-checkpoint", write(CKPT, torch_saved), ["train", "--resume", R],
     [f"{R}/{CKPT}", *PICKLE]),
    ("resume-weights-as-checkpoint", from_other(W, CKPT), ["train", "--resume", R],
     [f"{R}/{CKPT} is not a layerzoo checkpoint"]),
    ("resume-checkpoint-of-another-spec", from_other(CKPT, CKPT), ["train", "--resume", R],
     [f"{R}/{CKPT}", OTHER]),
    ("resume-empty-dir", empty_dir, ["train", "--resume", f"{T}/empty"],
     [f"{T}/empty/spec.json is missing"]),
    ("resume-no-such-dir", nothing, ["train", "--resume", f"{T}/nope"],
     [f"{T}/nope"]),
    # -- silent wrong results --------------------------------------------------------------
    ("weights-int8", retype(torch.int8), ["sample", R],
     [f"{R}/{W}: tensor", "holds int8 values; expected float (float32, float64, float16, "
      "bfloat16)"]),
    ("weights-bool", retype(torch.bool), ["export", R], [f"{R}/{W}", "holds bool values"]),
    ("weights-int64", retype(torch.int64), ["check", R, X], [f"{R}/{W}", "holds int64"]),
    ("spec-edited-after-training", edit("spec.json", ':tanh"', ':relu"'), ["sample", R],
     [f"{R}/spec.json was changed after {R}/{W} was saved", "would give wrong results"]),
    ("spec-edited-after-training-export", edit("spec.json", ':tanh"', ':relu"'),
     ["export", R], [f"{R}/spec.json was changed after"]),
    ("vocab-permuted", permute_vocab, ["sample", R], [f"{R}/vocab.json was changed after"]),
    ("spec-edited-then-resumed", edit("spec.json", ':tanh"', ':relu"'), ["train", "--resume", R],
     [f"{R}/spec.json was changed after {R}/{CKPT} was saved"]),
    ("vocab-permuted-then-resumed", permute_vocab, ["train", "--resume", R],
     [f"{R}/vocab.json was changed after {R}/{CKPT} was saved"]),
    ("vocab-permuted-check", permute_vocab, ["check", R, X], [f"{R}/vocab.json was changed"]),
    ("spec-duplicate-key", edit("spec.json", '"context": 3', '"context": 3, "context": 4'),
     ["sample", R], [f"{R}/spec.json: invalid JSON: key 'context' appears twice"]),
    ("meta-duplicate-key", edit("meta.json", '"seed"', '"seed": 1, "seed"'), ["check", R, X],
     [f"{R}/meta.json: invalid JSON: key 'seed' appears twice"]),
    # -- never an "internal error" -------------------------------------------------------
    ("spec-deeply-nested", write("spec.json", DEEP), ["sample", R],
     [f"{R}/spec.json: invalid JSON: nested too deeply"]),
    ("vocab-deeply-nested", write("vocab.json", DEEP), ["summary", R],
     [f"{R}/vocab.json: invalid JSON: nested too deeply"]),
    ("meta-deeply-nested", write("meta.json", DEEP), ["check", R, X],
     [f"{R}/meta.json: invalid JSON: nested too deeply"]),
    ("meta-deeply-nested-resume", write("meta.json", DEEP), ["train", "--resume", R],
     [f"{R}/meta.json: invalid JSON: nested too deeply"]),
    ("meta-a-list", write("meta.json", "[1, 2]"), ["sample", R],
     [f"{R}/meta.json is corrupted: expected a JSON object, got list"]),
    ("meta-a-list-check", write("meta.json", "[]"), ["check", R, X],
     [f"{R}/meta.json is corrupted: expected a JSON object, got list"]),
    ("spec-int-5000-digits", edit("spec.json", '"context": 3', '"context": ' + "3" * 5000),
     ["sample", R], [f"{R}/spec.json: invalid JSON: an integer of 5,000 digits"]),
    ("meta-int-5000-digits", edit("meta.json", '"step": ', '"step": ' + "3" * 5000 + ", "
                                  '"x": '), ["check", R, X],
     [f"{R}/meta.json: invalid JSON: an integer of 5,000 digits"]),
    # -- files that are not regular files: refused by name, never read or waited on
    ("weights-fifo", special_file(W, "fifo"), ["sample", R],
     [f"{R}/{W} is a FIFO (named pipe); expected a safetensors weights file"]),
    ("weights-dev-zero", special_file(W, "dev-zero"), ["export", R],
     [f"{R}/{W} is a character device"]),
    ("weights-directory", special_file(W, "directory"), ["check", R, X],
     [f"{R}/{W} is a directory; expected a safetensors weights file"]),
    ("weights-socket", special_file(W, "socket"), ["sample", R], [f"{R}/{W} is a socket"]),
    ("spec-fifo", special_file("spec.json", "fifo"), ["sample", R],
     [f"{R}/spec.json is a FIFO (named pipe)"]),
    ("vocab-dev-zero", special_file("vocab.json", "dev-zero"), ["summary", R],
     [f"{R}/vocab.json is a character device"]),
    ("meta-fifo", special_file("meta.json", "fifo"), ["check", R, X],
     [f"{R}/meta.json is a FIFO (named pipe)"]),
    ("checkpoint-fifo", special_file(CKPT, "fifo"), ["train", "--resume", R],
     [f"{R}/{CKPT} is a FIFO (named pipe); expected a safetensors checkpoint"]),
    ("checkpoint-dev-zero", special_file(CKPT, "dev-zero"), ["train", "--resume", R],
     [f"{R}/{CKPT} is a character device"]),
    ("onnx-fifo", special_file("model.onnx", "fifo"), ["sample", X],
     [f"{X} is a FIFO (named pipe); expected an .onnx file"]),
    ("onnx-dev-zero", special_file("model.onnx", "dev-zero"), ["sample", X],
     [f"{X} is a character device; expected an .onnx file"]),
    ("onnx-fifo-check", special_file("model.onnx", "fifo"), ["check", R, X],
     [f"{X} is a FIFO (named pipe)"]),
    ("onnx-socket", special_file("model.onnx", "socket"), ["sample", X], [f"{X} is a socket"]),
    # -- meta.json checked field by field (zoo.runschema), before anything is written ------
    *[(f"meta-{name}", meta_field(key, value), args, [f"{R}/meta.json is corrupted: field "
                                                      f"'{field}': {problem}"])
      for name, key, value, args, field, problem in [
          ("recipe-a-list", "recipe", [], ["train", "--resume", R], "recipe",
           "expected a JSON object, got []"),
          ("recipe-steps-text", "recipe.steps", "5", ["train", "--resume", R], "recipe.steps",
           "expected an integer >= 1, got '5'"),
          ("seconds-text", "seconds", "abc", ["train", "--resume", R], "seconds",
           "expected a finite number >= 0, got 'abc'"),
          ("seconds-null", "seconds", None, ["export", R], "seconds",
           "expected a finite number >= 0, got None"),
          ("extended-an-object", "extended", {}, ["train", "--resume", R], "extended",
           "expected a list, got {}"),
          ("extended-entry-incomplete", "extended", [{"at": 3}], ["train", "--resume", R],
           "extended[0]", "'from' is missing"),
          ("data-path-a-list", "data.path", ["x"], ["check", R, X], "data.path",
           "expected a non-empty string, got ['x']"),
          ("data-path-a-number", "data.path", 5, ["train", "--resume", R], "data.path",
           "expected a non-empty string, got 5"),
          ("data-sha256-short", "data.sha256", "abc", ["train", "--resume", R], "data.sha256",
           "expected a sha256 (64 lowercase hex digits), got 'abc'"),
          ("data-words-negative", "data.words", {"train": -1}, ["check", R, X],
           "data.words.train", "expected an integer >= 0, got -1"),
          ("seed-a-list", "seed", [42], ["check", R, X], "seed",
           "expected an integer in [0, 2**64), got [42]"),
          ("seed-text", "seed", "42", ["check", R, X], "seed",
           "expected an integer in [0, 2**64), got '42'"),
          ("seed-null", "seed", None, ["check", R, X], "seed",
           "expected an integer in [0, 2**64), got None"),
          ("seed-fraction", "seed", 42.5, ["check", R, X], "seed",
           "expected an integer in [0, 2**64), got 42.5"),
          ("seed-true", "seed", True, ["train", "--resume", R], "seed",
           "expected an integer in [0, 2**64), got True"),
          ("seed-negative", "seed", -1, ["check", R, X], "seed",
           "expected an integer in [0, 2**64), got -1"),
          ("processes-zero", "processes", 0, ["train", "--resume", R], "processes",
           "expected an integer >= 1, got 0"),
          ("metrics-text", "metrics", "good", ["export", R], "metrics",
           "expected a JSON object, got 'good'"),
          ("metrics-loss-text", "metrics", {"val_loss": "2.1"}, ["export", R, "--int8"],
           "metrics.val_loss", "expected a finite number, got '2.1'"),
          ("status-unknown", "status", "done", ["sample", R], "status",
           "expected one of 'running', 'interrupted', 'failed', 'finished', got 'done'"),
          ("kind-unknown", "kind", "tree", ["export", R], "kind",
           "expected one of 'window', 'sequence', got 'tree'"),
          ("versions-a-list", "versions", ["0.1"], ["sample", R], "versions",
           "expected a JSON object, got ['0.1']"),
      ]],
    # a seed of the right type that is not the split's: never a silently different split
    ("meta-seed-not-the-specs", meta_field("seed", 41), ["check", R, X],
     [f"{R}/meta.json says seed 41 but {R}/spec.json says train.seed 42", "split is unknown"]),
    ("meta-seed-not-the-specs-resume", meta_field("seed", 41), ["train", "--resume", R],
     [f"{R}/meta.json says seed 41 but {R}/spec.json says train.seed 42"]),
    # -- metrics.jsonl's rows checked on resume --------------------------------------------
    ("metrics-step-text", metrics_rows(first_row("step", "x")), ["train", "--resume", R],
     [f"{R}/metrics.jsonl:1 is corrupted: field 'step': expected an integer >= 1, got 'x'"]),
    ("metrics-step-zero", metrics_rows(first_row("step", 0)), ["train", "--resume", R],
     [f"{R}/metrics.jsonl:1 is corrupted: field 'step': expected an integer >= 1, got 0"]),
    ("metrics-steps-out-of-order", metrics_rows(lambda rows: [rows[1], rows[0], *rows[2:]]),
     ["train", "--resume", R], [f"{R}/metrics.jsonl:2 is corrupted: step", "comes after step"]),
    ("metrics-step-repeated", metrics_rows(lambda rows: [rows[0], *rows]),
     ["train", "--resume", R], [f"{R}/metrics.jsonl:2 is corrupted: step"]),
    ("metrics-row-without-val-loss", metrics_rows(first_row("val_loss", DROP)),
     ["train", "--resume", R], [f"{R}/metrics.jsonl:1 is corrupted: field 'val_loss' is "
                                "missing"]),
    ("metrics-loss-text", metrics_rows(first_row("losses", [2.0, "2.1"])),
     ["train", "--resume", R],
     [f"{R}/metrics.jsonl:1 is corrupted: field 'losses[1]': expected a finite number, got "
      "'2.1'"]),
    ("metrics-lr-negative", metrics_rows(first_row("lr", -0.1)), ["train", "--resume", R],
     [f"{R}/metrics.jsonl:1 is corrupted: field 'lr': expected a finite number >= 0"]),
    ("metrics-row-a-list", metrics_rows(lambda rows: [[1, 2], *rows]), ["train", "--resume", R],
     [f"{R}/metrics.jsonl:1: expected an object with an integer 'step'"]),
]


@pytest.fixture
def place(tmp_path: Path, exported) -> Place:
    run, _ = exported("mlp-bn")
    other, _ = exported("wavenet")
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return Place(tmp_path, copy, other)


@pytest.mark.parametrize("name,breaker,args,fragments", CASES, ids=[c[0] for c in CASES])
def test_broken_artifact(cli, place, name, breaker, args, fragments):
    breaker(place)
    other_before = snapshot(place.other)
    before = snapshot(place.tmp)
    with no_hang():
        result = cli(*[place.fill(a) for a in args])
    assert_clean_error(result, *[place.fill(f) for f in fragments])
    assert result.stdout == ""
    assert snapshot(place.tmp) == before
    assert snapshot(place.other) == other_before


def test_every_command_is_covered():
    """The matrix exercises each command that reads an artifact."""
    commands = {" ".join(args[:2]) if args[0] == "train" else args[0]
                for _, _, args, _ in CASES}
    assert {"sample", "summary", "export", "check", "train --resume"} <= commands
    assert len(CASES) >= 10


def test_debug_shows_the_traceback_for_a_broken_artifact(place):
    from click.testing import CliRunner

    from zoo.cli import main
    from zoo.errors import ArtifactError

    remove(W)(place)
    result = CliRunner().invoke(main, ["--debug", "sample", str(place.run)])
    assert isinstance(result.exception, ArtifactError)
