"""Sharded and pmap forward passes on 8 fake CPU devices against the single-device model and transformers."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx
from helpers import build_reference_checkpoint, optional_import, random_inputs
from jax.sharding import PartitionSpec

from xlm_flax import XLMConfig, XLMModel, XLMWithLMHeadModel, make_mesh, pmap_forward, shard_model
from xlm_flax.errors import InputError
from xlm_flax.sharding.batch import shard_batch
from xlm_flax.sharding.forward import sharded_forward
from xlm_flax.sharding.placement import init_sharded, parameter_shardings
from xlm_flax.sharding.rules import flax_rules, logical_to_spec, resolve_rules

# None without torch: the tests that use it build the PyTorch reference, and skip there.
torch = optional_import("torch")

# Every sharded dimension divides 8: heads 8, mlp 4 * 32 = 128, vocab 48.
DIVISIBLE = dict(vocab_size=48, emb_dim=32, n_heads=8, n_langs=3)
MESHES = [(8, 1), (4, 2), (2, 4), (1, 8)]
LENGTH = 9


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    directory, pt = build_reference_checkpoint(tmp_path_factory.mktemp("par"), **DIVISIBLE)
    ids, mask, langs = random_inputs(pt.config, batch=5, length=LENGTH)  # 5: padded on every data axis > 1
    with torch.no_grad():
        ref = pt(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            langs=torch.from_numpy(langs),
            output_hidden_states=True,
        )
    single = XLMWithLMHeadModel.from_pretrained(directory)
    expected = single(ids, mask, langs, output_hidden_states=True)
    return dict(directory=directory, pt=pt, inputs=(ids, mask, langs), ref=ref, single=single, expected=expected)


def _check_against_references(out, setup):
    ref, expected = setup["ref"], setup["expected"]
    assert out.logits.shape == (5, LENGTH, DIVISIBLE["vocab_size"])
    assert _max_diff(out.logits, ref.logits.numpy()) <= 1e-5
    assert _max_diff(out.logits, expected.logits) <= 1e-5
    assert len(out.hidden_states) == len(ref.hidden_states)
    for mine, theirs, one in zip(out.hidden_states, ref.hidden_states, expected.hidden_states):
        assert mine.shape == (5, LENGTH, DIVISIBLE["emb_dim"])
        assert _max_diff(mine, theirs.numpy()) <= 1e-5
        assert _max_diff(mine, one) <= 1e-5


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_sharded_forward_matches_single_device_and_torch(setup, shape):
    mesh = make_mesh(*shape)
    model = XLMWithLMHeadModel.from_pretrained(setup["directory"], mesh=mesh)
    ids, mask, langs = setup["inputs"]
    out = sharded_forward(model, mesh)(input_ids=ids, attention_mask=mask, langs=langs, output_hidden_states=True)
    _check_against_references(out, setup)

    # Each device holds 1/model of every sharded dimension, and the whole of the replicated ones.
    data, model_size = shape
    q = model.transformer.attentions.q_lin.kernel[...]  # [layers, embed, heads, head_dim] = [3, 32, 8, 4]
    assert {s.data.shape for s in q.addressable_shards} == {(3, 32, 8 // model_size, 4)}
    lin1 = model.transformer.ffns.lin1.kernel[...]  # [layers, embed, mlp]
    assert {s.data.shape for s in lin1.addressable_shards} == {(3, 32, 128 // model_size)}
    words = model.transformer.embeddings.embedding[...]  # [vocab, embed]
    assert {s.data.shape for s in words.addressable_shards} == {(48 // model_size, 32)}
    norm = model.transformer.layer_norm_emb.scale[...]  # [embed]: replicated
    assert {s.data.shape for s in norm.addressable_shards} == {(32,)}
    assert len(q.addressable_shards) == 8
    # The batch is split over data: 5 rows padded to a multiple of `data`, dropped again in the output.
    assert out.logits.shape[0] == 5


def test_labels_padding_is_ignored_by_the_loss(setup):
    mesh = make_mesh(8, 1)
    ids, mask, langs = setup["inputs"]
    labels = np.where(mask == 1, ids, -100)
    model = XLMWithLMHeadModel.from_pretrained(setup["directory"])
    out = sharded_forward(model, mesh)(input_ids=ids, attention_mask=mask, langs=langs, labels=labels)
    # Cross-entropy of transformers' logits over the real (non -100) labels; padding rows carry -100 labels.
    logits = setup["ref"].logits.numpy().astype(np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    valid = labels != -100
    expected = -np.take_along_axis(log_probs, np.where(valid, labels, 0)[..., None], -1)[..., 0][valid].mean()
    assert abs(float(out.loss) - expected) <= 1e-5


def test_pmap_forward_matches_single_device(setup):
    pt = setup["pt"]
    ids, mask, langs = random_inputs(pt.config, batch=16, length=LENGTH, seed=1)
    forward = pmap_forward(setup["single"])
    out = forward(
        input_ids=ids.reshape(8, 2, LENGTH),
        attention_mask=mask.reshape(8, 2, LENGTH),
        langs=langs.reshape(8, 2, LENGTH),
        output_hidden_states=True,
    )
    with torch.no_grad():
        ref = pt(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            langs=torch.from_numpy(langs),
            output_hidden_states=True,
        )
    assert out.logits.shape == (8, 2, LENGTH, 48)
    # pmap's contract: row i of the output lives on local device i.
    assert [s.device for s in out.logits.addressable_shards] == jax.local_devices()
    assert _max_diff(out.logits.reshape(16, LENGTH, 48), ref.logits.numpy()) <= 1e-5
    for mine, theirs in zip(out.hidden_states, ref.hidden_states):
        assert _max_diff(mine.reshape(16, LENGTH, 32), theirs.numpy()) <= 1e-5

    half = forward(input_ids=ids[:8].reshape(4, 2, LENGTH), attention_mask=mask[:8].reshape(4, 2, LENGTH))
    assert half.logits.shape == (4, 2, LENGTH, 48)
    expected = setup["single"](ids[:8], mask[:8]).logits
    assert _max_diff(half.logits.reshape(8, LENGTH, 48), expected) <= 1e-5
    with pytest.raises(InputError, match="between 1 and the 8 local devices"):
        forward(input_ids=np.zeros((9, 1, 3), dtype=np.int32))
    with pytest.raises(InputError, match="leading axes"):
        forward(input_ids=ids.reshape(8, 2, LENGTH), attention_mask=mask.reshape(4, 4, LENGTH))


def test_replication_fallback_and_rule_overrides(tmp_path):
    # Prime sizes (vocab 41, 5 heads) cannot be split over 2: those dimensions stay whole; mlp 120 is split.
    directory, pt = build_reference_checkpoint(tmp_path, architecture="XLMModel", n_langs=3)
    mesh = make_mesh(4, 2)
    model = XLMModel.from_pretrained(directory, mesh=mesh)
    assert model.embeddings.embedding[...].sharding.spec == jax.sharding.PartitionSpec(None, None)
    assert {s.data.shape for s in model.attentions.q_lin.kernel[...].addressable_shards} == {(3, 30, 5, 6)}
    assert {s.data.shape for s in model.ffns.lin1.kernel[...].addressable_shards} == {(3, 30, 60)}
    ids, mask, langs = random_inputs(pt.config, batch=3)
    out = sharded_forward(model, mesh)(input_ids=ids, attention_mask=mask, langs=langs)
    with torch.no_grad():
        ref = pt(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), langs=torch.from_numpy(langs))
    assert _max_diff(out.last_hidden_state, ref.last_hidden_state.numpy()) <= 1e-5

    # Overrides as pairs: keep the FFN whole; every other default stays.
    assert resolve_rules([("mlp", None)])["heads"] == "model"
    shardings = parameter_shardings(model, mesh, [("mlp", None)])
    assert shardings["ffns"]["lin1"]["kernel"].spec == jax.sharding.PartitionSpec(None, None, None)
    shard_model(model, mesh, {"mlp": None})
    assert {s.data.shape for s in model.ffns.lin1.kernel[...].addressable_shards} == {(3, 30, 120)}
    with pytest.raises(InputError, match="axis_rules"):
        resolve_rules({"batch": "dp", "mlp": "tensor"}, jax.make_mesh((4, 2), ("dp", "tp")))
    with pytest.raises(InputError, match="pair"):
        resolve_rules(["mlp"])


@pytest.mark.slow
def test_init_sharded_equals_plain_init(setup):
    config = setup["single"].config
    mesh = make_mesh(2, 4)
    sharded = init_sharded(lambda: XLMWithLMHeadModel(config, rngs=nnx.Rngs(3)), mesh)
    # The same constructor jitted on one device (eager initialisation rounds differently in the last bit).
    plain = nnx.merge(
        *nnx.split(nnx.eval_shape(lambda: XLMWithLMHeadModel(config, rngs=nnx.Rngs(3))))[:1],
        jax.jit(lambda: nnx.state(XLMWithLMHeadModel(config, rngs=nnx.Rngs(3))))(),
    )
    kernel = sharded.transformer.ffns.lin1.kernel[...]
    assert {s.data.shape for s in kernel.addressable_shards} == {(3, 32, 32)}
    for (path, a), (_, b) in zip(nnx.to_flat_state(nnx.state(sharded)), nnx.to_flat_state(nnx.state(plain))):
        np.testing.assert_array_equal(np.asarray(a[...]), np.asarray(b[...]), err_msg=str(path))


def test_mesh_errors_and_padding_helpers():
    assert make_mesh(-1, 2).shape == {"data": 4, "model": 2}
    assert make_mesh(2, -1).shape == {"data": 2, "model": 4}
    assert make_mesh(4, 1, devices=jax.devices()[4:]).devices.ravel().tolist() == jax.devices()[4:]
    with pytest.raises(InputError, match="product is 8"):
        make_mesh(3, 2)
    with pytest.raises(InputError, match="at most one"):
        make_mesh(-1, -1)
    mesh = make_mesh(8, 1)
    placed, batch = shard_batch({"input_ids": np.ones((5, 3), np.int32), "labels": np.ones((5, 3))}, mesh)
    assert batch == 5 and placed["input_ids"].shape == (8, 3)
    assert np.asarray(placed["labels"])[5:].tolist() == [[-100] * 3] * 3
    with pytest.raises(InputError, match="batch size"):
        shard_batch({"input_ids": np.ones((5, 3)), "langs": np.ones((4, 3))}, mesh)


# Each parameter's logical names, written out from the layer definitions (not read from the code under test).
QKV = ("layers", "embed", "heads", "head_dim")
LM_PARTITION_NAMES = {
    "transformer.position_embeddings.embedding": ("position", "embed"),
    "transformer.lang_embeddings.embedding": ("lang", "embed"),
    "transformer.embeddings.embedding": ("vocab", "embed"),
    "transformer.layer_norm_emb.scale": ("embed",),
    "transformer.layer_norm_emb.bias": ("embed",),
    **{f"transformer.attentions.{p}_lin.kernel": QKV for p in "qkv"},
    **{f"transformer.attentions.{p}_lin.bias": ("layers", "heads", "head_dim") for p in "qkv"},
    "transformer.attentions.out_lin.kernel": ("layers", "heads", "head_dim", "embed"),
    "transformer.attentions.out_lin.bias": ("layers", "embed"),
    **{f"transformer.layer_norm{i}.{p}": ("layers", "embed") for i in (1, 2) for p in ("scale", "bias")},
    "transformer.ffns.lin1.kernel": ("layers", "embed", "mlp"),
    "transformer.ffns.lin1.bias": ("layers", "mlp"),
    "transformer.ffns.lin2.kernel": ("layers", "mlp", "embed"),
    "transformer.ffns.lin2.bias": ("layers", "embed"),
    "pred_layer.proj.kernel": ("embed", "vocab"),
    "pred_layer.proj.bias": ("vocab",),
}


def _flat(tree) -> dict:
    return {".".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(tree)}


@pytest.mark.parametrize("build", ["eager", "eval_shape", "jit"])
def test_flax_partition_spec_reads_our_logical_names(build):
    config = XLMConfig(**DIVISIBLE, n_layers=2, tie_word_embeddings=False)

    def factory():
        return XLMWithLMHeadModel(config, rngs=nnx.Rngs(0))

    if build == "eager":
        model = factory()
    elif build == "eval_shape":
        model = nnx.eval_shape(factory)
    else:  # built under jit, as `init_sharded` does: the metadata survives
        graphdef, _ = nnx.split(nnx.eval_shape(factory))
        model = nnx.merge(graphdef, jax.jit(lambda: nnx.state(factory()))())
    expected = {name: PartitionSpec(*axes) for name, axes in LM_PARTITION_NAMES.items()}
    assert _flat(nnx.get_partition_spec(nnx.state(model))) == expected
    if build == "eager":  # running the scan strips the layer axis inside its body and puts it back, once
        model(np.ones((1, 4), np.int32))
        assert _flat(nnx.get_partition_spec(nnx.state(model))) == expected


@pytest.mark.parametrize("shape", [(4, 2), (2, 4), (1, 8)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_maxtext_style_rules_give_our_shardings(shape):
    """Flax's own machinery (`nnx.logical_axis_rules` + `nnx.get_named_sharding`) reads our model as we do where
    every sharded dimension divides its mesh axis."""
    config = XLMConfig(**DIVISIBLE, n_layers=2, tie_word_embeddings=False)
    state = nnx.state(nnx.eval_shape(lambda: XLMWithLMHeadModel(config, rngs=nnx.Rngs(0))))
    mesh = make_mesh(*shape)
    with nnx.logical_axis_rules(flax_rules()):
        theirs = _flat(nnx.get_named_sharding(state, mesh))
    ours = {".".join(map(str, p)): s for p, s in jax.tree_util.tree_leaves_with_path(parameter_shardings(state, mesh))}
    ours = {name.replace("['", "").replace("']", ""): s for name, s in ours.items()}
    assert set(theirs) == set(ours) == set(LM_PARTITION_NAMES)
    assert theirs == ours
    assert theirs["transformer.attentions.q_lin.kernel"].spec == PartitionSpec(None, None, "model", None)
    assert theirs["pred_layer.proj.kernel"].spec == PartitionSpec(None, "model")


def test_rule_precedence_and_mesh_axis_used_once():
    mesh = make_mesh(4, 2)
    # Heads and embed both asking for `model`: by default heads get it; a rule given by the caller comes first.
    assert logical_to_spec(QKV, mesh=mesh) == PartitionSpec(None, None, "model", None)
    assert logical_to_spec(QKV, {"embed": "model"}, mesh) == PartitionSpec(None, "model", None, None)
    assert logical_to_spec(QKV, [("layers", "data"), ("head_dim", "model")], mesh) == PartitionSpec(
        "data", None, None, "model"
    )
    # A mesh axis of size 1 is dropped; names without a rule stay unsharded.
    assert logical_to_spec(("vocab", "embed"), mesh=make_mesh(8, 1)) == PartitionSpec(None, None)
    assert logical_to_spec(("unknown", None)) == PartitionSpec(None, None)
    with pytest.raises(InputError, match="mapping"):
        resolve_rules("mlp")
