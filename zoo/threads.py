"""Threads for training: how many intra-op threads a model gets, and the settings that keep a
run bit-for-bit reproducible.

Why not torch's default (one thread per core): the models here are small, so a step is a few
short parallel regions, and every region ends at a barrier. When another process holds a core,
the thread on that core is descheduled and the step waits for it — measured, a 40x collapse
with two other CPU-bound processes running (benchmarks/bench_threads.py). One thread never
waits for a sibling; it is also faster quiet for these sizes, because the regions are too short
to pay for the hand-off. Larger steps (``work`` above ``PARALLEL_WORK``) get up to two threads.

``--threads N`` (``train(threads=N)``) wins; then ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``
(torch read them when it started: left as they are); then the rule.
"""

from __future__ import annotations

import os
import sys

__all__ = ["choose", "configure", "reproducible", "step_work", "PARALLEL_WORK", "ENV_VARS"]

# Settings read once, when the library loads: reproducible() sets them (a caller's own win)
# where training starts, which in a `zoo train` process is before torch is imported.
PROCESS_SETTINGS = {
    "MKL_CBWR": "AUTO,STRICT",  # MKL: results independent of memory alignment
    "MKL_DYNAMIC": "FALSE",  # strict CNR holds for a fixed thread count
    # a thread waiting at a barrier sleeps instead of spinning: with 2 threads and another
    # process on a core, spinning siblings took 20-80x longer per step (bench_threads.py)
    "OMP_WAIT_POLICY": "PASSIVE",
}

ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# multiply-adds per step (parameters x batch x positions) from which a second thread pays for
# its barriers on an otherwise idle machine; measured by benchmarks/bench_threads.py
PARALLEL_WORK = 5e8
MAX_AUTO_THREADS = 2


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def step_work(parameters: int, batch_size: int, context: int) -> float:
    """A rough size of one training step: parameters x windows x context positions.

    An upper bound on multiply-adds (a layer applied to every position counts fully); it only
    has to rank models, not time them.
    """
    return float(parameters) * batch_size * context


def choose(work: float, requested: int | None = None) -> tuple[int | None, str]:
    """(threads, reason): the intra-op thread count for a step of ``work``; None = leave as is."""
    if requested is not None:
        return requested, "--threads"
    for var in ENV_VARS:
        if os.environ.get(var):
            return None, var
    if work < PARALLEL_WORK:
        return 1, "small model: one thread"
    if not passive_waits():
        return 1, "OpenMP threads spin at barriers (OMP_WAIT_POLICY was not PASSIVE)"
    return max(1, min(MAX_AUTO_THREADS, _cores())), "large model"


def passive_waits() -> bool:
    """Whether OpenMP sleeps at barriers: OMP_WAIT_POLICY=PASSIVE was set before torch loaded.

    OpenMP reads the policy once, when torch is imported; set later it changes nothing, and
    spinning threads are what collapsed under contention.
    """
    return _POLICY_AT_TORCH_IMPORT.get("policy", "").upper() == "PASSIVE"


_POLICY_AT_TORCH_IMPORT: dict[str, str] = {}


def configure(work: float, requested: int | None = None) -> int:
    """Apply ``choose`` to torch; returns the thread count training will use."""
    import torch

    threads, _ = choose(work, requested)
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def reproducible() -> None:
    """Ask MKL for results that do not depend on memory alignment or a changing thread count.

    Without strict conditional numerical reproducibility the first training run in a process
    rounded differently from later ones and from other processes (measured on torch 2.13's
    MKL). MKL and OpenMP read these when they start, so this is called where training starts:
    by ``zoo train`` before it imports torch, and by ``train()`` (in time for MKL's first call
    when nothing ran torch before). Not at ``import zoo``: importing a library must not change
    the process environment.
    """
    if "torch" not in sys.modules:
        for key, value in PROCESS_SETTINGS.items():
            os.environ.setdefault(key, value)
    else:  # too late for OpenMP; MKL may not have started yet
        os.environ.setdefault("MKL_CBWR", PROCESS_SETTINGS["MKL_CBWR"])
        os.environ.setdefault("MKL_DYNAMIC", PROCESS_SETTINGS["MKL_DYNAMIC"])
    # a policy in the environment before torch loaded (set by us above, or by the user) holds
    _POLICY_AT_TORCH_IMPORT.setdefault("policy", os.environ.get("OMP_WAIT_POLICY", ""))
