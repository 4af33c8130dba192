"""Multiple choice: `[batch, choices, length]` inputs flattened to `[batch * choices, length]` (`lengths` is
ignored, as in the reference)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from xlm_flax.config import XLMConfig
from xlm_flax.errors import ConfigError
from xlm_flax.model.heads.common import _dense, _HeadModel, logger
from xlm_flax.model.heads.summary import SequenceSummary
from xlm_flax.model.losses import cross_entropy
from xlm_flax.model.outputs import ClassifierOutput

# The encoder inputs that gain a choices axis here, with the number of trailing axes each keeps when flattened.
_PER_CHOICE = {
    "input_ids": 1,
    "attention_mask": 1,
    "langs": 1,
    "token_type_ids": 1,
    "position_ids": 1,
    "inputs_embeds": 2,
}


class XLMForMultipleChoice(_HeadModel):
    """XLM scoring each of several choices (transformers' `XLMForMultipleChoice`): sequence summary, then
    `logits_proj` from `num_labels` features to one score per choice. Built as `XLMForMultipleChoice(config,
    rngs=rngs, **options)` (see `_HeadModel`).

    Raises:
        ConfigError: when the summary does not produce `num_labels` features (the reference would fail at its
            first call).
    """

    architecture = "XLMForMultipleChoice"

    @classmethod
    def _check_config(cls, config: XLMConfig) -> None:
        SequenceSummary.check_config(config)
        features = SequenceSummary.features(config)
        if features != config.num_labels:
            raise ConfigError(
                f"config field num_labels={config.num_labels}: XLMForMultipleChoice projects the {features}-feature "
                "summary with a num_labels-input layer; set summary_use_proj and summary_proj_to_labels to true"
            )

    def _build_head(self, config: XLMConfig, **layer: Any) -> None:
        self.sequence_summary = SequenceSummary(config, **layer)
        self.logits_proj = _dense(config, config.num_labels, 1, ("classes", None), **layer)

    def __call__(
        self,
        *args: Any,
        labels: jax.Array | None = None,  # [batch] index of the right choice
        **kwargs: Any,
    ) -> ClassifierOutput:
        """Scores every choice: float32 `logits [batch, choices]`; with `labels`, the mean cross-entropy.

        The encoder's inputs have a choices axis (`input_ids [batch, choices, length]`, `inputs_embeds [batch,
        choices, length, emb_dim]`, ...) and are flattened to `[batch * choices, ...]` for the encoder. `lengths`
        is ignored with a warning (the reference does the same; use `attention_mask`).

        Args:
            *args: The encoder's inputs by position, as `XLMModel.__call__` takes them, with a choices axis.
            labels: `[batch]` index of the right choice.
            **kwargs: The encoder's arguments by name (`XLMModel.__call__`); `deterministic` and `rngs` drive the
                summary's dropouts too.
        """
        inputs = self._encoder_inputs(args, kwargs)
        tokens = inputs["input_ids"] if inputs["input_ids"] is not None else inputs["inputs_embeds"]
        if tokens is None:
            raise ValueError("give input_ids or inputs_embeds")
        n_choices = tokens.shape[1]
        if inputs["lengths"] is not None:
            logger.warning("XLMForMultipleChoice ignores `lengths` (as transformers does); use attention_mask")
            inputs["lengths"] = None
        for name, trailing in _PER_CHOICE.items():
            if inputs[name] is not None:
                inputs[name] = jnp.asarray(inputs[name]).reshape(-1, *jnp.shape(inputs[name])[-trailing:])
        out = self._encode(inputs)
        summary = self.sequence_summary(
            out.last_hidden_state, deterministic=inputs["deterministic"], rngs=inputs["rngs"]
        )
        logits = self.logits_proj(summary).astype(jnp.float32).reshape(-1, n_choices)
        loss = cross_entropy(logits, jnp.asarray(labels)) if labels is not None else None
        return ClassifierOutput(logits=logits, loss=loss, hidden_states=out.hidden_states, attentions=out.attentions)


__all__ = ["XLMForMultipleChoice"]
