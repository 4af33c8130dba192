"""The layer stack: its three layouts, building the per-layer modules, and running them.

`XLMModel(layers=...)` chooses how the `n_layers` blocks are held and run (see `XLMModel` for measured figures):

* `"scan"`: the per-layer modules stacked along a leading `layers` axis and run with `nnx.scan`, so the compiled
  program holds one layer body however deep the model is. transformers' `attentions.3.q_lin.weight` is row 3 of our
  `attentions.q_lin.kernel`.
* `"unrolled"`: the same stacked weights, the scan unrolled into straight-line code.
* `"per_layer"`: `nnx.List`s of separate per-layer modules; each layer's weights are their own arrays, read in place
  by the matmuls instead of sliced out of the stacked arrays before every layer.

The `layers` axis of stacked parameters is Flax's own transform metadata: the `nnx.vmap` that builds the stack adds
it to every parameter's partitioning names, and the `nnx.scan` that runs it strips it inside the body and adds it
back, so `nnx.get_partition_spec` reads `("layers", ...)` for stacked parameters and the bare names for per-layer
ones. All runners share one block (`xlm_flax.model.block.transformer_layer`), and checkpoints are always written in
the stacked layout (`stacked_parameters`).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

import flax
import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx import spmd

import xlm_flax
from xlm_flax.errors import ConfigError
from xlm_flax.model.block import transformer_layer
from xlm_flax.model.masking import AttentionMask

# The logical name of the stacked layer axis, and the transform metadata that makes NNX add and strip it.
LAYER_AXIS = "layers"
_LAYER_METADATA = {nnx.PARTITION_NAME: LAYER_AXIS}


# The values of `XLMModel(layers=...)`.
LAYOUTS = ("scan", "unrolled", "per_layer")


# The encoder attributes that hold one module per layer (stacked, or a list per layer).
_STACKS = ("attentions", "layer_norm1", "ffns", "layer_norm2")


# Code whose frames a deprecation warning skips, so that it names the caller's line: Python shows a
# DeprecationWarning by default only when that line is in `__main__`, and the constructor runs under Flax's
# metaclass, `from_pretrained` under `jax.eval_shape`. (3.12's `skip_file_prefixes` would do this; we support 3.10.)
_INTERNAL = tuple(os.path.dirname(m.__file__) + os.sep for m in (xlm_flax, flax, jax))


def _deprecated(message: str) -> None:
    """Warns `message` as a DeprecationWarning attributed to the first frame outside xlm_flax, flax and jax."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DeprecationWarning, stacklevel=level + 1)


def check_layout(layers: Any) -> str:
    """Returns `layers` when it names a layout.

    Args:
        layers: The value given for `layers=`.

    Raises:
        ConfigError: naming the valid layouts.
    """
    if layers not in LAYOUTS:
        raise ConfigError(f"layers={layers!r}: use one of {', '.join(repr(v) for v in LAYOUTS)}")
    return layers


def _stacked(n: int, make: Callable[[nnx.Rngs], nnx.Module], rngs: nnx.Rngs) -> nnx.Module:
    """Builds `n` independently initialised copies of a module as one module whose parameters have a leading
    `layers` axis, ready for `nnx.scan`; `transform_metadata` prepends `layers` to their partitioning names."""

    @nnx.split_rngs(splits=n)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata=_LAYER_METADATA)
    def build(rngs: nnx.Rngs) -> nnx.Module:
        return make(rngs)

    return build(rngs)


def _split_stack(module: nnx.Module, n: int) -> nnx.List:
    """The `n` per-layer modules of a stacked module, their parameters without the `layers` axis."""
    graphdef, state = nnx.split(module)
    layers = []
    for i in range(n):
        layer_state = jax.tree.map(lambda a, i=i: a[i], state)
        # Flax's own inverse of the vmap's `add_axis`: drops `layers` from the partitioning names (and checks it is
        # there), so per-layer parameters read exactly as the block's own names.
        spmd.remove_axis(layer_state, 0, _LAYER_METADATA)
        layers.append(nnx.merge(graphdef, layer_state))
    return nnx.List(layers)


