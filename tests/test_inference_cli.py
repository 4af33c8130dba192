"""The `xlm-flax` inference commands, run as real subprocesses: fill-mask (arguments and stdin), embed (file and
stdin), info, demo, and every bad input exiting 2 with one line on stderr."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import build_checkpoint, build_test_tokenizer, requires_torch

from xlm_flax import Embedder, FillMask
from xlm_flax.checkpoints.convert import convert_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASK = "<special1>"
MAX_POS = 24


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device: faster start-up
    env.update(PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def _start(*args, stdin: bytes | None = None, **env) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "xlm_flax", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(**env),
    )
    process._stdin_bytes = stdin or b""  # written when finished
    return process


def _finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(process._stdin_bytes, timeout=600)
    return process.returncode, out.decode(), err.decode()


def _run(*args, stdin: bytes | None = None, **env) -> tuple[int, str, str]:
    return _finish(_start(*args, stdin=stdin, **env))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A native checkpoint directory (converted with the tokenizer files copied), as users would have; converted
    from one transformers wrote, or without torch from one our exporter wrote in the same layout."""
    source = tmp_path_factory.mktemp("torch")
    vocab_size = build_test_tokenizer(source, model_max_length=MAX_POS)
    build_checkpoint(source, vocab_size=vocab_size, max_position_embeddings=MAX_POS)
    destination = tmp_path_factory.mktemp("native") / "model"
    convert_checkpoint(source, destination)
    return str(destination)


def test_fill_mask_arguments_json(model_dir):
    texts = [f"the cat sat on the {MASK} .", f"paris is the {MASK} of {MASK} ."]
    code, out, err = _run("fill-mask", model_dir, *texts, "--top-k", "3", "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    expected = FillMask.from_pretrained(model_dir)(texts, top_k=3)
    assert [line["input"] for line in lines] == texts
    for line, want in zip(lines, expected):
        got = line["predictions"]
        flat_got = got if isinstance(got[0], dict) else [p for per_mask in got for p in per_mask]
        flat_want = want if isinstance(want[0], dict) else [p for per_mask in want for p in per_mask]
        assert [p["token"] for p in flat_got] == [p["token"] for p in flat_want]
        np.testing.assert_allclose([p["score"] for p in flat_got], [p["score"] for p in flat_want], atol=1e-6)


def test_fill_mask_stdin_and_embed_file_and_stdin(model_dir, tmp_path):
    sentences = ["the cat sat on the mat .", "", "hello world", "paris is a big city"]
    text = ("\n".join(sentences) + "\n").encode()
    (tmp_path / "in.txt").write_bytes(text)
    processes = {
        "fill": _start("fill-mask", model_dir, stdin=f"a {MASK} .\n\nthe {MASK} sat\n".encode()),
        "file": _start("embed", model_dir, "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "a.npy")),
        "stdin": _start(
            "embed", model_dir, "--input", "-", "--output", str(tmp_path / "b.npy"), "--pooling", "max",
            "--layer=-1,-2", "--normalize", "--batch-size", "2", stdin=text,
        ),
    }  # fmt: skip
    results = {name: _finish(p) for name, p in processes.items()}
    for name, (code, _, err) in results.items():
        assert code == 0, (name, err)
    fill_out = results["fill"][1].splitlines()
    assert fill_out[0] == f"a {MASK} ." and fill_out[6] == f"the {MASK} sat" and len(fill_out) == 12
    assert "wrote" in results["file"][1]
    embedder = Embedder.from_pretrained(model_dir)
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), embedder.encode(sentences), atol=1e-6)
    maxed = Embedder(embedder.model, embedder.tokenizer, pooling="max")
    expected = maxed.encode(sentences, layer=[-1, -2], normalize=True)
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), expected, atol=1e-6)


