"""Loading a checkpoint into a model.

Loading builds the model abstractly (`nnx.eval_shape`: no memory), then reads, converts and places one tensor at a
time, so peak host memory stays near one copy of the parameters plus the largest single tensor. Checkpoints hold the
layers stacked; a model built with `layers="per_layer"` gets each stacked tensor, as it is read, placed row by row
into its per-layer parameters, so that layout too is loaded straight into place with one copy on device.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xlm_flax.checkpoints.hub import HUB_ARGUMENTS, HubOptions
from xlm_flax.checkpoints.plan import LoadPlan, _flax_name, abstract_model
from xlm_flax.checkpoints.sources import TensorSource, open_weights
from xlm_flax.config import XLMConfig
from xlm_flax.errors import InputError
from xlm_flax.model.stack import stacked_path
from xlm_flax.sharding.placement import sharded_placer

logger = logging.getLogger("xlm_flax")


Placer = Callable[[str, np.ndarray], jax.Array]


def default_placer(path: str, value: np.ndarray) -> jax.Array:
    """Puts a host array on the default device.

    Args:
        path: Flat parameter path (unused).
        value: The host array.
    """
    del path
    return jax.device_put(value)


def load_pretrained(
    cls: type,
    path_or_hub_id: str | os.PathLike,
    *,
    dtype: Any = jnp.float32,
    param_dtype: Any = None,
    placer: Placer | None = None,
    mesh: jax.sharding.Mesh | None = None,
    rules: Any = None,
    strict: bool = False,
    seed: int = 0,
    config: XLMConfig | None = None,
    hub: HubOptions | None = None,
    **model_kwargs: Any,
) -> nnx.Module:
    """Loads a model of class `cls` from a native or transformers checkpoint directory or hub id.

    Args:
        cls: The model class (`XLMModel`, `XLMWithLMHeadModel`, or a head model).
        path_or_hub_id: Local directory or hub id.
        dtype: Compute dtype.
        param_dtype: Storage dtype of the parameters; None keeps the checkpoint's (float32 for transformers files).
        placer: Places each converted host array (e.g. with a sharding); defaults to the default device.
        mesh: Load the parameters sharded over this mesh (`xlm_flax.make_mesh`): each tensor goes straight into its
            `NamedSharding` as it is read, so no device ever holds a whole sharded weight; from a native checkpoint
            each process reads only the slices its devices hold. Not with `placer`.
        rules: Overrides of `xlm_flax.DEFAULT_RULES` for `mesh`.
        strict: Refuse checkpoints that lack some of the model's tensors instead of initialising them fresh.
        seed: Seed for tensors that are initialised fresh (a head on top of a base checkpoint).
        config: Use this config instead of the checkpoint's, e.g. with another `num_labels` for a fresh head.
        hub: The hub's arguments (`revision`, `token`, ...) for a hub id; they may also be given by name among
            `model_kwargs`.
        **model_kwargs: Further constructor arguments (`layers`, `remat`). With `layers="per_layer"` the model is
            loaded straight into its per-layer parameters, and a `placer` is called once per layer with per-layer
            names (`transformer.attentions.0.q_lin.kernel`).

    Returns:
        The model, its parameters on device. Tensors that were initialised fresh and checkpoint tensors the model
        does not use are logged as warnings.

    Raises:
        MissingFileError, CheckpointError, ConfigError: on bad or incomplete checkpoints.
    """
    if mesh is not None and placer is not None:
        raise InputError("give either mesh= (parameters sharded by the rules) or placer=, not both")
    given = HubOptions.pop_from(model_kwargs)
    hub = HubOptions(**{**(hub or HubOptions()).as_kwargs(), **given.as_kwargs()})
    _check_model_kwargs(cls, model_kwargs)
    config = XLMConfig.from_pretrained(path_or_hub_id, **hub.as_kwargs()) if config is None else config
    source = open_weights(path_or_hub_id, hub)
    try:
        return _load_into(
            cls,
            config,
            source,
            dtype=dtype,
            param_dtype=param_dtype,
            placer=placer or default_placer,
            mesh=mesh,
            rules=rules,
            strict=strict,
            seed=seed,
            name_or_path=os.fspath(path_or_hub_id),
            **model_kwargs,
        )
    finally:
        source.close()


def _load_into(
    cls, config, source, *, dtype, param_dtype, placer, mesh, rules, strict, seed, name_or_path, **model_kwargs
) -> nnx.Module:
    if param_dtype is None:
        param_dtype = _checkpoint_param_dtype(source)
    model_kwargs = dict(dtype=dtype, param_dtype=param_dtype, **model_kwargs)
    abstract = abstract_model(cls, config, **model_kwargs)
    graphdef, abstract_state = nnx.split(abstract)
    if mesh is not None:
        placer = sharded_placer(abstract_state, mesh, rules)
    flat = list(nnx.to_flat_state(abstract_state))
    # The checkpoint's (stacked) names: each maps to its target variables, with their layer index in the per-layer
    # layout and None otherwise.
    groups: dict[str, list[tuple[int | None, tuple, Any]]] = {}
    for path, variable in flat:
        stacked, index = stacked_path(tuple(path))
        groups.setdefault(_flax_name(stacked), []).append((index, path, variable))
    targets = {name: _stacked_target(members) for name, members in groups.items()}
    plan = LoadPlan(source, cls.architecture, config, targets)
    plan.check(missing_ok=not strict, unused_ok=True)
    if plan.missing_new:
        logger.warning(
            "%s: initialised fresh (not in the checkpoint; train them before use): %s",
            cls.__name__,
            ", ".join(plan.missing_new),
        )
    if plan.unused:
        logger.warning("%s: checkpoint tensors not used by this model: %s", cls.__name__, ", ".join(plan.unused))
    fresh = _init_subset(cls, config, model_kwargs, plan.missing_new, seed) if plan.missing_new else {}

    values = {}
    for name, members in groups.items():
        target = targets[name]
        if name in fresh:
            host = np.asarray(fresh.pop(name))
        elif mesh is not None and _layer_index(members) is None and plan.sliceable(name):
            # Native tensors are read slice by slice as the sharded placer asks: each process reads only the parts
            # its own devices hold, never the whole of a sharded weight.
            ((_, path, variable),) = members
            values[path] = variable.replace(value=placer(name, plan.slices(name, np.dtype(target.dtype))))
            continue
        else:
            host = plan.read(name, np.dtype(target.dtype))
        for index, path, variable in members:  # one member, or one per layer (row `index` of the stacked tensor)
            array = placer(_flax_name(path), host if index is None else host[index])
            values[path] = variable.replace(value=array)
        del host  # drop the host copy before reading the next tensor
    model = nnx.merge(graphdef, nnx.from_flat_state([(path, values[path]) for path, _ in flat]))
    model.name_or_path = name_or_path
    model.fresh_parameters = tuple(plan.missing_new)
    return model


def _check_model_kwargs(cls: type, model_kwargs: dict[str, Any]) -> None:
    """Refuses keywords that neither `from_pretrained` nor the constructor takes, naming `from_pretrained` (the
    constructor would raise a TypeError naming `__init__`, which the caller never called)."""
    parameters = dict(inspect.signature(cls.__init__).parameters)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        from xlm_flax.model.encoder import XLMModel  # heads pass their other options on to the encoder

        parameters.update(inspect.signature(XLMModel.__init__).parameters)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    allowed = {name for name, p in parameters.items() if p.kind in kinds}
    allowed -= {"self", "config", "rngs", "dtype", "param_dtype"}
    unknown = sorted(set(model_kwargs) - allowed)
    if unknown:
        raise TypeError(
            f"{cls.__name__}.from_pretrained() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"it takes dtype, param_dtype, mesh, rules, placer, strict, seed, config, the hub's arguments "
            f"({', '.join(HUB_ARGUMENTS)}) and the constructor's ({', '.join(sorted(allowed)) or 'none'})"
        )


def _layer_index(members: list[tuple[int | None, tuple, Any]]) -> int | None:
    """The layer index of a checkpoint tensor's first target variable (None: the tensor is one variable)."""
    return members[0][0]


