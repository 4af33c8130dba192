"""The hub's arguments through huggingface_hub's real code, offline: a hub cache laid out as huggingface_hub lays it
out (`models--org--name/{blobs,refs,snapshots}`), and a local hub server (`hub_server.py`) for download, revision
pinning and `push_to_hub`."""

from __future__ import annotations

import hashlib
import logging
import os
import time

import numpy as np
import pytest
from flax import nnx
from helpers import build_test_tokenizer, requires_torch
from hub_server import HubServer

from xlm_flax import FillMask, XLMConfig, XLMWithLMHeadModel
from xlm_flax.checkpoints.convert import convert_checkpoint
from xlm_flax.cli.common import configure_logging
from xlm_flax.cli.main import main
from xlm_flax.errors import MissingFileError
from xlm_flax.tokenization import load_tokenizer


def _model_files(tmp_path, name: str, seed: int, fmt: str = "flax") -> tuple[dict[str, bytes], np.ndarray]:
    """A small model directory's files (tokenizer included) and its word embeddings."""
    directory = tmp_path / name
    vocab = build_test_tokenizer(directory)
    config = XLMConfig(vocab_size=vocab, emb_dim=16, n_heads=2, n_layers=1, n_langs=1, max_position_embeddings=32)
    model = XLMWithLMHeadModel(config, rngs=nnx.Rngs(seed))
    model.save_pretrained(directory, format=fmt, tokenizer_source=directory)
    files = {p: (directory / p).read_bytes() for p in os.listdir(directory)}
    return files, np.asarray(model.transformer.embeddings.embedding[...])


def _populate_cache(cache_dir, repo_id: str, commits: dict[str, dict[str, bytes]], refs: dict[str, str]) -> None:
    """The layout huggingface_hub writes: content-addressed blobs, snapshots of symlinks, refs naming commits."""
    root = cache_dir / f"models--{repo_id.replace('/', '--')}"
    (root / "blobs").mkdir(parents=True)
    for commit, files in commits.items():
        for path, body in files.items():
            etag = hashlib.sha256(body).hexdigest()
            (root / "blobs" / etag).write_bytes(body)
            link = root / "snapshots" / commit / path
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(root / "blobs" / etag, link.parent))
    (root / "refs").mkdir()
    for branch, commit in refs.items():
        (root / "refs" / branch).write_text(commit)


def _embeddings(model) -> np.ndarray:
    return np.asarray(model.transformer.embeddings.embedding[...])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hubmodels")
    first, first_words = _model_files(tmp, "first", seed=0)
    second, second_words = _model_files(tmp, "second", seed=1, fmt="pytorch")  # transformers' layout
    return dict(first=first, first_words=first_words, second=second, second_words=second_words)


@pytest.fixture
def endpoint(monkeypatch):
    """Points huggingface_hub at `url` (what `HF_ENDPOINT` does, for an already imported huggingface_hub)."""
    from huggingface_hub import constants

    def point(url: str) -> None:
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")

    return point


A, B = "a" * 40, "b" * 40


def test_local_cache_with_commit_and_branch_revisions(models, tmp_path):
    cache = tmp_path / "cache"
    _populate_cache(cache, "org/tiny", {A: models["first"], B: models["second"]}, {"main": A, "dev": B})
    hub = dict(cache_dir=str(cache), local_files_only=True)
    assert np.array_equal(_embeddings(XLMWithLMHeadModel.from_pretrained("org/tiny", **hub)), models["first_words"])
    dev = XLMWithLMHeadModel.from_pretrained("org/tiny", revision="dev", **hub)
    assert np.array_equal(_embeddings(dev), models["second_words"])
    pinned = XLMWithLMHeadModel.from_pretrained("org/tiny", revision=A, **hub)
    assert np.array_equal(_embeddings(pinned), models["first_words"])
    assert load_tokenizer("org/tiny", revision=B, **hub).mask_token == "<special1>"
    fill = FillMask.from_pretrained("org/tiny", revision="dev", **hub)
    assert np.array_equal(_embeddings(fill.model), models["second_words"])
    report = convert_checkpoint("org/tiny", tmp_path / "converted", revision="dev", **hub)
    assert report.architecture == "XLMWithLMHeadModel"
    assert np.array_equal(
        _embeddings(XLMWithLMHeadModel.from_pretrained(tmp_path / "converted")),
        dev.transformer.embeddings.embedding[...],
    )
    with pytest.raises(MissingFileError, match="local_files_only=True and the file is not in the local hub cache"):
        XLMConfig.from_pretrained("org/tiny", revision="nope", **hub)
    # subfolder: files under a folder of the repository (and of a local directory alike)
    _populate_cache(cache, "org/nested", {A: {f"sub/{p}": b for p, b in models["first"].items()}}, {"main": A})
    nested = XLMWithLMHeadModel.from_pretrained("org/nested", subfolder="sub", **hub)
    assert np.array_equal(_embeddings(nested), models["first_words"])


@requires_torch
def test_convert_verify_compares_against_the_same_revision(models, tmp_path):
    """`--verify` loads transformers' reference with the conversion's hub arguments: `dev`, not the default branch."""
    cache = tmp_path / "cache"
    _populate_cache(cache, "org/tiny", {A: models["first"], B: models["second"]}, {"main": A, "dev": B})
    hub = dict(cache_dir=str(cache), local_files_only=True)
    report = convert_checkpoint("org/tiny", tmp_path / "converted", revision="dev", verify=True, **hub)
    assert report.max_abs_diff and max(report.max_abs_diff.values()) <= 1e-5


