"""xlm-flax: XLM (Lample & Conneau, 2019) in JAX / Flax NNX."""

from xlm_flax.config import XLMConfig
from xlm_flax.modeling import BaseModelOutput, MaskedLMOutput, XLMModel, XLMWithLMHeadModel

__version__ = "0.1.0"

__all__ = ["BaseModelOutput", "MaskedLMOutput", "XLMConfig", "XLMModel", "XLMWithLMHeadModel", "__version__"]
