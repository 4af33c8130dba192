"""Packed rows (`segment_ids`): every sentence of a packed row computes what it computes alone, checked against
transformers' PyTorch XLM run on each sentence by itself (float32, ≤ 1e-5); plus the mask and positions helpers."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import PARITY_CONFIGS, TINY_CONFIG, build_reference_checkpoint, require_torch

from xlm_flax import XLMConfig, XLMModel, XLMWithLMHeadModel
from xlm_flax.model.masking import segment_mask, segment_positions

FP32_TOL = 1e-5
# Sentence lengths, packed in this order into rows of ROW_LENGTH (first fit), with padding left at each row's end.
SENTENCE_LENGTHS = (5, 3, 7, 2, 4, 1)
ROW_LENGTH = 12


def _sentences(config, seed=3):
    rng = np.random.default_rng(seed)
    return [
        (rng.integers(6, config.vocab_size, size=n), rng.integers(0, max(1, config.n_langs), size=n))
        for n in SENTENCE_LENGTHS
    ]


def _pack(sentences, pad_index):
    """First-fit packing, written independently of the library: ids, langs, segment ids and where each sentence
    went (row, start)."""
    rows, places = [], []
    for ids, langs in sentences:
        fits = [r for r, row in enumerate(rows) if len(row[0]) + len(ids) <= ROW_LENGTH]
        if not fits:
            rows.append(([], [], []))
        r = fits[0] if fits else len(rows) - 1
        places.append((r, len(rows[r][0])))
        rows[r][0].extend(ids)
        rows[r][1].extend(langs)
        rows[r][2].extend([len(set(rows[r][2])) + 1] * len(ids))
    shape = (len(rows), ROW_LENGTH)
    packed = {k: np.full(shape, fill) for k, fill in (("ids", pad_index), ("langs", 0), ("segments", 0))}
    for r, (ids, langs, segments) in enumerate(rows):
        packed["ids"][r, : len(ids)] = ids
        packed["langs"][r, : len(ids)] = langs
        packed["segments"][r, : len(ids)] = segments
    return packed, places


@pytest.fixture(scope="module", params=["multilingual", "causal", "monolingual", "multilingual_no_lang_emb"])
def reference(request, tmp_path_factory):
    require_torch()
    directory, torch_model = build_reference_checkpoint(
        tmp_path_factory.mktemp(request.param), **PARITY_CONFIGS[request.param]
    )
    return torch_model, directory


@pytest.mark.parametrize("layers", ["scan", "per_layer"])
def test_packed_rows_equal_each_sentence_alone(reference, layers):
    torch = require_torch()
    torch_model, directory = reference
    model = XLMWithLMHeadModel.from_pretrained(directory, layers=layers)
    config = model.config
    sentences = _sentences(config)
    packed, places = _pack(sentences, config.pad_index)
    assert len(packed["ids"]) < len(sentences)  # several sentences really share rows
    out = model(
        jnp.asarray(packed["ids"]),
        langs=jnp.asarray(packed["langs"]),
        segment_ids=jnp.asarray(packed["segments"]),
        output_hidden_states=True,
    )
    for (ids, langs), (r, start) in zip(sentences, places, strict=True):
        with torch.no_grad():
            expected = torch_model(
                torch.from_numpy(ids[None]), langs=torch.from_numpy(langs[None]), output_hidden_states=True
            )
        span = slice(start, start + len(ids))
        np.testing.assert_allclose(np.asarray(out.logits)[r, span], expected.logits[0].numpy(), atol=FP32_TOL, rtol=0)
        for ours, theirs in zip(out.hidden_states, expected.hidden_states, strict=True):
            np.testing.assert_allclose(np.asarray(ours)[r, span], theirs[0].numpy(), atol=FP32_TOL, rtol=0)
    # Padding stays zero in the hidden states, as the reference's padding mask makes it.
    assert (np.asarray(out.hidden_states[-1])[packed["segments"] == 0] == 0).all()


def test_packed_attention_weights_stay_within_each_sentence(reference):
    _, directory = reference
    model = XLMWithLMHeadModel.from_pretrained(directory)
    packed, _ = _pack(_sentences(model.config), model.config.pad_index)
    segments = packed["segments"]
    out = model(jnp.asarray(packed["ids"]), segment_ids=jnp.asarray(segments), output_attentions=True)
    other = segments[:, :, None] != segments[:, None, :]  # [B, T, S]: query and key in different sentences
    for weights in out.attentions:
        assert (np.asarray(weights).transpose(0, 2, 3, 1)[other] == 0).all()
    # The explicit path (weights returned) and jax.nn.dot_product_attention give the same logits.
    fast = model(jnp.asarray(packed["ids"]), segment_ids=jnp.asarray(segments))
    np.testing.assert_allclose(np.asarray(fast.logits), np.asarray(out.logits), atol=FP32_TOL, rtol=0)


def test_explicit_positions_override_the_segment_positions(reference):
    """TLM pairs restart positions inside one segment: given position_ids win over the per-segment default."""
    torch = require_torch()
    torch_model, directory = reference
    model = XLMWithLMHeadModel.from_pretrained(directory)
    rng = np.random.default_rng(5)
    ids = rng.integers(6, model.config.vocab_size, size=(1, 9))
    positions = np.array([[0, 1, 2, 3, 0, 1, 2, 3, 4]])
    out = model(jnp.asarray(ids), segment_ids=jnp.ones_like(jnp.asarray(ids)), position_ids=jnp.asarray(positions))
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(ids), position_ids=torch.from_numpy(positions))
    np.testing.assert_allclose(np.asarray(out.logits), expected.logits.numpy(), atol=FP32_TOL, rtol=0)


def test_segment_positions_restart_at_each_segment():
    segments = jnp.asarray([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
    expected = [[0, 1, 2, 0, 1, 0, 0, 1], [0, 1, 2, 3, 4, 5, 6, 7]]
    assert np.asarray(segment_positions(segments)).tolist() == expected


def test_segment_mask_is_block_diagonal_and_never_empty():
    segments = jnp.asarray([[1, 1, 2, 0]])
    bidirectional = np.asarray(segment_mask(segments, causal=False).allowed)[0, 0]
    causal = np.asarray(segment_mask(segments, causal=True).allowed)[0, 0]
    assert bidirectional.astype(int).tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    assert causal.astype(int).tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    assert bidirectional.any(-1).all() and causal.any(-1).all()  # no fully masked query row


def test_segment_ids_refuse_a_second_mask():
    model = XLMModel(XLMConfig(**TINY_CONFIG), rngs=nnx.Rngs(0))
    ids = jnp.full((1, 4), 7)
    with pytest.raises(ValueError, match="segment_ids alone"):
        model(ids, attention_mask=jnp.ones_like(ids), segment_ids=jnp.ones_like(ids))
    with pytest.raises(ValueError, match="segment_ids has shape"):
        model(ids, segment_ids=jnp.ones((1, 3), jnp.int32))


@pytest.mark.parametrize("causal", [True, False], ids=["clm", "mlm"])
def test_packed_training_loss_equals_the_padded_loss(causal):
    """The training loss of packed rows (`segment_ids`, what the streaming pipeline feeds the step) equals that of
    the same sentences padded one per row: same targets, and attention kept inside each sentence."""
    from xlm_flax.training.objectives import clm_labels
    from xlm_flax.training.step import model_loss
    from xlm_flax.training.streaming import packed_clm_labels

    config = XLMConfig(**TINY_CONFIG, n_langs=1, causal=causal, dropout=0.0, attention_dropout=0.0)
    model = XLMWithLMHeadModel(config, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(4)
    sentences = [rng.integers(6, config.vocab_size, size=n) for n in (5, 3, 4)]
    width = max(map(len, sentences))
    ids = np.full((len(sentences), width), config.pad_index)
    mask = np.zeros_like(ids)
    for i, s in enumerate(sentences):
        ids[i, : len(s)], mask[i, : len(s)] = s, 1
    packed_ids = np.full((1, config.max_position_embeddings), config.pad_index)
    segments = np.zeros_like(packed_ids)
    flat = np.concatenate(sentences)
    packed_ids[0, : len(flat)] = flat
    segments[0, : len(flat)] = np.repeat(np.arange(1, len(sentences) + 1), [len(s) for s in sentences])
    if causal:
        labels, packed_labels = clm_labels(ids, mask), packed_clm_labels(packed_ids, segments)
    else:  # MLM: the same (arbitrary) target positions in both layouts
        labels = np.where((np.arange(width)[None] % 2 == 0) & (mask == 1), ids, -100)
        packed_labels = np.full_like(packed_ids, -100)
        packed_labels[0, : len(flat)] = np.concatenate([labels[i, : len(s)] for i, s in enumerate(sentences)])
    padded = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    packed = {
        "input_ids": packed_ids,
        "segment_ids": segments,
        "attention_mask": segments != 0,
        "labels": packed_labels,
    }
    losses = [
        float(model_loss(model, {k: jnp.asarray(v) for k, v in batch.items()}, nnx.Rngs(dropout=0)))
        for batch in (padded, packed)
    ]
    assert np.isfinite(losses[0])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6)
