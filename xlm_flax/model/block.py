"""One transformer block: attention, feed-forward, residuals and post-LayerNorms, as the reference orders them."""

from __future__ import annotations

from functools import partial

import jax
from flax import nnx

from xlm_flax.config import XLMConfig
from xlm_flax.model.attention import MultiHeadAttention
from xlm_flax.model.initializers import _normal
from xlm_flax.model.layers import Dense, DTypeLike, LayerNorm, dropout
from xlm_flax.model.masking import AttentionMask


class TransformerFFN(nnx.Module):
    """The position-wise feed-forward block: `lin2(act(lin1(x)))` with dropout.

    Built as `(config, *, dtype, param_dtype, precision, rngs)`, the sub-module convention of `xlm_flax.model`.
    """

    def __init__(self, config: XLMConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, precision: str, rngs: nnx.Rngs):
        d, m = config.emb_dim, config.hidden_dim
        dense = partial(
            Dense, init=_normal(config.init_std), dtype=dtype, param_dtype=param_dtype, precision=precision, rngs=rngs
        )
        self.lin1 = dense((d,), (m,), kernel_axes=("embed", "mlp"), bias_axes=("mlp",))
        self.lin2 = dense((m,), (d,), kernel_axes=("mlp", "embed"), bias_axes=("embed",))
        self.gelu = config.gelu_activation
        self.rate = config.dropout

    def __call__(self, x: jax.Array, key: jax.Array | None) -> jax.Array:
        """Maps `[batch, length, emb_dim]` to the same shape.

        Args:
            x: `[batch, length, emb_dim]`.
            key: Dropout key; None disables dropout.
        """
        h = self.lin1(x)
        h = jax.nn.gelu(h, approximate=False) if self.gelu else jax.nn.relu(h)
        return dropout(self.lin2(h), self.rate, key)


def transformer_layer(
    x: jax.Array,  # [B, T, D]
    attention: MultiHeadAttention,
    norm1: LayerNorm,
    ffn: TransformerFFN,
    norm2: LayerNorm,
    key: jax.Array | None,
    *,
    mask: AttentionMask,
    keep: jax.Array,  # [B, T]
    rate: float,
    output_attentions: bool,
) -> tuple[jax.Array, jax.Array | None]:
    """One post-LayerNorm block, as the reference: attention, dropout, residual, LayerNorm, FFN, residual,
    LayerNorm, then the padding mask. Shared by the scanned stack and the per-layer path (`xlm_flax.model.stack.run_unstacked`).

    Returns:
        The block's output `[B, T, D]` and, when `output_attentions`, its attention weights `[B, N, T, S]`.
    """
    k_attention, k_output, k_ffn = (None, None, None) if key is None else jax.random.split(key, 3)
    out, weights = attention(x, mask, k_attention, output_weights=output_attentions)
    x = norm1(x + dropout(out, rate, k_output))
    x = norm2(x + ffn(x, k_ffn))
    return x * keep[..., None], weights if output_attentions else None


__all__ = ["TransformerFFN", "transformer_layer"]
