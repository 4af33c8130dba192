"""Test fixtures: seeded transformers XLM checkpoints (the parity reference), the parity suite's inputs and
configurations, a small XLM tokenizer, and the gates of the optional test dependencies. torch and transformers are
imported only by the functions that need them.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import struct
import tempfile
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from xlm_flax.tokenization import MERGES_FILE, SPECIAL_TOKENS, VOCAB_FILE

# ------------------------------------------------------------------------------------- optional test dependencies
# The suite runs in an environment with only the project and pytest installed: every test that needs none of the
# optional packages runs there, the others are skipped with the reason given here. Torch-only modules start with
# `torch = pytest.importorskip("torch", reason=TORCH_REASON)`; mixed modules bind `torch = optional_import("torch")`
# and mark their torch tests `@requires_torch`. Fixtures that build the PyTorch reference skip by themselves (through
# `build_reference_checkpoint`); fixtures shared with torch-free tests use `build_checkpoint`.

TORCH_REASON = "needs torch, for transformers' PyTorch XLM (the reference): pip install torch, or the test extra"


def has_module(name: str) -> bool:
    """Whether `name` is importable here (found on the path; not imported).

    Args:
        name: A top-level module name.
    """
    return importlib.util.find_spec(name) is not None


def optional_import(name: str) -> ModuleType | None:
    """`name` imported, or None where it is not installed (for modules that mix tests with and without it).

    Args:
        name: A module name.
    """
    return importlib.import_module(name) if has_module(name.partition(".")[0]) else None


def requires(*modules: str, reason: str) -> pytest.MarkDecorator:
    """A `skipif` marker: skip unless every one of `modules` is installed.

    Args:
        *modules: Top-level module names.
        reason: Why the test needs them and how to install them (shown by `pytest -rs`).
    """
    missing = [m for m in modules if not has_module(m)]
    return pytest.mark.skipif(bool(missing), reason=f"{reason} (missing: {', '.join(missing)})")


requires_torch = pytest.mark.skipif(not has_module("torch"), reason=TORCH_REASON)


def require_torch() -> ModuleType:
    """torch, or a skip of the calling test, fixture or (at module level) whole module, with `TORCH_REASON`."""
    return pytest.importorskip("torch", reason=TORCH_REASON)


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
    torch = require_torch()
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


# The words of the demo and test vocabulary: enough for readable example sentences.
DEFAULT_WORDS = (
    "the a an of and to in on at is was are be it this that with for as by from my your his her our their "
    "i you he she we they cat cats dog dogs sat sits runs ran eat eats like likes see saw mat house home city "
    "capital paris london berlin france england germany country river sea sun moon day night good bad big small "
    "red blue green old new book books car tree water food music language languages model word words sentence "
    "hello world english french german speak speaks read reads write writes love loves"
).split()


_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-:;\"()"


def _word_pieces(word: str) -> list[str]:
    return [*word[:-1], word[-1] + "</w>"]


def build_test_tokenizer(
    directory: str | os.PathLike,
    words: Sequence[str] = DEFAULT_WORDS,
    *,
    lang2id: dict[str, int] | None = None,
    model_max_length: int | None = None,
) -> int:
    """Writes a small XLM tokenizer (`vocab.json`, `merges.txt`, `tokenizer_config.json`) into `directory`.

    The vocabulary has XLM's special-token layout, every character of `a-z0-9` and common punctuation both inside a
    word and ending one, and each of `words` as a whole token (with the BPE merges that build it). Any lower-case
    ASCII text therefore tokenizes without `<unk>`. The files are those transformers writes
    (`XLMTokenizer.save_pretrained`), each moved into place atomically.

    Args:
        directory: Where to write; created if needed. Other files in it are kept.
        words: Whole-word tokens of the vocabulary (lower case).
        lang2id: Languages of a multilingual model, recorded in the tokenizer config.
        model_max_length: Recorded in the tokenizer config (usually `max_position_embeddings`).

    Returns:
        The vocabulary size (use it as the model's `vocab_size`).
    """
    from transformers import XLMTokenizer

    vocab: dict[str, int] = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word + "</w>", len(vocab))
    for c in _CHARACTERS:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    merges: dict[tuple[str, str], None] = {}
    for word in words:
        pieces = _word_pieces(word)
        current = pieces[0]
        for piece in pieces[1:]:  # left to right: "h e" -> "he l" -> "hel l" -> "hell o</w>"
            merges.setdefault((current, piece), None)
            current += piece
            vocab.setdefault(current, len(vocab))  # intermediate pieces, where BPE may stop for other words
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".tokenizer-") as tmp:
        with open(os.path.join(tmp, "in-" + VOCAB_FILE), "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        with open(os.path.join(tmp, "in-" + MERGES_FILE), "w", encoding="utf-8") as f:
            f.writelines(f"{a} {b}\n" for a, b in merges)
        kwargs: dict[str, Any] = {}
        if lang2id:
            kwargs.update(lang2id=dict(lang2id), id2lang={int(v): k for k, v in lang2id.items()})
        if model_max_length is not None:
            kwargs["model_max_length"] = model_max_length
        tokenizer = XLMTokenizer(
            os.path.join(tmp, "in-" + VOCAB_FILE), os.path.join(tmp, "in-" + MERGES_FILE), **kwargs
        )
        out = os.path.join(tmp, "out")
        tokenizer.save_pretrained(out)
        for name in os.listdir(out):
            os.replace(os.path.join(out, name), os.path.join(directory, name))
    return len(vocab)


def quiet_transformers() -> None:
    """Silences transformers' logging and progress bars for the test session."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def build_exported_checkpoint(
    directory: str | os.PathLike, architecture: str = "XLMWithLMHeadModel", seed: int = 0, **overrides: Any
) -> str:
    """Writes a checkpoint in transformers' layout without torch: our model of `reference_config(**overrides)` with
    seeded random weights, saved by `save_pretrained(format="pytorch")`.

    Biases and LayerNorm parameters are randomised too, as in `build_reference_checkpoint`.

    Args:
        directory: Where to save it; other files in it are kept.
        architecture: A transformers XLM class name.
        seed: Seed of the initialisation and of the bias noise.
        **overrides: Fields of `reference_config`.

    Returns:
        The directory.
    """
    from flax import nnx

    from xlm_flax.checkpoints.registry import MODEL_CLASSES
    from xlm_flax.config import XLMConfig

    fields = reference_config(**overrides).to_dict()
    fields.pop("architectures")  # None in an unsaved transformers config; save_pretrained records ours
    config = XLMConfig.from_dict(fields)
    model = MODEL_CLASSES[architecture](config, rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    noisy = {
        path: variable.replace(variable[...] + 0.1 * rng.standard_normal(variable.shape).astype(variable.dtype))
        for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param))
        if path[-1] in ("bias", "scale")
    }
    nnx.update(model, nnx.from_flat_state(noisy))
    model.save_pretrained(directory, format="pytorch")
    return os.fspath(directory)


