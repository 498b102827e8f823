"""Specs: read (Python, TOML, JSON, preset name), validate, and expand into layer entries.

A spec is a model (context length, layers) plus a training recipe::

    description = "MLP with BatchNorm"
    [model]
    context = 3
    layers = [{type = "embedding", dim = 10}, {type = "linear", out = 200, bias = false},
              "batchnorm", "tanh", "linear"]
    [train]
    steps = 10000

An entry is a layer name or a table with ``type``; ``{repeat = 4, layers = [...]}`` repeats a
block; ``{residual = [...]}`` adds a block's input to its output, ``x + f(x)`` (the entries
inside must keep the shape). Blocks nest. Validation runs before anything is built and
reports every problem at once, each naming the entry, the key, what was expected and what was
given. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from zoo import files
from zoo.errors import PluginError, SpecError, did_you_mean, typed_repr
from zoo.layer import LayerType
from zoo.recipe import check_recipe
from zoo.registry import Registry, get_registry

__all__ = ["DEFAULT_PRESET", "Spec", "Entry", "load_spec", "read_spec_file", "expand", "names_file",
           "DEFAULT_CONTEXT"]

DEFAULT_CONTEXT = 3  # makemore's MLP; a spec sets model.context to change it
DEFAULT_PRESET = "mlp-bn"  # what `zoo train` and train() build when given no spec
MAX_ENTRIES = 1000  # layers after repeats are unrolled
MAX_NESTING = 32  # blocks inside blocks: deeper would outrun Python's recursion in training
MAX_CONTEXT = 4096
TOP_KEYS = ("description", "model", "train")
MODEL_KEYS = ("context", "layers")
TOML_AT = re.compile(r" \(at line (\d+), column \d+\)$")


@dataclass(frozen=True)
class Spec:
    """A model spec as written (repeats not unrolled), with where it came from."""

    layers: list[Any]
    context: int | str = DEFAULT_CONTEXT  # or "auto": a sequence model's, from the words file
    train: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    source: str = "<python>"

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (JSON/TOML-ready); ``Spec.from_dict`` reads it back."""
        return {"description": self.description,
                "model": {"context": self.context, "layers": self.layers},
                "train": dict(self.train)}

    def qualified(self, registry: Registry | None = None) -> Spec:
        """This spec with every layer named ``PLUGIN:NAME``: what a run records in spec.json,
        so it rebuilds the same layers whatever plugin is installed later."""
        return (registry or get_registry()).qualify(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<python>") -> Spec:
        """Check the top-level shape of spec data and make a Spec (entries are not checked)."""
        if not isinstance(data, dict):
            raise SpecError(f"expected a table with 'model' (and optionally 'train', "
                            f"'description'), got {typed_repr(data)}", source)
        problems = _unknown_keys(data, TOP_KEYS, "top level")
        model = data.get("model")
        if model is None:
            problems.append("key 'model' is missing: expected a table with 'layers' "
                            "(and optionally 'context')")
            model = {}
        elif not isinstance(model, dict):
            problems.append(f"key 'model': expected a table, got {typed_repr(model)}")
            model = {}
        problems += _unknown_keys(model, MODEL_KEYS, "model")
        train = data.get("train", {})
        if not isinstance(train, dict):
            problems.append(f"key 'train': expected a table, got {typed_repr(train)}")
            train = {}
        description = data.get("description", "")
        if not isinstance(description, str):
            problems.append(f"key 'description': expected a string, got {typed_repr(description)}")
            description = ""
        context = model.get("context", DEFAULT_CONTEXT)
        if problems:
            raise SpecError(problems, source)
        return cls(model.get("layers"), context, dict(train), description, source)


@dataclass(frozen=True)
class Entry:
    """One layer of a validated spec, repeats unrolled, parameters converted."""

    index: int  # position in the unrolled list
    label: str  # "entry 2.1 (linear, repeat 3 of 4)"
    layer: LayerType
    params: Any  # an instance of layer.params
    blocks: tuple[str, ...] = ()  # labels of the residual blocks around it, outermost first


def _unknown_keys(table: dict[str, Any], known: tuple[str, ...], where: str) -> list[str]:
    out = []
    for key in table:
        if key not in known:
            hint = did_you_mean(str(key), known)
            out.append(f"{where}: unknown key {key!r}{hint}; expected one of "
                       + ", ".join(repr(k) for k in known))
    return out


def read_spec_file(path: str | Path) -> Spec:
    """Read a TOML or JSON spec file; syntax errors name the file and line.

    The file is read through ``zoo.files`` (a regular file of at most 1 MiB); a JSON spec with a
    key twice in one table is refused, as TOML refuses it.
    """
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"{path} is a directory, not a spec file (nor a run directory: it "
                        "has no spec.json)")
    if path.suffix.lower() == ".onnx":  # not text; say what it is rather than "not UTF-8"
        raise SpecError(f"{path} is an ONNX model, not a spec file; give a preset, a .toml "
                        "or .json spec, or the run directory it was exported from")
    text = files.read_text(path, files.SPEC, SpecError)
    if path.suffix.lower() == ".json":
        data = files.parse_json(text, path, SpecError)
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            line, reason = getattr(e, "lineno", None), getattr(e, "msg", None) or str(e)
            at = TOML_AT.search(reason)  # before Python 3.14 the position is only in the text
            if at:
                line, reason = int(at.group(1)), reason[:at.start()]
            where = f"{path}:{line}" if line else str(path)
            raise SpecError(f"{where}: invalid TOML: {reason}") from None
        except RecursionError:
            raise SpecError(f"{path}: invalid TOML: nested too deeply") from None
        except ValueError as e:  # Python refuses to convert integers of over 4,300 digits
            raise SpecError(f"{path}: invalid TOML: {str(e).split(':')[0]}") from None
    return Spec.from_dict(data, source=str(path))


