"""`xlm-flax export`: a native checkpoint directory back to a transformers (PyTorch) directory.

The inverse of `xlm-flax convert`, streamed the same way: no model is built, each stacked Flax tensor is read once
and split into transformers' per-layer tensors through the table in `xlm_flax.checkpoints.names`, and the output is written
into a temporary directory renamed into place at the end. Tied weights (the LM head's `pred_layer.proj.weight`) are
not written, as transformers does not write them; the tokenizer files are copied. For a model in memory,
`model.save_pretrained(dir, format="pytorch")` writes the same files.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from xlm_flax.checkpoints.files import WEIGHTS_NAME, atomic_directory, copy_tokenizer_files, write_config
from xlm_flax.checkpoints.names import Rule, model_rules
from xlm_flax.checkpoints.safetensors_io import write_safetensors
from xlm_flax.checkpoints.sources import open_weights
from xlm_flax.config import XLMConfig
from xlm_flax.errors import CheckpointError, InputError


@dataclasses.dataclass
class ExportReport:
    """What an export wrote.

    Attributes:
        destination: The directory written.
        architecture: transformers class name (the one to load it with).
        n_tensors: Tensors written.
        tokenizer_files: Tokenizer files copied.
    """

    destination: str
    architecture: str
    n_tensors: int
    tokenizer_files: list[str]


def export_checkpoint(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    force: bool = False,
    log: Callable[[str], Any] = lambda message: None,
) -> ExportReport:
    """Writes a transformers directory (`config.json`, `model.safetensors` with transformers' names, tokenizer files)
    from a native checkpoint directory.

    Args:
        source: A directory written by `save_pretrained` or `xlm-flax convert` (native layout).
        destination: Directory to create; it must not exist or be empty, unless `force`.
        force: Replace a non-empty `destination` (only once the new directory is complete).
        log: Called with progress lines.

    Returns:
        An `ExportReport`.

    Raises:
        InputError: `source` is already a transformers checkpoint, or `destination` is in the way.
        CheckpointError: the source's tensors do not match its config's architecture (missing, unexpected or
            mis-shaped tensors, all listed).
    """
    source = os.fspath(source)
    config = XLMConfig.from_pretrained(source)
    tensors = open_weights(source)
    try:
        if tensors.kind != "flax":
            raise InputError(f"{source} is already a transformers checkpoint; export takes a native directory")
        architecture = _architecture(config)
        rules = model_rules(architecture, config)
        names = set(tensors.names())
        missing = [r.flax_path for r in rules if r.flax_path not in names]
        unexpected = sorted(names - {r.flax_path for r in rules})
        if missing or unexpected:
            raise CheckpointError(
                f"{tensors.description} does not hold a {architecture}: "
                + "; ".join(
                    part
                    for part in (
                        f"missing {', '.join(missing)}" if missing else "",
                        f"unexpected {', '.join(unexpected)}" if unexpected else "",
                    )
                    if part
                )
            )
        specs: list[tuple[str, tuple[int, ...], np.dtype]] = []
        by_name: dict[str, tuple[Rule, int]] = {}
        for rule in rules:
            shape = tuple(tensors.shape(rule.flax_path))
            if rule.n_layers and (not shape or shape[0] != rule.n_layers):
                raise CheckpointError(
                    f"{rule.flax_path}: shape {list(shape)} does not stack n_layers={rule.n_layers} layers"
                )
            torch_shape = rule.layout.torch_shape(shape[1:] if rule.n_layers else shape)
            for i, name in enumerate(rule.torch_names):
                specs.append((name, tuple(torch_shape), np.dtype(tensors.dtype(rule.flax_path))))
                by_name[name] = (rule, i)
        cached: dict[str, np.ndarray] = {}

        def produce(name: str) -> np.ndarray:
            rule, i = by_name[name]
            if rule.flax_path not in cached:
                cached.clear()  # rules list each stacked tensor's layers together: keep only the current one
                cached[rule.flax_path] = tensors.read(rule.flax_path)
            array = cached[rule.flax_path]
            return np.ascontiguousarray(rule.layout.to_torch(array[i] if rule.n_layers else array))

        with atomic_directory(destination, force=force) as tmp:
            log(f"exporting {architecture} from {tensors.description}: {len(specs)} tensors")
            write_safetensors(os.path.join(tmp, WEIGHTS_NAME), specs, produce, {"format": "pt"})
            write_config(tmp, config, architecture, specs[0][2] if specs else None)
            copied = copy_tokenizer_files(source, tmp)
    finally:
        tensors.close()
    return ExportReport(os.fspath(destination), architecture, len(specs), copied)


def _architecture(config: XLMConfig) -> str:
    from xlm_flax.checkpoints.registry import MODEL_CLASSES

    for name in config.architectures:
        if name in MODEL_CLASSES:
            return name
    raise CheckpointError(
        f"config architectures {list(config.architectures)} name no model this package has; "
        f"expected one of {', '.join(MODEL_CLASSES)}"
    )


__all__ = ["ExportReport", "export_checkpoint"]
