"""The conformance kit over every registered layer, and proof that it catches broken layers."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from zoo import LayerType, NoParams
from zoo.registry import get_registry
from zoo.testing import ConformanceError, check_layer

# spec parameters a layer needs to sit anywhere but last (a new layer needs none, or a line here)
EXAMPLE_PARAMS = {"linear": {"out": 8}}
LAYERS = sorted(get_registry().layers)


def _export_available() -> bool:
    try:
        import zoo.export.onnx  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("name", LAYERS)
def test_every_registered_layer_conforms(name: str) -> None:
    if not _export_available():
        pytest.skip("zoo.export.onnx is not importable: the ONNX part of the kit cannot run")
    report = check_layer(name, params=EXAMPLE_PARAMS.get(name))
    assert report.passed == ["shapes", "forward", "gradients", "weights", "onnx"]
    assert report.skipped == {}
    layer = get_registry().layer(name)
    if layer.takes_tokens:
        assert report.forms == ["tokens"]
    else:  # every built-in feature layer but flatten_consecutive takes [B, C] as well
        assert "[B, T, C]" in report.forms
        assert ("[B, C]" in report.forms) == (name != "flatten_consecutive")


def test_the_registry_covers_the_builtins_and_the_installed_plugin() -> None:
    assert {"linear", "batchnorm", "embedding", "flatten_consecutive", "swish",
            "hardswishish"} <= set(LAYERS)


# -- the kit catches broken layers -------------------------------------------------------------

class UnusedWeightLinear(nn.Module):
    """The seed notebook's bug: a weight that is a parameter but never reaches the output."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(features, features))
        self.bias = nn.Parameter(torch.zeros(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.detach() + self.bias


class FrozenLinear(nn.Linear):
    def __init__(self, features: int) -> None:
        super().__init__(features, features)
        self.weight.requires_grad_(False)


class LyingShape(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x], dim=-1)


class ForgetfulNorm(nn.Module):
    """Keeps a running mean as a plain attribute, so the state_dict loses it."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.running = torch.zeros(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.running = 0.9 * self.running + 0.1 * x.detach().mean(0).mean(0) \
                if x.dim() == 3 else 0.9 * self.running + 0.1 * x.detach().mean(0)
        return x - self.running


class DropoutInEval(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(x, 0.5, training=True)


def _layer(name: str, build, shape=lambda s, p, pl: s) -> LayerType:
    return LayerType(name=name, doc="broken on purpose", params=NoParams, shape=shape,
                     build=build)


@pytest.mark.parametrize("layer, message", [
    (_layer("unused_weight", lambda s, p, pl: UnusedWeightLinear(s[-1])),
     "layer 'unused_weight' fails the gradients check: entry 1 (unused_weight): parameter "
     "'weight' got no gradient: the forward pass does not use it (or detaches it), so it "
     "never trains"),
    (_layer("frozen", lambda s, p, pl: FrozenLinear(s[-1])),
     "layer 'frozen' fails the gradients check: entry 1 (frozen): parameter 'weight' does "
     "not require grad, so it never trains"),
    (_layer("lying", lambda s, p, pl: LyingShape()),
     "layer 'lying' fails the shapes check: entry 1 (lying) declared the output shape "
     "(B, 4, 6) but its module returned (8, 4, 12)"),
    (_layer("forgetful", lambda s, p, pl: ForgetfulNorm(s[-1])),
     "layer 'forgetful' fails the weights check: after a state_dict round trip through "
     "safetensors the eval outputs differ"),
    (_layer("noisy", lambda s, p, pl: DropoutInEval()),
     "layer 'noisy' fails the forward check: eval mode is not deterministic: two calls on the "
     "same input differ (is something random left on in eval mode?)"),
], ids=lambda v: v.name if isinstance(v, LayerType) else "")
def test_the_kit_catches_a_broken_layer(layer: LayerType, message: str) -> None:
    with pytest.raises(ConformanceError) as e:
        check_layer(layer, onnx=False)
    assert str(e.value).startswith(message)
    assert isinstance(e.value, AssertionError)  # pytest reports it as a failed assertion


def test_the_same_layer_done_right_passes() -> None:
    fixed = _layer("fixed", lambda s, p, pl: nn.Linear(s[-1], s[-1]))
    report = check_layer(fixed, onnx=False)
    assert report.passed == ["shapes", "forward", "gradients", "weights"]
    assert report.spec[1] == {"type": "fixed"} and report.forms == ["[B, T, C]", "[B, C]"]
    assert "fixed" not in get_registry().layers  # checked in a copy of the registry


def test_a_layer_that_needs_params_says_so() -> None:
    with pytest.raises(ConformanceError) as e:
        check_layer("linear", onnx=False)
    assert str(e.value).startswith(
        "layer 'linear' (plugin 'linear') fails the build check: no surrounding model could be "
        "built (pass params= or spec=): ")
    assert "key 'out' is missing" in str(e.value)


def test_a_given_spec_is_used_as_is() -> None:
    spec = [{"type": "embedding", "dim": 4}, {"type": "flatten_consecutive", "n": 4},
            {"type": "linear", "out": 5}, "batchnorm", "linear"]
    report = check_layer("batchnorm", spec=spec, onnx=False, context=4)
    assert report.spec == spec and report.forms == ["given spec"]
    with pytest.raises(ConformanceError, match="does not use the layer"):
        check_layer("dropout", spec=spec, onnx=False)


def test_registered_declaration_keeps_its_plugin_name() -> None:
    layer = get_registry().layer("swish")
    unregistered = dataclasses.replace(layer, plugin="", version="")
    assert check_layer(unregistered, onnx=False).plugin == "extra"


def test_a_custom_op_without_its_translation_fails_the_onnx_check() -> None:
    pytest.importorskip("zoo.export.onnx", reason="zoo.export.onnx is not importable")
    declared = get_registry().layer("hardswishish")
    untranslated = dataclasses.replace(declared, name="hardswishish_bare", onnx_translation=None)
    with pytest.raises(ConformanceError) as e:
        check_layer(untranslated)
    assert str(e.value).startswith("layer 'hardswishish_bare' (plugin 'extra') fails the onnx "
                                   "check: export failed: ArtifactError: ONNX export failed")
    assert "layerzoo_extra.hardswishish" in str(e.value)
