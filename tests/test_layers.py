"""The layers (`xlm_flax.model.layers`) and self-attention (`xlm_flax.model.attention`) alone, against references
computed here with NumPy (float64 where it matters): Dense contracting several axes, Embed's NaN rows for
out-of-range ids, LayerNorm's float32 statistics, dropout's keep rate and scaling, attention masking. No torch."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from xlm_flax import XLMConfig
from xlm_flax.model.attention import MultiHeadAttention
from xlm_flax.model.layers import Dense, Embed, LayerNorm, dropout
from xlm_flax.model.masking import AttentionMask

F32_TOL = 1e-5  # float32 against a float64 reference, for values of order one


def _dense(in_shape, out_shape, dtype=jnp.float32, seed=0) -> Dense:
    """A Dense layer with a random kernel and a random (not zero) bias, so that both show in the output."""
    axes = ("embed", "heads", "head_dim", "mlp")  # any names: only their count matters here
    layer = Dense(
        in_shape,
        out_shape,
        kernel_axes=axes[: len(in_shape) + len(out_shape)],
        bias_axes=axes[: len(out_shape)],
        init=jax.nn.initializers.normal(1.0),
        dtype=dtype,
        param_dtype=jnp.float32,
        precision="highest",
        rngs=nnx.Rngs(seed),
    )
    layer.bias[...] = jnp.asarray(np.random.default_rng(seed).normal(size=out_shape), jnp.float32)
    return layer


# ---------------------------------------------------------------------------------------------------------- Dense


@pytest.mark.parametrize(
    ("in_shape", "out_shape"),
    [((7,), (5,)), ((6,), (3, 4)), ((3, 4), (6,)), ((2, 3), (4, 5))],
    ids=["one_to_one", "embed_to_heads", "heads_to_embed", "two_to_two"],
)
def test_dense_contracts_the_trailing_axes_like_tensordot(in_shape, out_shape):
    layer = _dense(in_shape, out_shape)
    x = np.random.default_rng(1).normal(size=(2, 3, *in_shape)).astype(np.float32)
    got = np.asarray(layer(jnp.asarray(x)))
    kernel = np.asarray(layer.kernel[...], np.float64)
    bias = np.asarray(layer.bias[...], np.float64)
    expected = np.tensordot(x.astype(np.float64), kernel, axes=len(in_shape)) + bias
    assert got.shape == (2, 3, *out_shape) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=F32_TOL * math.prod(in_shape), rtol=F32_TOL)


def test_dense_computes_in_its_dtype():
    layer = _dense((6,), (3, 4), dtype=jnp.bfloat16)
    x = np.random.default_rng(2).normal(size=(5, 6)).astype(np.float32)
    got = layer(jnp.asarray(x))
    assert got.dtype == jnp.bfloat16 and layer.kernel[...].dtype == jnp.float32  # stored in float32
    expected = np.tensordot(x.astype(np.float64), np.asarray(layer.kernel[...], np.float64), axes=1)
    expected += np.asarray(layer.bias[...], np.float64)
    # bfloat16 keeps 8 significant bits: each of the 6 products and the sum round at about 2^-8 relative.
    np.testing.assert_allclose(np.asarray(got, np.float32), expected, atol=0.1, rtol=2**-6)


# ---------------------------------------------------------------------------------------------------------- Embed


def _embed(num_embeddings=11, features=4, dtype=jnp.float32, param_dtype=jnp.float32) -> Embed:
    return Embed(
        num_embeddings,
        features,
        axes=("vocab", "embed"),
        init=jax.nn.initializers.normal(1.0),
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=nnx.Rngs(0),
    )


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_embed_looks_up_rows_and_gives_nan_for_out_of_range_ids(jit):
    layer = _embed()
    table = np.asarray(layer.embedding[...])
    ids = np.array([[0, 10, -1, 3], [11, 5, 1000, -7]])
    lookup = nnx.jit(lambda m, i: m(i)) if jit else (lambda m, i: m(i))
    got = np.asarray(lookup(layer, jnp.asarray(ids)))
    assert got.shape == (2, 4, 4) and got.dtype == np.float32
    valid = (ids >= 0) & (ids < 11)
    np.testing.assert_array_equal(got[valid], table[ids[valid]])  # the rows themselves, bit for bit
    assert np.isnan(got[~valid]).all()  # every feature of a bad id is NaN: nothing is clamped to a real row
    assert not np.isnan(got[valid]).any()


def test_embed_returns_the_compute_dtype_and_keeps_nan_rows():
    layer = _embed(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    got = np.asarray(layer(jnp.array([2, 11])).astype(jnp.float32))
    assert layer(jnp.array([2])).dtype == jnp.bfloat16
    np.testing.assert_array_equal(got[0], np.asarray(layer.embedding[...][2], np.float32))
    assert np.isnan(got[1]).all()


# ------------------------------------------------------------------------------------------------------ LayerNorm


def _layer_norm(features, dtype=jnp.float32, eps=1e-12, seed=0) -> LayerNorm:
    layer = LayerNorm(features, eps=eps, dtype=dtype, param_dtype=jnp.float32)
    rng = np.random.default_rng(seed)
    layer.scale[...] = jnp.asarray(1 + 0.5 * rng.normal(size=features), jnp.float32)
    layer.bias[...] = jnp.asarray(rng.normal(size=features), jnp.float32)
    return layer


def _reference_layer_norm(x: np.ndarray, scale, bias, eps: float, mean=None, var=None) -> np.ndarray:
    """LayerNorm in float64 over the last axis; a given `mean` or `var` replaces the exact one (to model an
    implementation that rounds it)."""
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True) if mean is None else np.asarray(mean, np.float64)
    var = x.var(-1, keepdims=True) if var is None else np.asarray(var, np.float64)
    return (x - mean) / np.sqrt(var + eps) * np.asarray(scale, np.float64) + np.asarray(bias, np.float64)


@pytest.mark.parametrize("eps", [1e-12, 1e-5, 0.5])
def test_layer_norm_matches_a_float64_reference(eps):
    layer = _layer_norm(30, eps=eps)
    x = np.random.default_rng(3).normal(0.5, 2.0, size=(4, 7, 30)).astype(np.float32)
    got = np.asarray(layer(jnp.asarray(x)))
    expected = _reference_layer_norm(x, layer.scale[...], layer.bias[...], eps)
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=F32_TOL, rtol=0)


def test_layer_norm_variance_is_two_pass_on_offset_inputs():
    # Rows far from zero (mean 300, spread 1): E[x^2] - E[x]^2 in float32 loses the variance to cancellation.
    layer = _layer_norm(64)
    x = (300 + np.random.default_rng(4).normal(size=(8, 64))).astype(np.float32)
    got = np.asarray(layer(jnp.asarray(x)))
    expected = _reference_layer_norm(x, layer.scale[...], layer.bias[...], 1e-12)
    tol = 1e-3  # float32 rounding of values near 300 is 3e-5; the mean carries a few of those
    np.testing.assert_allclose(got, expected, atol=tol, rtol=0)
    # This data tells the two apart: with a one-pass float32 variance the output is off by far more than `tol`.
    one_pass_var = np.mean(x * x, -1, keepdims=True) - np.mean(x, -1, keepdims=True) ** 2  # float32 throughout
    one_pass = _reference_layer_norm(x, layer.scale[...], layer.bias[...], 1e-12, var=one_pass_var)
    assert np.max(np.abs(one_pass - expected)) > 10 * tol


def test_layer_norm_in_bfloat16_keeps_float32_statistics():
    layer = _layer_norm(64, dtype=jnp.bfloat16)
    # bfloat16 inputs near 64 (spacing 0.5 there): a bfloat16 mean would be off by up to 0.25, a quarter of the
    # spread.
    x = (64 + np.random.default_rng(5).normal(size=(8, 64))).astype(ml_dtypes.bfloat16)
    got = layer(jnp.asarray(x))
    assert got.dtype == jnp.bfloat16
    got = np.asarray(got, np.float32)
    scale, bias = layer.scale[...], layer.bias[...]
    expected = _reference_layer_norm(x, scale, bias, 1e-12)
    # Only the output is rounded to bfloat16: within one bfloat16 rounding (2^-8 relative) of the exact result.
    np.testing.assert_allclose(got, expected, rtol=2**-8, atol=1e-4)
    x64 = x.astype(np.float64)
    rounded_mean = x64.mean(-1, keepdims=True).astype(ml_dtypes.bfloat16).astype(np.float64)
    bf16_stats = _reference_layer_norm(x, scale, bias, 1e-12, mean=rounded_mean)
    assert np.max(np.abs(bf16_stats - expected)) > 10 * np.max(np.abs(got - expected))  # a bfloat16 mean shows


# -------------------------------------------------------------------------------------------------------- dropout


def test_dropout_is_the_identity_when_deterministic():
    x = jnp.asarray(np.random.default_rng(6).normal(size=(3, 5)), jnp.float32)
    assert dropout(x, 0.5, None) is x  # no key: deterministic, nothing computed
    assert dropout(x, 0.0, jax.random.key(0)) is x  # rate 0: nothing dropped, nothing rescaled


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_dropout_keep_rate_and_scaling(rate):
    n = 200_000
    x = np.random.default_rng(7).uniform(0.5, 1.5, size=(n,)).astype(np.float32)
    got = np.asarray(dropout(jnp.asarray(x), rate, jax.random.key(1)))
    kept = got != 0
    p = 1 - rate
    assert abs(kept.sum() - n * p) <= 5 * math.sqrt(n * p * rate)  # binomial: 5 standard deviations
    np.testing.assert_allclose(got[kept], x[kept] / np.float32(p), rtol=1e-6)  # inverted: scaled by 1 / keep
    # The scaling keeps the expectation: each output has mean x and variance x^2 rate / keep, so the mean of the n
    # outputs moves from x's mean by sampling noise only.
    assert abs(got.mean() - x.mean()) <= 5 * math.sqrt(np.mean(x.astype(np.float64) ** 2) * rate / p / n)


def test_dropout_masks_depend_on_the_key_only():
    x = jnp.ones((64, 64), jnp.float32)
    a, b, c = (np.asarray(dropout(x, 0.5, key)) for key in (jax.random.key(2), jax.random.key(2), jax.random.key(3)))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


# ------------------------------------------------------------------------------------------------------ attention

CONFIG = XLMConfig(vocab_size=41, emb_dim=12, n_layers=1, n_heads=3, attention_dropout=0.1)


@pytest.fixture(scope="module")
def attention():
    layer = MultiHeadAttention(
        CONFIG, dtype=jnp.float32, param_dtype=jnp.float32, precision="highest", rngs=nnx.Rngs(0)
    )
    rng = np.random.default_rng(8)
    for lin in (layer.q_lin, layer.k_lin, layer.v_lin, layer.out_lin):  # random biases: zeros would hide them
        lin.bias[...] = jnp.asarray(rng.normal(size=lin.bias.shape), jnp.float32)
    return layer


def _numpy_attention(layer: MultiHeadAttention, x: np.ndarray, attend: np.ndarray):
    """XLM's attention in float64: q scaled by 1/sqrt(head_dim), masked scores set to the float32 minimum (as
    transformers does), softmax, weighted values, output projection."""

    def lin(dense, v, n_contract):
        kernel, bias = (np.asarray(a, np.float64) for a in (dense.kernel[...], dense.bias[...]))
        return np.tensordot(v, kernel, axes=n_contract) + bias

    x = x.astype(np.float64)
    q = lin(layer.q_lin, x, 1) / math.sqrt(CONFIG.head_dim)  # [B, T, N, H]
    k, v = lin(layer.k_lin, x, 1), lin(layer.v_lin, x, 1)
    scores = np.einsum("btnh,bsnh->bnts", q, k)
    scores = np.where(attend, scores, np.finfo(np.float32).min)
    scores = scores - scores.max(-1, keepdims=True)
    weights = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    context = np.einsum("bnts,bsnh->btnh", weights, v)
    return lin(layer.out_lin, context, 2), weights


def _inputs(batch=3, length=6, seed=9):
    x = np.random.default_rng(seed).normal(size=(batch, length, CONFIG.emb_dim)).astype(np.float32)
    lengths = np.array([6, 4, 0])  # full, padded, and nothing at all to attend to
    padding = (np.arange(length)[None, :] < lengths[:, None])[:, None, None, :]  # [B, 1, 1, S]
    return x, padding


def test_masked_positions_get_zero_weight(attention):
    x, attend = _inputs()
    out, weights = attention(jnp.asarray(x), AttentionMask(allowed=jnp.asarray(attend)), None)
    out, weights = np.asarray(out), np.asarray(weights)
    expected_out, expected_weights = _numpy_attention(attention, x, attend)
    assert weights.shape == (3, CONFIG.n_heads, 6, 6) and out.shape == x.shape
    assert (weights[1, :, :, 4:] == 0).all()  # padding of row 1: exactly zero, not merely small
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=F32_TOL)
    np.testing.assert_allclose(weights, expected_weights, atol=F32_TOL, rtol=0)
    np.testing.assert_allclose(out, expected_out, atol=F32_TOL, rtol=0)


def test_fully_masked_row_is_uniform_as_the_reference(attention):
    x, attend = _inputs()
    _, weights = attention(jnp.asarray(x), AttentionMask(allowed=jnp.asarray(attend)), None)
    # Row 2 attends to nothing: every score is the same large negative number, so the softmax is uniform (the
    # reference's finfo.min fill gives the same), and the output is the mean of the values, not NaN.
    np.testing.assert_allclose(np.asarray(weights)[2], 1 / 6, atol=F32_TOL)
    expected_out, _ = _numpy_attention(attention, x, attend)
    for output_weights in (True, False):  # the explicit path and jax.nn.dot_product_attention
        out, _ = attention(
            jnp.asarray(x), AttentionMask(allowed=jnp.asarray(attend)), None, output_weights=output_weights
        )
        assert np.isfinite(np.asarray(out)).all()
        np.testing.assert_allclose(np.asarray(out), expected_out, atol=F32_TOL, rtol=0, err_msg=str(output_weights))


def test_causal_mask_hides_the_future(attention):
    x, _ = _inputs(batch=2)
    causal = np.tril(np.ones((6, 6), bool))[None, None]  # [1, 1, T, S]
    attend = np.broadcast_to(causal, (2, 1, 6, 6))
    out, weights = attention(jnp.asarray(x), AttentionMask(allowed=jnp.asarray(attend)), None)
    weights = np.asarray(weights)
    assert (weights[..., np.triu_indices(6, 1)[0], np.triu_indices(6, 1)[1]] == 0).all()
    np.testing.assert_allclose(weights[:, :, 0, 0], 1.0, atol=F32_TOL)  # the first token sees only itself
    expected_out, expected_weights = _numpy_attention(attention, x, attend)
    np.testing.assert_allclose(weights, expected_weights, atol=F32_TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(out), expected_out, atol=F32_TOL, rtol=0)
