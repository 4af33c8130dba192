"""Shared fixtures: seeded transformers XLM checkpoints saved with `save_pretrained`, the reference for parity."""

from __future__ import annotations

import os

# Eight fake CPU devices for the sharding tests; must be set before JAX initialises its backend.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

# Odd and prime sizes make shape bugs visible.
TINY = dict(vocab_size=41, emb_dim=30, n_layers=3, n_heads=5, max_position_embeddings=13)
LANGS3 = {"en": 0, "fr": 1, "de": 2}


def tiny_config(**overrides) -> transformers.XLMConfig:
    """A small transformers XLMConfig; `overrides` change any field."""
    fields = dict(TINY)
    fields.update(overrides)
    if fields.get("n_langs", 1) > 1 and "lang2id" not in fields:
        fields["lang2id"] = {k: v for k, v in LANGS3.items() if v < fields["n_langs"]}
    if "lang2id" in fields:
        fields["id2lang"] = {v: k for k, v in fields["lang2id"].items()}
    return transformers.XLMConfig(**fields)


def make_torch_checkpoint(directory, architecture: str = "XLMWithLMHeadModel", seed: int = 0, **overrides):
    """Builds a transformers model with seeded random weights, saves it, and returns (directory, model)."""
    torch.manual_seed(seed)
    config = tiny_config(**overrides)
    model = getattr(transformers, architecture)(config).eval()
    # Random LayerNorm parameters and biases too: the defaults (ones, zeros) would hide transposition bugs.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(directory)
    return str(directory), model


@pytest.fixture(scope="session")
def lm_checkpoint(tmp_path_factory):
    """A three-language XLMWithLMHeadModel checkpoint and its PyTorch model."""
    return make_torch_checkpoint(tmp_path_factory.mktemp("lm"), n_langs=3)


def random_inputs(config, batch: int = 3, length: int = 9, seed: int = 0, pad_rows: bool = True):
    """Random ids (specials excluded), right padding of different lengths, and per-token languages."""
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