def load_spec(source: Any, *, context: int | None = None,
              registry: Registry | None = None) -> Spec:
    """Make a Spec from a list of entries, a dict, a Spec, a file path or a preset name.

    ``context`` overrides the context length (a Python list defaults to 3).
    """
    if isinstance(source, Spec):
        spec = source
    elif isinstance(source, list):
        spec = Spec(source, DEFAULT_CONTEXT)
    elif isinstance(source, dict):
        spec = Spec.from_dict(source)
    elif isinstance(source, (str, Path)):
        spec = _named(str(source), registry or get_registry())
    else:
        raise SpecError(f"expected a list of layer entries, a table, a file path or a preset "
                        f"name, got {typed_repr(source)}")
    if context is not None:
        spec = Spec(spec.layers, context, spec.train, spec.description, spec.source)
    return spec


def names_file(name: str, registry: Registry) -> bool:
    """Whether a spec argument means a file (or run directory) rather than a preset.

    The precedence: a name with a path separator, a leading '.' or a .toml/.json suffix is a
    path; otherwise a registered preset (bare or ``PLUGIN:NAME``) wins over a file of the same
    name in the current folder (write ``./NAME`` for the file); anything else is a path.
    """
    path = Path(name)
    if (path.suffix.lower() in (".toml", ".json") or name.startswith(".")
            or "/" in name or os.sep in name):
        return True
    return not _is_preset(name, registry)


def _is_preset(name: str, registry: Registry) -> bool:
    """Whether a preset answers to ``name``, bare (even if ambiguous) or qualified."""
    return name in registry.presets or any(
        name in (preset.name, f"{preset.plugin}:{preset.name}")
        for preset in registry.presets.values())


def _named(name: str, registry: Registry) -> Spec:
    path = Path(name)
    if not names_file(name, registry):
        try:
            preset = registry.preset(name)
        except PluginError as e:
            raise SpecError(str(e)) from None
        spec = Spec.from_dict(preset.spec, source=f"preset {name!r}")
        # the spec's own description wins; register()'s stands in where it has none
        return dataclasses.replace(spec, layers=registry.preset_layers(preset),
                                   description=spec.description or preset.description)
    if path.is_dir() and (path / "spec.json").is_file():
        raise SpecError(f"{path} is a run directory, not a spec: give {path / 'spec.json'} to "
                        f"train its spec anew, or `zoo train --resume {path}` to continue it")
    if path.exists() or "/" in name or path.suffix.lower() in (".toml", ".json"):
        return read_spec_file(path)
    if ":" in name:  # a qualified name: say which half is wrong
        try:
            registry.preset(name)
        except PluginError as e:
            raise SpecError(f"{e}; `zoo presets` lists presets") from None
    raise SpecError(f"no preset or spec file named {name!r}"
                    f"{did_you_mean(name, registry.presets)}; `zoo presets` lists presets")


def expand(spec: Spec, registry: Registry | None = None) -> list[Entry]:
    """Validate a spec's entries and recipe; return the layers with repeats unrolled.

    Raises SpecError listing every problem found. Shapes are checked later, by the builder.
    """
    registry = registry or get_registry()
    problems: list[str] = []
    ctx = spec.context
    if ctx == "auto":
        problems.append("model.context is 'auto' (a sequence model's longest word + 1), which "
                        "only a words file can settle; give an integer to build it without one")
    elif not isinstance(ctx, int) or isinstance(ctx, bool):
        problems.append(f"model.context: expected an integer >= 1 or 'auto', got {typed_repr(ctx)}")
    elif not 1 <= ctx <= MAX_CONTEXT:
        problems.append(f"model.context: expected an integer from 1 to {MAX_CONTEXT}, got {ctx}")
    problems += check_recipe(spec.train)[1]
    entries: list[Entry] = []
    if not isinstance(spec.layers, list):
        problems.append(f"model.layers: expected a list of layer entries, got "
                        f"{'nothing' if spec.layers is None else typed_repr(spec.layers)}")
    elif not spec.layers:
        problems.append("model.layers is empty: a model needs at least one layer")
    else:
        _expand(spec.layers, "", "", registry, entries, problems)
    if problems:
        raise SpecError(problems, spec.source)
    return entries


