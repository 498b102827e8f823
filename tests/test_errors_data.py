"""Bad-input matrix, data: words files and sampling inputs that must be refused cleanly."""

from __future__ import annotations

import pytest
from matrix import assert_clean_error, snapshot

# (id, bytes of the words file or None for "no file", fragments of the one-line error)
CASES = [
    ("missing", None, ["no such words file"]),
    ("empty", b"", ["no words (the file is empty or has only blank lines)"]),
    ("blank-lines", b"\n \n\t\n\r\n", ["no words"]),
    ("not-utf8", b"emma\nolivia\nzo\xeb\n", ["words.txt:3: not UTF-8 (byte 0xeb)"]),
    ("nul-bytes", b"emma\x00\n", ["words.txt:1: word 'emma\\x00' contains '\\x00'"]),
    ("huge-line", b"emma\n" + b"x" * 5_000_000, ["words.txt:2: a line of 5,000,000 characters"]),
    ("boundary-char", b"emma\nst. john\n", ["words.txt:2: word 'st. john' contains '.'"]),
    ("control-char", b"emma\nav\x1ba\n", ["words.txt:2:", "control characters"]),
    ("too-few-words", b"ab\ncd\nef\ngh\n", ["4 words are too few", "need at least 10"]),
    ("binary", bytes(range(256)) * 4, ["words.txt:2: not UTF-8 (byte 0x80)"]),
]


@pytest.mark.parametrize("name,content,fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_words_file(cli, tmp_path, name, content, fragments):
    words = tmp_path / "words.txt"
    if content is not None:
        words.write_bytes(content)
    before = snapshot(tmp_path)
    result = cli("train", "mlp-bn", "--data", str(words), "--out", str(tmp_path / "run"))
    assert_clean_error(result, str(words), *fragments)
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "run").exists()


def test_words_path_is_a_directory(cli, tmp_path):
    (tmp_path / "words").mkdir()
    result = cli("train", "mlp-bn", "--data", str(tmp_path / "words"), "--out",
                 str(tmp_path / "run"))
    assert_clean_error(result, "is a directory; expected a words file")


@pytest.mark.parametrize("backend", ["run", "onnx"])
@pytest.mark.parametrize("prefix,fragment", [("emX", "'X'"), ("a.b", "'.'"), ("Zé", "'Z', 'é'")])
def test_prefix_outside_the_vocabulary(cli, exported, backend, prefix, fragment):
    run, onnx_path = exported("mlp-bn")
    source = run if backend == "run" else onnx_path
    before = snapshot(run)
    result = cli("sample", str(source), "-n", "3", "--prefix", prefix)
    assert_clean_error(result, "outside the model's vocabulary", fragment)
    assert snapshot(run) == before


@pytest.mark.parametrize("args,fragment", [
    (["--temperature", "0"], "temperature"),
    (["--top-k", "0"], "top"),
    (["-n", "-1"], "-1"),
])
def test_bad_sampling_options(cli, exported, args, fragment):
    run, onnx_path = exported("mlp-bn")
    result = cli("sample", str(onnx_path), *args)
    assert result.exit_code == 2 and fragment in result.output
    assert "Traceback" not in result.output
