"""Largest differences between xlm-flax and transformers' PyTorch XLM, over the parity suite's matrix.

Builds tiny transformers checkpoints with seeded random weights (the configurations of tests/test_parity.py), converts
each with `xlm_flax.checkpoints.convert_checkpoint`, and runs both models on the suite's inputs (padding by
attention_mask and by lengths, padding inferred from pad tokens, explicit position_ids, token_type_ids, batch 1,
length 1, length = max_position_embeddings). Prints the largest |flax - pytorch| of hidden states, attentions and
logits in float32, and with bfloat16 compute (float32 and bfloat16 parameters) against the float32 PyTorch model.

    python benchmarks/parity_report.py            # needs torch and transformers

Public API only.
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from tests.helpers import PARITY_CONFIGS, build_reference_checkpoint, random_inputs  # noqa: E402
from xlm_flax import XLMWithLMHeadModel  # noqa: E402
from xlm_flax.checkpoints import convert_checkpoint  # noqa: E402

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

SETTINGS = {  # name: (compute dtype, parameter dtype)
    "float32": (jnp.float32, jnp.float32),
    "bf16 compute, fp32 params": (jnp.bfloat16, jnp.float32),
    "bf16 compute, bf16 params": (jnp.bfloat16, jnp.bfloat16),
}


def input_matrix(config) -> dict[str, dict[str, np.ndarray]]:
    """The input variants of the parity suite."""
    ids, mask, langs = random_inputs(config)
    batch, length = ids.shape
    restart = np.concatenate([np.arange(5), np.arange(length - 5)])
    types = np.random.default_rng(1).integers(0, config.vocab_size, size=ids.shape)
    out = {
        "attention_mask": dict(input_ids=ids, attention_mask=mask, langs=langs),
        "lengths": dict(input_ids=ids, lengths=mask.sum(1), langs=langs),
        "inferred_from_pad": dict(input_ids=ids),
        "position_ids": dict(
            input_ids=ids, attention_mask=mask, position_ids=np.tile(restart, (batch, 1)), langs=langs
        ),
        "token_type_ids": dict(input_ids=ids, attention_mask=mask, token_type_ids=types),
    }
    for name, (b, n) in {"batch1": (1, 9), "length1": (3, 1), "length_max_positions": (2, 13)}.items():
        e_ids, e_mask, e_langs = random_inputs(config, batch=b, length=n, pad_rows=n > 2)
        out[name] = dict(input_ids=e_ids, attention_mask=e_mask, langs=e_langs)
    return out


def max_diffs(expected, got) -> dict[str, float]:
    """Largest |got - expected| of hidden states (all of them), attentions (all layers) and logits."""

    def diff(a, b) -> float:
        return float(np.max(np.abs(np.asarray(a, dtype=np.float32) - b.float().numpy())))

    return {
        "hidden_states": max(diff(a, b) for a, b in zip(got.hidden_states, expected.hidden_states)),
        "attentions": max(diff(a, b) for a, b in zip(got.attentions, expected.attentions)),
        "logits": diff(got.logits, expected.logits),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    worst: dict[str, dict[str, tuple[float, str]]] = {s: {} for s in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        for config_name, overrides in PARITY_CONFIGS.items():
            torch_dir, flax_dir = os.path.join(tmp, config_name), os.path.join(tmp, config_name + "-flax")
            _, reference = build_reference_checkpoint(torch_dir, **overrides)
            convert_checkpoint(torch_dir, flax_dir)
            models = {
                s: XLMWithLMHeadModel.from_pretrained(flax_dir, dtype=dtype, param_dtype=param_dtype)
                for s, (dtype, param_dtype) in SETTINGS.items()
            }
            for input_name, inputs in input_matrix(reference.config).items():
                with torch.no_grad():
                    expected = reference(
                        **{k: torch.from_numpy(v) for k, v in inputs.items()},
                        output_hidden_states=True,
                        output_attentions=True,
                    )
                for setting, model in models.items():
                    got = model(
                        **{k: jnp.asarray(v) for k, v in inputs.items()},
                        output_hidden_states=True,
                        output_attentions=True,
                    )
                    for output, value in max_diffs(expected, got).items():
                        if value >= worst[setting].get(output, (-1.0, ""))[0]:
                            worst[setting][output] = (value, f"{config_name}/{input_name}")
    print(f"{'setting':28s} {'output':14s} {'max |diff|':>11s}  worst case")
    for setting, outputs in worst.items():
        for output, (value, where) in outputs.items():
            print(f"{setting:28s} {output:14s} {value:11.3g}  {where}")


if __name__ == "__main__":
    main()
