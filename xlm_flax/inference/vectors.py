"""What happens to pooled vectors after the model: sentence-transformers' quantization and similarity functions.

Both follow `sentence_transformers` (6.2: `util/quantization.py` and `util/similarity.py`) exactly, so that vectors
and scores computed here can be mixed with theirs: int8/uint8 buckets from per-dimension min/max over the embeddings
themselves, binary by sign packed 8 to a byte, cosine through `x / max(|x|, 1e-12)`, euclidean and manhattan as
negative distances (higher is more similar, for every function).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from xlm_flax.errors import InputError

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
SIMILARITY_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")


def quantization_ranges(embeddings: np.ndarray) -> np.ndarray:
    """Per-dimension `[min, max]` (`[2, dim]`) of `[n, dim]` embeddings, the buckets int8/uint8 quantization uses.

    Args:
        embeddings: Float `[n, dim]` embeddings, `n >= 2`.

    Raises:
        InputError: a single embedding (its range is empty in every dimension).
    """
    if embeddings.ndim == 1 or embeddings.shape[0] == 1:
        raise InputError(
            "int8/uint8 precision needs the ranges of several embeddings (buckets per dimension from their min and "
            "max): encode more than one sentence, or quantize yourself with known ranges"
        )
    return np.vstack((np.min(embeddings, axis=0), np.max(embeddings, axis=0)))


def quantize_embeddings(embeddings: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """`sentence_transformers.quantize_embeddings` for one float matrix (or vector, with `ranges`).

    Args:
        embeddings: Float embeddings `[..., dim]`.
        precision: `"float32"`, `"int8"` / `"uint8"` (255 buckets per dimension between `ranges`), `"binary"` /
            `"ubinary"` (one bit per dimension, set where the value is positive, packed into `ceil(dim / 8)` bytes;
            `binary` stores each byte minus 128 as int8).
        ranges: `[2, dim]` per-dimension minimum and maximum for int8/uint8; None takes them from `embeddings`.

    Raises:
        InputError: an unknown precision, or int8/uint8 of a single embedding without `ranges`.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)}")
    embeddings = np.asarray(embeddings)
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision.endswith("int8"):
        if embeddings.ndim == 2 and embeddings.shape[0] == 0:
            return np.zeros(embeddings.shape, dtype=np.int8 if precision == "int8" else np.uint8)
        if ranges is None:
            ranges = quantization_ranges(embeddings)
        ranges = ranges.astype(np.float32, copy=False)
        starts = ranges[0, :]
        steps = (ranges[1, :] - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        buckets = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
        return buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)
    packed = np.packbits(embeddings > 0, axis=-1)
    return (packed - 128).astype(np.int8) if precision == "binary" else packed


def quantize_token_embeddings(matrices: list[np.ndarray], precision: str) -> list[np.ndarray]:
    """Quantizes per-sentence `[tokens, dim]` matrices with buckets shared by all of them (int8/uint8 ranges over
    every token), as `sentence_transformers.quantize_embeddings` does for a list of multi-vector matrices.

    Args:
        matrices: Float `[tokens_i, dim]` arrays.
        precision: See `quantize_embeddings`.
    """
    if precision == "float32" or not matrices:
        return [np.asarray(m, dtype=np.float32) for m in matrices]
    ranges = quantization_ranges(np.concatenate(matrices, axis=0)) if precision.endswith("int8") else None
    return [quantize_embeddings(m, precision, ranges) for m in matrices]


def _as_matrix(x: Any) -> jax.Array:
    """float32 `[n, dim]` (a vector becomes one row; int8/uint8/bool/lower floats are widened, as ST does)."""
    x = jnp.asarray(np.asarray(x) if isinstance(x, list | tuple) else x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise InputError(f"similarity: give [n, dim] embeddings or one [dim] vector, not shape {tuple(x.shape)}")
    return x.astype(jnp.float32)


def _normalize(x: jax.Array) -> jax.Array:
    # torch.nn.functional.normalize(x, p=2, dim=-1): x / max(|x|, eps)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cosine_similarity(a: Any, b: Any) -> jax.Array:
    """`[n, m]` cosine similarities of the rows of `a` and `b` (`sentence_transformers.util.cos_sim`).

    Args:
        a: `[n, dim]` or `[dim]`.
        b: `[m, dim]` or `[dim]`.
    """
    return _normalize(_as_matrix(a)) @ _normalize(_as_matrix(b)).T


def dot_similarity(a: Any, b: Any) -> jax.Array:
    """`[n, m]` dot products (`sentence_transformers.util.dot_score`).

    Args:
        a: `[n, dim]` or `[dim]`.
        b: `[m, dim]` or `[dim]`.
    """
    return _as_matrix(a) @ _as_matrix(b).T


def euclidean_similarity(a: Any, b: Any) -> jax.Array:
    """`[n, m]` negative euclidean distances (`sentence_transformers.util.euclidean_sim`).

    Args:
        a: `[n, dim]` or `[dim]`.
        b: `[m, dim]` or `[dim]`.
    """
    diff = _as_matrix(a)[:, None, :] - _as_matrix(b)[None, :, :]
    return -jnp.sqrt(jnp.sum(diff * diff, axis=-1))


def manhattan_similarity(a: Any, b: Any) -> jax.Array:
    """`[n, m]` negative manhattan distances (`sentence_transformers.util.manhattan_sim`).

    Args:
        a: `[n, dim]` or `[dim]`.
        b: `[m, dim]` or `[dim]`.
    """
    return -jnp.sum(jnp.abs(_as_matrix(a)[:, None, :] - _as_matrix(b)[None, :, :]), axis=-1)


SIMILARITY: dict[str, Callable[[Any, Any], jax.Array]] = {
    "cosine": cosine_similarity,
    "dot": dot_similarity,
    "euclidean": euclidean_similarity,
    "manhattan": manhattan_similarity,
}


def similarity_function(name: str) -> Callable[[Any, Any], jax.Array]:
    """The similarity function called `name` (sentence-transformers' `similarity_fn_name`).

    Args:
        name: `"cosine"`, `"dot"`, `"euclidean"` or `"manhattan"`.
    """
    if name not in SIMILARITY:
        raise InputError(f"similarity function {name!r}: use one of {', '.join(SIMILARITY_FUNCTIONS)}")
    return SIMILARITY[name]


__all__ = [
    "PRECISIONS",
    "SIMILARITY_FUNCTIONS",
    "cosine_similarity",
    "dot_similarity",
    "euclidean_similarity",
    "manhattan_similarity",
    "quantization_ranges",
    "quantize_embeddings",
    "quantize_token_embeddings",
    "similarity_function",
]
