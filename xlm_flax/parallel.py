"""Meshes, logical-axis rules and parameter placement.

Every parameter carries logical axis names (`xlm_flax.layers.LOGICAL_AXES`). A short table of rules maps each name to
a mesh axis (or to None: replicated); `shard_model` places the parameters accordingly and the forward pass then runs
under `jax.jit`/`nnx.jit` with XLA inserting the collectives. The modules know nothing of meshes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from xlm_flax.errors import InputError
from xlm_flax.layers import LOGICAL_AXES

DATA = "data"
MODEL = "model"

# Logical axis name -> mesh axis (None: replicated). Batch goes over `data`; the wide dimensions of the weights
# (attention heads, the FFN's hidden units, the vocabulary) over `model`; the embedding dimension stays whole so that
# LayerNorm and the residual stream need no collectives.
DEFAULT_RULES: Mapping[str, str | None] = {
    "batch": DATA,
    "heads": MODEL,
    "mlp": MODEL,
    "vocab": MODEL,
    "embed": None,
    "head_dim": None,
    "layers": None,
    "position": None,
    "lang": None,
    "length": None,
}


def make_mesh(data: int = -1, model: int = 1, *, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 2-D mesh `(data, model)` over `devices` (default: every device of every process).

    Args:
        data: Size of the data-parallel axis; -1 takes all devices left after `model`.
        model: Size of the model-parallel axis; -1 takes all devices left after `data`.
        devices: The devices to use, e.g. `jax.devices()[:4]`.

    Raises:
        InputError: when the sizes do not multiply to the device count.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if data == -1 and model == -1:
        raise InputError("make_mesh: at most one of data and model may be -1")
    if data == -1:
        data = n // model if model > 0 and n % model == 0 else 0
    elif model == -1:
        model = n // data if data > 0 and n % data == 0 else 0
    if data <= 0 or model <= 0 or data * model != n:
        raise InputError(
            f"make_mesh: data={data} x model={model} does not match the {n} devices; choose sizes whose product is {n}"
        )
    # Auto axes: XLA's partitioner propagates shardings and inserts collectives, so the modules need no
    # sharding annotations (jax.make_mesh would default to Explicit axes, which demand them on every gather).
    auto = (AxisType.Auto, AxisType.Auto)
    if devices == list(jax.devices()):
        return jax.make_mesh((data, model), (DATA, MODEL), devices=devices, axis_types=auto)
    return Mesh(np.asarray(devices).reshape(data, model), (DATA, MODEL), axis_types=auto)


def logical_to_spec(
    axes: Sequence[str | None], rules: Mapping[str, str | None] | None = None, mesh: Mesh | None = None
) -> PartitionSpec:
    """The `PartitionSpec` of an array whose dimensions have the logical names `axes`.

    A mesh axis is used at most once per array (the first dimension that asks for it gets it), and, when `mesh` is
    given, mesh axes of size 1 are dropped so that the spec stays valid on any mesh.
    """
    rules = DEFAULT_RULES if rules is None else rules
    used: set[str] = set()
    spec = []
    for name in axes:
        target = rules.get(name) if name is not None else None
        if target is not None and (target in used or (mesh is not None and target not in mesh.shape)):
            target = None
        if target is not None:
            used.add(target)
        spec.append(target)
    return PartitionSpec(*spec)


def _divisible_spec(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """Replicates the dimensions that the mesh axis does not divide (e.g. a vocabulary of 30145 over 2 shards)."""
    return PartitionSpec(
        *(axis if axis is None or size % mesh.shape[axis] == 0 else None for axis, size in zip(spec, shape))
    )


def parameter_shardings(
    model_or_state: nnx.Module | nnx.State, mesh: Mesh, rules: Mapping[str, str | None] | None = None
) -> nnx.State:
    """A state of `NamedSharding`s, one per parameter of `model_or_state` (works on abstract models too)."""
    state = nnx.state(model_or_state) if isinstance(model_or_state, nnx.Module) else model_or_state

    def sharding(variable):
        axes = variable.get_metadata().get(LOGICAL_AXES)
        if axes is None:
            return NamedSharding(mesh, PartitionSpec())
        spec = _divisible_spec(logical_to_spec(axes, rules, mesh), variable.shape, mesh)
        return NamedSharding(mesh, spec)

    return jax.tree.map(sharding, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_model(model: nnx.Module, mesh: Mesh, rules: Mapping[str, str | None] | None = None) -> nnx.Module:
    """Places every parameter of `model` on `mesh` by its logical axes and `rules` (default `DEFAULT_RULES`).

    The model is updated in place and returned.
    """
    state = nnx.state(model)
    shardings = parameter_shardings(state, mesh, rules)
    nnx.update(model, jax.device_put(state, shardings))
    return model


def data_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a batch array `[batch, ...]`: split over `data`, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(DATA, *([None] * (ndim - 1))))


def padded_batch_size(batch: int, mesh: Mesh) -> int:
    """`batch` rounded up to a multiple of the mesh's data axis."""
    n = mesh.shape[DATA]
    return math.ceil(batch / n) * n
