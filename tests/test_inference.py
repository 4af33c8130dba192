"""`FillMask` against transformers' fill-mask pipeline, `Embedder` against pooled PyTorch hidden states, on the same
seeded weights; languages, bad input, and a mesh of 8 fake CPU devices against one device."""

from __future__ import annotations

import logging

import jax
import numpy as np
import pytest
import transformers
from helpers import TINY_LANGS, build_checkpoint, build_test_tokenizer, optional_import, requires_torch

from xlm_flax import Embedder, FillMask, make_mesh
from xlm_flax.errors import CheckpointError, InputError, MissingFileError
from xlm_flax.tokenization import encode_text, load_tokenizer

# None without torch: the tests that use it are marked `requires_torch`.
torch = optional_import("torch")

TOL = 1e-5
MAX_POS = 40
MASK = "<special1>"


def _checkpoint(directory, **overrides):
    vocab_size = build_test_tokenizer(directory, lang2id=overrides.get("lang2id"), model_max_length=MAX_POS)
    # Without torch: a checkpoint our exporter wrote, and None for the PyTorch model.
    return build_checkpoint(directory, vocab_size=vocab_size, max_position_embeddings=MAX_POS, **overrides)


@pytest.fixture(scope="module")
def mono(tmp_path_factory):
    """A monolingual LM checkpoint with the test tokenizer: (directory, PyTorch model)."""
    return _checkpoint(tmp_path_factory.mktemp("mono"))


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    """A three-language LM checkpoint with language embeddings: (directory, PyTorch model)."""
    return _checkpoint(tmp_path_factory.mktemp("multi"), n_langs=3, lang2id=TINY_LANGS)


@pytest.fixture(scope="module")
def fill(mono):
    return FillMask.from_pretrained(mono[0])


@pytest.fixture(scope="module")
def pipe(mono):
    directory, model = mono
    return transformers.pipeline("fill-mask", model=model, tokenizer=load_tokenizer(directory), device="cpu")


def _assert_same_predictions(ours, theirs):
    """Same structure, same tokens in the same order, same strings, scores within TOL."""
    if isinstance(theirs, dict):
        assert set(ours) == set(theirs)
        assert ours["token"] == theirs["token"]
        assert ours["token_str"] == theirs["token_str"]
        assert ours["sequence"] == theirs["sequence"]
        assert abs(ours["score"] - theirs["score"]) <= TOL
        return
    assert isinstance(ours, list) and len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        _assert_same_predictions(a, b)


SINGLE = f"the cat sat on the {MASK} ."
DOUBLE = f"paris is the {MASK} of {MASK} ."
OTHERS = [f"hello {MASK}", f"{MASK} dog sees a big red car in the old city", f"i like {MASK} and {MASK} and {MASK} ."]


@requires_torch
def test_fill_mask_single_mask_equals_pipeline(fill, pipe):
    _assert_same_predictions(fill(SINGLE, top_k=7), pipe(SINGLE, top_k=7))


@requires_torch
def test_fill_mask_several_masks_equal_pipeline(fill, pipe):
    ours = fill(DOUBLE)
    assert len(ours) == 2 and all(len(per_mask) == 5 for per_mask in ours)
    _assert_same_predictions(ours, pipe(DOUBLE))


@requires_torch
def test_fill_mask_list_of_mixed_lengths_equals_pipeline_in_input_order(fill, pipe):
    texts = [SINGLE, DOUBLE, *OTHERS]
    _assert_same_predictions(fill(texts, top_k=3, batch_size=2), pipe(texts, top_k=3))


@requires_torch
def test_fill_mask_targets_equal_pipeline(fill, pipe):
    targets = ["cat</w>", "dog</w>", "paris</w>", "mat</w>"]
    _assert_same_predictions(fill(SINGLE, targets=targets), pipe(SINGLE, targets=targets))
    _assert_same_predictions(fill(DOUBLE, targets=targets, top_k=2), pipe(DOUBLE, targets=targets, top_k=2))


@requires_torch
def test_fill_mask_multilingual_uses_language_ids(multi):
    directory, model = multi
    fill = FillMask.from_pretrained(directory)
    tokenizer = fill.tokenizer
    ids = encode_text(tokenizer, SINGLE, "fr")
    position = ids.index(tokenizer.mask_token_id)
    with torch.no_grad():
        logits = model(torch.tensor([ids]), langs=torch.full((1, len(ids)), TINY_LANGS["fr"])).logits[0, position]
    expected = torch.softmax(logits, -1).topk(4)
    got = fill(SINGLE, top_k=4, lang="fr")
    assert [p["token"] for p in got] == expected.indices.tolist()
    np.testing.assert_allclose([p["score"] for p in got], expected.values.numpy(), atol=TOL)


