"""Matmul precision: the one `precision=` option of the models, and how every dot product receives it.

On CPU a float32 dot product is computed in float32. On accelerators JAX's default is not: recent NVIDIA GPUs use
TensorFloat-32 and TPUs a single bfloat16 pass for float32 operands unless the dot says otherwise (JAX's "Matmul
precision" guide), which is far from transformers' PyTorch float32 (PyTorch turns TF32 off for matmuls by default).
So the models take one `precision` and hand it to every `dot_general` they emit: the `Dense` layers, the attention
einsums, the LM head's (tied) projection, the task heads' projections, and `jax.nn.dot_product_attention`, which
takes no precision argument and is therefore traced under `jax.default_matmul_precision`.

A precision is given by name, as JAX names them (`jax.lax.Precision` and `jax.lax.DotAlgorithmPreset`):

* `"highest"` (the default): full float32 on every backend: 6 bfloat16 passes on TPU, no TF32 on GPU. The choice
  that makes float32 parity with PyTorch hold on accelerators. With `dtype=bfloat16` the operands are already
  bfloat16, so it costs nothing there; it costs speed only for float32 compute on accelerators.
* `"default"`: the backend's fastest (TF32 on GPU, one bfloat16 pass on TPU; float32 on CPU).
* `"high"`, `"bfloat16"`, `"tensorfloat32"`, `"float32"`: JAX's other legacy names.
* a `DotAlgorithmPreset` name such as `"F32_F32_F32"`, `"TF32_TF32_F32"`, `"BF16_BF16_F32"`, `"BF16_BF16_F32_X3"`:
  an exact algorithm (the backend must support it for the operand dtypes, or compiling fails).

`jax.lax.Precision` and `jax.lax.DotAlgorithmPreset` values are accepted and stored by name, so a model's
precision is a plain, hashable string.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import jax

from xlm_flax.errors import ConfigError

# The precision every model uses unless told otherwise: float32 that means float32 on every backend.
DEFAULT_PRECISION = "highest"

# JAX's legacy precision names (`jax.lax.Precision` accepts these strings).
_LEGACY = ("default", "high", "highest", "bfloat16", "tensorfloat32", "float32")


def _presets() -> tuple[str, ...]:
    return tuple(p.name for p in jax.lax.DotAlgorithmPreset if p.name != "DEFAULT")


def precision_names() -> tuple[str, ...]:
    """Every name `precision=` accepts: JAX's legacy names, then the `DotAlgorithmPreset` names."""
    return _LEGACY + _presets()


def canonical_precision(precision: Any) -> str:
    """The name of `precision`, checked.

    Args:
        precision: None (the default, `DEFAULT_PRECISION`), a name from `precision_names()` (legacy names in any
            case), a `jax.lax.Precision` or a `jax.lax.DotAlgorithmPreset`.

    Raises:
        ConfigError: naming the accepted values.
    """
    if precision is None:
        return DEFAULT_PRECISION
    if isinstance(precision, jax.lax.Precision):
        return {"DEFAULT": "default", "HIGH": "high", "HIGHEST": "highest"}[precision.name]
    if isinstance(precision, jax.lax.DotAlgorithmPreset):
        if precision.name == "DEFAULT":
            return "default"
        return precision.name
    if isinstance(precision, str):
        if precision.lower() in _LEGACY:
            return precision.lower()
        if precision.upper() in _presets():
            return precision.upper()
    raise ConfigError(
        f"precision={precision!r}: use one of {', '.join(repr(n) for n in precision_names())} "
        '(a jax.lax.Precision or DotAlgorithmPreset also works); "highest" gives float32 parity on GPU and TPU'
    )


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """Traces the enclosed code with `precision` as JAX's default for dots that are given none.

    For library functions that emit dots without a `precision` argument (`jax.nn.dot_product_attention`). JAX reads
    the default when a dot is traced and keys its jit caches on it, so this is exact under `jax.jit`.
    """
    with jax.default_matmul_precision(precision):
        yield


__all__ = ["DEFAULT_PRECISION", "canonical_precision", "matmul_precision", "precision_names"]
