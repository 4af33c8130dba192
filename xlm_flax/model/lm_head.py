"""The language-model head (`pred_layer`) and `XLMWithLMHeadModel`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xlm_flax.config import XLMConfig
from xlm_flax.model.encoder import XLMModel
from xlm_flax.model.initializers import _normal
from xlm_flax.model.layers import Dense, DTypeLike, param
from xlm_flax.model.losses import masked_lm_loss
from xlm_flax.model.outputs import MaskedLMOutput
from xlm_flax.model.pretrained import PretrainedMixin


class XLMPredLayer(nnx.Module):
    """The prediction layer: logits over the vocabulary from hidden states.

    With `tie_word_embeddings` (every public checkpoint) the projection reuses the word-embedding matrix and owns
    only its bias, `pred_layer.proj.bias`; otherwise it has its own `[embed, vocab]` kernel as well.

    Args:
        config: The model's hyper-parameters.
        dtype: Compute dtype.
        param_dtype: Storage dtype of the parameters.
        rngs: Random streams for parameter initialisation.
    """

    def __init__(self, config: XLMConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
        self.dtype = dtype
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
                rngs=rngs,
            )

    def __call__(self, x: jax.Array, word_embeddings: jax.Array) -> jax.Array:
        """Maps `[batch, length, emb_dim]` to float32 logits `[batch, length, vocab]`.

        Args:
            x: Final hidden states.
            word_embeddings: The `[vocab, emb_dim]` table, used when the weights are tied.
        """
        if self.tied:
            kernel = word_embeddings.astype(self.dtype)
            logits = jnp.einsum("BTD,VD->BTV", x.astype(self.dtype), kernel, preferred_element_type=jnp.float32)
        else:
            kernel = self.proj.kernel[...].astype(self.dtype)
            logits = jnp.einsum("BTD,DV->BTV", x.astype(self.dtype), kernel, preferred_element_type=jnp.float32)
        return logits + self.proj.bias[...].astype(jnp.float32)


class _Bias(nnx.Module):
    """Holds only a bias, so that the tied projection's parameter path is `pred_layer.proj.bias`."""

    def __init__(self, features: int, param_dtype: DTypeLike):
        self.bias = param(jnp.zeros((features,), param_dtype), ("vocab",))


class XLMWithLMHeadModel(PretrainedMixin, nnx.Module):
    """XLM encoder plus the language-model head (transformers' `XLMWithLMHeadModel`).

    Args:
        config: The model's hyper-parameters.
        rngs: Random streams for parameter initialisation.
        dtype: Compute dtype; logits are float32 whatever it is.
        param_dtype: Storage dtype of the parameters.
        layers: Layout of the layer stack, `"scan"`, `"unrolled"` or `"per_layer"`; see `XLMModel`.
        remat: See `XLMModel`.
        scan_layers: Deprecated alias of `layers`; see `XLMModel`.
    """

    architecture = "XLMWithLMHeadModel"

    def __init__(
        self,
        config: XLMConfig,
        *,
        rngs: nnx.Rngs,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        layers: str = "scan",
        remat: bool = False,
        scan_layers: bool | None = None,
    ):
        self.config = config
        self.transformer = XLMModel(
            config,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
            layers=layers,
            remat=remat,
            scan_layers=scan_layers,
        )
        self.pred_layer = XLMPredLayer(config, dtype=self.transformer.dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(
        self,
        input_ids: jax.Array | None = None,  # [batch, length]
        attention_mask: jax.Array | None = None,  # [batch, length]
        langs: jax.Array | None = None,  # [batch, length]
        token_type_ids: jax.Array | None = None,  # [batch, length]
        position_ids: jax.Array | None = None,  # [batch, length]
        lengths: jax.Array | None = None,  # [batch]
        *,
        labels: jax.Array | None = None,  # [batch, length], -100 where no loss is wanted
        inputs_embeds: jax.Array | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> MaskedLMOutput:
        """Encodes a batch and predicts every position's token.

        Args are those of `XLMModel.__call__`, plus `labels`: when given, `loss` is the mean cross-entropy over
        positions whose label is not -100.

        Args:
            input_ids: Token ids `[batch, length]`.
            attention_mask: `[batch, length]`, nonzero on tokens.
            langs: Language id of every token `[batch, length]` (models with language embeddings).
            token_type_ids: `[batch, length]` ids added through the word-embedding table.
            position_ids: `[batch, length]`; defaults to `0..length-1`.
            lengths: `[batch]` tokens to attend to, when no `attention_mask` is given.
            labels: `[batch, length]` token ids to predict; -100 is ignored (the MLM loss).
            inputs_embeds: Word embeddings `[batch, length, emb_dim]` instead of `input_ids`.
            output_hidden_states: Also return the embeddings output and every layer's output.
            output_attentions: Also return every layer's attention weights.
            deterministic: Disable dropout; when false, `rngs` must have a `dropout` stream.
            rngs: Random streams for dropout.

        Returns:
            A `MaskedLMOutput` with float32 `logits [batch, length, vocab]`.
        """
        out = self.transformer(
            input_ids,
            attention_mask,
            langs,
            token_type_ids,
            position_ids,
            lengths,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            deterministic=deterministic,
            rngs=rngs,
        )
        logits = self.pred_layer(out.last_hidden_state, self.transformer.embeddings.embedding[...])
        loss = masked_lm_loss(logits, labels) if labels is not None else None
        return MaskedLMOutput(logits=logits, loss=loss, hidden_states=out.hidden_states, attentions=out.attentions)


__all__ = ["XLMPredLayer", "XLMWithLMHeadModel"]
