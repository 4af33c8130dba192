"""Meshes, logical-axis rules and parameter placement.

Every parameter carries logical axis names (`xlm_flax.layers.LOGICAL_AXES`). A short table of rules maps each name to
a mesh axis (or to None: replicated); `shard_model` places the parameters accordingly and the forward pass then runs
under `jax.jit`/`nnx.jit` with XLA inserting the collectives. The modules know nothing of meshes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from xlm_flax.errors import InputError
from xlm_flax.layers import LOGICAL_AXES

DATA = "data"
MODEL = "model"

# A rules table: a mapping, or a sequence of (logical name, mesh axis or None) pairs as MaxText and Flax write them.
Rules = Mapping[str, str | None] | Sequence[tuple[str, str | None]]

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


def resolve_rules(rules: Rules | None = None) -> dict[str, str | None]:
    """`DEFAULT_RULES` with `rules` laid over them.

    Only the names given change: `{"vocab": None}` keeps the vocabulary whole and leaves every other default.

    Args:
        rules: A mapping or a sequence of `(logical_name, mesh_axis)` pairs; a mesh axis of None replicates.

    Returns:
        The complete table.

    Raises:
        InputError: when an entry is not a (name, axis) pair or names an axis other than `data`, `model` or None.
    """
    table = dict(DEFAULT_RULES)
    if rules is None:
        return table
    pairs = rules.items() if isinstance(rules, Mapping) else rules
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str)):
            raise InputError(f"rules: {pair!r} is not a (logical_name, mesh_axis) pair, e.g. ('vocab', None)")
        name, axis = pair
        if axis not in (DATA, MODEL, None):
            raise InputError(f"rules: {name!r} -> {axis!r}; the mesh axes are {DATA!r} and {MODEL!r} (or None)")
        table[name] = axis
    return table


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


def logical_to_spec(axes: Sequence[str | None], rules: Rules | None = None, mesh: Mesh | None = None) -> PartitionSpec:
    """The `PartitionSpec` of an array whose dimensions have the logical names `axes`.

    A mesh axis is used at most once per array (the first dimension that asks for it gets it), and, when `mesh` is
    given, mesh axes of size 1 are dropped so that the spec stays valid on any mesh.

    Args:
        axes: One logical name (or None) per dimension.
        rules: Overrides of `DEFAULT_RULES` (see `resolve_rules`).
        mesh: The mesh the spec is for.

    Returns:
        One mesh axis (or None) per dimension.
    """
    table = resolve_rules(rules)
    used: set[str] = set()
    spec = []
    for name in axes:
        target = table.get(name) if name is not None else None
        if target is not None and (target in used or (mesh is not None and mesh.shape.get(target, 1) == 1)):
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


def variable_sharding(variable: nnx.Variable, mesh: Mesh, rules: Rules | None = None) -> NamedSharding:
    """The `NamedSharding` of one variable (abstract or concrete) by its logical axes and `rules`.

    Variables without logical axes, and dimensions the mesh axis does not divide, are replicated.

    Args:
        variable: The variable.
        mesh: The mesh.
        rules: Overrides of `DEFAULT_RULES`.
    """
    axes = variable.get_metadata().get(LOGICAL_AXES)
    if axes is None:
        return NamedSharding(mesh, PartitionSpec())
    return NamedSharding(mesh, _divisible_spec(logical_to_spec(axes, rules, mesh), variable.shape, mesh))


def parameter_shardings(model_or_state: nnx.Module | nnx.State, mesh: Mesh, rules: Rules | None = None) -> nnx.State:
    """A state of `NamedSharding`s, one per variable of `model_or_state` (works on abstract models too).

    Args:
        model_or_state: A model, or its state, concrete or from `nnx.eval_shape`.
        mesh: The mesh.
        rules: Overrides of `DEFAULT_RULES`.

    Returns:
        A state of the same structure with a `NamedSharding` in place of every variable.
    """
    state = nnx.state(model_or_state) if isinstance(model_or_state, nnx.Module) else model_or_state
    return jax.tree.map(
        lambda v: variable_sharding(v, mesh, rules), state, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )


def shard_model(model: nnx.Module, mesh: Mesh, rules: Rules | None = None) -> nnx.Module:
    """Places every parameter of `model` on `mesh` by its logical axes and `rules` (default `DEFAULT_RULES`).

    Args:
        model: The model; updated in place.
        mesh: The mesh.
        rules: Overrides of `DEFAULT_RULES`.

    Returns:
        `model`.
    """
    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, parameter_shardings(state, mesh, rules)))
    return model


def sharded_placer(
    abstract_state: nnx.State, mesh: Mesh, rules: Rules | None = None
) -> Callable[[str, np.ndarray], jax.Array]:
    """A `placer` for `xlm_flax.checkpoint.load_pretrained` that puts each tensor, as it is read, straight into its
    sharding: every device receives only its own slice, and in multi-host runs every process fills only its own
    devices (each process reads the same checkpoint).

    Args:
        abstract_state: The model's state from `nnx.eval_shape` (gives each parameter's logical axes).
        mesh: The mesh.
        rules: Overrides of `DEFAULT_RULES`.

    Returns:
        A function `(flat_name, host_array) -> jax.Array`.
    """
    shardings = {
        ".".join(str(p) for p in path): variable_sharding(variable, mesh, rules)
        for path, variable in nnx.to_flat_state(abstract_state)
    }

    def place(name: str, value: np.ndarray) -> jax.Array:
        return jax.make_array_from_callback(value.shape, shardings[name], lambda index: value[index])

    return place


def init_sharded(factory: Callable[[], nnx.Module], mesh: Mesh, rules: Rules | None = None) -> nnx.Module:
    """Builds a freshly initialised model directly in its shardings: no device ever holds a whole sharded weight.

    `nnx.eval_shape` gives the parameters' shapes and logical axes, from which the shardings follow; the constructor
    then runs under `jax.jit` with those `out_shardings`, so XLA computes each shard where it lives.

    Args:
        factory: Builds the model, e.g. `lambda: XLMModel(config, rngs=nnx.Rngs(0))`.
        mesh: The mesh.
        rules: Overrides of `DEFAULT_RULES`.

    Returns:
        The model, its parameters sharded over `mesh`.
    """
    graphdef, abstract_state = nnx.split(nnx.eval_shape(factory))
    shardings = parameter_shardings(abstract_state, mesh, rules)
    state = jax.jit(lambda: nnx.state(factory()), out_shardings=shardings)()
    return nnx.merge(graphdef, state)


def data_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a batch array `[batch, ...]`: split over `data`, the rest replicated.

    Args:
        mesh: The mesh.
        ndim: Rank of the array.
    """
    return NamedSharding(mesh, PartitionSpec(DATA, *([None] * (ndim - 1))))


