"""Bad-input matrix, runs and the command line: what two processes, a kill, a full disk or a
mistyped option do to a run directory — one clean line, and the files stay whole."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from matrix import assert_clean_error, snapshot

from zoo import atomic, rundir
from zoo.errors import ArtifactError


@pytest.fixture
def run(tmp_path: Path, exported) -> Path:
    """A private copy of a tiny trained mlp-bn run."""
    source, _ = exported("mlp-bn")
    copy = tmp_path / "run"
    shutil.copytree(source, copy)
    return copy


# -- the lock: a second writer fails at once, naming the holder ---------------------------------

# (id, the command run while this process holds the run's lock)
LOCKED = [
    ("resume", ["train", "--resume", "{run}"]),
    ("new-run-same-out", ["train", "mlp-bn", "--data", "{words}", "--out", "{run}"]),
]


@pytest.mark.parametrize("name,args", LOCKED, ids=[c[0] for c in LOCKED])
def test_second_writer_fails_naming_the_holder(cli, run, tiny_words, name, args):
    with atomic.lock_dir(run):
        before = snapshot(run)
        result = cli(*[a.format(run=run, words=tiny_words) for a in args])
        assert_clean_error(result, f"{run} is being written by another process "
                           f"(pid {os.getpid()})")
        assert snapshot(run) == before


# (id, a command that reads the run to write or judge an export of it)
READERS = [
    ("export", ["export", "{run}"], "export it"),
    ("export-int8", ["export", "{run}", "--int8", "-o", "{tmp}/m.onnx"], "export it"),
    ("check", ["check", "{run}", "{run}/model.onnx"], "check it"),
]


@pytest.mark.parametrize("name,args,doing", READERS, ids=[c[0] for c in READERS])
def test_a_run_being_trained_is_not_exported_or_checked(cli, run, tmp_path, name, args,
                                                        doing):
    with atomic.lock_dir(run):
        before = snapshot(tmp_path)
        result = cli(*[a.format(run=run, tmp=tmp_path) for a in args])
        assert_clean_error(result, f"{run} is being trained by another process "
                           f"(pid {os.getpid()}); {doing} once that run has finished or stopped")
        assert snapshot(tmp_path) == before


def test_a_stale_lock_file_is_no_obstacle_and_is_left_alone(cli, run):
    (run / atomic.LOCK_NAME).write_text("12345\n")  # its holder died: no process holds it
    result = cli("check", str(run), str(run / "model.onnx"))
    assert result.exit_code == 0, result.output
    assert (run / atomic.LOCK_NAME).read_text() == "12345\n"


def test_lock_is_released_when_its_holder_dies(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    code = f"from zoo import atomic; atomic.lock_dir({str(folder)!r}); import os; os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    atomic.lock_dir(folder).release()  # no stale lock: the kernel dropped it


# -- kill points: resumable or restartable, never a manual rm ---------------------------------


def incomplete_run(path: Path) -> Path:
    """What a run killed between writing spec.json and its first checkpoint looked like."""
    path.mkdir()
    (path / "spec.json").write_text('{"model": {"layers": ["tanh"]}}', encoding="utf-8")
    (path / "vocab.json").write_text('{"chars": [".", "a"]}', encoding="utf-8")
    (path / ".meta.json.1234.tmp").write_bytes(b'{"se')
    return path


def test_incomplete_run_is_not_resumed_but_named(cli, tmp_path):
    out = incomplete_run(tmp_path / "run")
    before = snapshot(tmp_path)
    assert_clean_error(cli("train", "--resume", str(out)), f"{out} was stopped before its "
                       "first checkpoint", f"zoo train SPEC --out {out}")
    assert snapshot(tmp_path) == before


def test_incomplete_run_is_replaced_by_a_new_run(cli, tmp_path, tiny_words):
    out = incomplete_run(tmp_path / "run")
    result = cli("train", "mlp-bn", "--data", str(tiny_words), "--out", str(out), "--steps",
                 "2", "--samples", "0")
    assert result.exit_code == 0, result.output
    assert f"replacing {out}" in result.output
    assert (out / rundir.CHECKPOINT).is_file() and not (out / ".meta.json.1234.tmp").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary sibling left


def test_a_folder_of_the_users_is_never_replaced(cli, tmp_path, tiny_words):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "spec.json").write_text("{}", encoding="utf-8")
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    before = snapshot(tmp_path)
    assert_clean_error(cli("train", "mlp-bn", "--data", str(tiny_words), "--out", str(out)),
                       f"--out {out} is not empty")
    assert snapshot(tmp_path) == before


def test_kill_while_a_run_is_created_leaves_only_what_the_next_run_removes(cli, tmp_path,
                                                                           tiny_words):
    out = tmp_path / "run"
    code = ("import os, signal, sys\nfrom pathlib import Path\nfrom zoo import rundir\n"
            "def fill(tmp):\n    (tmp / 'spec.json').write_text('{}')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            f"rundir.create(Path({str(out)!r}), fill)\n")
    killed = subprocess.run([sys.executable, "-c", code], timeout=120)
    assert killed.returncode == -9
    assert not out.exists()  # never half a run directory under the name asked for
    result = cli("train", "mlp-bn", "--data", str(tiny_words), "--out", str(out), "--steps",
                 "2", "--samples", "0")
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_a_run_created_meanwhile_by_another_process_is_left_alone(tmp_path):
    out = tmp_path / "run"

    def fill(tmp: Path) -> None:
        (tmp / "spec.json").write_text("mine", encoding="utf-8")
        out.mkdir()  # the other process renamed its run into place first
        (out / "spec.json").write_text("theirs", encoding="utf-8")

    with pytest.raises(ArtifactError, match="created by another process meanwhile"):
        rundir.create(out, fill)
    assert (out / "spec.json").read_text(encoding="utf-8") == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


# -- a full disk, a read-only folder: one line, and the files there stay whole ----------------

FAILURES = [("full-disk", errno.ENOSPC, "No space left on device"),
            ("read-only", errno.EROFS, "Read-only file system"),
            ("no-permission", errno.EACCES, "Permission denied")]


@pytest.mark.parametrize("name,code,reason", FAILURES, ids=[c[0] for c in FAILURES])
def test_write_failure_is_one_line_and_the_run_stays_whole(cli, run, monkeypatch, name, code,
                                                           reason):
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("zoo.atomic.tempfile.mkstemp", refuse)
    before = snapshot(run)
    result = cli("train", "--resume", str(run), "--steps", "60")
    assert_clean_error(result, f"cannot write {run}/", reason, "the file there is unchanged")
    assert snapshot(run) == before
    assert rundir.open_run(run).model is not None  # and it still loads


def test_write_failure_of_a_new_file_says_nothing_was_written(tmp_path, monkeypatch):
    monkeypatch.setattr("zoo.atomic.os.fsync", lambda fd: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(ArtifactError, match="No space left on device; nothing was written"):
        atomic.write_bytes(tmp_path / "new.bin", b"x" * 100)
    assert list(tmp_path.iterdir()) == []  # no temporary file left either


# -- modes: the umask for new files, the old mode for replaced ones -----------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_files_and_folders_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic.write_bytes(tmp_path / "f", b"x")
        lock = rundir.create(tmp_path / "run", lambda tmp: atomic.write_text(tmp / "spec.json",
                                                                             "{}"))
        lock.release()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((tmp_path / "run" / "spec.json").stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o755])
def test_a_replaced_file_keeps_its_mode(tmp_path, mode):
    path = tmp_path / "meta.json"
    path.write_text("{}")
    path.chmod(mode)
    atomic.write_text(path, '{"a": 1}')
    assert stat.S_IMODE(path.stat().st_mode) == mode and path.read_text() == '{"a": 1}'


# -- the command line: usage errors are one line, exit 2 ----------------------------------------

# (id, arguments, fragments of the one line)
USAGE = [
    ("unknown-option", ["train", "--bogus"], ["No such option '--bogus'", "train --help"]),
    ("unknown-command", ["trian"], ["No such command 'trian'", "--help"]),
    ("missing-argument", ["sample"], ["Missing argument 'SOURCE'"]),
    ("not-an-integer", ["train", "--steps", "x"], ["'--steps'", "'x' is not a valid integer"]),
    ("out-of-range", ["sample", "m.onnx", "-n", "-1"], ["'-n'", "-1"]),
    ("top-level-option", ["--bogus", "layers"], ["No such option '--bogus'"]),
    ("missing-value", ["train", "--out"], ["Option '--out' requires an argument"]),
    ("control-chars", ["summary", "mlp-bn", "--\x1b[2Jx"], ["\\x1b[2Jx"]),
]


@pytest.mark.parametrize("name,args,fragments", USAGE, ids=[c[0] for c in USAGE])
def test_usage_error_is_one_line(cli, tmp_path, name, args, fragments):
    before = snapshot(tmp_path)
    err = assert_clean_error(cli(*args), *fragments)
    assert "Usage:" not in err and "\x1b" not in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("path", ["s\x1b]0;pwned\x07.toml", "a\nb.toml", "x\u2028y.toml",
                                  "t\r.json"])
def test_control_characters_in_paths_are_escaped(cli, tmp_path, path):
    err = assert_clean_error(cli("summary", str(tmp_path / path)), "no such spec file")
    assert not any(c in err for c in "\x1b\x07\n\r\u2028")


def test_a_machine_error_outside_the_package_is_one_line(cli, monkeypatch):
    def unreadable(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "/some/where")

    monkeypatch.setattr("zoo.report.summary", unreadable)
    assert_clean_error(cli("summary", "mlp-bn"), "/some/where: Permission denied")


def test_every_zoo_error_has_an_exit_code():
    import zoo.errors

    for name in zoo.errors.__all__:
        cls = getattr(zoo.errors, name)
        if isinstance(cls, type) and issubclass(cls, zoo.errors.ZooError):
            assert cls("x" if cls is not zoo.errors.SpecError else ["x"]).exit_code == 2


# -- options the built model cannot take: refused before the run directory exists --------------

# (id, arguments after `train mlp-bn --data WORDS --out RUN`, fragments of the one line)
OPTIONS = [
    ("batch-of-one-with-batchnorm", ["--batch-size", "1"],
     ["train.batch_size = 1: this model cannot train on it", "a batch of 2 or more"]),
    ("samples-too-many", ["--samples", "10000000"], ["'--samples'", "10000000"]),
    ("samples-negative", ["--samples", "-1"], ["'--samples'", "-1"]),
]


@pytest.mark.parametrize("name,args,fragments", OPTIONS, ids=[c[0] for c in OPTIONS])
def test_option_refused_before_the_run_exists(cli, tmp_path, tiny_words, name, args,
                                              fragments):
    out = tmp_path / "run"
    before = snapshot(tmp_path)
    result = cli("train", "mlp-bn", "--data", str(tiny_words), "--out", str(out), *args)
    assert_clean_error(result, *fragments)
    assert snapshot(tmp_path) == before and not out.exists()


def test_batch_of_one_still_trains_a_model_without_batch_statistics(cli, tmp_path,
                                                                   tiny_words):
    result = cli("train", "mlp", "--data", str(tiny_words), "--out", str(tmp_path / "run"),
                 "--batch-size", "1", "--steps", "2", "--samples", "0")
    assert result.exit_code == 0, result.output
