"""Output dataclasses of the models, named, shaped and accessed as transformers' outputs.

Each output is a `flax.struct.dataclass` (a pytree: it crosses `jax.jit`, `jax.tree.map` and `nnx` transforms) with
transformers' `ModelOutput` access on top: `out.logits`, `out["logits"]`, `out[0]`, `out.to_tuple()`, `keys()`,
`items()`, in transformers' order (`loss` first when present) with None fields skipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import flax.struct
import jax


class ModelOutput:
    """transformers' `ModelOutput` access for our output dataclasses.

    As in transformers, the fields that are None are not keys: `out[0]` is `loss` when labels were given and
    `logits` otherwise, `len(out)` counts the fields that are set, and iterating yields the keys (a dict's
    behaviour). The fields are in transformers' order: `loss` first, then as declared.
    """

    def keys(self) -> list[str]:
        """Names of the fields that are not None, in transformers' order."""
        names = [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]
        if "loss" in names:
            names.remove("loss")
            names.insert(0, "loss")
        return [name for name in names if getattr(self, name) is not None]

    def values(self) -> list[Any]:
        """Values of `keys()`."""
        return [getattr(self, name) for name in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        """`(name, value)` of `keys()`."""
        return [(name, getattr(self, name)) for name in self.keys()]

    def to_tuple(self) -> tuple[Any, ...]:
        """The values that are not None, in transformers' order (its `ModelOutput.to_tuple`)."""
        return tuple(self.values())

    def get(self, key: str, default: Any = None) -> Any:
        """The value of field `key` when it is set, else `default`."""
        return getattr(self, key) if key in self.keys() else default

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


@flax.struct.dataclass
class BaseModelOutput(ModelOutput):
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
class MaskedLMOutput(ModelOutput):
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
class ClassifierOutput(ModelOutput):
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
class QuestionAnsweringOutput(ModelOutput):
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
class SquadOutput(ModelOutput):
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


__all__ = [
    "BaseModelOutput",
    "ClassifierOutput",
    "MaskedLMOutput",
    "ModelOutput",
    "QuestionAnsweringOutput",
    "SquadOutput",
]
