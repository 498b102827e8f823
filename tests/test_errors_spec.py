"""Bad-input matrix, specs: each case is one clear line, exit 2, and no file touched."""

from __future__ import annotations

import json
import os

import pytest
from matrix import assert_clean_error, no_hang, snapshot, special

MLP = '[{type = "embedding", dim = 4}, "flatten", {type = "linear", out = 8}, "tanh", "linear"]'


def toml(layers: str = MLP, context: int | str = 3, extra: str = "") -> str:
    return f"{extra}\n[model]\ncontext = {context}\nlayers = {layers}\n"


def with_layer(entry: str) -> str:
    """An otherwise valid MLP whose hidden linear is replaced by ``entry``."""
    return toml(MLP.replace('{type = "linear", out = 8}', entry))


# (id, file name, content, fragments the one-line error must contain)
CASES = [
    ("toml-syntax", "s.toml", "[model\ncontext = 3\n", ["s.toml:1", "invalid TOML"]),
    ("toml-syntax-later", "s.toml", "[model]\ncontext = 3\nlayers = [\n",
     ["s.toml:", "invalid TOML"]),
    ("json-syntax", "s.json", '{"model": {"context": 3,,}}', ["s.json:1:", "invalid JSON"]),
    ("json-top-list", "s.json", '["tanh"]', ["expected a table with 'model'", "list"]),
    ("no-model", "s.toml", "description = 'x'\n", ["key 'model' is missing"]),
    ("model-not-table", "s.toml", "model = 3\n", ["key 'model': expected a table, got int 3"]),
    ("unknown-top-key", "s.toml", toml(extra="modle = 1"),
     ["unknown key 'modle' (did you mean 'model'?)"]),
    ("unknown-model-key", "s.toml", "[model]\nlayer = ['tanh']\n",
     ["model: unknown key 'layer' (did you mean 'layers'?)"]),
    ("no-layers", "s.toml", "[model]\ncontext = 3\n", ["model.layers: expected a list", "nothing"]),
    ("layers-not-list", "s.toml", toml(layers='"linear"'),
     ["model.layers: expected a list of layer entries, got string 'linear'"]),
    ("empty-layers", "s.toml", toml(layers="[]"), ["model.layers is empty"]),
    ("unknown-layer", "s.toml", with_layer('{type = "lineer", out = 8}'),
     ["entry 2: unknown layer 'lineer' (did you mean 'linear'?)"]),
    ("unknown-key", "s.toml", with_layer('{type = "linear", outt = 8}'),
     ["entry 2 (linear): unknown key 'outt' (did you mean 'out'?)"]),
    ("wrong-type-str", "s.toml", with_layer('{type = "linear", out = "200"}'),
     ["entry 2 (linear): key 'out': expected an integer or none >= 1, got string '200'"]),
    ("wrong-type-bool", "s.toml", with_layer('{type = "linear", out = 8, bias = 1}'),
     ["entry 2 (linear): key 'bias': expected true or false, got int 1"]),
    ("float-for-int", "s.toml", with_layer('{type = "linear", out = 2.5}'),
     ["key 'out'", "got float 2.5"]),
    ("negative-size", "s.toml", with_layer('{type = "linear", out = -5}'),
     ["entry 2 (linear): key 'out'", ">= 1, got int -5"]),
    ("zero-size", "s.toml", with_layer('{type = "linear", out = 0}'), ["key 'out'", "got int 0"]),
    ("zero-embedding", "s.toml",
     toml(layers='[{type = "embedding", dim = 0}, "flatten", "linear"]'),
     ["entry 0 (embedding): key 'dim'", "got int 0"]),
    ("missing-value", "s.toml", with_layer('"linear"'),
     ["entry 2 (linear): key 'out' is missing", "only the last linear defaults"]),
    ("entry-not-table", "s.toml", with_layer("42"),
     ["entry 2: expected a layer name or a table with 'type', got int 42"]),
    ("entry-without-type", "s.toml", with_layer("{out = 8}"), ["entry 2: key 'type' is missing"]),
    ("type-not-string", "s.toml", with_layer("{type = 3}"),
     ["entry 2: key 'type': expected a layer name, got int 3"]),
    ("value-out-of-range", "s.toml", with_layer('{type = "dropout", p = 1.5}'),
     ["entry 2 (dropout): key 'p': expected a finite number >= 0 and <= 1, got float 1.5"]),
    ("not-a-choice", "s.toml", with_layer('{type = "gelu", approximate = "fast"}'),
     ["key 'approximate': expected one of 'none', 'tanh', got string 'fast'"]),
    ("bad-clamp", "s.toml", with_layer('{type = "hardtanh", min_val = 2.0}'),
     ["entry 2 (hardtanh): key 'min_val': expected less than max_val"]),
    ("shapes-consecutive", "s.toml",
     toml('[{type = "embedding", dim = 4}, {type = "flatten_consecutive", n = 3}, "flatten", '
          '"linear"]', context=8),
     ["entry 1 (flatten_consecutive): cannot merge 3 consecutive positions",
      "comes from entry 0 (embedding)"]),
    ("features-first", "s.toml", toml('[{type = "linear", out = 8}, "linear"]'),
     ["entry 0 (linear) takes features but the model input (token ids) gives token ids",
      "start the layers with one that takes token ids ('embedding')"]),
    ("embedding-twice", "s.toml", toml('["embedding", "embedding", "flatten", "linear"]'),
     ["entry 1 (embedding) takes token ids but entry 0 (embedding) gives features"]),
    ("not-logits", "s.toml", toml('[{type = "embedding", dim = 4}, {type = "linear", out = 5}]'),
     ["must end with logits of shape (27,)", "entry 1 (linear) gives (3, 5)",
      "add a 'flatten'"]),
    ("sequence-not-causal", "s.toml", toml('[{type = "embedding", dim = 4}, "batchnorm", '
                                           '"linear"]'),
     ["entry 1 (batchnorm) of plugin 'norm' is not causal on [B, T, C]",
      "a sequence model (logits [B, T, V])"]),
    ("repeat-zero", "s.toml", with_layer('{repeat = 0, layers = ["tanh"]}'),
     ["entry 2 (repeat block): key 'repeat': expected an integer >= 1, got int 0"]),
    ("repeat-string", "s.toml", with_layer('{repeat = "two", layers = ["tanh"]}'),
     ["key 'repeat': expected an integer >= 1, got string 'two'"]),
    ("repeat-empty", "s.toml", with_layer("{repeat = 2, layers = []}"),
     ["entry 2 (repeat block): key 'layers': expected a non-empty list"]),
    ("repeat-unknown-key", "s.toml", with_layer('{repeat = 2, layers = ["tanh"], layer = 1}'),
     ["entry 2 (repeat block): unknown key 'layer' (did you mean 'layers'?)"]),
    ("repeat-inner-error", "s.toml", with_layer('{repeat = 2, layers = ["tanhh"]}'),
     ["entry 2.0: unknown layer 'tanhh' (did you mean 'tanh'"]),
    ("repeat-huge", "s.toml", with_layer('{repeat = 1000000, layers = ["tanh"]}'),
     ["1,000,000 repeats of 1 layers exceed the limit", "refused"]),
    ("too-many-parameters", "s.toml", with_layer('{type = "linear", out = 100000000}'),
     ["parameters; layerzoo refuses more than", "LAYERZOO_MAX_PARAMS"]),
    ("context-zero", "s.toml", toml(context=0), ["model.context: expected an integer from 1"]),
    ("context-string", "s.toml", toml(context='"three"'),
     ["model.context: expected an integer >= 1 or 'auto', got string 'three'"]),
    ("description-type", "s.toml", toml(extra="description = 5"),
     ["key 'description': expected a string, got int 5"]),
    ("not-utf8", "s.toml", b"[model]\ncontext = 3 # \xff\n", ["not UTF-8"]),
    ("deep-json", "s.json", "[" * 100_000 + "]" * 100_000, ["s.json", "invalid JSON"]),
    # -- silent last-wins, huge numbers, huge problem lists, odd names ----
    ("json-duplicate-key", "s.json",
     '{"model": {"context": 3, "layers": ["tanh"], "context": 8}}',
     ["s.json: invalid JSON: key 'context' appears twice in one object"]),
    ("json-duplicate-entry-key", "s.json",
     json.dumps({"model": {"layers": [{"type": "embedding", "dim": 4}, "flatten", "linear"]}})
     .replace('"dim": 4', '"dim": 4, "dim": 40'), ["s.json", "key 'dim' appears twice"]),
    ("json-int-5000-digits", "s.json", '{"model": {"context": ' + "7" * 5000 + ', "layers": []}}',
     ["s.json: invalid JSON: an integer of 5,000 digits"]),
    ("toml-int-5000-digits", "s.toml", toml(context="7" * 5000),
     ["s.toml: invalid TOML", "4300 digits"]),
    ("toml-int-4000-digits", "s.toml", with_layer('{type = "linear", out = ' + "9" * 4000 + "}"),
     ["entry 2 (linear)", "Overflow"]),
    ("problems-80000", "s.json", json.dumps({"model": {"layers": [42] * 80_000}}),
     ["80,000 problems: entry 0: expected a layer name", "; and 79,990 more"]),
    ("control-chars-in-name", "s\x1b[2J\n.toml", "[model\n",
     ["s\\x1b[2J\\n.toml:1", "invalid TOML"]),
    ("huge-dim", "s.toml", toml('[{type = "embedding", dim = 4611686018427387904}, "flatten", '
                                '"linear"]'), ["entry 0 (embedding)", "overflow"]),
]


