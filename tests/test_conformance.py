"""The conformance kit over every registered layer, and proof that it catches broken layers."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from zoo import LayerType, NoParams, ShapeError, param
from zoo.layer import declaration_problems
from zoo.registry import get_registry
from zoo.testing import ConformanceError, ConformanceWarning, check_layer

# spec parameters a layer needs (a new layer needs none, or a line here)
EXAMPLE_PARAMS = {"linear": {"out": 8}, "causal_self_attention": {"heads": 2}}
LAYERS = sorted(get_registry().layers)
# what a layer may receive, tried in turn: the kit's default, then a sequence whose feature size
# most head counts divide, then features only
SHAPES = [None, (4, 8), (8,)]
CHECKS = ["shapes", "forward", "gradients", "weights", "batch independence"]  # then causality


def _export_available() -> bool:
    try:
        import zoo.export.onnx  # noqa: F401
    except ImportError:
        return False
    return True


def _conforms(name: str):
    """check_layer on the first input shape the layer accepts (a ConformanceError on a built
    model is a real failure; one that no surrounding model could be built for tries on)."""
    builds = []
    for shape in SHAPES:
        try:
            return check_layer(name, params=EXAMPLE_PARAMS.get(name), in_shape=shape)
        except ConformanceError as e:
            if "fails the build check" not in str(e):
                raise
            builds.append(str(e))
    pytest.fail(" | ".join(builds))


@pytest.mark.parametrize("name", LAYERS)
def test_every_registered_layer_conforms(name: str) -> None:
    if not _export_available():
        pytest.skip("zoo.export.onnx is not importable: the ONNX part of the kit cannot run")
    layer = get_registry().layer(name)
    missing = [p.name for p in layer.parameters() if p.required] if name not in EXAMPLE_PARAMS \
        else []
    if missing:
        pytest.skip(f"{name} needs {missing} and has no line in EXAMPLE_PARAMS")
    report = _conforms(name)
    sequence = "[B, T, C]" in report.forms or ("tokens" in report.forms and report.context > 1)
    causal = ["causality"] if layer.causal and sequence else []
    steps = ["steps"] if layer.incremental and sequence else []
    # every built-in gives the same bits on one and two threads; a third-party layer may not
    # (zoo train then keeps it on one thread): the kit names what differed
    builtin = get_registry().plugins[layer.plugin].builtin
    skipped_threads = report.skipped.pop("threads", None)
    assert skipped_threads is None or (not builtin and "differs between 1 and 2 threads"
                                       in skipped_threads)
    threads = [] if skipped_threads else ["threads"]
    assert report.passed == [*CHECKS, *causal, *steps, *threads, "onnx"]
    unchecked = "the layer was not checked on a sequence"
    assert report.skipped == ({} if not layer.causal or sequence else
                              {"causality": unchecked} | ({"steps": unchecked}
                                                          if layer.incremental else {}))
    assert report.forms and (report.forms == ["tokens"]) == layer.takes_tokens


def test_the_registry_covers_the_builtins_and_the_installed_plugin() -> None:
    assert {"linear", "batchnorm", "embedding", "flatten_consecutive", "causal_self_attention",
            "position_embedding", "last", "mean", "swish", "hardswishish"} <= set(LAYERS)


def test_builtin_sequence_layers_declare_what_the_kit_checks() -> None:
    registry = get_registry()
    assert registry.layer("causal_self_attention").causal
    assert registry.layer("position_embedding").causal
    assert {n for n in ("flatten", "last", "mean") if registry.layer(n).reduction} == {
        "flatten", "last", "mean"}


def test_an_author_chooses_the_feature_size_and_sequence_length() -> None:
    report = check_layer("causal_self_attention", params={"heads": 4}, in_shape=(16, 32),
                         onnx=False)
    assert report.context == 16 and report.forms[0] == "[B, T, C]"
    assert report.spec[0] == {"type": "conformance_embedding", "dim": 32}
    assert "causality" in report.passed and "batch independence" in report.passed
    with pytest.raises(ConformanceError, match="4 heads do not divide the feature size 6"):
        check_layer("causal_self_attention", params={"heads": 4}, onnx=False)
    features = check_layer("tanh", in_shape=(5,), onnx=False)
    assert features.forms == ["[B, C]"] and features.context == 1
    with pytest.raises(ValueError, match="in_shape must be"):
        check_layer("tanh", in_shape=(2, 3, 4), onnx=False)


def test_the_kit_needs_no_builtin_layer() -> None:
    """The surrounding model is the kit's own: a registry with only the layer under test works."""
    from zoo.registry import Registry

    empty = Registry()
    report = check_layer(_layer("alone", lambda s, p, pl: nn.Linear(s[-1], s[-1])),
                         registry=empty, onnx=False)
    assert report.passed == [*CHECKS, "threads"]


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


class BatchAsTime(nn.Module):
    """An LSTM that takes the batch axis for time (batch_first left False on [B, T, C])."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]  # (B, T, C), B read as time


class PeekAhead(nn.Module):
    """Adds the next position: not causal, though it says so."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.roll(x, -1, dims=1)  # (B, T, C)