def padded_batch_size(batch: int, mesh: Mesh) -> int:
    """`batch` rounded up to a multiple of the mesh's data axis.

    Args:
        batch: Number of rows.
        mesh: The mesh.
    """
    n = mesh.shape[DATA]
    return math.ceil(batch / n) * n


# Value that fills the padding rows of each input: ignored labels, nothing attended; anything else is zero (a valid
# id). Padding rows never mix with real rows (attention and LayerNorm are per row) and are dropped from the outputs.
PAD_VALUES = {"labels": -100}


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


def shard_batch(inputs: Mapping[str, Any], mesh: Mesh) -> tuple[dict[str, jax.Array], int]:
    """Puts a batch of host arrays on `mesh`, split over `data`, padded to a multiple of the data axis.

    In a multi-host run every process must pass the same global batch (each fills only its own devices); to give
    each process its own slice instead, use `xlm_flax.distributed.global_batch`.

    Args:
        inputs: Name -> array `[batch, ...]` (NumPy or lists; None values are dropped). Arrays that are already
            `jax.Array`s whose batch divides the data axis are passed on as they are.
        mesh: The mesh.

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
    rows = padded_batch_size(batch, mesh)
    placed = {}
    for name, value in inputs.items():
        if isinstance(value, jax.Array) and (not value.is_fully_addressable or batch == rows):
            placed[name] = value  # already global (e.g. from distributed.global_batch): jit takes it as it is
            continue
        host = pad_rows(np.asarray(value), rows, PAD_VALUES.get(name, 0))
        sharding = data_sharding(mesh, host.ndim)
        placed[name] = jax.make_array_from_callback(host.shape, sharding, lambda index, host=host: host[index])
    return placed, batch


def sharded_forward(model: nnx.Module, mesh: Mesh, rules: Rules | None = None) -> Callable[..., Any]:
    """The model's forward pass over `mesh`: batch split over `data`, parameters placed by the rules.

    The returned function takes the model's array arguments by name (`input_ids`, `attention_mask`, `langs`,
    `token_type_ids`, `position_ids`, `lengths`, `labels`, `inputs_embeds`; NumPy or `jax.Array`) and its static
    options (`output_hidden_states=True`, ...). NumPy batches are padded to a multiple of the data axis and the
    padding is dropped from every batch-leading output; it compiles once per (padded) input shape and option set.
    The model's parameters are placed once, when this is called (`shard_model` or `from_pretrained(mesh=)` first
    avoids a second copy).

    Args:
        model: An `XLMModel`, `XLMWithLMHeadModel` or head model.
        mesh: The mesh (`make_mesh`).
        rules: Overrides of `DEFAULT_RULES`.

    Returns:
        `forward(**inputs, batch_size=None, **options)`: the model's output (its arrays global `jax.Array`s on
        `mesh`). `batch_size` is the number of real rows, for inputs that arrive already padded.
    """
    graphdef, state = nnx.split(model)
    state = jax.device_put(state, parameter_shardings(state, mesh, rules))

    @partial(jax.jit, static_argnames=("options",))
    def run(state, inputs, options):
        return nnx.merge(graphdef, state)(**inputs, **dict(options))

    def forward(batch_size: int | None = None, **kwargs: Any) -> Any:
        arrays = {k: v for k, v in kwargs.items() if isinstance(v, (np.ndarray, jax.Array, list))}
        options = tuple(sorted((k, v) for k, v in kwargs.items() if k not in arrays and v is not None))
        placed, batch = shard_batch(arrays, mesh)
        batch = batch if batch_size is None else batch_size
        rows = next(iter(placed.values())).shape[0]
        out = run(state, placed, options)
        if batch == rows:
            return out
        return jax.tree.map(lambda x: x[:batch] if x.ndim and x.shape[0] == rows else x, out)

    return forward


def pmap_forward(model: nnx.Module) -> Callable[..., Any]:
    """The model's forward pass with `jax.pmap`'s calling convention, for code written around pmap.

    Inputs are shaped `[n_devices, per_device_batch, length]` (row `i` for local device `i`, `n_devices` at most
    `jax.local_device_count()`); outputs come back `[n_devices, per_device_batch, ...]` with row `i` on device `i`,
    and the parameters are replicated on every device.

    This is not `jax.pmap` itself: pmap is in maintenance mode (since JAX 0.8 it is built on jit and shard_map) and
    would need a stacked copy of the parameters per device. Instead, the leading two axes are merged into one batch
    axis sharded over a `(n_devices, 1)` mesh and the same jitted forward as `sharded_forward` runs, so there is one
    model code path and one compiled program per shape; merging and splitting the leading axes moves no data.

    Args:
        model: An `XLMModel`, `XLMWithLMHeadModel` or head model.

    Returns:
        `forward(**inputs, **options)` taking the model's arguments by name, as `sharded_forward`'s function does.
    """
    graphdef, state = nnx.split(model)
    meshes: dict[int, tuple[Mesh, Any]] = {}

    @partial(jax.jit, static_argnames=("options",))
    def run(state, inputs, options):
        n, per_device = next(iter(inputs.values())).shape[:2]
        flat = {k: v.reshape(n * per_device, *v.shape[2:]) for k, v in inputs.items()}
        out = nnx.merge(graphdef, state)(**flat, **dict(options))
        return jax.tree.map(lambda x: x.reshape(n, per_device, *x.shape[1:]) if x.ndim else x, out)

    def forward(**kwargs: Any) -> Any:
        arrays = {k: v for k, v in kwargs.items() if isinstance(v, (np.ndarray, jax.Array, list))}
        options = tuple(sorted((k, v) for k, v in kwargs.items() if k not in arrays and v is not None))
        shapes = {k: np.shape(v)[:2] for k, v in arrays.items()}
        devices = jax.local_devices()
        if not shapes or len(set(shapes.values())) != 1 or any(len(s) < 2 for s in shapes.values()):
            raise InputError(
                f"pmap_forward: inputs must share leading axes [n_devices, per_device_batch]; got {shapes}"
            )
        n = next(iter(shapes.values()))[0]
        if not 0 < n <= len(devices):
            raise InputError(f"pmap_forward: leading axis {n} must be between 1 and the {len(devices)} local devices")
        if n not in meshes:
            mesh = make_mesh(n, 1, devices=devices[:n])
            meshes[n] = (mesh, jax.device_put(state, NamedSharding(mesh, PartitionSpec())))
        mesh, replicated = meshes[n]
        placed = {k: jax.device_put(v, data_sharding(mesh, np.ndim(v))) for k, v in arrays.items()}
        return run(replicated, placed, options)

    return forward
