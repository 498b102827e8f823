"""Bit-for-bit under load: the reproducibility tests, N rounds in a row beside busy processes.

    .venv/bin/python benchmarks/bench_bits.py                 # 20 rounds, 2 busy loops (~1 h)
    .venv/bin/python benchmarks/bench_bits.py --in-process    # without SIGKILL and DDP (~15 min)
    .venv/bin/python benchmarks/bench_bits.py --rounds 5 --busy 0

Starts ``--busy`` CPU-bound processes (``python3 -c "while True: pass"``), then runs the tests
that compare two trainings weight by weight — same seed twice, interrupted-then-resumed,
SIGKILL-then-resumed, a thread count changing every step, DDP resume — ``--rounds`` times in a
row, stopping at the first failure. Prints one line per round (load average, seconds) and
the count of rounds passed in a row.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = [
    "tests/test_train.py::test_same_seed_same_losses_and_weights_bit_for_bit",
    "tests/test_train.py::test_interrupted_then_resumed_equals_uninterrupted",
    "tests/test_train.py::test_resume_with_dropout_in_the_spec",
    "tests/test_threads.py::test_a_run_whose_thread_count_changes_every_step_ends_with_the_same_bits",
]
PROCESSES = [  # each starts `zoo train` processes: minutes per round on a loaded machine
    "tests/test_crash.py::test_sigkill_then_resume_matches_an_uninterrupted_run",
    "tests/test_distributed.py::test_ctrl_c_stops_every_rank_and_resume_equals_an_uninterrupted_run",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--busy", type=int, default=2, help="CPU-bound processes beside")
    parser.add_argument("--in-process", action="store_true",
                        help="leave out the SIGKILL and DDP tests, which start processes")
    args = parser.parse_args()
    tests = TESTS if args.in_process else TESTS + PROCESSES
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.busy)]
    passed = 0
    try:
        for i in range(1, args.rounds + 1):
            t0 = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                     "-x", *tests], cwd=ROOT, capture_output=True, text=True)
            load = os.getloadavg()[0]
            tail = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
            print(f"round {i}: {'passed' if result.returncode == 0 else 'FAILED'} "
                  f"({tail}; load average {load:.1f}; {time.perf_counter() - t0:.0f} s)",
                  flush=True)
            if result.returncode != 0:
                print(result.stdout[-4000:], result.stderr[-2000:])
                break
            passed += 1
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    print(f"\n{passed} of {args.rounds} rounds passed in a row with {args.busy} busy processes")
    sys.exit(0 if passed == args.rounds else 1)


if __name__ == "__main__":
    main()
