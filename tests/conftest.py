"""Test-session settings and shared fixtures. The fixtures' building blocks, and the gates of the optional test
dependencies (torch, the notebook and shellcheck packages), live in `helpers.py`."""

from __future__ import annotations

import os
import shutil
import tempfile

# Eight fake CPU devices for the sharding tests; must be set before JAX initialises its backend.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# JAX's persistent compilation cache, shared by the session's processes (xdist workers and subprocesses inherit the
# variable set here, in the first process): the suite builds the same tiny models in many tests, and each new jit
# object would otherwise compile the same program again (a resumed-training test compiles its step three times).
# The key covers the program, the devices and XLA_FLAGS, so a hit is the same executable. Removed at the end.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="xlm-flax-tests-jax-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import helpers  # noqa: E402
import pytest  # noqa: E402

helpers.quiet_transformers()

# Set by CI's run in the full environment (every optional package installed), where a skipped test is a test that
# silently stopped running: the session then fails, listing the skips.
FORBID_SKIPS = "XLM_FLAX_TESTS_FORBID_SKIPS"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fails a passing session that skipped anything when `FORBID_SKIPS` is set."""
    if os.environ.get(FORBID_SKIPS) != "1" or exitstatus != pytest.ExitCode.OK:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and reporter.stats.get("skipped"):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    """Removes the compilation cache this process created (the workers' processes leave it to the first one)."""
    if _OWN_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Names the skipped tests that fail the session under `FORBID_SKIPS`, with their reasons."""
    skipped = terminalreporter.stats.get("skipped", [])
    if os.environ.get(FORBID_SKIPS) != "1" or not skipped:
        return
    terminalreporter.section(f"{FORBID_SKIPS}=1: no test may be skipped", red=True)
    for report in skipped:
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        terminalreporter.line(f"{report.nodeid}: {reason}")


@pytest.fixture(scope="session")
def lm_checkpoint(tmp_path_factory):
    """A three-language XLMWithLMHeadModel checkpoint and its PyTorch model (skips without torch)."""
    return helpers.build_reference_checkpoint(tmp_path_factory.mktemp("lm"), n_langs=3)