def _stacked_target(members: list[tuple[int | None, tuple, Any]]) -> Any:
    """The target of one checkpoint tensor: the variable itself, or, for per-layer variables, their stacked shape."""
    index, _, variable = members[0]
    if index is None:
        return variable
    return jax.ShapeDtypeStruct((len(members), *variable.shape), variable.dtype)


def _checkpoint_param_dtype(source: TensorSource) -> np.dtype:
    """The floating dtype the checkpoint stores its parameters in (float32 when it cannot tell)."""
    for name in source.names():
        if name.endswith(("embeddings.weight", "embeddings.embedding")):
            return np.dtype(source.dtype(name))
    return np.dtype(np.float32)


def _init_subset(cls, config, model_kwargs, paths: list[str], seed: int) -> dict[str, jax.Array]:
    """Initialises only the parameters at `paths`: the jitted constructor returns just those, and XLA drops the
    initialisers of everything else, so nothing else is materialised."""
    wanted = set(paths)
    # Built stacked (the checkpoint's names) whatever the layout: every layout draws the same initial weights.
    model_kwargs = {**model_kwargs, "layers": "scan"} if model_kwargs.get("layers") == "per_layer" else model_kwargs

    def init():
        state = nnx.state(cls(config, rngs=nnx.Rngs(seed), **model_kwargs), nnx.Param)
        return {_flax_name(p): v[...] for p, v in nnx.to_flat_state(state) if _flax_name(p) in wanted}

    return jax.jit(init)()


__all__ = ["Placer", "default_placer", "load_pretrained"]
