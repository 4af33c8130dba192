"""Multi-process runs for real: several local processes joined by `xlm_flax.distributed.initialize` (coordinator on
127.0.0.1, CPU devices, gloo collectives), each loading the checkpoint sharded and feeding its own rows."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from helpers import build_checkpoint, optional_import, random_inputs, requires_torch

from xlm_flax import XLMConfig, XLMWithLMHeadModel, distributed, make_mesh
from xlm_flax.errors import InputError

# None without torch: the tests that use it are marked `requires_torch`.
torch = optional_import("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multihost_worker.py")
# Dimensions divisible by every model-axis size used, so that weights really are split across processes.
DIVISIBLE = dict(vocab_size=48, emb_dim=32, n_heads=4, n_langs=3)
BATCH = 5  # not a multiple of any data axis: padding on every mesh
TIMEOUT = 240  # seconds for a whole run: a hung collective fails the test instead of blocking the suite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(n_processes: int, devices_per_process: int, meshes: list[str], checkpoint: str, inputs: str, out: str):
    port = _free_port()
    env = dict(os.environ)
    env.update(
        PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""),
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}",
        JAX_PLATFORMS="cpu",
    )
    for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
        env.pop(name, None)
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, str(port), str(n_processes), str(i), checkpoint, inputs, out, *meshes],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(n_processes)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT)[0])
    except subprocess.TimeoutExpired:
        pytest.fail(f"the {n_processes} processes did not finish within {TIMEOUT} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, p in enumerate(procs):
        assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n{logs[i][-3000:]}"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two processes with two CPU devices each, three meshes over the four devices; plus the references (without
    torch, the single-process one only)."""
    directory, pt = build_checkpoint(tmp_path_factory.mktemp("mh"), **DIVISIBLE)
    ids, mask, langs = random_inputs(XLMConfig.from_pretrained(directory), batch=BATCH)
    inputs = str(tmp_path_factory.mktemp("inputs") / "inputs.npz")
    np.savez(inputs, input_ids=ids, attention_mask=mask, langs=langs)
    out = str(tmp_path_factory.mktemp("out"))
    meshes = ["4x1", "2x2", "1x4"]
    _launch(2, 2, meshes, directory, inputs, out)
    reference = None
    if pt is not None:
        with torch.no_grad():
            reference = pt(
                input_ids=torch.from_numpy(ids),
                attention_mask=torch.from_numpy(mask),
                langs=torch.from_numpy(langs),
                output_hidden_states=True,
            )
    single = XLMWithLMHeadModel.from_pretrained(directory)(ids, mask, langs, output_hidden_states=True)
    return dict(out=out, meshes=meshes, torch=reference, single=single)


@pytest.mark.parametrize("mesh", ["4x1", "2x2", "1x4"])
@pytest.mark.parametrize("process", [0, 1])
def test_two_processes_match_single_process(run, mesh, process):
    got = np.load(os.path.join(run["out"], f"{mesh}-{process}.npz"))
    single = run["single"]
    assert got["logits"].shape == (BATCH, 9, DIVISIBLE["vocab_size"])
    np.testing.assert_allclose(got["logits"], np.asarray(single.logits), atol=1e-5, rtol=0)
    assert len(got["hidden"]) == len(single.hidden_states)
    for layer, mine in enumerate(got["hidden"]):
        np.testing.assert_allclose(mine, np.asarray(single.hidden_states[layer]), atol=1e-5, rtol=0)


@requires_torch
@pytest.mark.parametrize("mesh", ["4x1", "2x2", "1x4"])
@pytest.mark.parametrize("process", [0, 1])
def test_two_processes_match_torch(run, mesh, process):
    got = np.load(os.path.join(run["out"], f"{mesh}-{process}.npz"))
    reference = run["torch"]
    np.testing.assert_allclose(got["logits"], reference.logits.numpy(), atol=1e-5, rtol=0)
    for layer, (mine, theirs) in enumerate(zip(got["hidden"], reference.hidden_states)):
        np.testing.assert_allclose(mine, theirs.numpy(), atol=1e-5, rtol=0, err_msg=f"hidden state {layer}")


