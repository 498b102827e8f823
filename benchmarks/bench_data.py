"""Peak memory of data preparation against the context length: it must not grow with it.

    .venv/bin/python benchmarks/bench_data.py [--data ../shared/data/names.txt]

For each context, a fresh process reads, splits and windows the words file (load_dataset) and
draws one training batch of 256; it reports its peak RSS above the RSS after the imports, then
the peak after one evaluation pass over the validation split in chunks of 16,384 windows (that
chunk, 16,384 x T int64, is evaluation's working memory and does grow with T), next to what
materialising every window as an int64 [N, T] array (the round-1 design) would have needed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CONTEXTS = (3, 64, 1024)
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "names.txt"

CHILD = r"""
import json, resource, sys
import numpy as np
from zoo.data import load_dataset

def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

base = rss_mib()
dataset = load_dataset(sys.argv[1], int(sys.argv[2]), 42)
train = dataset.splits["train"]
x, y = train.batch(np.random.default_rng(0).integers(0, len(train), 256))  # (256, T), (256,)
prepared = rss_mib() - base
for xc, yc in dataset.splits["val"].chunks(16384):  # (C, T), (C,): evaluation's pass
    pass
windows = sum(len(w) for w in dataset.splits.values())
print(json.dumps({"peak_mib": prepared, "eval_mib": rss_mib() - base, "windows": windows,
                  "materialised_mib": windows * int(sys.argv[2]) * 8 / 2**20}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    print(f"data preparation on {args.data}: peak RSS above the imports")
    print(f"{'context':>8}  {'windows':>9}  {'prepared':>9}  {'+ eval pass':>11}  "
          f"{'as N x T int64':>15}")
    for context in CONTEXTS:
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.data), str(context)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout)
        print(f"{context:>8}  {r['windows']:>9,}  {r['peak_mib']:>5.1f} MiB  "
              f"{r['eval_mib']:>7.1f} MiB  {r['materialised_mib']:>11,.0f} MiB")


if __name__ == "__main__":
    main()
