"""Multi-head self-attention: where the attention scores and weights are computed."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from xlm_flax.config import XLMConfig
from xlm_flax.model.initializers import _normal
from xlm_flax.model.layers import Dense, DTypeLike, dropout


class MultiHeadAttention(nnx.Module):
    """Self-attention with separate q/k/v/out projections, heads kept as their own axis.

    Built as `(config, *, dtype, param_dtype, rngs)`, the sub-module convention of `xlm_flax.model`.
    """

    def __init__(self, config: XLMConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
        d, n, h = config.emb_dim, config.n_heads, config.head_dim
        dense = partial(Dense, init=_normal(config.init_std), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        qkv_axes = dict(kernel_axes=("embed", "heads", "head_dim"), bias_axes=("heads", "head_dim"))
        self.q_lin = dense((d,), (n, h), **qkv_axes)
        self.k_lin = dense((d,), (n, h), **qkv_axes)
        self.v_lin = dense((d,), (n, h), **qkv_axes)
        self.out_lin = dense((n, h), (d,), kernel_axes=("heads", "head_dim", "embed"), bias_axes=("embed",))
        self.head_dim = h
        self.rate = config.attention_dropout
        self.dtype = dtype

    def __call__(
        self, x: jax.Array, attend: jax.Array, key: jax.Array | None, *, output_weights: bool = True
    ) -> tuple[jax.Array, jax.Array | None]:
        """Attends over `x`.

        Args:
            x: `[batch, length, emb_dim]`.
            attend: Boolean, true where attention is allowed: `[batch, 1, 1, length]` (padding) or
                `[batch, 1, length, length]` (causal).
            key: Dropout key for the attention weights, or None when deterministic.
            output_weights: Return the attention weights. When false and there is no attention dropout, the
                product goes through `jax.nn.dot_product_attention`, which picks the backend's kernel (cuDNN's
                fused attention on GPU where it applies, the same XLA einsums as below elsewhere).

        Returns:
            The output `[batch, length, emb_dim]` and the attention weights `[batch, heads, length, length]` (None
            when `output_weights` is false).
        """
        q = self.q_lin(x) / math.sqrt(self.head_dim)  # [B, T, N, H]; scaled before the product, as the reference
        k = self.k_lin(x)  # [B, S, N, H]
        v = self.v_lin(x)  # [B, S, N, H]
        if not output_weights and (key is None or self.rate == 0.0):
            # Same math as the explicit path: masked scores are replaced by a large negative number (rows with
            # nothing to attend to become uniform, as with the reference's finfo.min) and the softmax is float32.
            # scale=1 because q is already scaled, in the reference's order.
            context = jax.nn.dot_product_attention(q, k, v, mask=attend, scale=1.0)
            return self.out_lin(context), None
        scores = jnp.einsum("BTNH,BSNH->BNTS", q, k, preferred_element_type=jnp.float32)
        scores = jnp.where(attend, scores, jnp.finfo(scores.dtype).min)
        weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)  # softmax always in float32
        dropped = dropout(weights, self.rate, key)
        context = jnp.einsum("BNTS,BSNH->BTNH", dropped, v)
        return self.out_lin(context), weights


__all__ = ["MultiHeadAttention"]
