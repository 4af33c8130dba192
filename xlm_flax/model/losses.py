"""Losses of the models, equal to PyTorch's (`CrossEntropyLoss` with `ignore_index`, `BCEWithLogitsLoss`,
`MSELoss`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_lm_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy of `logits [..., vocab]` against `labels [...]`, skipping labels equal to -100
    (PyTorch's `cross_entropy` with its default `ignore_index`).

    Args:
        logits: `[batch, length, vocab]` float32.
        labels: `[batch, length]` ids; -100 is ignored.
    """
    valid = labels != -100
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(log_probs, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    return -jnp.sum(jnp.where(valid, picked, 0.0)) / jnp.sum(valid)


def cross_entropy(logits: jax.Array, labels: jax.Array, ignore_index: int | jax.Array = -100) -> jax.Array:
    """Mean cross-entropy of `logits [n, classes]` against integer `labels [n]`, skipping `ignore_index`
    (PyTorch's `CrossEntropyLoss`; NaN when every label is ignored, as there).

    Args:
        logits: `[n, classes]`.
        labels: `[n]` class ids.
        ignore_index: Label value to skip.
    """
    valid = labels != ignore_index
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(log_probs, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    return -jnp.sum(jnp.where(valid, picked, 0.0)) / jnp.sum(valid)


def binary_cross_entropy_with_logits(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean binary cross-entropy on logits, in the overflow-free form PyTorch's `BCEWithLogitsLoss` uses.

    Args:
        logits: Logits of any shape.
        targets: Targets in [0, 1], same shape.
    """
    x, y = logits.astype(jnp.float32), targets.astype(jnp.float32)
    return jnp.mean(jnp.maximum(x, 0.0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x))))


def _mean_squared_error(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(predictions.astype(jnp.float32) - targets.astype(jnp.float32)))


__all__ = ["binary_cross_entropy_with_logits", "cross_entropy", "masked_lm_loss"]
