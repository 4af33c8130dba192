"""One test per defect of issue 18 (hostile files, bad arguments, interrupted writes): each input is refused with
one of `xlm_flax.errors` naming the problem, never loaded as silent garbage, and every exit path of a write leaves
either the complete output or nothing."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading

import numpy as np
import pytest
from helpers import build_checkpoint, build_test_tokenizer, optional_import, raw_safetensors_file, requires_torch

from xlm_flax.checkpoints.files import atomic_directory, check_destination, sweep_leftovers
from xlm_flax.checkpoints.safetensors_io import SafetensorsReader
from xlm_flax.checkpoints.sources import open_weights
from xlm_flax.config import XLMConfig
from xlm_flax.errors import CheckpointError, ConfigError, InputError
from xlm_flax.validation import check_tokenizer_files, check_tokenizer_fits

torch = optional_import("torch")

TINY = dict(vocab_size=41, emb_dim=30, n_layers=2, n_heads=5, max_position_embeddings=13)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "field, value",
    [
        ("pad_index", "2"),
        ("dropout", "abc"),
        ("lang2id", ["en"]),
        ("id2lang", ["en"]),
        ("lang2id", {"en": "x"}),
        ("emb_dim", "32"),
        ("causal", "yes"),
        ("summary_type", 3),
        ("num_labels", "2"),
        ("init_std", None),
        ("architectures", "XLMModel"),
        ("id2label", 5),
        ("eos_index", []),
        ("dropout", float("nan")),
        ("dropout", 2.0),
        ("layer_norm_eps", -1),
        ("start_n_top", -1),
        ("vocab_size", 2**40),
        ("max_position_embeddings", True),
    ],
)
def test_config_field_of_wrong_type_or_range_is_named(field, value):
    with pytest.raises(ConfigError, match=f"config field {field}"):
        XLMConfig.from_dict({**TINY, field: value})


def test_config_architectures_null_is_no_architecture():
    # transformers writes `"architectures": null` for an unsaved config; it must not be a bare TypeError.
    assert XLMConfig.from_dict({**TINY, "architectures": None}).architectures == ()


@pytest.mark.parametrize("n_langs, lang_id", [(1, 7), (2, 5), (3, -1)])
def test_config_lang_id_outside_n_langs_is_refused(n_langs, lang_id):
    with pytest.raises(ConfigError, match="lang_id"):
        XLMConfig.from_dict({**TINY, "n_langs": n_langs, "lang_id": lang_id})


def test_config_numbers_are_normalised():
    config = XLMConfig.from_dict({**TINY, "dropout": 0, "causal": 1})
    assert config.dropout == 0.0 and isinstance(config.dropout, float) and config.causal is True


# ------------------------------------------------------------------------------------------------- safetensors


def _header(**entry):
    return {"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], **entry}}


@pytest.mark.parametrize(
    "header, problem",
    [
        (_header(data_offsets=[-8, 0]), "data_offsets"),
        (_header(data_offsets=[0.0, 8.0]), "data_offsets"),
        (_header(data_offsets=[True, 8]), "data_offsets"),
        ({**_header(), "u": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, "overlaps"),
        ({"__metadata__": {"a": 1}, **_header()}, "__metadata__"),
        ({"__metadata__": ["a"], **_header()}, "__metadata__"),
        (_header(shape="2"), "shape"),
        ({"t": 5}, "not an object"),
        ([1, 2], "not an object"),
    ],
)
def test_safetensors_header_is_checked_like_the_reference(tmp_path, header, problem):
    path = raw_safetensors_file(tmp_path, header, b"\0" * 8)
    with pytest.raises(CheckpointError, match=problem):
        SafetensorsReader(path)


# ------------------------------------------------------------------------------------------------ index files


@pytest.mark.parametrize(
    "index, problem",
    [
        ("[1]", "weight_map"),
        ("{", "not a JSON object"),
        (json.dumps({"weight_map": [1]}), "weight_map"),
        (json.dumps({"weight_map": {}}), "no shards"),
        (json.dumps({"weight_map": {"a": "../outside.safetensors"}}), "inside the model directory"),
        (json.dumps({"weight_map": {"a": "/etc/passwd"}}), "inside the model directory"),
        (json.dumps({"weight_map": {"a": "config.json"}}), "not a .safetensors file"),
    ],
)
def test_index_file_shape_and_shard_names(tmp_path, index, problem):
    model = tmp_path / "model"
    model.mkdir()
    raw_safetensors_file(tmp_path, {}, b"")  # a valid file just outside the model directory
    os.replace(tmp_path / "t.safetensors", tmp_path / "outside.safetensors")
    (model / "model.safetensors.index.json").write_text(index)
    with pytest.raises(CheckpointError, match=problem):
        open_weights(model)


def test_tensor_in_two_shards_is_refused(tmp_path):
    entry = {"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}
    for shard in ("a", "b"):
        os.replace(raw_safetensors_file(tmp_path, entry, b"\1"), tmp_path / f"{shard}.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "a.safetensors", "v": "b.safetensors"}})
    )
    with pytest.raises(CheckpointError, match="in two shards"):
        open_weights(tmp_path)


# ------------------------------------------------------------------------------------------------ torch files


def _torch_file(path, kind):
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        torch.save({"a": torch.ones(100)}, path)
        path.write_bytes(path.read_bytes()[:500])
    elif kind == "text":
        path.write_text("hello world")
    elif kind == "complex":
        torch.save({"a": torch.ones(3, dtype=torch.complex64)}, path)
    elif kind == "sparse":
        torch.save({"a": torch.ones(3).to_sparse()}, path)
    elif kind == "float8":
        torch.save({"a": torch.ones(3).to(torch.float8_e4m3fn)}, path)
    elif kind == "list":
        torch.save([torch.ones(3)], path)


@requires_torch
@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "complex", "sparse", "float8", "list"])
def test_unreadable_torch_file_is_one_error_naming_it(tmp_path, kind):
    path = tmp_path / "pytorch_model.bin"
    _torch_file(path, kind)
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        open_weights(tmp_path)


@requires_torch
def test_torch_file_with_code_is_refused_unpickled(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    torch.save({"a": Payload()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="could run code"):
        open_weights(tmp_path)
    assert not marker.exists()


# -------------------------------------------------------------------------------------------- tokenizer files


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    pytest.importorskip("transformers", reason="the tokenizer is transformers' XLMTokenizer")
    directory = tmp_path_factory.mktemp("tokenizer")
    build_test_tokenizer(directory)
    return directory


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("vocab.json", b"{", "not valid JSON"),
        ("vocab.json", b"[1, 2]", "not a JSON object"),
        ("vocab.json", b'{"a": "1"}', "not a non-negative integer"),
        ("vocab.json", b'{"a": 1, "b": 1}', "two tokens"),
        ("vocab.json", b"\xff\xfe", "not UTF-8"),
        ("merges.txt", b"a b\nlonely\n", "line 2"),
        ("merges.txt", b"\xff a\n", "not UTF-8"),
        ("tokenizer_config.json", b"[]", "not a JSON object"),
        ("tokenizer_config.json", b"{", "not valid JSON"),
    ],
)
def test_corrupt_tokenizer_file_is_named(tokenizer_dir, tmp_path, name, content, problem):
    from xlm_flax.tokenization import load_tokenizer

    for file in os.listdir(tokenizer_dir):
        (tmp_path / file).write_bytes((tokenizer_dir / file).read_bytes())
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CheckpointError, match=problem) as error:
        load_tokenizer(tmp_path)
    assert name in str(error.value)


def test_sound_tokenizer_files_pass(tokenizer_dir):
    check_tokenizer_files(tokenizer_dir)


def test_tokenizer_larger_than_the_vocabulary_is_refused():
    class Tokenizer:
        def __len__(self):
            return 50

    check_tokenizer_fits(Tokenizer(), 50)
    with pytest.raises(ConfigError, match="50 tokens but the model's vocab_size is 41"):
        check_tokenizer_fits(Tokenizer(), 41)


def test_embedder_refuses_a_tokenizer_larger_than_the_model(tokenizer_dir):
    from flax import nnx

    from xlm_flax import XLMModel
    from xlm_flax.inference.embeddings import Embedder
    from xlm_flax.tokenization import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    model = XLMModel(XLMConfig(**{**TINY, "vocab_size": len(tokenizer) - 1}), rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="vocab_size"):
        Embedder(model, tokenizer)


# ----------------------------------------------------------------------------------------------------- labels


@pytest.mark.parametrize("bad", [-1, -5, 5, 7])
def test_labels_outside_the_classes_raise_or_give_nan(bad):
    import jax
    import jax.numpy as jnp

    from xlm_flax.model.losses import cross_entropy

    logits = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 5)), jnp.float32)
    labels = jnp.array([[1, bad, -100], [0, 4, 1]])
    with pytest.raises(InputError, match=r"out of range .*\[0, 5\)"):
        cross_entropy(logits, labels)
    assert np.isnan(float(jax.jit(cross_entropy)(logits, labels)))  # under jit nothing can raise: NaN, not a wrong loss
    good = jnp.array([[1, 2, -100], [0, 4, 1]])
    assert np.isfinite(float(jax.jit(cross_entropy)(logits, good)))


# ------------------------------------------------------------------------------------------------------ the CLI


def _main(argv, capsys):
    from xlm_flax.cli.main import main

    status = main(argv)
    return status, capsys.readouterr().err


@pytest.mark.parametrize("buckets", ["a,b", "", "1", "32,,64"])
def test_bad_buckets_exit_2_with_one_line(tmp_path, capsys, buckets):
    status, err = _main(
        ["train", str(tmp_path), str(tmp_path / "t.txt"), str(tmp_path / "o"), "--buckets", buckets], capsys
    )
    assert status == 2 and len(err.strip().splitlines()) == 1 and "--buckets" in err


def test_closed_stdin_exits_2_with_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "stdin", None)
    status, err = _main(["fill-mask", str(tmp_path)], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "standard input is closed" in err


def test_train_refuses_an_unusable_output_directory_before_any_work(tmp_path):
    from xlm_flax import TrainConfig
    from xlm_flax.training.trainer import Trainer

    (tmp_path / "out").write_text("a file")
    with pytest.raises(InputError, match="not a directory"):
        Trainer(TrainConfig(model=str(tmp_path), train_file=str(tmp_path / "t.txt"), output_dir=str(tmp_path / "out")))
    (tmp_path / "out2").mkdir()
    (tmp_path / "out2" / "checkpoints").write_text("a file")
    with pytest.raises(InputError, match="checkpoints is not a directory"):
        Trainer(TrainConfig(model=str(tmp_path), train_file=str(tmp_path / "t.txt"), output_dir=str(tmp_path / "out2")))


# ----------------------------------------------------------------------------------------------- atomic writes


def test_failed_final_rename_leaves_nothing(tmp_path):
    destination = tmp_path / "out"
    with pytest.raises(InputError, match="another process"):
        with atomic_directory(destination) as tmp:
            (tmp_path / "out").mkdir()  # a concurrent run finished first
            (destination / "theirs").write_text("x")
            (tmp_path / "mine").write_text(tmp)
    assert sorted(os.listdir(tmp_path)) == ["mine", "out"] and os.listdir(destination) == ["theirs"]


def test_dangling_symlink_destination_is_refused(tmp_path):
    os.symlink(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(InputError, match="symbolic link to nothing"):
        check_destination(tmp_path / "out")


def test_output_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_directory(tmp_path / "out") as tmp:
            with open(os.path.join(tmp, "f"), "w") as f:
                f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "out").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "f").st_mode) == 0o640
    assert os.listdir(tmp_path / "out") == ["f"]  # the owner file does not travel


@pytest.mark.parametrize("where", ["same", "inside"])
def test_force_refuses_a_destination_holding_the_source(tmp_path, where):
    destination = tmp_path / "dst"
    source = destination if where == "same" else destination / "src"
    source.mkdir(parents=True)
    (source / "config.json").write_text("{}")
    with pytest.raises(InputError, match="delete the source"):
        with atomic_directory(destination, force=True, source=source):
            pass
    assert (source / "config.json").read_text() == "{}"


def test_leftovers_of_a_killed_run_are_swept_and_an_interrupted_replacement_restored(tmp_path):
    code = (
        "import os, sys\nfrom xlm_flax.checkpoints.files import atomic_directory\n"
        "with atomic_directory(sys.argv[1]) as tmp:\n    open(os.path.join(tmp, 'half'), 'w').close()\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "out")], env={**os.environ, "PYTHONPATH": ROOT}, check=False
    )
    assert killed.returncode == -signal.SIGKILL
    (leftover,) = [n for n in os.listdir(tmp_path) if n.startswith(".out.tmp-")]
    owner = json.loads((tmp_path / leftover / ".xlm-flax-owner").read_text())
    # A replacement killed between its two renames: the old contents wait in .keep.old-*/previous.
    old = tmp_path / ".keep.old-abc"
    (old / "previous").mkdir(parents=True)
    (old / "previous" / "weights").write_text("old")
    (old / ".xlm-flax-owner").write_text(json.dumps(owner))  # the same dead process
    assert sweep_leftovers(tmp_path / "keep", log=lambda line: None) == [str(old)]
    assert (tmp_path / "keep" / "weights").read_text() == "old"
    with atomic_directory(tmp_path / "out") as tmp:
        open(os.path.join(tmp, "whole"), "w").close()
    assert sorted(os.listdir(tmp_path)) == ["keep", "out"] and os.listdir(tmp_path / "out") == ["whole"]


def test_live_runs_are_left_alone(tmp_path):
    with atomic_directory(tmp_path / "out"):
        # Another process of this host that is alive: its directory must not be swept.
        code = (
            "import sys, time\nfrom xlm_flax.checkpoints.files import atomic_directory\n"
            "with atomic_directory(sys.argv[1]):\n    print('in', flush=True); time.sleep(30)\n"
        )
        other = subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "out2")],
            env={**os.environ, "PYTHONPATH": ROOT},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert other.stdout.readline() == "in\n"
            lines = []
            assert sweep_leftovers(tmp_path / "out2", log=lines.append) == []
            assert "still in progress" in lines[0]
        finally:
            other.terminate()
            other.wait()


# ----------------------------------------------------------------------------------------------------- signals


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory, _ = build_checkpoint(tmp_path_factory.mktemp("ckpt"), **TINY)
    return directory


# Runs `xlm-flax convert SRC DST`, stopping after the weights are written (inside the atomic block) to say READY.
_CONVERT = """
import sys, time
from xlm_flax.checkpoints import convert
from xlm_flax.cli.main import main
write = convert.NativeWeights.write
def slow_write(self, directory):
    write(self, directory)
    print("READY", flush=True)
    time.sleep(60)
