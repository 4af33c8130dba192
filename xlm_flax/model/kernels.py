"""Fused attention kernels and the choice between them: cuDNN on GPU, Pallas splash attention on TPU, XLA elsewhere.

`attention_context` (`xlm_flax.model.attention`) calls `fused_attention` whenever no attention weights are returned
and no attention dropout is on. `choose_kernel` decides, from the backend, the compute dtype, the shapes and the mask,
which kernel runs; it is a pure function of those facts, so the rules are tested on any machine:

* `"cudnn"` (NVIDIA GPU): `jax.nn.dot_product_attention(implementation="cudnn")`, as this JAX's cuDNN wrapper
  (`jax._src.cudnn.fused_attention_stablehlo`) allows it: bfloat16 or float16 operands, head dimension a multiple of
  8 and at most 128 (256 from Hopper, compute capability 9.0, on), and even lengths when the mask is passed as a bias
  (every mask but the plain causal one, which goes as `is_causal=True`).
* `"splash"` (TPU): the Pallas splash-attention kernel (`jax.experimental.pallas.ops.tpu.splash_attention`), with
  segment ids for packed rows and for padding: bfloat16 operands, self-attention whose length is a multiple of its
  128-long blocks, and one of the encoder's three mask forms (padding, causal, packed segments).
* `"xla"`: `jax.nn.dot_product_attention`'s XLA einsums, everywhere else, and always for float32 compute: the fused
  kernels do not take a matmul precision, so float32 stays on XLA, where `precision` reaches every dot.

An automatic choice (`implementation=None`) that cannot use the backend's fused kernel logs the reason once (logger
`xlm_flax`, level INFO) and runs XLA. An explicit `implementation=` that cannot run raises `InputError` with the
reason. `implementation="splash"` off TPU runs the kernel in Pallas interpret mode (slow; it exists for testing).
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import jax
import jax.numpy as jnp

from xlm_flax.errors import ConfigError, InputError
from xlm_flax.model.masking import AttentionMask
from xlm_flax.model.precision import matmul_precision

logger = logging.getLogger("xlm_flax")

# The values of `attention_implementation=` besides None (automatic).
IMPLEMENTATIONS = ("xla", "cudnn", "splash")

# The splash kernel's block length (its default `BlockSizes`): query and key lengths must be multiples of it.
SPLASH_BLOCK = 128

_FUSED_DTYPES = {"cudnn": (jnp.bfloat16, jnp.float16), "splash": (jnp.bfloat16,)}
_logged: set[str] = set()


def check_implementation(implementation: str | None) -> str | None:
    """Returns `implementation` when it is None or one of `IMPLEMENTATIONS`.

    Raises:
        ConfigError: naming the valid values.
    """
    if implementation is not None and implementation not in IMPLEMENTATIONS:
        raise ConfigError(
            f"attention_implementation={implementation!r}: use None (chosen by backend) or one of "
            f"{', '.join(repr(v) for v in IMPLEMENTATIONS)}"
        )
    return implementation


@dataclasses.dataclass(frozen=True)
class Backend:
    """What the kernel choice needs to know of the device.

    Attributes:
        platform: `"cpu"`, `"gpu"` or `"tpu"` (`jax.default_backend()`).
        cuda: The GPU is an NVIDIA one (cuDNN is there); false on ROCm and off GPU.
        compute_capability: The NVIDIA compute capability (e.g. 9.0), or None.
    """

    platform: str
    cuda: bool = False
    compute_capability: float | None = None


def current_backend() -> Backend:
    """The `Backend` of JAX's default device."""
    platform = jax.default_backend()
    if platform != "gpu":
        return Backend(platform)
    device = jax.devices()[0]
    capability = getattr(device, "compute_capability", None)
    version = getattr(device.client, "platform_version", "") or ""
    return Backend(
        platform, cuda="rocm" not in version.lower(), compute_capability=float(capability) if capability else None
    )


def _mask_form(mask: AttentionMask, batch: int, queries: int, keys: int) -> str | None:
    """Which of the encoder's mask forms `mask` is: `"padding"`, `"causal"`, `"segments"`, or None (any other)."""
    shape = tuple(mask.allowed.shape)
    if mask.segment_ids is not None:
        return "segments" if shape == (batch, 1, queries, keys) and queries == keys else None
    if mask.causal:
        return "causal" if shape == (1, 1, queries, keys) and queries == keys else None
    return "padding" if shape == (batch, 1, 1, keys) else None


