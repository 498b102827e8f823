"""zoo.data: vocabulary, windows, the seeded split, and words files that must be refused."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data import (
    MAX_WORD_LENGTH,
    Vocab,
    default_words_file,
    load_dataset,
    read_words,
    split_words,
    windows,
)
from zoo.errors import DataError


def naive_windows(words, vocab, context):
    """The seed notebook's loop, as the reference for the vectorised version."""
    index = vocab.index()
    xs, ys = [], []
    for word in words:
        ctx = [0] * context
        for ch in word + ".":
            xs.append(list(ctx))
            ys.append(index[ch])
            ctx = ctx[1:] + [index[ch]]
    return np.array(xs, dtype=np.int64).reshape(-1, context), np.array(ys, dtype=np.int64)


def test_vocab_is_boundary_then_sorted_characters():
    vocab = Vocab.from_words(["emma", "zoë", "ava"])
    assert vocab.chars == (".", "a", "e", "m", "o", "v", "z", "ë")
    assert vocab.encode("ava") == [1, 5, 1]
    assert Vocab.from_json(vocab.to_json()) == vocab


@pytest.mark.parametrize("context", [1, 3, 8])
def test_windows_match_the_reference_loop(context):
    words = ["emma", "olivia", "ava", "x", "zoë", "aaaaaaaaaaaa"]
    vocab = Vocab.from_words(words)
    x, y = windows(words, vocab, context)
    rx, ry = naive_windows(words, vocab, context)
    assert x.dtype == np.int64 and y.dtype == np.int64
    np.testing.assert_array_equal(x, rx)
    np.testing.assert_array_equal(y, ry)


def test_windows_on_the_seed_example():
    vocab = Vocab.from_words(list("abcdefghijklmnopqrstuvwxyz"))
    x, y = windows(["emma"], vocab, 3)
    assert x.tolist() == [[0, 0, 0], [0, 0, 5], [0, 5, 13], [5, 13, 13], [13, 13, 1]]
    assert y.tolist() == [5, 13, 13, 1, 0]


def test_split_is_seeded_disjoint_and_80_10_10():
    words = [f"w{i}" for i in range(1000)]
    a = split_words(words, seed=0)
    assert a == split_words(words, seed=0)
    assert a != split_words(words, seed=1)
    assert [len(p) for p in a] == [800, 100, 100]
    assert sorted(a[0] + a[1] + a[2]) == sorted(words)


def test_dataset_is_identical_for_the_same_file_and_seed():
    one, two = load_dataset(None, 3, seed=7), load_dataset(None, 3, seed=7)
    assert one.vocab == two.vocab and one.sha256 == two.sha256
    for split in ("train", "val", "test"):
        for a, b in zip(one.splits[split].arrays(), two.splits[split].arrays(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_bundled_corpus_is_lowercase_names():
    words = read_words(default_words_file())
    assert 25_000 < len(words) < 35_000
    assert set("".join(words)) == set("abcdefghijklmnopqrstuvwxyz")
    from zoo.data import BUNDLED_VOCAB_SIZE

    assert BUNDLED_VOCAB_SIZE == len(set("".join(words))) + 1  # and '.'


def test_lines_are_stripped_and_blank_lines_skipped(tmp_path):
    path = tmp_path / "w.txt"
    path.write_text("  emma \n\n\r\nava\r\n   \n", encoding="utf-8")
    assert read_words(path) == ["emma", "ava"]


BAD_FILES = [
    ("empty", b"", "no words"),
    ("blank", b"\n  \n\t\n", "no words"),
    ("latin1", b"emma\nzo\xeb\n", ":2: not UTF-8"),
    ("nul", b"emma\nav\x00a\n", ":2: word 'av\\x00a' contains '\\x00'"),
    ("boundary", b"emma\nmr.x\n", ":2: word 'mr.x' contains '.'"),
    ("huge", b"emma\n" + b"a" * (MAX_WORD_LENGTH + 1) + b"\n", ":2: a line of 257 characters"),
]


@pytest.mark.parametrize("name,content,message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_words_files_name_the_file_and_line(tmp_path, name, content, message):
    path = tmp_path / f"{name}.txt"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_words(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="no such words file"):
        read_words(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="is a directory"):
        read_words(tmp_path)


def test_too_few_words_for_a_split(tmp_path):
    path = tmp_path / "few.txt"
    path.write_text("ab\ncd\nef\n", encoding="utf-8")
    with pytest.raises(DataError, match="3 words are too few"):
        load_dataset(path, 3, seed=0)


def test_characters_outside_the_vocabulary_are_named():
    vocab = Vocab.from_words(["abc"])
    with pytest.raises(DataError, match=r"'X', 'z'"):
        vocab.encode("aXz", what="prefix")