class DropoutInEval(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(x, 0.5, training=True)


def _layer(name: str, build, shape=lambda s, p, pl: s, causal: bool = False) -> LayerType:
    return LayerType(name=name, doc="broken on purpose", params=NoParams, shape=shape,
                     build=build, causal=causal)


def _sequence_only(s, p, pl):
    if len(s) != 2:
        raise ShapeError(f"expects [B, T, C], got {s}")
    return s


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
    (_layer("batch_as_time", lambda s, p, pl: BatchAsTime(s[-1]), _sequence_only),
     "layer 'batch_as_time' fails the batch independence check: entry 1 (batch_as_time): in "
     "eval mode changing row 0 of the batch changed the output of the other rows"),
    (_layer("peek", lambda s, p, pl: PeekAhead(), _sequence_only, causal=True),
     "layer 'peek' fails the causality check: entry 1 (peek) declares itself causal, but "
     "changing the inputs after position 0 changed its output at or before position 0"),
], ids=lambda v: v.name if isinstance(v, LayerType) else "")
def test_the_kit_catches_a_broken_layer(layer: LayerType, message: str) -> None:
    with pytest.raises(ConformanceError) as e:
        check_layer(layer, onnx=False)
    assert str(e.value).startswith(message)
    assert isinstance(e.value, AssertionError)  # pytest reports it as a failed assertion


def test_the_same_layer_done_right_passes() -> None:
    fixed = _layer("fixed", lambda s, p, pl: nn.Linear(s[-1], s[-1]))
    report = check_layer(fixed, onnx=False)
    assert report.passed == [*CHECKS, "threads"]
    assert report.spec[1] == {"type": "fixed"} and report.forms == ["[B, T, C]", "[B, C]"]
    assert "fixed" not in get_registry().layers  # checked in a copy of the registry
    peek_fixed = _layer("peek_fixed", lambda s, p, pl: PeekAhead(), _sequence_only)
    assert check_layer(peek_fixed, onnx=False).passed == [*CHECKS, "threads"]  # not causal


def test_a_layer_that_needs_params_says_so() -> None:
    @dataclasses.dataclass(frozen=True)
    class Needs:
        width: int = param(doc="a required width", min=1)

    needy = LayerType(name="needy", doc="needs a width", params=Needs, shape=lambda s, p, pl: s,
                      build=lambda s, p, pl: nn.Identity())
    with pytest.raises(ConformanceError) as e:
        check_layer(needy, onnx=False)
    assert str(e.value).startswith(
        "layer 'needy' fails the build check: no surrounding model could be built (pass "
        "params=, in_shape= or spec=): ")
    assert "key 'width' is missing" in str(e.value)
    assert check_layer(needy, params={"width": 3}, onnx=False).passed == [*CHECKS, "threads"]


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


class _FusedBatchNorm(nn.Module):
    """torch's own BatchNorm1d, whose CPU kernel splits its reduction across threads."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(features)

    def forward(self, x):
        if x.dim() == 3:
            b, t, c = x.shape
            return self.norm(x.reshape(b * t, c)).view(b, t, c)
        return self.norm(x)


def test_a_layer_whose_gradient_depends_on_the_thread_count_is_named_not_failed() -> None:
    fused = _layer("fused_norm", lambda s, p, pl: _FusedBatchNorm(s[-1]))
    with pytest.warns(ConformanceWarning, match="differs between 1 and 2 threads"):
        report = check_layer(fused, onnx=False)
    assert report.passed == CHECKS
    assert "keeps a model with this layer on one thread" in report.skipped["threads"]


# -- the kit checks the incremental form of causal layers -------------------------------------

class RunningMean(nn.Module):
    """A causal running mean whose step may be broken on purpose."""

    def __init__(self, dim: int, broken: str = "") -> None:
        super().__init__()
        self.dim, self.broken = dim, broken

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counts = torch.arange(1, x.shape[1] + 1, dtype=x.dtype)[:, None]  # (T, 1)
        return x.cumsum(dim=1) / counts  # (B, T, C)

    def initial_state(self, batch: int) -> dict[str, torch.Tensor]:
        if self.broken == "ones":
            return {"sum": torch.ones(batch, self.dim)}
        return {"sum": torch.zeros(batch, self.dim)}

    def step(self, x, state, position):
        if self.broken == "stateless":  # forgets the past: each step starts over
            return x, state
        total = state["sum"] + x
        if self.broken == "grows":
            return total / (position + 1), {"sum": total, "extra": total}
        return total / (position + 1), {"sum": total}


def _running(broken: str = "") -> LayerType:
    return LayerType(name="running_mean", doc="mean so far", params=NoParams,
                     shape=_sequence_only, build=lambda s, p, pl: RunningMean(s[-1], broken),
                     causal=True, incremental="state")


def test_a_stepped_layer_that_matches_its_forward_passes() -> None:
    report = check_layer(_running(), onnx=False)
    assert "causality" in report.passed and "steps" in report.passed


@pytest.mark.parametrize("broken, message", [
    ("stateless", "layer 'running_mean' fails the steps check: entry 1 (running_mean): stepping "
                  "through a sequence from its initial state differs from its forward at "
                  "position 1 (max difference"),
    ("ones", "initial_state(8) must return a dict of zero tensors, the batch axis first"),
    ("grows", "step at position 0 returned state {'sum': (8, 6), 'extra': (8, 6)}; it must "
              "return {'sum': (8, 6)}: the names of initial_state, the shape of each, and one "
              "entry of each cache in state_caches"),
])
def test_the_kit_catches_a_broken_step(broken: str, message: str) -> None:
    with pytest.raises(ConformanceError) as e:
        check_layer(_running(broken), onnx=False)
    assert message in str(e.value)
    if broken == "stateless":
        assert str(e.value).endswith("its step gives what it gives from the initial state, so "
                                     "it carries nothing from one position to the next")


def test_an_incremental_declaration_needs_causal() -> None:
    layer = dataclasses.replace(_running(), causal=False)
    assert declaration_problems(layer) == [
        "incremental='state' needs causal=True: only a causal layer can run one position at a "
        "time"]
    assert declaration_problems(dataclasses.replace(_running(), incremental="yes")) == [
        "incremental must be one of None, 'position', 'state', got 'yes'"]
