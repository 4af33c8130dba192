"""A mesh of the user's own (`jax.make_mesh`, Explicit or Auto axes, axes named `dp`/`tp`) on 8 fake CPU devices,
against the single-device model: sharded forward, `shard_model`, `from_pretrained(mesh=)`, `FillMask`, `Embedder`
and training."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx
from helpers import build_test_tokenizer
from jax.sharding import AxisType, PartitionSpec

from xlm_flax import Embedder, FillMask, XLMConfig, XLMWithLMHeadModel, axis_rules, shard_model, sharded_forward
from xlm_flax.errors import InputError
from xlm_flax.sharding.placement import init_sharded

# The rules the issue asks for, written out (not from axis_rules, which is checked against it).
RULES = {"batch": "dp", "heads": "tp", "mlp": "tp", "vocab": "tp"}
AXIS_TYPES = {"explicit": AxisType.Explicit, "auto": AxisType.Auto}


def _mesh(kind: str) -> jax.sharding.Mesh:
    if kind == "explicit":
        return jax.make_mesh((4, 2), ("dp", "tp"))  # Explicit is jax.make_mesh's default
    return jax.make_mesh((4, 2), ("dp", "tp"), axis_types=(AxisType.Auto, AxisType.Auto))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("foreign")
    vocab = build_test_tokenizer(directory)
    # 8 heads and 4 * 32 = 128 FFN units divide the tp axis; the vocabulary is padded to an even size.
    config = XLMConfig(vocab_size=vocab + vocab % 2, emb_dim=32, n_heads=8, n_layers=2, n_langs=1, dropout=0.0)
    model = XLMWithLMHeadModel(config, rngs=nnx.Rngs(0))
    model.save_pretrained(directory)
    rng = np.random.default_rng(0)
    ids = rng.integers(6, vocab, size=(5, 7)).astype(np.int32)  # 5 rows: padded to 8 over dp=4
    mask = np.ones_like(ids)
    mask[3, 4:] = 0
    return dict(directory=str(directory), model=model, ids=ids, mask=mask)


def _diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def test_axis_rules_is_the_issue_table():
    assert axis_rules(data="dp", model="tp") == RULES


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["explicit", "auto"])
def test_sharded_forward_on_a_foreign_mesh_matches_one_device(checkpoint, kind):
    mesh = _mesh(kind)
    assert mesh.axis_types == (AXIS_TYPES[kind],) * 2
    ids, mask = checkpoint["ids"], checkpoint["mask"]
    expected = checkpoint["model"](ids, mask, output_hidden_states=True)

    model = XLMWithLMHeadModel.from_pretrained(checkpoint["directory"], mesh=mesh, rules=RULES)
    q = model.transformer.attentions.q_lin.kernel[...]  # [layers, embed, heads, head_dim]
    assert q.sharding.mesh == mesh and q.sharding.spec == PartitionSpec(None, None, "tp", None)
    assert {s.data.shape for s in q.addressable_shards} == {(2, 32, 4, 4)}

    out = sharded_forward(model, mesh, RULES)(ids, attention_mask=mask, output_hidden_states=True)
    assert out.logits.shape == expected.logits.shape
    assert _diff(out.logits, expected.logits) <= 1e-5
    for mine, one in zip(out.hidden_states, expected.hidden_states, strict=True):
        assert _diff(mine, one) <= 1e-5
    assert out.logits.sharding.mesh == mesh  # handed back on the caller's mesh

    # A batch that divides dp stays split over it; shard_model and init_sharded place on the caller's mesh too.
    out = sharded_forward(model, mesh, RULES)(ids[:4], attention_mask=mask[:4])
    assert out.logits.sharding.spec[0] == "dp"
    assert _diff(out.logits, expected.logits[:4]) <= 1e-5
    placed = shard_model(XLMWithLMHeadModel(model.config, rngs=nnx.Rngs(0)), mesh, RULES)
    assert placed.transformer.ffns.lin1.kernel[...].sharding.spec == PartitionSpec(None, None, "tp")
    fresh = init_sharded(lambda: XLMWithLMHeadModel(model.config, rngs=nnx.Rngs(0)), mesh, RULES)
    lin1 = fresh.transformer.ffns.lin1.kernel[...]
    assert lin1.sharding.mesh == mesh
    assert _diff(lin1, checkpoint["model"].transformer.ffns.lin1.kernel[...]) <= 1e-6  # same draws, another program


def test_rules_that_do_not_fit_the_mesh_say_what_to_pass(checkpoint):
    mesh = _mesh("explicit")
    hint = r"axis_rules\(data='dp', model='tp'\)"
    with pytest.raises(InputError, match=hint):
        sharded_forward(checkpoint["model"], mesh)
    with pytest.raises(InputError, match=hint):
        XLMWithLMHeadModel.from_pretrained(checkpoint["directory"], mesh=mesh)
    with pytest.raises(InputError, match=hint):  # was a bare KeyError: 'data'
        Embedder.from_pretrained(checkpoint["directory"], mesh=mesh)
    with pytest.raises(InputError, match=hint):  # half the rules: heads etc. still ask for `model`
        shard_model(checkpoint["model"], mesh, {"batch": "dp"})
    with pytest.raises(InputError, match="mesh axis is an axis name"):
        shard_model(checkpoint["model"], mesh, {"batch": 4})
    # A 1-D data-parallel mesh needs no rules: the weights are replicated, the batch split.
    one_d = jax.make_mesh((8,), ("data",))
    out = sharded_forward(checkpoint["model"], one_d)(checkpoint["ids"])
    assert _diff(out.logits, checkpoint["model"](checkpoint["ids"]).logits) <= 1e-5


def test_fill_mask_and_embedder_on_a_foreign_explicit_mesh(checkpoint):
    mesh = _mesh("explicit")
    texts = ["the cat sat on the <special1> .", "a dog <special1> .", "<special1> paris", "the sun", "big city ."]
    one = FillMask.from_pretrained(checkpoint["directory"])
    many = FillMask.from_pretrained(checkpoint["directory"], mesh=mesh, rules=RULES)
    for a, b in zip(one(texts[:3], top_k=3), many(texts[:3], top_k=3), strict=True):
        assert [p["token"] for p in a] == [p["token"] for p in b]
        np.testing.assert_allclose([p["score"] for p in a], [p["score"] for p in b], atol=1e-5)

    vectors = Embedder.from_pretrained(checkpoint["directory"]).encode(texts)
    sharded = Embedder(many.model, many.tokenizer, mesh=mesh, rules=RULES)
    assert sharded.model.embeddings.embedding[...].sharding.mesh == mesh
    assert _diff(sharded.encode(texts), vectors) <= 1e-5


@pytest.mark.slow
def test_training_on_a_foreign_explicit_mesh(checkpoint, tmp_path):
    from xlm_flax.training.config import TrainConfig
    from xlm_flax.training.trainer import Trainer

    text = tmp_path / "train.txt"
    text.write_text("the cat sat on the mat .\na dog runs home .\n" * 8)
    config = checkpoint["model"].config.replace(dropout=0.0, attention_dropout=0.0)  # no randomness but masking

    def run(**mesh_args) -> tuple[float, Trainer]:
        train = TrainConfig(
            model=checkpoint["directory"], train_file=str(text), output_dir=str(tmp_path / str(len(mesh_args))),
            steps=1, batch_size=8, buckets=(16,), warmup_steps=0, log_every=100, mesh_shape=(1, 1),
        )  # fmt: skip
        trainer = Trainer(train, model=XLMWithLMHeadModel(config, rngs=nnx.Rngs(0)), log=lambda _: None, **mesh_args)
        return trainer.train()[0][1], trainer

    one, _ = run()
    loss, trainer = run(mesh=_mesh("explicit"), rules=RULES)
    assert abs(loss - one) <= 1e-5 * abs(one)
    q = trainer.params["transformer"]["attentions"]["q_lin"]["kernel"][...]
    assert q.sharding.spec == PartitionSpec(None, None, "tp", None) and len(q.sharding.device_set) == 8
    with pytest.raises(InputError, match="axis_rules"):
        run(mesh=_mesh("explicit"))
