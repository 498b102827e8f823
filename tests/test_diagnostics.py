"""Looking inside the layers while they train: `--diagnose` rows, the findings the lecture's
pathologies produce (and healthy runs do not), resume, `zoo diagnose` and `zoo compare`."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from lanes import slow_but
from matrix import assert_clean_error, snapshot
from safetensors.torch import load_file

from zoo import rundir
from zoo.findings import DIAGNOSTICS, findings, read_rows
from zoo.train import Interrupted, train

pytestmark = pytest.mark.usefixtures("fresh_registry")

STEPS = {"steps": 200, "batch_size": 64, "eval_every": 100}
EMBED = [{"type": "embedding", "dim": 10}, "flatten"]
# the lecture's pathologies (makemore part 3), each a spec, and the finding it must produce
PATHOLOGIES = {
    "last-layer-not-scaled": (EMBED + [{"type": "linear", "out": 200}, "tanh",
                                       {"type": "linear", "init": "normal", "gain": 1.0,
                                        "scale": 1.0}], {}, "overconfident-init"),
    "tanh-after-gain-5": (EMBED + [{"type": "linear", "out": 200, "gain": 5.0}, "tanh",
                                   "linear"], {}, "saturated"),
    "deep-tanh-gain-1": (EMBED + [{"repeat": 5, "layers": [{"type": "linear", "out": 100,
                                                            "gain": 1.0}, "tanh"]}, "linear"],
                         {}, "vanishing"),
    "lr-100x-too-low": (EMBED + [{"type": "linear", "out": 200, "bias": False}, "batchnorm",
                                 "tanh", "linear"], {"lr": 0.0001}, "lr-too-low"),
}


def diagnosed(path: Path, spec, overrides=None, **kw):
    spec = {"model": {"context": 3, "layers": spec}} if isinstance(spec, list) else spec
    return train(spec, out=path, overrides={**STEPS, **(overrides or {})}, progress=False,
                 diagnose=True, **kw)


@pytest.mark.parametrize("name", slow_but(PATHOLOGIES, "tanh-after-gain-5"))
def test_each_pathology_of_the_lecture_produces_its_finding(tmp_path, cli, name):
    layers, overrides, kind = PATHOLOGIES[name]
    run = diagnosed(tmp_path / name, layers, overrides).path
    result = cli("diagnose", str(run), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert kind in {f["kind"] for f in report["findings"]}, report["findings"]
    assert report["recorded_steps"][:2] == [1, 10]  # the first step, then every 200 // 20


@pytest.mark.parametrize("preset", slow_but(["mlp-bn", "deep-bn"], "mlp-bn"))
def test_healthy_presets_produce_no_finding(tmp_path, cli, preset, tiny_words):
    run = train(preset, data=tiny_words, out=tmp_path / preset,
                overrides={"steps": 300, "eval_every": 100}, progress=False,
                diagnose=True).path
    result = cli("diagnose", str(run))
    assert result.exit_code == 0, result.output
    assert "finding:" not in result.stdout
    assert "nothing found in 21 recorded steps" in result.stdout
    assert json.loads(cli("diagnose", str(run), "--json").stdout)["findings"] == []


def test_rows_hold_each_layer_and_weight_and_leave_the_weights_unchanged(tmp_path):
    layers = EMBED + [{"type": "linear", "out": 32}, "relu", "linear"]
    with_rows = diagnosed(tmp_path / "a", layers)
    without = train({"model": {"context": 3, "layers": layers}}, out=tmp_path / "b",
                    overrides=STEPS, progress=False)
    assert not (without.path / DIAGNOSTICS).exists()
    a, b = load_file(str(with_rows.path / rundir.WEIGHTS)), load_file(str(without.path /
                                                                          rundir.WEIGHTS))
    assert all(torch.equal(a[k], b[k]) for k in a)  # recording changes no arithmetic
    rows = read_rows(with_rows.path / DIAGNOSTICS)
    assert [r["step"] for r in rows] == [1, *range(10, 201, 10)]
    first = rows[0]
    assert [x["entry"] for x in first["layers"]] == ["layers.0 embedding", "layers.1 flatten",
                                                     "layers.2 linear", "layers.3 relu",
                                                     "layers.4 linear"]
    relu = first["layers"][3]
    assert relu["saturated"] is None and 0 <= relu["dead"] <= 1 and relu["mean"] > 0
    assert first["layers"][2]["dead"] is None and sum(relu["hist"]) == 64 * 32
    assert [w["name"] for w in first["weights"]] == ["layers.0.weight", "layers.2.weight",
                                                     "layers.4.weight"]
    assert all(w["update_data"] < 0 and w["grad_data"] > 0 for w in first["weights"])
    meta = json.loads((with_rows.path / rundir.META).read_text())
    assert meta["diagnose_every"] == 10


@pytest.mark.slow  # two diagnosed runs
def test_an_interrupted_then_resumed_run_has_the_rows_of_an_uninterrupted_one(tmp_path):
    layers = EMBED + [{"type": "linear", "out": 32}, "tanh", "linear"]
    full = diagnosed(tmp_path / "full", layers)

    def interrupt(step: int, loss: float) -> None:
        if step == 73:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        diagnosed(tmp_path / "cut", layers, on_step=interrupt)
    resumed = train(out=tmp_path / "cut", resume=True, progress=False)  # keeps --diagnose
    assert read_rows(resumed.path / DIAGNOSTICS) == read_rows(full.path / DIAGNOSTICS)


def test_thresholds_are_settable(tmp_path, cli):
    layers, overrides, _ = PATHOLOGIES["lr-100x-too-low"]
    run = diagnosed(tmp_path / "low", layers, overrides).path
    loose = json.loads(cli("diagnose", str(run), "--json", "--threshold",
                           "update_low=-9").stdout)
    assert "lr-too-low" not in {f["kind"] for f in loose["findings"]}
    assert loose["thresholds"]["update_low"] == -9


def test_findings_of_no_rows_are_none():
    assert findings([], vocab_size=27) == []


# -- zoo compare ---------------------------------------------------------------------------


def test_compare_prints_runs_side_by_side_and_draws_their_curves(tmp_path, cli, exported):
    runs = [exported(p)[0] for p in ("mlp-bn", "wavenet")]
    result = cli("compare", *map(str, runs), "--plot", str(tmp_path / "val.png"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["run", "spec", "parameters", "steps", "seconds", "train", "val",
                                "test", "status"]
    assert len(lines) == 3 and all("finished" in line for line in lines[1:])
    assert (tmp_path / "val.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(cli("compare", *map(str, runs), "--json").stdout)
    meta = json.loads((runs[0] / rundir.META).read_text())
    assert data["runs"][0]["val"] == meta["metrics"]["val_loss"]
    assert data["runs"][0]["curve"][-1][0] == meta["step"]


# -- bad input: one line, exit 2, nothing written ---------------------------------------------


def _bad_cases():
    return [
        ("diagnose-every-zero", ["train", "bigram", "--diagnose-every", "0", "--out", "{tmp}/r"],
         "Invalid value for '--diagnose-every': 0 is not in the range x>=1"),
        ("diagnose-without-rows", ["diagnose", "{run}"],
         "{run} has no diagnostics.jsonl: record one with `zoo train SPEC --diagnose`"),
        ("diagnose-cut-short", ["diagnose", "{cut}"],
         "{cut}/diagnostics.jsonl:2: the last line was cut short"),
        ("diagnose-bad-threshold", ["diagnose", "{cut}", "--threshold", "saturation=0.1"],
         "--threshold saturation: unknown; choose from init_excess, saturated"),
        ("compare-nothing", ["compare"], "Missing argument 'RUNS...'"),
        ("compare-not-a-run", ["compare", "{tmp}"], "{tmp} is not a run directory"),
        ("compare-plot-into-a-run", ["compare", "{run}", "--plot", "{run}/spec.json"],
         "inside"),
    ]


@pytest.mark.parametrize("name,args,message", _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_input_is_one_line(tmp_path, cli, exported, name, args, message):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(exported("mlp-bn")[0], run)
    cut = tmp_path / "cut"
    shutil.copytree(run, cut)
    row = json.dumps({"step": 1, "loss": 3.3, "layers": [], "weights": []})
    (cut / DIAGNOSTICS).write_text(row + "\n" + row[:20])
    before = snapshot(tmp_path)
    fill = {"tmp": tmp_path, "run": run, "cut": cut}
    result = cli(*[a.format(**fill) for a in args])
    assert_clean_error(result, message.format(**fill))
    assert snapshot(tmp_path) == before


# -- the four plots, and TensorBoard ------------------------------------------------------------


def test_a_diagnosed_run_draws_the_four_plots_and_zoo_diagnose_redraws_them(tmp_path, cli):
    layers, overrides, _ = PATHOLOGIES["tanh-after-gain-5"]
    run = diagnosed(tmp_path / "g", layers, overrides).path
    plot = run / "diagnostics.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot.unlink()
    result = cli("diagnose", str(run), "--step", "1")
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = snapshot(run)
    assert_clean_error(cli("diagnose", str(run), "--step", "7"),
                       "--step 7: not a recorded step; recorded: 1, 10, 20, 30")
    assert snapshot(run) == before


def test_tensorboard_holds_the_curves_and_the_statistics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    layers = EMBED + [{"type": "linear", "out": 32}, "tanh", "linear"]
    run = diagnosed(tmp_path / "run", layers, tensorboard=tmp_path / "tb").path
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0,
                                                                   "histograms": 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss/step", "loss/train", "loss/val", "lr", "activations/layers.3_tanh/std",
            "activations/layers.3_tanh/saturated", "update_data/layers.2.weight"} <= \
        set(tags["scalars"])
    assert {"activations/layers.3_tanh", "weight_grads/layers.2.weight"} <= \
        set(tags["histograms"])
    rows = [json.loads(line) for line in (run / rundir.METRICS).read_text().splitlines()]
    val = events.Scalars("loss/val")
    assert [e.step for e in val] == [r["step"] for r in rows]
    assert [e.value for e in val] == pytest.approx([r["val_loss"] for r in rows], rel=1e-6)
    assert len(events.Scalars("loss/step")) == 200
    hist = events.Histograms("activations/layers.3_tanh")
    assert [h.step for h in hist] == [r["step"] for r in read_rows(run / DIAGNOSTICS)]


def test_tensorboard_without_its_package_or_folder_is_one_line(tmp_path, cli, monkeypatch,
                                                               tiny_words):
    (tmp_path / "file").write_text("x")
    args = ["train", "bigram", "--data", str(tiny_words), "--out", str(tmp_path / "run")]
    assert_clean_error(cli(*args, "--tensorboard", str(tmp_path / "file" / "tb")),
                       f"--tensorboard {tmp_path}/file/tb: {tmp_path}/file is a file, not a "
                       "folder")
    monkeypatch.setitem(__import__("sys").modules, "torch.utils.tensorboard", None)
    assert_clean_error(cli(*args, "--tensorboard", str(tmp_path / "tb")),
                       "--tensorboard needs the tensorboard package: pip install "
                       "'layerzoo[tensorboard]'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_compare_imports_no_torch(exported):
    import subprocess
    import sys

    run = exported("mlp-bn")[0]
    code = ("import sys\nfrom zoo.cli import main\ntry:\n    main(['compare', sys.argv[1]])\n"
            "except SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'torch imported'\n")
    done = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "LAYERZOO_LOAD_PLUGINS": ""})
    assert done.returncode == 0, done.stderr
    assert "finished" in done.stdout
