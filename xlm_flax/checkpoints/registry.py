"""The one registry: transformers architecture name -> our model class, filled explicitly (no import side effects).

Conversion, export, `from_pretrained` on a directory of unknown class, `Embedder` and `xlm-flax info` all look
architectures up here. The PyTorch name table of each class is in `xlm_flax.checkpoints.names` (`model_rules`).
"""

from __future__ import annotations

from xlm_flax.errors import CheckpointError
from xlm_flax.model.encoder import XLMModel
from xlm_flax.model.heads.classification import XLMForSequenceClassification, XLMForTokenClassification
from xlm_flax.model.heads.multiple_choice import XLMForMultipleChoice
from xlm_flax.model.heads.question_answering import XLMForQuestionAnswering, XLMForQuestionAnsweringSimple
from xlm_flax.model.lm_head import XLMWithLMHeadModel

# transformers architecture name -> class. Every class names itself in `architecture`.
MODEL_CLASSES: dict[str, type] = {
    cls.architecture: cls
    for cls in (
        XLMModel,
        XLMWithLMHeadModel,
        XLMForSequenceClassification,
        XLMForTokenClassification,
        XLMForQuestionAnsweringSimple,
        XLMForQuestionAnswering,
        XLMForMultipleChoice,
    )
}
# The task heads alone (every class but the bare encoder and the LM head).
HEAD_CLASSES: dict[str, type] = {
    name: cls for name, cls in MODEL_CLASSES.items() if name not in ("XLMModel", "XLMWithLMHeadModel")
}


def model_class(architecture: str) -> type:
    """The model class of a transformers architecture name.

    Args:
        architecture: E.g. `"XLMWithLMHeadModel"`.

    Raises:
        CheckpointError: for a name this package has no class for (the message lists the known ones).
    """
    if architecture not in MODEL_CLASSES:
        raise CheckpointError(f"unknown architecture {architecture!r}; known: {', '.join(MODEL_CLASSES)}")
    return MODEL_CLASSES[architecture]


__all__ = ["HEAD_CLASSES", "MODEL_CLASSES", "model_class"]
