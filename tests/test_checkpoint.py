"""Checkpoint reading, writing and conversion: exact round trips, every transformers layout, refusals, atomicity,
loading without torch, and streaming memory."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import transformers
from flax import nnx
from helpers import build_checkpoint, build_reference_checkpoint, optional_import, random_inputs, requires_torch
from safetensors.numpy import load_file, save_file

from xlm_flax import XLMConfig, XLMModel, XLMWithLMHeadModel
from xlm_flax.checkpoints.convert import convert_checkpoint
from xlm_flax.checkpoints.sources import SafetensorsSource
from xlm_flax.errors import CheckpointError, InputError

# None without torch: the tests that use it are marked `requires_torch`, or build the PyTorch reference and skip.
torch = optional_import("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FP32_TOL = 1e-5


def _params(model) -> dict[str, np.ndarray]:
    state = nnx.state(model, nnx.Param)
    return {".".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(state)}


def _torch_logits(model, ids, mask, langs) -> np.ndarray:
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), langs=torch.from_numpy(langs)
        )
    return (out.logits if hasattr(out, "logits") else out.last_hidden_state).numpy()


def _flax_logits(model, ids, mask, langs) -> np.ndarray:
    out = model(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(langs))
    return np.asarray(out.logits if hasattr(out, "logits") else out.last_hidden_state)


def _leftovers(parent) -> list[str]:
    return [n for n in os.listdir(parent) if ".tmp-" in n or ".old-" in n]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """(transformers directory, PyTorch model, inputs) of a three-language LM checkpoint; without torch, one our
    exporter wrote in transformers' layout, and None for the model."""
    directory, model = build_checkpoint(tmp_path_factory.mktemp("lm"), n_langs=3)
    return directory, model, random_inputs(XLMConfig.from_pretrained(directory))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A bare-encoder (XLMModel) checkpoint with the same config."""
    directory, model = build_reference_checkpoint(tmp_path_factory.mktemp("base"), "XLMModel", n_langs=3)
    return directory, model


# ------------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.bfloat16], ids=["fp32", "bf16"])
def test_native_round_trip_is_exact(lm, tmp_path, param_dtype):
    directory, _, (ids, mask, langs) = lm
    model = XLMWithLMHeadModel.from_pretrained(directory, param_dtype=param_dtype)
    model.save_pretrained(tmp_path / "native")
    assert load_file(str(tmp_path / "native" / "model.safetensors"))  # readable by the safetensors package
    again = XLMWithLMHeadModel.from_pretrained(tmp_path / "native")
    before, after = _params(model), _params(again)
    assert before.keys() == after.keys()
    for name in before:
        assert after[name].dtype == np.dtype(param_dtype), name
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    np.testing.assert_array_equal(_flax_logits(again, ids, mask, langs), _flax_logits(model, ids, mask, langs))
    config = json.loads((tmp_path / "native" / "config.json").read_text())
    assert config["dtype"] == np.dtype(param_dtype).name
    assert config["architectures"] == ["XLMWithLMHeadModel"]


@requires_torch
def test_save_pytorch_loads_in_transformers(lm, tmp_path):
    directory, torch_model, (ids, mask, langs) = lm
    model = XLMWithLMHeadModel.from_pretrained(directory)
    model.save_pretrained(tmp_path / "pt", format="pytorch")
    reloaded, info = transformers.XLMWithLMHeadModel.from_pretrained(tmp_path / "pt", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    reloaded.eval()
    expected = _torch_logits(torch_model, ids, mask, langs)
    np.testing.assert_array_equal(_torch_logits(reloaded, ids, mask, langs), expected)
    assert np.max(np.abs(_flax_logits(model, ids, mask, langs) - expected)) <= FP32_TOL


@requires_torch
def test_pytorch_to_flax_to_pytorch_is_bit_identical(lm, tmp_path):
    directory, torch_model, _ = lm
    XLMWithLMHeadModel.from_pretrained(directory).save_pretrained(tmp_path / "pt", format="pytorch")
    original = load_file(os.path.join(directory, "model.safetensors"))
    written = load_file(str(tmp_path / "pt" / "model.safetensors"))
    tied = {"pred_layer.proj.weight"}  # transformers does not save the tied copy either
    assert set(written) == set(original) - tied
    for name, value in written.items():
        assert value.dtype == original[name].dtype
        np.testing.assert_array_equal(value, original[name], err_msg=name)
    for name, value in torch_model.state_dict().items():
        if name not in tied:
            np.testing.assert_array_equal(written[name], value.numpy(), err_msg=name)


# ------------------------------------------------------------------------------------------ transformers layouts


@requires_torch
def test_sharded_safetensors(lm, tmp_path):
    directory, torch_model, (ids, mask, langs) = lm
    torch_model.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    files = os.listdir(tmp_path / "sharded")
    assert "model.safetensors.index.json" in files and "model.safetensors" not in files
    assert len([f for f in files if f.endswith(".safetensors")]) > 1
    expected = _torch_logits(torch_model, ids, mask, langs)
    model = XLMWithLMHeadModel.from_pretrained(tmp_path / "sharded")
    assert np.max(np.abs(_flax_logits(model, ids, mask, langs) - expected)) <= FP32_TOL
    convert_checkpoint(tmp_path / "sharded", tmp_path / "out")
    converted = XLMWithLMHeadModel.from_pretrained(tmp_path / "out")
    assert np.max(np.abs(_flax_logits(converted, ids, mask, langs) - expected)) <= FP32_TOL


@requires_torch
def test_pytorch_model_bin_read_with_weights_only(lm, tmp_path, monkeypatch):
    directory, torch_model, (ids, mask, langs) = lm
    out = tmp_path / "bin"
    out.mkdir()
    torch_model.config.save_pretrained(out)
    torch.save(torch_model.state_dict(), out / "pytorch_model.bin")
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model = XLMWithLMHeadModel.from_pretrained(out)
    assert calls and all(c is True for c in calls)
    expected = _torch_logits(torch_model, ids, mask, langs)
    assert np.max(np.abs(_flax_logits(model, ids, mask, langs) - expected)) <= FP32_TOL
    convert_checkpoint(out, tmp_path / "converted", dtype="bfloat16")
    converted = XLMWithLMHeadModel.from_pretrained(tmp_path / "converted")
    assert converted.transformer.embeddings.embedding.dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(converted.transformer.embeddings.embedding[...]),
        torch_model.transformer.embeddings.weight.detach().numpy().astype(ml_dtypes.bfloat16),
    )


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@requires_torch  # a pytorch_model.bin of either kind is read by torch.load(weights_only=True)
@pytest.mark.parametrize("writer", ["torch_save", "plain_pickle"])
def test_malicious_pickle_is_refused(lm, tmp_path, writer):
    directory, torch_model, _ = lm
    src = tmp_path / "evil"
    src.mkdir()
    torch_model.config.save_pretrained(src)
    marker = tmp_path / "pwned"
    payload = {"transformer.embeddings.weight": _Evil(marker)}
    if writer == "torch_save":
        torch.save(payload, src / "pytorch_model.bin")
    else:
        with open(src / "pytorch_model.bin", "wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(CheckpointError, match="refusing"):
        XLMWithLMHeadModel.from_pretrained(src)
    with pytest.raises(CheckpointError, match="refusing"):
        convert_checkpoint(src, tmp_path / "dst")
    assert not marker.exists()
    assert not (tmp_path / "dst").exists()


# ---------------------------------------------------------------------------------------- heads and bases mixed


def test_base_checkpoint_into_lm_model_reports_fresh_tensors(base, caplog):
    directory, torch_model = base
    with caplog.at_level(logging.WARNING, logger="xlm_flax"):
        model = XLMWithLMHeadModel.from_pretrained(directory)
    assert model.fresh_parameters == ("pred_layer.proj.bias",)
    assert "initialised fresh" in caplog.text and "pred_layer.proj.bias" in caplog.text
    np.testing.assert_array_equal(
        np.asarray(model.transformer.embeddings.embedding[...]), torch_model.embeddings.weight.detach().numpy()
    )
    with pytest.raises(CheckpointError, match="pred_layer.proj.bias"):
        XLMWithLMHeadModel.from_pretrained(directory, strict=True)


@requires_torch
def test_lm_checkpoint_into_base_model_reports_unused(lm, caplog):
    directory, torch_model, (ids, mask, langs) = lm
    with caplog.at_level(logging.WARNING, logger="xlm_flax"):
        model = XLMModel.from_pretrained(directory)
    assert "not used" in caplog.text and "pred_layer.proj.bias" in caplog.text
    assert model.fresh_parameters == ()
    with torch.no_grad():
        expected = torch_model.transformer(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), langs=torch.from_numpy(langs)
        ).last_hidden_state.numpy()
    assert np.max(np.abs(_flax_logits(model, ids, mask, langs) - expected)) <= FP32_TOL


# ------------------------------------------------------------------------------------------ loading without torch

_NO_TORCH = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    import numpy as np
    import jax.numpy as jnp
    from xlm_flax import XLMWithLMHeadModel
    model = XLMWithLMHeadModel.from_pretrained(sys.argv[1])
    ids, mask, langs = (jnp.asarray(a) for a in np.load(sys.argv[2]).values())
    np.save(sys.argv[3], np.asarray(model(ids, mask, langs).logits))
    assert sys.modules["torch"] is None
    """
)


