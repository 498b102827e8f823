"""Quality benchmark: every preset trained with its default recipe, losses beside published ones.

    .venv/bin/python benchmarks/bench_quality.py                        # every preset
    .venv/bin/python benchmarks/bench_quality.py --only transformer     # one (repeatable)
    .venv/bin/python benchmarks/bench_quality.py --set transformer:steps=3000

Trains each preset on ``../shared/data/names.txt`` (the 32,033-name corpus of the published
makemore figures; the bundled data/names.txt when absent) with the lectures' split (seed 42),
one after another in this process, then prints a markdown table (parameters, steps, wall time,
train/val/test, the published figure) and each preset's validation curve. Wall time is the
training loop's own (evaluations included), so a loaded machine shows up in it: the load
average is printed beside the table, and the process CPU time (all threads) is shown too, which
a shared machine inflates much less.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from zoo.registry import get_registry
from zoo.rundir import METRICS
from zoo.train import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "names.txt"
# Published validation losses on the same corpus and split (makemore lectures 2, 3 and 5);
# the bigram's is its negative log-likelihood over the whole corpus (lecture 1), the
# transformer's makemore's README figure for its default transformer (test, its own split).
PUBLISHED = {"bigram": "2.454 (all words)", "mlp": "2.1682", "mlp-bn": "2.1048",
             "wavenet": "1.993", "transformer": "~1.92 (makemore, test, own split)"}


def _load() -> str:
    try:
        return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "load average unknown"


def _overrides(pairs: list[str]) -> dict[str, dict[str, object]]:
    """``preset:key=value`` pairs -> {preset: {key: value}} (values read as JSON, else text)."""
    out: dict[str, dict[str, object]] = {}
    for pair in pairs:
        preset, _, setting = pair.partition(":")
        key, _, value = setting.partition("=")
        try:
            parsed: object = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(preset, {})[key] = parsed
    return out


def run(preset: str, data: Path, overrides: dict[str, object], folder: Path) -> dict[str, object]:
    """Train one preset; its table row and validation curve."""
    before, cpu = _load(), time.process_time()
    result = train(preset, data=data, out=folder / preset, overrides=overrides,
                   progress=False, log=lambda line: print(f"  {preset}: {line}", flush=True))
    curve = [json.loads(line) for line in (result.path / METRICS).read_text().splitlines()]
    return {"preset": preset, "params": result.model.num_parameters(), "steps": result.steps,
            "seconds": result.seconds, "cpu": time.process_time() - cpu, **result.metrics,
            "curve": curve,
            "load": f"{before} -> {_load()}"}


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| preset | parameters | steps | wall time (s) | CPU time (s) | train | val | test "
             "| published val |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['params']:,} | {r['steps']:,} | {r['seconds']:.1f} | "
                     f"{r['train']:.4f} | {r['val']:.4f} | {r['test']:.4f} | "
                     f"{PUBLISHED.get(str(r['preset']), '—')} |")
    return "\n".join(lines)


def curves(rows: list[dict[str, object]]) -> str:
    out = []
    for r in rows:
        points = [f"{m['step']:,} ({m['seconds']:.0f} s) {m['val_loss']:.4f}"
                  for m in r["curve"] if "val_loss" in m]
        out.append(f"- {r['preset']} (step (time) val; {r['load']}): " + ", ".join(points))
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="preset to run (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="PRESET:KEY=VALUE",
                        help="override a preset's recipe field (repeatable)")
    parser.add_argument("--data", type=Path, default=SHARED if SHARED.exists() else None)
    parser.add_argument("--json", type=Path, help="also write the rows (and curves) here")
    args = parser.parse_args()
    presets = args.only or sorted(get_registry().presets)
    settings = _overrides(args.set)
    rows = []
    started = time.time()
    print(f"data: {args.data or 'bundled data/names.txt'}; {_load()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            rows.append(run(preset, args.data, settings.get(preset, {}), Path(tmp)))
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
    print(f"\n{table(rows)}\n\n{curves(rows)}\n\ntotal {time.time() - started:.0f} s; {_load()}")


if __name__ == "__main__":
    main()
