"""Each built-in layer against its torch.nn counterpart, and initialisation as declared."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from zoo.build import build_model
from zoo.errors import SpecError
from zoo.layer import Place, Shape
from zoo.registry import get_registry
from zoo.spec import Spec, expand

TOL = dict(atol=1e-6, rtol=1e-6)


def make(entry: Any, in_shape: Shape, *, vocab: int = 27, context: int = 3) -> nn.Module:
    """Build one layer from a spec entry, as the builder would in the middle of a model."""
    (e,) = expand(Spec([entry]), get_registry())
    return e.layer.build(in_shape, e.params, Place(0, e.label, vocab, context, 1.0, False))


def same_grads(ours: nn.Module, theirs: nn.Module, x: torch.Tensor, fn) -> None:
    """Forward both on copies of x, backprop a fixed random projection, compare all grads."""
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = fn(ours, x1), fn(theirs, x2)
    torch.testing.assert_close(y1, y2, **TOL)
    w = torch.randn_like(y1)
    (y1 * w).sum().backward()
    (y2 * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, **TOL)
    for (name, p1), (_, p2) in zip(ours.named_parameters(), theirs.named_parameters(),
                                   strict=True):
        assert p1.grad is not None, name
        torch.testing.assert_close(p1.grad, p2.grad, **TOL, msg=name)


@pytest.mark.parametrize("shape", [(16, 5), (4, 6, 5)], ids=["BC", "BTC"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_nn_linear(shape, bias) -> None:
    ours = make({"type": "linear", "out": 7, "bias": bias}, shape[1:])
    theirs = nn.Linear(5, 7, bias=bias)
    theirs.load_state_dict(ours.state_dict())
    same_grads(ours, theirs, torch.randn(shape), lambda m, x: m(x))
    assert (ours.bias is None) == (not bias)


def test_batchnorm_matches_batchnorm1d_in_train_and_eval() -> None:
    ours = make({"type": "batchnorm", "momentum": 0.2}, (5,))
    theirs = nn.BatchNorm1d(5, momentum=0.2)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-1, 1)
    theirs.load_state_dict(ours.state_dict())
    for _ in range(3):
        same_grads(ours, theirs, torch.randn(16, 5) * 3 + 1, lambda m, x: m(x))
    torch.testing.assert_close(ours.running_mean, theirs.running_mean, **TOL)
    torch.testing.assert_close(ours.running_var, theirs.running_var, **TOL)
    assert ours.num_batches_tracked.item() == 3
    ours.eval(), theirs.eval()
    same_grads(ours, theirs, torch.randn(16, 5), lambda m, x: m(x))


def test_batchnorm_on_sequences_normalises_over_batch_and_time() -> None:
    # in float64: the claim is the formula; float32 sums of 24 rows taken in another order
    # differ by a few units in the last place, more than TOL for some draws
    ours = make("batchnorm", (6, 5)).double()
    theirs = nn.BatchNorm1d(5).double()
    x = torch.randn(4, 6, 5, dtype=torch.float64) * 2 + 3  # (B, T, C)
    same_grads(ours, theirs, x, lambda m, x: m(x) if m is ours else
               m(x.reshape(24, 5)).view(4, 6, 5))
    torch.testing.assert_close(ours.running_mean, theirs.running_mean, **TOL)
    torch.testing.assert_close(ours.running_var, theirs.running_var, **TOL)
    # the hierarchical makemore formula: mean over (0, 1); biased var in forward,
    # unbiased var (n = B*T) in the running estimate
    mean = x.mean((0, 1), keepdim=True)
    var = x.var((0, 1), keepdim=True, unbiased=False)
    fresh = make("batchnorm", (6, 5)).double()
    torch.testing.assert_close(fresh(x), (x - mean) / torch.sqrt(var + 1e-5), **TOL)
    unbiased = x.var((0, 1), unbiased=True)
    torch.testing.assert_close(fresh.running_var, 0.9 * torch.ones(5, dtype=torch.float64)
                               + 0.1 * unbiased, **TOL)
    torch.testing.assert_close(fresh.running_mean, 0.1 * mean.flatten(), **TOL)
    fresh.eval()
    want = (x - fresh.running_mean) / torch.sqrt(fresh.running_var + 1e-5)
    torch.testing.assert_close(fresh(x), want, **TOL)


def test_batchnorm_without_affine_has_no_parameters() -> None:
    assert list(make({"type": "batchnorm", "affine": False}, (5,)).parameters()) == []


@pytest.mark.parametrize("shape", [(8, 5), (3, 4, 5)], ids=["BC", "BTC"])
def test_layernorm_matches_nn_layernorm(shape) -> None:
    ours = make({"type": "layernorm", "eps": 1e-3}, shape[1:])
    theirs = nn.LayerNorm(5, eps=1e-3)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
    theirs.load_state_dict(ours.state_dict())
    same_grads(ours, theirs, torch.randn(shape), lambda m, x: m(x))


@pytest.mark.parametrize("entry, fn", [
    ("tanh", torch.tanh),
    ("relu", torch.relu),
    ("sigmoid", torch.sigmoid),
    ("identity", lambda x: x),
    ({"type": "leaky_relu", "negative_slope": 0.2}, lambda x: F.leaky_relu(x, 0.2)),
    ("gelu", F.gelu),
    ({"type": "gelu", "approximate": "tanh"}, lambda x: F.gelu(x, approximate="tanh")),
    ({"type": "hardtanh", "min_val": -0.5, "max_val": 2.0}, lambda x: F.hardtanh(x, -0.5, 2.0)),
], ids=str)
def test_activation_matches_torch(entry, fn) -> None:
    ours = make(entry, (5,))
    x = torch.randn(8, 3, 5) * 3
    for mode in (True, False):
        ours.train(mode)
        same_grads(ours, nn.Identity(), x, lambda m, x: m(x) if m is ours else fn(x))


@pytest.mark.parametrize("name, gain", [("tanh", 5 / 3), ("relu", math.sqrt(2)),
                                        ("sigmoid", 1.0), ("identity", 1.0),
                                        ("gelu", math.sqrt(2)), ("hardtanh", 5 / 3),
                                        ("leaky_relu", nn.init.calculate_gain("leaky_relu"))])
def test_activations_declare_their_init_gain(name, gain) -> None:
    assert get_registry().layer(name).gain == pytest.approx(gain)


def test_embedding_matches_nn_embedding() -> None:
    ours = make({"type": "embedding", "dim": 4}, (3,), vocab=11)
    theirs = nn.Embedding(11, 4)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randint(0, 11, (64, 3))  # ids repeat: their gradient rows add up
    w = torch.randn(64, 3, 4)
    for mode in (True, False):  # training sums the rows with index_add_, eval is torch's own
        ours.train(mode).zero_grad()
        theirs.zero_grad()
        torch.testing.assert_close(ours(x), theirs(x), **TOL)
        (ours(x) * w).sum().backward()
        (theirs(x) * w).sum().backward()
        torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, **TOL)
    assert ours.weight.std().item() == pytest.approx(1.0, abs=0.5)  # N(0, 1), as torch
    zeros = make({"type": "embedding", "init": "zeros"}, (3,), vocab=11)
    assert zeros.weight.shape == (11, 11) and not zeros.weight.any()  # dim defaults to vocab


def test_flatten_concatenates_positions() -> None:
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(make("flatten", (3, 4))(x), x.reshape(2, 12), **TOL)


def test_flatten_consecutive_merges_n_positions() -> None:
    x = torch.arange(2 * 8 * 3, dtype=torch.float32).view(2, 8, 3)  # (B, T, C)
    out = make({"type": "flatten_consecutive", "n": 2}, (8, 3))(x)
    assert out.shape == (2, 4, 6)
    torch.testing.assert_close(out[:, 1], torch.cat([x[:, 2], x[:, 3]], dim=-1), **TOL)
    last = make({"type": "flatten_consecutive", "n": 8}, (8, 3))(x)
    assert last.shape == (2, 24)  # a time axis of length 1 is dropped
    torch.testing.assert_close(last, x.reshape(2, 24), **TOL)


def test_flatten_consecutive_shapes_and_errors() -> None:
    model = build_model([{"type": "embedding", "dim": 3},
                         {"type": "flatten_consecutive", "n": 2},
                         {"type": "flatten_consecutive", "n": 2}, "linear"], 5, context=4)
    assert model.shapes == [(4, 3), (2, 6), (12,), (5,)]
    with pytest.raises(SpecError) as e:
        build_model([{"type": "embedding", "dim": 3}, {"type": "flatten_consecutive", "n": 2},
                     "flatten", "linear"], 5, context=3)
    assert str(e.value) == (
        "<python>: entry 1 (flatten_consecutive): cannot merge 2 consecutive positions of a "
        "sequence of length 3: 3 is not a multiple of 2; its input (3, 3) comes from entry 0 "
        "(embedding)")


def test_dropout_zeroes_and_rescales_in_training_only() -> None:
    torch.manual_seed(0)
    layer = make({"type": "dropout", "p": 0.25}, (1000,))
    x = torch.ones(20, 1000)
    y = layer.train()(x)
    kept = y != 0
    assert 0.73 < kept.float().mean().item() < 0.77
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.75), **TOL)
    torch.testing.assert_close(layer.eval()(x), x, **TOL)


# -- initialisation ----------------------------------------------------------------------------

FAN_IN = 300


def hidden_linear(*after: Any, **params: Any) -> nn.Module:
    """The first linear (out 1000) of embedding 30 x context 10 -> flatten -> it -> after..."""
    torch.manual_seed(0)
    spec = [{"type": "embedding", "dim": 30}, "flatten", {"type": "linear", "out": 1000,
                                                          **params}, *after, "linear"]
    return build_model(spec, 27, context=10).layers[2]


@pytest.mark.parametrize("after, gain", [(["tanh"], 5 / 3), (["relu"], math.sqrt(2)),
                                         (["batchnorm", "tanh"], 5 / 3), ([], 1.0),
                                         (["sigmoid", "tanh"], 1.0)])
def test_kaiming_auto_gain_comes_from_the_next_nonlinearity(after, gain) -> None:
    w = hidden_linear(*after).weight
    assert w.std().item() == pytest.approx(gain / math.sqrt(FAN_IN), rel=0.02)
    assert w.mean().item() == pytest.approx(0.0, abs=0.05 * gain / math.sqrt(FAN_IN))


@pytest.mark.parametrize("params, std", [
    ({"gain": 1.0}, 1 / math.sqrt(FAN_IN)),
    ({"init": "xavier"}, 5 / 3 * math.sqrt(2 / (FAN_IN + 1000))),
    ({"init": "normal", "gain": 0.02}, 0.02),
    ({"scale": 0.5}, 0.5 * 5 / 3 / math.sqrt(FAN_IN)),
])
def test_init_options(params, std) -> None:
    assert hidden_linear("tanh", **params).weight.std().item() == pytest.approx(std, rel=0.02)


def test_zeros_init_and_bias() -> None:
    layer = hidden_linear("tanh", init="zeros")
    assert not layer.weight.any() and not layer.bias.any()
    assert hidden_linear("tanh", bias=False).bias is None
    assert hidden_linear("tanh").bias.shape == (1000,)


def test_last_linear_outputs_the_vocabulary_scaled_down() -> None:
    torch.manual_seed(0)
    model = build_model([{"type": "embedding", "dim": 30}, "flatten",
                         {"type": "linear", "out": 400}, "tanh", "linear"], 1000, context=10)
    last = model.layers[-1]
    assert (last.in_features, last.out_features) == (400, 1000)
    assert last.weight.std().item() == pytest.approx(0.1 / math.sqrt(400), rel=0.02)
    assert not last.bias.any()
