"""Device meshes `(data, model)`, including multi-slice TPU jobs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding

from xlm_flax.errors import InputError
from xlm_flax.sharding.rules import DATA, MODEL


def make_mesh(data: int = -1, model: int = 1, *, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 2-D mesh `(data, model)` over `devices` (default: every device of every process).

    The model axis is the inner one, so that model-parallel groups are neighbouring devices (the same host, linked by
    the fast interconnect), and `jax.make_mesh` orders the devices by the physical topology on TPU. A multi-slice TPU
    job (devices with several `slice_index` values) gets a hybrid mesh whose data axis spans the slices (over the
    data-centre network) and whose model axis stays within a slice.

    Args:
        data: Size of the data-parallel axis; -1 takes all devices left after `model`.
        model: Size of the model-parallel axis; -1 takes all devices left after `data`.
        devices: The devices to use, e.g. `jax.devices()[:4]`; must list every process's devices in multi-host runs
            (`jax.devices()` does).

    Returns:
        A `Mesh` with axes `("data", "model")`, both `AxisType.Auto`.

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
    slices = {getattr(d, "slice_index", 0) for d in devices}
    if len(slices) > 1 and data % len(slices) == 0:
        grid = mesh_utils.create_hybrid_device_mesh((data // len(slices), model), (len(slices), 1), devices)
        return Mesh(grid, (DATA, MODEL), axis_types=auto)
    if set(devices) == set(jax.devices()):
        return jax.make_mesh((data, model), (DATA, MODEL), devices=devices, axis_types=auto)
    # A subset of the devices (e.g. some chips of a TPU host) need not form a physical sub-torus: keep the order given.
    return Mesh(np.asarray(devices).reshape(data, model), (DATA, MODEL), axis_types=auto)


def auto_mesh(mesh: Mesh) -> Mesh:
    """`mesh` with every axis `AxisType.Auto`: the same devices and axis names, for running the model.

    The model's modules carry no sharding annotations: they rely on XLA's partitioner to propagate the shardings of
    parameters and batch (Auto axes). Under Explicit axes (`jax.make_mesh`'s default) JAX's sharding-in-types would
    instead demand an output sharding on every ambiguous operation, starting with the embedding gather. Arrays move
    between a mesh and its Auto view without a copy (the same devices hold the same shards), so the forward passes
    run on this view and hand their outputs back on the caller's mesh.

    Args:
        mesh: Any mesh, e.g. from `jax.make_mesh` (Explicit axes by default) or `make_mesh` (Auto).

    Returns:
        `mesh` itself when all its axes are already Auto, else the Auto view of it.
    """
    if all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def to_mesh(tree: Any, mesh: Mesh) -> Any:
    """Moves the arrays of `tree` that lie on another view of `mesh` (same devices, e.g. `auto_mesh(mesh)`) onto
    `mesh` itself, keeping their partition specs: no data moves. Other leaves are returned as they are.

    Args:
        tree: A pytree (a model output, a state).
        mesh: The mesh wanted.
    """

    def move(x: Any) -> Any:
        sharding = getattr(x, "sharding", None)
        if not isinstance(sharding, NamedSharding) or sharding.mesh == mesh:
            return x
        if sharding.mesh.axis_names != mesh.axis_names or sharding.mesh.devices.shape != mesh.devices.shape:
            return x
        return jax.device_put(x, NamedSharding(mesh, sharding.spec))

    return jax.tree.map(move, tree)


__all__ = ["auto_mesh", "make_mesh", "to_mesh"]