def _cudnn_problem(q_shape, kv_len, dtype, form, backend: Backend) -> str | None:
    _, queries, _, head_dim = q_shape
    if backend.platform != "gpu" or not backend.cuda:
        return f"cuDNN fused attention needs an NVIDIA GPU (backend {backend.platform!r})"
    if jnp.dtype(dtype) not in [jnp.dtype(d) for d in _FUSED_DTYPES["cudnn"]]:
        return (
            f"compute dtype {jnp.dtype(dtype).name}: cuDNN fused attention takes bfloat16 or float16 (float32 stays "
            "on XLA, where the matmul precision applies)"
        )
    limit = 256 if (backend.compute_capability or 0.0) >= 9.0 else 128
    if head_dim % 8 or head_dim > limit:
        return f"head_dim {head_dim}: cuDNN fused attention needs a multiple of 8, at most {limit} on this GPU"
    if form != "causal" and (queries % 2 or kv_len % 2):
        return f"lengths {queries}x{kv_len}: cuDNN fused attention with a mask needs even lengths"
    return None


def _splash_problem(q_shape, kv_len, dtype, form, backend: Backend) -> str | None:
    _, queries, _, _ = q_shape
    if jnp.dtype(dtype) != jnp.dtype(jnp.bfloat16):
        return (
            f"compute dtype {jnp.dtype(dtype).name}: splash attention is used for bfloat16 only (float32 stays on "
            "XLA, where the matmul precision applies)"
        )
    if form is None:
        return "the mask is not one of padding, causal or packed segments, which splash attention takes"
    if queries != kv_len or queries % SPLASH_BLOCK:
        return f"lengths {queries}x{kv_len}: splash attention needs self-attention of a multiple of {SPLASH_BLOCK}"
    return None


def choose_kernel(
    requested: str | None,
    *,
    q_shape: tuple[int, int, int, int],
    kv_len: int,
    dtype: jnp.dtype,
    mask: AttentionMask,
    backend: Backend,
) -> tuple[str, str]:
    """The attention kernel to run, and why.

    Args:
        requested: None (choose by backend) or one of `IMPLEMENTATIONS`.
        q_shape: `[batch, queries, heads, head_dim]`.
        kv_len: Number of keys.
        dtype: Compute dtype of q, k, v.
        mask: The attention mask.
        backend: The device (`current_backend()`).

    Returns:
        `(implementation, reason)`: one of `IMPLEMENTATIONS`, and a sentence saying why it was chosen.

    Raises:
        InputError: when `requested` names a fused kernel that cannot run here.
    """
    check_implementation(requested)
    if requested == "xla":
        return "xla", "requested"
    form = _mask_form(mask, q_shape[0], q_shape[1], kv_len)
    if requested is None:
        candidate = {"gpu": "cudnn", "tpu": "splash"}.get(backend.platform)
        if candidate is None:
            return "xla", f"no fused attention kernel on backend {backend.platform!r}"
    else:
        candidate = requested
    if candidate == "cudnn":
        problem = _cudnn_problem(q_shape, kv_len, dtype, form, backend)
    else:
        problem = _splash_problem(q_shape, kv_len, dtype, form, backend)
    if problem is None:
        return candidate, "requested" if requested else f"backend {backend.platform!r} and the shapes allow it"
    if requested is not None:
        raise InputError(f"attention_implementation={requested!r} cannot run: {problem}; leave it None to fall back")
    return "xla", problem


