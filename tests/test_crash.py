"""Crash safety: SIGKILL at a random moment leaves a run that loads and resumes exactly."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from zoo import rundir
from zoo.train import train

# exact one-line messages: only the built-in plugins load, whatever else is installed
pytestmark = [pytest.mark.usefixtures("fresh_registry"), pytest.mark.slow]  # kills processes

RECIPE = ["--steps", "300", "--batch-size", "32", "--set", "train.eval_every=50"]


def start(out):
    return subprocess.Popen([sys.executable, "-m", "zoo.cli", "train", "mlp-bn", "--out",
                             str(out), "--no-progress", "--samples", "0", *RECIPE],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    train("mlp-bn", out=out, progress=False,
          overrides={"steps": 300, "batch_size": 32, "eval_every": 50})
    return load_file(str(out / rundir.WEIGHTS))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, uninterrupted, seed):
    delay = random.Random(seed).uniform(0.0, 0.6)
    out = tmp_path / "run"
    proc = start(out)
    deadline = time.monotonic() + 300  # a loaded machine: starting takes time
    while not (out / rundir.METRICS).exists() or not (out / rundir.METRICS).read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # every file in place is whole: the JSON parses and the checkpoint loads
    meta = json.loads((out / rundir.META).read_text())
    tensors, info = rundir.read_tensors(out / rundir.CHECKPOINT)
    assert int(info["step"]) % 50 == 0 and meta["status"] in ("running", "finished")
    rundir.open_run(out)
    resumed = train(None, out=out, resume=True, progress=False)
    assert not list(out.glob(".*.tmp")), "stale temporary files were left behind"
    assert json.loads((out / rundir.META).read_text())["status"] == "finished"
    final = load_file(str(out / rundir.WEIGHTS))
    for key, value in uninterrupted.items():
        assert torch.equal(final[key], value), key
    steps = [json.loads(line)["step"] for line in (out / rundir.METRICS).read_text().splitlines()]
    assert steps == list(range(50, 301, 50))
    assert resumed.steps == 300
