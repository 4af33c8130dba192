"""Parameter initialisers of the XLM modules, as transformers initialises them."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def sinusoidal_table(n_positions: int, dim: int) -> np.ndarray:
    """The fixed position table of `sinusoidal_embeddings=True` models, computed as transformers does (float64 math,
    float32 result): even columns `sin(pos / 10000^(2i/dim))`, odd columns the matching cosine.

    Args:
        n_positions: Number of positions.
        dim: Embedding size.
    """
    pos = np.arange(n_positions, dtype=np.float64)[:, None]
    j = np.arange(dim)
    angles = pos / np.power(10000, 2 * (j // 2) / dim)
    table = np.empty((n_positions, dim), dtype=np.float32)
    table[:, 0::2] = np.sin(angles[:, 0::2])
    table[:, 1::2] = np.cos(angles[:, 1::2])
    return table


def _normal(std: float) -> Callable:
    return jax.nn.initializers.normal(stddev=std)


def _word_embedding_init(std: float, pad_index: int) -> Callable:
    def init(key, shape, dtype):
        table = jax.random.normal(key, shape, dtype) * jnp.asarray(std, dtype)
        return table.at[pad_index].set(0)  # as torch's padding_idx: the pad row starts at zero

    return init


def _sinusoidal_init(key, shape, dtype):
    del key
    return jnp.asarray(sinusoidal_table(*shape), dtype)


__all__ = ["sinusoidal_table"]
