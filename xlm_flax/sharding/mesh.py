"""Device meshes `(data, model)`, including multi-slice TPU jobs."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

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


__all__ = ["make_mesh"]
