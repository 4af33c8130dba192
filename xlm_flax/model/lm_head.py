"""The language-model head (`pred_layer`) and `XLMWithLMHeadModel`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from xlm_flax.config import XLMConfig
from xlm_flax.model.heads.common import _HeadModel
from xlm_flax.model.initializers import _normal
from xlm_flax.model.layers import Dense, DTypeLike, param
from xlm_flax.model.losses import cross_entropy
from xlm_flax.model.outputs import MaskedLMOutput


class XLMPredLayer(nnx.Module):
    """The prediction layer: logits over the vocabulary from hidden states.

    With `tie_word_embeddings` (every public checkpoint) the projection reuses the word-embedding matrix and owns
    only its bias, `pred_layer.proj.bias`; otherwise it has its own `[embed, vocab]` kernel as well.

    Built as `(config, *, dtype, param_dtype, precision, rngs)`, the sub-module convention of `xlm_flax.model`.
    """

    def __init__(self, config: XLMConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, precision: str, rngs: nnx.Rngs):
        self.dtype = dtype
        self.precision = precision
        self.tied = config.tie_word_embeddings
        if self.tied:
            self.proj = _Bias(config.vocab_size, param_dtype)
        else:
            self.proj = Dense(
                (config.emb_dim,),
                (config.vocab_size,),
                kernel_axes=("embed", "vocab"),
                bias_axes=("vocab",),
                init=_normal(config.init_std),
                dtype=dtype,
                param_dtype=param_dtype,
                precision=precision,
                rngs=rngs,
            )

    def __call__(self, x: jax.Array, word_embeddings: jax.Array) -> jax.Array:
        """Maps `[batch, length, emb_dim]` to float32 logits `[batch, length, vocab]`.

        Args:
            x: Final hidden states.
            word_embeddings: The `[vocab, emb_dim]` table, used when the weights are tied.
        """
        dot = dict(preferred_element_type=jnp.float32, precision=self.precision)
        if self.tied:
            kernel = word_embeddings.astype(self.dtype)
            logits = jnp.einsum("BTD,VD->BTV", x.astype(self.dtype), kernel, **dot)
        else:
            kernel = self.proj.kernel[...].astype(self.dtype)
            logits = jnp.einsum("BTD,DV->BTV", x.astype(self.dtype), kernel, **dot)
        return logits + self.proj.bias[...].astype(jnp.float32)


class _Bias(nnx.Module):
    """Holds only a bias, so that the tied projection's parameter path is `pred_layer.proj.bias`."""

    def __init__(self, features: int, param_dtype: DTypeLike):
        self.bias = param(jnp.zeros((features,), param_dtype), ("vocab",))


class XLMWithLMHeadModel(_HeadModel):
    """XLM encoder plus the language-model head (transformers' `XLMWithLMHeadModel`). Built as
    `XLMWithLMHeadModel(config, rngs=rngs, **options)` with the encoder's options (see `_HeadModel`); logits are
    float32 whatever the compute dtype.
    """

    architecture = "XLMWithLMHeadModel"

    def _build_head(self, config: XLMConfig, **layer: Any) -> None:
        self.pred_layer = XLMPredLayer(config, **layer)

    def __call__(
        self,
        *args: Any,
        labels: jax.Array | None = None,  # [batch, length], -100 where no loss is wanted
        **kwargs: Any,
    ) -> MaskedLMOutput:
        """Encodes a batch and predicts every position's token; with `labels`, `loss` is the mean cross-entropy over
        positions whose label is not -100 (the MLM loss).

        Args:
            *args: The encoder's inputs by position, as `XLMModel.__call__` takes them (`input_ids`, ...).
            labels: `[batch, length]` token ids to predict; -100 is ignored.
            **kwargs: The encoder's arguments by name (`XLMModel.__call__`).

        Returns:
            A `MaskedLMOutput` with float32 `logits [batch, length, vocab]`.
        """
        out = self._encode(self._encoder_inputs(args, kwargs))
        logits = self.pred_layer(out.last_hidden_state, self.transformer.embeddings.embedding[...])
        loss = cross_entropy(logits, labels) if labels is not None else None
        return MaskedLMOutput(logits=logits, loss=loss, hidden_states=out.hidden_states, attentions=out.attentions)

    def generate(self, input_ids: Any, *, max_new_tokens: int, **options: Any) -> Any:
        """Generates continuations of `input_ids` (`[batch, length]`): greedy, sampling or beam search, the whole
        loop compiled once per shape bucket. `mode="causal"` (the default for causal models) is next-token
        generation with a key/value cache; `mode="transformers"` is transformers' own `generate()`, token for
        token. See `xlm_flax.inference.generation.generate` for every option.

        Returns:
            `[batch, length + generated]` int32 numpy token ids.
        """
        from xlm_flax.inference.generation import generate  # the model layer imports no higher layer at import

        return generate(self, input_ids, max_new_tokens=max_new_tokens, **options)


__all__ = ["XLMPredLayer", "XLMWithLMHeadModel"]
