"""Multiple choice: `[batch, choices, length]` inputs flattened to `[batch * choices, length]` (`lengths` is
ignored, as in the reference)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xlm_flax.config import XLMConfig
from xlm_flax.errors import ConfigError
from xlm_flax.model.heads.common import _dense, _HeadModel, logger
from xlm_flax.model.heads.summary import SequenceSummary
from xlm_flax.model.layers import DTypeLike
from xlm_flax.model.losses import cross_entropy
from xlm_flax.model.outputs import ClassifierOutput


class XLMForMultipleChoice(_HeadModel):
    """XLM scoring each of several choices (transformers' `XLMForMultipleChoice`): sequence summary, then
    `logits_proj` from `num_labels` features to one score per choice.

    Args:
        config: The model's hyper-parameters.
        rngs: Random streams for parameter initialisation (`params`).
        dtype: Compute dtype; logits and losses are float32.
        param_dtype: Storage dtype of the parameters.
        scan_layers: See `XLMModel`.
        remat: See `XLMModel`.

    Raises:
        ConfigError: when the summary does not produce `num_labels` features (the reference would fail at its
            first call).
    """

    architecture = "XLMForMultipleChoice"

    def __init__(
        self,
        config: XLMConfig,
        *,
        rngs: nnx.Rngs,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        scan_layers: bool = True,
        remat: bool = False,
    ):
        SequenceSummary.check_config(config)
        features = SequenceSummary.features(config)
        if features != config.num_labels:
            raise ConfigError(
                f"config field num_labels={config.num_labels}: XLMForMultipleChoice projects the {features}-feature "
                "summary with a num_labels-input layer; set summary_use_proj and summary_proj_to_labels to true"
            )
        self._build_encoder(config, rngs, dtype, param_dtype, scan_layers, remat)
        dtype, param_dtype = self.transformer.dtype, self.transformer.param_dtype
        self.sequence_summary = SequenceSummary(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.logits_proj = _dense(
            config, config.num_labels, 1, ("classes", None), dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(
        self,
        input_ids: jax.Array | None = None,  # [batch, choices, length]
        attention_mask: jax.Array | None = None,  # [batch, choices, length]
        langs: jax.Array | None = None,  # [batch, choices, length]
        token_type_ids: jax.Array | None = None,  # [batch, choices, length]
        position_ids: jax.Array | None = None,  # [batch, choices, length]
        lengths: jax.Array | None = None,  # ignored, as in the reference
        *,
        labels: jax.Array | None = None,  # [batch] index of the right choice
        inputs_embeds: jax.Array | None = None,  # [batch, choices, length, emb_dim]
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> ClassifierOutput:
        """Scores every choice: float32 `logits [batch, choices]`; with `labels`, the mean cross-entropy.

        Inputs have a choices axis and are flattened to `[batch * choices, length]` for the encoder. `lengths` is
        ignored with a warning (the reference does the same; use `attention_mask`).

        Args:
            input_ids: Token ids `[batch, choices, length]`.
            attention_mask: `[batch, choices, length]`, nonzero on tokens.
            langs: Language id of every token `[batch, choices, length]` (models with language embeddings).
            token_type_ids: `[batch, choices, length]` ids added through the word-embedding table.
            position_ids: `[batch, choices, length]`; defaults to `0..length-1`.
            lengths: `[batch, choices]` tokens to attend to, when no `attention_mask` is given.
            labels: `[batch]` index of the right choice.
            inputs_embeds: Word embeddings `[batch, choices, length, emb_dim]` instead of `input_ids`.
            output_hidden_states: Also return the embeddings output and every layer's output.
            output_attentions: Also return every layer's attention weights.
            deterministic: Disable dropout; when false, `rngs` must have a `dropout` stream.
            rngs: Random streams for dropout.
        """
        if input_ids is None and inputs_embeds is None:
            raise ValueError("give input_ids or inputs_embeds")
        n_choices = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if lengths is not None:
            logger.warning("XLMForMultipleChoice ignores `lengths` (as transformers does); use attention_mask")

        def flat(x, trailing=1):
            return None if x is None else jnp.asarray(x).reshape(-1, *jnp.shape(x)[-trailing:])

        inputs = dict(
            input_ids=flat(input_ids),
            attention_mask=flat(attention_mask),
            langs=flat(langs),
            token_type_ids=flat(token_type_ids),
            position_ids=flat(position_ids),
            lengths=None,
            inputs_embeds=flat(inputs_embeds, 2),
        )
        out = self._encode(inputs, output_hidden_states, output_attentions, deterministic, rngs)
        summary = self.sequence_summary(out.last_hidden_state, deterministic=deterministic, rngs=rngs)
        logits = self.logits_proj(summary).astype(jnp.float32).reshape(-1, n_choices)
        loss = cross_entropy(logits, jnp.asarray(labels)) if labels is not None else None
        return ClassifierOutput(logits=logits, loss=loss, hidden_states=out.hidden_states, attentions=out.attentions)


__all__ = ["XLMForMultipleChoice"]
