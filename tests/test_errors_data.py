"""Bad-input matrix, data: words files and sampling inputs that must be refused cleanly."""

from __future__ import annotations

import os

import pytest
from matrix import assert_clean_error, no_hang, snapshot, special

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
    # -- lines end at \n only, so nothing splits a word or shifts a line --
    ("form-feed-in-word", b"emma\nav\x0cery\nst. john\n", ["words.txt:2: word 'av\\x0cery'"]),
    ("line-separator-in-word", "emma\nav\u2028ery\n".encode(),
     ["words.txt:2: word", "LINE SEPARATOR is invisible or breaks lines"]),
    ("line-numbers-after-separators", "emma\u2028\nava\x0c\nst. john\n".encode(),
     ["words.txt:3: word 'st. john' contains '.'"]),
    ("next-line-char", "emma\nav\x85a\n".encode(), ["words.txt:2: word 'av\\x85a'"]),
    ("bom-inside", "emma\nav\ufeffa\n".encode(), ["words.txt:2:", "ZERO WIDTH NO-BREAK SPACE"]),
    ("zero-width-space", "emma\nav\u200ba\n".encode(), ["words.txt:2:", "ZERO WIDTH SPACE"]),
    ("sparse-20-gib", lambda path: os.truncate(path, 20 << 30),
     ["is 21,474,836,480 bytes; a words file (one word per line) is refused above 256 MiB"]),
]


@pytest.mark.parametrize("name,content,fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_words_file(cli, tmp_path, name, content, fragments):
    words = tmp_path / "words.txt"
    if callable(content):
        words.touch()
        content(words)
    elif content is not None:
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


# -- words files that are read correctly, not refused ------------------------------------------

# (id, bytes of the words file, the words it holds)
READ = [
    ("bom", "\ufeffemma\nolivia\n".encode(), ["emma", "olivia"]),
    ("bom-crlf", "\ufeffemma\r\nolivia\r\n".encode(), ["emma", "olivia"]),
    ("crlf", b"emma\r\nolivia\r\n", ["emma", "olivia"]),
    ("trailing-separators", "emma\u2028\n olivia\x0c\n".encode(), ["emma", "olivia"]),
    ("inner-space", b"mary ann\nolivia\n", ["mary ann", "olivia"]),
]


@pytest.mark.parametrize("name,content,expected", READ, ids=[c[0] for c in READ])
def test_words_read_as_written(tmp_path, name, content, expected):
    from zoo.data import Vocab, read_words

    path = tmp_path / "words.txt"
    path.write_bytes(content)
    words = read_words(path)
    assert words == expected
    assert "\ufeff" not in Vocab.from_words(words).chars  # no invisible symbol is trained


def test_bom_does_not_reach_a_trained_vocabulary(cli, tmp_path):
    words = tmp_path / "words.txt"
    words.write_bytes(("\ufeff" + "\n".join(["emma", "olivia", "ava", "isabella", "sophia",
                                               "mia", "amelia", "harper", "evelyn", "abigail",
                                               "emily", "ella"]) + "\n").encode())
    result = cli("train", "mlp-bn", "--data", str(words), "--out", str(tmp_path / "run"),
                 "--steps", "2", "--samples", "0")
    assert result.exit_code == 0, result.output
    vocab = (tmp_path / "run" / "vocab.json").read_text(encoding="utf-8")
    assert "\ufeff" not in vocab and "\\ufeff" not in vocab


# -- a words path that is not a regular file: refused by name, never read, never waited on ----


SPECIAL = [("fifo", "is a FIFO (named pipe); expected a words file (one word per line)"),
           ("socket", "is a socket; expected a words file"),
           ("dev-zero", "is a character device; expected a words file")]


@pytest.mark.parametrize("kind,fragment", SPECIAL, ids=[k for k, _ in SPECIAL])
def test_words_path_that_is_not_a_regular_file(cli, tmp_path, kind, fragment):
    path = special(kind, tmp_path / "words")
    with no_hang():
        result = cli("train", "mlp-bn", "--data", str(path), "--out", str(tmp_path / "run"))
    assert_clean_error(result, str(path), fragment)
    assert not (tmp_path / "run").exists()


# -- memory: windows are built on demand, so a long context costs no N x T array ---------------


def test_context_4096_on_the_bundled_corpus_needs_no_huge_allocation():
    """228,146 windows x 4,096 int64 would be 7 GiB; the flat token array is about 2 MB."""
    import tracemalloc

    from zoo.data import load_dataset

    tracemalloc.start()
    try:
        dataset = load_dataset(None, context=4096, seed=42)
        x, y = dataset.splits["train"].batch([0, 5, 100_000])  # (3, 4096), (3,)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert x.shape == (3, 4096) and y.shape == (3,)
    assert x[0].tolist() == [0] * 4096  # the first window of a word is all '.'
    assert peak < 64 << 20, f"{peak / 2**20:.0f} MiB traced"