def fused_attention(
    q: jax.Array,  # [B, T, N, H], already scaled
    k: jax.Array,  # [B, S, N, H]
    v: jax.Array,  # [B, S, N, H]
    mask: AttentionMask,
    *,
    precision: str,
    implementation: str | None,
    backend: Backend | None = None,
) -> jax.Array:
    """`softmax(q k^T) v` under `mask` with the kernel `choose_kernel` picks; returns `[B, T, N, H]`.

    Args:
        q: Queries, already scaled.
        k: Keys.
        v: Values.
        mask: What each query may attend to.
        precision: Matmul precision name of the XLA path's dots.
        implementation: None or one of `IMPLEMENTATIONS`.
        backend: The device; None reads JAX's default.
    """
    backend = current_backend() if backend is None else backend
    chosen, reason = choose_kernel(
        implementation, q_shape=q.shape, kv_len=k.shape[1], dtype=q.dtype, mask=mask, backend=backend
    )
    if implementation is None and chosen == "xla" and backend.platform in ("gpu", "tpu") and reason not in _logged:
        _logged.add(reason)
        logger.info("attention: XLA instead of the fused kernel: %s", reason)
    if chosen == "cudnn":
        return _cudnn_attention(q, k, v, mask)
    if chosen == "splash":
        return _splash_attention(q, k, v, mask, interpret=backend.platform != "tpu")
    # scale=1 because q is already scaled, in the reference's order. The XLA implementation's einsums take no
    # precision argument, so they are traced under it.
    with matmul_precision(precision):
        return jax.nn.dot_product_attention(q, k, v, mask=mask.allowed, scale=1.0, implementation="xla")


def _cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask) -> jax.Array:
    batch, queries = q.shape[:2]
    if _mask_form(mask, batch, queries, k.shape[1]) == "causal":
        return jax.nn.dot_product_attention(q, k, v, scale=1.0, is_causal=True, implementation="cudnn")
    # cuDNN takes a mask as an additive bias of its full [.., .., T, S] shape, filled with a large finite negative
    # number, so a row with nothing to attend to becomes uniform as in the reference.
    allowed = jnp.broadcast_to(mask.allowed, (mask.allowed.shape[0], 1, queries, k.shape[1]))
    return jax.nn.dot_product_attention(q, k, v, mask=allowed, scale=1.0, implementation="cudnn")


@functools.lru_cache(maxsize=32)
def _splash_kernel(length: int, heads: int, causal: bool, interpret: bool):
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    shape = (length, length)
    head_mask = splash.CausalMask(shape) if causal else splash.FullMask(shape)
    # The kernel holds its block-mask tables as arrays; made as constants, not as tracers of the jit that first
    # asks for it, so that the cached kernel serves every later trace.
    with jax.ensure_compile_time_eval():
        return splash.make_splash_mha_single_device(
            splash.MultiHeadMask([head_mask] * heads),
            block_sizes=splash.BlockSizes.get_default(),
            interpret=interpret,
        )


def _splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, *, interpret: bool):
    from jax.experimental.pallas.ops.tpu.splash_attention import SegmentIds

    batch, length, heads, _ = q.shape
    form = _mask_form(mask, batch, length, k.shape[1])
    empty = None
    if form == "segments":
        ids = mask.segment_ids.astype(jnp.int32)
        segments = SegmentIds(q=ids, kv=ids)
    elif form == "padding":
        # Every query (padding included, as in the reference) attends to the tokens: queries in segment 1, tokens
        # in segment 1, padding keys in segment 0.
        tokens = mask.allowed[:, 0, 0, :]
        segments = SegmentIds(q=jnp.ones((batch, length), jnp.int32), kv=tokens.astype(jnp.int32))
        empty = ~jnp.any(tokens, axis=-1)  # [B]: rows without a token, where the reference is uniform
    else:
        segments = None
    kernel = _splash_kernel(length, heads, mask.causal, interpret)
    to_heads_first = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731  [B, T, N, H] -> [B, N, T, H]
    qh, kh, vh = to_heads_first(q), to_heads_first(k), to_heads_first(v)
    if segments is None:
        out = jax.vmap(kernel)(qh, kh, vh)
    else:
        out = jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=s))(qh, kh, vh, segments)
    out = to_heads_first(out).astype(q.dtype)
    if empty is not None:
        uniform = jnp.mean(v.astype(jnp.float32), axis=1, keepdims=True).astype(q.dtype)  # [B, 1, N, H]
        out = jnp.where(empty[:, None, None, None], uniform, out)
    return out


__all__ = ["IMPLEMENTATIONS", "Backend", "check_implementation", "choose_kernel", "current_backend", "fused_attention"]
