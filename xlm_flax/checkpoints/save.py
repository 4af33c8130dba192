"""`save_pretrained`: a model in memory written as a native or a transformers (PyTorch) directory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from xlm_flax.checkpoints.export import TORCH_METADATA, torch_tensors
from xlm_flax.checkpoints.files import (
    NATIVE_METADATA,
    WEIGHTS_NAME,
    atomic_directory,
    copy_tokenizer_files,
    write_config,
)
from xlm_flax.checkpoints.safetensors_io import write_safetensors
from xlm_flax.checkpoints.sources import ArraySource
from xlm_flax.config import XLMConfig
from xlm_flax.errors import InputError
from xlm_flax.model.stack import stacked_parameters


def _param_arrays(model: nnx.Module) -> Mapping[str, jax.Array]:
    """The model's parameters by flat path, in the stacked layout of the name table whatever the model's own layer
    layout (`stacked_parameters`): the one place `save_pretrained` gets them from."""
    return stacked_parameters(model)


def _to_host(array: jax.Array) -> np.ndarray:
    """Brings a (possibly sharded, possibly multi-host) array to this host as NumPy."""
    if not array.is_fully_addressable:
        from jax.experimental import multihost_utils

        array = multihost_utils.process_allgather(array, tiled=True)
    return np.asarray(array)


def save_pretrained(
    model: nnx.Module,
    directory: str | os.PathLike,
    *,
    format: str = "flax",
    dtype: Any = None,
    tokenizer_source: str | os.PathLike | None = None,
) -> str:
    """Writes `config.json` and `model.safetensors` (and tokenizer files, when known) to `directory`.

    Args:
        model: Any model of this package.
        directory: Output directory, created if needed. Files are written in a temporary directory and moved in
            one by one, so a failure leaves no half-written file; other files already in `directory` stay.
        format: `"flax"` (native flat parameter paths, loadable without torch) or `"pytorch"` (transformers'
            tensor names, loadable with `transformers.<Architecture>.from_pretrained`).
        dtype: Storage dtype to write (e.g. `"bfloat16"`); defaults to the parameters' own.
        tokenizer_source: Directory or hub id to copy tokenizer files from; defaults to where the model was loaded.

    Returns:
        The directory written.
    """
    if format not in ("flax", "pytorch"):
        raise InputError(f"format={format!r}: use 'flax' or 'pytorch'")
    config: XLMConfig = model.config
    architecture = model.architecture
    arrays = _param_arrays(model)
    out_dtype = _first_dtype(arrays) if dtype is None else np.dtype(dtype)

    if format == "flax":
        specs = [(name, a.shape, out_dtype) for name, a in arrays.items()]

        def produce(name: str) -> np.ndarray:
            return _to_host(arrays[name]).astype(out_dtype, copy=False)

        metadata = NATIVE_METADATA
    else:
        tensors = ArraySource(arrays, "flax", f"the parameters of {type(model).__name__}", to_host=_to_host)
        specs, produce = torch_tensors(tensors, architecture, config, arrays, out_dtype)
        metadata = TORCH_METADATA
    if jax.process_index() != 0:
        for name, _, _ in specs:
            produce(name)  # every process takes part in gathering sharded arrays; only process 0 writes
        return os.fspath(directory)
    source = tokenizer_source if tokenizer_source is not None else getattr(model, "name_or_path", None)
    with atomic_directory(directory, merge=True) as tmp:
        write_safetensors(os.path.join(tmp, WEIGHTS_NAME), specs, produce, metadata)
        copy_tokenizer_files(source, tmp)
        write_config(tmp, config, architecture, out_dtype)
    return os.fspath(directory)


def _first_dtype(arrays: dict[str, jax.Array]) -> np.dtype:
    return np.dtype(next(iter(arrays.values())).dtype)


__all__ = ["save_pretrained"]
