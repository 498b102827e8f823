"""Scale-out: DDP on CPU (gloo) gives one process's weights; stops, deaths and bad input.

Ranks are real processes (torchrun), each with one thread: a tiny spec, a small words file and
a few hundred steps keep every launch to seconds of CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
from matrix import assert_clean_error, snapshot
from safetensors.torch import load_file

from zoo import rundir
from zoo.devices import pick_device
from zoo.errors import TrainingError
from zoo.launch import _outcome
from zoo.procgroup import SILENT_LOST_PEER, Sync, World, check_scale, sync_batch_norm
from zoo.threads import usable_cores
from zoo.train import train

# exact one-line messages: only the built-in plugins load, whatever else is installed
pytestmark = pytest.mark.usefixtures("fresh_registry")

LAYERS = [{"type": "embedding", "dim": 8}, "flatten", {"type": "linear", "out": 32}, "tanh",
          "linear"]
BN_LAYERS = [{"type": "embedding", "dim": 8}, "flatten", {"type": "linear", "out": 32},
             "batchnorm", "tanh", "linear"]


def write_spec(folder: Path, name: str, layers: list, steps: int, eval_every: int) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"model": {"context": 3, "layers": layers},
                                "train": {"steps": steps, "batch_size": 32,
                                          "eval_every": eval_every}}), encoding="utf-8")
    return path


def zoo(*args: str, launcher: list[str] | None = None, **popen) -> subprocess.Popen:
    """``python -m zoo ARGS`` (or under ``launcher``) with one thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           **popen.pop("env", {})}
    return subprocess.Popen([sys.executable, *(launcher or []), "-m", "zoo", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def max_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / rundir.WEIGHTS)), load_file(str(b / rundir.WEIGHTS))
    assert wa.keys() == wb.keys()
    return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)


