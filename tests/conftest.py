"""Shared fixtures: seeded transformers XLM checkpoints saved with `save_pretrained`, the reference for parity."""

from __future__ import annotations

import os

# Eight fake CPU devices for the sharding tests; must be set before JAX initialises its backend.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

from xlm_flax import verify  # noqa: E402

# The parity suite's reference checkpoints and inputs (xlm_flax.verify, shared with benchmarks/parity_report.py).
TINY = verify.TINY_CONFIG
LANGS3 = verify.TINY_LANGS
tiny_config = verify.reference_config
make_torch_checkpoint = verify.build_reference_checkpoint
random_inputs = verify.random_inputs

__all__ = ["LANGS3", "TINY", "make_torch_checkpoint", "random_inputs", "tiny_config"]


@pytest.fixture(scope="session")
def lm_checkpoint(tmp_path_factory):
    """A three-language XLMWithLMHeadModel checkpoint and its PyTorch model."""
    return make_torch_checkpoint(tmp_path_factory.mktemp("lm"), n_langs=3)