@partial(jax.jit, static_argnames=("graphdef", "rate", "unroll", "remat", "output_hidden_states", "output_attentions"))
def _layer_stack(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    x: jax.Array,  # [B, T, D]
    mask: AttentionMask,
    keep: jax.Array,  # [B, T]
    layer_keys: jax.Array | None,  # [L, 2] or None
    *,
    rate: float,
    unroll: int,
    remat: bool,
    output_hidden_states: bool,
    output_attentions: bool,
) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """The layer stack as a pure, jitted function of the stacked layer state.

    Jitted so that an eager call of the model (a notebook, a test) compiles the scanned body once per input shape
    and reuses it, instead of tracing and compiling the scan anew on every call; inside an outer `jit` it is inlined.
    """
    attentions, layer_norm1, ffns, layer_norm2 = nnx.merge(graphdef, state)

    def layer(x, attention, norm1, ffn, norm2, key):
        x, weights = transformer_layer(
            x,
            attention,
            norm1,
            ffn,
            norm2,
            key,
            mask=mask,
            keep=keep,
            rate=rate,
            output_attentions=output_attentions,
        )
        return x, (x if output_hidden_states else None, weights)

    if remat:
        layer = nnx.remat(layer)
    scan = nnx.scan(
        layer,
        in_axes=(nnx.Carry, 0, 0, 0, 0, None if layer_keys is None else 0),
        out_axes=(nnx.Carry, 0),
        unroll=unroll,
        # The same metadata as the vmap that built the stack: the body sees per-layer partitioning names, and the
        # `layers` name is put back on the way out.
        transform_metadata=_LAYER_METADATA,
    )
    x, (states, weights) = scan(x, attentions, layer_norm1, ffns, layer_norm2, layer_keys)
    return x, states, weights


def _encoder(model: nnx.Module) -> nnx.Module:
    encoder = getattr(model, "transformer", model)
    if not all(hasattr(encoder, name) for name in _STACKS):
        raise TypeError(f"{type(model).__name__} holds no XLM layer stack (expected an XLMModel or a head model)")
    return encoder


def is_unstacked(model: nnx.Module) -> bool:
    """True when `model`'s layers are held per layer (`layers="per_layer"`).

    Args:
        model: An `XLMModel`, or a model with an `XLMModel` as `.transformer`.
    """
    return isinstance(_encoder(model).attentions, nnx.List)


def _to_per_layer(encoder: nnx.Module) -> None:
    """Replaces the stacked layer modules of `encoder` by lists of per-layer modules, in place."""
    if is_unstacked(encoder):
        return
    n = encoder.config.n_layers
    for name in _STACKS:
        setattr(encoder, name, _split_stack(getattr(encoder, name), n))  # the stacked arrays go with the old module
    encoder.layer_layout = "per_layer"


def unstack_layers(model: nnx.Module) -> nnx.Module:
    """Deprecated: build or load the model with `layers="per_layer"` instead. Converts `model` to the per-layer
    layout in place.

    Args:
        model: An `XLMModel`, or a model with an `XLMModel` as `.transformer` (`XLMWithLMHeadModel`, the heads).

    Returns:
        The same `model`, its `attentions`, `layer_norm1`, `ffns` and `layer_norm2` now `nnx.List`s of
        `n_layers` modules whose parameters no longer have the leading `layers` axis. Outputs are unchanged.

    Raises:
        TypeError: When `model` holds no XLM layer stack.
    """
    _deprecated(
        'unstack_layers(model) is deprecated; build or load the model with layers="per_layer" instead, e.g. '
        'XLMWithLMHeadModel.from_pretrained(path, layers="per_layer")'
    )
    _to_per_layer(_encoder(model))
    return model


