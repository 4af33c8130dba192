"""The fused attention path (`jax.nn.dot_product_attention`, taken when attention weights are not returned) against
transformers' PyTorch XLM and against the explicit path that returns the weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import TORCH_REASON, build_reference_checkpoint, random_inputs

from xlm_flax import XLMModel, XLMWithLMHeadModel

# Every test compares with transformers' PyTorch XLM.
torch = pytest.importorskip("torch", reason=TORCH_REASON)

FP32_TOL = 1e-5


@pytest.fixture(scope="module", params=["padding", "causal"])
def pair(request, tmp_path_factory):
    """(PyTorch LM model, our LM model, checkpoint directory) for a bidirectional and a causal model."""
    overrides = dict(n_langs=3, causal=request.param == "causal")
    directory, torch_model = build_reference_checkpoint(tmp_path_factory.mktemp(request.param), **overrides)
    return torch_model, XLMWithLMHeadModel.from_pretrained(directory), directory


def _inputs(config):
    ids, mask, langs = random_inputs(config, batch=4, length=11)
    mask[3] = 0  # a row with nothing to attend to: the reference makes its attention uniform
    return ids, mask, langs


def test_fused_path_matches_pytorch(pair):
    torch_model, model, _ = pair
    ids, mask, langs = _inputs(torch_model.config)
    with torch.no_grad():
        expected = torch_model(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), langs=torch.from_numpy(langs)
        ).logits.numpy()
    graphdef, state = nnx.split(model)
    jitted = jax.jit(lambda state, *a: nnx.merge(graphdef, state)(*a).logits)
    for fn in (lambda *a: model(*a).logits, lambda *a: jitted(state, *a)):
        got = np.asarray(fn(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(langs)))
        assert np.max(np.abs(got - expected)) <= FP32_TOL


def test_fused_path_equals_explicit_path(pair):
    _, model, _ = pair
    ids, mask, langs = (jnp.asarray(a) for a in _inputs(model.config))
    fused = model.transformer(ids, mask, langs, output_hidden_states=True)
    explicit = model.transformer(ids, mask, langs, output_hidden_states=True, output_attentions=True)
    assert fused.attentions is None and len(explicit.attentions) == model.config.n_layers
    for a, b in zip(fused.hidden_states, explicit.hidden_states):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)


def test_fused_path_with_bfloat16_compute(pair):
    torch_model, _, directory = pair
    ids, mask, langs = (jnp.asarray(a) for a in _inputs(torch_model.config))
    # Same weights in bfloat16 compute: the two attention paths must agree to bfloat16 resolution.
    model = XLMModel.from_pretrained(directory, dtype=jnp.bfloat16)
    fused = model(ids, mask, langs).last_hidden_state.astype(jnp.float32)
    explicit = model(ids, mask, langs, output_attentions=True).last_hidden_state.astype(jnp.float32)
    assert np.max(np.abs(np.asarray(fused) - np.asarray(explicit))) <= 0.0625
