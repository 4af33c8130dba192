"""Question-answering heads: the linear span head and the SQuAD beam-search head.

`XLMForQuestionAnsweringSimple` clamps positions to `[0, length]` and ignores exactly `length`, as the reference
does, so a -100 label becomes position 0 and counts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xlm_flax.config import XLMConfig
from xlm_flax.errors import ConfigError
from xlm_flax.model.heads.common import _check_positions, _dense, _HeadModel
from xlm_flax.model.heads.squad import SquadHead
from xlm_flax.model.layers import DTypeLike
from xlm_flax.model.losses import cross_entropy
from xlm_flax.model.outputs import QuestionAnsweringOutput, SquadOutput


class XLMForQuestionAnsweringSimple(_HeadModel):
    """XLM with a linear span head (transformers' `XLMForQuestionAnsweringSimple`): `qa_outputs` maps each hidden
    state to a start and an end logit.

    Args:
        config: The model's hyper-parameters.
        rngs: Random streams for parameter initialisation (`params`).
        dtype: Compute dtype; logits and losses are float32.
        param_dtype: Storage dtype of the parameters.
        scan_layers: See `XLMModel`.
        remat: See `XLMModel`.

    Raises:
        ConfigError: unless `num_labels == 2` (the reference splits the output into exactly start and end).
    """

    architecture = "XLMForQuestionAnsweringSimple"

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
        if config.num_labels != 2:
            raise ConfigError(
                f"config field num_labels={config.num_labels}: XLMForQuestionAnsweringSimple needs 2 (start, end)"
            )
        self._build_encoder(config, rngs, dtype, param_dtype, scan_layers, remat)
        self.qa_outputs = _dense(
            config,
            config.emb_dim,
            2,
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
        start_positions: jax.Array | None = None,  # [batch]
        end_positions: jax.Array | None = None,  # [batch]
        inputs_embeds: jax.Array | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> QuestionAnsweringOutput:
        """Scores every position as answer start and end (encoder arguments as in `XLMModel.__call__`).

        With both `start_positions` and `end_positions`, `loss` is the mean of the two cross-entropies; positions
        are clamped to `[0, length]` and `length` itself is ignored, as in the reference.

        Args:
            input_ids: Token ids `[batch, length]`.
            attention_mask: `[batch, length]`, nonzero on tokens.
            langs: Language id of every token `[batch, length]` (models with language embeddings).
            token_type_ids: `[batch, length]` ids added through the word-embedding table.
            position_ids: `[batch, length]`; defaults to `0..length-1`.
            lengths: `[batch]` tokens to attend to, when no `attention_mask` is given.
            start_positions: `[batch]` answer start (with `end_positions`: the loss).
            end_positions: `[batch]` answer end.
            inputs_embeds: Word embeddings `[batch, length, emb_dim]` instead of `input_ids`.
            output_hidden_states: Also return the embeddings output and every layer's output.
            output_attentions: Also return every layer's attention weights.
            deterministic: Disable dropout; when false, `rngs` must have a `dropout` stream.
            rngs: Random streams for dropout.
        """
        inputs = dict(locals())
        out = self._encode(inputs, output_hidden_states, output_attentions, deterministic, rngs)
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
    `SquadOutput`. The beam sizes are `config.start_n_top` and `config.end_n_top`.

    Args:
        config: The model's hyper-parameters.
        rngs: Random streams for parameter initialisation (`params`).
        dtype: Compute dtype; logits and losses are float32.
        param_dtype: Storage dtype of the parameters.
        scan_layers: See `XLMModel`.
        remat: See `XLMModel`.
    """

    architecture = "XLMForQuestionAnswering"

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
        self.qa_outputs = SquadHead(
            config, dtype=self.transformer.dtype, param_dtype=self.transformer.param_dtype, rngs=rngs
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
        start_positions: jax.Array | None = None,  # [batch]
        end_positions: jax.Array | None = None,  # [batch]
        is_impossible: jax.Array | None = None,  # [batch] 0/1
        cls_index: jax.Array | None = None,  # [batch]
        p_mask: jax.Array | None = None,  # [batch, length], 1 where the answer cannot be
        inputs_embeds: jax.Array | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> SquadOutput:
        """Training loss (given both positions) or beam-search outputs (otherwise); see `SquadOutput`.

        The encoder arguments are those of `XLMModel.__call__`. `start_positions`/`end_positions` are the answer
        span, for the loss; `is_impossible` (with `cls_index`) adds the answerability loss; `cls_index` is the
        position of the CLS token per row (None: the last position); `p_mask` marks positions that cannot be part
        of an answer (1.0 = masked).

        Args:
            input_ids: Token ids `[batch, length]`.
            attention_mask: `[batch, length]`, nonzero on tokens.
            langs: Language id of every token `[batch, length]` (models with language embeddings).
            token_type_ids: `[batch, length]` ids added through the word-embedding table.
            position_ids: `[batch, length]`; defaults to `0..length-1`.
            lengths: `[batch]` tokens to attend to, when no `attention_mask` is given.
            start_positions: `[batch]` answer start (with `end_positions`: the training loss).
            end_positions: `[batch]` answer end.
            is_impossible: `[batch]` 1 for unanswerable questions (SQuAD 2.0 loss).
            cls_index: `[batch]` position of the CLS token; None takes the last position.
            p_mask: `[batch, length]`, 1 where the answer cannot be.
            inputs_embeds: Word embeddings `[batch, length, emb_dim]` instead of `input_ids`.
            output_hidden_states: Also return the embeddings output and every layer's output.
            output_attentions: Also return every layer's attention weights.
            deterministic: Disable dropout; when false, `rngs` must have a `dropout` stream.
            rngs: Random streams for dropout.
        """
        inputs = dict(locals())
        length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if (start_positions is None or end_positions is None) and length < max(
            self.config.start_n_top, self.config.end_n_top
        ):
            self.qa_outputs.check_length(length)  # fail before running the encoder
        out = self._encode(inputs, output_hidden_states, output_attentions, deterministic, rngs)
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
