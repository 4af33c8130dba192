"""Per-layer (unstacked) weights for inference (`xlm_flax.model.stack.run_unstacked`) against transformers' PyTorch XLM and against
the scanned stack on the same weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import build_reference_checkpoint, optional_import, random_inputs

from xlm_flax import XLMWithLMHeadModel
from xlm_flax.model.layers import LOGICAL_AXES
from xlm_flax.model.stack import is_unstacked, unstack_layers

# None without torch: the tests that use it build the PyTorch reference, and skip there.
torch = optional_import("torch")

FP32_TOL = 1e-5


@pytest.fixture(scope="module", params=["padding", "causal"])
def pair(request, tmp_path_factory):
    """(PyTorch LM model, our stacked LM model, our unstacked LM model) on the same weights."""
    overrides = dict(n_langs=3, causal=request.param == "causal")
    directory, torch_model = build_reference_checkpoint(tmp_path_factory.mktemp(request.param), **overrides)
    stacked = XLMWithLMHeadModel.from_pretrained(directory)
    unstacked = unstack_layers(XLMWithLMHeadModel.from_pretrained(directory))
    return torch_model, stacked, unstacked


def _inputs(config):
    ids, mask, langs = random_inputs(config, batch=4, length=11)
    mask[3] = 0  # a row with nothing to attend to
    return ids, mask, langs


def test_layout(pair):
    _, stacked, unstacked = pair
    n = stacked.config.n_layers
    assert not is_unstacked(stacked) and is_unstacked(unstacked)
    assert len(unstacked.transformer.ffns) == n
    kernel = unstacked.transformer.attentions[0].q_lin.kernel
    assert kernel.shape == stacked.transformer.attentions.q_lin.kernel.shape[1:]
    assert kernel.get_metadata()[LOGICAL_AXES] == ("embed", "heads", "head_dim")
    np.testing.assert_array_equal(
        np.asarray(unstacked.transformer.ffns[n - 1].lin2.kernel[...]),
        np.asarray(stacked.transformer.ffns.lin2.kernel[...][n - 1]),
    )
    assert unstack_layers(unstacked) is unstacked  # idempotent


@pytest.mark.parametrize("output_attentions", [False, True])
def test_matches_pytorch(pair, output_attentions):
    torch_model, _, model = pair
    ids, mask, langs = _inputs(torch_model.config)
    with torch.no_grad():
        expected = torch_model(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            langs=torch.from_numpy(langs),
            output_hidden_states=True,
            output_attentions=output_attentions,
        )
    graphdef, state = nnx.split(model)

    def run(state, *args):
        return nnx.merge(graphdef, state)(*args, output_hidden_states=True, output_attentions=output_attentions)

    for out in (run(state, *map(jnp.asarray, (ids, mask, langs))), jax.jit(run)(state, ids, mask, langs)):
        assert np.max(np.abs(np.asarray(out.logits) - expected.logits.numpy())) <= FP32_TOL
        assert len(out.hidden_states) == len(expected.hidden_states)
        for got, want in zip(out.hidden_states, expected.hidden_states, strict=True):
            assert np.max(np.abs(np.asarray(got) - want.numpy())) <= FP32_TOL
        if output_attentions:
            for got, want in zip(out.attentions, expected.attentions, strict=True):
                assert np.max(np.abs(np.asarray(got) - want.numpy())) <= FP32_TOL
        else:
            assert out.attentions is None


def test_dropout_equals_scanned_stack(pair):
    """Training-mode dropout draws the same per-layer keys as the scan, so both layouts give the same output."""
    _, stacked, unstacked = pair
    ids, mask, langs = (jnp.asarray(a) for a in _inputs(stacked.config))
    outs = [
        m.transformer(ids, mask, langs, deterministic=False, rngs=nnx.Rngs(dropout=7)).last_hidden_state
        for m in (stacked, unstacked)
    ]
    assert not np.allclose(outs[0], stacked.transformer(ids, mask, langs).last_hidden_state)  # dropout is on
    np.testing.assert_allclose(np.asarray(outs[0]), np.asarray(outs[1]), rtol=0, atol=1e-6)


def test_rejects_a_model_without_layers():
    with pytest.raises(TypeError, match="no XLM layer stack"):
        unstack_layers(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
