"""Residual blocks in specs (x + f(x)), the sequence layers in models, and their bad specs."""

from __future__ import annotations

import json

import pytest
import torch
from matrix import assert_clean_error, snapshot

from zoo.build import build_model
from zoo.errors import SpecError
from zoo.report import summary
from zoo.spec import MAX_ENTRIES, MAX_NESTING, expand, load_spec

MLP_BLOCK = {"residual": ["rmsnorm", {"type": "linear", "out": 16}, "gelu",
                          {"type": "linear", "out": 8}]}
ATTN_BLOCK = {"residual": ["layernorm", {"type": "causal_self_attention", "heads": 2}]}
SMALL = [{"type": "embedding", "dim": 8}, "position_embedding",
         {"repeat": 2, "layers": [ATTN_BLOCK, MLP_BLOCK]}, "rmsnorm", "last", "linear"]


def test_a_residual_block_adds_its_input_to_its_output() -> None:
    torch.manual_seed(0)
    model = build_model([{"type": "embedding", "dim": 8}, "last", MLP_BLOCK, "linear"], 27,
                        context=3)
    x = torch.randint(0, 27, (5, 3))  # (B, T)
    emb, last, norm, up, act, down, head = model.layers
    with torch.no_grad():
        h = last(emb(x))  # (B, 8)
        want = head(h + down(act(up(norm(h)))))  # (B, V)
        assert torch.allclose(model(x), want, atol=1e-6)
        assert not torch.allclose(model(x), head(down(act(up(norm(h))))), atol=1e-3)


def test_blocks_nest_with_repeat_and_inside_each_other() -> None:
    inner = {"residual": [{"type": "linear", "out": 8}, "tanh"]}
    spec = [{"type": "embedding", "dim": 8}, "last",
            {"residual": [inner, {"repeat": 2, "layers": [inner]}]}, "linear"]
    entries = expand(load_spec(spec))
    assert [e.blocks for e in entries][2:4] == [("entry 2 (residual)", "entry 2.0 (residual)")] * 2
    assert entries[4].blocks == ("entry 2 (residual)",
                                 "entry 2.1.0 (residual, repeat 1 of 2)")
    torch.manual_seed(0)
    model = build_model(spec, 27, context=3)
    x = torch.randint(0, 27, (4, 3))  # (B, T)
    emb, last, *inside, head = model.layers
    with torch.no_grad():
        h = last(emb(x))  # (B, 8)
        a = h + inside[1](inside[0](h))
        b = a + inside[3](inside[2](a))
        c = b + inside[5](inside[4](b))
        assert torch.allclose(model(x), head(h + c), atol=1e-6)


def test_the_same_block_reads_alike_from_toml_json_and_python(tmp_path) -> None:
    toml = tmp_path / "t.toml"
    toml.write_text('[model]\ncontext = 4\nlayers = [{type = "embedding", dim = 8}, '
                    '"position_embedding", {repeat = 2, layers = [{residual = ["layernorm", '
                    '{type = "causal_self_attention", heads = 2}]}, {residual = ["rmsnorm", '
                    '{type = "linear", out = 16}, "gelu", {type = "linear", out = 8}]}]}, '
                    '"rmsnorm", "last", "linear"]\n')
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"model": {"context": 4, "layers": SMALL}}))
    models = []
    for spec in (str(toml), str(path), SMALL):
        torch.manual_seed(1)
        models.append(build_model(spec, 27, context=4))
    x = torch.randint(0, 27, (3, 4))  # (B, T)
    assert torch.equal(models[0](x), models[1](x)) and torch.equal(models[1](x), models[2](x))


def test_the_summary_indents_a_block_and_its_counts_add_up() -> None:
    model = build_model(SMALL, 27, context=4)
    rows = model.summary()
    blocks = [r for r in rows if r.layer == "residual"]
    assert len(blocks) == 4 and all(r.depth == 0 for r in blocks)
    for i, row in enumerate(rows):
        if row.layer == "residual":
            inner = []
            for r in rows[i + 1:]:
                if r.depth <= row.depth:
                    break
                inner.append(r)
            assert [r.depth for r in inner] == [1] * len(inner) and len(inner) in (2, 4)
            assert row.params == sum(r.params for r in inner) > 0
    assert sum(r.params for r in rows if r.depth == 0) == model.num_parameters()
    text = summary(model, "small")
    assert "\nentry 2.0 (residual, repeat 1 of 2)  " in text
    assert "\n  entry 2.0.1 (causal_self_attention, repeat 1 of 2)  " in text


def test_weights_keep_flat_names_and_round_trip() -> None:
    model = build_model(SMALL, 27, context=4)
    names = list(model.state_dict())
    assert all(n.startswith("layers.") for n in names)
    other = build_model(SMALL, 27, context=4)
    other.load_state_dict(model.state_dict())
    x = torch.randint(0, 27, (3, 4))  # (B, T)
    assert torch.equal(model.eval()(x), other.eval()(x))


