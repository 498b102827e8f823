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
from lanes import slow_but
from safetensors.torch import load_file

import zoo.train
from zoo import curves, rundir
from zoo.build import build_model
from zoo.cli import main
from zoo.data import default_words_file
from zoo.errors import ArtifactError, RunWarning, SpecError, TrainingError
from zoo.recipe import resolve_recipe
from zoo.threads import usable_cores
from zoo.train import Interrupted, train

# exact one-line messages: only the built-in plugins load, whatever else is installed
pytestmark = pytest.mark.usefixtures("fresh_registry")

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


@pytest.mark.parametrize("spec,stop", slow_but([("mlp-bn", 25), ("wavenet", 40),
                                                ("makemore-gru", 25), ("seq-transformer", 30)],
                                               ("mlp-bn", 25)))
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


@pytest.fixture
def spec_reads(monkeypatch) -> list[Path]:
    """The spec files read from here on, one entry per read."""
    from zoo import files

    reads: list[Path] = []
    real = files.read_bytes

    def counting(path, kind, *args, **kwargs):
        if kind is files.SPEC:
            reads.append(Path(path))
        return real(path, kind, *args, **kwargs)

    monkeypatch.setattr(files, "read_bytes", counting)
    return reads


def spec_file(folder: Path) -> Path:
    path = folder / "tiny.json"
    path.write_text(json.dumps({"model": {"context": 3, "layers": [
        {"type": "embedding", "dim": 4}, "flatten", "linear"]},
        "train": {"steps": 2, "batch_size": 8}}), encoding="utf-8")
    return path


