"""Shape buckets: the number of XLA compilations over a stream of random-length inputs is bounded by the number of
buckets (counted from JAX's own compilation events, not from timings); the prefetch thread keeps order and errors."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from helpers import DEFAULT_WORDS, build_checkpoint, build_test_tokenizer

from xlm_flax import Embedder
from xlm_flax.errors import InputError
from xlm_flax.inference.batching import Prefetcher, batch_buckets, batch_order, bucket_for, length_buckets

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def test_bucket_sizes():
    assert length_buckets(512) == (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
    assert length_buckets(40) == (8, 16, 24, 32, 40)
    assert length_buckets(5) == (5,)
    assert batch_buckets(32) == (1, 2, 4, 8, 16, 32)
    assert batch_buckets(12) == (1, 2, 4, 8, 12)
    assert batch_buckets(12, multiple=8) == (8, 16)
    assert bucket_for(17, (8, 16, 32)) == 32 and bucket_for(8, (8, 16)) == 8
    with pytest.raises(InputError):
        bucket_for(33, (8, 16, 32))
    with pytest.raises(InputError):
        batch_buckets(0)


def test_batch_order_covers_every_input_longest_first():
    hints = [3, 10, 0, 7, 7, 1, 12]
    batches = batch_order(hints, 3)
    assert [len(b) for b in batches] == [3, 3, 1]
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(hints)))
    assert [hints[i] for i in np.concatenate(batches)] == sorted(hints, reverse=True)


def test_prefetcher_keeps_order_and_reraises():
    with Prefetcher(iter(range(50)), depth=2) as items:
        assert list(items) == list(range(50))

    def failing():
        yield 1
        raise InputError("bad line 2")

    with Prefetcher(failing()) as items, pytest.raises(InputError, match="bad line 2"):
        list(items)
    with Prefetcher(iter(range(10**6)), depth=2) as items:  # the consumer stops early: close() must not hang
        assert next(iter(items)) == 0


def test_compilations_bounded_by_bucket_count(tmp_path):
    vocab_size = build_test_tokenizer(tmp_path)
    directory, _ = build_checkpoint(tmp_path, vocab_size=vocab_size, max_position_embeddings=40)  # torch or not
    embedder = Embedder.from_pretrained(directory, batching="buckets")
    rng = np.random.default_rng(0)
    words = np.array(DEFAULT_WORDS)

    def stream(n):  # 0 to 20 words: token counts from 2 to beyond max_position_embeddings (truncated)
        return [" ".join(rng.choice(words, size=int(rng.integers(0, 21)))) for _ in range(n)]

    compiles = []

    def listener(event, duration, **kwargs):
        if event == COMPILE_EVENT:
            compiles.append(kwargs.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        first, second = stream(300), stream(200)
        embedder.encode(first, batch_size=4)
        embedder.encode(second, batch_size=4)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    bound = embedder.bucket_count(4)
    assert bound == 3 * 5  # batch buckets (1, 2, 4) x length buckets (8, 16, 24, 32, 40)
    assert 0 < len(compiles) <= bound
    # Packed rows: the model compiles per (rows, length) shape within the same bound (per-sentence pooling compiles
    # apart, once per power-of-two sentence count, and is not a model compilation).
    packed = Embedder.from_pretrained(directory)
    packed.encode(first, batch_size=4)
    packed.encode(second, batch_size=4)
    assert 0 < packed.num_compilations <= packed.bucket_count(4)
    assert embedder.num_compilations == len(compiles)
    # Padding each batch only to its own longest input would compile once per distinct length: more than the bound.
    tokenizer = embedder.tokenizer
    lengths = {min(40, len(tokenizer.tokenize(t)) + 2) for t in first + second}
    assert len(lengths) > bound