def test_offline_and_unreachable_hub_fail_at_once(models, tmp_path, monkeypatch, endpoint):
    cache = tmp_path / "cache"
    _populate_cache(cache, "org/tiny", {A: models["first"]}, {"main": A})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(MissingFileError, match="HF_HUB_OFFLINE is set and the file is not in the local hub cache"):
        XLMWithLMHeadModel.from_pretrained("org/absent", cache_dir=str(cache))
    assert time.perf_counter() - start < 3
    cached = XLMWithLMHeadModel.from_pretrained("org/tiny", cache_dir=str(cache))  # the cache still serves
    assert np.array_equal(_embeddings(cached), models["first_words"])

    monkeypatch.delenv("HF_HUB_OFFLINE")
    endpoint("http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setattr("xlm_flax.checkpoints.hub._UNREACHABLE", set())
    start = time.perf_counter()
    with pytest.raises(MissingFileError, match=r"the hub \(http://127.0.0.1:9\) is unreachable"):
        XLMConfig.from_pretrained("org/absent", cache_dir=str(cache))
    assert time.perf_counter() - start < 5  # not huggingface_hub's minute of retries
    cached = XLMWithLMHeadModel.from_pretrained("org/tiny", cache_dir=str(cache))
    assert np.array_equal(_embeddings(cached), models["first_words"])


def test_unknown_keyword_names_from_pretrained(tmp_path, models):
    (tmp_path / "m").mkdir()
    for path, body in models["first"].items():
        (tmp_path / "m" / path).write_bytes(body)
    with pytest.raises(TypeError, match=r"XLMWithLMHeadModel\.from_pretrained\(\) got unexpected keyword .*'revison'"):
        XLMWithLMHeadModel.from_pretrained(tmp_path / "m", revison="main")


def test_download_pinning_and_push_through_a_local_hub(models, tmp_path, monkeypatch, endpoint, capsys):
    monkeypatch.setattr("xlm_flax.checkpoints.hub._UNREACHABLE", set())
    with HubServer() as server:
        endpoint(server.endpoint)
        first = XLMWithLMHeadModel.from_pretrained(_write(tmp_path / "first", models["first"]))
        first_url = first.push_to_hub("org/pushed", token="hf_test")  # native layout
        second = XLMWithLMHeadModel.from_pretrained(_write(tmp_path / "second", models["second"]))
        second_url = second.push_to_hub("org/pushed", format="pytorch", token="hf_test")
        first_commit, second_commit = first_url.rsplit("/", 1)[1], second_url.rsplit("/", 1)[1]
        repo = server.hub.repos["org/pushed"]
        assert repo["branches"]["main"] == second_commit
        assert {"config.json", "model.safetensors", "vocab.json", "merges.txt"} <= set(repo["commits"][first_commit])
        assert ("POST", "/api/models/org/pushed/preupload/main") in server.hub.requests

        cache = str(tmp_path / "cache")
        latest = XLMWithLMHeadModel.from_pretrained("org/pushed", cache_dir=cache)
        assert np.array_equal(_embeddings(latest), models["second_words"])
        pinned = XLMWithLMHeadModel.from_pretrained("org/pushed", cache_dir=cache, revision=first_commit)
        assert np.array_equal(_embeddings(pinned), models["first_words"])
        snapshot = os.path.join(cache, "models--org--pushed", "snapshots", first_commit, "model.safetensors")
        assert os.path.islink(snapshot)  # huggingface_hub's own cache layout

        gets = sum(method == "GET" for method, _ in server.hub.requests)
        XLMWithLMHeadModel.from_pretrained("org/pushed", cache_dir=cache, revision=first_commit, force_download=True)
        assert sum(method == "GET" for method, _ in server.hub.requests) > gets
        cached = XLMWithLMHeadModel.from_pretrained("org/pushed", cache_dir=cache, local_files_only=True)
        assert np.array_equal(_embeddings(cached), models["second_words"])

        assert main(["info", "org/pushed", "--revision", first_commit, "--cache-dir", cache]) == 0
        assert "XLMWithLMHeadModel" in capsys.readouterr().out
        with pytest.raises(MissingFileError, match="has no revision 'nope'"):
            XLMConfig.from_pretrained("org/pushed", cache_dir=cache, revision="nope")
        with pytest.raises(MissingFileError, match="no repository of that name"):
            XLMConfig.from_pretrained("org/missing", cache_dir=cache)


def test_the_cli_leaves_the_root_logger_alone():
    # huggingface_hub's and transformers' loggers have their own handler and propagate: a root handler from the CLI
    # (logging.basicConfig, as before) printed each of their warnings twice.
    root = list(logging.getLogger().handlers)
    configure_logging()
    configure_logging()
    assert logging.getLogger().handlers == root
    ours = [h for h in logging.getLogger("xlm_flax").handlers if h.get_name() == "xlm-flax-cli"]
    assert len(ours) == 1  # once, however often the CLI runs in one process


def _write(directory, files: dict[str, bytes]) -> str:
    directory.mkdir()
    for path, body in files.items():
        (directory / path).write_bytes(body)
    return str(directory)
