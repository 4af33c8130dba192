"""Question-answering heads: the linear span head and the SQuAD beam-search head.

`XLMForQuestionAnsweringSimple` clamps positions to `[0, length]` and ignores exactly `length`, as the reference
does, so a -100 label becomes position 0 and counts.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from xlm_flax.config import XLMConfig
from xlm_flax.errors import ConfigError
from xlm_flax.model.heads.common import _check_positions, _dense, _HeadModel
from xlm_flax.model.heads.squad import SquadHead
from xlm_flax.model.losses import cross_entropy
from xlm_flax.model.outputs import QuestionAnsweringOutput, SquadOutput


class XLMForQuestionAnsweringSimple(_HeadModel):
    """XLM with a linear span head (transformers' `XLMForQuestionAnsweringSimple`): `qa_outputs` maps each hidden
    state to a start and an end logit. Built as `XLMForQuestionAnsweringSimple(config, rngs=rngs, **options)` (see
    `_HeadModel`).

    Raises:
        ConfigError: unless `num_labels == 2` (the reference splits the output into exactly start and end).
    """

    architecture = "XLMForQuestionAnsweringSimple"

    @classmethod
    def _check_config(cls, config: XLMConfig) -> None:
        if config.num_labels != 2:
            raise ConfigError(
                f"config field num_labels={config.num_labels}: XLMForQuestionAnsweringSimple needs 2 (start, end)"
            )

    def _build_head(self, config: XLMConfig, **layer: Any) -> None:
        self.qa_outputs = _dense(config, config.emb_dim, 2, ("embed", "classes"), **layer)

    def __call__(
        self,
        *args: Any,
        start_positions: jax.Array | None = None,  # [batch]
        end_positions: jax.Array | None = None,  # [batch]
        **kwargs: Any,
    ) -> QuestionAnsweringOutput:
        """Scores every position as answer start and end.

        With both `start_positions` and `end_positions`, `loss` is the mean of the two cross-entropies; positions
        are clamped to `[0, length]` and `length` itself is ignored, as in the reference.

        Args:
            *args: The encoder's inputs by position, as `XLMModel.__call__` takes them (`input_ids`, ...).
            start_positions: `[batch]` answer start (with `end_positions`: the loss).
            end_positions: `[batch]` answer end.
            **kwargs: The encoder's arguments by name (`XLMModel.__call__`).
        """
        out = self._encode(self._encoder_inputs(args, kwargs))
        logits = self.qa_outputs(out.last_hidden_state).astype(jnp.float32)  # [B, S, 2]
        start_logits, end_logits = logits[..., 0], logits[..., 1]
        loss = None
        if start_positions is not None and end_positions is not None:
            batch, length = start_logits.shape
            start = jnp.clip(_check_positions("start_positions", start_positions, batch), 0, length)
            end = jnp.clip(_check_positions("end_positions", end_positions, batch), 0, length)
            loss = (cross_entropy(start_logits, start, length) + cross_entropy(end_logits, end, length)) / 2
        return QuestionAnsweringOutput(
            start_logits=start_logits,
            end_logits=end_logits,
            loss=loss,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )


class XLMForQuestionAnswering(_HeadModel):
    """XLM with the SQuAD beam-search head (transformers' `XLMForQuestionAnswering`); see `SquadHead` and
    `SquadOutput`. The beam sizes are `config.start_n_top` and `config.end_n_top`. Built as
    `XLMForQuestionAnswering(config, rngs=rngs, **options)` (see `_HeadModel`).
    """

    architecture = "XLMForQuestionAnswering"

    def _build_head(self, config: XLMConfig, **layer: Any) -> None:
        self.qa_outputs = SquadHead(config, **layer)

    def __call__(
        self,
        *args: Any,
        start_positions: jax.Array | None = None,  # [batch]
        end_positions: jax.Array | None = None,  # [batch]
        is_impossible: jax.Array | None = None,  # [batch] 0/1
        cls_index: jax.Array | None = None,  # [batch]
        p_mask: jax.Array | None = None,  # [batch, length], 1 where the answer cannot be
        **kwargs: Any,
    ) -> SquadOutput:
        """Training loss (given both positions) or beam-search outputs (otherwise); see `SquadOutput`.

        `start_positions`/`end_positions` are the answer span, for the loss; `is_impossible` (with `cls_index`)
        adds the answerability loss; `cls_index` is the position of the CLS token per row (None: the last
        position); `p_mask` marks positions that cannot be part of an answer (1.0 = masked).

        Args:
            *args: The encoder's inputs by position, as `XLMModel.__call__` takes them (`input_ids`, ...).
            start_positions: `[batch]` answer start (with `end_positions`: the training loss).
            end_positions: `[batch]` answer end.
            is_impossible: `[batch]` 1 for unanswerable questions (SQuAD 2.0 loss).
            cls_index: `[batch]` position of the CLS token; None takes the last position.
            p_mask: `[batch, length]`, 1 where the answer cannot be.
            **kwargs: The encoder's arguments by name (`XLMModel.__call__`).
        """
        inputs = self._encoder_inputs(args, kwargs)
        tokens = inputs["input_ids"] if inputs["input_ids"] is not None else inputs["inputs_embeds"]
        if (start_positions is None or end_positions is None) and tokens is not None:
            self.qa_outputs.check_length(tokens.shape[1])  # fail before running the encoder
        out = self._encode(inputs)
        head = self.qa_outputs(
            out.last_hidden_state,
            start_positions=start_positions,
            end_positions=end_positions,
            cls_index=cls_index,
            is_impossible=is_impossible,
            p_mask=None if p_mask is None else jnp.asarray(p_mask),
        )
        return head.replace(hidden_states=out.hidden_states, attentions=out.attentions)


__all__ = ["XLMForQuestionAnswering", "XLMForQuestionAnsweringSimple"]
