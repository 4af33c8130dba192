"""transformers' output conventions: `ModelOutput` access, config-level `output_*` defaults, pmap_forward's
positional arguments."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import TINY_CONFIG, requires_torch

from xlm_flax import (
    BaseModelOutput,
    ClassifierOutput,
    MaskedLMOutput,
    SquadOutput,
    XLMConfig,
    XLMForSequenceClassification,
    XLMModel,
    XLMWithLMHeadModel,
    pmap_forward,
)

CONFIG = XLMConfig(**TINY_CONFIG, dropout=0.0, attention_dropout=0.0)
IDS = np.array([[0, 7, 8, 9, 1], [0, 10, 11, 1, 2]], np.int32)


def test_outputs_have_transformers_access_in_its_order():
    logits, loss, states = jnp.ones((2, 3)), jnp.float32(0.5), (jnp.zeros(1), jnp.ones(1))
    out = MaskedLMOutput(logits=logits, loss=loss, hidden_states=states)
    assert out.keys() == ["loss", "logits", "hidden_states"]  # loss first, None (attentions) skipped
    assert list(out) == out.keys() and len(out) == 3 and "attentions" not in out and "loss" in out
    assert out[0] is loss and out[1] is logits and out[-1] is states and out[1:] == (logits, states)
    assert out["logits"] is logits and out.get("attentions", "none") == "none"
    assert out.to_tuple() == (loss, logits, states) and out.items()[0] == ("loss", loss)
    with pytest.raises(KeyError):
        out["attentions"]
    without = ClassifierOutput(logits=logits)
    assert without[0] is logits and without.to_tuple() == (logits,)
    squad = SquadOutput(start_top_index=jnp.zeros(1), cls_logits=jnp.ones(1))
    assert squad.keys() == ["start_top_index", "cls_logits"]
    assert BaseModelOutput(last_hidden_state=logits).keys() == ["last_hidden_state"]


@requires_torch
def test_key_order_is_transformers_own():
    import torch
    from transformers.modeling_outputs import MaskedLMOutput as TorchMaskedLMOutput
    from transformers.modeling_outputs import SequenceClassifierOutput

    t = torch.ones(1)
    theirs = TorchMaskedLMOutput(logits=t, loss=t, attentions=(t,))
    ours = MaskedLMOutput(logits=jnp.ones(1), loss=jnp.ones(()), attentions=(jnp.ones(1),))
    assert list(ours.keys()) == list(theirs.keys()) == ["loss", "logits", "attentions"]
    assert len(ours.to_tuple()) == len(theirs.to_tuple())
    assert list(ClassifierOutput(logits=jnp.ones(1)).keys()) == list(SequenceClassifierOutput(logits=t).keys())


@pytest.mark.slow
def test_outputs_stay_pytrees_under_jit():
    model = XLMWithLMHeadModel(CONFIG, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, ids, labels):
        out = nnx.merge(graphdef, state)(ids, labels=labels)
        return out, out["loss"] * 2, out[1].sum()  # key and index access while tracing

    out, doubled, total = run(state, IDS, IDS)
    assert isinstance(out, MaskedLMOutput) and out.keys() == ["loss", "logits"]
    eager = model(IDS, labels=IDS)
    np.testing.assert_allclose(out[0], eager.loss, rtol=1e-6)
    np.testing.assert_allclose(doubled, 2 * eager.loss, rtol=1e-6)
    np.testing.assert_allclose(total, eager.logits.sum(), rtol=1e-5)
    assert len(jax.tree.leaves(out)) == 2


def test_config_output_flags_are_the_call_defaults():
    config = CONFIG.replace(output_hidden_states=True, output_attentions=True)
    model = XLMModel(config, rngs=nnx.Rngs(0))
    out = model(IDS)
    assert len(out.hidden_states) == CONFIG.n_layers + 1 and len(out.attentions) == CONFIG.n_layers
    plain = XLMModel(CONFIG, rngs=nnx.Rngs(0))
    asked = plain(IDS, output_hidden_states=True, output_attentions=True)
    for a, b in zip(out.attentions + out.hidden_states, asked.attentions + asked.hidden_states, strict=True):
        np.testing.assert_array_equal(a, b)
    assert plain(IDS).hidden_states is None and plain(IDS).attentions is None
    off = model(IDS, output_hidden_states=False, output_attentions=False)  # the call still wins
    assert off.hidden_states is None and off.attentions is None
    # Read from config.json as transformers writes it; heads take the default through the encoder.
    loaded = XLMConfig.from_dict({**CONFIG.to_dict(), "output_attentions": True})
    assert loaded.output_attentions and not loaded.output_hidden_states and loaded.to_dict()["output_attentions"]
    head = XLMForSequenceClassification(loaded, rngs=nnx.Rngs(0))
    assert len(head(IDS).attentions) == CONFIG.n_layers and head(IDS).hidden_states is None


def test_pmap_forward_takes_positional_arguments():
    model = XLMWithLMHeadModel(CONFIG, rngs=nnx.Rngs(0))
    ids = np.tile(IDS, (4, 1))  # [8, 5]
    mask = (ids != CONFIG.pad_index).astype(np.int32)
    forward = pmap_forward(model)
    out = forward(ids.reshape(8, 1, 5), attention_mask=mask.reshape(8, 1, 5))
    by_name = forward(input_ids=ids.reshape(8, 1, 5), attention_mask=mask.reshape(8, 1, 5))
    expected = model(ids, mask).logits
    np.testing.assert_allclose(out.logits.reshape(8, 5, -1), expected, atol=1e-5)
    np.testing.assert_array_equal(out.logits, by_name.logits)
    both = forward(ids.reshape(4, 2, 5), mask.reshape(4, 2, 5))  # the mask by position too
    np.testing.assert_allclose(both[0].reshape(8, 5, -1), expected, atol=1e-5)
