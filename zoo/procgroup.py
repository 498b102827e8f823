"""The process group: DistributedDataParallel training, one process per rank, under torchrun.

    with Sync(World.from_env(), device) as sync:   # joins the group (a no-op in one process)
        trainer = sync.wrap(model)                 # DDP over the model when ranked
        mine = sync.shard(idx)                     # this rank's slice of the batch's indices
        loss = sync.mean(loss)                     # the global batch's loss, on every rank

Every rank draws the same seeded global batch and trains on its own slice of it; DDP averages
the gradients over the ranks, and the mean of equal-sized slice means is the mean over the whole
batch, so a step is the single-process step (up to float rounding). ``batch_size`` is therefore
the global batch and must divide evenly (``check_scale``).

The process group is gloo on CPU and NCCL on CUDA (one GPU per rank, ``cuda:LOCAL_RANK``, see
zoo.devices). torch runs ``SyncBatchNorm`` on GPUs only, so on CUDA batch normalisation layers
share statistics over the global batch (``sync_batch_norm``), while on CPU each rank normalises
with its own slice's statistics and the saved running statistics are rank 0's (DDP broadcasts
rank 0's buffers before each forward).

Rank 0 alone writes the run directory, between barriers; every rank stops at the same step on
SIGINT/SIGTERM (the flag is agreed by an all-reduce at the top of each step), and a rank that
loses its peers stops with one line while the run directory keeps its last checkpoint
(``peer_error``). zoo.launch starts the ranks for ``zoo train --nproc N``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from zoo.errors import TrainingError, ZooError, one_line
from zoo.rendezvous import join

__all__ = ["World", "Sync", "Quiet", "LostPeer", "check_scale", "check_processes",
           "sync_batch_norm", "peer_error", "LAUNCHED_ENV", "SILENT_LOST_PEER", "TIMEOUT"]

LAUNCHED_ENV = "LAYERZOO_LAUNCHED_RANKS"  # set by zoo.launch for the ranks it starts
SILENT_LOST_PEER = 75  # a rank's status when it stopped, silently, for a peer that died
# generous: rank 0 evaluates the whole split while the other ranks wait at a barrier
TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class World:
    """Where this process stands: its rank, how many ranks, and its rank on this machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> World:
        """Read torchrun's RANK, WORLD_SIZE and LOCAL_RANK; a plain process is rank 0 of 1."""
        env = dict(os.environ if env is None else env)
        if "WORLD_SIZE" not in env:
            return cls()
        try:
            world = cls(int(env.get("RANK", "0")), int(env["WORLD_SIZE"]),
                        int(env.get("LOCAL_RANK", env.get("RANK", "0"))))
        except ValueError:
            raise TrainingError("RANK/WORLD_SIZE/LOCAL_RANK in the environment are not "
                                "integers; were they set by torchrun?") from None
        if world.size < 1 or not 0 <= world.rank < world.size:
            raise TrainingError(f"RANK={world.rank} WORLD_SIZE={world.size} in the environment "
                                "do not fit; were they set by torchrun?")
        return world

    @property
    def distributed(self) -> bool:
        """Whether there are other ranks to work with (torchrun with 2 or more processes)."""
        return self.size > 1


def check_scale(nproc: int, batch_size: int) -> None:
    """Refuse a process count the global batch cannot be split over evenly."""
    if nproc < 1:
        raise TrainingError(f"--nproc {nproc}: expected 1 or more processes")
    if nproc > batch_size:
        raise TrainingError(f"--nproc {nproc} is larger than the batch (batch_size "
                            f"{batch_size}): every process needs at least one window")
    if batch_size % nproc:
        raise TrainingError(f"batch_size {batch_size} does not split over {nproc} processes "
                            f"(batch_size is the global batch); use a multiple of {nproc}, "
                            f"e.g. --batch-size {batch_size - batch_size % nproc}")


def check_processes(run: Path, trained_on: object, nproc: int) -> None:
    """Refuse resuming a run trained on ``trained_on`` processes with another count."""
    if trained_on != nproc:
        flag = f"--nproc {trained_on}" if trained_on != 1 else "no --nproc"
        raise TrainingError(f"{run} was trained on {trained_on} process(es); resume it with "
                            f"{flag} (each process trains its slice of every batch: another "
                            "count would not continue the same run)")