@requires_torch  # the logits are compared with PyTorch's
def test_converted_directory_loads_without_torch(lm, tmp_path):
    directory, torch_model, (ids, mask, langs) = lm
    (tmp_path / "tok").mkdir()
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / "tok" / name).write_text(f"{name} contents\n")
    for name in os.listdir(directory):
        os.link(os.path.join(directory, name), tmp_path / "tok" / name)
    convert_checkpoint(tmp_path / "tok", tmp_path / "converted")
    assert sorted(os.listdir(tmp_path / "converted")) == [
        "config.json",
        "merges.txt",
        "model.safetensors",
        "vocab.json",
    ]
    assert (tmp_path / "converted" / "vocab.json").read_text() == "vocab.json contents\n"
    np.savez(tmp_path / "inputs.npz", ids=ids, mask=mask, langs=langs)
    script = tmp_path / "no_torch.py"
    script.write_text(_NO_TORCH)
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "converted"), str(tmp_path / "inputs.npz"), str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = np.load(tmp_path / "o.npy")
    assert np.max(np.abs(got - _torch_logits(torch_model, ids, mask, langs))) <= FP32_TOL


# ------------------------------------------------------------------------------------------ refusals and atomicity


def _rewrite(src_dir, dst_dir, change):
    """Copies a transformers safetensors checkpoint with `change(dict of arrays)` applied."""
    os.makedirs(dst_dir)
    tensors = load_file(os.path.join(src_dir, "model.safetensors"))
    change(tensors)
    save_file(tensors, os.path.join(dst_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(src_dir, "config.json")) as f:
        config = f.read()
    with open(os.path.join(dst_dir, "config.json"), "w") as f:
        f.write(config)


def test_missing_unexpected_and_misshaped_tensors_are_all_listed(lm, tmp_path):
    directory, _, _ = lm

    def damage(t):
        del t["transformer.attentions.1.k_lin.weight"]
        del t["pred_layer.proj.bias"]
        t["transformer.bogus.weight"] = np.zeros(3, np.float32)
        t["transformer.ffns.2.lin1.bias"] = np.zeros(7, np.float32)
        t["transformer.layer_norm_emb.weight"] = np.zeros((30, 1), np.float32)

    _rewrite(directory, tmp_path / "bad", damage)
    with pytest.raises(CheckpointError) as info:
        convert_checkpoint(tmp_path / "bad", tmp_path / "dst")
    message = str(info.value)
    for name in (
        "transformer.attentions.1.k_lin.weight",
        "pred_layer.proj.bias",
        "transformer.bogus.weight",
        "transformer.ffns.2.lin1.bias",
        "transformer.layer_norm_emb.weight",
    ):
        assert name in message, name
    assert "[7]" in message and "[120]" in message  # checkpoint shape and the shape the config wants
    assert not (tmp_path / "dst").exists() and not _leftovers(tmp_path)
    with pytest.raises(CheckpointError) as info:
        XLMWithLMHeadModel.from_pretrained(tmp_path / "bad")
    for name in ("transformer.attentions.1.k_lin.weight", "transformer.ffns.2.lin1.bias"):
        assert name in str(info.value)


@requires_torch
def test_existing_destination_needs_force(lm, tmp_path):
    directory, torch_model, (ids, mask, langs) = lm
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("old")
    with pytest.raises(InputError, match="--force"):
        convert_checkpoint(directory, dst)
    assert os.listdir(dst) == ["keep.txt"]
    convert_checkpoint(directory, dst, force=True)
    assert sorted(os.listdir(dst)) == ["config.json", "model.safetensors"]
    assert not _leftovers(tmp_path)
    model = XLMWithLMHeadModel.from_pretrained(dst)
    assert np.max(np.abs(_flax_logits(model, ids, mask, langs) - _torch_logits(torch_model, ids, mask, langs))) <= (
        FP32_TOL
    )
    (tmp_path / "empty").mkdir()
    convert_checkpoint(directory, tmp_path / "empty")  # an empty directory is fine without force


@pytest.mark.parametrize("force", [False, True])
def test_conversion_failing_midway_leaves_nothing(lm, tmp_path, monkeypatch, force):
    directory, _, _ = lm
    dst = tmp_path / "dst"
    if force:
        dst.mkdir()
        (dst / "keep.txt").write_text("old")
    real_read = SafetensorsSource.read
    count = {"n": 0}

    def failing_read(self, name):
        count["n"] += 1
        if count["n"] == 10:
            raise OSError("disk went away")
        return real_read(self, name)

    monkeypatch.setattr(SafetensorsSource, "read", failing_read)
    with pytest.raises(OSError, match="disk went away"):
        convert_checkpoint(directory, dst, force=force)
    assert count["n"] == 10
    assert not _leftovers(tmp_path)
    if force:
        assert os.listdir(dst) == ["keep.txt"]  # the old directory is untouched
    else:
        assert not dst.exists()


# ------------------------------------------------------------------------------------------------ peak memory

MEDIUM = dict(vocab_size=5003, emb_dim=512, n_layers=4, n_heads=8, max_position_embeddings=64)

_PEAK = textwrap.dedent(
    """
    import json, sys
    from xlm_flax import XLMWithLMHeadModel

    def rss_and_peak():  # kB, from the kernel: resident now, and the high-water mark since the last reset
        fields = dict(line.split(":", 1) for line in open("/proc/self/status") if line.startswith("Vm"))
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024

    XLMWithLMHeadModel.from_pretrained(sys.argv[1])  # warm up: imports, first device_put
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark to the current resident size
    before, _ = rss_and_peak()
    model = XLMWithLMHeadModel.from_pretrained(sys.argv[2])
    after, peak = rss_and_peak()
    print(json.dumps({"peak_extra": peak - before, "kept": after - before}))
    """
)


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    directory, _ = build_checkpoint(tmp_path_factory.mktemp("medium"), **MEDIUM)
    # Every parameter once: the file holds each, the tied output matrix once (as torch's parameters() lists it).
    n_bytes = sum(a.size * 4 for a in load_file(os.path.join(directory, "model.safetensors")).values())
    return directory, n_bytes


def test_conversion_peak_memory_is_about_one_stacked_tensor(medium, tmp_path):
    import tracemalloc

    directory, n_bytes = medium
    largest = 4 * 4 * MEDIUM["emb_dim"] * 4 * MEDIUM["emb_dim"]  # one stacked ffn kernel [layers, 512, 2048]
    tracemalloc.start()
    try:
        convert_checkpoint(directory, tmp_path / "out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A non-streaming conversion holds at least every parameter once (n_bytes); streaming holds about one stacked
    # tensor plus one layer's slice.
    assert n_bytes > 3 * largest  # the bound below is meaningful for this model
    print(f"conversion peak {peak} B, largest stacked tensor {largest} B, parameters {n_bytes} B")
    assert peak < 1.5 * largest, (peak, largest, n_bytes)


def test_loading_peak_memory_is_about_one_copy(medium, lm, tmp_path):
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak resident size")
    directory, n_bytes = medium
    script = tmp_path / "peak.py"
    script.write_text(_PEAK)
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, str(script), lm[0], directory], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"loading: peak {measured['peak_extra']} B above the start, kept {measured['kept']} B; params {n_bytes} B")
    # The loaded model itself is one copy (n_bytes); streaming adds about one stacked tensor on top, where reading
    # the whole file first would add one to two more copies.
    assert measured["kept"] > 0.9 * n_bytes  # the measurement sees the model
    assert measured["peak_extra"] < 1.75 * n_bytes, (measured, n_bytes)


