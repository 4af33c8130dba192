"""What the models on the encoder share: the encoder under `transformer` and the one way its inputs reach it
(`_HeadModel`), dense layers, dropout keys, activations."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from xlm_flax.config import XLMConfig
from xlm_flax.errors import InputError
from xlm_flax.model.encoder import XLMModel
from xlm_flax.model.initializers import _normal
from xlm_flax.model.layers import Dense, param
from xlm_flax.model.outputs import BaseModelOutput
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


def _dense(
    config: XLMConfig, in_features: int, out_features: int, axes: tuple, *, dtype, param_dtype, precision, rngs
) -> Dense:
    return Dense(
        (in_features,),
        (out_features,),
        kernel_axes=axes,
        bias_axes=axes[1:],
        init=_normal(config.init_std),
        dtype=dtype,
        param_dtype=param_dtype,
        precision=precision,
        rngs=rngs,
    )


class _KernelOnly(nnx.Module):
    """A bias-free linear map (transformers' `nn.Linear(..., bias=False)`)."""

    def __init__(self, in_features: int, out_features: int, axes: tuple, *, init, dtype, param_dtype, precision, rngs):
        self.dtype = dtype
        self.precision = precision
        self.kernel = param(init(rngs.params(), (in_features, out_features), param_dtype), axes)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.einsum(
            "...D,DO->...O", x.astype(self.dtype), self.kernel[...].astype(self.dtype), precision=self.precision
        )


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


# `XLMModel.__call__`'s parameters without `self`: the one declaration of the encoder's inputs, which every head
# forwards and binds by name (`_HeadModel._encoder_inputs`).
_ENCODER_CALL = inspect.signature(XLMModel.__call__)
_ENCODER_CALL = _ENCODER_CALL.replace(parameters=tuple(_ENCODER_CALL.parameters.values())[1:])


class _HeadModel(PretrainedMixin, nnx.Module):
    """The XLM encoder, under `transformer` as in every transformers head model, and a head on top of it.

    The encoder's constructor options and call arguments are declared and documented once, on `XLMModel`. A head
    forwards them (`XLMForX(config, rngs=rngs, **options)`, `model(*args, labels=..., **kwargs)`) and declares only
    its own: `_check_config` refuses a config before anything is built, `_build_head` builds its layers, and its
    `__call__` takes the head-only arguments (labels, positions) by keyword.
    """

    def __init__(self, config: XLMConfig, *, rngs: nnx.Rngs, **options: Any):
        """Builds the encoder, then the head.

        Args:
            config: The model's hyper-parameters, the head's own fields (`num_labels`, `summary_*`, ...) included.
            rngs: Random streams for parameter initialisation (`params`).
            **options: The encoder's options, as `XLMModel` documents them (`dtype`, `param_dtype`, `layers`,
                `remat`, ...). The head computes in the same dtypes; its logits and losses are float32.

        Raises:
            ConfigError: for a config this head cannot take, before anything is built.
            TypeError: for an option `XLMModel` does not take.
        """
        self._check_config(config)
        self.config = config
        self.transformer = XLMModel(config, rngs=rngs, **options)
        self._build_head(
            config,
            dtype=self.transformer.dtype,
            param_dtype=self.transformer.param_dtype,
            precision=self.transformer.precision,
            rngs=rngs,
        )

    @classmethod
    def _check_config(cls, config: XLMConfig) -> None:
        """Raises ConfigError for a config the head cannot take; nothing to refuse by default."""

    def _build_head(
        self, config: XLMConfig, *, dtype: jnp.dtype, param_dtype: jnp.dtype, precision: str, rngs: nnx.Rngs
    ) -> None:
        """Builds the head's layers, in the encoder's dtypes and matmul precision; every head defines it."""
        raise NotImplementedError

    def _encoder_inputs(self, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The encoder's arguments by name with its defaults filled in, bound as `XLMModel.__call__` binds them.

        Heads read them by name where they need them (dropout's `deterministic` and `rngs`, the input length) or
        change them (multiple choice flattens its choices) before `_encode`.

        Raises:
            TypeError: naming an argument that neither this head nor the encoder takes.
        """
        try:
            bound = _ENCODER_CALL.bind(*args, **kwargs)
        except TypeError as error:
            head = list(inspect.signature(type(self).__call__).parameters.values())[1:]  # without self
            kinds = [(p.name, p.kind) for p in (*_ENCODER_CALL.parameters.values(), *head)]
            by_position = [name for name, kind in kinds if kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
            by_name = [name for name, kind in kinds if kind is inspect.Parameter.KEYWORD_ONLY]
            raise TypeError(
                f"{type(self).__name__}: {error}; it takes {', '.join(by_position)} by position or name and "
                f"{', '.join(by_name)} by name (see XLMModel.__call__ and {type(self).__name__}.__call__)"
            ) from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def _encode(self, inputs: dict[str, Any]) -> BaseModelOutput:
        """Runs the encoder on the arguments `_encoder_inputs` bound."""
        return self.transformer(**inputs)


__all__ = ["ACTIVATIONS"]
