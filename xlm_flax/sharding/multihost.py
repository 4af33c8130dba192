"""Multi-host runs on JAX's own multi-controller runtime (`jax.distributed`).

Every host runs the same program. `initialize()` connects the processes (found automatically on Cloud TPU VMs,
Slurm, Open MPI and Kubernetes; given explicitly, or by environment variables, elsewhere); after it, `jax.devices()`
lists every process's devices and `xlm_flax.make_mesh()` spans them all. Each process then feeds only its own rows
of the global batch (`process_rows`, `global_batch`), the jitted forward pass runs as one program over the global
mesh, and `gather` brings the results to every host.

    from xlm_flax import distributed, make_mesh, XLMModel
    from xlm_flax import sharded_forward

    distributed.initialize()                     # on a TPU VM slice: nothing to pass
    mesh = make_mesh(data=-1, model=1)
    model = XLMModel.from_pretrained(path, mesh=mesh)
    rows = distributed.process_rows(len(ids), mesh)
    batch = distributed.global_batch({"input_ids": ids[rows]}, mesh, len(ids))
    out = sharded_forward(model, mesh)(**batch, batch_size=len(ids))
    hidden = distributed.gather(out.last_hidden_state)    # NumPy, the whole batch, on every host
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from xlm_flax.errors import InputError
from xlm_flax.sharding.batch import PAD_VALUES, pad_rows, padded_batch_size
from xlm_flax.sharding.placement import data_sharding
from xlm_flax.sharding.rules import Rules

logger = logging.getLogger("xlm_flax")


# Environment variables read when the arguments are not given. JAX itself reads JAX_COORDINATOR_ADDRESS (and
# JAX_LOCAL_DEVICE_IDS); the process count and id have no JAX variable, so these names follow its naming.
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"


ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"


ENV_PROCESS_ID = "JAX_PROCESS_ID"


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
    """Where this process stands in the run.

    Attributes:
        process_index: This process's id, `0 .. process_count - 1`.
        process_count: Number of processes (hosts).
        local_device_count: Devices attached to this process.
        device_count: Devices of all processes together.
    """

    process_index: int
    process_count: int
    local_device_count: int
    device_count: int

    @property
    def is_main(self) -> bool:
        """True on process 0, the one that should write files and print."""
        return self.process_index == 0


def process_info() -> ProcessInfo:
    """This process's `ProcessInfo` (a single process unless `initialize` connected several)."""
    return ProcessInfo(jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError(f"{name}={value!r} is not an integer; set it to a process count or id") from None


def _cluster_detected(method: str | None) -> bool:
    """Whether `jax.distributed.initialize` would find a cluster (Cloud TPU, Slurm, Open MPI, Kubernetes, ...) to
    take its settings from, asked of the same cluster environments it asks.

    Args:
        method: `cluster_detection_method` as given to `jax.distributed.initialize` (None: every default one).
    """
    if method == "deactivate":
        return False
    # JAX has no public query for this; its initialize() runs the same test (ClusterEnv.is_env_present) itself.
    from jax._src.clusters import ClusterEnv

    envs = ClusterEnv._cluster_types
    if method is not None:
        return any(env.name == method and env.is_env_present() for env in envs)
    return any(not env.opt_in_only_method and env.is_env_present() for env in envs)


def _backends_initialized() -> bool:
    """Whether this process has already started a JAX backend (arrays, devices), after which it cannot join others."""
    # No public query either: jax.distributed.initialize refuses on this same test.
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | None = None,
    *,
    initialization_timeout: int = 300,
    **kwargs: Any,
) -> ProcessInfo:
    """Connects this process to the others of a multi-host run (`jax.distributed.initialize`).

    Call it first, before anything else touches JAX. On Cloud TPU VMs (and Slurm, Open MPI, Kubernetes) JAX finds
    every argument itself; elsewhere give all three of `coordinator_address`, `num_processes` and `process_id`,
    or set `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`. With nothing given and no cluster
    found, the run is a single process and this only returns its `ProcessInfo`. Calling it again is harmless.
    On CPU the processes exchange data through gloo.

    Args:
        coordinator_address: `host:port` of process 0, reachable from every process (e.g. `10.0.0.2:1234`).
        num_processes: Number of processes.
        process_id: This process's id, `0 .. num_processes - 1`.
        local_device_ids: Restrict this process to these local devices (e.g. one GPU per process).
        initialization_timeout: Seconds to wait for every process to connect.
        **kwargs: Further arguments of `jax.distributed.initialize` (`heartbeat_timeout_seconds`,
            `shutdown_timeout_seconds`, `cluster_detection_method`, ...).

    Returns:
        This process's `ProcessInfo`.

    Raises:
        InputError: when only some of the three explicit settings are given, when they are inconsistent, or when
            JAX was already used in this process.
    """
    if jax.distributed.is_initialized():
        return process_info()
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    explicit = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    given = [k for k, v in explicit.items() if v is not None]  # JAX detects the others, or says which it lacks
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise InputError(f"process_id={process_id} must be in 0..{num_processes - 1} (num_processes={num_processes})")
    if num_processes == 1 and coordinator_address is None:
        return process_info()  # explicitly one process: nothing to connect
    if not given and not _cluster_detected(kwargs.get("cluster_detection_method")):
        logger.info("distributed.initialize: no cluster detected; running as a single process")
        return process_info()
    if _backends_initialized():
        raise InputError(
            "distributed.initialize must run before anything else uses JAX (arrays, devices, models); "
            "call it at the very start of the program"
        )
    if jax.config.jax_cpu_collectives_implementation is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # older JAX had no CPU collectives default
    try:
        jax.distributed.initialize(
            coordinator_address,
            num_processes,
            process_id,
            local_device_ids,
            initialization_timeout=initialization_timeout,
            **kwargs,
        )
    except ValueError as e:  # JAX's own checks of the settings: some missing after detection, or inconsistent
        raise InputError(
            f"distributed.initialize: {e}; outside a detected cluster give coordinator_address, num_processes and "
            f"process_id (or set {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID})"
        ) from e
    info = process_info()
    logger.info(
        "process %d of %d: %d local devices, %d in all",
        info.process_index,
        info.process_count,
        info.local_device_count,
        info.device_count,
    )
    return info