def _expand(items: list[Any], prefix: str, suffix: str, registry: Registry,
            out: list[Entry], problems: list[str]) -> None:
    for i, item in enumerate(items):
        where = f"entry {prefix}{i}"
        if len(out) >= MAX_ENTRIES:  # one more would pass the limit
            problems.append(f"more than {MAX_ENTRIES:,} layers after unrolling repeats; "
                            "the spec is refused")
            return
        # a table with 'type' is a layer, whatever else it holds (a parameter may be called
        # 'repeat' or 'residual'); only a table without one is a block
        if isinstance(item, dict) and "type" not in item and ("repeat" in item
                                                              or "residual" in item):
            if prefix.count(".") >= MAX_NESTING:
                problems.append(f"{where}: blocks nested more than {MAX_NESTING} deep; the "
                                "spec is refused")
                return
            expand = _expand_block if "repeat" in item else _expand_residual
            expand(item, where, f"{prefix}{i}.", suffix, registry, out, problems)
            continue
        if isinstance(item, str):
            name, given = item, {}
        elif isinstance(item, dict):
            if "type" not in item:
                problems.append(f"{where}: key 'type' is missing: expected a layer name, e.g. "
                                "{type = \"linear\", out = 200}, or a block {repeat = N, "
                                "layers = [...]} or {residual = [...]}")
                continue
            name, given = item["type"], {k: v for k, v in item.items() if k != "type"}
        else:
            problems.append(f"{where}: expected a layer name or a table with 'type', got "
                            f"{typed_repr(item)}")
            continue
        if not isinstance(name, str):
            problems.append(f"{where}: key 'type': expected a layer name, got {typed_repr(name)}")
            continue
        try:
            layer = registry.layer(name)
        except PluginError as e:
            problems.append(f"{where}: {e}")
            continue
        label = f"{where} ({registry.name_of(layer)}{suffix})"
        params = _params(layer, given, label, problems)
        if params is not None:
            out.append(Entry(len(out), label, layer, params))


def _expand_block(item: dict[str, Any], where: str, prefix: str, suffix: str,
                  registry: Registry, out: list[Entry], problems: list[str]) -> None:
    count, body = item["repeat"], item.get("layers")
    bad = [k for k in item if k not in ("repeat", "layers")]
    for key in bad:
        problems.append(f"{where} (repeat block): unknown key {key!r}"
                        f"{did_you_mean(str(key), ('repeat', 'layers'))}")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        problems.append(f"{where} (repeat block): key 'repeat': expected an integer >= 1, got "
                        f"{typed_repr(count)}")
        return
    if not isinstance(body, list) or not body:
        problems.append(f"{where} (repeat block): key 'layers': expected a non-empty list of "
                        f"layer entries, got {'nothing' if body is None else typed_repr(body)}")
        return
    if count * len(body) > MAX_ENTRIES:
        problems.append(f"{where} (repeat block): {count:,} repeats of {len(body)} layers "
                        f"exceed the limit of {MAX_ENTRIES:,} layers; the spec is refused")
        return
    for r in range(count):
        before = len(problems)
        _expand(body, prefix, f"{suffix}, repeat {r + 1} of {count}", registry, out, problems)
        if len(problems) > before:  # the same mistake in every repeat: report it once
            return


def _expand_residual(item: dict[str, Any], where: str, prefix: str, suffix: str,
                     registry: Registry, out: list[Entry], problems: list[str]) -> None:
    label = f"{where} (residual{suffix})"
    body = item["residual"]
    for key in item:
        if key != "residual":
            problems.append(f"{label}: unknown key {key!r}"
                            f"{did_you_mean(str(key), ('residual',))}; a residual block is "
                            "{residual = [...layer entries...]} and takes no other key")
    if not isinstance(body, list) or not body:
        problems.append(f"{label}: key 'residual': expected a non-empty list of layer entries, "
                        f"got {typed_repr(body)}")
        return
    start = len(out)
    _expand(body, prefix, suffix, registry, out, problems)
    # inner blocks were labelled first, so the outer label goes in front: outermost first
    out[start:] = [replace(e, blocks=(label, *e.blocks)) for e in out[start:]]


def _params(layer: LayerType, given: dict[str, Any], label: str,
            problems: list[str]) -> Any | None:
    infos = {p.name: p for p in layer.parameters()}
    values: dict[str, Any] = {}
    ok = True
    for key, value in given.items():
        info = infos.get(key)
        if info is None:
            hint = did_you_mean(str(key), infos)
            known = ", ".join(repr(k) for k in infos) or "none"
            problems.append(f"{label}: unknown key {key!r}{hint}; {layer.name} takes {known}")
            ok = False
            continue
        good, converted, reason = info.check(value)
        if not good:
            problems.append(f"{label}: key {key!r}: {reason}, got {typed_repr(value)}")
            ok = False
        values[key] = converted
    for name, info in infos.items():
        if info.required and name not in given:
            problems.append(f"{label}: key {name!r} is missing: expected "
                            f"{info.expected()} ({info.doc})")
            ok = False
    return layer.params(**values) if ok else None