def test_transformer_preset_builds_and_is_causal_where_it_reads() -> None:
    model = build_model("transformer", 27).eval()
    t = model.context
    x = torch.randint(0, 27, (6, t))  # (B, T)
    with torch.no_grad():
        out = model(x)  # (B, V)
        assert out.shape == (6, 27) and torch.isfinite(out).all()
        y = x.clone()
        y[:, 0] = (y[:, 0] + 1) % 27  # the first character is part of what `last` sees
        assert not torch.allclose(model(y), out)


@pytest.mark.parametrize("layers, fragments", [
    pytest.param('[{type = "embedding", dim = 8}, "last", {residual = []}, "linear"]',
                 ["entry 2 (residual): key 'residual': expected a non-empty list of layer "
                  "entries, got list []"], id="empty-residual"),
    pytest.param('[{type = "embedding", dim = 8}, "last", {residual = [{type = "linear", '
                 'out = 4}]}, "linear"]',
                 ["entry 2 (residual): its layers change the shape from (8,) to (4,)"],
                 id="shape-changing-residual"),
    pytest.param('[{type = "embedding", dim = 6}, {type = "causal_self_attention", heads = 4}, '
                 '"last", "linear"]',
                 ["entry 1 (causal_self_attention): key 'heads': 4 heads do not divide the "
                  "feature size 6", "its input (3, 6) comes from entry 0 (embedding)"],
                 id="heads-do-not-divide"),
    pytest.param('[{type = "embedding", dim = 6}, "flatten", "last", "linear"]',
                 ["entry 2 (last): reduces over time, so it expects a sequence [B, T, C], got "
                  "features of shape (18,)"], id="reduction-on-features"),
    pytest.param('[{type = "embedding", dim = 6}, "flatten", "mean", "linear"]',
                 ["entry 2 (mean): reduces over time"], id="mean-on-features"),
    pytest.param('[{type = "embedding", dim = 8}, "last", {residual = ["tanh"], layers = 2}, '
                 '"linear"]',
                 ["entry 2 (residual): unknown key 'layers'"], id="residual-unknown-key"),
    pytest.param('[{residual = ["embedding"]}, "last", "linear"]',
                 ["entry 0 (residual) would add token ids to features"], id="residual-on-tokens"),
    pytest.param('[{type = "embedding", dim = 8}, {type = "linear", out = 8, gain = -1.0}, '
                 '"flatten", "linear"]',
                 ["entry 1 (linear): key 'gain'", "got float -1.0"], id="negative-gain"),
])
def test_bad_sequence_specs_give_one_line_and_exit_2(cli, tmp_path, layers, fragments) -> None:
    path = tmp_path / "s.toml"
    path.write_text(f"[model]\ncontext = 3\nlayers = {layers}\n")
    before = snapshot(tmp_path)
    assert_clean_error(cli("summary", str(path)), "s.toml", *fragments)
    assert snapshot(tmp_path) == before


def test_the_layer_limit_is_exact() -> None:
    body = ["tanh"] * 10
    at_limit = [{"type": "embedding", "dim": 2}, "flatten",
                {"repeat": (MAX_ENTRIES - 3) // 10, "layers": body}] + ["tanh"] * (
                    (MAX_ENTRIES - 3) % 10) + ["linear"]
    assert len(expand(load_spec(at_limit))) == MAX_ENTRIES
    with pytest.raises(SpecError, match=f"more than {MAX_ENTRIES:,} layers"):
        expand(load_spec([*at_limit[:-1], "tanh", "linear"]))


def test_negative_gain_is_refused_and_zero_gain_is_all_zeros() -> None:
    with pytest.raises(SpecError, match="key 'gain': expected a finite number or one of 'auto'"):
        build_model([{"type": "embedding", "dim": 4}, "flatten",
                     {"type": "linear", "out": 5, "gain": -2.0}, "linear"], 27)
    model = build_model([{"type": "embedding", "dim": 4}, "flatten",
                         {"type": "linear", "out": 5, "gain": 0.0}, "linear"], 27)
    assert not model.layers[2].weight.any()


def _nested(depth: int) -> dict:
    entry: dict = {"type": "linear", "out": 8}
    for _ in range(depth):
        entry = {"residual": [entry]}
    return entry


@pytest.mark.parametrize("depth", [MAX_NESTING, MAX_NESTING + 1, 250])
def test_training_takes_every_depth_the_summary_takes(depth: int, cli, tmp_path) -> None:
    spec = tmp_path / "deep.json"
    spec.write_text(json.dumps({"model": {"context": 3, "layers": [
        {"type": "embedding", "dim": 8}, "flatten", {"type": "linear", "out": 8},
        _nested(depth), "linear"]}, "train": {"steps": 3, "batch_size": 8, "eval_every": 3}}),
        encoding="utf-8")
    run = tmp_path / "run"
    shown, trained = cli("summary", str(spec)), cli("train", str(spec), "--out", str(run),
                                                    "--samples", "0")
    if depth <= MAX_NESTING:
        assert shown.exit_code == 0 and trained.exit_code == 0, trained.output
        assert json.loads((run / "meta.json").read_text())["status"] == "finished"
    else:
        message = f"blocks nested more than {MAX_NESTING} deep; the spec is refused"
        assert assert_clean_error(shown, message) == assert_clean_error(trained, message)
        assert not run.exists()
