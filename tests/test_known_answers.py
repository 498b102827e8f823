"""zoo.sampling against tests/known_answers.json: the generator, the inverse-CDF choice, top-k
ties, temperature, whole words, the defaults and the settings refused.

The JavaScript sampler (web/rng.mjs, web/sampler.mjs) is checked against the same table by
tests/js/*.test.mjs (``node --test tests/js/``), which the last test here runs: the two
samplers share one set of answers rather than each its own.
"""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from zoo.cli_deploy import sample_cmd
from zoo.errors import ZooError
from zoo.sampling import pick, sample, uniforms

TESTS = Path(__file__).parent
TABLE = json.loads((TESTS / "known_answers.json").read_text(encoding="utf-8"))
WORDS = TABLE["words"]
BIGRAM = np.asarray(WORDS["bigram"], np.float32)  # (V, V): logits after each id


def decode(value: object) -> object:
    """The table's spelling of what JSON cannot hold: {"int": digits}, {"float": "inf"}."""
    if isinstance(value, dict) and set(value) == {"int"}:
        return int(value["int"])
    if isinstance(value, dict) and set(value) == {"float"}:
        return float(value["float"])
    return value


def settings_of(case: dict, base: dict) -> dict:
    return {**base, **{key: decode(value) for key, value in case["settings"].items()}}


def bigram(context: np.ndarray) -> np.ndarray:
    """A window model that reads the last id of its context."""
    return BIGRAM[context[:, -1]]  # (B, V)


class BigramSteps:
    """The bigram table as a sequence model: no state, the logits of the id stepped on."""

    caches: list[bool] = []

    def start(self, rows: int) -> list[np.ndarray]:
        return []

    def step(self, ids: np.ndarray, state: list[np.ndarray],
             position: int) -> tuple[np.ndarray, list[np.ndarray]]:
        return BIGRAM[ids], state  # (A, V)


def ending(context: np.ndarray) -> np.ndarray:
    """A model that ends every word at once."""
    logits = np.zeros((len(context), len(WORDS["vocab"])), np.float32)  # (B, V)
    logits[:, 0] = 100.0
    return logits


def model(kind: str):
    return BigramSteps() if kind == "steps" else bigram


def test_the_generator_is_splitmix64() -> None:
    """Seed 0's word at index (SplitMix64's first output) has key 0: its uniforms are the top
    53 bits of SplitMix64's published outputs, steps 0, 1, ... for outputs 1, 2, ..."""
    outputs = [int(text, 16) for text in TABLE["splitmix64"]["outputs"]]
    index = np.array([outputs[0]], np.uint64)
    got = [float(uniforms(0, index, step)[0]) for step in range(len(outputs))]
    assert got == [(out >> 11) * 2.0**-53 for out in outputs]


@pytest.mark.parametrize("case", TABLE["generator"]["cases"],
                         ids=lambda c: f"seed={decode(c['seed'])},index={decode(c['index'])}")
def test_uniforms(case: dict) -> None:
    index = np.array([decode(case["index"])], np.uint64)
    got = [float(uniforms(decode(case["seed"]), index, step)[0]) for step in case["steps"]]
    assert got == case["u"]


@pytest.mark.parametrize("case", TABLE["pick"]["cases"], ids=lambda c: c["about"])
def test_pick(case: dict) -> None:
    logits = np.array([case["logits"]], np.float32)  # (1, V)
    chosen = pick(logits, np.array([case["u"]]), case["temperature"], case["top_k"])
    assert chosen.tolist() == [case["id"]]


@pytest.mark.parametrize("case", WORDS["cases"], ids=lambda c: c["about"])
def test_words(case: dict) -> None:
    settings = settings_of(case, {"vocab": WORDS["vocab"], "context": WORDS["context"]})
    assert sample(model(case["model"]), **settings) == case["words"]


@pytest.mark.parametrize("case", TABLE["refused"]["cases"], ids=lambda c: str(c["settings"]))
def test_refused_settings(case: dict) -> None:
    settings = settings_of(case, TABLE["refused"]["base"])
    fn = BigramSteps() if case.get("model") == "steps" else ending
    with pytest.raises(ZooError) as info:
        sample(fn, **settings)
    message = str(info.value)
    assert "\n" not in message
    for fragment in case["says"]:
        assert fragment in message


@pytest.mark.parametrize("case", TABLE["accepted"]["cases"], ids=lambda c: str(c["settings"]))
def test_accepted_settings(case: dict) -> None:
    settings = settings_of(case, TABLE["accepted"]["base"])
    assert sample(ending, **settings) == [settings.get("prefix", "")] * settings["n"]


def test_defaults() -> None:
    """``zoo sample``'s options and ``sample``'s keywords default to the table's values."""
    defaults = {k: v for k, v in TABLE["defaults"].items() if k != "about"}
    options = {"n" if param.name == "count" else param.name: param.default
               for param in sample_cmd.params if param.name != "source"}
    assert options == defaults
    keywords = {name: param.default for name, param in inspect.signature(sample).parameters.items()
                if param.default is not inspect.Parameter.empty}
    assert keywords == {k: v for k, v in defaults.items() if k != "n"}


def test_the_javascript_sampler_meets_the_same_table() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the JavaScript half of the table is not checked")
    files = sorted(str(path) for path in (TESTS / "js").glob("*.test.mjs"))
    assert files
    done = subprocess.run([node, "--test", *files], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
