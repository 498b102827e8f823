"""What `--diagnose` costs: the same training with and without it, side by side.

    .venv/bin/python benchmarks/bench_diagnose.py                       # deep-bn, 3,000 steps
    .venv/bin/python benchmarks/bench_diagnose.py --preset mlp-bn --steps 5000 --rounds 5

Each round trains the preset twice on ../shared/data/names.txt (the bundled corpus when
absent), once plain and once with --diagnose (about 20 recorded steps), in alternating order;
the table gives each's median wall time (the training loop's own, evaluations included) and
the median of the rounds' paired ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from zoo.data import default_words_file
from zoo.train import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "names.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="deep-bn")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    data = SHARED if SHARED.is_file() else default_words_file()
    times: dict[bool, list[float]] = {False: [], True: []}
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            took = {}
            for diagnose in ((False, True) if r % 2 == 0 else (True, False)):
                result = train(args.preset, data=data, out=Path(tmp) / f"{r}-{diagnose}",
                               overrides={"steps": args.steps}, progress=False,
                               threads=args.threads, diagnose=diagnose)
                took[diagnose] = result.seconds
                times[diagnose].append(result.seconds)
            ratios.append(took[True] / took[False])
            print(f"round {r + 1}: plain {took[False]:.2f} s, --diagnose {took[True]:.2f} s",
                  flush=True)
    print(f"\n{args.preset}, {args.steps:,} steps, {args.threads} thread(s), {args.rounds} rounds")
    print(f"| run | median s | | plain | {statistics.median(times[False]):.2f} | "
          f"| --diagnose | {statistics.median(times[True]):.2f} | "
          f"| ratio (median of paired) | {statistics.median(ratios):.3f} |")


if __name__ == "__main__":
    main()
