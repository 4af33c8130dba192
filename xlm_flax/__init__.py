"""xlm-flax: XLM (Lample & Conneau, 2019) in JAX / Flax NNX."""

from xlm_flax import distributed
from xlm_flax.config import XLMConfig
from xlm_flax.demo import small_model_path
from xlm_flax.heads import (
    ClassifierOutput,
    QuestionAnsweringOutput,
    SquadOutput,
    XLMForMultipleChoice,
    XLMForQuestionAnswering,
    XLMForQuestionAnsweringSimple,
    XLMForSequenceClassification,
    XLMForTokenClassification,
)
from xlm_flax.inference import Embedder, FillMask
from xlm_flax.modeling import BaseModelOutput, MaskedLMOutput, XLMModel, XLMWithLMHeadModel
from xlm_flax.parallel import DEFAULT_RULES, make_mesh, pmap_forward, shard_model, sharded_forward
from xlm_flax.training import TrainConfig, Trainer, train
from xlm_flax.unstacked import unstack_layers

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_RULES",
    "BaseModelOutput",
    "ClassifierOutput",
    "Embedder",
    "FillMask",
    "MaskedLMOutput",
    "QuestionAnsweringOutput",
    "SquadOutput",
    "XLMConfig",
    "XLMForMultipleChoice",
    "XLMForQuestionAnswering",
    "XLMForQuestionAnsweringSimple",
    "XLMForSequenceClassification",
    "XLMForTokenClassification",
    "XLMModel",
    "XLMWithLMHeadModel",
    "TrainConfig",
    "Trainer",
    "__version__",
    "distributed",
    "make_mesh",
    "pmap_forward",
    "shard_model",
    "sharded_forward",
    "small_model_path",
    "unstack_layers",
    "train",
]
