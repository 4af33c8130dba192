"""xlm-flax: XLM (Lample & Conneau, 2019) in JAX / Flax NNX."""

from xlm_flax.config import XLMConfig
from xlm_flax.modeling import BaseModelOutput, MaskedLMOutput, XLMModel, XLMWithLMHeadModel
from xlm_flax.parallel import DEFAULT_RULES, make_mesh, shard_model
from xlm_flax.training import TrainConfig, Trainer, train

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_RULES",
    "BaseModelOutput",
    "MaskedLMOutput",
    "XLMConfig",
    "XLMModel",
    "XLMWithLMHeadModel",
    "TrainConfig",
    "Trainer",
    "__version__",
    "make_mesh",
    "shard_model",
    "train",
]