def test_fill_mask_bad_input(fill, caplog):
    with pytest.raises(InputError, match=MASK):
        fill(["the cat sat .", SINGLE])
    assert fill([]) == []
    with pytest.raises(InputError, match="top_k"):
        fill(SINGLE, top_k=0)
    long_text = "the " * 60 + MASK
    with pytest.raises(InputError, match="max_position_embeddings"):
        fill(f"{MASK} " + "the " * 60, truncation=False)
    with pytest.raises(InputError, match="beyond the first"):
        fill(long_text)  # the mask is cut off by truncation
    with caplog.at_level(logging.WARNING, logger="xlm_flax"):
        result = fill([f"{MASK} " + "the " * 60, f"{MASK} " + "cat " * 50])
    assert len(result) == 2 and len([r for r in caplog.records if "truncated" in r.message]) == 1


# ------------------------------------------------------------------------------------------------------ embeddings


SENTENCES = [
    "the cat sat on the mat .",
    "",
    "hello",
    "a big red car and a small blue car in the old city of paris , london and berlin !",
    "i like books",
    "dogs",
    "music is good",
]


def _reference(model, tokenizer, sentences, *, pooling, layers=(-1,), lang="en", lang_id=None, normalize=False):
    """Pools PyTorch hidden states of each sentence (a text, or token ids), run alone (no padding at all)."""
    encoder = model.transformer
    rows = []
    for text in sentences:
        ids = torch.tensor([encode_text(tokenizer, text, lang) if isinstance(text, str) else text])
        langs = None if lang_id is None else torch.full_like(ids, lang_id)
        with torch.no_grad():
            states = encoder(ids, langs=langs, output_hidden_states=True).hidden_states
        hidden = torch.stack([states[i] for i in layers]).mean(0)[0]  # [T, D]
        vector = {"mean": hidden.mean(0), "first": hidden[0], "max": hidden.max(0).values}[pooling]
        if normalize:
            vector = torch.nn.functional.normalize(vector, dim=0)
        rows.append(vector.numpy())
    return np.stack(rows)


@pytest.fixture(scope="module")
def embedders(mono):
    return {pooling: Embedder.from_pretrained(mono[0], pooling=pooling) for pooling in ("mean", "first", "max")}


@requires_torch
@pytest.mark.parametrize("pooling", ["mean", "first", "max"])
def test_embeddings_equal_pooled_pytorch_hidden_states(embedders, mono, pooling):
    embedder = embedders[pooling]
    # Mean pooling also runs in several batches (orders restored across batches); one batch is enough for the rest.
    got = embedder.encode(SENTENCES, batch_size=3 if pooling == "mean" else 32)
    expected = _reference(mono[1], embedder.tokenizer, SENTENCES, pooling=pooling)
    assert got.shape == (len(SENTENCES), embedder.dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)


@requires_torch
def test_embeddings_layers_normalize_and_outputs(embedders, mono):
    embedder = embedders["mean"]
    tokenizer = embedder.tokenizer
    got = embedder.encode(SENTENCES, layer=-2, normalize=True)
    expected = _reference(mono[1], tokenizer, SENTENCES, pooling="mean", layers=(-2,), normalize=True)
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)
    got = embedder.encode(SENTENCES, layer=[0, -1, 2])
    np.testing.assert_allclose(
        got, _reference(mono[1], tokenizer, SENTENCES, pooling="mean", layers=(0, -1, 2)), atol=TOL
    )
    single = embedder.encode("hello", convert_to_tensor=True)
    assert isinstance(single, jax.Array) and single.shape == (embedder.dim,)
    np.testing.assert_allclose(np.asarray(single), embedder.encode(["hello"])[0], atol=TOL)
    assert embedder.encode([]).shape == (0, embedder.dim)


@requires_torch  # the truncated input is compared with PyTorch's hidden states
def test_embeddings_bad_input(embedders, mono, caplog):
    embedder = embedders["mean"]
    for layer in (4, -5, [], "last"):
        with pytest.raises(InputError, match="layer"):
            embedder.encode(["hello"], layer=layer)
    with pytest.raises(InputError, match="output_value"):
        embedder.encode(["hello"], output_value="torch")
    with pytest.raises(InputError, match="input 1"):
        embedder.encode(["hello", 3])
    with pytest.raises(InputError, match="batch_size"):
        embedder.encode(["hello"], batch_size=0)
    with pytest.raises(InputError, match="pooling"):
        Embedder(embedder.model, embedder.tokenizer, pooling="cls")
    long = "the cat " * 30
    with pytest.raises(InputError, match="input 0 .* tokens long"):
        embedder.encode([long], truncation=False)
    with caplog.at_level(logging.WARNING, logger="xlm_flax"):
        got = embedder.encode([long, long + "sat"])
    assert len([r for r in caplog.records if "truncated" in r.message]) == 1
    ids = encode_text(embedder.tokenizer, long, "en")
    cut = [*ids[: MAX_POS - 1], ids[-1]]  # <s> and the first tokens, then </s>
    np.testing.assert_allclose(got[:1], _reference(mono[1], None, [cut], pooling="mean"), atol=TOL, rtol=0)