def test_each_process_fed_its_own_rows(run):
    # data=4 pads 5 rows to 8: process 0 owns rows 0-3, process 1 rows 4-7 of which only row 4 is real.
    assert np.load(os.path.join(run["out"], "4x1-0.npz"))["rows"].tolist() == [0, 4]
    assert np.load(os.path.join(run["out"], "4x1-1.npz"))["rows"].tolist() == [4, 5]
    # data=1: both processes hold the whole batch (the model axis spans them).
    assert np.load(os.path.join(run["out"], "1x4-1.npz"))["rows"].tolist() == [0, 5]


@pytest.mark.parametrize(("mesh", "mlp_shard"), [("4x1", 128), ("2x2", 64), ("1x4", 32)])
def test_weights_split_across_processes(run, mesh, mlp_shard):
    # ffns.lin1.kernel is [layers, embed, mlp] = [3, 32, 128]; each process holds its two devices' slices only.
    for process in (0, 1):
        shapes = np.load(os.path.join(run["out"], f"{mesh}-{process}.npz"))["shard_shapes"]
        assert shapes.tolist() == [[3, 32, mlp_shard]] * 2


def test_single_process_helpers():
    mesh = make_mesh(8, 1)
    assert distributed.process_rows(5, mesh) == slice(0, 5)
    batch = distributed.global_batch({"input_ids": np.arange(10).reshape(5, 2)}, mesh, 5)["input_ids"]
    assert batch.shape == (8, 2)
    np.testing.assert_array_equal(distributed.gather(batch, 5), np.arange(10).reshape(5, 2))
    np.testing.assert_array_equal(distributed.gather(batch)[5:], 0)
    with pytest.raises(InputError, match="expected 5"):
        distributed.global_batch({"input_ids": np.zeros((4, 2))}, mesh, 5)


def test_initialize_single_process_and_bad_settings(monkeypatch):
    monkeypatch.delenv(distributed.ENV_COORDINATOR, raising=False)
    info = distributed.initialize(num_processes=1)
    assert (info.process_index, info.process_count, info.is_main) == (0, 1, True)
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "two")
    with pytest.raises(InputError, match="JAX_NUM_PROCESSES"):
        distributed.initialize()
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "2")
    with pytest.raises(InputError, match="process_id=2"):
        distributed.initialize(process_id=2)


def test_initialize_decides_from_state_not_from_messages(monkeypatch):
    import jax

    from xlm_flax.sharding import multihost

    for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
        monkeypatch.delenv(name, raising=False)
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    # Nothing given and no cluster: a single process, without asking JAX to connect anything.
    monkeypatch.setattr(multihost, "_cluster_detected", lambda method: False)
    assert distributed.initialize().process_count == 1 and calls == []
    # A cluster, or explicit settings, once this process has used JAX (this test session has): refused up front.
    jax.devices()
    monkeypatch.setattr(multihost, "_cluster_detected", lambda method: True)
    for kwargs in ({}, dict(coordinator_address="127.0.0.1:1", num_processes=2, process_id=0)):
        with pytest.raises(InputError, match="before anything else uses JAX"):
            distributed.initialize(**kwargs)
    assert calls == []
    # Before any backend starts, the settings reach JAX; its refusal of them becomes an InputError.
    monkeypatch.setattr(multihost, "_backends_initialized", lambda: False)

    def refuse(*args, **kwargs):
        raise ValueError("Number of processes must be defined.")

    monkeypatch.setattr(jax.distributed, "initialize", refuse)
    with pytest.raises(InputError, match="JAX_NUM_PROCESSES"):
        distributed.initialize(coordinator_address="127.0.0.1:1")


def test_cluster_detection_sees_the_environment(monkeypatch):
    from xlm_flax.sharding import multihost

    for name in ("SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    assert not multihost._cluster_detected("deactivate")
    assert not multihost._cluster_detected("slurm")
    slurm = dict(SLURM_JOB_ID="1", SLURM_STEP_NODELIST="n1", SLURM_NTASKS="2", SLURM_PROCID="0", SLURM_LOCALID="0")
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    assert multihost._cluster_detected("slurm") and multihost._cluster_detected(None)
    __import__("jax").devices()
    assert multihost._backends_initialized()
