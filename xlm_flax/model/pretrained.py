"""`from_pretrained` / `save_pretrained` on every model class.

The methods import `xlm_flax.checkpoints` when they are called: the model layer itself never depends on the
checkpoint layer at import time.
"""

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp

from xlm_flax.model.layers import DTypeLike


class PretrainedMixin:
    """`from_pretrained` / `save_pretrained` for every model class of this package.

    Subclasses set `architecture` to the transformers class name they mirror.
    """

    architecture: str = ""

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike | None = None,
        **kwargs: Any,
    ):
        """Loads a model from a native or transformers checkpoint directory, or from a hub id.

        Args:
            path_or_hub_id: A directory written by `save_pretrained` or `xlm-flax convert`, a transformers model
                directory (`model.safetensors`, sharded safetensors or `pytorch_model.bin`), or a hub id such as
                `FacebookAI/xlm-mlm-en-2048` (converted in memory, tensor by tensor).
            dtype: Compute dtype.
            param_dtype: Storage dtype; None keeps the checkpoint's.
            **kwargs: `placer`, `strict`, `seed` (see `xlm_flax.checkpoints.load_pretrained`) and constructor
                arguments such as `layers` and `remat`.
        """
        from xlm_flax.checkpoints.load import load_pretrained

        return load_pretrained(cls, path_or_hub_id, dtype=dtype, param_dtype=param_dtype, **kwargs)

    def save_pretrained(self, directory: str | os.PathLike, *, format: str = "flax", **kwargs: Any) -> str:
        """Writes the model to `directory`: `format="flax"` (native, no torch needed to read) or `"pytorch"`
        (transformers names). See `xlm_flax.checkpoints.save_pretrained` for the other arguments.

        Args:
            directory: Output directory.
            format: `"flax"` or `"pytorch"`.
            **kwargs: Passed to `xlm_flax.checkpoints.save_pretrained` (e.g. `force`).
        """
        from xlm_flax.checkpoints.save import save_pretrained

        return save_pretrained(self, directory, format=format, **kwargs)


__all__ = ["PretrainedMixin"]
