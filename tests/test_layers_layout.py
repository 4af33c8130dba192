"""The three layer layouts (`XLMModel(layers="scan" | "unrolled" | "per_layer")`) against transformers' PyTorch XLM
and against each other on the same weights; loading, saving, sharding and partition specs of the per-layer layout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import build_reference_checkpoint, optional_import, random_inputs

from xlm_flax import XLMConfig, XLMModel, XLMWithLMHeadModel, make_mesh
from xlm_flax.errors import ConfigError
from xlm_flax.model.layers import logical_axes
from xlm_flax.model.stack import is_unstacked, stacked_parameters, stacked_path, unstack_layers
from xlm_flax.sharding.forward import sharded_forward
from xlm_flax.sharding.placement import init_sharded, shard_model

# None without torch: the tests that use it build the PyTorch reference (the `models` fixture), and skip there (build_reference_checkpoint skips).
torch = optional_import("torch")

FP32_TOL = 1e-5
# Between our layouts: the same arithmetic, fused differently by XLA (measured up to ~1e-7).
LAYOUT_TOL = 1e-6
LAYOUTS = ("scan", "unrolled", "per_layer")


@pytest.fixture(scope="module", params=["padding", "causal"])
def models(request, tmp_path_factory):
    """(checkpoint directory, PyTorch LM model, {layout: our LM model}) on the same weights."""
    overrides = dict(n_langs=3, causal=request.param == "causal")
    directory, torch_model = build_reference_checkpoint(tmp_path_factory.mktemp(request.param), **overrides)
    ours = {layout: XLMWithLMHeadModel.from_pretrained(directory, layers=layout) for layout in LAYOUTS}
    return directory, torch_model, ours


def _inputs(config):
    ids, mask, langs = random_inputs(config, batch=4, length=11)
    mask[3] = 0  # a row with nothing to attend to
    return ids, mask, langs


def test_layout(models):
    _, _, ours = models
    stacked, per_layer = ours["scan"], ours["per_layer"]
    n = stacked.config.n_layers
    assert not is_unstacked(stacked) and not is_unstacked(ours["unrolled"]) and is_unstacked(per_layer)
    assert [m.transformer.layer_layout for m in ours.values()] == list(LAYOUTS)
    assert len(per_layer.transformer.ffns) == n
    kernel = per_layer.transformer.attentions[0].q_lin.kernel
    assert kernel.shape == stacked.transformer.attentions.q_lin.kernel.shape[1:]
    assert logical_axes(kernel) == ("embed", "heads", "head_dim")
    assert logical_axes(stacked.transformer.attentions.q_lin.kernel) == ("layers", "embed", "heads", "head_dim")
    # Loaded straight into each layer: row i of the stacked checkpoint tensor is layer i's own array.
    for i in range(n):
        np.testing.assert_array_equal(
            np.asarray(per_layer.transformer.ffns[i].lin2.kernel[...]),
            np.asarray(stacked.transformer.ffns.lin2.kernel[...][i]),
        )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("output_attentions", [False, True])
def test_matches_pytorch_and_the_other_layouts(models, layout, output_attentions):
    _, torch_model, ours = models
    ids, mask, langs = _inputs(torch_model.config)
    with torch.no_grad():
        expected = torch_model(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            langs=torch.from_numpy(langs),
            output_hidden_states=True,
            output_attentions=output_attentions,
        )
    graphdef, state = nnx.split(ours[layout])

    def run(state, *args):
        return nnx.merge(graphdef, state)(*args, output_hidden_states=True, output_attentions=output_attentions)

    scanned = ours["scan"](*map(jnp.asarray, (ids, mask, langs)), output_hidden_states=True)
    for out in (run(state, *map(jnp.asarray, (ids, mask, langs))), jax.jit(run)(state, ids, mask, langs)):
        assert np.max(np.abs(np.asarray(out.logits) - expected.logits.numpy())) <= FP32_TOL
        assert np.max(np.abs(np.asarray(out.logits) - np.asarray(scanned.logits))) <= LAYOUT_TOL
        assert len(out.hidden_states) == len(expected.hidden_states)
        for got, want, scan in zip(out.hidden_states, expected.hidden_states, scanned.hidden_states, strict=True):
            assert np.max(np.abs(np.asarray(got) - want.numpy())) <= FP32_TOL
            assert np.max(np.abs(np.asarray(got) - np.asarray(scan))) <= LAYOUT_TOL
        if output_attentions:
            for got, want in zip(out.attentions, expected.attentions, strict=True):
                assert np.max(np.abs(np.asarray(got) - want.numpy())) <= FP32_TOL
        else:
            assert out.attentions is None


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["unrolled", "per_layer"])
def test_dropout_equals_scanned_stack(models, layout):
    """Training-mode dropout draws the same per-layer keys in every layout, so all give the same output."""
    _, _, ours = models
    stacked = ours["scan"]
    ids, mask, langs = (jnp.asarray(a) for a in _inputs(stacked.config))
    outs = [
        m.transformer(ids, mask, langs, deterministic=False, rngs=nnx.Rngs(dropout=7)).last_hidden_state
        for m in (stacked, ours[layout])
    ]
    assert not np.allclose(outs[0], stacked.transformer(ids, mask, langs).last_hidden_state)  # dropout is on
    np.testing.assert_allclose(np.asarray(outs[0]), np.asarray(outs[1]), rtol=0, atol=LAYOUT_TOL)


@pytest.mark.slow
def test_remat_per_layer_gives_the_same_gradients():
    config = XLMConfig(vocab_size=41, emb_dim=30, n_layers=2, n_heads=5)
    ids = jnp.asarray(random_inputs(config, batch=2, length=5)[0])

    def grads(remat):
        model = XLMModel(config, rngs=nnx.Rngs(0), layers="per_layer", remat=remat)
        graphdef, state = nnx.split(model)
        loss = lambda s: jnp.sum(nnx.merge(graphdef, s)(ids).last_hidden_state ** 2)  # noqa: E731
        return jax.jit(jax.grad(loss))(state)

    plain, remat = grads(False), grads(True)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    assert any(float(jnp.max(jnp.abs(a))) > 0 for a in jax.tree.leaves(plain))


def test_fresh_models_of_every_layout_hold_the_same_weights():
    config = XLMConfig(vocab_size=41, emb_dim=30, n_layers=3, n_heads=5)
    stacked = XLMWithLMHeadModel(config, rngs=nnx.Rngs(4))
    per_layer = XLMWithLMHeadModel(config, rngs=nnx.Rngs(4), layers="per_layer")
    mine = stacked_parameters(per_layer)
    theirs = {".".join(map(str, p)): v[...] for p, v in nnx.to_flat_state(nnx.state(stacked, nnx.Param))}
    assert list(mine) == list(theirs)
    for name, array in theirs.items():
        np.testing.assert_array_equal(np.asarray(mine[name]), np.asarray(array), err_msg=name)


def test_stacked_parameters():
    config = XLMConfig(vocab_size=41, emb_dim=30, n_layers=3, n_heads=5)
    model = XLMModel(config, rngs=nnx.Rngs(0), layers="per_layer")
    params = stacked_parameters(model)
    assert "attentions.q_lin.kernel" in params and "attentions.0.q_lin.kernel" not in params
    assert params["attentions.q_lin.kernel"].shape == (3, 30, 5, 6)
    for i in range(3):  # row i is layer i, stacked from the layer's own array
        np.testing.assert_array_equal(
            np.asarray(params["ffns.lin1.kernel"][i]), np.asarray(model.ffns[i].lin1.kernel[...])
        )
    assert params["embeddings.embedding"] is model.embeddings.embedding[...]  # not a layer: the array itself
    # A stacked model's parameters are its own arrays.
    stacked = XLMModel(config, rngs=nnx.Rngs(0))
    assert stacked_parameters(stacked)["ffns.lin1.kernel"] is stacked.ffns.lin1.kernel[...]
    with pytest.raises(KeyError):
        params["attentions.0.q_lin.kernel"]
    assert stacked_path(("transformer", "ffns", 2, "lin1", "kernel")) == (("transformer", "ffns", "lin1", "kernel"), 2)
    assert stacked_path(("transformer", "embeddings", "embedding")) == (
        ("transformer", "embeddings", "embedding"),
        None,
    )


def test_per_layer_partition_specs_have_no_layer_axis():
    config = XLMConfig(vocab_size=41, emb_dim=30, n_layers=2, n_heads=5, n_langs=3)
    model = nnx.eval_shape(lambda: XLMWithLMHeadModel(config, rngs=nnx.Rngs(0), layers="per_layer"))
    specs = {
        ".".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(nnx.get_partition_spec(nnx.state(model)))
    }
    assert specs["transformer.attentions.1.q_lin.kernel"] == jax.sharding.PartitionSpec("embed", "heads", "head_dim")
    assert specs["transformer.ffns.0.lin1.kernel"] == jax.sharding.PartitionSpec("embed", "mlp")
    assert specs["transformer.layer_norm2.1.scale"] == jax.sharding.PartitionSpec("embed")
    assert not any("layers" in spec for spec in specs.values())
    assert len(specs) == len(list(nnx.to_flat_state(nnx.state(model, nnx.Param))))


@pytest.mark.parametrize("format", ["flax", "pytorch"])
def test_saving_a_per_layer_model_writes_the_stacked_checkpoint(models, tmp_path, format):
    """A per-layer model writes, byte for byte, the checkpoint the stacked model writes, and loads back."""
    _, torch_model, ours = models
    for layout in ("scan", "per_layer"):
        ours[layout].save_pretrained(tmp_path / layout, format=format)
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "per_layer" / name).read_bytes() == (tmp_path / "scan" / name).read_bytes(), name
    reloaded = XLMWithLMHeadModel.from_pretrained(tmp_path / "per_layer", layers="per_layer")
    assert is_unstacked(reloaded)
    ids, mask, langs = (jnp.asarray(a) for a in _inputs(torch_model.config))
    np.testing.assert_array_equal(
        np.asarray(reloaded(ids, mask, langs).logits), np.asarray(ours["per_layer"](ids, mask, langs).logits)
    )


@pytest.mark.slow
def test_per_layer_model_sharded(models):
    directory, torch_model, ours = models
    mesh = make_mesh(4, 2)
    model = XLMWithLMHeadModel.from_pretrained(directory, layers="per_layer", mesh=mesh)
    # vocab 41 and 5 heads do not divide over 2 and stay whole; mlp 120 is split. No layers axis.
    assert {s.data.shape for s in model.transformer.ffns[1].lin1.kernel[...].addressable_shards} == {(30, 60)}
    assert {s.data.shape for s in model.transformer.attentions[0].q_lin.kernel[...].addressable_shards} == {(30, 5, 6)}
    ids, mask, langs = _inputs(torch_model.config)
    out = sharded_forward(model, mesh)(input_ids=ids, attention_mask=mask, langs=langs)
    with torch.no_grad():
        ref = torch_model(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), langs=torch.from_numpy(langs)
        )
    assert np.max(np.abs(np.asarray(out.logits) - ref.logits.numpy())) <= FP32_TOL
    shard_model(ours["per_layer"], make_mesh(2, 4))  # a model built unsharded, placed afterwards
    sharded = ours["per_layer"].transformer.ffns[0].lin1.kernel[...]
    assert {s.data.shape for s in sharded.addressable_shards} == {(30, 30)}
    fresh = init_sharded(lambda: XLMModel(ours["scan"].config, rngs=nnx.Rngs(0), layers="per_layer"), mesh)
    assert {s.data.shape for s in fresh.ffns[2].lin2.kernel[...].addressable_shards} == {(60, 30)}


def test_invalid_layout_and_deprecated_aliases(models):
    config = XLMConfig(vocab_size=41, emb_dim=30, n_layers=2, n_heads=5)
    with pytest.raises(ConfigError, match=r"layers='stacked': use one of 'scan', 'unrolled', 'per_layer'"):
        XLMModel(config, rngs=nnx.Rngs(0), layers="stacked")
    with pytest.raises(ConfigError, match="give only layers="):
        XLMModel(config, rngs=nnx.Rngs(0), layers="per_layer", scan_layers=False)
    with pytest.warns(DeprecationWarning, match="layers='unrolled'") as record:
        model = XLMWithLMHeadModel(config, rngs=nnx.Rngs(0), scan_layers=False)
    assert model.transformer.layer_layout == "unrolled"
    assert record[0].filename == __file__  # names the caller's line, not Flax's metaclass or our constructors
    with pytest.warns(DeprecationWarning, match="layers='scan'"):
        assert XLMModel(config, rngs=nnx.Rngs(0), scan_layers=True).layer_layout == "scan"

    # unstack_layers: converts in place, the same outputs as the per-layer layout; idempotent.
    directory, torch_model, ours = models
    model = XLMWithLMHeadModel.from_pretrained(directory)
    with pytest.warns(DeprecationWarning, match='layers="per_layer"'):
        assert unstack_layers(model) is model
    assert is_unstacked(model) and model.transformer.layer_layout == "per_layer"
    assert logical_axes(model.transformer.ffns[0].lin1.kernel) == ("embed", "mlp")
    converted, loaded = stacked_parameters(model), stacked_parameters(ours["per_layer"])
    for name in loaded:
        np.testing.assert_array_equal(np.asarray(converted[name]), np.asarray(loaded[name]), err_msg=name)
    ids, mask, langs = (jnp.asarray(a) for a in _inputs(torch_model.config))
    np.testing.assert_allclose(
        np.asarray(model(ids, mask, langs).logits),
        np.asarray(ours["per_layer"](ids, mask, langs).logits),
        rtol=0,
        atol=LAYOUT_TOL,
    )
    with pytest.warns(DeprecationWarning):
        assert unstack_layers(model) is model
    with pytest.raises(TypeError, match="no XLM layer stack"), pytest.warns(DeprecationWarning):
        unstack_layers(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
