"""Multi-head self-attention: where the attention scores and weights are computed."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from xlm_flax.config import XLMConfig
from xlm_flax.model.initializers import _normal
from xlm_flax.model.kernels import fused_attention
from xlm_flax.model.layers import Dense, DTypeLike, dropout
from xlm_flax.model.masking import AttentionMask
from xlm_flax.model.precision import DEFAULT_PRECISION


class MultiHeadAttention(nnx.Module):
    """Self-attention with separate q/k/v/out projections, heads kept as their own axis.

    Built as `(config, *, dtype, param_dtype, precision, rngs)`, the sub-module convention of `xlm_flax.model`,
    plus `implementation`, the attention kernel (`attention_context`; None chooses by backend).
    """

    def __init__(
        self,
        config: XLMConfig,
        *,
        dtype: DTypeLike,
        param_dtype: DTypeLike,
        precision: str,
        rngs: nnx.Rngs,
        implementation: str | None = None,
    ):
        d, n, h = config.emb_dim, config.n_heads, config.head_dim
        dense = partial(
            Dense, init=_normal(config.init_std), dtype=dtype, param_dtype=param_dtype, precision=precision, rngs=rngs
        )
        qkv_axes = dict(kernel_axes=("embed", "heads", "head_dim"), bias_axes=("heads", "head_dim"))
        self.q_lin = dense((d,), (n, h), **qkv_axes)
        self.k_lin = dense((d,), (n, h), **qkv_axes)
        self.v_lin = dense((d,), (n, h), **qkv_axes)
        self.out_lin = dense((n, h), (d,), kernel_axes=("heads", "head_dim", "embed"), bias_axes=("embed",))
        self.head_dim = h
        self.rate = config.attention_dropout
        self.dtype = dtype
        self.precision = precision
        self.implementation = implementation

    def __call__(
        self, x: jax.Array, mask: AttentionMask, key: jax.Array | None, *, output_weights: bool = True
    ) -> tuple[jax.Array, jax.Array | None]:
        """Attends over `x`.

        Args:
            x: `[batch, length, emb_dim]`.
            mask: What each query may attend to (`xlm_flax.model.masking`).
            key: Dropout key for the attention weights, or None when deterministic.
            output_weights: Return the attention weights.

        Returns:
            The output `[batch, length, emb_dim]` and the attention weights `[batch, heads, length, length]` (None
            when `output_weights` is false).
        """
        q = self.q_lin(x) / math.sqrt(self.head_dim)  # [B, T, N, H]; scaled before the product, as the reference
        k = self.k_lin(x)  # [B, S, N, H]
        v = self.v_lin(x)  # [B, S, N, H]
        context, weights = attention_context(
            q,
            k,
            v,
            mask,
            rate=self.rate,
            key=key,
            output_weights=output_weights,
            dtype=self.dtype,
            precision=self.precision,
            implementation=self.implementation,
        )
        return self.out_lin(context), weights


def attention_context(
    q: jax.Array,  # [B, T, N, H], already scaled
    k: jax.Array,  # [B, S, N, H]
    v: jax.Array,  # [B, S, N, H]
    mask: AttentionMask,
    *,
    rate: float,
    key: jax.Array | None,
    output_weights: bool,
    dtype: DTypeLike,
    precision: str = DEFAULT_PRECISION,
    implementation: str | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """The attention product `softmax(q k^T) v` under `mask`: the one place where attention is computed.

    With weights to return or attention dropout on, the explicit einsums below run. Otherwise a fused kernel runs,
    chosen by `xlm_flax.model.kernels.choose_kernel`: cuDNN's fused attention on GPU and the Pallas
    splash-attention kernel on TPU where the dtype, shapes and mask allow (bfloat16 / float16 compute only, so
    float32 keeps the XLA einsums and their exact `precision`), `jax.nn.dot_product_attention`'s XLA
    implementation otherwise; an automatic choice that falls back logs why.

    All follow the reference: masked scores are replaced by a large negative number (rows with nothing to attend
    to become uniform, as with the reference's `finfo.min`) and the softmax is float32.

    Args:
        q: Queries, already scaled by `1/sqrt(head_dim)`.
        k: Keys.
        v: Values.
        mask: What each query may attend to.
        rate: Attention dropout rate.
        key: Dropout key, or None when deterministic.
        output_weights: Return the attention weights.
        dtype: Compute dtype of the weights.
        precision: Matmul precision name (`xlm_flax.model.precision`) of every dot product here.
        implementation: `"xla"`, `"cudnn"`, `"splash"`, or None to choose by backend (`choose_kernel`).

    Returns:
        The context `[B, T, N, H]` and, when `output_weights`, the weights `[B, N, T, S]`.
    """
    if not output_weights and (key is None or rate == 0.0):
        return fused_attention(q, k, v, mask, precision=precision, implementation=implementation), None
    scores = jnp.einsum("BTNH,BSNH->BNTS", q, k, preferred_element_type=jnp.float32, precision=precision)
    scores = jnp.where(mask.allowed, scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(dtype)  # softmax always in float32
    dropped = dropout(weights, rate, key)
    context = jnp.einsum("BNTS,BSNH->BTNH", dropped, v, precision=precision)
    return context, weights if output_weights else None


__all__ = ["MultiHeadAttention"]
