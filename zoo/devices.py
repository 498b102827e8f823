"""Where a process trains: ``--device auto|cpu|cuda|mps`` made a torch.device, or refused.

    pick_device("auto")                    # cuda:0 when a GPU is visible, else cpu
    pick_device("cuda", World(1, 2, 1))    # rank 1 of 2 on this machine: cuda:1

A rank under torchrun takes the GPU of its local rank (one GPU per rank); MPS has no
process-group backend in torch, so it serves one process only. Every refusal is one line that
says what to use instead.
"""

from __future__ import annotations

import torch

from zoo.errors import TrainingError
from zoo.procgroup import World

__all__ = ["DEVICES", "pick_device"]

DEVICES = ("auto", "cpu", "cuda", "mps")


def pick_device(name: str = "auto", world: World | None = None) -> torch.device:
    """The device for ``--device NAME``: auto is CUDA when present (one GPU per rank), else CPU."""
    world = world or World()
    if name not in DEVICES:
        raise TrainingError(f"--device {name!r}: expected one of {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"--device cuda: no CUDA device available (torch "
                                f"{torch.__version__}, built for CUDA "
                                f"{torch.version.cuda or 'none'}); use --device cpu")
        if world.local_rank >= torch.cuda.device_count():
            raise TrainingError(f"--device cuda: rank {world.rank} needs GPU "
                                f"{world.local_rank} but {torch.cuda.device_count()} are "
                                "visible; use fewer processes or --device cpu")
        return torch.device("cuda", world.local_rank)
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise TrainingError("--device mps: the Apple MPS backend is not available here; "
                                "use --device cpu")
        if world.distributed:
            raise TrainingError("--device mps: torch has no process-group backend for MPS; "
                                "train with one process or --device cpu")
        return torch.device("mps")
    return torch.device("cpu")
