"""Per-layer weights for inference: the layer stack as separate arrays instead of one `[layers, ...]` array each.

Training keeps the stacked layout (`nnx.scan`: one compiled layer body, fast compiles). For inference on CPU that
layout costs a copy: the scanned body slices each layer's weights out of the stacked arrays before every matmul
(about 2.4 GB of memory traffic per forward of a 12 x 2048 model). With the layers unstacked, every weight is its own
jit argument and XLA feeds the matmul straight from the parameter buffer; the layers run as straight-line code (a
Python loop at trace time), so the program holds `n_layers` copies of the body (compile time grows with depth).

Measured on the 2-core benchmark machine, 4 x 2048 layers at (1, 128): 0.42 s -> 0.31 s per forward; at (8, 128) the
copy is a few percent of the time and within the machine's noise (benchmarks/README.md, "What we tried").

`unstack_layers(model)` converts a loaded `XLMModel` (or a model holding one as `.transformer`) in place; the
forward pass then takes the per-layer route by itself. Saving (`save_pretrained`) and sharding expect the stacked
layout: unstack only models used for inference.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from xlm_flax.layers import LOGICAL_AXES

_STACKS = ("attentions", "layer_norm1", "ffns", "layer_norm2")


def _encoder(model: nnx.Module) -> nnx.Module:
    encoder = getattr(model, "transformer", model)
    if not all(hasattr(encoder, name) for name in _STACKS):
        raise TypeError(f"{type(model).__name__} holds no XLM layer stack (expected an XLMModel or a head model)")
    return encoder


def is_unstacked(model: nnx.Module) -> bool:
    """True when `model`'s layers are held per layer (after `unstack_layers`)."""
    return isinstance(_encoder(model).attentions, nnx.List)


def unstack_layers(model: nnx.Module) -> nnx.Module:
    """Replaces the stacked layer modules of `model` by lists of per-layer modules, in place, for inference.

    Args:
        model: An `XLMModel`, or a model with an `XLMModel` as `.transformer` (`XLMWithLMHeadModel`, the heads).

    Returns:
        The same `model`, its `attentions`, `layer_norm1`, `ffns` and `layer_norm2` now `nnx.List`s of
        `n_layers` modules whose parameters no longer have the leading `layers` axis. Outputs are unchanged.

    Raises:
        TypeError: When `model` holds no XLM layer stack.
    """
    encoder = _encoder(model)
    if is_unstacked(encoder):
        return model
    n = encoder.config.n_layers
    for name in _STACKS:
        graphdef, state = nnx.split(getattr(encoder, name))
        layers = []
        for i in range(n):
            layer = nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state))
            for _, variable in nnx.iter_graph(layer):
                if isinstance(variable, nnx.Param):
                    axes = variable.get_metadata().get(LOGICAL_AXES)
                    if axes and axes[0] == "layers":
                        variable.set_metadata(**{LOGICAL_AXES: tuple(axes[1:])})
            layers.append(layer)
        setattr(encoder, name, nnx.List(layers))  # the stacked arrays are freed with the old module
    return model


def run_unstacked(
    encoder: nnx.Module,
    x: jax.Array,  # [B, T, D]
    attend: jax.Array,  # [B, 1, 1, S] or [1, 1, T, S]
    keep: jax.Array,  # [B, T]
    layer_keys: jax.Array | None,  # [L, 2] or None
    *,
    rate: float,
    output_hidden_states: bool,
    output_attentions: bool,
) -> tuple[jax.Array, Any, Any]:
    """The layer loop over per-layer modules: the same layer as the scanned stack, one call per layer.

    Returns what `XLMModel._run_layers` returns: the output and, when asked, the per-layer outputs `[L, B, T, D]`
    and attention weights `[L, B, N, T, S]` stacked along a leading axis, as the scan would give them.
    """
    from xlm_flax.modeling import transformer_layer  # modeling imports this module lazily: no cycle at import

    states, weights = [], []
    for i, (attention, norm1, ffn, norm2) in enumerate(
        zip(encoder.attentions, encoder.layer_norm1, encoder.ffns, encoder.layer_norm2, strict=True)
    ):
        key = None if layer_keys is None else layer_keys[i]
        x, w = transformer_layer(
            x,
            attention,
            norm1,
            ffn,
            norm2,
            key,
            attend=attend,
            keep=keep,
            rate=rate,
            output_attentions=output_attentions,
        )
        states.append(x)
        weights.append(w)
    return (
        x,
        jnp.stack(states) if output_hidden_states else None,
        jnp.stack(weights) if output_attentions else None,
    )


__all__ = ["is_unstacked", "run_unstacked", "unstack_layers"]
