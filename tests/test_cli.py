"""`python -m xlm_flax convert` as users run it: in a subprocess, checking exit status, stdout and stderr."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import build_checkpoint, optional_import, random_inputs, requires_torch

from xlm_flax import XLMWithLMHeadModel

# None without torch: the tests that use it are marked `requires_torch`.
torch = optional_import("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    env.pop("XLM_FLAX_TRACEBACK", None)
    return subprocess.run(
        [sys.executable, "-m", "xlm_flax", *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(transformers directory, PyTorch model); without torch, one our exporter wrote, and None for the model."""
    return build_checkpoint(tmp_path_factory.mktemp("src"), n_langs=3)


def _logits_diff(directory, torch_model) -> float:
    ids, mask, langs = random_inputs(torch_model.config)
    with torch.no_grad():
        expected = torch_model(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), langs=torch.from_numpy(langs)
        ).logits.numpy()
    model = XLMWithLMHeadModel.from_pretrained(directory)
    got = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(langs)).logits)
    return float(np.max(np.abs(got - expected)))


@requires_torch
def test_convert_with_verify(checkpoint, tmp_path):
    source, torch_model = checkpoint
    result = run_cli("convert", source, tmp_path / "out", "--verify")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "wrote" in result.stdout and "XLMWithLMHeadModel" in result.stdout
    line = next(li for li in result.stdout.splitlines() if li.startswith("verified against PyTorch"))
    assert float(line.rsplit(" ", 1)[-1]) <= 1e-5
    assert "max |pytorch - flax|" in result.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["config.json", "model.safetensors"]
    assert _logits_diff(tmp_path / "out", torch_model) <= 1e-5


@requires_torch
def test_convert_to_bfloat16(checkpoint, tmp_path):
    source, torch_model = checkpoint
    result = run_cli("convert", source, tmp_path / "out", "--dtype", "bfloat16")
    assert result.returncode == 0, result.stderr
    assert "(bfloat16)" in result.stdout
    model = XLMWithLMHeadModel.from_pretrained(tmp_path / "out")
    assert model.transformer.embeddings.embedding.dtype == jnp.bfloat16
    diff = _logits_diff(tmp_path / "out", torch_model)
    assert 0 < diff < 0.1  # rounded storage, still the same model


def _assert_one_line_error(result, *needles):
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("xlm-flax")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def bad_runs(checkpoint, tmp_path_factory):
    """Runs every bad invocation at once (each is a separate process) and returns name -> (result, workdir)."""
    source, _ = checkpoint
    work = {
        name: tmp_path_factory.mktemp(name) for name in ("missing", "no_config", "no_weights", "non_empty", "dtype")
    }
    shutil.copytree(source, work["no_config"] / "src")
    os.remove(work["no_config"] / "src" / "config.json")
    (work["no_weights"] / "src").mkdir()
    shutil.copy(os.path.join(source, "config.json"), work["no_weights"] / "src")
    (work["non_empty"] / "out").mkdir()
    (work["non_empty"] / "out" / "notes.txt").write_text("mine")
    args = {
        "missing": ("convert", work["missing"] / "nowhere", work["missing"] / "out"),
        "no_config": ("convert", work["no_config"] / "src", work["no_config"] / "out"),
        "no_weights": ("convert", work["no_weights"] / "src", work["no_weights"] / "out"),
        "non_empty": ("convert", source, work["non_empty"] / "out"),
        "dtype": ("convert", source, work["dtype"] / "out", "--dtype", "float8"),
    }
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    env.pop("XLM_FLAX_TRACEBACK", None)
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "xlm_flax", *map(str, a)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name, a in args.items()
    }
    results = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        results[name] = (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), work[name])
    return results


def test_missing_source_directory(bad_runs):
    result, work = bad_runs["missing"]
    _assert_one_line_error(result, "does not exist")
    assert not (work / "out").exists()


def test_directory_without_config(bad_runs):
    result, work = bad_runs["no_config"]
    _assert_one_line_error(result, "config.json")
    assert not (work / "out").exists()


def test_directory_without_weights(bad_runs):
    result, work = bad_runs["no_weights"]
    _assert_one_line_error(result, "no weights", "model.safetensors", "pytorch_model.bin")
    assert not (work / "out").exists()


def test_non_empty_destination(bad_runs):
    result, work = bad_runs["non_empty"]
    _assert_one_line_error(result, "not empty", "--force")
    assert os.listdir(work / "out") == ["notes.txt"]


def test_bad_dtype(bad_runs):
    result, work = bad_runs["dtype"]
    _assert_one_line_error(result, "--dtype", "float8")
    assert not (work / "out").exists()


@requires_torch
def test_convert_script_uses_the_public_api(checkpoint, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_script", os.path.join(ROOT, "convert", "convert.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    source, torch_model = checkpoint
    assert script.main([source, str(tmp_path / "out")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert _logits_diff(tmp_path / "out", torch_model) <= 1e-5
    assert script.main([source, str(tmp_path / "out")]) == 2  # now non-empty
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty" in err[0]
