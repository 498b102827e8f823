"""Joining the other ranks of a run started by hand (RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT set in each process's environment, on one machine or several).

    store = join(world)   # None under torchrun, whose agent has joined the ranks already

Rank 0 serves a ``torch.distributed.TCPStore`` at MASTER_ADDR:MASTER_PORT and every rank
connects to it and counts itself in. A rank still waiting after ``NOTE_AFTER`` seconds says so
on stderr, once, with the address and how many ranks have joined; after the join timeout
(``LAYERZOO_JOIN_TIMEOUT`` seconds, default ``DEFAULT_JOIN``) it gives up with one line naming
the address, before anything is written. Once joined, the collectives keep their own, longer
timeout (zoo.procgroup.TIMEOUT), since rank 0 evaluates while the others wait.
"""

from __future__ import annotations

import datetime
import math
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from zoo.errors import SpecError, TrainingError

if TYPE_CHECKING:
    import torch.distributed as dist

    from zoo.procgroup import World

__all__ = ["join", "join_timeout", "NoPeers", "JOIN_ENV", "DEFAULT_JOIN", "NOTE_AFTER"]

JOIN_ENV = "LAYERZOO_JOIN_TIMEOUT"
DEFAULT_JOIN = 300.0  # seconds: time enough to start the ranks on several machines by hand
NOTE_AFTER = 3.0  # seconds before a waiting rank says so
_JOINED = "layerzoo/joined"
_POLL = 0.05


class NoPeers(TrainingError):
    """The other ranks did not join in time; nothing was started or written."""

    exit_code = 1  # not bad input: the same command works once every rank is started


def join_timeout(env: Mapping[str, str]) -> float:
    """Seconds a rank waits for the others (``LAYERZOO_JOIN_TIMEOUT``); SpecError if invalid."""
    text = env.get(JOIN_ENV, "").strip()
    if not text:
        return DEFAULT_JOIN
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise SpecError(f"{JOIN_ENV}={text[:40]!r}: expected a number of seconds > 0")
    return seconds


def _reachable(addr: str, port: int, deadline: float) -> None:
    """Wait until rank 0's store accepts connections (TimeoutError at ``deadline``): torch's
    client would retry by itself, logging each failed try on stderr from C++."""
    import socket

    while True:
        try:
            socket.create_connection((addr, port), timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{addr}:{port}") from None
            time.sleep(0.2)


def join(world: World, env: Mapping[str, str] | None = None) -> dist.Store | None:
    """The store every rank of ``world`` has joined, or None when torchrun's agent made one
    (``init_process_group`` then finds it by itself). NoPeers after the join timeout."""
    import torch.distributed as dist

    env = os.environ if env is None else env
    if env.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true":
        return None
    addr, port = env.get("MASTER_ADDR", "").strip(), env.get("MASTER_PORT", "").strip()
    if not addr or not port.isdigit() or not 0 < int(port) < 65536:
        raise SpecError(f"rank {world.rank} of {world.size}: MASTER_ADDR and MASTER_PORT must "
                        "name rank 0's address and a port (1-65535) in every rank's "
                        f"environment, got MASTER_ADDR={addr[:40]!r} MASTER_PORT={port[:20]!r}")
    seconds, where = join_timeout(env), f"{addr}:{port}"
    me = f"rank {world.rank} of {world.size}"
    joined = [1 if world.rank == 0 else 0]  # as last counted, for the messages
    deadline = time.monotonic() + seconds

    def note() -> None:
        print(f"{me}: waiting for the other ranks at {where} ({joined[0]} of {world.size} "
              f"joined; giving up after {seconds:g} s, {JOIN_ENV} sets it)", file=sys.stderr,
              flush=True)

    timer = threading.Timer(NOTE_AFTER, note)
    timer.daemon = True
    timer.start()
    try:
        try:
            if world.rank:
                _reachable(addr, int(port), deadline)
            store = dist.TCPStore(addr, int(port), world.size, is_master=world.rank == 0,
                                  timeout=datetime.timedelta(seconds=seconds),
                                  wait_for_workers=False)
            store.add(_JOINED, 1)
            while (count := store.add(_JOINED, 0)) < world.size:
                joined[0] = count
                if time.monotonic() > deadline:
                    raise TimeoutError(where)
                time.sleep(_POLL)
        except (RuntimeError, OSError) as e:  # torch's DistError is a RuntimeError; and ours
            reason = ("rank 0 did not answer" if world.rank and joined[0] == 0 else
                      f"{joined[0]} of {world.size} ranks joined")
            raise NoPeers(f"{me}: gave up waiting for the other ranks at {where} after "
                          f"{seconds:g} s ({reason}); start all {world.size} with the same "
                          "MASTER_ADDR and MASTER_PORT, or raise "
                          f"{JOIN_ENV}") from e
    finally:
        timer.cancel()
    return store
