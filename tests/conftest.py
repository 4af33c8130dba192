"""Test-session settings and shared fixtures. The fixtures' building blocks live in `helpers.py`."""

from __future__ import annotations

import os

# Eight fake CPU devices for the sharding tests; must be set before JAX initialises its backend.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import helpers  # noqa: E402
import pytest  # noqa: E402

helpers.quiet_transformers()


@pytest.fixture(scope="session")
def lm_checkpoint(tmp_path_factory):
    """A three-language XLMWithLMHeadModel checkpoint and its PyTorch model (needs torch)."""
    pytest.importorskip("torch", reason="the reference checkpoint is built with transformers' PyTorch XLM")
    return helpers.build_reference_checkpoint(tmp_path_factory.mktemp("lm"), n_langs=3)
