"""Streaming training data: the lazy line source, packed rows (segments, positions, CLM labels, TLM pairs), exact
resume of the grain iterator alone and through the Trainer's orbax checkpoint, worker processes, minimal env."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from helpers import build_test_tokenizer, requires

from xlm_flax import XLMConfig
from xlm_flax.errors import DependencyError, InputError
from xlm_flax.tokenization import encode_text, fast_tokenizer, load_tokenizer
from xlm_flax.tokens import IGNORE_INDEX
from xlm_flax.training import streaming
from xlm_flax.training.streaming import StreamingBatches, model_inputs, packed_clm_labels
from xlm_flax.training.text_source import TextLineSource

requires_grain = requires("grain", reason="streaming data runs on grain (pip install 'xlm-flax[data]')")
WORDS = ("the", "cat", "dog", "sat", "on", "mat")


def _lines(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(1, 7))) + " ." for _ in range(n)]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tok")
    build_test_tokenizer(directory, words=WORDS)
    return str(directory)


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


def test_line_source_reads_lines_lazily(tmp_path):
    lines = ["first", "", "zweite Zeile ü", "  ", *[f"line {i}" for i in range(20)], "last without newline"]
    path = tmp_path / "t.txt"
    path.write_bytes(("\n".join(lines)).encode("utf-8"))
    source = TextLineSource(path, block=3)
    assert len(source) == len(lines)
    assert [source[i] for i in range(len(lines))] == lines
    assert [source[i] for i in (24, 0, 7, 13)] == [lines[i] for i in (24, 0, 7, 13)]
    assert source.offsets.size == -(-len(lines) // 3)  # one offset per block, not per line
    clone = pickle.loads(pickle.dumps(source))
    assert clone[24] == lines[24]
    (tmp_path / "n.txt").write_text("a\nb\n")
    assert [TextLineSource(tmp_path / "n.txt", block=2)[i] for i in range(2)] == ["a", "b"]
    with pytest.raises(IndexError):
        source[len(lines)]
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(InputError, match="empty"):
        TextLineSource(tmp_path / "empty.txt")


def test_packed_clm_labels_stay_inside_segments():
    ids = np.array([[0, 7, 1, 0, 8, 9, 1, 2]])
    segments = np.array([[1, 1, 1, 2, 2, 2, 2, 0]])
    expected = [[7, 1, IGNORE_INDEX, 8, 9, 1, IGNORE_INDEX, IGNORE_INDEX]]
    np.testing.assert_array_equal(packed_clm_labels(ids, segments), expected)


def test_packed_rows_need_a_model_that_takes_segment_ids():
    batch = {"input_ids": np.zeros((1, 1, 4)), "segment_ids": np.ones((1, 1, 4))}
    assert model_inputs(batch, accepts_segment_ids=True) is batch
    with pytest.raises(InputError, match="packing=False"):
        model_inputs(batch, accepts_segment_ids=False)


def test_without_grain_the_error_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "grain" else real(name, *a))
    with pytest.raises(DependencyError, match=r"pip install 'xlm-flax\[data\]'.*data='memory'"):
        streaming.require_grain()


def _segments(row_ids, row_segments, row_positions):
    """The sentences of one packed row, checking that positions restart at 0 in each."""
    out = []
    for s in range(1, int(row_segments.max()) + 1):
        where = row_segments == s
        out.append(row_ids[where].tolist())
        assert row_positions[where].tolist() == list(range(where.sum()))
    return out


@requires_grain
def test_packed_batches_hold_the_tokenized_lines(tokenizer, tmp_path):
    lines = _lines(120)
    lines[3] = ""
    path = tmp_path / "train.txt"
    path.write_text("\n".join(lines) + "\n")
    config = XLMConfig(vocab_size=len(tokenizer), emb_dim=8, n_layers=1, n_heads=2)
    data = StreamingBatches(
        str(path), fast_tokenizer(tokenizer), config, objective="clm", batch_size=4, accumulation=2,
        buckets=(8, 16), seed=0, packing=True, process_index=0, process_count=1,
    )  # fmt: skip
    expected = {tuple(encode_text(tokenizer, line, "en")) for line in lines if line}
    seen = []
    for _ in range(6):
        batch = next(data)
        assert {k: v.shape for k, v in batch.items()} == {
            k: (2, 4, 16) for k in ("input_ids", "position_ids", "segment_ids", "attention_mask", "labels")
        }
        for ids, seg, pos, labels in zip(*(batch[k].reshape(8, 16) for k in
                                           ("input_ids", "segment_ids", "position_ids", "labels"))):  # fmt: skip
            sentences = _segments(ids, seg, pos)
            assert all(tuple(s) in expected for s in sentences)
            seen += sentences
            assert (ids[seg == 0] == config.pad_index).all()
            np.testing.assert_array_equal(labels, packed_clm_labels(ids[None], seg[None])[0])
        assert (batch["segment_ids"].max(axis=-1) >= 2).any()  # rows really hold several sentences
    assert len(seen) >= 48 and len({tuple(s) for s in seen}) > 10
    data.close()


@requires_grain
def test_tlm_pair_is_one_segment_with_positions_restarting(tokenizer, tmp_path):
    pairs = [f"{a}\t{b}" for a, b in zip(_lines(40, 1), _lines(40, 2))]
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(pairs) + "\n")
    config = XLMConfig(vocab_size=len(tokenizer), emb_dim=8, n_layers=1, n_heads=2, n_langs=2,
                       lang2id={"en": 0, "fr": 1}, use_lang_emb=True)  # fmt: skip
    data = StreamingBatches(
        str(path), fast_tokenizer(tokenizer), config, objective="tlm", batch_size=2, accumulation=1,
        buckets=(32,), seed=1, langs=("en", "fr"), process_index=0, process_count=1,
    )  # fmt: skip
    batch = next(data)
    ids, seg, pos, langs = (batch[k][0, 0] for k in ("input_ids", "segment_ids", "position_ids", "langs"))
    first = ids[seg == 1].tolist()
    pair = next(p for p in pairs if encode_text(tokenizer, p.split("\t")[0], "en") == first[: first.index(1) + 1])
    a, b = (encode_text(tokenizer, t, "en") for t in pair.split("\t"))
    assert first == a + b
    assert pos[seg == 1].tolist() == list(range(len(a))) + list(range(len(b)))
    assert langs[seg == 1].tolist() == [0] * len(a) + [1] * len(b)
    data.close()


@requires_grain
def test_iterator_state_resumes_exactly_and_workers_change_nothing(tokenizer, tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("\n".join(_lines(200)) + "\n")
    config = XLMConfig(vocab_size=len(tokenizer), emb_dim=8, n_layers=1, n_heads=2)

    def make(workers=0):
        return StreamingBatches(
            str(path), fast_tokenizer(tokenizer), config, objective="mlm", batch_size=4, accumulation=1,
            buckets=(8, 16), seed=3, packing=True, workers=workers, process_index=0, process_count=1,
        )  # fmt: skip

    data = make()
    uninterrupted = [next(data) for _ in range(8)]
    first = make()
    for _ in range(3):
        next(first)
    state = json.loads(json.dumps(first.get_state()))
    resumed = make()
    resumed.set_state(state)
    for a, b in zip(uninterrupted[3:], [next(resumed) for _ in range(5)]):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    parallel = make(workers=1)
    try:
        for a, b in zip(uninterrupted, [next(parallel) for _ in range(8)]):
            assert all(np.array_equal(a[k], b[k]) for k in a)
    finally:
        parallel.close()


@requires_grain
def test_process_reads_only_its_rows(tokenizer, tmp_path):
    path = tmp_path / "train.txt"
    lines = [f"the cat {i} ." for i in range(64)]
    path.write_text("\n".join(lines) + "\n")
    config = XLMConfig(vocab_size=len(tokenizer), emb_dim=8, n_layers=1, n_heads=2)

    def rows(index):
        data = StreamingBatches(
            str(path), fast_tokenizer(tokenizer), config, objective="mlm", batch_size=4, accumulation=1,
            buckets=(16,), seed=0, packing=False, process_index=index, process_count=2,
        )  # fmt: skip
        out = []
        for _ in range(16):  # one epoch of this process's 32 lines, 2 per step
            batch = next(data)
            assert batch["input_ids"].shape[:2] == (1, 2)  # half of the step's 4 rows
            out += [tuple(r[m == 1].tolist()) for r, m in zip(batch["input_ids"][0], batch["attention_mask"][0])]
        return out

    for index in (0, 1):
        own = {tuple(encode_text(tokenizer, lines[i], "en")) for i in range(index, 64, 2)}
        assert sorted(rows(index)) == sorted(own)


def _trainer(tokenizer_dir, train_file, output_dir, **overrides):
    from flax import nnx

    from xlm_flax import XLMWithLMHeadModel
    from xlm_flax.training.config import TrainConfig
    from xlm_flax.training.trainer import Trainer

    vocab = len(load_tokenizer(tokenizer_dir))
    model_config = XLMConfig(vocab_size=vocab, emb_dim=16, n_layers=1, n_heads=2, max_position_embeddings=32)
    fields = dict(
        model=tokenizer_dir, train_file=str(train_file), output_dir=str(output_dir), steps=8, batch_size=4,
        buckets=(16,), learning_rate=3e-3, warmup_steps=2, log_every=100, mesh_shape=(2, 1), data="grain",
        save_every=3,
    )  # fmt: skip
    fields.update(overrides)
    model = XLMWithLMHeadModel(model_config, rngs=nnx.Rngs(params=0))
    return Trainer(TrainConfig(**fields), model=model, log=lambda _: None)


@requires_grain
def test_trainer_on_grain_resumes_exactly(tokenizer_dir, tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("\n".join(_lines(100)) + "\n")

    def run(output_dir, steps):
        trainer = _trainer(tokenizer_dir, path, output_dir)
        trainer.restore_checkpoint()
        return trainer.train(steps)

    uninterrupted = run(tmp_path / "a", None)
    first = run(tmp_path / "b", 5)  # checkpoints at 3 and (at the end) 5
    second = run(tmp_path / "b", None)
    assert [s for s, _ in first + second] == list(range(1, 9))
    np.testing.assert_allclose([x for _, x in first + second], [x for _, x in uninterrupted], rtol=1e-6)
    assert list((tmp_path / "b" / "checkpoints").glob("*/data/process_0-of-1.json"))  # grain state, per process


@requires_grain
def test_trainer_trains_on_packed_rows(tokenizer_dir, tmp_path):
    """Packed rows reach the model through `segment_ids` (their loss equals the padded loss: test_packing.py)."""
    path = tmp_path / "train.txt"
    path.write_text("\n".join(_lines(40)) + "\n")
    trainer = _trainer(tokenizer_dir, path, tmp_path / "out", packing=True)
    losses = trainer.train(2)
    assert [s for s, _ in losses] == [1, 2] and all(np.isfinite(x) for _, x in losses)
