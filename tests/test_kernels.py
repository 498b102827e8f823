"""zoo.kernels: each kernel is torch's op, its training pass gives the same bits on one thread
and on two, it leaves torch's thread count as it found it, and evaluation is torch's own."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo import LayerType, NoParams, ShapeError, kernels
from zoo.testing import ConformanceWarning, check_layer

TOL = dict(atol=1e-6, rtol=1e-6)


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def training_pass(module: nn.Module, *inputs: torch.Tensor, threads: int) -> list[torch.Tensor]:
    """One forward and backward of a copy on ``threads`` threads: the output, the float
    inputs' gradients, the parameters' gradients and the buffers (running statistics)."""
    torch.set_num_threads(threads)
    twin = copy.deepcopy(module).train()
    given = [x.clone().requires_grad_(x.is_floating_point()) for x in inputs]
    y = twin(*given)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    grads = [x.grad for x in given if x.requires_grad] + [p.grad for p in twin.parameters()]
    return [y.detach(), *grads, *twin.buffers()]


class Call(nn.Module):
    """A kernel function as a module, with the parameters it takes."""

    def __init__(self, kernel: Callable[..., torch.Tensor], *params: nn.Parameter) -> None:
        super().__init__()
        self.kernel, self.params = kernel, nn.ParameterList(params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernel(x, *self.params, training=self.training)


def _conv(c: int) -> nn.Module:
    return nn.Conv1d(c, c, 3)


# (name, module, inputs): torch's kernels split each of these sums across threads
CASES = [
    ("tanh", lambda: Call(kernels.tanh), lambda: (torch.randn(2048, 200) * 2,)),
    ("embedding", lambda: Call(kernels.embedding, nn.Parameter(torch.randn(27, 10))),
     lambda: (torch.randint(0, 27, (2048, 3)),)),
    ("linear", lambda: Call(kernels.linear, nn.Parameter(torch.randn(5, 24)),
                            nn.Parameter(torch.randn(5))), lambda: (torch.randn(2048, 8, 24),)),
    ("thread_stable(BatchNorm1d)", lambda: kernels.thread_stable(nn.BatchNorm1d(200)),
     lambda: (torch.randn(2048, 200) * 3 + 1,)),
    ("thread_stable(LayerNorm)", lambda: kernels.thread_stable(nn.LayerNorm(64)),
     lambda: (torch.randn(512, 8, 64),)),
    ("thread_stable(LayerNorm, backward_only)",
     lambda: kernels.thread_stable(nn.LayerNorm(64), backward_only=True),
     lambda: (torch.randn(512, 8, 64),)),
    ("thread_stable(Conv1d)", lambda: kernels.thread_stable(_conv(8)),
     lambda: (torch.randn(2048, 8, 16),)),
    ("thread_stable(Linear 5)", lambda: kernels.thread_stable(nn.Linear(24, 5)),
     lambda: (torch.randn(2048, 8, 24),)),
]


@pytest.mark.parametrize("name, module, inputs", CASES, ids=[c[0] for c in CASES])
def test_a_training_pass_gives_the_same_bits_on_one_and_two_threads(restore_threads, name,
                                                                    module, inputs) -> None:
    torch.manual_seed(0)
    m, x = module(), inputs()
    one, two = training_pass(m, *x, threads=1), training_pass(m, *x, threads=2)
    assert len(one) == len(two)
    for i, (a, b) in enumerate(zip(one, two, strict=True)):
        assert torch.equal(a, b), f"{name}: result {i} differs between 1 and 2 threads"


def test_tanh_is_torch_tanh() -> None:
    x = torch.randn(64, 50) * 3
    for training in (True, False):
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        y = kernels.tanh(a, training=training)
        torch.testing.assert_close(y, torch.tanh(b), atol=3e-7, rtol=0)
        y.sum().backward()
        torch.tanh(b).sum().backward()
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=0)
    assert torch.equal(kernels.tanh(x, training=False), torch.tanh(x))  # evaluation: torch's
    wide = x.double()
    assert torch.equal(kernels.tanh(wide), torch.tanh(wide))  # float32 only


def test_embedding_and_linear_are_torch_ops() -> None:
    table = torch.randn(11, 4)
    ids = torch.randint(0, 11, (64, 3))  # ids repeat: their gradient rows add up
    weight, bias, x = torch.randn(5, 4), torch.randn(5), torch.randn(64, 3, 4)
    for training in (True, False):
        ours, theirs = table.clone().requires_grad_(), table.clone().requires_grad_()
        y = kernels.embedding(ids, ours, training=training)
        assert torch.equal(y, F.embedding(ids, theirs))
        (y * x).sum().backward()
        (F.embedding(ids, theirs) * x).sum().backward()
        torch.testing.assert_close(ours.grad, theirs.grad, **TOL)
        w1, w2 = weight.clone().requires_grad_(), weight.clone().requires_grad_()
        y = kernels.linear(x, w1, bias, training=training)
        torch.testing.assert_close(y, F.linear(x, w2, bias), **TOL)
        y.square().sum().backward()
        F.linear(x, w2, bias).square().sum().backward()
        torch.testing.assert_close(w1.grad, w2.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("momentum", [0.3, None], ids=["momentum", "cumulative"])
def test_a_thread_stable_module_is_torchs_module_bit_for_bit(restore_threads, momentum) -> None:
    torch.set_num_threads(1)
    theirs = nn.BatchNorm1d(6, momentum=momentum)
    ours = kernels.thread_stable(copy.deepcopy(theirs))
    for step in range(3):
        x = torch.randn(32, 6) * (step + 1)
        a, b = training_pass(ours, x, threads=1), training_pass(theirs, x, threads=1)
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
        ours(x), theirs(x)  # the running statistics, as torch keeps them
    assert ours.num_batches_tracked.item() == theirs.num_batches_tracked.item() == 3
    assert torch.equal(ours.running_var, theirs.running_var)
    ours.eval(), theirs.eval()
    assert torch.equal(ours(x), theirs(x))


def test_thread_stable_keeps_the_module_and_wraps_a_class_forward() -> None:
    conv = _conv(4)
    keys = list(conv.state_dict())
    assert kernels.thread_stable(conv) is conv and type(conv) is nn.Conv1d
    assert list(conv.state_dict()) == keys
    twin = copy.deepcopy(kernels.thread_stable(nn.BatchNorm1d(3)))
    twin(torch.randn(8, 3))
    assert twin.num_batches_tracked.item() == 1  # a copy's forward is the copy's own

    class Conv(nn.Conv1d):
        forward = kernels.thread_stable(nn.Conv1d.forward)

    stable = Conv(4, 4, 3)
    stable.load_state_dict(conv.state_dict())
    x = torch.randn(2, 4, 9)
    assert torch.equal(stable(x), conv(x))
    assert kernels.thread_stable(stable) is stable and stable.forward.__func__ is Conv.forward


class Raising(nn.Module):
    """A batch norm whose forward raises after its one-thread kernel ran."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.norm(x)
        raise RuntimeError("out of cheese")


