"""The one registry: transformers architecture name -> our model class and its PyTorch name table.

One explicit table (`ARCHITECTURES`, filled here; importing a model module registers nothing). Loading, conversion,
export, `Embedder`, `xlm-flax info` and the tests all look architectures up here; the rules themselves are built by
`xlm_flax.checkpoints.names`.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Iterable, Mapping

from xlm_flax.checkpoints.names import (
    ENCODER_PREFIX,
    Rule,
    encoder_rules,
    lm_head_rules,
    lm_head_tied_names,
    multiple_choice_rules,
    question_answering_rules,
    question_answering_simple_rules,
    sequence_summary_rules,
    token_classification_rules,
)
from xlm_flax.config import XLMConfig
from xlm_flax.errors import CheckpointError
from xlm_flax.model.encoder import XLMModel
from xlm_flax.model.heads.classification import XLMForSequenceClassification, XLMForTokenClassification
from xlm_flax.model.heads.multiple_choice import XLMForMultipleChoice
from xlm_flax.model.heads.question_answering import XLMForQuestionAnswering, XLMForQuestionAnsweringSimple
from xlm_flax.model.lm_head import XLMWithLMHeadModel


def _none_tied(config: XLMConfig) -> set[str]:
    del config
    return set()


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One model class and how its tensors are named in transformers.

    Attributes:
        model_class: Our class; its `architecture` attribute is transformers' class name.
        head_rules: Rules of the head's own tensors (the encoder's, under `transformer.`, are added); None for the
            bare encoder, whose names have no prefix.
        tied_names: transformers names that duplicate another tensor (tied weights) for a config: accepted on
            import, not written on export.
    """

    model_class: type
    head_rules: Callable[[XLMConfig], list[Rule]] | None
    tied_names: Callable[[XLMConfig], set[str]] = _none_tied

    @property
    def name(self) -> str:
        """transformers' class name (`XLMWithLMHeadModel`)."""
        return self.model_class.architecture

    @property
    def encoder_prefix(self) -> str:
        """Prefix of the encoder's tensor names: `""` for the bare encoder, `"transformer."` in head models."""
        return "" if self.head_rules is None else ENCODER_PREFIX

    def rules(self, config: XLMConfig) -> list[Rule]:
        """The full name table of this class for `config`.

        Args:
            config: Decides the optional tensors, the head count and the layer count.
        """
        if self.head_rules is None:
            return encoder_rules(config)
        return encoder_rules(config, ENCODER_PREFIX, ENCODER_PREFIX) + self.head_rules(config)


ARCHITECTURES: Mapping[str, Architecture] = types.MappingProxyType(
    {
        entry.name: entry
        for entry in (
            Architecture(XLMModel, None),
            Architecture(XLMWithLMHeadModel, lm_head_rules, lm_head_tied_names),
            Architecture(XLMForSequenceClassification, sequence_summary_rules),
            Architecture(XLMForTokenClassification, token_classification_rules),
            Architecture(XLMForQuestionAnsweringSimple, question_answering_simple_rules),
            Architecture(XLMForQuestionAnswering, question_answering_rules),
            Architecture(XLMForMultipleChoice, multiple_choice_rules),
        )
    }
)


# A view of the table: transformers architecture name -> our class.
MODEL_CLASSES: Mapping[str, type] = types.MappingProxyType({n: a.model_class for n, a in ARCHITECTURES.items()})


def architecture(name: str) -> Architecture:
    """The registry entry of a transformers architecture name.

    Args:
        name: E.g. `"XLMWithLMHeadModel"`.

    Raises:
        CheckpointError: for a name this package has no class for (the message lists the known ones).
    """
    if name not in ARCHITECTURES:
        raise CheckpointError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def model_class(name: str) -> type:
    """The model class of a transformers architecture name.

    Args:
        name: E.g. `"XLMWithLMHeadModel"`.

    Raises:
        CheckpointError: for an unknown name.
    """
    return architecture(name).model_class


def model_rules(name: str, config: XLMConfig) -> list[Rule]:
    """The full PyTorch name table of a model class, by transformers architecture name.

    The bare encoder has unprefixed names; every head model nests the encoder under `transformer.` on both sides.

    Args:
        name: transformers class name (`XLMModel`, `XLMWithLMHeadModel`, ...).
        config: The model's config.

    Raises:
        CheckpointError: for an unknown name.
    """
    return architecture(name).rules(config)


def tied_torch_names(name: str, config: XLMConfig) -> set[str]:
    """transformers names of `name` that duplicate another tensor: accepted on import, not written on export.

    Args:
        name: transformers class name.
        config: The model's config.
    """
    return architecture(name).tied_names(config)


def architecture_of(config: XLMConfig, tensor_names: Iterable[str] | None = None) -> str:
    """The architecture of a checkpoint: its config's `architectures` entry that this package has, else (for a config
    without one) what the tensor names show.

    Args:
        config: The checkpoint's config.
        tensor_names: Its tensor names (transformers or native); None when only the config may decide.

    Raises:
        CheckpointError: the config names only architectures this package lacks, or names none and the tensors
            cannot tell (the message says what to add to `config.json`).
    """
    for name in config.architectures:
        if name in ARCHITECTURES:
            return name
    if config.architectures:
        raise CheckpointError(
            f"config architectures {list(config.architectures)} are not supported; known: {', '.join(ARCHITECTURES)}"
        )
    names = list(tensor_names or ())
    if any(n.startswith("pred_layer.") for n in names):
        return XLMWithLMHeadModel.architecture
    if names and not any(n.startswith(ENCODER_PREFIX) for n in names):
        return XLMModel.architecture
    raise CheckpointError(
        "cannot tell which model class this checkpoint holds: add an 'architectures' entry to config.json "
        f"(one of {', '.join(ARCHITECTURES)})"
    )


__all__ = [
    "ARCHITECTURES",
    "MODEL_CLASSES",
    "Architecture",
    "architecture",
    "architecture_of",
    "model_class",
    "model_rules",
    "tied_torch_names",
]