def test_zoo_train_reads_its_spec_once(tmp_path, spec_reads):
    """The checks made before a run read and validate the spec; the run is handed that."""
    spec = spec_file(tmp_path)
    result = CliRunner().invoke(main, ["train", str(spec), "--out", str(tmp_path / "run"),
                                       "--samples", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert spec_reads == [spec]
    assert json.loads((tmp_path / "run" / rundir.META).read_text())["spec"] == str(spec)


def test_the_launcher_reads_the_spec_once_and_trains_nothing(tmp_path, spec_reads,
                                                             monkeypatch):
    """`zoo train --nproc 2` checks the spec before torchrun starts the ranks (each a process
    of its own, reading it there)."""
    if usable_cores() < 2:
        pytest.skip("two processes need two usable cores")
    launched = []
    monkeypatch.setattr("zoo.launch.launch", lambda nproc, args, out: launched.append(
        (nproc, args)) or 0)
    spec = spec_file(tmp_path)
    result = CliRunner().invoke(main, ["train", str(spec), "--out", str(tmp_path / "run"),
                                       "--nproc", "2", "--device", "cpu", "--samples", "0"])
    assert result.exit_code == 0, result.output
    assert spec_reads == [spec]
    assert launched == [(2, ["train", str(spec), "--out", str(tmp_path / "run"), "--samples",
                             "0", "--device", "cpu"])]
    assert not (tmp_path / "run").exists()


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


@pytest.mark.slow  # a training process, signalled
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_a_checkpoint_and_exits_cleanly(tmp_path, sig):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "zoo.cli", "train", "mlp-bn", "--out", str(out), "--steps",
         "1000000", "--set", "train.eval_every=50", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300  # a loaded machine: starting takes time
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


# -- extending a run, curves, threads, bad input ------------------------------------------


def cli_error(args: list[str]) -> str:
    """Run the CLI expecting a one-line error with exit status 2; return the line."""
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0, result.output
    return result.output.strip()


def test_eval_every_defaults_to_20_evaluations_and_rows_hold_every_step(tmp_path):
    run = train("mlp-bn", out=tmp_path / "run", progress=False,
                overrides={"steps": 60, "batch_size": 32})
    rows = metrics(run.path)
    assert [r["step"] for r in rows] == list(range(3, 61, 3))
    assert len(curves.stream(rows)) == 60
    # train_loss is the mean of the last RECENT steps, not of everything since step 0
    last = curves.stream(rows)[-curves.RECENT:]
    assert rows[-1]["train_loss"] == pytest.approx(sum(last) / len(last), abs=1e-5)


def test_loss_stream_and_windows_survive_an_interruption(tmp_path):
    full = train("mlp-bn", out=tmp_path / "full", overrides=FAST, progress=False)

    def interrupt(step: int, loss: float) -> None:
        if step == 29:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        train("mlp-bn", out=tmp_path / "cut", overrides=FAST, progress=False, on_step=interrupt)
    # an interrupted run already has its curves
    assert (tmp_path / "cut" / rundir.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    train(out=tmp_path / "cut", resume=True, progress=False)

    def untimed(path: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in metrics(path)]

    assert untimed(tmp_path / "cut") == untimed(full.path)  # window means and stream alike


def test_resume_with_more_steps_extends_the_schedule(tmp_path):
    out = tmp_path / "run"
    train("mlp-bn", out=out, overrides=FAST, progress=False)
    result = train(out=out, resume=True, overrides={"steps": 100}, progress=False)
    assert result.steps == 100
    rows = metrics(out)
    assert [r["step"] for r in rows] == [20, 40, 60, 80, 100]
    assert len(curves.stream(rows)) == 100
    stretched = resolve_recipe({**FAST, "steps": 100})
    assert rows[3]["lr"] == pytest.approx(stretched.lr_at(79))
    assert json.loads((out / rundir.SPEC).read_text())["train"]["steps"] == 100
    meta = json.loads((out / rundir.META).read_text())
    assert meta["extended"] == [{"at": 60, "from": 60, "to": 100}]
    assert meta["status"] == "finished"
    # not the run trained for 100 steps from the start: its first 60 followed another schedule
    direct = train("mlp-bn", out=tmp_path / "direct", overrides={**FAST, "steps": 100},
                   progress=False)
    assert direct.metrics != result.metrics


def test_extending_keeps_about_20_evaluations_when_eval_every_was_not_set(tmp_path):
    out = tmp_path / "run"
    train("mlp-bn", out=out, overrides={"steps": 40, "batch_size": 32}, progress=False)
    train(out=out, resume=True, overrides={"steps": 80}, progress=False)
    assert [r["step"] for r in metrics(out)] == list(range(2, 41, 2)) + list(range(44, 81, 4))


def test_resume_refuses_shrinking_a_spec_and_data_in_one_line(tmp_path):
    out = tmp_path / "run"
    train("mlp-bn", out=out, overrides=FAST, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    line = cli_error(["train", "--resume", str(out), "--steps", "30"])
    assert "--steps 30" in line and "at step 60" in line
    line = cli_error(["train", "wavenet", "--resume", str(out)])
    assert "drop SPEC wavenet" in line
    line = cli_error(["train", "--resume", str(out), "--data", "x.txt"])
    assert "drop --data x.txt" in line
    line = cli_error(["train", "--resume", str(out), "--lr", "0.1"])
    assert "only --steps may extend it (drop lr)" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_garbled_metrics_file_on_resume_is_one_line(tmp_path):
    out = tmp_path / "run"
    train("mlp-bn", out=out, overrides=FAST, progress=False)
    (out / rundir.METRICS).write_bytes(b"\xff\xfe garbage\n{\"step\": 20}\n")
    line = cli_error(["train", "--resume", str(out), "--steps", "80"])
    assert str(out / rundir.METRICS) in line and "not UTF-8" in line
    (out / rundir.METRICS).write_text("{\"step\": 20, \nnot json\n{\"step\": 40}\n")
    line = cli_error(["train", "--resume", str(out), "--steps", "80"])
    assert f"{out / rundir.METRICS}:1: corrupted line" in line


@pytest.mark.parametrize("damage", ["last-line-cut", "emptied", "removed"])
def test_damaged_curves_are_repaired_on_resume_with_a_line_saying_what_was_dropped(tmp_path,
                                                                                   damage):
    out = tmp_path / "run"
    train("mlp-bn", out=out, overrides=FAST, progress=False)  # rows at steps 20, 40, 60
    file = out / rundir.METRICS
    lines = file.read_text().splitlines(keepends=True)
    if damage == "last-line-cut":
        file.write_text("".join(lines[:-1]) + lines[-1][:25])
    elif damage == "emptied":
        file.write_text("")
    else:
        file.unlink()
    result = CliRunner().invoke(main, ["train", "--resume", str(out), "--steps", "80"])
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    kept = 40 if damage == "last-line-cut" else 0
    where = "its rows end at step 40" if kept else "it holds no rows"
    expected = [f"warning: {file} holds the losses of {kept} of the 60 steps before the "
                f"checkpoint ({where}: truncated, emptied or removed); resuming, with that "
                "gap in the curve"]
    if damage == "last-line-cut":
        expected.insert(0, f"warning: {file}:3: the last line was cut short; dropped it (the "
                           "evaluation after step 40)")
    assert warned == expected
    rows = metrics(out)  # what survived, then the resumed steps' rows
    assert [r["step"] for r in rows] == ([20, 40, 80] if kept else [80])
    assert sum(len(r["losses"]) for r in rows) == kept + 20
    assert (out / rundir.PLOT).stat().st_size > 0  # drawn with the gap


def test_a_new_run_that_fails_before_its_first_step_leaves_no_directory(tmp_path,
                                                                        monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a layer failed in its first forward")

    monkeypatch.setattr(zoo.train, "train_step", broken)
    with pytest.raises(RuntimeError, match="first forward"):
        train("mlp", out=tmp_path / "run", overrides=FAST, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the run nor a partial sibling


def test_a_non_finite_first_step_says_the_new_run_was_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo.train, "train_step", lambda *a, **k: float("nan"))
    with pytest.raises(TrainingError, match="loss became nan at step 0 ") as info:
        train("mlp", out=tmp_path / "run", overrides=FAST, progress=False)
    assert f"{tmp_path / 'run'} was removed (it held no training)" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_run_stopped_by_a_signal_before_its_first_step_keeps_its_checkpoint(tmp_path,
                                                                              monkeypatch):
    import contextlib

    monkeypatch.setattr(zoo.train, "_stop_on_signals",
                        lambda: contextlib.nullcontext([signal.SIGINT]))
    with pytest.raises(Interrupted, match="SIGINT at step 0 of 60: checkpoint saved"):
        train("mlp", out=tmp_path / "run", overrides=FAST, progress=False)
    assert rundir.read_meta(tmp_path / "run")["status"] == "interrupted"


def test_a_resumed_run_that_fails_is_kept(tmp_path, monkeypatch):
    out = tmp_path / "run"
    train("mlp", out=out, overrides=FAST, progress=False)
    before = sorted(p.name for p in out.iterdir())

    def broken(*args, **kwargs):
        raise RuntimeError("the machine failed")

    monkeypatch.setattr(zoo.train, "train_step", broken)
    with pytest.raises(RuntimeError):
        train(out=out, resume=True, overrides={"steps": 80}, progress=False)
    assert sorted(p.name for p in out.iterdir()) == before


def test_resume_from_another_folder_finds_a_relative_words_file(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    words = default_words_file().read_text(encoding="utf-8").split()[:500]
    (tmp_path / "a" / "words.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path / "a")
    train("mlp", data="words.txt", out="run", overrides=FAST, progress=False)
    meta = json.loads((tmp_path / "a" / "run" / rundir.META).read_text())
    assert meta["data"]["path"] == str(tmp_path / "a" / "words.txt")
    monkeypatch.chdir(tmp_path)
    result = train(out="a/run", resume=True, overrides={"steps": 80}, progress=False)
    assert result.steps == 80


@pytest.mark.parametrize("args,fragment", [
    (["--threads", "0"], "--threads 0: expected 1 to "),
    (["--threads", "1000"], "--threads 1000: expected 1 to "),
    (["--seed", str(2**64)], "train.seed: expected an integer >= 0 and <= "
                             "18,446,744,073,709,551,615"),
    (["--batch-size", "100000"], "train.batch_size: expected an integer >= 1 and <= 65536"),
    (["--recipe", "fsat"], "no named recipe 'fsat' (did you mean 'fast'?)"),
])
def test_bad_training_options_are_one_line_before_any_run_directory(tmp_path, args, fragment):
    out = tmp_path / "run"
    assert fragment in cli_error(["train", "mlp", "--out", str(out), *args])
    assert not out.exists()


@pytest.mark.parametrize("value", ["abc", "0", "-2", "1.5", "4x"])
def test_a_thread_count_in_the_environment_that_is_none_is_one_line(tmp_path, value,
                                                                    zoo_subprocess):
    """OpenMP would warn in its own words and ignore it; the run would record it as used."""
    out = tmp_path / "run"
    done = zoo_subprocess("train", "mlp", "--out", str(out), env={"OMP_NUM_THREADS": value})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"error: OMP_NUM_THREADS={value!r} is not a thread count (a whole "
                           f"number >= 1); unset it or give one, e.g. "
                           f"OMP_NUM_THREADS={usable_cores()}\n")
    assert not out.exists()


def test_a_resume_with_steps_that_cannot_extend_the_run_names_the_option(tmp_path):
    run = train("mlp", out=tmp_path / "run", overrides=FAST, progress=False).path
    before = (run / rundir.META).read_bytes()
    assert cli_error(["train", "--resume", str(run), "--set", "train.steps=1.5"]) == (
        "error: train.steps: expected an integer, got 1.5 (--steps and --set train.steps=N "
        "set it)")
    assert cli_error(["train", "--resume", str(run), "--steps", "30"]) == (
        f"error: --steps 30: {run} is at step 60; a run can be extended to 60 steps or more, "
        "not shortened below where it is")
    assert (run / rundir.META).read_bytes() == before


def test_a_loss_curve_that_cannot_be_written_is_a_warning_not_the_end(tmp_path):
    run = train("mlp", out=tmp_path / "run", overrides=FAST, progress=False).path
    (run / rundir.PLOT).unlink()
    (run / rundir.PLOT).mkdir()  # a file cannot replace it
    with pytest.warns(RunWarning, match=f"cannot draw {run / rundir.PLOT} .*training goes on"):
        result = train(out=run, resume=True, overrides={"steps": 80}, progress=False)
    meta = json.loads((run / rundir.META).read_text())
    assert result.steps == 80 and meta["status"] == "finished" and meta["step"] == 80
    assert [row["step"] for row in metrics(run)][-1] == 80


def test_threads_option_reaches_torch_and_the_run(tmp_path):
    before = torch.get_num_threads()
    try:
        run = train("mlp", out=tmp_path / "run", overrides=FAST, threads=2, progress=False)
        assert torch.get_num_threads() == 2
        assert json.loads((run.path / rundir.META).read_text())["threads"] == 2
    finally:
        torch.set_num_threads(before)


def test_log_receives_a_line_per_evaluation_even_with_a_progress_bar(tmp_path):
    lines: list[str] = []
    train("mlp", out=tmp_path / "run", overrides=FAST, progress=True, log=lines.append)
    assert [line.split()[1] for line in lines] == ["20", "40", "60"]


def test_sgd_without_lr_trains_with_sgds_default(tmp_path):
    run = train("mlp-bn", out=tmp_path / "run", progress=False,
                overrides={**FAST, "optimizer": "sgd"})
    recipe = json.loads((run.path / rundir.SPEC).read_text())["train"]
    assert (recipe["lr"], recipe["momentum"], recipe["nesterov"]) == (0.1, 0.9, False)


def test_plotting_leaves_matplotlibs_backend_alone():
    code = ("import matplotlib, sys; matplotlib.use('svg'); from zoo.curves import plot_png; "
            "row = {'step': 2, 'lr': 0.1, 'train_loss': 3.0, 'val_loss': 3.1, 'losses': [3, 3]};"
            "png = plot_png([row]); assert png[:4] == b'\\x89PNG', png[:8]; "
            "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend(); "
            "assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_importing_the_runtime_changes_no_environment_and_imports_no_torch():
    code = ("import os, sys; before = dict(os.environ); import zoo, zoo.export.runtime; "
            "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items()); "
            "assert 'torch' not in sys.modules")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MKL_")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_train_leaves_the_process_as_it_found_it(tmp_path, monkeypatch):
    from zoo.threads import PROCESS_SETTINGS

    for key in PROCESS_SETTINGS:
        monkeypatch.delenv(key, raising=False)
    before = torch.get_num_threads()
    environ = dict(os.environ)
    train("mlp", out=tmp_path / "run", overrides=FAST, progress=False, threads=1)
    assert torch.get_num_threads() == before
    assert dict(os.environ) == environ