convert.NativeWeights.write = slow_write
sys.exit(main(["convert", sys.argv[1], sys.argv[2]]))
"""


# SIGHUP and SIGINT take the same path as SIGTERM (`terminate_like_interrupt`); one subprocess each is too slow.
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_signal_mid_convert_leaves_no_destination_and_nothing_after_the_next_run(checkpoint, tmp_path, signum):
    destination = tmp_path / "dst"
    process = subprocess.Popen(
        [sys.executable, "-c", _CONVERT, checkpoint, str(destination)],
        env={**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline() == "READY\n", process.stderr.read()
        process.send_signal(signum)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert not destination.exists()
    if signum == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
        assert [n for n in os.listdir(tmp_path) if n.startswith(".dst.tmp-")]  # nothing could clean up ...
        from xlm_flax.checkpoints.convert import convert_checkpoint

        convert_checkpoint(checkpoint, destination)  # ... until the next run
        assert sorted(os.listdir(tmp_path)) == ["dst"]
    else:
        assert process.returncode == 128 + signum, err
        assert err.strip().splitlines()[-1].startswith("xlm-flax: interrupted")
        assert os.listdir(tmp_path) == []


def test_force_convert_onto_its_source_keeps_the_source(checkpoint, capsys):
    before = sorted(os.listdir(checkpoint))
    status, err = _main(["convert", checkpoint, checkpoint, "--force"], capsys)
    assert status == 2 and "delete the source" in err and len(err.strip().splitlines()) == 1
    assert sorted(os.listdir(checkpoint)) == before


def test_interrupted_embed_joins_the_prefetch_thread_and_waits_for_the_device(tokenizer_dir, monkeypatch):
    import tqdm.auto
    from flax import nnx

    from xlm_flax import XLMModel
    from xlm_flax.inference.embeddings import Embedder
    from xlm_flax.tokenization import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    model = XLMModel(XLMConfig(**{**TINY, "vocab_size": len(tokenizer)}), rngs=nnx.Rngs(0))
    embedder = Embedder(model, tokenizer)
    dispatched = []
    call = embedder._call
    embedder._call = lambda key, build, args: dispatched.append(call(key, build, args)) or dispatched[-1]

    class InterruptedBar(tqdm.auto.tqdm):
        def update(self, n=1):  # Ctrl-C arrives in the consumer loop, outside the stream's generator
            raise KeyboardInterrupt

    monkeypatch.setattr(tqdm.auto, "tqdm", InterruptedBar)
    # Only this call's thread counts: other tests in this process may still be tearing their own down.
    before = {t for t in threading.enumerate() if t.name == "xlm-prefetch"}
    with pytest.raises(KeyboardInterrupt):
        embedder.encode(["hello world"] * 64, batch_size=2, show_progress_bar=False)
    # The generator was closed at once (not at interpreter shutdown): its thread is joined, the device idle.
    assert not [t for t in threading.enumerate() if t.name == "xlm-prefetch" and t.is_alive() and t not in before]
    assert len(dispatched) == 2  # the batch being consumed and the next one, already dispatched
    assert all(a.is_ready() for a in jax_leaves(dispatched))


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


# ------------------------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def train_model(tmp_path_factory):
    """A model directory (config + test tokenizer, no weights: --from-scratch) and a training file."""
    pytest.importorskip("transformers", reason="the tokenizer is transformers' XLMTokenizer")
    directory = tmp_path_factory.mktemp("train")
    vocab_size = build_test_tokenizer(directory)
    config = XLMConfig(**{**TINY, "vocab_size": vocab_size})
    (directory / "config.json").write_text(config.to_json_string())
    (directory / "train.txt").write_text("hello world\nthe cat\n" * 8)
    return directory


def test_train_buckets_longer_than_the_model_exit_2(train_model, tmp_path, capsys):
    argv = ["train", str(train_model), str(train_model / "train.txt"), str(tmp_path / "out"), "--from-scratch"]
    status, err = _main([*argv, "--buckets", "8,32", "--batch-size", "2", "--data", "1"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "max_position_embeddings=13" in err and "--buckets" in err


def test_train_refuses_a_tokenizer_larger_than_the_model(train_model, tmp_path):
    from xlm_flax import TrainConfig
    from xlm_flax.training.trainer import Trainer

    small = tmp_path / "small"
    small.mkdir()
    for name in os.listdir(train_model):
        (small / name).write_bytes((train_model / name).read_bytes())
    config = XLMConfig.from_json_file(small / "config.json")
    (small / "config.json").write_text(config.replace(vocab_size=config.vocab_size - 1).to_json_string())
    with pytest.raises(ConfigError, match="vocab_size"):
        Trainer(
            TrainConfig(
                model=str(small), train_file=str(small / "train.txt"), output_dir=str(tmp_path / "o"),
                from_scratch=True, buckets=(8,), batch_size=2, mesh_shape=(1, 1),
            )
        )  # fmt: skip


def test_train_closes_the_checkpoint_manager_when_a_step_fails(train_model, tmp_path, monkeypatch):
    from xlm_flax import TrainConfig
    from xlm_flax.training import trainer as trainer_module

    closed, close = [], trainer_module.Trainer.close

    def recording_close(self):
        closed.append(self._checkpoints is not None)
        close(self)

    monkeypatch.setattr(trainer_module.Trainer, "close", recording_close)

    def failing_train(self, steps=None, **kwargs):
        self._manager()  # the manager (and its threads) exist, as in a run that saved once
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trainer_module.Trainer, "train", failing_train)
    config = TrainConfig(
        model=str(train_model), train_file=str(train_model / "train.txt"), output_dir=str(tmp_path / "o"),
        from_scratch=True, buckets=(8,), batch_size=2, mesh_shape=(1, 1), steps=1,
    )  # fmt: skip
    with pytest.raises(OSError, match="No space"):
        trainer_module.train(config)
    assert closed == [True]


def test_corrupt_orbax_checkpoint_on_resume_is_one_error(train_model, tmp_path):
    from xlm_flax import TrainConfig
    from xlm_flax.training.trainer import Trainer

    config = TrainConfig(
        model=str(train_model), train_file=str(train_model / "train.txt"), output_dir=str(tmp_path / "o"),
        from_scratch=True, buckets=(8,), batch_size=2, mesh_shape=(1, 1), steps=1,
    )  # fmt: skip
    trainer = Trainer(config)
    try:
        trainer.save_checkpoint()
    finally:
        trainer.close()
    step_dir = tmp_path / "o" / "checkpoints" / "0"
    damaged = 0
    for root, _, files in os.walk(step_dir / "state"):
        for name in files:
            with open(os.path.join(root, name), "r+b") as f:
                f.truncate(3)
            damaged += 1
    assert damaged
    again = Trainer(config)
    try:
        with pytest.raises(CheckpointError, match="step 0 cannot be restored.*--no-resume"):
            again.restore_checkpoint()
    finally:
        again.close()


def test_embed_sweeps_temporary_files_of_dead_runs(tmp_path):
    from xlm_flax.cli.inference import _sweep_embed_leftovers

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f".embed-{int(dead.stdout)}-abc.npy").write_bytes(b"half")
    (tmp_path / f".embed-{os.getpid()}-abc.npy").write_bytes(b"live")  # this process: alive, left alone
    (tmp_path / "keep.npy").write_bytes(b"output")
    _sweep_embed_leftovers(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [f".embed-{os.getpid()}-abc.npy", "keep.npy"]
