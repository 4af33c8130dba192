"""Sequence and token classification heads.

The sequence summary's `"last"` takes the last position even when it is padding (whose hidden state is zero), as
in the reference.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from xlm_flax.config import XLMConfig
from xlm_flax.errors import ConfigError
from xlm_flax.model.heads.common import _dense, _dropout_key, _HeadModel
from xlm_flax.model.heads.summary import SequenceSummary
from xlm_flax.model.layers import dropout
from xlm_flax.model.losses import binary_cross_entropy_with_logits, cross_entropy, mean_squared_error
from xlm_flax.model.outputs import ClassifierOutput


class XLMForSequenceClassification(_HeadModel):
    """XLM with a sequence-summary classifier (transformers' `XLMForSequenceClassification`).

    Built as `XLMForSequenceClassification(config, rngs=rngs, **options)` (see `_HeadModel`); `num_labels` and the
    `summary_*` fields of the config shape the head.

    Raises:
        ConfigError: for a summary the reference cannot build either (`summary_type="attn"`, unknown activation).
    """

    architecture = "XLMForSequenceClassification"

    @classmethod
    def _check_config(cls, config: XLMConfig) -> None:
        SequenceSummary.check_config(config)

    def _build_head(self, config: XLMConfig, **layer: Any) -> None:
        self.sequence_summary = SequenceSummary(config, **layer)

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
        *args: Any,
        labels: jax.Array | None = None,  # [batch] int, [batch] float (regression) or [batch, num_labels] float
        cls_index: jax.Array | None = None,  # [batch]
        **kwargs: Any,
    ) -> ClassifierOutput:
        """Classifies each sequence: float32 `logits [batch, num_labels]`.

        With `labels`, `loss` is the MSE (regression), cross-entropy (single label) or binary cross-entropy
        (multi-label), chosen as in `problem_type`. `cls_index` is the position summarised per row when
        `summary_type="cls_index"`; transformers' forward has no such argument and always takes the last position,
        which is what None does.

        Args:
            *args: The encoder's inputs by position, as `XLMModel.__call__` takes them (`input_ids`, ...).
            labels: `[batch]` class ids, `[batch]` floats (regression) or `[batch, num_labels]` floats (multi-
                label).
            cls_index: `[batch]` position to summarise per row for `summary_type="cls_index"`.
            **kwargs: The encoder's arguments by name (`XLMModel.__call__`); `deterministic` and `rngs` drive the
                summary's dropouts too.
        """
        inputs = self._encoder_inputs(args, kwargs)
        out = self._encode(inputs)
        summary = self.sequence_summary(
            out.last_hidden_state, cls_index, deterministic=inputs["deterministic"], rngs=inputs["rngs"]
        )
        logits = summary.astype(jnp.float32)
        loss = None if labels is None else self._loss(logits, jnp.asarray(labels))
        return ClassifierOutput(logits=logits, loss=loss, hidden_states=out.hidden_states, attentions=out.attentions)

    def _loss(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        problem = self.problem_type(labels)
        if problem == "regression":
            if self.config.num_labels == 1:
                return mean_squared_error(logits.reshape(-1), labels.reshape(-1))
            return mean_squared_error(logits, labels)
        if problem == "single_label_classification":
            # As the reference: a summary without projection to num_labels cannot take this loss.
            return cross_entropy(logits.reshape(-1, self.config.num_labels), labels.reshape(-1))
        if problem == "multi_label_classification":
            return binary_cross_entropy_with_logits(logits, labels)
        raise ConfigError(
            f"config field problem_type={problem!r}: use regression, single_label_classification or "
            "multi_label_classification"
        )


class XLMForTokenClassification(_HeadModel):
    """XLM with a per-token classifier (transformers' `XLMForTokenClassification`): dropout (`config.dropout`)
    then `classifier`, a linear map to `num_labels`. Built as `XLMForTokenClassification(config, rngs=rngs,
    **options)` (see `_HeadModel`).
    """

    architecture = "XLMForTokenClassification"

    def _build_head(self, config: XLMConfig, **layer: Any) -> None:
        self.classifier = _dense(config, config.emb_dim, config.num_labels, ("embed", "classes"), **layer)

    def __call__(
        self,
        *args: Any,
        labels: jax.Array | None = None,  # [batch, length] int, -100 where no loss is wanted
        **kwargs: Any,
    ) -> ClassifierOutput:
        """Classifies every token: float32 `logits [batch, length, num_labels]`; with `labels`, the mean
        cross-entropy over labels that are not -100.

        Args:
            *args: The encoder's inputs by position, as `XLMModel.__call__` takes them (`input_ids`, ...).
            labels: `[batch, length]` class ids; -100 is ignored.
            **kwargs: The encoder's arguments by name (`XLMModel.__call__`); `deterministic` and `rngs` drive the
                classifier's dropout too.
        """
        inputs = self._encoder_inputs(args, kwargs)
        out = self._encode(inputs)
        rate = self.config.dropout
        x = dropout(out.last_hidden_state, rate, _dropout_key(rate, inputs["deterministic"], inputs["rngs"]))
        logits = self.classifier(x).astype(jnp.float32)
        loss = None
        if labels is not None:
            loss = cross_entropy(logits.reshape(-1, logits.shape[-1]), jnp.asarray(labels).reshape(-1))
        return ClassifierOutput(logits=logits, loss=loss, hidden_states=out.hidden_states, attentions=out.attentions)


__all__ = ["XLMForSequenceClassification", "XLMForTokenClassification"]