def wait_for_first_checkpoint(run: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    """Until meta.json (written atomically, after the checkpoint) is past step 0."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = run / rundir.META
        if meta.is_file() and json.loads(meta.read_text(encoding="utf-8"))["step"] > 0:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no evaluation within the time limit")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# -- equality with one process -------------------------------------------------------------


def one_and_two(spec: Path, words: Path, folder: Path, samples: str) -> tuple[Any, dict, str]:
    """Train ``spec`` in this process and under torchrun on two ranks: (the one-process
    result, the two-rank run's meta.json, the two-rank run's stdout)."""
    one = train(str(spec), data=words, out=folder / "one", progress=False, device="cpu")
    proc = zoo("train", str(spec), "--data", str(words), "--out", str(folder / "two"),
               "--samples", samples, "--device", "cpu",
               launcher=["-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                         "2"])
    code, out, err = finish(proc)
    assert code == 0, err
    # DDP averages the ranks' gradients: the global batch's mean, as in one process
    assert max_diff(one.path, folder / "two") < 1e-5
    meta = json.loads((folder / "two" / rundir.META).read_text(encoding="utf-8"))
    assert meta["metrics"]["val_loss"] == pytest.approx(one.metrics["val_loss"], abs=1e-4)
    return one, meta, out


@pytest.mark.slow
def test_torchrun_two_processes_give_the_weights_of_one(tmp_path, tiny_words):
    spec = write_spec(tmp_path, "tiny", LAYERS, steps=50, eval_every=25)
    _, meta, out = one_and_two(spec, tiny_words, tmp_path, samples="2")
    assert out.count("trained ") == 1 and out.count("samples: ") == 1  # rank 0 speaks alone
    assert meta["status"] == "finished" and meta["step"] == 50


@pytest.mark.slow
def test_a_sequence_model_on_two_processes_gives_the_weights_of_one(tmp_path, tiny_words):
    """Each word is one example: the ranks' slices hold different numbers of characters, and
    the loss is still the mean per character of the whole batch."""
    spec = tmp_path / "seq.json"
    spec.write_text(json.dumps({"model": {"context": "auto", "layers": [
        {"type": "embedding", "dim": 8}, {"type": "gru", "hidden": 16}, "linear"]},
        "train": {"steps": 30, "batch_size": 16, "eval_every": 15}}), encoding="utf-8")
    _, meta, _ = one_and_two(spec, tiny_words, tmp_path, samples="0")
    assert meta["kind"] == "sequence" and meta["step"] == 30 and meta["processes"] == 2


@pytest.mark.slow
def test_two_ranks_diagnosed_record_rank_0s_slice_and_train_as_without(tmp_path, tiny_words):
    from zoo.findings import DIAGNOSTICS, read_rows

    spec = write_spec(tmp_path, "s", LAYERS, steps=40, eval_every=20)
    plain = zoo("train", str(spec), "--data", str(tiny_words), "--out", str(tmp_path / "plain"),
                "--device", "cpu", launcher=["-m", "torch.distributed.run", "--standalone",
                                             "--nproc_per_node", "2"])
    diagnosed = zoo("train", str(spec), "--data", str(tiny_words), "--out",
                    str(tmp_path / "diag"), "--device", "cpu", "--diagnose",
                    launcher=["-m", "torch.distributed.run", "--standalone",
                              "--nproc_per_node", "2"])
    (code_a, _, err_a), (code_b, out_b, err_b) = finish(plain), finish(diagnosed)
    assert (code_a, code_b) == (0, 0), (err_a, err_b)
    assert max_diff(tmp_path / "plain", tmp_path / "diag") == 0.0  # recording changes nothing
    rows = read_rows(tmp_path / "diag" / DIAGNOSTICS)
    assert [r["step"] for r in rows] == [1, 2, *range(4, 41, 2)]  # 40 // 20 = every 2nd
    # rank 0's slice: half of the global batch of 32 in each histogram of a [B, 32] output
    assert sum(rows[0]["layers"][2]["hist"]) == 16 * 32
    assert "nothing found" in out_b or "finding:" in out_b  # rank 0 printed the findings once


# -- stopping: Ctrl-C, resume, a dying rank ------------------------------------------------


# -- ranks started by hand: joining, and saying so when the others do not come ---------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def by_hand(rank: int, size: int, port: int, *args: str, join: str = "") -> subprocess.Popen:
    """``python -m zoo ARGS`` as rank ``rank`` of ``size``, its environment set by hand."""
    env = {"RANK": str(rank), "WORLD_SIZE": str(size), "LOCAL_RANK": str(rank),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    if join:
        env["LAYERZOO_JOIN_TIMEOUT"] = join
    return zoo(*args, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("rank,reason", [(0, "1 of 2 ranks joined"),
                                         (1, "rank 0 did not answer")])
def test_a_rank_whose_peers_never_come_says_so_and_gives_up_naming_the_address(
        tmp_path, tiny_words, rank, reason):
    port = free_port()
    began = time.monotonic()
    code, out, err = finish(by_hand(rank, 2, port, "train", "bigram", "--data", str(tiny_words),
                                    "--out", str(tmp_path / "run"), join="5"))
    where = f"127.0.0.1:{port}"
    assert code == 1, err
    assert error_lines(err) == [
        f"rank {rank} of 2: waiting for the other ranks at {where} ({1 - rank} of 2 joined; "
        "giving up after 5 s, LAYERZOO_JOIN_TIMEOUT sets it)",
        f"error: rank {rank} of 2: gave up waiting for the other ranks at {where} after 5 s "
        f"({reason}); start all 2 with the same MASTER_ADDR and MASTER_PORT, or raise "
        "LAYERZOO_JOIN_TIMEOUT"]
    assert time.monotonic() - began < 60
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.slow
def test_ranks_started_by_hand_join_and_train_as_under_torchrun(tmp_path, tiny_words):
    spec = write_spec(tmp_path, "s", LAYERS, steps=40, eval_every=20)
    port = free_port()
    one = train(str(spec), data=tiny_words, out=tmp_path / "one", progress=False, device="cpu")
    args = ("train", str(spec), "--data", str(tiny_words), "--out", str(tmp_path / "two"),
            "--device", "cpu")
    first = by_hand(0, 2, port, *args)
    time.sleep(1.0)  # rank 1 comes late, as on another machine
    second = by_hand(1, 2, port, *args)
    (code0, _, err0), (code1, _, err1) = finish(first), finish(second)
    assert (code0, code1) == (0, 0), (err0, err1)
    assert max_diff(one.path, tmp_path / "two") < 1e-5


@pytest.mark.parametrize("env,message", [
    ({"LAYERZOO_JOIN_TIMEOUT": "soon"}, "LAYERZOO_JOIN_TIMEOUT='soon': expected a number of "
                                        "seconds > 0"),
    ({"LAYERZOO_JOIN_TIMEOUT": "-1"}, "LAYERZOO_JOIN_TIMEOUT='-1': expected a number"),
    ({"MASTER_PORT": "http"}, "rank 0 of 2: MASTER_ADDR and MASTER_PORT must name rank 0's "
                              "address and a port (1-65535)"),
    ({"MASTER_ADDR": ""}, "got MASTER_ADDR='' MASTER_PORT="),
])
def test_a_bad_rendezvous_setting_is_one_line(tmp_path, cli, env, message):
    full = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port()), **env}
    result = cli("train", "bigram", "--out", str(tmp_path / "run"), env=full)
    assert_clean_error(result, message)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_ctrl_c_stops_every_rank_and_resume_equals_an_uninterrupted_run(tmp_path, tiny_words):
    # BatchNorm on CPU: per-rank statistics, still deterministic for a given --nproc
    spec = write_spec(tmp_path, "bn", BN_LAYERS, steps=400, eval_every=20)
    common = ("--data", str(tiny_words), "--nproc", "2", "--samples", "0")
    full = zoo("train", str(spec), "--out", str(tmp_path / "full"), *common)
    code, _, err = finish(full)
    assert code == 0, err

    cut = tmp_path / "cut"
    proc = zoo("train", str(spec), "--out", str(cut), *common, start_new_session=True)
    wait_for_first_checkpoint(cut, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    code, _, err = finish(proc)
    assert code == 128 + signal.SIGINT, err
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("stopped: SIGINT at step "), err
    assert f"zoo train --resume {cut} --nproc 2" in lines[0]
    meta = json.loads((cut / rundir.META).read_text(encoding="utf-8"))
    assert meta["status"] == "interrupted" and 0 < meta["step"] < 400

    code, out, err = finish(zoo("train", "--resume", str(cut), "--nproc", "2", "--samples",
                                "0"))
    assert code == 0, err
    assert max_diff(tmp_path / "full", cut) == 0.0
    assert [json.loads(line)["step"] for line in
            (cut / rundir.METRICS).read_text(encoding="utf-8").splitlines()] == list(
        range(20, 401, 20))


def _pid_of_rank(tag: str, rank: int) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"LAYERZOO_TEST_TAG={tag}".encode() in env and f"RANK={rank}".encode() in env:
            return int(entry.name)
    raise AssertionError(f"no process of rank {rank}")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds ranks via /proc")
def test_a_dying_rank_ends_the_others_with_one_line_and_an_intact_run(tmp_path, tiny_words):
    spec = write_spec(tmp_path, "tiny", LAYERS, steps=100_000, eval_every=20)
    run, tag = tmp_path / "run", uuid.uuid4().hex
    proc = zoo("train", str(spec), "--data", str(tiny_words), "--out", str(run), "--nproc",
               "2", "--samples", "0", env={"LAYERZOO_TEST_TAG": tag})
    wait_for_first_checkpoint(run, proc)
    os.kill(_pid_of_rank(tag, 1), signal.SIGKILL)
    code, _, err = finish(proc, timeout=120)
    assert code == 1, err  # not bad input: the same command may well work next time
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: rank 1 was killed by SIGKILL"), err
    assert f"zoo train --resume {run} --nproc 2" in lines[0]
    assert "Traceback" not in err
    opened = rundir.open_run(run)  # every file whole: spec, vocab, weights, meta
    assert opened.meta["status"] == "running" and opened.meta["step"] >= 20
    tensors, meta = rundir.read_tensors(run / rundir.CHECKPOINT)
    assert int(meta["step"]) == opened.meta["step"]


# -- bad input: one line, exit 2, nothing written ------------------------------------------


@pytest.mark.parametrize("args,message", [
    (("--nproc", "0"), "--nproc 0: expected 1 or more processes"),
    (("--nproc", "64"), "--nproc 64 is larger than the batch (batch_size 32)"),
    (("--nproc", "3"), "batch_size 32 does not split over 3 processes"),
    (("--device", "tpu"), "--device 'tpu': expected one of auto, cpu, cuda, mps"),
])
def test_bad_scale_out_input_is_one_line(tmp_path, cli, args, message):
    spec = write_spec(tmp_path, "tiny", LAYERS, steps=10, eval_every=5)
    result = cli("train", str(spec), "--out", str(tmp_path / "run"), *args)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {result.stderr.strip()[7:]}"
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_more_processes_than_cores_on_cpu_is_one_line(tmp_path, cli):
    cores = usable_cores()
    spec = write_spec(tmp_path, "tiny", LAYERS, steps=10, eval_every=5)
    nproc = next(n for n in range(cores + 1, 4 * cores + 2) if 32 % n == 0) if cores < 32 \
        else None
    if nproc is None:
        pytest.skip("no process count above this machine's cores divides the batch")
    result = cli("train", str(spec), "--out", str(tmp_path / "run"), "--nproc", str(nproc),
                 "--device", "cpu")
    assert_clean_error(result, f"--nproc {nproc} on {cores} usable CPU cores",
                       f"use --nproc {cores} or fewer")
    assert not (tmp_path / "run").exists()


def test_resume_with_another_process_count_is_refused(tmp_path, tiny_words, cli):
    spec = write_spec(tmp_path, "tiny", LAYERS, steps=10, eval_every=5)
    run = train(str(spec), data=tiny_words, out=tmp_path / "run", progress=False,
                device="cpu").path
    meta = json.loads((run / rundir.META).read_text(encoding="utf-8"))
    assert meta["processes"] == 1
    before = snapshot(run)
    result = cli("train", "--resume", str(run), "--steps", "20", "--nproc", "2",
                 "--device", "cpu")
    assert_clean_error(result, f"{run} was trained on 1 process(es); resume it with no --nproc")
    assert snapshot(run) == before
    meta["processes"] = 2  # as a run of two processes records it
    (run / rundir.META).write_text(json.dumps(meta), encoding="utf-8")
    before = snapshot(run)
    result = cli("train", "--resume", str(run), "--steps", "20", "--device", "cpu")
    assert_clean_error(result, "was trained on 2 process(es); resume it with --nproc 2")
    assert snapshot(run) == before


@pytest.mark.slow
def test_a_bad_input_the_ranks_find_is_reported_once(tmp_path, tiny_words):
    spec = write_spec(tmp_path, "tiny", LAYERS, steps=10, eval_every=5)
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine", encoding="utf-8")
    code, _, err = finish(zoo("train", str(spec), "--data", str(tiny_words), "--out", str(run),
                              "--nproc", "2", "--samples", "0"))
    assert code == 2, err
    lines = error_lines(err)  # rank 0 says it; rank 1, stopped by the same failure, does not
    assert len(lines) == 1 and lines[0].startswith(f"error: --out {run} is not empty"), err
    assert [p.name for p in run.iterdir()] == ["notes.txt"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_one_line(tmp_path, cli):
    spec = write_spec(tmp_path, "tiny", LAYERS, steps=10, eval_every=5)
    for extra in ((), ("--nproc", "2")):
        result = cli("train", str(spec), "--out", str(tmp_path / "run"), "--device", "cuda",
                     *extra)
        assert result.exit_code == 2
        assert result.stderr.startswith("error: --device cuda: no CUDA device available")
        assert len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "run").exists()


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


class _Failure:
    def __init__(self, exitcode: int) -> None:
        self.exitcode = exitcode

    def signal_name(self) -> str:
        return signal.Signals(-self.exitcode).name


@pytest.mark.parametrize("codes,status,said", [
    ({0: 2, 1: -signal.SIGTERM}, 2, None),  # rank 0 said why; torchrun then stopped rank 1
    ({0: -signal.SIGTERM, 1: -signal.SIGKILL}, 1, "rank 1 was killed by SIGKILL"),
    ({0: SILENT_LOST_PEER, 1: -signal.SIGKILL}, 1, "rank 1 was killed by SIGKILL"),
    ({0: 130, 1: 130}, 130, None),  # both stopped by Ctrl-C; rank 0 said so
])
def test_the_launcher_names_the_rank_that_could_not_speak(capsys, codes, status, said):
    assert _outcome({r: _Failure(c) for r, c in codes.items()}, 2, "runs/x") == status
    err = capsys.readouterr().err
    if said is None:
        assert err == ""
    else:
        assert err.startswith(f"error: {said}") and "--resume runs/x --nproc 2" in err