@pytest.mark.parametrize("name,filename,content,fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_spec_file(cli, tmp_path, name, filename, content, fragments):
    path = tmp_path / filename
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    before = snapshot(tmp_path)
    result = cli("summary", str(path))
    err = assert_clean_error(result, *fragments)
    assert len(err) < 4000  # a message is read, not scrolled
    assert snapshot(tmp_path) == before


def test_all_problems_are_reported_together(cli, tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"model": {"context": 0, "layers": [
        {"type": "embeding"}, {"type": "linear", "outt": 3}, {"repeat": 0, "layers": []}]},
        "train": {"stpes": 3}}))
    err = assert_clean_error(cli("summary", str(path)), "5 problems")
    for fragment in ("model.context", "'embeding'", "'outt'", "repeat block", "'stpes'"):
        assert fragment in err


def test_spec_file_too_large(cli, tmp_path):
    path = tmp_path / "big.toml"
    path.write_text(toml() + "#" * (2 << 20))
    assert_clean_error(cli("summary", str(path)), "is 2,097,271 bytes", "refused above 1 MiB")


def test_spec_path_is_a_directory(cli, tmp_path):
    (tmp_path / "d.toml").mkdir()
    assert_clean_error(cli("summary", str(tmp_path / "d.toml")), "is a directory")


