"""The key/value cache for incremental decoding, and the forward pass over new positions that reads and fills it.

The cache is a static-shape pytree, `k`/`v` of `[layers, batch, slots, heads, head_dim]`: a step writes the keys and
values of its `T_new` positions at slot `index` (traced, so one compiled program serves every step) and attends over
all slots under an `AttentionMask` whose `allowed` is `[batch, 1, T_new, slots]` (the caller says which slots hold
something visible). The scanned stack scans over the cache's leading layer axis; the per-layer layout indexes it.

This is a path of its own beside `XLMModel.__call__`: it shares the modules (projections, `attention_context`,
LayerNorms, FFN) but not the encoder's mask building, because what a new position may see is the generation
scheme's business (`xlm_flax.inference.generation`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx, struct
from flax.nnx import spmd

from xlm_flax.config import XLMConfig
from xlm_flax.model.attention import MultiHeadAttention, attention_context
from xlm_flax.model.layers import DTypeLike
from xlm_flax.model.masking import AttentionMask
from xlm_flax.model.stack import _LAYER_METADATA, is_unstacked


@struct.dataclass
class KVCache:
    """Keys and values of every layer: `k`, `v` of `[layers, batch, slots, heads, head_dim]`."""

    k: jax.Array
    v: jax.Array

    @classmethod
    def zeros(cls, config: XLMConfig, batch: int, slots: int, dtype: DTypeLike = jnp.float32) -> KVCache:
        """An empty cache of `slots` positions for `batch` rows."""
        shape = (config.n_layers, batch, slots, config.n_heads, config.head_dim)
        return cls(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype))

    def take(self, rows: jax.Array) -> KVCache:
        """The cache of rows `rows` (`[batch']` int), e.g. the surviving beams."""
        return KVCache(k=jnp.take(self.k, rows, axis=1), v=jnp.take(self.v, rows, axis=1))

    def repeat(self, times: int) -> KVCache:
        """Every row repeated `times` times in place (`[b0, b0, b1, b1, ...]`), as beams of one prompt."""
        return KVCache(k=jnp.repeat(self.k, times, axis=1), v=jnp.repeat(self.v, times, axis=1))


def cached_attention(
    attention: MultiHeadAttention,
    x: jax.Array,  # [B, T, D]
    k_cache: jax.Array,  # [B, S, N, H]
    v_cache: jax.Array,  # [B, S, N, H]
    index: jax.Array,  # scalar int: first slot written
    mask: AttentionMask,  # allowed: [B, 1, T, S]
    uniform: jax.Array | None,  # [B, T] bool or None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Self-attention of `T` new positions over the cache: projects them, writes their keys and values at slots
    `index .. index+T-1`, and attends over every slot that `mask` allows.

    `uniform` marks queries that transformers' own cache scheme masks entirely: their weights are uniform over the
    allowed slots (the reference's softmax over `finfo.min` everywhere). Zeroing their query gives exactly that.

    Returns:
        The attention output `[B, T, D]` and the updated key and value caches.
    """
    q = attention.q_lin(x) / math.sqrt(attention.head_dim)  # [B, T, N, H]
    if uniform is not None:
        q = jnp.where(uniform[:, :, None, None], jnp.zeros_like(q), q)
    k = attention.k_lin(x).astype(k_cache.dtype)
    v = attention.v_lin(x).astype(v_cache.dtype)
    k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k, index, axis=1)
    v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v, index, axis=1)
    context, _ = attention_context(
        q,
        k_cache,
        v_cache,
        mask,
        rate=0.0,
        key=None,
        output_weights=False,
        dtype=attention.dtype,
        precision=attention.precision,
        implementation=attention.implementation,
    )
    return attention.out_lin(context), k_cache, v_cache


def _cached_layer(x, attention, norm1, ffn, norm2, k, v, *, index, mask, keep, uniform):
    """One block over new positions (`xlm_flax.model.block.transformer_layer` without dropout, with the cache)."""
    out, k, v = cached_attention(attention, x, k, v, index, mask, uniform)
    x = norm1(x + out)
    x = norm2(x + ffn(x, None))
    return x * keep[..., None], k, v


def forward_cached(
    encoder: nnx.Module,
    input_ids: jax.Array,  # [B, T] int
    position_ids: jax.Array,  # [B, T] int
    langs: jax.Array | None,  # [B, T] int
    keep: jax.Array,  # [B, T]: the reference's padding multiplier of the hidden states
    mask: AttentionMask,  # allowed: [B, 1, T, S]
    index: jax.Array,  # scalar int
    cache: KVCache,
    uniform: jax.Array | None = None,  # [B, T] bool
) -> tuple[jax.Array, KVCache]:
    """The encoder over `T` new positions with a key/value cache (deterministic, no dropout).

    Embeddings as `XLMModel.__call__` computes them, then every layer through `cached_attention`.

    Args:
        encoder: An `XLMModel` of any layer layout.
        input_ids: The new tokens.
        position_ids: Their positions.
        langs: Their language ids, or None (ignored without language embeddings).
        keep: 1 where the hidden states are kept, 0 where the reference zeroes them (padding).
        mask: Which cache slots each new position attends to.
        index: The slot of the first new position.
        cache: The cache; its slots `index .. index+T-1` are overwritten.
        uniform: Queries whose attention is uniform over the allowed slots (see `cached_attention`).

    Returns:
        The last hidden states `[B, T, D]` and the updated cache.
    """
    keep = keep.astype(encoder.dtype)
    x = encoder.embeddings(input_ids) + encoder.position_embeddings(position_ids)
    if langs is not None and encoder.lang_embeddings is not None:
        x = x + encoder.lang_embeddings(langs)
    x = encoder.layer_norm_emb(x) * keep[..., None]
    layer = dict(index=index, mask=mask, keep=keep, uniform=uniform)
    if is_unstacked(encoder):
        ks, vs = [], []
        for i, modules in enumerate(
            zip(encoder.attentions, encoder.layer_norm1, encoder.ffns, encoder.layer_norm2, strict=True)
        ):
            x, k, v = _cached_layer(x, *modules, cache.k[i], cache.v[i], **layer)
            ks.append(k)
            vs.append(v)
        return x, KVCache(k=jnp.stack(ks), v=jnp.stack(vs))

    # A plain `jax.lax.scan` over the split stack rather than `nnx.scan`: generation runs this inside a
    # `while_loop` whose body merges the model from arrays traced outside it, which NNX transforms refuse.
    graphdef, state = nnx.split((encoder.attentions, encoder.layer_norm1, encoder.ffns, encoder.layer_norm2))

    def body(x, layer_inputs):
        layer_state, k, v = layer_inputs
        spmd.remove_axis(layer_state, 0, _LAYER_METADATA)  # per-layer names, as `nnx.scan` gives its body
        modules = nnx.merge(graphdef, layer_state)
        x, k, v = _cached_layer(x, *modules, k, v, **layer)
        return x, (k, v)

    unroll = encoder.config.n_layers if encoder.layer_layout == "unrolled" else 1
    x, (k, v) = jax.lax.scan(body, x, (state, cache.k, cache.v), unroll=unroll)
    return x, KVCache(k=k, v=v)


__all__ = ["KVCache", "cached_attention", "forward_cached"]
