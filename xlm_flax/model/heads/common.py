"""What the task heads share: the encoder under `transformer`, dense layers, dropout keys, activations."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from xlm_flax.config import XLMConfig
from xlm_flax.errors import InputError
from xlm_flax.model.encoder import XLMModel
from xlm_flax.model.initializers import _normal
from xlm_flax.model.layers import Dense, param
from xlm_flax.model.pretrained import PretrainedMixin

logger = logging.getLogger("xlm_flax")


# transformers' ACT2FN names that a summary may use; anything else is refused rather than silently replaced.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": partial(jax.nn.gelu, approximate=False),
    "gelu_new": partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": partial(jax.nn.gelu, approximate=True),
    "sigmoid": jax.nn.sigmoid,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "linear": lambda x: x,
}


def _dense(config: XLMConfig, in_features: int, out_features: int, axes: tuple, *, dtype, param_dtype, rngs) -> Dense:
    return Dense(
        (in_features,),
        (out_features,),
        kernel_axes=axes,
        bias_axes=axes[1:],
        init=_normal(config.init_std),
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


class _KernelOnly(nnx.Module):
    """A bias-free linear map (transformers' `nn.Linear(..., bias=False)`)."""

    def __init__(self, in_features: int, out_features: int, axes: tuple, *, init, dtype, param_dtype, rngs):
        self.dtype = dtype
        self.kernel = param(init(rngs.params(), (in_features, out_features), param_dtype), axes)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.einsum("...D,DO->...O", x.astype(self.dtype), self.kernel[...].astype(self.dtype))


def _dropout_key(rate: float, deterministic: bool, rngs: nnx.Rngs | None) -> jax.Array | None:
    """A key for one head dropout, or None when it is off."""
    if deterministic or rate == 0.0:
        return None
    if rngs is None:
        raise ValueError("deterministic=False needs rngs with a 'dropout' stream, e.g. rngs=nnx.Rngs(dropout=0)")
    return rngs.dropout()


def _check_positions(name: str, value: jax.Array | None, batch: int) -> jax.Array | None:
    """Accepts `[batch]` or `[batch, 1]` position-like labels (the reference squeezes the latter)."""
    if value is None:
        return None
    value = jnp.asarray(value)
    if value.ndim == 2 and value.shape[1] == 1:
        value = value[:, 0]
    if value.shape != (batch,):
        raise InputError(f"{name} has shape {value.shape}; expected (batch,) = ({batch},)")
    return value


class _HeadModel(PretrainedMixin, nnx.Module):
    """Shared constructor part: the encoder under `transformer`, as in every transformers head model."""

    def _build_encoder(self, config, rngs, dtype, param_dtype, scan_layers, remat) -> None:
        self.config = config
        self.transformer = XLMModel(
            config, rngs=rngs, dtype=dtype, param_dtype=param_dtype, scan_layers=scan_layers, remat=remat
        )

    def _encode(self, inputs: dict, output_hidden_states, output_attentions, deterministic, rngs):
        # `inputs` is the caller's `locals()`: its encoder arguments under their own names.
        return self.transformer(
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs["langs"],
            inputs["token_type_ids"],
            inputs["position_ids"],
            inputs["lengths"],
            inputs_embeds=inputs["inputs_embeds"],
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            deterministic=deterministic,
            rngs=rngs,
        )


__all__ = ["ACTIVATIONS"]
