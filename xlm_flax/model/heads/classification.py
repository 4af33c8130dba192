"""Sequence and token classification heads.

The sequence summary's `"last"` takes the last position even when it is padding (whose hidden state is zero), as
in the reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xlm_flax.config import XLMConfig
from xlm_flax.errors import ConfigError
from xlm_flax.model.heads.common import _dense, _dropout_key, _HeadModel
from xlm_flax.model.heads.summary import SequenceSummary
from xlm_flax.model.layers import DTypeLike, dropout
from xlm_flax.model.losses import _mean_squared_error, binary_cross_entropy_with_logits, cross_entropy
from xlm_flax.model.outputs import ClassifierOutput


class XLMForSequenceClassification(_HeadModel):
    """XLM with a sequence-summary classifier (transformers' `XLMForSequenceClassification`).

    Args:
        config: Hyper-parameters; `num_labels` and the `summary_*` fields shape the head.
        rngs: Random streams for parameter initialisation.
        dtype: Compute dtype; logits and losses are float32.
        param_dtype: Storage dtype of the parameters.
        scan_layers: See `XLMModel`.
        remat: See `XLMModel`.

    Raises:
        ConfigError: for a summary the reference cannot build either (`summary_type="attn"`, unknown activation).
    """

    architecture = "XLMForSequenceClassification"

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
        self._build_encoder(config, rngs, dtype, param_dtype, scan_layers, remat)
        self.sequence_summary = SequenceSummary(
            config, dtype=self.transformer.dtype, param_dtype=self.transformer.param_dtype, rngs=rngs
        )

    def problem_type(self, labels: jax.Array) -> str:
        """`config.json`'s `problem_type`, else what transformers infers: `regression` for one label,
        `single_label_classification` for integer labels, `multi_label_classification` otherwise.

        Args:
            labels: The labels passed to `__call__`.
        """
        declared = self.config.extra.get("problem_type")
        if declared:
            return declared
        if self.config.num_labels == 1:
            return "regression"
        if jnp.issubdtype(labels.dtype, jnp.integer):
            return "single_label_classification"
        return "multi_label_classification"

    def __call__(
        self,
        input_ids: jax.Array | None = None,  # [batch, length]
        attention_mask: jax.Array | None = None,  # [batch, length]
        langs: jax.Array | None = None,  # [batch, length]
        token_type_ids: jax.Array | None = None,  # [batch, length]
        position_ids: jax.Array | None = None,  # [batch, length]
        lengths: jax.Array | None = None,  # [batch]
        *,
        labels: jax.Array | None = None,  # [batch] int, [batch] float (regression) or [batch, num_labels] float
        cls_index: jax.Array | None = None,  # [batch]
        inputs_embeds: jax.Array | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> ClassifierOutput:
        """Classifies each sequence: float32 `logits [batch, num_labels]`.

        The encoder arguments are those of `XLMModel.__call__`. With `labels`, `loss` is the MSE (regression),
        cross-entropy (single label) or binary cross-entropy (multi-label), chosen as in `problem_type`.
        `cls_index` is the position summarised per row when `summary_type="cls_index"`; transformers' forward has
        no such argument and always takes the last position, which is what None does.

        Args:
            input_ids: Token ids `[batch, length]`.
            attention_mask: `[batch, length]`, nonzero on tokens.
            langs: Language id of every token `[batch, length]` (models with language embeddings).
            token_type_ids: `[batch, length]` ids added through the word-embedding table.
            position_ids: `[batch, length]`; defaults to `0..length-1`.
            lengths: `[batch]` tokens to attend to, when no `attention_mask` is given.
            labels: `[batch]` class ids, `[batch]` floats (regression) or `[batch, num_labels]` floats (multi-
                label).
            cls_index: `[batch]` position to summarise per row for `summary_type="cls_index"`.
            inputs_embeds: Word embeddings `[batch, length, emb_dim]` instead of `input_ids`.
            output_hidden_states: Also return the embeddings output and every layer's output.
            output_attentions: Also return every layer's attention weights.
            deterministic: Disable dropout; when false, `rngs` must have a `dropout` stream.
            rngs: Random streams for dropout.
        """
        inputs = dict(locals())
        out = self._encode(inputs, output_hidden_states, output_attentions, deterministic, rngs)
        logits = self.sequence_summary(out.last_hidden_state, cls_index, deterministic=deterministic, rngs=rngs).astype(
            jnp.float32
        )
        loss = None
        if labels is not None:
            labels = jnp.asarray(labels)
            problem = self.problem_type(labels)
            if problem == "regression":
                if self.config.num_labels == 1:
                    loss = _mean_squared_error(logits.reshape(-1), labels.reshape(-1))
                else:
                    loss = _mean_squared_error(logits, labels)
            elif problem == "single_label_classification":
                # As the reference: a summary without projection to num_labels cannot take this loss.
                loss = cross_entropy(logits.reshape(-1, self.config.num_labels), labels.reshape(-1))
            elif problem == "multi_label_classification":
                loss = binary_cross_entropy_with_logits(logits, labels)
            else:
                raise ConfigError(
                    f"config field problem_type={problem!r}: use regression, single_label_classification or "
                    "multi_label_classification"
                )
        return ClassifierOutput(logits=logits, loss=loss, hidden_states=out.hidden_states, attentions=out.attentions)


class XLMForTokenClassification(_HeadModel):
    """XLM with a per-token classifier (transformers' `XLMForTokenClassification`): dropout (`config.dropout`)
    then `classifier`, a linear map to `num_labels`.

    Args:
        config: The model's hyper-parameters.
        rngs: Random streams for parameter initialisation (`params`).
        dtype: Compute dtype; logits and losses are float32.
        param_dtype: Storage dtype of the parameters.
        scan_layers: See `XLMModel`.
        remat: See `XLMModel`.
    """

    architecture = "XLMForTokenClassification"

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
        self._build_encoder(config, rngs, dtype, param_dtype, scan_layers, remat)
        self.classifier = _dense(
            config,
            config.emb_dim,
            config.num_labels,
            ("embed", "classes"),
            dtype=self.transformer.dtype,
            param_dtype=self.transformer.param_dtype,
            rngs=rngs,
        )

    def __call__(
        self,
        input_ids: jax.Array | None = None,  # [batch, length]
        attention_mask: jax.Array | None = None,  # [batch, length]
        langs: jax.Array | None = None,  # [batch, length]
        token_type_ids: jax.Array | None = None,  # [batch, length]
        position_ids: jax.Array | None = None,  # [batch, length]
        lengths: jax.Array | None = None,  # [batch]
        *,
        labels: jax.Array | None = None,  # [batch, length] int, -100 where no loss is wanted
        inputs_embeds: jax.Array | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> ClassifierOutput:
        """Classifies every token: float32 `logits [batch, length, num_labels]`; with `labels`, the mean
        cross-entropy over labels that are not -100. Encoder arguments as in `XLMModel.__call__`.

        Args:
            input_ids: Token ids `[batch, length]`.
            attention_mask: `[batch, length]`, nonzero on tokens.
            langs: Language id of every token `[batch, length]` (models with language embeddings).
            token_type_ids: `[batch, length]` ids added through the word-embedding table.
            position_ids: `[batch, length]`; defaults to `0..length-1`.
            lengths: `[batch]` tokens to attend to, when no `attention_mask` is given.
            labels: `[batch, length]` class ids; -100 is ignored.
            inputs_embeds: Word embeddings `[batch, length, emb_dim]` instead of `input_ids`.
            output_hidden_states: Also return the embeddings output and every layer's output.
            output_attentions: Also return every layer's attention weights.
            deterministic: Disable dropout; when false, `rngs` must have a `dropout` stream.
            rngs: Random streams for dropout.
        """
        inputs = dict(locals())
        out = self._encode(inputs, output_hidden_states, output_attentions, deterministic, rngs)
        x = dropout(out.last_hidden_state, self.config.dropout, _dropout_key(self.config.dropout, deterministic, rngs))
        logits = self.classifier(x).astype(jnp.float32)
        loss = None
        if labels is not None:
            loss = cross_entropy(logits.reshape(-1, logits.shape[-1]), jnp.asarray(labels).reshape(-1))
        return ClassifierOutput(logits=logits, loss=loss, hidden_states=out.hidden_states, attentions=out.attentions)


__all__ = ["XLMForSequenceClassification", "XLMForTokenClassification"]
