"""Plain-text reports for the CLI: layers, plugins, presets, model summaries, losses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo.registry import Registry

if TYPE_CHECKING:
    from zoo.build import Model


def _table(rows: list[list[str]], right: set[int] = frozenset()) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=False))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def layers(registry: Registry) -> str:
    """Every layer type, the plugin (and version) it came from, and its parameters."""
    out = []
    for name in sorted(registry.layers):
        layer = registry.layers[name]
        out.append(f"{name}  [{layer.plugin} {layer.version}]  {layer.doc}")
        for p in layer.parameters():
            default = "required" if p.required else f"default {p.default!r}"
            out.append(f"    {p.name}: {p.describe_type()}, {default} — {p.doc}")
    return "\n".join(out + _problems(registry))


def plugins(registry: Registry) -> str:
    """Every plugin, built-in or installed, with version and what it registered."""
    rows = [["plugin", "version", "kind", "registered"]]
    for info in registry.plugins.values():
        kind = "built-in" if info.builtin else "installed"
        if info.skipped:
            what = "not loaded (not in LAYERZOO_LOAD_PLUGINS)"
        else:
            parts = []
            if info.layers:
                parts.append("layers: " + ", ".join(info.layers))
            if info.presets:
                parts.append("presets: " + ", ".join(info.presets))
            what = "; ".join(parts) or "nothing"
            if info.error:
                what += f"  FAILED: {info.error}"
        rows.append([info.name, info.version, kind, what])
    return _table(rows)


def presets(registry: Registry, sizes: dict[str, str]) -> str:
    rows = [["preset", "plugin", "parameters", "description"]]
    for name in sorted(registry.presets):
        preset = registry.presets[name]
        rows.append([name, preset.plugin, sizes.get(name, "?"), preset.description])
    return _table(rows, right={2})


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


def _problems(registry: Registry) -> list[str]:
    return [f"warning: {p}" for p in registry.problems()]
