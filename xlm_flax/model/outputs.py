"""Output dataclasses of the models, named and shaped as transformers' outputs."""

from __future__ import annotations

import flax.struct
import jax


@flax.struct.dataclass
class BaseModelOutput:
    """Output of `XLMModel`, as transformers' `BaseModelOutput`.

    Attributes:
        last_hidden_state: `[batch, length, emb_dim]` in the compute dtype.
        hidden_states: When asked for, `n_layers + 1` arrays: the embeddings output, then each layer's output.
        attentions: When asked for, `n_layers` attention-weight arrays `[batch, heads, length, length]`.
    """

    last_hidden_state: jax.Array
    hidden_states: tuple[jax.Array, ...] | None = None
    attentions: tuple[jax.Array, ...] | None = None


@flax.struct.dataclass
class MaskedLMOutput:
    """Output of `XLMWithLMHeadModel`, as transformers' `MaskedLMOutput`.

    Attributes:
        logits: `[batch, length, vocab_size]`, always float32.
        loss: Mean cross-entropy over labels that are not -100, when `labels` were given.
        hidden_states: As in `BaseModelOutput`.
        attentions: As in `BaseModelOutput`.
    """

    logits: jax.Array
    loss: jax.Array | None = None
    hidden_states: tuple[jax.Array, ...] | None = None
    attentions: tuple[jax.Array, ...] | None = None


@flax.struct.dataclass
class ClassifierOutput:
    """Output of the sequence, token and multiple-choice heads (transformers' `SequenceClassifierOutput`,
    `TokenClassifierOutput`, `MultipleChoiceModelOutput`).

    Attributes:
        logits: float32; `[batch, num_labels]` (sequence), `[batch, length, num_labels]` (token) or
            `[batch, num_choices]` (multiple choice).
        loss: Scalar, when labels were given.
        hidden_states: The encoder's, when asked for (multiple choice: over `batch * num_choices` rows).
        attentions: The encoder's, when asked for.
    """

    logits: jax.Array
    loss: jax.Array | None = None
    hidden_states: tuple[jax.Array, ...] | None = None
    attentions: tuple[jax.Array, ...] | None = None


@flax.struct.dataclass
class QuestionAnsweringOutput:
    """Output of `XLMForQuestionAnsweringSimple` (transformers' `QuestionAnsweringModelOutput`).

    Attributes:
        start_logits: `[batch, length]` float32.
        end_logits: `[batch, length]` float32.
        loss: Mean of the start and end cross-entropies, when both positions were given.
        hidden_states: The encoder's, when asked for.
        attentions: The encoder's, when asked for.
    """

    start_logits: jax.Array
    end_logits: jax.Array
    loss: jax.Array | None = None
    hidden_states: tuple[jax.Array, ...] | None = None
    attentions: tuple[jax.Array, ...] | None = None


@flax.struct.dataclass
class SquadOutput:
    """Output of `XLMForQuestionAnswering` (transformers' `XLMForQuestionAnsweringOutput`).

    With start and end positions (training) only `loss` is set; without them (inference) the beam outputs are.

    Attributes:
        loss: `(start_loss + end_loss) / 2`, plus `0.5 * answerability loss` when `cls_index` and `is_impossible`
            are given.
        start_top_log_probs: `[batch, start_n_top]` softmax probabilities of the best starts (named as in the
            reference, which returns probabilities, not logarithms).
        start_top_index: `[batch, start_n_top]` their positions.
        end_top_log_probs: `[batch, end_n_top * start_n_top]` probabilities of the best ends for each start,
            end-major.
        end_top_index: `[batch, end_n_top * start_n_top]` their positions.
        cls_logits: `[batch]` answerability logits.
        hidden_states: The encoder's, when asked for.
        attentions: The encoder's, when asked for.
    """

    loss: jax.Array | None = None
    start_top_log_probs: jax.Array | None = None
    start_top_index: jax.Array | None = None
    end_top_log_probs: jax.Array | None = None
    end_top_index: jax.Array | None = None
    cls_logits: jax.Array | None = None
    hidden_states: tuple[jax.Array, ...] | None = None
    attentions: tuple[jax.Array, ...] | None = None


__all__ = ["BaseModelOutput", "ClassifierOutput", "MaskedLMOutput", "QuestionAnsweringOutput", "SquadOutput"]
