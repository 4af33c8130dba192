"""Small NNX layers with explicit dtypes and logical axis names.

Every parameter is an `nnx.Param` carrying Flax's own partitioning metadata: one logical axis name per dimension
(`vocab`, `embed`, `heads`, `head_dim`, `mlp`, `layers`, ...) in `out_sharding`, with `eager_sharding=False`, so that
building a model needs no mesh. `nnx.get_partition_spec(nnx.state(model))` reads those names, and Flax's logical-axis
rules (`nnx.logical_axis_rules`, `nnx.get_named_sharding`) or `xlm_flax.sharding` map them to mesh axes; the layers
themselves know nothing of meshes.

`dtype` is the compute dtype and `param_dtype` the storage dtype, as in Flax. Statistics that need range (LayerNorm
mean and variance) are computed in float32 whatever the compute dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

DTypeLike = Any  # a jnp dtype or its name, e.g. jnp.bfloat16 or "bfloat16"


# Flax's metadata key for the logical axis names of a variable (what `nnx.with_partitioning` sets).
_SHARDING_KEY = "out_sharding"


Initializer = Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]


def param(value: jax.Array, axes: Sequence[str | None]) -> nnx.Param:
    """Wraps `value` as an `nnx.Param` annotated with one logical axis name per dimension.

    Args:
        value: The initial array.
        axes: One logical axis name (or None) per dimension.
    """
    axes = tuple(axes)
    if len(axes) != value.ndim:
        raise ValueError(f"{len(axes)} logical axes {axes} for a parameter of shape {value.shape}")
    # eager_sharding=False: the names are metadata only. Nothing is placed when the parameter is made, so a model
    # builds with no mesh, on one device, under `nnx.eval_shape` and under `jax.jit` alike, whatever the global
    # `nnx.use_eager_sharding` says; `xlm_flax.sharding` places parameters afterwards.
    return nnx.Param(value, eager_sharding=False, **{_SHARDING_KEY: axes})


def logical_axes(variable: nnx.Variable) -> tuple[str | None, ...] | None:
    """The logical axis names of `variable` (Flax's partitioning metadata), or None when it has none.

    Args:
        variable: A variable, concrete or abstract (from `nnx.eval_shape`).
    """
    names = variable.get_metadata().get(_SHARDING_KEY)
    return tuple(names) if names else None


class Embed(nnx.Module):
    """A lookup table `[num_embeddings, features]`.

    Out-of-range ids (negative or `>= num_embeddings`) give NaN rows instead of a silently clamped row, so that
    bad input shows in the output rather than passing for a real token.

    Args:
        num_embeddings: Rows of the table.
        features: Size of each row.
        axes: Logical axis names of the table.
        init: Initialiser of the table.
        dtype: Compute dtype of the output.
        param_dtype: Storage dtype of the table.
        rngs: Random streams with `params`.
    """

    def __init__(
        self,
        num_embeddings: int,
        features: int,
        *,
        axes: tuple[str | None, str | None],
        init: Initializer,
        dtype: jnp.dtype,
        param_dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        self.num_embeddings = num_embeddings
        self.dtype = dtype
        self.embedding = param(init(rngs.params(), (num_embeddings, features), param_dtype), axes)

    def __call__(self, ids: jax.Array) -> jax.Array:
        """Looks up `ids` (any shape) and returns `ids.shape + (features,)` in the compute dtype.

        Args:
            ids: Integer ids.
        """
        ids = jnp.where(ids < 0, self.num_embeddings, ids)
        table = self.embedding[...]
        return jnp.take(table, ids, axis=0, mode="fill").astype(self.dtype)


class Dense(nnx.Module):
    """An affine map contracting the last `len(in_shape)` input axes with the leading kernel axes.

    The kernel has shape `in_shape + out_shape`; e.g. a query projection `[embed] -> [heads, head_dim]` has a kernel
    `[embed, heads, head_dim]` and the output projection `[heads, head_dim] -> [embed]` a kernel
    `[heads, head_dim, embed]`. Keeping heads as their own axis lets the model axis shard whole heads.

    Args:
        in_shape: Input axes contracted.
        out_shape: Output axes.
        kernel_axes: Logical axis names of the kernel (`in_shape + out_shape`).
        bias_axes: Logical axis names of the bias (`out_shape`).
        init: Initialiser of the kernel; the bias starts at zero.
        dtype: Compute dtype.
        param_dtype: Storage dtype.
        precision: Matmul precision name (`xlm_flax.model.precision`).
        rngs: Random streams with `params`.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        *,
        kernel_axes: tuple[str | None, ...],
        bias_axes: tuple[str | None, ...],
        init: Initializer,
        dtype: jnp.dtype,
        param_dtype: jnp.dtype,
        precision: str,
        rngs: nnx.Rngs,
    ):
        self.n_contract = len(in_shape)
        self.dtype = dtype
        self.precision = precision
        self.kernel = param(init(rngs.params(), in_shape + out_shape, param_dtype), kernel_axes)
        self.bias = param(jnp.zeros(out_shape, param_dtype), bias_axes)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the map to `x[..., *in_shape]`, returning `[..., *out_shape]` in the compute dtype.

        Args:
            x: `[..., *in_shape]`.
        """
        kernel = self.kernel[...].astype(self.dtype)
        y = jnp.tensordot(x.astype(self.dtype), kernel, axes=self.n_contract, precision=self.precision)
        return y + self.bias[...].astype(self.dtype)


class LayerNorm(nnx.Module):
    """LayerNorm over the last axis with float32 statistics and a two-pass variance (as PyTorch computes it).

    Args:
        features: Size of the normalised axis.
        eps: Added to the variance.
        dtype: Compute dtype of the output.
        param_dtype: Storage dtype of scale and bias.
    """

    def __init__(self, features: int, *, eps: float, dtype: jnp.dtype, param_dtype: jnp.dtype):
        self.eps = eps
        self.dtype = dtype
        self.scale = param(jnp.ones((features,), param_dtype), ("embed",))
        self.bias = param(jnp.zeros((features,), param_dtype), ("embed",))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalises `x[..., features]` and returns it in the compute dtype.

        Args:
            x: `[..., features]`.
        """
        x = x.astype(jnp.float32)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        centred = x - mean
        var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
        y = centred * jax.lax.rsqrt(var + self.eps)
        y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return y.astype(self.dtype)


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout; the identity when `key` is None (deterministic) or `rate` is 0.

    Args:
        x: Input.
        rate: Probability of dropping an element.
        key: PRNG key; None disables dropout.
    """
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


__all__ = ["DTypeLike", "Dense", "Embed", "Initializer", "LayerNorm", "dropout", "logical_axes", "param"]
