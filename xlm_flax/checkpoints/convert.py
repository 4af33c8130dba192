"""`xlm-flax convert`: a transformers XLM checkpoint (directory or hub id) to a native checkpoint directory.

The conversion never builds a model in memory: it plans every output tensor from the config (`nnx.eval_shape`),
checks the source against the table in `xlm_flax.checkpoints.names` (missing, unexpected and mis-shaped tensors are all
reported at once), then reads, rearranges and writes one tensor at a time into a temporary directory that is renamed
into place at the end. Peak memory is about one stacked tensor, whatever the model size.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from xlm_flax.checkpoints.files import (
    NATIVE_METADATA,
    WEIGHTS_NAME,
    atomic_directory,
    check_destination,
    copy_tokenizer_files,
    write_config,
)
from xlm_flax.checkpoints.hub import hub_options
from xlm_flax.checkpoints.plan import LoadPlan, abstract_model, flat_targets
from xlm_flax.checkpoints.registry import architecture_of, model_class
from xlm_flax.checkpoints.report import CheckpointReport
from xlm_flax.checkpoints.safetensors_io import write_safetensors
from xlm_flax.checkpoints.sources import TensorSource, open_weights
from xlm_flax.config import XLMConfig
from xlm_flax.errors import InputError

STORAGE_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype("bfloat16"), "float16": np.dtype(np.float16)}


def infer_architecture(config: XLMConfig, source: TensorSource) -> str:
    """The model class of a checkpoint: the config's `architectures` entry when we know it, else from the names
    (`xlm_flax.checkpoints.registry.architecture_of`).

    Args:
        config: The checkpoint's config.
        source: Its tensors.
    """
    return architecture_of(config, source.names())


def storage_dtype(name: str) -> np.dtype:
    """Parses a storage dtype name (`float32`, `bfloat16`, `float16`).

    Args:
        name: The dtype name.
    """
    if name not in STORAGE_DTYPES:
        raise InputError(f"unknown dtype {name!r}; use one of {', '.join(STORAGE_DTYPES)}")
    return STORAGE_DTYPES[name]


@dataclasses.dataclass
class NativeWeights:
    """A checked plan for writing a native checkpoint: every tensor of the model found, with the right shape.

    Attributes:
        architecture: The model class name written into `config.json`.
        config: The model's config.
        dtype: Storage dtype of the output.
        specs: `(flat name, shape, dtype)` of every tensor, in the model's order.
        plan: The name and layout mapping from the source tensors.
    """

    architecture: str
    config: XLMConfig
    dtype: np.dtype
    specs: list[tuple[str, tuple[int, ...], np.dtype]]
    plan: LoadPlan

    def write(self, directory: str) -> None:
        """Writes `model.safetensors` (tensor by tensor) and `config.json` into `directory`.

        Args:
            directory: Where to write them.
        """

        def produce(name: str) -> np.ndarray:
            return self.plan.read(name, self.dtype)

        write_safetensors(os.path.join(directory, WEIGHTS_NAME), self.specs, produce, NATIVE_METADATA)
        write_config(directory, self.config, self.architecture, self.dtype)


def plan_native_weights(tensors: TensorSource, architecture: str, config: XLMConfig, dtype: np.dtype) -> NativeWeights:
    """Maps `tensors` onto the parameters of `architecture` and checks that they fit exactly.

    Args:
        tensors: The source tensors (transformers names).
        architecture: A key of `xlm_flax.checkpoints.registry.ARCHITECTURES`.
        config: The model's config.
        dtype: Storage dtype of the output.

    Raises:
        CheckpointError: listing every missing, unexpected and mis-shaped tensor.
    """
    from flax import nnx

    _, state = nnx.split(abstract_model(model_class(architecture), config, param_dtype=dtype))
    targets = flat_targets(state)
    plan = LoadPlan(tensors, architecture, config, targets)
    plan.check(missing_ok=False, unused_ok=False)  # a converted checkpoint must be complete and exact
    specs = [(name, tuple(v.shape), dtype) for name, v in targets.items()]
    return NativeWeights(architecture, config, dtype, specs, plan)


def convert_checkpoint(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    dtype: str = "float32",
    force: bool = False,
    verify: bool = False,
    log: Callable[[str], Any] = lambda message: None,
    **hub: Any,
) -> CheckpointReport:
    """Converts a transformers XLM checkpoint into a native checkpoint directory.

    Args:
        source: A hub id or a local transformers directory (`model.safetensors`, sharded safetensors, or
            `pytorch_model.bin`).
        destination: Directory to create. It must not exist or be empty, unless `force`.
        dtype: Storage dtype of the output: `float32`, `bfloat16` or `float16`.
        force: Replace a non-empty `destination` (only once the new directory is complete).
        verify: Run the PyTorch model and the converted one on random tokens and record the largest differences
            (needs torch); a difference beyond tolerance fails the conversion and leaves nothing behind.
        log: Called with progress lines.
        **hub: The hub's arguments for a hub id: `revision`, `token`, `cache_dir`, `local_files_only`,
            `subfolder`, `force_download`.

    Returns:
        A `CheckpointReport` (format `"flax"`).

    Raises:
        CheckpointError: missing, unexpected or mis-shaped tensors (all listed), or a failed verification.
        ConfigError, MissingFileError, InputError: bad config, missing files, bad destination or dtype.
    """
    out_dtype = storage_dtype(dtype)
    check_destination(destination, force=force, source=source)  # fail before the long part, not after it
    source = os.fspath(source)
    hub = hub_options(hub)
    config = XLMConfig.from_pretrained(source, **hub.as_kwargs())
    tensors = open_weights(source, hub)
    try:
        if verify and tensors.kind == "flax":
            raise InputError(f"{source} is already a native checkpoint: --verify needs a transformers checkpoint")
        architecture = infer_architecture(config, tensors)
        weights = plan_native_weights(tensors, architecture, config, out_dtype)
        log(f"converting {architecture} from {tensors.description}: {len(weights.specs)} tensors, storage {dtype}")
        with atomic_directory(destination, force=force, source=source) as tmp:
            weights.write(tmp)
            copied = copy_tokenizer_files(source, tmp, hub)
            report = CheckpointReport.of(os.fspath(destination), architecture, "flax", weights.specs, copied)
            if verify:
                tensors.close()
                from xlm_flax.checkpoints.verify import check_against_transformers

                report.max_abs_diff = check_against_transformers(source, tmp, log=log, hub=hub.as_kwargs())
    finally:
        tensors.close()
    return report


__all__ = [
    "NativeWeights",
    "STORAGE_DTYPES",
    "convert_checkpoint",
    "infer_architecture",
    "plan_native_weights",
    "storage_dtype",
]
