"""The attention kernel choice (cuDNN on GPU, Pallas splash on TPU, XLA elsewhere) and the splash kernel's numbers.

No GPU or TPU here: the choice is a pure function of a `Backend` description, so every rule is exercised with
described backends, and the cuDNN dispatch is checked by recording what reaches `jax.nn.dot_product_attention`. The
splash kernel itself runs in Pallas interpret mode on CPU and is compared with the XLA path.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from xlm_flax import XLMModel
from xlm_flax.config import XLMConfig
from xlm_flax.errors import ConfigError, InputError
from xlm_flax.model import kernels
from xlm_flax.model.attention import attention_context
from xlm_flax.model.kernels import Backend, choose_kernel, fused_attention
from xlm_flax.model.masking import padding_mask, segment_mask

CPU = Backend("cpu")
A100 = Backend("gpu", cuda=True, compute_capability=8.0)
H100 = Backend("gpu", cuda=True, compute_capability=9.0)
ROCM = Backend("gpu", cuda=False)
TPU = Backend("tpu")


def _padding(batch: int, length: int):
    return padding_mask(jnp.ones((batch, length), bool), causal=False)


def _causal(length: int):
    return padding_mask(jnp.ones((1, length), bool), causal=True)


def _segments(batch: int, length: int):
    return segment_mask(jnp.ones((batch, length), jnp.int32), causal=False)


def _choose(backend, *, dtype=jnp.bfloat16, shape=(2, 128, 16, 128), kv_len=None, mask=None, requested=None):
    mask = _padding(shape[0], kv_len or shape[1]) if mask is None else mask
    return choose_kernel(requested, q_shape=shape, kv_len=kv_len or shape[1], dtype=dtype, mask=mask, backend=backend)


def test_cpu_uses_xla():
    assert _choose(CPU) == ("xla", "no fused attention kernel on backend 'cpu'")


@pytest.mark.parametrize(
    "backend, kwargs, expected, reason",
    [
        (A100, {}, "cudnn", None),
        (A100, dict(dtype=jnp.float16), "cudnn", None),
        (A100, dict(dtype=jnp.float32), "xla", "float32"),
        (A100, dict(shape=(2, 128, 16, 80)), "cudnn", None),  # xlm-mlm-100-1280: 1280 / 16
        (A100, dict(shape=(2, 128, 16, 20)), "xla", "multiple of 8"),
        (A100, dict(shape=(2, 128, 4, 192)), "xla", "at most 128"),
        (H100, dict(shape=(2, 128, 4, 192)), "cudnn", None),
        (A100, dict(shape=(2, 127, 16, 128)), "xla", "even lengths"),
        (A100, dict(shape=(2, 127, 16, 128), mask=_causal(127)), "cudnn", None),  # no bias: odd is fine
        (A100, dict(mask=_segments(2, 128)), "cudnn", None),
        (ROCM, {}, "xla", "NVIDIA"),
        (TPU, {}, "splash", None),
        (TPU, dict(mask=_causal(128)), "splash", None),
        (TPU, dict(mask=_segments(2, 128)), "splash", None),
        (TPU, dict(dtype=jnp.float32), "xla", "float32"),
        (TPU, dict(shape=(2, 200, 16, 128)), "xla", "multiple of 128"),
        # A KV-cache step: one query against a cache, not self-attention.
        (TPU, dict(shape=(2, 1, 16, 128), kv_len=256), "xla", "self-attention"),
    ],
)
def test_automatic_choice(backend, kwargs, expected, reason):
    chosen, why = _choose(backend, **kwargs)
    assert chosen == expected, why
    if reason is not None:
        assert reason in why


def test_explicit_choice():
    assert _choose(CPU, requested="xla") == ("xla", "requested")
    assert _choose(TPU, requested="splash")[0] == "splash"
    assert _choose(CPU, requested="splash")[0] == "splash"  # interpret mode off TPU
    with pytest.raises(InputError, match=r"'cudnn' cannot run: cuDNN fused attention needs an NVIDIA GPU"):
        _choose(CPU, requested="cudnn")
    with pytest.raises(InputError, match="float32"):
        _choose(A100, requested="cudnn", dtype=jnp.float32)
    with pytest.raises(ConfigError, match="'flash'"):
        _choose(CPU, requested="flash")
    with pytest.raises(ConfigError, match="attention_implementation='flash'"):
        XLMModel(
            XLMConfig(vocab_size=11, emb_dim=8, n_layers=1, n_heads=2),
            rngs=nnx.Rngs(0),
            attention_implementation="flash",
        )


@pytest.fixture
def recorded(monkeypatch):
    """Replaces `jax.nn.dot_product_attention` by a recorder that returns zeros of the query's shape."""
    calls = []

    def record(q, k, v, mask=None, **kwargs):
        calls.append(dict(kwargs, mask=None if mask is None else mask.shape))
        return jnp.zeros_like(q)

    monkeypatch.setattr(jax.nn, "dot_product_attention", record)
    return calls


