"""Putting batches on a mesh: padding to a multiple of the data axis and splitting over it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from xlm_flax.errors import InputError
from xlm_flax.sharding.placement import data_sharding
from xlm_flax.sharding.rules import Rules, batch_multiple
from xlm_flax.tokens import IGNORE_INDEX


def padded_batch_size(batch: int, mesh: Mesh, rules: Rules | None = None) -> int:
    """`batch` rounded up to a multiple of the mesh's data axis (the `batch` rule's axis).

    Args:
        batch: Number of rows.
        mesh: The mesh.
        rules: Overrides of `DEFAULT_RULES`.
    """
    n = batch_multiple(mesh, rules)
    return math.ceil(batch / n) * n


# Value that fills the padding rows of each input: ignored labels, nothing attended; anything else is zero (a valid
# id). Padding rows never mix with real rows (attention and LayerNorm are per row) and are dropped from the outputs.
PAD_VALUES = {"labels": IGNORE_INDEX}


def pad_rows(value: np.ndarray, rows: int, fill: int | float = 0) -> np.ndarray:
    """`value [batch, ...]` with rows of `fill` appended up to `rows`.

    Args:
        value: `[batch, ...]` array.
        rows: Rows wanted (at least `batch`).
        fill: Value of the added rows.
    """
    value = np.asarray(value)
    if value.shape[0] == rows:
        return value
    pad = np.full((rows - value.shape[0], *value.shape[1:]), fill, dtype=value.dtype)
    return np.concatenate([value, pad])


def shard_batch(inputs: Mapping[str, Any], mesh: Mesh, rules: Rules | None = None) -> tuple[dict[str, jax.Array], int]:
    """Puts a batch of host arrays on `mesh`, split over its data axis, padded to a multiple of that axis.

    In a multi-host run every process must pass the same global batch (each fills only its own devices); to give
    each process its own slice instead, use `xlm_flax.distributed.global_batch`.

    Args:
        inputs: Name -> array `[batch, ...]` (NumPy or lists; None values are dropped). Arrays that are already
            `jax.Array`s whose batch divides the data axis are passed on as they are.
        mesh: The mesh.
        rules: Overrides of `DEFAULT_RULES` (`batch` names the data axis).

    Returns:
        The placed arrays and the number of real rows.

    Raises:
        InputError: when the arrays disagree on the batch size.
    """
    inputs = {k: v for k, v in inputs.items() if v is not None}
    sizes = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in inputs.items()}
    if not sizes or None in sizes.values() or len(set(sizes.values())) != 1:
        raise InputError(f"inputs must be arrays with one common batch size on their first axis; got {sizes}")
    batch = next(iter(sizes.values()))
    rows = padded_batch_size(batch, mesh, rules)
    placed = {}
    for name, value in inputs.items():
        if isinstance(value, jax.Array) and (not value.is_fully_addressable or batch == rows):
            # Already global (e.g. from distributed.global_batch): jit takes it as it is, once on `mesh` itself
            # rather than on another view of the same devices (the caller's Explicit mesh; no data moves).
            sharding = value.sharding
            if isinstance(sharding, NamedSharding) and sharding.mesh != mesh:
                value = jax.device_put(value, NamedSharding(mesh, sharding.spec))
            placed[name] = value
            continue
        host = pad_rows(np.asarray(value), rows, PAD_VALUES.get(name, 0))
        sharding = data_sharding(mesh, host.ndim, rules)
        placed[name] = jax.make_array_from_callback(host.shape, sharding, lambda index, host=host: host[index])
    return placed, batch


__all__ = ["PAD_VALUES", "pad_rows", "padded_batch_size", "shard_batch"]
