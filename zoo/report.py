"""Plain-text reports for the CLI: layers, plugins, presets, model summaries, a trained run's
losses, an exported file's ops."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError
from zoo.registry import PluginInfo, Registry

if TYPE_CHECKING:
    from zoo.build import Model
    from zoo.train import TrainResult


def _table(rows: list[list[str]], right: set[int] = frozenset()) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=False))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def layers(registry: Registry) -> str:
    """Every layer type (qualified where the bare name is ambiguous), its plugin and version,
    and each parameter with its type, bounds and default."""
    out = []
    for name in sorted(registry.layers):
        layer = registry.layers[name]
        out.append(f"{name}  [{layer.plugin} {layer.version}]  {layer.doc}")
        for p in layer.parameters():
            default = "required" if p.required else f"default {p.default!r}"
            out.append(f"    {p.name}: {p.expected()}, {default} — {p.doc}")
    return "\n".join(out)


def _registered(registry: Registry, info: PluginInfo) -> dict[str, list[str]]:
    """A plugin's layers and presets, in registration order, by the names a user writes
    (qualified where the bare name is not this plugin's)."""
    out = {}
    for kind, table, names in (("layers", registry.layers, info.layers),
                               ("presets", registry.presets, info.presets)):
        mine = {item.name: item for item in table.values() if item.plugin == info.name}
        out[kind] = [registry.name_of(mine[name]) for name in names if name in mine]
    return out


def _status(info: PluginInfo) -> str:
    if info.skipped:
        return "skipped"
    return "failed" if info.error else "clash" if info.clashes else "ok"


def plugins(registry: Registry) -> str:
    """Every plugin with distribution, version, entry point and what it registered; a plugin
    with a problem is marked FAILED (with the reason) or CLASH (names reachable only qualified).
    """
    rows = [["plugin", "version", "kind", "distribution", "module", "registered"]]
    for info in registry.plugins.values():
        if info.skipped:
            what = "not loaded (not in LAYERZOO_LOAD_PLUGINS)"
        else:
            names = _registered(registry, info)
            what = "; ".join(f"{kind}: " + ", ".join(items)
                             for kind, items in names.items() if items) or "nothing"
            if info.error:
                what += f"  FAILED: {info.error}"
            if info.clashes:
                what += "  CLASH: " + "; ".join(info.clashes)
        kind = "built-in" if info.builtin else "installed"
        rows.append([info.name, info.version, kind, info.distribution, info.module, what])
    return _table(rows)


def plugins_json(registry: Registry) -> str:
    """The plugins as one JSON document (``zoo plugins --json``), for tools."""
    docs = []
    for info in registry.plugins.values():
        names = _registered(registry, info) if not info.skipped else {
            "layers": [], "presets": []}
        docs.append({"plugin": info.name, "status": _status(info), "builtin": info.builtin,
                     "distribution": info.distribution, "version": info.version,
                     "entry_point": None if info.builtin else f"{info.name} = {info.module}",
                     "module": info.module, **names, "error": info.error,
                     "clashes": info.clashes})
    return json.dumps({"plugins": docs, "problems": registry.problems()}, indent=2,
                      ensure_ascii=False)


def preset_sizes(registry: Registry, vocab: int) -> dict[str, str]:
    """Parameter count of each preset at a vocabulary size ('invalid' if it does not build)."""
    from zoo.build import build_model

    sizes = {}
    for name in registry.presets:
        try:
            sizes[name] = f"{build_model(name, vocab, registry=registry).num_parameters():,}"
        except ZooError:
            sizes[name] = "invalid"
    return sizes


def presets(registry: Registry, sizes: dict[str, str]) -> str:
    """Every preset (qualified where the bare name is ambiguous), plugin, size, description."""
    rows = [["preset", "plugin", "parameters", "description"]]
    for name in sorted(registry.presets):
        preset = registry.presets[name]
        rows.append([name, preset.plugin, sizes.get(name, "?"), preset.description])
    return _table(rows, right={2})


def summary_of(spec: str, vocab: int | None, context: int | None, registry: Registry) -> str:
    """``zoo summary SPEC``: SPEC is a preset, a spec file or a run directory (then built with
    the run's own spec and, unless ``vocab`` is given, its vocabulary)."""
    from zoo import rundir
    from zoo.build import build_model
    from zoo.data import BUNDLED_VOCAB_SIZE
    from zoo.spec import names_file

    source: Any = spec
    if names_file(spec, registry) and rundir.is_run_dir(spec):
        run_vocab = rundir.read_vocab(Path(spec))
        source = rundir.read_spec(Path(spec))
        vocab = vocab or run_vocab.size
    model = build_model(source, vocab or BUNDLED_VOCAB_SIZE, context=context, registry=registry)
    return summary(model, spec)


def summary(model: Model, title: str) -> str:
    """Each layer, its output shape and parameter count, and the total; residual blocks show
    their own row (the sum of their layers) with their layers indented beneath."""
    rows = [["entry", "layer", "output", "params"],
            ["input (token ids)", "", f"({model.context},)", ""]]
    for row in model.summary():  # a residual block's layers are indented under it
        rows.append(["  " * row.depth + row.label, row.layer, str(row.shape),
                     f"{row.params:,}"])
    rows.append(["total", "", "", f"{model.num_parameters():,}"])
    head = f"{title}: context {model.context}, vocabulary {model.vocab_size}"
    return head + "\n" + _table(rows, right={3})


def trained(result: TrainResult) -> str:
    """The line ``zoo train`` ends with: where the run is, how long it took, its losses."""
    m = result.metrics
    return (f"trained {result.path} in {result.seconds:.1f} s ({result.steps:,} steps): "
            f"train {m['train_loss']:.4f}  val {m['val_loss']:.4f}  test {m['test_loss']:.4f}")


def exported(path: Path, int8: bool = False) -> str:
    """What ``zoo export`` wrote: the file and its size, and its main graph's ops in order
    (``Gemm x2``), read back from the file."""
    from zoo.export.protobuf import op_counts

    ops = op_counts(path.read_bytes())
    return (f"wrote {path} ({path.stat().st_size:,} bytes{', int8' if int8 else ''})\n"
            "ops: " + ", ".join(f"{op} x{count}" if count > 1 else op
                                for op, count in ops.items()))
