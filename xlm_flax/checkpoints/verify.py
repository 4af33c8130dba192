"""Numerical checks against transformers' PyTorch XLM on the same weights (needs torch).

Used by `xlm-flax convert --verify` and `xlm-flax demo`: both models run on the same random batch (with padding and,
for multilingual models, languages) and the largest absolute differences of their outputs are reported.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from xlm_flax.config import XLMConfig
from xlm_flax.errors import CheckpointError
from xlm_flax.tokens import N_SPECIAL_TOKENS

# Largest accepted difference, relative to max(1, largest reference value), per storage dtype. Wrong conversions
# give differences of order one; these bounds only absorb rounding.
TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}


def random_batch(config: XLMConfig, *, batch: int = 3, length: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch of random token ids with `<s>`/`</s>`, right padding of different lengths, and language ids when the
    model has language embeddings.

    Args:
        config: The model's config.
        batch: Rows.
        length: Columns (at most `max_position_embeddings`).
        seed: NumPy seed.
    """
    rng = np.random.default_rng(seed)
    length = min(length, config.max_position_embeddings)
    low = min(N_SPECIAL_TOKENS, config.vocab_size - 1)  # skip the special tokens when the vocabulary is big enough
    ids = rng.integers(low, config.vocab_size, size=(batch, length))
    mask = np.ones((batch, length), dtype=np.int64)
    for row in range(batch):
        n = max(2, length - row * max(1, length // (batch + 1)))
        ids[row, 0], ids[row, n - 1] = config.bos_index, config.eos_index
        ids[row, n:] = config.pad_index
        mask[row, n:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if config.has_lang_embeddings:
        inputs["langs"] = rng.integers(0, config.n_langs, size=(batch, length))
    return inputs


def check_against_transformers(
    torch_source: str | os.PathLike,
    flax_directory: str | os.PathLike,
    *,
    log: Callable[[str], Any] = lambda message: None,
    hub: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Runs the transformers model of `torch_source` and our model of `flax_directory` on one random batch.

    Args:
        torch_source: The transformers checkpoint (directory or hub id).
        flax_directory: The native checkpoint converted from it.
        log: Called with one line per compared output.
        hub: The hub's arguments `torch_source` was converted with (`HubOptions.as_kwargs()`: revision, subfolder,
            cache, ...), so that the reference is the same checkpoint; transformers takes them by the same names.

    Returns:
        The largest absolute difference per compared output (`logits` and/or `last_hidden_state`).

    Raises:
        CheckpointError: torch is missing, or a difference exceeds `TOLERANCE` for the stored dtype.
    """
    try:
        import torch
        import transformers
    except ImportError as e:
        raise CheckpointError("--verify needs torch: pip install 'xlm-flax[torch]'") from e
    import jax.numpy as jnp

    from xlm_flax.checkpoints.registry import model_class

    transformers.utils.logging.disable_progress_bar()
    config = XLMConfig.from_pretrained(flax_directory)
    architecture = config.architectures[0]
    ours = model_class(architecture).from_pretrained(flax_directory, dtype=jnp.float32, param_dtype=jnp.float32)
    reference = getattr(transformers, architecture).from_pretrained(os.fspath(torch_source), **dict(hub or {})).eval()
    inputs = random_batch(config)
    with torch.no_grad():
        expected = reference(**{k: torch.from_numpy(v) for k, v in inputs.items()}, output_hidden_states=True)
    got = ours(**{k: jnp.asarray(v) for k, v in inputs.items()}, output_hidden_states=True)
    pairs = {"last_hidden_state": (expected.hidden_states[-1], got.hidden_states[-1])}
    if hasattr(expected, "logits") and getattr(got, "logits", None) is not None:
        pairs["logits"] = (expected.logits, got.logits)
    tolerance = TOLERANCE.get(str(config.extra.get("dtype", "float32")), 1e-4)
    diffs = {}
    for name, (reference_value, value) in pairs.items():
        reference_value = reference_value.float().numpy()
        diff = float(np.max(np.abs(reference_value - np.asarray(value, dtype=np.float32))))
        scale = max(1.0, float(np.max(np.abs(reference_value))))
        diffs[name] = diff
        log(f"verify: {name} max |pytorch - flax| = {diff:.3g} (scale {scale:.3g}, tolerance {tolerance:g}x scale)")
        if diff > tolerance * scale:
            raise CheckpointError(f"verification failed: {name} differs from PyTorch by {diff:.3g}")
    return diffs


__all__ = ["TOLERANCE", "check_against_transformers", "random_batch"]
