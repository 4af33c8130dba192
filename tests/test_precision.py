"""`precision=`: every dot product of every model reaches the StableHLO with the requested precision or algorithm.

The forward (and a training step) is lowered on CPU and each `stablehlo.dot_general` line of the text is read: a
test fails if a single dot (a projection, an attention einsum, the tied LM projection, a head's matmul, a gradient)
carries something else. The markers below are StableHLO's own spelling, written out here, not produced by our code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from xlm_flax import (
    XLMForMultipleChoice,
    XLMForQuestionAnswering,
    XLMForQuestionAnsweringSimple,
    XLMForSequenceClassification,
    XLMForTokenClassification,
    XLMModel,
    XLMWithLMHeadModel,
)
from xlm_flax.config import XLMConfig
from xlm_flax.errors import ConfigError
from xlm_flax.model.precision import DEFAULT_PRECISION, canonical_precision, precision_names
from xlm_flax.training.step import make_train_step

# How StableHLO prints each precision on a dot_general.
MARKERS = {
    "highest": "precision = [HIGHEST, HIGHEST]",
    "BF16_BF16_F32": "algorithm = <lhs_precision_type = bf16, rhs_precision_type = bf16, accumulation_type = f32",
    "F32_F32_F32": "algorithm = <lhs_precision_type = f32, rhs_precision_type = f32, accumulation_type = f32",
}

BATCH, LENGTH = 2, 8


def _config(**overrides) -> XLMConfig:
    fields = dict(vocab_size=41, emb_dim=16, n_layers=2, n_heads=2, max_position_embeddings=16, n_langs=2)
    return XLMConfig(**dict(fields, **overrides))


def _dots(text: str) -> list[str]:
    return [line for line in text.splitlines() if "stablehlo.dot_general" in line]


def assert_every_dot(text: str, precision: str, minimum: int) -> None:
    """Every dot_general of `text` carries `precision`'s marker, and there are at least `minimum` of them."""
    dots = _dots(text)
    assert len(dots) >= minimum, f"{len(dots)} dot_generals, expected at least {minimum}"
    missed = [line.strip()[:160] for line in dots if MARKERS[precision] not in line]
    assert not missed, f"{len(missed)} of {len(dots)} dot_generals lack {precision}: {missed}"


def _lowered(model: nnx.Module, call, *args) -> str:
    graphdef, state = nnx.split(model)
    return jax.jit(lambda state, *args: call(nnx.merge(graphdef, state), *args)).lower(state, *args).as_text()


def _ids(seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).integers(5, 41, (BATCH, LENGTH)), jnp.int32)


def test_checker_catches_a_missed_dot():
    """The check fails on a program with one dot that did not get the precision (guards the test itself)."""
    x = jnp.ones((4, 4))
    text = jax.jit(lambda x: jnp.dot(x, x, precision="highest") @ x).lower(x).as_text()
    with pytest.raises(AssertionError, match="1 of 2 dot_generals lack highest"):
        assert_every_dot(text, "highest", 2)


@pytest.mark.parametrize(
    "precision, layers",
    [("highest", "scan"), ("BF16_BF16_F32", "scan"), ("BF16_BF16_F32", "per_layer"), ("BF16_BF16_F32", "unrolled")],
)
def test_encoder_every_path(precision, layers):
    """Fused attention path, explicit einsums (weights returned, dropout on), and packed rows, in each layout."""
    config = _config(dropout=0.1, attention_dropout=0.1)
    model = XLMModel(config, rngs=nnx.Rngs(0), layers=layers, precision=precision)
    assert model.precision == precision
    ids = _ids()
    # 4 projections + 2 attention products + 2 FFN matmuls per layer (jnp's einsums of equal shapes share one
    # function in the text, so this is a floor).
    per_program = 8
    assert_every_dot(_lowered(model, lambda m, ids: m(ids).last_hidden_state, ids), precision, per_program)
    text = _lowered(model, lambda m, ids: m(ids, output_attentions=True).attentions, ids)
    assert_every_dot(text, precision, per_program)
    text = _lowered(
        model, lambda m, ids, key: m(ids, deterministic=False, rngs=nnx.Rngs(dropout=key)).last_hidden_state,
        ids, jax.random.key(0),
    )  # fmt: skip
    assert_every_dot(text, precision, per_program)
    segments = jnp.asarray([[1, 1, 1, 2, 2, 2, 0, 0], [1, 1, 1, 1, 1, 2, 2, 2]], jnp.int32)
    text = _lowered(model, lambda m, ids, s: m(ids, segment_ids=s).last_hidden_state, ids, segments)
    assert_every_dot(text, precision, per_program)