def build_checkpoint(
    directory: str | os.PathLike, architecture: str = "XLMWithLMHeadModel", seed: int = 0, **overrides: Any
) -> tuple[str, Any]:
    """A transformers-layout checkpoint for fixtures shared by tests with and without torch: where torch is
    installed, `build_reference_checkpoint`'s (written by transformers, with its PyTorch model); without torch, the
    same configuration from `build_exported_checkpoint` and None for the model (the tests that use the model are
    marked `requires_torch`).

    Args:
        directory: Where to save it.
        architecture: A transformers XLM class name.
        seed: Seed of the weights.
        **overrides: Fields of `reference_config`.

    Returns:
        The directory and the PyTorch model, or None without torch.
    """
    if has_module("torch"):
        return build_reference_checkpoint(directory, architecture, seed, **overrides)
    return build_exported_checkpoint(directory, architecture, seed, **overrides), None


def raw_safetensors_file(
    directory, header: bytes | dict | list, data: bytes = b"", *, length: int | None = None
) -> str:
    """Writes `t.safetensors` in `directory`, byte for byte as given (for corrupt-file tests): a file of `length` (default: the header's) as 8 little-endian bytes, then the header, then `data`."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path = os.path.join(directory, "t.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def safe_open_tensors(path: str) -> dict[str, np.ndarray] | None:
    """The tensors as `safetensors.safe_open` reads them, or None when it refuses the file (or cannot give a NumPy
    array of its dtype)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            return {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, AttributeError, TypeError):  # AttributeError/TypeError: float8 and other non-NumPy dtypes
        return None