class Sync:
    """What the training loop asks of the other ranks; in one process every call is trivial.

    Use as a context manager: entering starts the process group (gloo on CPU, NCCL on CUDA,
    rendezvous through torchrun's MASTER_ADDR/MASTER_PORT), leaving destroys it.
    """

    def __init__(self, world: World | None = None, device: torch.device | None = None) -> None:
        self.world, self.device = world or World(), device or torch.device("cpu")
        self.backend = "nccl" if self.device.type == "cuda" else "gloo"
        self._started = False

    @property
    def nproc_flag(self) -> str:
        """`` --nproc N`` for the commands a message suggests ('' in one process)."""
        return f" --nproc {self.world.size}" if self.world.distributed else ""

    @property
    def writer(self) -> bool:
        """Whether this rank writes the run directory (rank 0)."""
        return self.world.rank == 0

    def __enter__(self) -> Sync:
        if self.world.distributed and not dist.is_initialized():
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            store = join(self.world)  # started by hand: wait for the others, say so
            where = {"init_method": "env://"} if store is None else {"store": store}
            dist.init_process_group(self.backend, **where, rank=self.world.rank,
                                    world_size=self.world.size, timeout=TIMEOUT,
                                    device_id=self.device if self.device.type == "cuda"
                                    else None)
            self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self._started = False
            with contextlib.suppress(Exception):  # a lost peer can make teardown fail too
                dist.destroy_process_group()

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train through: DDP over ``model`` (on this rank's device) when ranked.

        ``model`` itself stays the one to evaluate and save: its parameters are DDP's.
        """
        if not self.world.distributed:
            return model
        if self.device.type == "cuda":
            sync_batch_norm(model)
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's slice of the global batch's indices (all ranks drew the same ones)."""
        if not self.world.distributed:
            return idx
        size = idx.shape[0] // self.world.size
        return idx[self.world.rank * size:(self.world.rank + 1) * size]  # (B / N,)

    def max(self, value: int) -> int:
        """The largest of every rank's ``value`` (every rank gets the same answer)."""
        if not self.world.distributed:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar tensor over the ranks (the global batch's loss)."""
        if not self.world.distributed:
            return value
        t = value.detach().clone().reshape(1)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t[0] / self.world.size

    def barrier(self) -> None:
        """Wait until every rank is here."""
        if self.world.distributed:
            dist.barrier()

    @contextlib.contextmanager
    def writing(self) -> Iterator[bool]:
        """Yield whether to write; the other ranks wait until rank 0 has written."""
        self.barrier()
        yield self.writer
        self.barrier()

    def share(self, values: list[float]) -> list[float]:
        """Rank 0's ``values`` on every rank (the final losses); as tensors, never as objects."""
        if not self.world.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return t.tolist()

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """Run a block on every rank; an error on any rank ends every rank, reported once.

        The lowest rank that failed raises its own error; every other rank raises ``Quiet``
        with the same exit status, so a bad input is one line, not one per rank.
        """
        if not self.world.distributed:
            yield
            return
        try:
            yield
        except BaseException as e:
            failed = self._failures(e)
            if self.world.rank == min(failed):
                raise
            raise Quiet(str(e), getattr(e, "exit_code", 2)) from e
        failed = self._failures(None)
        if failed:
            raise Quiet(f"rank {min(failed)} failed to start", 2)

    def _failures(self, error: BaseException | None) -> list[int]:
        """The ranks that failed: each sets its own slot, the sum shows them all."""
        flags = torch.zeros(self.world.size, dtype=torch.int64, device=self.device)  # (N,)
        flags[self.world.rank] = error is not None
        dist.all_reduce(flags, op=dist.ReduceOp.SUM)
        return [rank for rank, failed in enumerate(flags.tolist()) if failed]

    def own(self, error: ZooError) -> ZooError:
        """``error`` on rank 0, which reports it; a silent twin on the other ranks."""
        if self.writer:
            return error
        signum = getattr(error, "signum", None)  # Interrupted: exit 128 + signal, like rank 0
        return Quiet(str(error), 128 + signum if signum else 2)


class Quiet(TrainingError):
    """This rank ends like the others, but another rank (rank 0) has already said why."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def sync_batch_norm(model: nn.Module) -> None:
    """Make every batch-norm module share its statistics across ranks (CUDA only in torch).

    torch's own ``convert_sync_batchnorm`` replaces a module by a plain SyncBatchNorm, which
    would drop a plugin subclass's ``forward`` (the built-in one reshapes [B, T, C]); mixing
    SyncBatchNorm in under the plugin's class keeps it: the subclass's ``super().forward``
    then reaches SyncBatchNorm's.
    """
    base = nn.modules.batchnorm._BatchNorm
    for module in model.modules():
        cls = type(module)
        if isinstance(module, base) and not isinstance(module, nn.SyncBatchNorm):
            module.__class__ = type(f"Sync{cls.__name__}", (cls, nn.SyncBatchNorm), {})
            module.process_group = None  # the default group: every rank


class LostPeer(TrainingError):
    """Another rank stopped answering (it died or was killed); this rank stops too."""

    exit_code = 1  # not bad input: the same command may well succeed again


def peer_error(error: BaseException, out: object, nproc: int,
               kept: bool = True) -> TrainingError:
    """One line for a collective that failed because another rank went away.

    Under ``zoo train --nproc`` the launcher names the rank that died and how, so the
    survivors stay silent (``Quiet``); under a bare torchrun each survivor says it. ``kept``:
    whether the run directory stays (a new run that had not stepped yet is removed).
    """
    # gloo prefixes its source location, "[.../pair.cc:537] Read error ...: Connection reset"
    reason = re.sub(r"^\[[^\]]*\]\s*", "", one_line(error, first=True)).split(". ")[0]
    message = (f"another rank stopped during training ({reason[:160]}); the run directory "
               f"keeps its last checkpoint: continue with `zoo train --resume {out} --nproc "
               f"{nproc}`" if kept else
               f"another rank stopped before the first step ({reason[:160]}); {out} was "
               "removed (it held no training): run the same command again")
    if os.environ.get(LAUNCHED_ENV):
        return Quiet(message, SILENT_LOST_PEER)
    return LostPeer(message)
