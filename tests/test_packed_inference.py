"""Packed batching of `Embedder` and `FillMask`: the packer's contract, buckets kept as an option, and padding.

Packed results are compared with transformers' PyTorch model run on each sentence alone in `test_inference.py`
(packing is the default there); here the `"buckets"` option is checked against the same references, and packed
batches are checked to really share rows and to waste less padding."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import build_checkpoint, build_test_tokenizer, requires_torch

from xlm_flax import Embedder, FillMask
from xlm_flax.errors import InputError
from xlm_flax.inference.batching import pack_batch, pack_rows

TOL = 1e-5
MAX_POS = 40
MASK = "<special1>"
WORDS = "the cat sat on mat dog sees a big red car in old city i like books music is good".split()


def _texts(n, seed=0, high=30):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(0, high)))) for _ in range(n)]


@pytest.fixture(scope="module")
def mono(tmp_path_factory):
    directory = tmp_path_factory.mktemp("mono")
    vocab_size = build_test_tokenizer(directory, model_max_length=MAX_POS)
    return build_checkpoint(directory, vocab_size=vocab_size, max_position_embeddings=MAX_POS)


def test_pack_rows_places_every_item_once_within_capacity():
    rng = np.random.default_rng(1)
    for capacity in (5, 13, 64):
        lengths = rng.integers(1, capacity + 1, size=200).tolist()
        rows = pack_rows(lengths, capacity)
        assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in row) <= capacity for row in rows)
        # best fit decreasing: at most 11/9 of the optimum plus one; the optimum is at least the volume bound
        assert len(rows) <= 11 / 9 * -(-sum(lengths) // capacity) + 1
    assert pack_rows([], 8) == []
    with pytest.raises(InputError, match="does not fit"):
        pack_rows([9], 8)


def test_pack_batch_layout():
    sequences = [[0, 5, 1], [0, 1], [0, 7, 8, 1]]
    batch = pack_batch(np.array([4, 2, 9]), sequences, [[2, 1], [0]], batch=4, length=6, pad_index=2, lang_id=3)
    np.testing.assert_array_equal(batch.input_ids[0], [0, 7, 8, 1, 0, 1])
    np.testing.assert_array_equal(batch.segment_ids[0], [1, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(batch.input_ids[1], [0, 5, 1, 2, 2, 2])
    np.testing.assert_array_equal(batch.segment_ids[1], [1, 1, 1, 0, 0, 0])
    assert not batch.segment_ids[2:].any() and (batch.input_ids[2:] == 2).all()  # padding rows: segment 0
    np.testing.assert_array_equal(batch.spans, [[1, 0], [0, 4], [0, 0]])
    assert (batch.langs == 3).all() and batch.packed
    hidden = np.arange(4 * 6)[:, None].reshape(4, 6, 1)
    assert [s[:, 0].tolist() for s in batch.sentence_slices(hidden)] == [[6, 7, 8], [4, 5], [0, 1, 2, 3]]


@requires_torch
def test_packed_and_bucketed_embeddings_agree_and_packing_wastes_less(mono):
    import torch

    directory, model = mono
    texts = _texts(24)
    packed = Embedder.from_pretrained(directory, pooling="mean")
    buckets = Embedder.from_pretrained(directory, pooling="mean", batching="buckets")
    got = packed.encode(texts, batch_size=8)
    packed_count = packed.last_token_count
    got_buckets = buckets.encode(texts, batch_size=8)
    bucket_count = buckets.last_token_count
    tokenizer = packed.tokenizer
    expected = []
    for text in texts:
        ids = torch.tensor([tokenizer.encode(text)])
        with torch.no_grad():
            expected.append(model.transformer(ids).last_hidden_state[0].mean(0).numpy())
    np.testing.assert_allclose(got, np.stack(expected), atol=TOL, rtol=0)
    np.testing.assert_allclose(got_buckets, np.stack(expected), atol=TOL, rtol=0)
    assert packed_count.real == bucket_count.real == sum(len(tokenizer.encode(t)) for t in texts)
    # 24 sentences of 2..31 words in rows of 40 tokens: fewer rows than sentences, so rows are shared
    assert packed_count.computed // MAX_POS < len(texts)
    assert packed_count.waste < bucket_count.waste
    assert packed.num_compilations <= 4  # one row length; batches of 8 rows, then the rest in 4, 2, 1 rows


@requires_torch
def test_bucketed_fill_mask_equals_packed(mono):
    directory, _ = mono
    texts = [f"the cat sat on the {MASK} .", f"paris is the {MASK} of {MASK} .", f"hello {MASK}", f"{MASK} dog"]
    packed = FillMask.from_pretrained(directory)(texts, top_k=3, batch_size=2)
    bucketed = FillMask.from_pretrained(directory, batching="buckets")(texts, top_k=3, batch_size=2)
    flat = [p for text in packed for p in (text if isinstance(text[0], dict) else sum(text, []))]
    flat_b = [p for text in bucketed for p in (text if isinstance(text[0], dict) else sum(text, []))]
    assert [p["token"] for p in flat] == [p["token"] for p in flat_b]
    assert [p["sequence"] for p in flat] == [p["sequence"] for p in flat_b]
    np.testing.assert_allclose([p["score"] for p in flat], [p["score"] for p in flat_b], atol=TOL)


def test_bad_batching(mono):
    with pytest.raises(InputError, match="batching"):
        Embedder.from_pretrained(mono[0], batching="rows")


@pytest.mark.slow
def test_tokenizer_workers_give_the_same_results(mono):
    directory, _ = mono
    texts = _texts(300, seed=3, high=45)  # more than one chunk per worker; some longer than the model's 40
    expected = Embedder.from_pretrained(directory).encode(texts, batch_size=8)
    embedder = Embedder.from_pretrained(directory, tokenizer_workers=2)
    np.testing.assert_array_equal(embedder.encode(texts, batch_size=8), expected)
    np.testing.assert_array_equal(embedder.encode(texts[:5], batch_size=8), expected[:5])  # the pool is kept
    long = next(i for i, t in enumerate(texts) if len(embedder.tokenizer.encode(t)) > MAX_POS)  # the first
    with pytest.raises(InputError, match=f"input {long} .* more than the model's max_position_embeddings"):
        embedder.encode(texts, truncation=False)
    workers = embedder._encoder._pool._processes.values()
    embedder.close()
    assert embedder._encoder is None and all(not p.is_alive() for p in workers)

    masked = [f"the cat sat on the {MASK} .", f"paris is the {MASK} of {MASK} .", f"hello {MASK}"] * 50
    alone = FillMask.from_pretrained(directory, batching="buckets")(masked, top_k=2, batch_size=4)
    with FillMask.from_pretrained(directory, batching="buckets", tokenizer_workers=2) as fill:
        assert fill(masked, top_k=2, batch_size=4) == alone
    with pytest.raises(InputError, match="tokenizer_workers=-1"):
        Embedder.from_pretrained(directory, tokenizer_workers=-1)