@requires_torch
def test_languages(multi, caplog):
    directory, model = multi
    embedder = Embedder.from_pretrained(directory, pooling="first")
    got = embedder.encode(SENTENCES[:3], lang="de")
    expected = _reference(model, embedder.tokenizer, SENTENCES[:3], pooling="first", lang="de", lang_id=2)
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)
    with caplog.at_level(logging.WARNING, logger="xlm_flax"):
        default = embedder.encode(SENTENCES[:3])
        embedder.encode(SENTENCES[:2])
    assert len([r for r in caplog.records if "no language was given" in r.message]) == 1
    expected = _reference(model, embedder.tokenizer, SENTENCES[:3], pooling="first", lang="en", lang_id=0)
    np.testing.assert_allclose(default, expected, atol=TOL, rtol=0)
    with pytest.raises(InputError, match="de, en, fr"):
        embedder.encode(["hello"], lang="xx")


def test_missing_files_are_named(mono, tmp_path):
    import shutil

    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt"):
        broken = tmp_path / name.replace(".", "_")
        shutil.copytree(mono[0], broken)
        (broken / name).unlink()
        with pytest.raises(MissingFileError, match=name if name != "model.safetensors" else "no weights"):
            Embedder.from_pretrained(broken)


def test_fill_mask_needs_lm_head(tmp_path):
    directory, _ = _checkpoint(tmp_path, architecture="XLMModel")
    with pytest.raises(CheckpointError, match="language-model head"):
        FillMask.from_pretrained(directory)
    assert Embedder.from_pretrained(directory).encode(["hello"]).shape == (1, 30)


def test_mesh_matches_single_device(mono, embedders, fill):
    assert jax.device_count() == 8
    mesh = make_mesh(data=4, model=2)
    embedder = Embedder.from_pretrained(mono[0], pooling="max", mesh=mesh)
    sentences = SENTENCES * 2  # 14 rows: batches padded to multiples of 4
    np.testing.assert_allclose(
        embedder.encode(sentences, batch_size=8), embedders["max"].encode(sentences), atol=TOL, rtol=0
    )
    sharded = FillMask.from_pretrained(mono[0], mesh=mesh)
    texts = [SINGLE, DOUBLE, *OTHERS]
    _assert_same_predictions(sharded(texts, top_k=3), fill(texts, top_k=3))


@requires_torch
def test_fill_mask_with_translation_equals_pytorch_on_the_tlm_pair(multi):
    from xlm_flax.training.objectives import tlm_pair

    directory, model = multi
    fill = FillMask.from_pretrained(directory)
    text, translation = f"the {MASK} sat on the mat .", "le chat sur le tapis ."
    got = fill.with_translation(text, translation, lang="en", translation_lang="fr", top_k=4)
    first = encode_text(fill.tokenizer, text, "en")
    pair = tlm_pair(first, encode_text(fill.tokenizer, translation, "fr"), TINY_LANGS["en"], TINY_LANGS["fr"])
    with torch.no_grad():
        logits = model(
            torch.tensor(pair["input_ids"][None]).long(),
            langs=torch.tensor(pair["langs"][None]).long(),
            position_ids=torch.tensor(pair["position_ids"][None]).long(),
        ).logits[0, first.index(fill.mask_id)]
    probs = torch.softmax(logits, -1)
    expected = torch.topk(probs, 4)
    assert [p["token"] for p in got] == expected.indices.tolist()
    np.testing.assert_allclose([p["score"] for p in got], expected.values.numpy(), atol=TOL, rtol=0)
    assert got[0]["sequence"] == fill.tokenizer.decode(
        [got[0]["token"] if t == fill.mask_id else t for t in first], skip_special_tokens=True
    )
    # The translation changes the prediction (positions restart, the French tokens carry their language id).
    alone = fill(text, lang="en", top_k=4)
    assert not np.allclose([p["score"] for p in alone], [p["score"] for p in got], rtol=1e-4, atol=0)
    with pytest.raises(InputError, match="unknown language 'xx'"):
        fill.with_translation(text, translation, lang="en", translation_lang="xx")
    with pytest.raises(InputError, match="more than the model's max_position_embeddings"):
        fill.with_translation(text, " ".join(["chat"] * MAX_POS), lang="en", translation_lang="fr")
    with pytest.raises(InputError, match="no mask token"):
        fill.with_translation("the cat", translation, lang="en", translation_lang="fr")
