"""Training: MLM masking statistics, TLM/CLM inputs, the sharded step against one device, learning (MLM, TLM, CLM,
classification fine-tuning to high held-out accuracy), exact resume."""

from __future__ import annotations

import json
import math
import string
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from xlm_flax import XLMConfig, XLMWithLMHeadModel
from xlm_flax.errors import InputError
from xlm_flax.model.heads.classification import XLMForSequenceClassification
from xlm_flax.sharding.mesh import make_mesh
from xlm_flax.sharding.placement import parameter_shardings
from xlm_flax.training.config import TrainConfig
from xlm_flax.training.data import read_classification_file
from xlm_flax.training.evaluation import evaluate_classifier
from xlm_flax.training.objectives import IGNORE_INDEX, clm_labels, mask_tokens, special_ids, tlm_pair
from xlm_flax.training.step import make_optimizer, make_train_step, mlm_prepare
from xlm_flax.training.trainer import Trainer

SPECIALS = ["<s>", "</s>", "<pad>", "<unk>"] + [f"<special{i}>" for i in range(10)]
LETTERS = list(string.ascii_lowercase)
VOCAB = SPECIALS + LETTERS + [c + "</w>" for c in LETTERS] + [".</w>"]


def tiny_config(**overrides) -> XLMConfig:
    fields = dict(
        vocab_size=len(VOCAB), emb_dim=24, n_layers=2, n_heads=3, max_position_embeddings=33, dropout=0.1,
        attention_dropout=0.1, embed_init_std=24**-0.5,
    )  # fmt: skip
    fields.update(overrides)
    return XLMConfig(**fields)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A character-level XLMTokenizer (no merges) whose ids match `VOCAB`."""
    directory = tmp_path_factory.mktemp("tok")
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(VOCAB)}))
    (directory / "merges.txt").write_text("")
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "XLMTokenizer"}))
    (directory / "config.json").write_text(tiny_config().to_json_string())  # for --from-scratch
    return str(directory)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    """Short sentences over a few words: easy to learn."""
    rng = np.random.default_rng(0)
    words = ["abc", "abd", "xyz", "cab", "zz"]
    lines = [" ".join(rng.choice(words, size=rng.integers(2, 5))) + " ." for _ in range(400)]
    path = tmp_path_factory.mktemp("data") / "train.txt"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# ------------------------------------------------------------------------------------------------------ objectives


def test_masking_statistics_and_exclusions():
    config = tiny_config()
    exclude = special_ids(config)
    assert exclude == tuple(range(14))
    rng = np.random.default_rng(1)
    ids = rng.integers(0, config.vocab_size, size=(400, 500)).astype(np.int32)
    attention = (rng.random(ids.shape) > 0.1).astype(np.int32)  # 10% padding positions that must never be chosen
    masked, labels = jax.jit(
        lambda k, x, a: mask_tokens(
            k, x, mask_index=config.mask_index, vocab_size=config.vocab_size, exclude=exclude, attention_mask=a
        )
    )(jax.random.key(0), ids, attention)
    masked, labels = np.asarray(masked), np.asarray(labels)
    chosen = labels != IGNORE_INDEX
    eligible = (ids >= 14) & (attention == 1)
    assert not chosen[~eligible].any()  # specials and padding never chosen
    np.testing.assert_array_equal(masked[~chosen], ids[~chosen])  # unchosen tokens untouched
    np.testing.assert_array_equal(labels[chosen], ids[chosen])  # labels are the originals

    def within(count, n, p):  # 5 binomial standard deviations
        assert abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p)), (count, n, p)

    n_eligible, n_chosen = int(eligible.sum()), int(chosen.sum())
    within(n_chosen, n_eligible, 0.15)
    new = masked[chosen]
    old = ids[chosen]
    is_mask = new == config.mask_index
    within(int(is_mask.sum()), n_chosen, 0.8)
    n_candidates = config.vocab_size - 14
    # Random replacements may draw the original token: kept = 10% + 10% / candidates.
    within(int((new == old).sum()), n_chosen, 0.1 + 0.1 / n_candidates)
    within(int(((new != old) & ~is_mask).sum()), n_chosen, 0.1 * (1 - 1 / n_candidates))
    assert (new[~is_mask] >= 14).all()  # random replacements are never special tokens


def test_masking_rejects_bad_rates():
    with pytest.raises(InputError, match="rates"):
        mask_tokens(jax.random.key(0), jnp.zeros((1, 3), jnp.int32), mask_index=5, vocab_size=20, exclude=(),
                    mask_rate=0.9, random_rate=0.2)  # fmt: skip


def test_tlm_pair_restarts_positions_and_sets_langs():
    pair = tlm_pair([0, 20, 21, 1], [0, 30, 1], 0, 2)
    np.testing.assert_array_equal(pair["input_ids"], [0, 20, 21, 1, 0, 30, 1])
    np.testing.assert_array_equal(pair["position_ids"], [0, 1, 2, 3, 0, 1, 2])
    np.testing.assert_array_equal(pair["langs"], [0, 0, 0, 0, 2, 2, 2])
    cut = tlm_pair([0, 20, 21, 22, 23, 1], [0, 30, 31, 32, 1], 1, 0, max_length=6)
    np.testing.assert_array_equal(cut["input_ids"], [0, 20, 1, 0, 30, 1])  # each half keeps its </s>
    np.testing.assert_array_equal(cut["position_ids"], [0, 1, 2, 0, 1, 2])


def test_clm_labels_are_next_tokens():
    ids = np.array([[0, 20, 21, 1, 2], [0, 22, 1, 2, 2]])
    labels = clm_labels(ids, (ids != 2).astype(np.int32))
    np.testing.assert_array_equal(labels, [[20, 21, 1, -100, -100], [22, 1, -100, -100, -100]])


# -------------------------------------------------------------------------------------------------- training step


def _train_config(tokenizer_dir, text_file, output_dir, **overrides) -> TrainConfig:
    fields = dict(
        model=tokenizer_dir, train_file=text_file, output_dir=str(output_dir), steps=40, batch_size=8,
        buckets=(16, 32), learning_rate=3e-3, warmup_steps=5, log_every=100, mesh_shape=(1, 1),
    )  # fmt: skip
    fields.update(overrides)
    return TrainConfig(**fields)


@pytest.mark.slow
@pytest.mark.parametrize("mesh_shape", [(8, 1), (4, 2)])
def test_sharded_step_equals_single_device(mesh_shape, tokenizer_dir, text_file, tmp_path):
    config = tiny_config(n_heads=2, emb_dim=24)  # 2 heads, 96 FFN units: divisible by the model axis
    model = XLMWithLMHeadModel(config, rngs=nnx.Rngs(params=0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    train_config = _train_config(tokenizer_dir, text_file, tmp_path, accumulation=2, warmup_steps=0)
    optimizer = make_optimizer(train_config)
    step = make_train_step(graphdef, optimizer, prepare=mlm_prepare(config), seed=3)
    trainer = Trainer(train_config, model=model, log=lambda _: None)  # only for a real batch
    batch = next(trainer.data)

    single = jax.devices()[0]
    p1 = jax.device_put(params, single)
    out1 = jax.jit(step)(p1, optimizer.init(p1), rest, jax.device_put(batch, single), jnp.int32(0))

    mesh = make_mesh(*mesh_shape)
    p8 = jax.device_put(params, parameter_shardings(params, mesh))
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))
    out8 = jax.jit(step)(p8, optimizer.init(p8), rest, jax.device_put(batch, spec), jnp.int32(0))
    assert any(len(a.sharding.device_set) == 8 for a in jax.tree.leaves(out8[0]))
    np.testing.assert_allclose(float(out8[2]["loss"]), float(out1[2]["loss"]), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(out8[0]), jax.tree.leaves(out1[0])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    # The step really moved the parameters.
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(out1[0]), jax.tree.leaves(params))) > 1e-4


@pytest.mark.slow
def test_loss_decreases(tokenizer_dir, text_file, tmp_path):
    model = XLMWithLMHeadModel(tiny_config(), rngs=nnx.Rngs(params=0))
    trainer = Trainer(_train_config(tokenizer_dir, text_file, tmp_path, steps=40), model=model, log=lambda _: None)
    losses = [loss for _, loss in trainer.train()]
    assert len(losses) == 40 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.75 * np.mean(losses[:5]), losses
    directory = trainer.save_model()
    loaded = XLMWithLMHeadModel.from_pretrained(directory)
    np.testing.assert_array_equal(
        np.asarray(loaded.pred_layer.proj.bias[...]), np.asarray(trainer.model.pred_layer.proj.bias[...])
    )


@pytest.mark.slow
def test_interrupted_run_resumes_exactly(tokenizer_dir, text_file, tmp_path):
    def run(output_dir, steps):
        model = XLMWithLMHeadModel(tiny_config(), rngs=nnx.Rngs(params=0))
        config = _train_config(tokenizer_dir, text_file, output_dir, steps=12, save_every=5, mesh_shape=(2, 1))
        trainer = Trainer(config, model=model, log=lambda _: None)
        trainer.restore_checkpoint()
        return trainer.train(steps)

    uninterrupted = run(tmp_path / "a", None)
    first = run(tmp_path / "b", 7)  # checkpoints at 5 and (at the end) 7
    second = run(tmp_path / "b", None)  # a fresh process would do the same: restore, then go on
    assert [s for s, _ in first + second] == list(range(1, 13))
    np.testing.assert_allclose([x for _, x in first + second], [x for _, x in uninterrupted], rtol=1e-6)


def test_cli_train_bad_input_is_one_line(tokenizer_dir, tmp_path, capsys):
    from xlm_flax.cli.main import main

    assert main(["train", str(tmp_path / "missing"), str(tmp_path / "t.txt"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "vocab.json" in err
    assert (
        main(
            [
                "train",
                tokenizer_dir,
                str(tmp_path / "t.txt"),
                str(tmp_path / "out"),
                "--from-scratch",
                "--buckets",
                "16,32",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "t.txt" in err


def test_shipped_small_model_loads_and_follows_the_xlm_layout():
    import os

    from transformers import XLMTokenizer

    import xlm_flax

    directory = os.path.join(os.path.dirname(xlm_flax.__file__), "data", "xlm-small-en")
    size = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))
    assert size <= 20 * 2**20
    assert os.path.isfile(os.path.join(directory, "MODEL_CARD.md"))
    tokenizer = XLMTokenizer.from_pretrained(directory)
    assert (tokenizer.bos_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id) == (
        0,
        1,
        2,
        3,
    )
    assert tokenizer.mask_token_id == 5 and tokenizer.convert_ids_to_tokens(13) == "<special9>"
    model = XLMWithLMHeadModel.from_pretrained(directory)
    assert model.config.vocab_size == len(tokenizer) and model.config.mask_index == 5
    ids = tokenizer.encode("the value of the argument is returned .")
    assert tokenizer.unk_token_id not in ids
    logits = model(jnp.asarray([ids])).logits
    assert logits.shape == (1, len(ids), len(tokenizer)) and bool(jnp.all(jnp.isfinite(logits)))


# ---------------------------------------------------------------------------------------- TLM, CLM, classification


def _write(path, lines) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_tlm_loss_decreases(tokenizer_dir, tmp_path):
    rng = np.random.default_rng(1)
    words = ["abc", "abd", "xyz", "cab", "zz"]
    pairs = []
    for _ in range(200):
        sentence = list(rng.choice(words, size=rng.integers(2, 5)))
        pairs.append(" ".join(sentence) + " .\t" + " ".join(w[::-1] for w in sentence) + " .")  # "translation"
    config = tiny_config(n_langs=2, lang2id={"en": 0, "fr": 1})
    model = XLMWithLMHeadModel(config, rngs=nnx.Rngs(params=0))
    train_config = _train_config(
        tokenizer_dir,
        _write(tmp_path / "pairs.tsv", pairs),
        tmp_path,
        objective="tlm",
        langs=("en", "fr"),
        steps=20,
        buckets=(32,),
    )
    trainer = Trainer(train_config, model=model, log=lambda _: None)
    batch = next(trainer.data)
    assert set(np.unique(batch["langs"][batch["attention_mask"] == 1])) == {0, 1}  # both languages in every pair
    losses = [loss for _, loss in trainer.train()]
    assert all(np.isfinite(losses)) and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


@pytest.mark.slow
def test_clm_loss_decreases(tokenizer_dir, text_file, tmp_path):
    model = XLMWithLMHeadModel(tiny_config(causal=True), rngs=nnx.Rngs(params=0))
    trainer = Trainer(
        _train_config(tokenizer_dir, text_file, tmp_path, objective="clm", steps=20, buckets=(16,)),
        model=model,
        log=lambda _: None,
    )
    losses = [loss for _, loss in trainer.train()]
    assert all(np.isfinite(losses)) and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


def _separable(n: int, seed: int) -> list[str]:
    """Label 0: words over the letters a-h; label 1: words over p-w. Classes alternate, lengths vary."""
    rng = np.random.default_rng(seed)
    alphabets = [list("abcdefgh"), list("pqrstuvw")]
    lines = []
    for i in range(n):
        label = i % 2
        words = ["".join(rng.choice(alphabets[label], size=rng.integers(2, 5))) for _ in range(rng.integers(2, 5))]
        lines.append(" ".join(words) + f" .\t{label}")
    return lines


@pytest.fixture(scope="module")
def classification_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cls")
    return _write(directory / "train.tsv", _separable(320, 0)), _write(directory / "test.tsv", _separable(100, 1))


@pytest.mark.slow
def test_classification_fine_tuning_reaches_high_accuracy(tokenizer_dir, classification_files, tmp_path):
    train_file, test_file = classification_files
    model = XLMForSequenceClassification(tiny_config(num_labels=2), rngs=nnx.Rngs(params=0))
    config = _train_config(
        tokenizer_dir, train_file, tmp_path, objective="classification", steps=40, batch_size=16, buckets=(24,)
    )
    trainer = Trainer(config, model=model, log=lambda _: None)
    batch = next(trainer.data)
    assert batch["labels"].shape == (1, 16) and batch["labels"].dtype == np.int32
    trainer.data.seek(0, 0)
    before = trainer.evaluate(test_file)
    losses = [loss for _, loss in trainer.train()]
    after = trainer.evaluate(test_file)
    assert after.n_examples == 100 and after.predictions.shape == (100,)
    assert after.accuracy >= 0.9, (before.accuracy, after.accuracy, losses)
    assert after.loss < before.loss and np.mean(losses[-5:]) < 0.75 * np.mean(losses[:5]), losses
    np.testing.assert_array_equal(after.labels, read_classification_file(test_file)[1])

    # The saved model is a classifier of its own: same predictions after loading it back.
    directory = trainer.save_model()
    loaded = XLMForSequenceClassification.from_pretrained(directory)
    again = evaluate_classifier(loaded, trainer.tokenizer, test_file, batch_size=7, buckets=(24,))
    np.testing.assert_array_equal(again.predictions, after.predictions)
    assert abs(again.loss - after.loss) < 1e-4


def test_classification_num_labels_from_data_or_config(tokenizer_dir, tmp_path):
    lines = [f"abc{'d' * (i % 3)} .\t{i % 3}" for i in range(24)]
    train_file = _write(tmp_path / "three.tsv", lines)
    base = dict(objective="classification", from_scratch=True, steps=1, batch_size=8)
    trainer = Trainer(_train_config(tokenizer_dir, train_file, tmp_path / "a", **base), log=lambda _: None)
    assert trainer.model_config.num_labels == 3
    assert trainer.model.sequence_summary.summary.kernel[...].shape[-1] == 3
    trainer = Trainer(
        _train_config(tokenizer_dir, train_file, tmp_path / "b", num_labels=5, **base), log=lambda _: None
    )
    assert trainer.model_config.num_labels == 5
    with pytest.raises(InputError, match="num_labels=2"):
        Trainer(_train_config(tokenizer_dir, train_file, tmp_path / "c", num_labels=2, **base), log=lambda _: None)
    with pytest.raises(InputError, match="num_labels=2"):  # a model passed in keeps its own head size
        model = XLMForSequenceClassification(tiny_config(num_labels=2), rngs=nnx.Rngs(params=0))
        Trainer(_train_config(tokenizer_dir, train_file, tmp_path / "d", **base), model=model, log=lambda _: None)


@pytest.mark.parametrize(
    "line, message", [("abc .", "no tab"), ("abc .\tpositive", "not a class id"), ("abc .\t-1", "not a class id")]
)
def test_classification_file_errors(line, message, tmp_path):
    with pytest.raises(InputError, match=message):
        read_classification_file(_write(tmp_path / "bad.tsv", ["abd .\t0", line]))


@pytest.mark.slow
def test_compilation_is_announced_and_left_out_of_throughput(tokenizer_dir, text_file, tmp_path, monkeypatch, capsys):
    model = XLMWithLMHeadModel(tiny_config(), rngs=nnx.Rngs(params=0))
    config = _train_config(tokenizer_dir, text_file, tmp_path, steps=4, log_every=2, buckets=(32,))
    lines = []
    trainer = Trainer(config, model=model, log=lines.append)
    compile_step = Trainer._compile
    pause = 2.0

    def slow_compile(self, args):  # a compilation that takes `pause` seconds more
        seconds = compile_step(self, args)
        time.sleep(pause)
        return seconds + pause

    monkeypatch.setattr(Trainer, "_compile", slow_compile)
    trainer.train(progress=True)
    assert sum("compiling the train step for batches of" in line for line in lines) == 1  # one shape: one compile
    compiled = float(next(line for line in lines if line.startswith("compiled in")).split()[2])
    assert compiled >= pause
    rates = [float(line.split()[-2].replace(",", "")) for line in lines if line.endswith("tokens/s")]
    tokens = 2 * config.batch_size * 32  # at least the tokens of the first window (2 steps)
    # The first window's time (tokens / rate) is far below the compilation's: it was not counted.
    assert len(rates) == 2 and tokens / rates[0] < compiled, lines
    assert "training" in capsys.readouterr().err  # the bar, on stderr