def test_missing_spec_file(cli, tmp_path):
    assert_clean_error(cli("summary", str(tmp_path / "nope.toml")), "no such spec file")


def test_unknown_preset(cli):
    assert_clean_error(cli("summary", "wavenett"),
                       "no preset or spec file named 'wavenett' (did you mean 'wavenet'?)")


@pytest.mark.parametrize("train,fragment", [
    ("stpes = 5", "train: unknown key 'stpes' (did you mean 'steps'?)"),
    ('lr = "fast"', "train.lr: expected a finite number >= 0, got string 'fast'"),
    ('optimizer = "adam"', "train.optimizer: expected one of 'adamw', 'sgd', got string 'adam'"),
    ("batch_size = 0", "train.batch_size: expected an integer >= 1 and <= 65536, got int 0"),
])
def test_bad_recipe_is_refused_before_training(cli, tmp_path, train, fragment):
    path = tmp_path / "s.toml"
    path.write_text(toml() + f"[train]\n{train}\n")
    out = tmp_path / "run"
    before = snapshot(tmp_path)
    assert_clean_error(cli("train", str(path), "--out", str(out)), str(path), fragment)
    assert snapshot(tmp_path) == before and not out.exists()


def test_debug_shows_the_traceback(tmp_path):
    from click.testing import CliRunner

    from zoo.cli import main
    from zoo.errors import SpecError

    result = CliRunner().invoke(main, ["--debug", "summary", "wavenett"])
    assert isinstance(result.exception, SpecError)


# -- what a spec path can be besides a file: refused by name, never read, never waited on ------

SPECIAL = [("fifo", "is a FIFO (named pipe); expected a spec file"),
           ("socket", "is a socket; expected a spec file"),
           ("dev-zero", "is a character device; expected a spec file"),
           ("directory", "is a directory")]


@pytest.mark.parametrize("suffix", [".toml", ".json"])
@pytest.mark.parametrize("kind,fragment", SPECIAL, ids=[k for k, _ in SPECIAL])
def test_spec_that_is_not_a_regular_file(cli, tmp_path, kind, fragment, suffix):
    path = special(kind, tmp_path / f"s{suffix}")
    for command in (["summary", str(path)], ["train", str(path), "--out", str(tmp_path / "r")]):
        with no_hang():
            result = cli(*command)
        assert_clean_error(result, str(path), fragment)
    assert not (tmp_path / "r").exists()


def test_device_given_by_name_is_refused_unread(cli):
    assert_clean_error(cli("summary", "/dev/zero"), "/dev/zero is a character device")