def _qkv(batch=2, length=128, heads=2, head_dim=64, dtype=jnp.bfloat16):
    return [jnp.ones((batch, length, heads, head_dim), dtype)] * 3


def test_cudnn_dispatch(recorded):
    q, k, v = _qkv()
    fused_attention(q, k, v, _padding(2, 128), precision="highest", implementation=None, backend=A100)
    fused_attention(q, k, v, _causal(128), precision="highest", implementation=None, backend=A100)
    fused_attention(q, k, v, _segments(2, 128), precision="highest", implementation=None, backend=A100)
    assert [c["implementation"] for c in recorded] == ["cudnn"] * 3
    assert recorded[0]["mask"] == (2, 1, 128, 128)  # cuDNN's bias must span [T, S]
    assert recorded[1]["is_causal"] is True and recorded[1]["mask"] is None
    assert recorded[2]["mask"] == (2, 1, 128, 128)
    assert all(c["scale"] == 1.0 for c in recorded)  # q comes scaled, in the reference's order


def test_fallback_is_logged_once(recorded, caplog, monkeypatch):
    monkeypatch.setattr(kernels, "_logged", set())
    q, k, v = _qkv(dtype=jnp.float32)
    with caplog.at_level(logging.INFO, logger="xlm_flax"):
        for _ in range(2):
            fused_attention(q, k, v, _padding(2, 128), precision="highest", implementation=None, backend=A100)
    assert [c["implementation"] for c in recorded] == ["xla", "xla"]
    messages = [r.getMessage() for r in caplog.records if "attention" in r.getMessage()]
    assert len(messages) == 1 and "float32" in messages[0]


def _reference(q, k, v, allowed):
    """softmax(q k^T) v in float64 numpy, masked scores at float32's minimum (the reference's fill)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    scores = np.einsum("btnh,bsnh->bnts", q, k)
    scores = np.where(np.asarray(allowed), scores, np.finfo(np.float32).min)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", weights, v)


@pytest.fixture(scope="module")
def qkv():
    rng = np.random.default_rng(0)
    return [jnp.asarray(rng.normal(size=(2, 128, 1, 32)), jnp.float32) for _ in range(3)]


def _masks():
    attend = np.ones((2, 128), bool)
    attend[0, 90:] = False
    attend[1, :] = False  # a row without a token: uniform in the reference
    segments = np.zeros((2, 128), np.int32)
    segments[0, :40], segments[0, 40:100] = 1, 2  # two sentences and padding
    segments[1, :128] = 1
    return {
        "padding": padding_mask(jnp.asarray(attend), causal=False),
        "causal": padding_mask(jnp.asarray(attend), causal=True),
        "segments": segment_mask(jnp.asarray(segments), causal=False),
        "causal_segments": segment_mask(jnp.asarray(segments), causal=True),
    }


# Plain segments run in `test_splash_through_attention_context_in_bfloat16` (each case compiles for seconds).
@pytest.mark.parametrize("form", ["padding", "causal", "causal_segments"])
def test_splash_kernel_in_interpret_mode_matches_reference(form, qkv):
    """The Pallas splash kernel (interpret mode on CPU, float32) against the float64 reference: every mask form,
    padding queries, and a row with no token at all (uniform, never NaN)."""
    q, k, v = qkv
    mask = _masks()[form]
    out = jax.jit(lambda q, k, v, mask: kernels._splash_attention(q, k, v, mask, interpret=True))(q, k, v, mask)
    assert not np.isnan(np.asarray(out)).any()
    np.testing.assert_allclose(np.asarray(out), _reference(q, k, v, mask.allowed), atol=2e-5)


def test_splash_through_attention_context_in_bfloat16(qkv):
    """The explicit `implementation="splash"` path of `attention_context` (bfloat16) against the XLA path."""
    q, k, v = (x.astype(jnp.bfloat16) for x in qkv)
    mask = _masks()["segments"]
    common = dict(rate=0.0, key=None, output_weights=False, dtype=jnp.bfloat16)
    splash, _ = jax.jit(lambda q, k, v: attention_context(q, k, v, mask, implementation="splash", **common))(q, k, v)
    xla, _ = attention_context(q, k, v, mask, implementation="xla", **common)
    np.testing.assert_allclose(np.asarray(splash, np.float32), np.asarray(xla, np.float32), atol=2e-2)
