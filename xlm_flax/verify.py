"""Numerical checks against transformers' PyTorch XLM on the same weights (needs torch).

Used by `xlm-flax convert --verify` and `xlm-flax demo`: both models run on the same random batch (with padding and,
for multilingual models, languages) and the largest absolute differences of their outputs are reported. The seeded
reference checkpoints, inputs and configuration matrix of the parity suite live here too, so that the tests and
`benchmarks/parity_report.py` measure the same thing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from xlm_flax.config import XLMConfig
from xlm_flax.errors import CheckpointError

# Largest accepted difference, relative to max(1, largest reference value), per storage dtype. Wrong conversions
# give differences of order one; these bounds only absorb rounding.
TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}


# The parity suite's tiny model: odd and prime sizes make shape bugs visible.
TINY_CONFIG = dict(vocab_size=41, emb_dim=30, n_layers=3, n_heads=5, max_position_embeddings=13)
TINY_LANGS = {"en": 0, "fr": 1, "de": 2}
# The configurations the parity suite covers, as overrides of `TINY_CONFIG`.
PARITY_CONFIGS = {
    "multilingual": dict(n_langs=3),
    "multilingual_no_lang_emb": dict(n_langs=3, use_lang_emb=False),
    "monolingual": dict(),
    "causal": dict(n_langs=3, causal=True),
    "sinusoidal": dict(sinusoidal_embeddings=True),
    "relu": dict(gelu_activation=False),
    "untied": dict(tie_word_embeddings=False),
}


def reference_config(**overrides: Any) -> Any:
    """A tiny transformers `XLMConfig` (`TINY_CONFIG` with `overrides`); multilingual configs get `lang2id`/`id2lang`
    from `TINY_LANGS` unless given.

    Args:
        **overrides: Any transformers XLMConfig field.
    """
    import transformers

    fields = dict(TINY_CONFIG, **overrides)
    if fields.get("n_langs", 1) > 1 and "lang2id" not in fields:
        fields["lang2id"] = {k: v for k, v in TINY_LANGS.items() if v < fields["n_langs"]}
    if "lang2id" in fields:
        fields["id2lang"] = {v: k for k, v in fields["lang2id"].items()}
    return transformers.XLMConfig(**fields)


def build_reference_checkpoint(
    directory: str | os.PathLike, architecture: str = "XLMWithLMHeadModel", seed: int = 0, **overrides: Any
) -> tuple[str, Any]:
    """Builds a transformers XLM with seeded random weights and saves it with `save_pretrained` (needs torch).

    LayerNorm parameters and biases are randomised too: their defaults (ones, zeros) would hide transposition bugs.

    Args:
        directory: Where to save it.
        architecture: A transformers XLM class name.
        seed: torch seed.
        **overrides: Fields of `reference_config`.

    Returns:
        The directory and the PyTorch model (in eval mode).
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(reference_config(**overrides)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(directory)
    return os.fspath(directory), model


def random_inputs(
    config: Any, batch: int = 3, length: int = 9, seed: int = 0, pad_rows: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The parity suite's inputs: random ids (the first specials excluded), right padding of a different length on
    every row but the first, and a random language per token.

    Args:
        config: A transformers or xlm-flax XLM config (`vocab_size`, `pad_index`, `n_langs`).
        batch: Rows.
        length: Columns.
        seed: NumPy seed.
        pad_rows: Pad rows after the first.

    Returns:
        `input_ids`, `attention_mask` and `langs`, each `[batch, length]` int64.
    """
    rng = np.random.default_rng(seed)
    ids = rng.integers(6, config.vocab_size, size=(batch, length))
    mask = np.ones((batch, length), dtype=np.int64)
    if pad_rows:
        for row in range(1, batch):
            n = max(1, length - 2 * row)
            ids[row, n:] = config.pad_index
            mask[row, n:] = 0
    langs = rng.integers(0, max(1, config.n_langs), size=(batch, length))
    return ids, mask, langs


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
    low = min(14, config.vocab_size - 1)  # skip the special tokens when the vocabulary is big enough
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
) -> dict[str, float]:
    """Runs the transformers model of `torch_source` and our model of `flax_directory` on one random batch.

    Args:
        torch_source: The transformers checkpoint (directory or hub id).
        flax_directory: The native checkpoint converted from it.
        log: Called with one line per compared output.

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

    from xlm_flax.modeling import MODEL_CLASSES

    transformers.utils.logging.disable_progress_bar()
    config = XLMConfig.from_pretrained(flax_directory)
    architecture = config.architectures[0]
    ours = MODEL_CLASSES[architecture].from_pretrained(flax_directory, dtype=jnp.float32, param_dtype=jnp.float32)
    reference = getattr(transformers, architecture).from_pretrained(os.fspath(torch_source)).eval()
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


__all__ = [
    "PARITY_CONFIGS",
    "TINY_CONFIG",
    "TINY_LANGS",
    "TOLERANCE",
    "build_reference_checkpoint",
    "check_against_transformers",
    "random_batch",
    "random_inputs",
    "reference_config",
]