@pytest.mark.parametrize("tied", [True, False])
def test_lm_head_and_causal(tied):
    model = XLMWithLMHeadModel(
        _config(tie_word_embeddings=tied, causal=True), rngs=nnx.Rngs(0), precision="BF16_BF16_F32"
    )
    text = _lowered(model, lambda m, ids: m(ids).logits, _ids())
    assert_every_dot(text, "BF16_BF16_F32", 9)  # 8 in the scanned layer + the output projection


HEADS = {
    "sequence": (XLMForSequenceClassification, dict(num_labels=3), lambda m, ids: m(ids).logits),
    "sequence_mean": (
        XLMForSequenceClassification,
        dict(num_labels=3, summary_type="mean", summary_proj_to_labels=False),
        lambda m, ids: m(ids).logits,
    ),
    "token": (XLMForTokenClassification, dict(num_labels=3), lambda m, ids: m(ids).logits),
    "qa_simple": (XLMForQuestionAnsweringSimple, dict(), lambda m, ids: m(ids).start_logits),
    "squad_beam": (XLMForQuestionAnswering, dict(start_n_top=2, end_n_top=2), lambda m, ids: m(ids)),
    "squad_train": (
        XLMForQuestionAnswering,
        dict(start_n_top=2, end_n_top=2),
        lambda m, ids: (
            m(
                ids,
                start_positions=jnp.array([1, 2]),
                end_positions=jnp.array([3, 4]),
                cls_index=jnp.array([0, 0]),
                is_impossible=jnp.array([0.0, 1.0]),
            ).loss
        ),
    ),
    "multiple_choice": (XLMForMultipleChoice, dict(num_labels=1), lambda m, ids: m(ids[:, None, :]).logits),
}


@pytest.mark.parametrize("head", sorted(HEADS))
def test_every_task_head(head):
    cls, overrides, call = HEADS[head]
    model = cls(_config(**overrides), rngs=nnx.Rngs(0), precision="F32_F32_F32")
    assert_every_dot(_lowered(model, call, _ids()), "F32_F32_F32", 9)


def test_training_step_forward_and_backward():
    """Gradients of the dots (their transposes) keep the precision too."""
    model = XLMWithLMHeadModel(_config(dropout=0.1), rngs=nnx.Rngs(0), precision="highest")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    optimizer = optax.adamw(1e-3)
    step = make_train_step(graphdef, optimizer)
    ids = _ids()[None]  # one microbatch
    batch = {"input_ids": ids, "labels": ids}
    text = jax.jit(step).lower(params, optimizer.init(params), rest, batch, jnp.int32(0)).as_text()
    # 9 forward dots, and two gradient dots for each (fewer where an input needs no gradient).
    assert_every_dot(text, "highest", 20)


def test_default_and_names():
    assert DEFAULT_PRECISION == "highest"
    assert XLMModel(_config(), rngs=nnx.Rngs(0)).precision == "highest"
    assert canonical_precision(None) == "highest"
    assert canonical_precision(jax.lax.Precision.HIGHEST) == "highest"
    assert canonical_precision(jax.lax.Precision.DEFAULT) == "default"
    assert canonical_precision("TensorFloat32") == "tensorfloat32"
    assert canonical_precision(jax.lax.DotAlgorithmPreset.BF16_BF16_F32_X3) == "BF16_BF16_F32_X3"
    assert canonical_precision("f32_f32_f32") == "F32_F32_F32"
    assert {"highest", "default", "tensorfloat32", "bfloat16", "F32_F32_F32", "TF32_TF32_F32"} <= set(precision_names())
    with pytest.raises(ConfigError, match=r"precision='fast'.*'highest'"):
        XLMModel(_config(), rngs=nnx.Rngs(0), precision="fast")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A torch-free LM checkpoint directory with tokenizer files."""
    from tests.helpers import build_exported_checkpoint, build_test_tokenizer

    directory = tmp_path_factory.mktemp("precision")
    vocab_size = build_test_tokenizer(directory)
    build_exported_checkpoint(directory, "XLMWithLMHeadModel", 0, vocab_size=vocab_size)
    return directory


def test_from_pretrained_and_pipelines_take_precision(checkpoint):
    from xlm_flax.inference.embeddings import Embedder
    from xlm_flax.inference.fill_mask import FillMask

    tmp_path = checkpoint
    assert XLMModel.from_pretrained(tmp_path, precision="F32_F32_F32").precision == "F32_F32_F32"
    fill = FillMask.from_pretrained(tmp_path, precision="bfloat16")
    assert fill.model.transformer.precision == "bfloat16"
    embedder = Embedder.from_pretrained(tmp_path, precision=jax.lax.Precision.HIGHEST)
    assert embedder.model.precision == "highest"


def test_cli_refuses_an_unknown_precision(checkpoint, capsys):
    from xlm_flax.cli.main import main

    assert main(["fill-mask", str(checkpoint), "a <special1> .", "--precision", "fastest"]) == 2
    err = capsys.readouterr().err
    assert "precision='fastest'" in err and len(err.strip().splitlines()) == 1