def process_rows(batch: int, mesh: Mesh, rules: Rules | None = None) -> slice:
    """The rows of a global batch of `batch` examples that this process feeds.

    The batch is padded to a multiple of the mesh's data axis; the rows of the padded batch that land on this
    process's devices form one contiguous block, clipped here to the `batch` real rows (so the slice may be empty on
    the last processes of a small batch).

    Args:
        batch: Number of real examples in the global batch.
        mesh: The global mesh.
        rules: Overrides of `DEFAULT_RULES` (`batch` names the data axis), as given to `sharded_forward`.

    Returns:
        `slice(start, stop)` into the global list of examples.

    Raises:
        InputError: when this process's devices do not hold one contiguous block (a hand-made device order).
    """
    rows = padded_batch_size(batch, mesh, rules)
    indices = data_sharding(mesh, 1, rules).addressable_devices_indices_map((rows,)).values()
    spans = sorted({(index[0].start or 0, rows if index[0].stop is None else index[0].stop) for index in indices})
    start, stop = spans[0][0], spans[-1][1]
    covered = sum(b - a for a, b in spans)
    if covered != stop - start:
        raise InputError(
            "this process's devices hold several separate blocks of the batch; build the mesh with "
            "xlm_flax.make_mesh() so that each process owns one contiguous block"
        )
    return slice(min(start, batch), min(stop, batch))


def global_batch(local: Mapping[str, Any], mesh: Mesh, batch: int, rules: Rules | None = None) -> dict[str, jax.Array]:
    """Builds global arrays, split over the data axis, from each process's own rows (`jax.make_array_from_process_local_data`).

    Every process calls it with its rows `examples[process_rows(batch, mesh)]`; padding rows up to a multiple of the
    data axis are added here.

    Args:
        local: Name -> this process's rows `[rows, ...]` (None values are dropped).
        mesh: The global mesh.
        batch: Number of real examples in the global batch.
        rules: Overrides of `DEFAULT_RULES` (`batch` names the data axis), as given to `sharded_forward`.

    Returns:
        Name -> global `jax.Array` `[padded_batch, ...]`, to pass to `sharded_forward`'s function with
        `batch_size=batch`.

    Raises:
        InputError: when a local array has the wrong number of rows.
    """
    rows = process_rows(batch, mesh, rules)
    padded = padded_batch_size(batch, mesh, rules)
    # Rows of the padded batch this process owns: its real rows, then its share of the padding.
    indices = data_sharding(mesh, 1, rules).addressable_devices_indices_map((padded,)).values()
    own = max(index[0].stop or padded for index in indices) - min(index[0].start or 0 for index in indices)
    out = {}
    for name, value in local.items():
        if value is None:
            continue
        value = np.asarray(value)
        if value.shape[0] != rows.stop - rows.start:
            raise InputError(
                f"{name} has {value.shape[0]} rows on process {jax.process_index()}; expected "
                f"{rows.stop - rows.start} (rows {rows.start}:{rows.stop} of {batch}, see process_rows)"
            )
        value = pad_rows(value, own, PAD_VALUES.get(name, 0))
        sharding = data_sharding(mesh, value.ndim, rules)
        out[name] = jax.make_array_from_process_local_data(sharding, value, (padded, *value.shape[1:]))
    return out


def gather(tree: Any, batch: int | None = None) -> Any:
    """Brings (possibly multi-host) arrays to every host as NumPy (`multihost_utils.process_allgather`).

    Every process must call it: gathering is a collective.

    Args:
        tree: An array or a pytree of arrays (e.g. a model output).
        batch: Keep only the first `batch` rows of batch-leading arrays (drops the padding).

    Returns:
        The same tree with NumPy arrays.
    """

    def fetch(x: Any) -> Any:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            x = multihost_utils.process_allgather(x, tiled=True)
        x = np.asarray(x)
        return x[:batch] if batch is not None and x.ndim and x.shape[0] >= batch else x

    return jax.tree.map(fetch, tree)


def sync(name: str = "xlm_flax") -> None:
    """Waits until every process reaches this point (e.g. before process 0 reads what the others wrote).

    Args:
        name: Barrier name; every process must use the same one.
    """
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


__all__ = [
    "ENV_COORDINATOR",
    "ENV_NUM_PROCESSES",
    "ENV_PROCESS_ID",
    "ProcessInfo",
    "gather",
    "global_batch",
    "initialize",
    "process_info",
    "process_rows",
    "sync",
]
