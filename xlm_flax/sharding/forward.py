"""The model's forward pass over a mesh (`sharded_forward`) and with pmap's calling convention (`pmap_forward`)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from xlm_flax.errors import InputError
from xlm_flax.sharding.batch import shard_batch
from xlm_flax.sharding.mesh import auto_mesh, make_mesh, to_mesh
from xlm_flax.sharding.placement import data_sharding, parameter_shardings
from xlm_flax.sharding.rules import Rules


def _split_arguments(args: tuple, kwargs: dict[str, Any]) -> tuple[dict[str, Any], tuple]:
    """The array arguments by name (positional ones as `"0"`, `"1"`, ...) and the static options, hashable.

    Positional None values keep their place (`forward(ids, None, langs)`); keyword None values are dropped.
    """
    arrays = {str(i): v for i, v in enumerate(args) if v is not None}
    for i, v in enumerate(args):
        if v is not None and not isinstance(v, _ARRAY_TYPES):
            raise InputError(f"positional argument {i} is a {type(v).__name__}; give the model's arrays by position")
    arrays.update({k: v for k, v in kwargs.items() if isinstance(v, _ARRAY_TYPES)})
    options = tuple(sorted((k, v) for k, v in kwargs.items() if k not in arrays and v is not None))
    return arrays, options


_ARRAY_TYPES = (np.ndarray, jax.Array, list)


def _call_model(graphdef: Any, state: Any, arrays: dict[str, Any], n_args: int, options: tuple) -> Any:
    """Runs the model on `arrays` (positional ones under `"0"`, `"1"`, ...) and the static `options`."""
    positional = [arrays.get(str(i)) for i in range(n_args)]
    named = {k: v for k, v in arrays.items() if not k.isdigit()}
    return nnx.merge(graphdef, state)(*positional, **named, **dict(options))


def sharded_forward(model: nnx.Module, mesh: Mesh, rules: Rules | None = None) -> Callable[..., Any]:
    """The model's forward pass over `mesh`: batch split over the data axis, parameters placed by the rules.

    The returned function takes the model's array arguments by position or by name, as the model does
    (`input_ids`, `attention_mask`, `langs`, ..., `labels`, `inputs_embeds`; NumPy or `jax.Array`), and its static
    options (`output_hidden_states=True`, ...). NumPy batches are padded to a multiple of the data axis and the
    padding is dropped from every batch-leading output; it compiles once per (padded) input shape and option set.
    The model's parameters are placed once, when this is called (`shard_model` or `from_pretrained(mesh=)` first
    avoids a second copy).

    Any mesh works: `make_mesh`'s, or the caller's own from `jax.make_mesh` with Explicit or Auto axes and any axis
    names, given the rules that name them (`rules=axis_rules(data="dp", model="tp")`). The model runs on the Auto view
    of the mesh (`auto_mesh`: its modules leave the shardings to XLA's propagation) and its outputs come back on
    `mesh` itself.

    Args:
        model: An `XLMModel`, `XLMWithLMHeadModel` or head model.
        mesh: The mesh (`make_mesh`, or `jax.make_mesh`).
        rules: Overrides of `DEFAULT_RULES`; required when the mesh's axes are not named `data` and `model`.

    Returns:
        `forward(*inputs, batch_size=None, **inputs_and_options)`: the model's output (its arrays global
        `jax.Array`s on `mesh`). `batch_size` is the number of real rows, for inputs that arrive already padded.

    Raises:
        InputError: when the rules do not fit the mesh (the message says which rules to pass).
    """
    compute = auto_mesh(mesh)
    graphdef, state = nnx.split(model)
    state = jax.device_put(state, parameter_shardings(state, compute, rules))

    @partial(jax.jit, static_argnames=("n_args", "options"))
    def run(state, inputs, n_args, options):
        return _call_model(graphdef, state, inputs, n_args, options)

    def forward(*args: Any, batch_size: int | None = None, **kwargs: Any) -> Any:
        arrays, options = _split_arguments(args, kwargs)
        placed, batch = shard_batch(arrays, compute, rules)
        batch = batch if batch_size is None else batch_size
        rows = next(iter(placed.values())).shape[0]
        out = run(state, placed, len(args), options)
        if batch != rows:
            out = jax.tree.map(lambda x: x[:batch] if x.ndim and x.shape[0] == rows else x, out)
        return to_mesh(out, mesh) if compute is not mesh else out

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
        `forward(*inputs, **inputs_and_options)` taking the model's arguments by position or by name, as the model
        does (`forward(ids, attention_mask=mask)`).
    """
    graphdef, state = nnx.split(model)
    meshes: dict[int, tuple[Mesh, Any]] = {}

    @partial(jax.jit, static_argnames=("n_args", "options"))
    def run(state, inputs, n_args, options):
        n, per_device = next(iter(inputs.values())).shape[:2]
        flat = {k: v.reshape(n * per_device, *v.shape[2:]) for k, v in inputs.items()}
        out = _call_model(graphdef, state, flat, n_args, options)
        return jax.tree.map(lambda x: x.reshape(n, per_device, *x.shape[1:]) if x.ndim else x, out)

    def forward(*args: Any, **kwargs: Any) -> Any:
        arrays, options = _split_arguments(args, kwargs)
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
        return run(replicated, placed, len(args), options)

    return forward


__all__ = ["pmap_forward", "sharded_forward"]