def test_info(model_dir):
    code, out, err = _run("info", model_dir)
    assert code == 0, err
    assert "XLMWithLMHeadModel" in out and "3 layers, emb_dim 30" in out
    assert "mask token <special1> (id 5)" in out and "devices: 1 x cpu" in out
    n_params = int(out.split("parameters: ")[1].split()[0].replace(",", ""))
    embedder = Embedder.from_pretrained(model_dir)
    encoder = sum(int(np.prod(v.shape)) for v in __import__("jax").tree.leaves(embedder.state))
    assert n_params == encoder + embedder.config.vocab_size  # the encoder plus the LM head's bias (tied weights)


def test_bad_inputs_exit_2_with_one_line(model_dir, tmp_path):
    long_line = "the cat " * 20
    # Each bad input of the issue once (the API tests cover the variants); every case starts a Python process.
    (tmp_path / "latin1.txt").write_bytes("fine\nd\xe9j\xe0 vu\n".encode("latin-1"))
    (tmp_path / "long.txt").write_text(long_line + "\n")
    (tmp_path / "empty.txt").write_text("")
    broken = {}
    for name in ("config.json", "model.safetensors", "vocab.json"):
        broken[name] = str(tmp_path / name.replace(".", "_"))
        shutil.copytree(model_dir, broken[name])
        os.unlink(os.path.join(broken[name], name))
    out = str(tmp_path / "out.npy")
    cases = {
        # name: (arguments, stdin, extra environment, text the one stderr line must contain)
        "no mask": (["fill-mask", model_dir, "the cat sat ."], None, {}, MASK),
        "too long": (["embed", model_dir, "--input", str(tmp_path / "long.txt"), "--output", out, "--no-truncate"],
                     None, {}, "max_position_embeddings"),
        "not utf-8": (["embed", model_dir, "--input", str(tmp_path / "latin1.txt"), "--output", out], None, {},
                      "latin1.txt: line 2 is not valid UTF-8"),
        "missing config": (["fill-mask", broken["config.json"], f"a {MASK}"], None, {}, "config.json"),
        "missing weights": (["embed", broken["model.safetensors"], "--input", "-", "--output", out], b"a\n", {},
                            "model.safetensors"),
        "missing tokenizer": (["fill-mask", broken["vocab.json"], f"a {MASK}"], None, {}, "vocab.json"),
        "bad layer": (["embed", model_dir, "--input", "-", "--output", out, "--layer", "top"], b"a\n", {}, "--layer"),
    }  # fmt: skip
    # Successes started alongside: a long input with truncation allowed (one warning line), an empty file.
    truncating = _start("embed", model_dir, "--input", str(tmp_path / "long.txt"), "--output", out + ".long.npy")
    empty = _start("embed", model_dir, "--input", str(tmp_path / "empty.txt"), "--output", out + ".empty.npy")
    processes = {}
    for name, (args, stdin, env, _) in cases.items():
        processes[name] = subprocess.Popen(
            [sys.executable, "-m", "xlm_flax", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**_env(), **env},
        )
        processes[name]._stdin_bytes = stdin or b""
    for name, process in processes.items():
        code, _, err = _finish(process)
        assert code == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, (name, err)
        assert cases[name][3] in lines[0] and "Traceback" not in err, (name, err)
    assert not os.path.exists(out)

    code, _, err = _finish(truncating)
    assert code == 0 and len(err.strip().splitlines()) == 1 and "truncated" in err, err
    assert np.load(out + ".long.npy").shape == (1, 30)
    code, _, err = _finish(empty)
    assert code == 0, err
    assert np.load(out + ".empty.npy").shape == (0, 30)


@requires_torch  # the demo's PyTorch comparison
def test_demo_on_another_model(model_dir):
    """`xlm-flax demo --model DIR` runs the same demo on any checkpoint, with the PyTorch comparison (torch here)."""
    code, out, err = _run("demo", "--model", model_dir, "--sentences", "16")
    assert code == 0, err
    assert f"xlm-flax demo: {model_dir}" in out and "shipped with xlm-flax" not in out
    assert "fill-mask (top 5" in out and "sentences/s" in out and "Traceback" not in err
    assert "parity with transformers' PyTorch XLM on the same weights" in out
