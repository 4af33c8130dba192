"""Placing parameters on a mesh by their logical axes: shardings, sharded loading and sharded initialisation.

The logical axes are Flax's own partitioning metadata on each parameter (`xlm_flax.model.layers.logical_axes`);
`xlm_flax.sharding.rules` resolves them to mesh axes with Flax's rules and leaves undivisible dimensions whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from xlm_flax.model.layers import logical_axes
from xlm_flax.sharding.mesh import auto_mesh, to_mesh
from xlm_flax.sharding.rules import Rules, _divisible_spec, batch_axis, logical_to_spec


def variable_sharding(variable: nnx.Variable, mesh: Mesh, rules: Rules | None = None) -> NamedSharding:
    """The `NamedSharding` of one variable (abstract or concrete) by its logical axes and `rules`.

    Variables without logical axes, and dimensions the mesh axis does not divide, are replicated.

    Args:
        variable: The variable.
        mesh: The mesh.
        rules: Overrides of `DEFAULT_RULES`.
    """
    axes = logical_axes(variable)
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
) -> Callable[[str, Any], jax.Array]:
    """A `placer` for `xlm_flax.checkpoints.load_pretrained` that puts each tensor, as it is read, straight into its
    sharding: every device receives only its own slice, and in multi-host runs every process fills only its own
    devices (each process reads the same checkpoint).

    Args:
        abstract_state: The model's state from `nnx.eval_shape` (gives each parameter's logical axes).
        mesh: The mesh.
        rules: Overrides of `DEFAULT_RULES`.

    Returns:
        A function `(flat_name, value) -> jax.Array`, where `value` is a host array or a lazy tensor with `shape`
        whose `value[index]` reads only that slice (`xlm_flax.checkpoints.plan.TensorSlices`).
    """
    shardings = {
        ".".join(str(p) for p in path): variable_sharding(variable, mesh, rules)
        for path, variable in nnx.to_flat_state(abstract_state)
    }

    def place(name: str, value: Any) -> jax.Array:
        # JAX asks once per local device; devices holding the same slice (replicated axes) share one read, so a
        # lazy tensor reads each distinct slice from disk once.
        read: dict[tuple, np.ndarray] = {}

        def slice_of(index: tuple[slice, ...]) -> np.ndarray:
            key = tuple((s.start, s.stop, s.step) for s in index)
            if key not in read:
                read[key] = np.asarray(value[index])
            return read[key]

        return jax.make_array_from_callback(tuple(value.shape), shardings[name], slice_of)

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
    # The constructor has no sharding annotations: it runs on the Auto view of the mesh (see `auto_mesh`) and the
    # parameters are then handed over to `mesh` itself, without a copy.
    shardings = parameter_shardings(abstract_state, auto_mesh(mesh), rules)
    state = jax.jit(lambda: nnx.state(factory()), out_shardings=shardings)()
    return nnx.merge(graphdef, to_mesh(state, mesh))


def data_sharding(mesh: Mesh, ndim: int = 2, rules: Rules | None = None) -> NamedSharding:
    """Sharding of a batch array `[batch, ...]`: split over the `batch` rule's mesh axis, the rest replicated.

    Args:
        mesh: The mesh.
        ndim: Rank of the array.
        rules: Overrides of `DEFAULT_RULES` (`batch` names the data axis).
    """
    return NamedSharding(mesh, PartitionSpec(batch_axis(mesh, rules), *([None] * (ndim - 1))))


__all__ = ["data_sharding", "init_sharded", "parameter_shardings", "shard_model", "sharded_placer", "variable_sharding"]