@pytest.mark.skipif(not os.access("/proc/kallsyms", os.R_OK), reason="needs Linux /proc")
def test_size_bound_does_not_trust_st_size(cli, tmp_path):
    """/proc/kallsyms says it is 0 bytes and holds megabytes: the read bound stops it."""
    with open("/proc/kallsyms", "rb") as f:
        if len(f.read(2 << 20)) <= 1 << 20:
            pytest.skip("this kernel lists fewer symbols than 1 MiB")
    link = tmp_path / "s.toml"
    link.symlink_to("/proc/kallsyms")
    assert_clean_error(cli("summary", str(link)), f"{link} is larger than 1 MiB; a spec "
                       "file (.toml or .json) is refused above that")


def test_sparse_spec_is_refused_before_reading(cli, tmp_path):
    path = tmp_path / "huge.toml"
    with open(path, "wb") as f:
        f.truncate(20 << 30)  # 20 GiB of holes: nothing is allocated
    assert_clean_error(cli("summary", str(path)), "is 21,474,836,480 bytes",
                       "refused above 1 MiB")


def test_huge_problem_list_keeps_every_problem_for_the_library():
    from zoo.errors import SpecError

    error = SpecError([f"p{i}" for i in range(80_000)], "s.toml")
    assert len(error.problems) == 80_000
    assert str(error).endswith("p9; and 79,990 more")


def test_a_build_error_with_a_stack_is_one_line(cli, tmp_path, monkeypatch):
    """torch errors can carry a C++ stack after the first line; the message keeps that line."""
    def explode(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory\nException raised from "
                           "alloc_cpu at alloc_cpu.cpp:127\nframe #0: c10::Error::Error()")
    monkeypatch.setattr("torch.nn.Embedding.__init__", explode)
    err = assert_clean_error(cli("summary", "mlp-bn"), "entry 0 (embedding)",
                             "can't allocate memory")
    assert "frame #0" not in err and "alloc_cpu.cpp" not in err


@pytest.mark.parametrize("value", ["abc", "-5", "0", "1e9", "9" * 5000, "\x1b[31m"])
def test_max_params_from_the_environment_is_checked(cli, value):
    err = assert_clean_error(cli("summary", "mlp-bn", env={"LAYERZOO_MAX_PARAMS": value}),
                             "LAYERZOO_MAX_PARAMS=", "expected a positive integer")
    assert "\x1b" not in err


def test_max_params_is_read_when_a_model_is_built(cli):
    """Set after import, the limit still applies (it was read once, at import)."""
    assert_clean_error(cli("summary", "mlp-bn", env={"LAYERZOO_MAX_PARAMS": "1000"}),
                       "refuses more than 1,000")
    assert cli("summary", "mlp-bn", env={"LAYERZOO_MAX_PARAMS": "1_000_000"}).exit_code == 0


def test_another_librarys_error_is_quoted_in_one_line():
    """One helper quotes every foreign error: whitespace folded (or the first line alone),
    control characters escaped, an empty error named by its class, a long one cut and
    counted."""
    from zoo.errors import one_line

    error = RuntimeError("bad  value\n  at\tpos 3\x1b[2J\nframe #0: c10::Error")
    assert one_line(error) == "bad value at pos 3\\x1b[2J frame #0: c10::Error"
    assert one_line(error, first=True) == "bad value"
    assert one_line(error, first=True, named=True) == "RuntimeError: bad value"
    assert one_line(AssertionError()) == one_line(AssertionError(), named=True) == \
        "AssertionError"
    assert one_line(ValueError("x" * 310)) == "x" * 300 + "... (10 more characters)"
    # a message of our own keeps its spacing; a newline in a path it names is shown escaped
    assert one_line("s\x1b[2J\n.toml:1:  invalid") == "s\\x1b[2J\\n.toml:1:  invalid"


def test_a_huge_integer_is_named_by_its_digits_in_the_model_and_the_recipe(cli, tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"model": {"context": 3, "layers": 1' + "0" * 99 + '}}', encoding="utf-8")
    assert_clean_error(cli("summary", str(path)), "model.layers: expected a list of layer "
                       "entries, got an integer of 100 digits")
    path.write_text('{"model": {"context": 3, "layers": ["flatten"]}, "train": {"seed": 1'
                    + "0" * 99 + '}}', encoding="utf-8")
    assert_clean_error(cli("summary", str(path)), "train.seed: expected an integer >= 0",
                       "got an integer of 100 digits")
