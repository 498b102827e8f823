"""Quality benchmark: every preset trained with its default recipe, losses beside published ones.

    .venv/bin/python benchmarks/bench_quality.py                        # every preset
    .venv/bin/python benchmarks/bench_quality.py --only transformer     # one (repeatable)
    .venv/bin/python benchmarks/bench_quality.py --set transformer:steps=3000
    .venv/bin/python benchmarks/bench_quality.py --threads 1          # on a shared machine

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
# makemore.py's own sequence models, imported unchanged and trained on this machine on the
# lectures' split (one thread, batch 32, AdamW 5e-4): val at the CPU seconds given.
PUBLISHED = {"bigram": "2.454 (all words)", "mlp": "2.1682", "mlp-bn": "2.1048",
             "wavenet": "1.993", "transformer": "~1.92 (makemore, test, own split)",
             "makemore-transformer": "makemore.py: 2.0995 @60 s, 2.0143 @300 s, 2.0965 @840 s",
             "makemore-gru": "makemore.py: 2.0758 @60 s, 2.004 @900 s",
             "makemore-rnn": "makemore.py: 2.046 @600 s",
             "makemore-bow": "makemore.py: 2.137 @600 s",
             "seq-transformer": "~1.92 (makemore README, test, own split)"}


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


def run(preset: str, data: Path, overrides: dict[str, object], folder: Path,
        threads: int | None = None) -> dict[str, object]:
    """Train one preset; its table row and validation curve."""
    before, cpu = _load(), time.process_time()
    result = train(preset, data=data, out=folder / preset, overrides=overrides,
                   threads=threads, progress=False,
                   log=lambda line: print(f"  {preset}: {line}", flush=True))
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
                     f"{r['cpu']:.0f} | "
                     f"{r['train_loss']:.4f} | {r['val_loss']:.4f} | {r['test_loss']:.4f} | "
                     f"{PUBLISHED.get(str(r['preset']), '—')} |")
    return "\n".join(lines)


def curves(rows: list[dict[str, object]]) -> str:
    out = []
    for r in rows:
        points = [f"{m['step']:,} ({m['seconds']:.0f} s) {m['val_loss']:.4f}"
                  for m in r["curve"] if "val_loss" in m]
        out.append(f"- {r['preset']} (step (time) val; {r['load']}): " + ", ".join(points))
    return "\n".join(out)


def render(rows: list[dict[str, object]]) -> str:
    """The table and the curves, as docs/benchmarks.md shows them."""
    return f"{table(rows)}\n\n{curves(rows)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="preset to run (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="PRESET:KEY=VALUE",
                        help="override a preset's recipe field (repeatable)")
    parser.add_argument("--data", type=Path, default=SHARED if SHARED.exists() else None)
    parser.add_argument("--json", type=Path, help="also write the rows (and curves) here")
    parser.add_argument("--threads", type=int, help="torch threads, fixed [default: zoo train's "
                        "own choice]; 1 to compare with a one-thread reference")
    args = parser.parse_args()
    presets = args.only or sorted(get_registry().presets)
    settings = _overrides(args.set)
    rows = []
    started = time.time()
    print(f"data: {args.data or 'bundled data/names.txt'}; {_load()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            rows.append(run(preset, args.data, settings.get(preset, {}), Path(tmp),
                            args.threads))
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
    print(f"\n{render(rows)}\n\ntotal {time.time() - started:.0f} s; {_load()}")


if __name__ == "__main__":
    main()
