"""Threads for training: how many intra-op threads a step gets, chosen by timing the steps.

Why not a fixed count: the models here are small, so a step is many short parallel regions,
each ending at a barrier. On an idle machine two threads are faster than one (1.3-1.5x for
the presets, benchmarks/bench_threads.py); but when another process holds a core, the thread
on that core is descheduled and every barrier waits for it: torch's default of one spinning
thread per core was measured 40x slower with two other CPU-bound processes running, and one
thread 1.2-1.8x. No fixed count is right for both, and the load changes while a run trains.

So ``Adaptive`` times every step and moves along the ladder of counts 1, 2, 4, ... (up to
the cores this process may use): after a few steps it tries the next count up for a few steps
and keeps whichever was faster, tries again later (backing off while the trials lose), and
tries the count below at once when steps suddenly get slower (another process arrived). On
Linux it does not try more threads from one while other processes' runnable threads leave no
idle cores for them (/proc/loadavg): such a trial cannot win and costs a slow step.

This changes no result: ``zoo train`` checks first that one step's loss and gradients are the
same bits on every count of the ladder (``same_bits_on_every_count``; the built-in layers run
their thread-splitting kernels on one thread, through zoo.kernels). A model that fails the
check (a plugin layer whose kernel splits a reduction across threads) keeps one thread, and
the run says so. Reproducibility therefore never depends on the machine's load.

``--threads N`` (``train(threads=N)``) fixes the count; so do ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` (torch read them when it started: left as they are).
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from zoo.errors import SpecError

__all__ = ["Adaptive", "choose", "ladder", "reproducible", "same_bits_on_every_count",
           "check_threads", "usable_cores", "ENV_VARS"]

# Settings read once, when the library loads: reproducible() sets them (a caller's own win)
# where training starts, which in a `zoo train` process is before torch is imported.
PROCESS_SETTINGS = {
    "MKL_CBWR": "AUTO,STRICT",  # MKL: results independent of memory alignment and threads
    "MKL_DYNAMIC": "FALSE",  # MKL uses the count it is given
}

ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
LOADAVG = "/proc/loadavg"  # "0.52 0.58 0.59 3/467 12345": 3 running or runnable now
MAX_AUTO_THREADS = 8

# the controller's constants (steps are training steps; seconds are wall time)
WINDOW = 15  # recent step times kept per count
TRIAL_STEPS = 5  # steps a trial of another count runs
FIRST_TRIAL_STEPS = 8  # steps on the first count before the first trial (warm-up)
BETTER = 0.95  # a trial wins when its median step time is below 95% of the current one
SLOWER = 1.5  # "steps got slower": the last SUDDEN steps all above 1.5x the window's median
SUDDEN = 3
ABORT = 3.0  # a trial step 3x slower than the current median ends the trial at once
BACKOFF = (1.0, 32.0)  # seconds before the next trial: doubles while trials lose


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def check_threads(requested: int | None) -> None:
    """SpecError for a thread count this machine cannot honour: ``--threads`` below 1 or above
    its cores, or ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` that is not a whole number >= 1
    (OpenMP would warn and ignore it). Call it before torch is imported."""
    if requested is not None and not 1 <= requested <= usable_cores():
        raise SpecError(f"--threads {requested}: expected 1 to {usable_cores()} (the CPU cores "
                        "this process may use; more threads than cores only slow training)")
    for var in ENV_VARS:
        value = os.environ.get(var)
        levels = (value or "").strip().split(",")  # OpenMP also takes one count per level
        if value and value.strip() and not all(n.strip().isdigit() and int(n) >= 1
                                               for n in levels):
            raise SpecError(f"{var}={value!r} is not a thread count (a whole number >= 1); "
                            f"unset it or give one, e.g. {var}={usable_cores()}")


def others_running() -> int | None:
    """Threads of other processes running or runnable now (Linux: /proc/loadavg); None if
    unknown. Read while this process runs one thread, so that one is subtracted."""
    try:
        with open(LOADAVG, encoding="ascii") as f:
            running = int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(running - 1, 0)


def ladder(cores: int | None = None) -> list[int]:
    """The counts the controller moves between: 1, 2, 4, ... up to the usable cores (<= 8)."""
    top = min(MAX_AUTO_THREADS, cores or usable_cores())
    counts = [1]
    while counts[-1] * 2 <= top:
        counts.append(counts[-1] * 2)
    return counts


def choose(requested: int | None = None) -> tuple[int | None, str]:
    """(threads, reason) for a fixed count; (None, "adaptive") when the controller decides.

    ``--threads`` wins, then the environment (None: torch keeps what it read at start-up).
    """
    if requested is not None:
        return requested, "--threads"
    for var in ENV_VARS:
        if os.environ.get(var):
            return None, var
    if len(ladder()) == 1:
        return 1, "one core"
    return None, "adaptive"


class Adaptive:
    """Keeps the fastest thread count of ``counts`` while the load on the machine changes.

    Call ``observe(seconds)`` after every training step with the step's wall time; it calls
    ``set_threads`` when it moves. ``now`` is the clock (injected for tests).
    """

    def __init__(self, counts: list[int], set_threads: Callable[[int], None],
                 now: Callable[[], float] = time.perf_counter,
                 others: Callable[[], int | None] = others_running,
                 cores: int | None = None) -> None:
        self.counts = counts
        self.set_threads = set_threads
        self.now = now
        self.others = others
        self.cores = cores or usable_cores()
        self.current = counts[0]
        self.times: deque[float] = deque(maxlen=WINDOW)
        self.trial: tuple[int, list[float]] | None = None
        self.backoff = BACKOFF[0]
        self.next_trial = 0.0  # clock time; 0 = after FIRST_TRIAL_STEPS
        self.steps = {n: 0 for n in counts}
        self.moves = 0
        self.up = True  # which neighbour the next scheduled trial tries
        set_threads(self.current)

    @property
    def threads(self) -> int:
        return self.trial[0] if self.trial else self.current

    def observe(self, seconds: float) -> None:
        self.steps[self.threads] += 1
        if self.trial is not None:
            self._trial_step(seconds)
            return
        self.times.append(seconds)
        if len(self.times) < FIRST_TRIAL_STEPS and not self.moves:
            return
        now = self.now()
        if not self.next_trial:
            self.next_trial = now  # the first trial: right after the warm-up steps
        if self._slowed() and self.current != self.counts[0]:
            self._start(self.counts[self.counts.index(self.current) - 1])
        elif now >= self.next_trial and len(self.times) >= TRIAL_STEPS:
            count = self._neighbour()
            if count is not None and count > self.current and not self._room_for(count):
                self.next_trial = now + BACKOFF[0]  # cores are busy: look again soon
                return
            self._start(count)

    def _room_for(self, count: int) -> bool:
        """Whether ``count`` threads find idle cores; a trial that cannot win costs a slow
        step (two threads on a busy core wait at every barrier), so it is not started.

        Only asked from one thread (the ladder's first rung): then this process has one
        thread running. Unknown (not Linux): the trial decides.
        """
        if self.current != self.counts[0]:
            return True
        others = self.others()
        return others is None or others + count <= self.cores

    def _slowed(self) -> bool:
        if len(self.times) < SUDDEN + TRIAL_STEPS:
            return False
        times = list(self.times)
        return min(times[-SUDDEN:]) > SLOWER * statistics.median(times[:-SUDDEN])

    def _neighbour(self) -> int | None:
        i = self.counts.index(self.current)
        options = [j for j in ((i + 1, i - 1) if self.up else (i - 1, i + 1))
                   if 0 <= j < len(self.counts)]
        self.up = not self.up
        return self.counts[options[0]] if options else None

    def _start(self, count: int | None) -> None:
        if count is None:  # a ladder of one count
            self.next_trial = float("inf")
            return
        self.trial = (count, [])
        self.set_threads(count)

    def _trial_step(self, seconds: float) -> None:
        count, trial = self.trial  # type: ignore[misc]
        trial.append(seconds)
        reference = statistics.median(self.times)
        if len(trial) < TRIAL_STEPS and seconds < ABORT * reference:
            return
        self.trial = None
        # the trial's first step may pay for waking threads: judge it by the rest
        judged = trial[1:] if len(trial) > 2 else trial
        if len(trial) >= TRIAL_STEPS and statistics.median(judged) < BETTER * reference:
            self.current, self.moves = count, self.moves + 1
            self.times = deque(judged, maxlen=WINDOW)
            self.backoff = BACKOFF[0]
        else:
            self.set_threads(self.current)
            self.backoff = min(self.backoff * 2, BACKOFF[1])
        self.next_trial = self.now() + self.backoff

    def summary(self) -> dict[str, Any]:
        """What meta.json records: the count in use, the steps per count, how many moves."""
        return {"now": self.threads, "steps": {str(n): k for n, k in self.steps.items() if k},
                "moves": self.moves}


def same_bits_on_every_count(step: Callable[[], tuple[Any, list[Any]]], counts: list[int],
                             set_threads: Callable[[int], None],
                             only: Callable[[str], bool] | None = None) -> str | None:
    """None when ``step`` returns the same bits on every count; else what differed first.

    ``step()`` runs one forward and backward pass and returns (loss, [(name, grad), ...]);
    ``only`` limits the gradients compared to the parameters it accepts.
    """
    import torch

    reference: tuple[Any, list[Any]] | None = None
    for count in counts:
        set_threads(count)
        result = step()
        if reference is None:
            reference = result
            continue
        if not torch.equal(reference[0], result[0]):
            return f"the loss differs between 1 and {count} threads"
        for (name, a), (_, b) in zip(reference[1], result[1], strict=True):
            if only is not None and not only(name):
                continue
            if (a is None) != (b is None) or (a is not None and not torch.equal(a, b)):
                return f"the gradient of {name} differs between 1 and {count} threads"
    return None


def probe_step(model: Any, x: Any, y: Any, loss_fn: Callable[..., Any]) -> Callable[[], Any]:
    """A ``step`` for same_bits_on_every_count: one pass on a copy, RNG state restored."""
    import torch

    def step() -> tuple[Any, list[Any]]:
        twin = copy.deepcopy(model)  # running statistics change on the copy only
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the same dropout masks for every count
            loss = loss_fn(twin(x), y)
            loss.backward()
        return loss.detach(), [(n, p.grad) for n, p in twin.named_parameters()]

    return step


def reproducible() -> list[str]:
    """Ask MKL for results that do not depend on memory alignment or a changing thread count.

    Without strict conditional numerical reproducibility the first training run in a process
    rounded differently from later ones and from other processes (measured on torch 2.13's
    MKL); with it, matrix products give the same bits on any thread count. MKL reads these when
    it starts, so this is called where training starts: by ``zoo train`` before it imports
    torch, and by ``train()`` (in time for MKL's first call when nothing ran torch before).
    Not at ``import zoo``: importing a library must not change the process environment.
    Returns the keys it set (``train()`` removes them again when it returns: MKL has read them).
    """
    added = [key for key in PROCESS_SETTINGS if key not in os.environ]
    for key in added:
        os.environ[key] = PROCESS_SETTINGS[key]
    return added


def start(model: Any, x: Any, y: Any, loss_fn: Callable[..., Any], requested: int | None,
          *, on_cpu: bool, distributed: bool) -> tuple[Adaptive | None, dict[str, Any]]:
    """Set torch's threads for training ``model``; (controller or None, meta.json's record).

    ``x``, ``y``: one training batch, for the same-bits check.
    """
    import torch

    fixed, reason = choose(requested)
    if fixed is not None:
        torch.set_num_threads(fixed)
    elif reason == "adaptive" and (distributed or not on_cpu):
        reason = "torch's own (several processes, or not on the CPU)"
    elif reason == "adaptive":
        counts = ladder()
        differs = same_bits_on_every_count(probe_step(model, x, y, loss_fn), counts,
                                           torch.set_num_threads)
        if differs is None:
            controller = Adaptive(counts, torch.set_num_threads)
            return controller, {"threads": controller.threads,
                                "thread_choice": {"reason": f"adaptive over {counts}"}}
        torch.set_num_threads(1)
        reason = f"one thread: {differs}, so a changing count would change the weights"
    return None, {"threads": torch.get_num_threads(), "thread_choice": {"reason": reason}}
