"""Training: reproducibility, resume equivalence, interrupts, non-finite loss, the run directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import zoo.train
from zoo import rundir
from zoo.build import build_model
from zoo.cli import main
from zoo.errors import ArtifactError, SpecError, TrainingError
from zoo.train import Interrupted, train

FAST = {"steps": 60, "eval_every": 20, "batch_size": 32}


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / rundir.WEIGHTS))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / rundir.METRICS).read_text().splitlines()]


def test_same_seed_same_losses_and_weights_bit_for_bit(tmp_path):
    a = train("mlp-bn", out=tmp_path / "a", overrides=FAST, progress=False)
    b = train("mlp-bn", out=tmp_path / "b", overrides=FAST, progress=False)
    assert a.metrics == b.metrics
    assert [m["val_loss"] for m in metrics(a.path)] == [m["val_loss"] for m in metrics(b.path)]
    assert_same_weights(a.path, b.path)
    c = train("mlp-bn", out=tmp_path / "c", overrides={**FAST, "seed": 1}, progress=False)
    assert c.metrics != a.metrics


@pytest.mark.parametrize("spec,stop", [("mlp-bn", 25), ("wavenet", 40)])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, spec, stop):
    # dropout draws from torch's global RNG: include it so its state is part of the proof
    overrides = {**FAST, "optimizer": "adamw"}
    full = train(spec, out=tmp_path / "full", overrides=overrides, progress=False)

    def interrupt(step: int, loss: float) -> None:
        if step == stop:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted) as info:
        train(spec, out=tmp_path / "cut", overrides=overrides, progress=False, on_step=interrupt)
    assert info.value.signum == signal.SIGINT
    meta = json.loads((tmp_path / "cut" / rundir.META).read_text())
    assert meta["status"] == "interrupted" and meta["step"] == stop + 1
    resumed = train(out=tmp_path / "cut", resume=True, progress=False)
    assert resumed.metrics == full.metrics
    assert_same_weights(full.path, resumed.path)
    assert [m["step"] for m in metrics(resumed.path)] == [20, 40, 60]


def test_resume_with_dropout_in_the_spec(tmp_path):
    spec = {"model": {"context": 3, "layers": [{"type": "embedding", "dim": 8}, "flatten",
                                               {"type": "linear", "out": 32}, "tanh",
                                               {"type": "dropout", "p": 0.3}, "linear"]}}
    full = train(spec, out=tmp_path / "full", overrides=FAST, progress=False)

    def interrupt(step: int, loss: float) -> None:
        if step == 30:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Interrupted):
        train(spec, out=tmp_path / "cut", overrides=FAST, progress=False, on_step=interrupt)
    resumed = train(None, out=tmp_path / "cut", resume=True, progress=False)
    assert_same_weights(full.path, resumed.path)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path,
                                                                               monkeypatch):
    out, built = tmp_path / "nan", []
    real_build = zoo.train.build_model
    monkeypatch.setattr(zoo.train, "build_model", lambda *a, **k: built.append(
        real_build(*a, **k)) or built[-1])

    def poison(step: int, loss: float) -> None:
        if step == 30:  # the weights blow up after the checkpoint of step 20
            with torch.no_grad():
                next(built[0].parameters()).fill_(float("nan"))

    with pytest.raises(TrainingError, match=r"loss became nan at step 31 ") as info:
        train("mlp", out=out, progress=False, overrides=FAST, on_step=poison)
    assert "last good checkpoint" in str(info.value)
    tensors, ckpt = rundir.read_tensors(out / rundir.CHECKPOINT)
    assert ckpt["step"] == "20"
    assert all(torch.isfinite(t.float()).all() for k, t in tensors.items() if k.startswith("model"))
    for name, tensor in weights(out).items():
        assert torch.isfinite(tensor.float()).all(), name
    assert json.loads((out / rundir.META).read_text())["status"] == "failed"


def test_non_finite_recipe_values_are_refused():
    with pytest.raises(SpecError, match="train.lr: expected a finite number >= 0, got float inf"):
        train("mlp", out="/nonexistent/never", overrides={"lr": float("inf")})


def test_run_directory_holds_everything_to_rebuild_the_model(tmp_path):
    result = train("mlp-bn", out=tmp_path / "run", overrides=FAST, progress=False)
    names = {p.name for p in result.path.iterdir()}
    assert names == {rundir.SPEC, rundir.VOCAB, rundir.WEIGHTS, rundir.CHECKPOINT, rundir.META,
                     rundir.METRICS, rundir.PLOT}
    assert (result.path / rundir.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((result.path / rundir.META).read_text())
    assert meta["status"] == "finished" and meta["seed"] == 42
    assert set(meta["metrics"]) == {"train_loss", "val_loss", "test_loss"}
    assert {"layerzoo", "torch", "numpy", "python"} <= set(meta["versions"])
    assert meta["recipe"]["steps"] == 60
    assert [m["step"] for m in metrics(result.path)] == [20, 40, 60]
    run = rundir.open_run(result.path)
    x = torch.randint(0, run.vocab.size, (16, 3))
    result.model.eval()
    assert torch.equal(run.model(x), result.model(x))
    spec = json.loads((result.path / rundir.SPEC).read_text())
    assert spec["train"]["batch_size"] == 32  # the spec as run carries the full recipe
    rebuilt = build_model(run.spec, run.vocab.size)
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in run.model.parameters()]


def test_writes_are_atomic_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    result = train("mlp-bn", out=tmp_path / "run", overrides=FAST, progress=False)
    before = (result.path / rundir.WEIGHTS).read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(ArtifactError, match="disk full; the file there is unchanged"):
        rundir.save_weights(result.path / rundir.WEIGHTS, result.model)
    assert (result.path / rundir.WEIGHTS).read_bytes() == before
    assert not [p for p in result.path.iterdir() if p.name.endswith(".tmp")]


def test_an_existing_run_is_never_overwritten(tmp_path):
    train("mlp-bn", out=tmp_path / "run", overrides=FAST, progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(ArtifactError, match="not empty"):
        train("mlp-bn", out=tmp_path / "run", overrides=FAST, progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


def test_recipe_overrides_are_validated_together():
    with pytest.raises(SpecError) as info:
        train("mlp-bn", out="/nonexistent/never", overrides={"stesp": 5, "lr": "fast"})
    text = str(info.value)
    assert "unknown key 'stesp' (did you mean 'steps'?)" in text
    assert "train.lr: expected a finite number >= 0, got string 'fast'" in text


def test_cli_overrides_reach_the_run(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "train", "mlp", "--out", str(out), "--steps", "30", "--batch-size", "16", "--lr", "0.05",
        "--seed", "3", "--set", "train.optimizer=sgd", "--set", "train.eval_every=10",
        "--set", "train.schedule=step", "--samples", "3"])
    assert result.exit_code == 0, result.output
    recipe = json.loads((out / rundir.SPEC).read_text())["train"]
    assert (recipe["steps"], recipe["batch_size"], recipe["lr"]) == (30, 16, 0.05)
    assert recipe["seed"] == 3
    assert (recipe["optimizer"], recipe["eval_every"], recipe["schedule"]) == ("sgd", 10, "step")
    assert "val" in result.output and "samples:" in result.output


def test_cli_bad_override_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["train", "mlp", "--out", str(tmp_path / "r"),
                                       "--set", "train.optimiser=sgd"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "unknown key 'optimiser' (did you mean 'optimizer'?)" in result.output
    assert not (tmp_path / "r").exists()


def test_summary_of_a_run_directory(tmp_path):
    train("mlp-bn", out=tmp_path / "run", overrides=FAST, progress=False)
    result = CliRunner().invoke(main, ["summary", str(tmp_path / "run")])
    assert result.exit_code == 0 and "12,097" in result.output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_a_checkpoint_and_exits_cleanly(tmp_path, sig):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", "train", "mlp-bn", "--out", str(out), "--steps",
         "1000000", "--set", "train.eval_every=50", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / rundir.METRICS).exists() or not (out / rundir.METRICS).read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr
    assert f"continue with `zoo train --resume {out}`" in stderr
    meta = json.loads((out / rundir.META).read_text())
    assert meta["status"] == "interrupted" and meta["step"] >= 50
    tensors, ckpt = rundir.read_tensors(out / rundir.CHECKPOINT)
    assert int(ckpt["step"]) == meta["step"]