def run_unstacked(
    encoder: nnx.Module,
    x: jax.Array,  # [B, T, D]
    mask: AttentionMask,
    keep: jax.Array,  # [B, T]
    layer_keys: jax.Array | None,  # [L, 2] or None
    *,
    rate: float,
    remat: bool,
    output_hidden_states: bool,
    output_attentions: bool,
) -> tuple[jax.Array, Any, Any]:
    """The layer loop over per-layer modules: the same layer as the scanned stack, one call per layer.

    Returns what `XLMModel._run_layers` returns: the output and, when asked, the per-layer outputs `[L, B, T, D]`
    and attention weights `[L, B, N, T, S]` stacked along a leading axis, as the scan would give them.
    """

    def layer(x, attention, norm1, ffn, norm2, key):
        return transformer_layer(
            x,
            attention,
            norm1,
            ffn,
            norm2,
            key,
            mask=mask,
            keep=keep,
            rate=rate,
            output_attentions=output_attentions,
        )

    if remat:
        layer = nnx.remat(layer)
    states, weights = [], []
    for i, (attention, norm1, ffn, norm2) in enumerate(
        zip(encoder.attentions, encoder.layer_norm1, encoder.ffns, encoder.layer_norm2, strict=True)
    ):
        x, w = layer(x, attention, norm1, ffn, norm2, None if layer_keys is None else layer_keys[i])
        states.append(x)
        weights.append(w)
    return (
        x,
        jnp.stack(states) if output_hidden_states else None,
        jnp.stack(weights) if output_attentions else None,
    )


def stacked_path(path: tuple) -> tuple[tuple, int | None]:
    """The stacked-layout path of a parameter path, and its layer index.

    `("transformer", "attentions", 3, "q_lin", "kernel")` (per layer) gives
    `(("transformer", "attentions", "q_lin", "kernel"), 3)`; a path outside the per-layer lists gives `(path, None)`.

    Args:
        path: A flat-state path (`nnx.to_flat_state`).
    """
    for k in range(len(path) - 1):
        if path[k] in _STACKS and isinstance(path[k + 1], int):
            return path[: k + 1] + path[k + 2 :], path[k + 1]
    return path, None


def _name(path: tuple) -> str:
    return ".".join(str(p) for p in path)


class _StackedParameters(Mapping):
    """`{flat name: array}` in the stacked layout over a model of any layout.

    A per-layer parameter's stacked array is made only when asked for (`jnp.stack` of its layers, on their devices)
    and only the last one is kept, so walking the mapping holds at most one extra parameter however deep the model:
    a stacked copy of the whole model is never made.
    """

    def __init__(self, model: nnx.Module):
        self._parts: dict[str, list[jax.Array | None]] = {}  # name -> its array of each layer, in layer order
        self._whole: dict[str, jax.Array] = {}
        names = []
        for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
            stacked, index = stacked_path(tuple(path))
            name = _name(stacked)
            names.append(name)
            if index is None:
                self._whole[name] = variable[...]
            else:
                parts = self._parts.setdefault(name, [])
                parts.extend([None] * (index + 1 - len(parts)))
                parts[index] = variable[...]
        # Flat paths come sorted, so the first sight of each name keeps the stacked model's order of names.
        self._names = list(dict.fromkeys(names))
        self._last: tuple[str, jax.Array] | None = None

    def __getitem__(self, name: str) -> jax.Array:
        if name in self._whole:
            return self._whole[name]
        if name not in self._parts:
            raise KeyError(name)
        if self._last is None or self._last[0] != name:
            self._last = None  # free the previous stacked array before making the next
            self._last = (name, jnp.stack(self._parts[name]))
        return self._last[1]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def stacked_parameters(model: nnx.Module) -> Mapping[str, jax.Array]:
    """The parameters of `model`, whatever its layer layout, as `{flat name: array}` in the stacked layout.

    Names and shapes are those of a `layers="scan"` model (`transformer.attentions.q_lin.kernel`,
    `[n_layers, ...]`), in the same order, so that every layout writes the same checkpoint. Stacked and other
    parameters are the model's own arrays; a per-layer parameter is stacked only when it is looked up, one at a time
    (see `_StackedParameters`).

    Args:
        model: Any model of this package.

    Returns:
        A read-only mapping from flat parameter name to array.
    """
    return _StackedParameters(model)


__all__ = [
    "LAYER_AXIS",
    "LAYOUTS",
    "check_layout",
    "is_unstacked",
    "run_unstacked",
    "stacked_parameters",
    "stacked_path",
    "unstack_layers",
]
