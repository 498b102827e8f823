"""Scale-out: the pieces of zoo.distributed (ranks, slices, devices, SyncBatchNorm)."""

from __future__ import annotations

import pytest
import torch

from zoo.distributed import Sync, World, check_scale, pick_device, sync_batch_norm
from zoo.errors import TrainingError

# -- the pieces ----------------------------------------------------------------------------


def test_world_comes_from_torchruns_environment():
    assert World.from_env({}) == World(0, 1, 0)
    assert World.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(3, 4, 1)
    with pytest.raises(TrainingError, match="RANK=4 WORLD_SIZE=4"):
        World.from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(TrainingError, match="not integers"):
        World.from_env({"RANK": "a", "WORLD_SIZE": "2"})


def test_slices_of_the_ranks_make_up_the_global_batch():
    idx = torch.randperm(48)
    slices = [Sync(World(r, 4, r), torch.device("cpu")).shard(idx) for r in range(4)]
    assert all(len(s) == 12 for s in slices)
    assert torch.equal(torch.cat(slices), idx)
    check_scale(4, 48)
    assert pick_device("cpu").type == "cpu" and pick_device("auto").type in ("cpu", "cuda")


def test_sync_batch_norm_keeps_a_plugin_subclass_forward():
    from zoo.build import build_model

    spec = {"model": {"context": 4, "layers": [{"type": "embedding", "dim": 6},
                                               "batchnorm", "flatten", "linear"]}}
    model = build_model(spec, 27)
    x = torch.randint(0, 27, (8, 4))  # (B, T); the norm sees (B, T, C)
    before = model(x)
    sync_batch_norm(model)
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    # without a process group SyncBatchNorm computes plain batch norm: same [B, T, C] result
    assert torch.allclose(model(x), before)
