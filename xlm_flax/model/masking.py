"""Which keys each query may attend to: one mask type for padded, causal and packed rows.

The encoder builds one `AttentionMask` per call and every layer's attention reads it. It carries the mask in two
forms: `allowed`, the dense boolean array that XLA's attention (and `jax.nn.dot_product_attention`) takes, and, for
packed rows, the `segment_ids` themselves with the static `causal` flag, the form that fused kernels take (cuDNN's
and the TPU splash-attention kernels' segment ids), so a kernel can be chosen without changing what callers pass.

Packed rows hold several sentences: `segment_ids[b, t]` is the 1-based number of the sentence that token `t` of row
`b` belongs to, 0 on padding. A token attends to the tokens of its own segment only (and, for a causal model, only
to those at or before it); padding attends to padding, so no query row is ever fully masked (a fully masked row is
a NaN risk in fused kernels) and padding never reaches a real token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class AttentionMask:
    """What each query may attend to.

    Attributes:
        allowed: Boolean, true where attention is allowed, broadcastable to `[batch, heads, queries, keys]`:
            `[batch, 1, 1, keys]` (padding only), `[1, 1, queries, keys]` (causal) or `[batch, 1, queries, keys]`
            (packed rows).
        segment_ids: `[batch, keys]` int32 segment numbers (0 on padding) for packed rows, else None.
        causal: Static: attention is causal (besides what `allowed` says). Part of the tree structure, not traced.
    """

    allowed: jax.Array
    segment_ids: jax.Array | None = None
    causal: bool = struct.field(pytree_node=False, default=False)


def padding_mask(attend: jax.Array, *, causal: bool) -> AttentionMask:
    """The mask of padded rows, as the reference builds it.

    Args:
        attend: `[batch, keys]` boolean, true on tokens.
        causal: A causal model. The reference's causal mask is triangular and ignores padding.
    """
    if causal:
        length = attend.shape[1]
        positions = jnp.arange(length)
        return AttentionMask(allowed=(positions[None, :] <= positions[:, None])[None, None], causal=True)
    return AttentionMask(allowed=attend[:, None, None, :], causal=False)


def segment_mask(segment_ids: jax.Array, *, causal: bool) -> AttentionMask:
    """The block-diagonal mask of packed rows (lower-triangular blocks when `causal`).

    Args:
        segment_ids: `[batch, length]` int, 1-based segment number of each token, 0 on padding.
        causal: A causal model: attention is also causal within each segment.
    """
    segment_ids = segment_ids.astype(jnp.int32)
    allowed = segment_ids[:, :, None] == segment_ids[:, None, :]  # [B, T, S]
    if causal:
        positions = jnp.arange(segment_ids.shape[1])
        allowed = allowed & (positions[None, :] <= positions[:, None])[None]
    return AttentionMask(allowed=allowed[:, None], segment_ids=segment_ids, causal=causal)


def segment_positions(segment_ids: jax.Array) -> jax.Array:
    """Position of every token within its segment (`[batch, length]` int32): 0 at each segment's first token.

    Segments must be contiguous runs of equal ids. Padding (id 0) is numbered like a segment of its own; its
    positions are never seen by a real token.

    Args:
        segment_ids: `[batch, length]` int segment numbers.
    """
    length = segment_ids.shape[1]
    index = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), segment_ids.shape)
    starts = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], dtype=bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1
    )
    start_index = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)
    return index - start_index


__all__ = ["AttentionMask", "padding_mask", "segment_mask", "segment_positions"]