# ------------------------------------------------------------------------------------------ sharded loading by slices


def test_sharded_load_of_a_native_checkpoint_reads_each_shard_once(lm, tmp_path, monkeypatch):
    from xlm_flax import make_mesh
    from xlm_flax.checkpoints.safetensors_io import SafetensorsReader

    directory, _, _ = lm
    XLMWithLMHeadModel.from_pretrained(directory).save_pretrained(tmp_path / "native")
    reference = _params(XLMWithLMHeadModel.from_pretrained(tmp_path / "native"))
    whole, sliced = [], []
    real_read, real_slice = SafetensorsReader.read, SafetensorsReader.read_slice

    def spy_read(self, name):
        whole.append(name)
        return real_read(self, name)

    def spy_slice(self, name, index):
        sliced.append((name, tuple((s.start, s.stop) for s in index)))
        return real_slice(self, name, index)

    monkeypatch.setattr(SafetensorsReader, "read", spy_read)
    monkeypatch.setattr(SafetensorsReader, "read_slice", spy_slice)
    model = XLMWithLMHeadModel.from_pretrained(tmp_path / "native", mesh=make_mesh(data=4, model=2))
    assert whole == []  # no tensor is read whole
    for name, expected in reference.items():
        np.testing.assert_array_equal(_params(model)[name], expected, err_msg=name)
        slices = [index for n, index in sliced if n == name]
        # One read per distinct shard (the four data-parallel replicas share it), together covering the tensor once.
        assert len(slices) == len(set(slices)), (name, slices)
        sizes = [
            int(np.prod([(stop or d) - (start or 0) for (start, stop), d in zip(i, expected.shape)])) for i in slices
        ]
        assert sum(sizes) == expected.size, (name, slices)
    # ffns.lin1.kernel [layers, embed 30, mlp 120]: its hidden units split over the model axis, read as two halves.
    halves = sorted(index[2] for n, index in sliced if n == "transformer.ffns.lin1.kernel")
    assert halves == [(0, 60), (60, 120)], halves


def test_mismatch_error_keeps_what_was_found(base, lm, tmp_path):
    from xlm_flax.checkpoints.plan import TensorMismatchError

    with pytest.raises(TensorMismatchError) as info:
        XLMWithLMHeadModel.from_pretrained(base[0], strict=True)
    assert info.value.missing_head == ("pred_layer.proj.bias",)
    assert info.value.missing_encoder == () and info.value.mismatched == () and info.value.unexpected == ()

    def damage(t):
        t["transformer.ffns.2.lin1.bias"] = np.zeros(7, np.float32)
        del t["transformer.attentions.1.k_lin.weight"]

    _rewrite(lm[0], tmp_path / "bad", damage)
    with pytest.raises(TensorMismatchError) as info:
        XLMWithLMHeadModel.from_pretrained(tmp_path / "bad", strict=True)
    assert info.value.missing_head == ()
    assert info.value.missing_encoder == ("transformer.attentions.1.k_lin.weight",)
    assert [m.split(":")[0] for m in info.value.mismatched] == ["transformer.ffns.2.lin1.bias"]
