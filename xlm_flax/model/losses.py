"""Losses of the models with PyTorch's semantics (`CrossEntropyLoss` with `ignore_index`, `BCEWithLogitsLoss`,
`MSELoss`, all with mean reduction), on optax's element-wise losses and always in float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from xlm_flax.errors import InputError
from xlm_flax.tokens import IGNORE_INDEX  # PyTorch's default ignore_index, defined once for the package


def cross_entropy(logits: jax.Array, labels: jax.Array, ignore_index: int | jax.Array = IGNORE_INDEX) -> jax.Array:
    """Mean softmax cross-entropy of `logits [..., classes]` against integer `labels [...]` over the labels that
    are not `ignore_index`: PyTorch's `cross_entropy`, NaN when every label is ignored, as there.

    The one cross-entropy of the package: the MLM loss (`[batch, length, vocab]` logits), the token, sequence,
    multiple-choice and SQuAD losses and the QA-simple loss (which ignores the input length) all use it.

    Args:
        logits: `[..., classes]` unnormalised scores; the loss is computed in float32.
        labels: `[...]` integer class ids.
        ignore_index: Label value that contributes no loss.

    Raises:
        InputError: for labels that are not integers, do not match the logits' leading shape, or (when concrete,
            outside jit) lie outside `[0, classes)` without being `ignore_index`; under jit such labels give NaN.
    """
    logits, labels = jnp.asarray(logits, jnp.float32), jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise InputError(f"cross-entropy labels have dtype {labels.dtype}; give integer class ids")
    if labels.shape != logits.shape[:-1]:
        raise InputError(
            f"labels have shape {labels.shape}; expected the logits' shape without classes, {logits.shape[:-1]}"
        )
    valid = labels != ignore_index
    classes = logits.shape[-1]
    # A label outside [0, classes) would be wrapped or clamped by the gather inside optax and give a finite, wrong
    # loss. PyTorch raises for it: so do we when the labels are concrete; under jit, where nothing can raise, the
    # loss is NaN instead, so that the step is visibly broken rather than silently wrong.
    out_of_range = valid & ((labels < 0) | (labels >= classes))
    if not isinstance(out_of_range, jax.core.Tracer) and bool(jnp.any(out_of_range)):
        bad = labels[out_of_range]
        raise InputError(
            f"{int(bad.size)} label(s) out of range (first: {int(bad.reshape(-1)[0])}): class ids must be in "
            f"[0, {classes}), or {int(ignore_index)} for positions without a label"
        )
    # optax wants every label inside [0, classes): ignored ones become 0 here and their loss is masked out below.
    per_label = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(valid & ~out_of_range, labels, 0))
    loss = jnp.sum(jnp.where(valid, per_label, 0.0)) / jnp.sum(valid)
    return jnp.where(jnp.any(out_of_range), jnp.nan, loss)


def binary_cross_entropy_with_logits(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean binary cross-entropy on logits (PyTorch's `BCEWithLogitsLoss`), in float32.

    Args:
        logits: Logits of any shape.
        targets: Targets in [0, 1], the logits' shape.

    Raises:
        InputError: when the shapes differ (PyTorch refuses them too).
    """
    logits, targets = _same_shape(logits, targets)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets))


def mean_squared_error(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean squared error (PyTorch's `MSELoss`), in float32.

    Args:
        predictions: Predictions of any shape.
        targets: Targets, the predictions' shape.

    Raises:
        InputError: when the shapes differ (PyTorch would broadcast them, warning that the result is likely wrong).
    """
    predictions, targets = _same_shape(predictions, targets)
    return jnp.mean(optax.squared_error(predictions, targets))


def _same_shape(outputs: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Both as float32 arrays, after checking that their shapes agree."""
    outputs, targets = jnp.asarray(outputs, jnp.float32), jnp.asarray(targets, jnp.float32)
    if outputs.shape != targets.shape:
        raise InputError(f"labels have shape {targets.shape}; give them the shape of the outputs, {outputs.shape}")
    return outputs, targets


__all__ = ["binary_cross_entropy_with_logits", "cross_entropy", "mean_squared_error"]
