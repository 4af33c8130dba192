"""The one exporter to transformers: native (Flax-named) tensors -> transformers' tensors, through the name table.

`torch_tensors` is used both by `save_pretrained(format="pytorch")` (a model's parameters in memory, possibly sharded
over several hosts) and by `export_checkpoint` / `xlm-flax export` (a native directory on disk). It checks the
source against the model's parameters with `LoadPlan` (missing, unexpected and mis-shaped tensors, all listed), then
produces one transformers tensor at a time: each layer of a stacked Flax tensor is read as a slice (from disk, only
that layer's bytes) and rearranged by its rule. Tied weights (the LM head's `pred_layer.proj.weight`) are not
written, as transformers does not write them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from flax import nnx

from xlm_flax.checkpoints.files import (
    WEIGHTS_NAME,
    atomic_directory,
    check_destination,
    copy_tokenizer_files,
    write_config,
)
from xlm_flax.checkpoints.names import Rule
from xlm_flax.checkpoints.plan import LoadPlan, abstract_model, flat_targets
from xlm_flax.checkpoints.registry import architecture_of, model_class, model_rules
from xlm_flax.checkpoints.report import CheckpointReport
from xlm_flax.checkpoints.safetensors_io import write_safetensors
from xlm_flax.checkpoints.sources import TensorSource, open_weights
from xlm_flax.config import XLMConfig
from xlm_flax.errors import InputError

# The metadata transformers writes into its safetensors files.
TORCH_METADATA = {"format": "pt"}


TensorSpec = tuple[str, tuple[int, ...], np.dtype]


def torch_tensors(
    source: TensorSource,
    architecture: str,
    config: XLMConfig,
    targets: Mapping[str, Any],
    dtype: np.dtype | None = None,
) -> tuple[list[TensorSpec], Callable[[str], np.ndarray]]:
    """Plans transformers' tensors from native ones: their specs, and a function producing each on demand.

    Args:
        source: Native tensors (`kind == "flax"`): a checkpoint on disk, or a model's parameters (`ArraySource`).
        architecture: transformers class name of the model.
        config: The model's config.
        targets: Flat Flax path -> anything with the `shape` of that parameter (abstract variables or arrays):
            what `source` must hold exactly.
        dtype: Storage dtype of the output; None keeps each tensor's own.

    Returns:
        `(specs, produce)`: `(transformers name, shape, dtype)` of every tensor in the order transformers' name table
        lists them, and `produce(name)`, which reads and rearranges one of them (for `write_safetensors`).

    Raises:
        InputError: `source` is not native.
        TensorMismatchError: `source` lacks some of `targets`, holds others, or holds them in other shapes.
    """
    if source.kind != "flax":
        raise InputError(f"{source.description} holds transformers' names already; the exporter takes native tensors")
    plan = LoadPlan(source, architecture, config, dict(targets))
    plan.check(missing_ok=False, unused_ok=False)
    specs: list[TensorSpec] = []
    plans: dict[str, tuple[Rule, str, int, np.dtype]] = {}
    for rule in model_rules(architecture, config):
        name = plan.found[rule.flax_path][1][0]
        shape = tuple(source.shape(name))
        out_dtype = np.dtype(source.dtype(name)) if dtype is None else np.dtype(dtype)
        for layer, torch_name in enumerate(rule.torch_names):
            specs.append((torch_name, rule.torch_shape(shape), out_dtype))
            plans[torch_name] = (rule, name, layer, out_dtype)

    def produce(torch_name: str) -> np.ndarray:
        rule, name, layer, out_dtype = plans[torch_name]
        if rule.n_layers:
            array = source.read_slice(name, (slice(layer, layer + 1),))[0]  # one layer of the stacked tensor
        else:
            array = source.read(name)
        return np.ascontiguousarray(rule.layout.to_torch(array)).astype(out_dtype, copy=False)

    return specs, produce


def export_checkpoint(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    force: bool = False,
    log: Callable[[str], Any] = lambda message: None,
) -> CheckpointReport:
    """Writes a transformers directory (`config.json`, `model.safetensors` with transformers' names, tokenizer files)
    from a native checkpoint directory, streamed tensor by tensor.

    Args:
        source: A directory written by `save_pretrained` or `xlm-flax convert` (native layout).
        destination: Directory to create; it must not exist or be empty, unless `force`.
        force: Replace a non-empty `destination` (only once the new directory is complete).
        log: Called with progress lines.

    Returns:
        A `CheckpointReport` (format `"pytorch"`).

    Raises:
        InputError: `source` is already a transformers checkpoint, or `destination` is in the way.
        CheckpointError: the config names no architecture this package has, or the source's tensors do not match
            it (missing, unexpected or mis-shaped tensors, all listed).
    """
    source = os.fspath(source)
    check_destination(destination, force=force, source=source)  # fail before the long part, not after it
    config = XLMConfig.from_pretrained(source)
    tensors = open_weights(source)
    try:
        if tensors.kind != "flax":
            raise InputError(f"{source} is already a transformers checkpoint; export takes a native directory")
        architecture = architecture_of(config)
        _, abstract_state = nnx.split(abstract_model(model_class(architecture), config))
        specs, produce = torch_tensors(tensors, architecture, config, flat_targets(abstract_state))
        with atomic_directory(destination, force=force, source=source) as tmp:
            log(f"exporting {architecture} from {tensors.description}: {len(specs)} tensors")
            write_safetensors(os.path.join(tmp, WEIGHTS_NAME), specs, produce, TORCH_METADATA)
            write_config(tmp, config, architecture, specs[0][2] if specs else None)
            copied = copy_tokenizer_files(source, tmp)
    finally:
        tensors.close()
    return CheckpointReport.of(os.fspath(destination), architecture, "pytorch", specs, copied)


__all__ = ["TORCH_METADATA", "export_checkpoint", "torch_tensors"]