def test_the_thread_count_is_restored_after_forward_backward_and_errors(restore_threads):
    torch.set_num_threads(2)
    norm = kernels.thread_stable(nn.BatchNorm1d(4))
    x = torch.randn(16, 4, requires_grad=True)
    y = norm(x)
    assert torch.get_num_threads() == 2
    y.square().sum().backward()
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="out of cheese"):
        kernels.thread_stable(Raising())(x)
    assert torch.get_num_threads() == 2
    y = norm(x)
    with torch.no_grad():
        x.mul_(2)  # batch norm saved x for its backward, which then refuses to run
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    norm(torch.randn(16, 4))  # the next thread-stable forward puts the count back
    assert torch.get_num_threads() == 2


def test_evaluation_and_the_exported_graph_are_torchs_ops(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    export = pytest.importorskip("zoo.export.onnx", reason="zoo.export.onnx is not importable")
    from zoo.build import build_model

    spec = [{"type": "embedding", "dim": 6}, "flatten", {"type": "linear", "out": 16},
            "batchnorm", "tanh", "layernorm", "linear"]
    model = build_model(spec, 11, context=3)
    model.train()
    x = torch.randint(0, 11, (32, 3))
    model(x).sum().backward()  # trained: the kernels' training forms ran
    export.export_onnx(model, tmp_path / "model.onnx", vocab=list(".abcdefghij"))
    ops = [n.op_type for n in onnx.load(tmp_path / "model.onnx").graph.node]
    assert ops.count("Gather") == 1 and ops.count("Tanh") == 1 and "Sigmoid" not in ops
    assert "BatchNormalization" not in ops  # folded into the Gemm before it, as torch's is


# -- the conformance kit's threads check ---------------------------------------------------

def _sequence(in_shape, params, place):
    if len(in_shape) != 2:
        raise ShapeError(f"expects [B, T, C], got {in_shape}")
    return in_shape


class CausalConv(nn.Module):
    """A plugin author's causal convolution over time, [B, T, C] -> [B, T, C]."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c, c, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.pad(x.transpose(1, 2), (1, 0))  # (B, C, 1 + T): position t sees t - 1 and t
        return self.conv(h).transpose(1, 2)  # (B, T, C)


THIRD_PARTY = [
    ("conv", lambda s, p, pl: kernels.thread_stable(CausalConv(s[-1])), _sequence, (4, 8)),
    ("five", lambda s, p, pl: kernels.thread_stable(nn.Linear(s[-1], 5)),
     lambda s, p, pl: (*s[:-1], 5), (4, 8)),
    ("norm", lambda s, p, pl: kernels.thread_stable(nn.BatchNorm1d(s[-1])),
     lambda s, p, pl: s, (8,)),
]


@pytest.mark.parametrize("name, build, shape, in_shape", THIRD_PARTY,
                         ids=[c[0] for c in THIRD_PARTY])
def test_a_module_wrapped_with_thread_stable_passes_the_threads_check(name, build, shape,
                                                                      in_shape) -> None:
    layer = LayerType(name=name, doc="a plugin's layer", params=NoParams, shape=shape,
                      build=build)
    report = check_layer(layer, in_shape=in_shape, onnx=False)
    assert "threads" in report.passed and "threads" not in report.skipped


def test_an_unwrapped_module_is_told_to_wrap_it_with_thread_stable() -> None:
    layer = LayerType(name="norm", doc="a plugin's layer", params=NoParams,
                      shape=lambda s, p, pl: s, build=lambda s, p, pl: nn.BatchNorm1d(s[-1]))
    with pytest.warns(ConformanceWarning, match="zoo.kernels.thread_stable"):
        report = check_layer(layer, in_shape=(8,), onnx=False)
    assert report.skipped["threads"].endswith(
        "wrap its module with zoo.kernels.thread_stable (docs/plugins.md#thread-stable-kernels)")
