"""sentence-transformers' conventions: `Embedder.encode`'s arguments, quantized precisions and similarity functions
against hand-computed values (no torch needed), and the round trip through the real `sentence_transformers`
package: `save_sentence_transformers` -> `SentenceTransformer(directory)` gives `encode`'s vectors."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from helpers import TINY_LANGS, build_checkpoint, build_test_tokenizer, requires

from xlm_flax import Embedder
from xlm_flax.errors import InputError
from xlm_flax.inference.vectors import quantize_embeddings

TOL = 1e-5
SENTENCES = ["the cat sat on the mat .", "a dog", "hello world .", "", "music is good and the cat is here ."]
requires_st = requires(
    "sentence_transformers", "torch", reason="the round trip needs pip install sentence-transformers"
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("st")
    vocab_size = build_test_tokenizer(directory, model_max_length=40)
    return build_checkpoint(directory, vocab_size=vocab_size, max_position_embeddings=40)[0]


@pytest.fixture(scope="module")
def embedder(checkpoint):
    return Embedder.from_pretrained(checkpoint, pooling="mean")


def test_quantized_precisions_by_hand():
    x = np.array([[0.5, -1.0, 2.0, 0.0, 1.0, -0.5, 0.25, 3.0, -2.0], [1.5, 1.0, -2.0, 0.5, 0.0, 0.5, -0.25, 1.0, 2.0]])
    # int8/uint8: 255 buckets of (max - min) / 255 from the per-dimension min (steps 1 and 4 here, exact in float)
    scalar = np.array([[0.0, -510.0], [100.0, 10.0], [255.0, 510.0]], dtype=np.float32)
    uint8 = quantize_embeddings(scalar, "uint8")
    assert uint8.dtype == np.uint8 and uint8.tolist() == [[0, 0], [100, 130], [255, 255]]
    int8 = quantize_embeddings(scalar, "int8")
    assert int8.dtype == np.int8 and int8.tolist() == [[-128, -128], [-28, 2], [127, 127]]
    # binary: one bit per dimension (> 0), packed big-endian 8 to a byte, the last byte zero-padded
    ubinary = quantize_embeddings(x, "ubinary")
    assert ubinary.dtype == np.uint8 and ubinary.tolist() == [[0b10101011, 0b00000000], [0b11010101, 0b10000000]]
    assert quantize_embeddings(x, "binary").tolist() == [[0b10101011 - 128, -128], [0b11010101 - 128, 0]]
    with pytest.raises(InputError, match="several embeddings"):
        quantize_embeddings(x[:1], "int8")


def test_similarity_functions_by_hand(embedder):
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    b = np.array([[0.0, 2.0]])
    expected = {
        "cosine": [[0.8], [0.0]],
        "dot": [[8.0], [0.0]],
        "euclidean": [[-np.sqrt(9 + 4)], [-np.sqrt(1 + 4)]],  # negative distances: higher is more similar
        "manhattan": [[-5.0], [-3.0]],
    }
    try:
        for name, scores in expected.items():
            embedder.similarity_fn_name = name
            np.testing.assert_allclose(embedder.similarity(a, b), scores, atol=1e-6)
            np.testing.assert_allclose(embedder.similarity(a[0], b[0]), [scores[0]], atol=1e-6)  # vectors: one row
            np.testing.assert_allclose(embedder.similarity_pairwise(a, np.vstack([b, b])), np.ravel(scores), atol=1e-6)
        with pytest.raises(InputError, match="cosine, dot, euclidean, manhattan"):
            embedder.similarity_fn_name = "angle"
    finally:
        embedder.similarity_fn_name = "cosine"


def test_encode_arguments(embedder):
    plain = embedder.encode(SENTENCES)
    assert plain.shape == (len(SENTENCES), embedder.dim) and plain.dtype == np.float32
    # prompt: put before every sentence, and pooled with it
    np.testing.assert_allclose(
        embedder.encode(SENTENCES, prompt="query : "), embedder.encode(["query : " + s for s in SENTENCES]), atol=TOL
    )
    unit = embedder.encode(SENTENCES, normalize_embeddings=True)
    np.testing.assert_allclose(unit, plain / np.linalg.norm(plain, axis=1, keepdims=True), atol=TOL)
    np.testing.assert_allclose(embedder.encode(SENTENCES, normalize=True), unit, atol=TOL)  # the earlier name
    tensor = embedder.encode(SENTENCES, convert_to_tensor=True, convert_to_numpy=True)  # tensor wins, as in ST
    assert isinstance(tensor, jax.Array) and tensor.shape == plain.shape
    rows = embedder.encode(SENTENCES, convert_to_numpy=False)
    assert isinstance(rows, list) and all(isinstance(r, jax.Array) and r.shape == (embedder.dim,) for r in rows)
    single = embedder.encode("hello", convert_to_tensor=True)
    assert isinstance(single, jax.Array) and single.shape == (embedder.dim,)
    assert embedder.encode([]).shape == (0, embedder.dim)
    # quantized: the float vectors through sentence-transformers' rules
    for precision in ("int8", "uint8", "binary", "ubinary"):
        got = embedder.encode(SENTENCES, precision=precision)
        np.testing.assert_array_equal(got, quantize_embeddings(plain, precision))
    assert embedder.encode(SENTENCES, precision="ubinary").shape == (len(SENTENCES), -(-embedder.dim // 8))


def test_token_embeddings(embedder):
    tokens = embedder.encode(SENTENCES, output_value="token_embeddings")
    lengths = [len(embedder.tokenizer(s)["input_ids"]) for s in SENTENCES]  # <s> ... </s>, no padding
    assert [t.shape for t in tokens] == [(n, embedder.dim) for n in lengths]
    # mean pooling is the mean of the token vectors
    np.testing.assert_allclose(np.stack([t.mean(0) for t in tokens]), embedder.encode(SENTENCES), atol=TOL)
    everything = embedder.encode(SENTENCES[:2], output_value=None)
    assert set(everything[0]) == {"input_ids", "attention_mask", "token_embeddings", "sentence_embedding"}
    assert everything[1]["input_ids"].tolist() == embedder.tokenizer(SENTENCES[1])["input_ids"]
    np.testing.assert_allclose(everything[1]["sentence_embedding"], embedder.encode(SENTENCES[1]), atol=TOL)
    for bad, match in (
        (dict(output_value="tokens"), "output_value"),
        (dict(precision="int4"), "precision"),
        (dict(prompt=3), "prompt"),
    ):
        with pytest.raises(InputError, match=match):
            embedder.encode(SENTENCES, **bad)


def test_bridge_refuses_language_embeddings(tmp_path):
    vocab_size = build_test_tokenizer(tmp_path / "multi", lang2id=TINY_LANGS, model_max_length=40)
    directory, _ = build_checkpoint(tmp_path / "multi", vocab_size=vocab_size, n_langs=3, max_position_embeddings=40)
    with pytest.raises(InputError, match="language embeddings"):
        Embedder.from_pretrained(directory).save_sentence_transformers(tmp_path / "out")
    assert not (tmp_path / "out").exists()


@requires_st
@pytest.mark.parametrize("pooling", ["mean", "first", "max"])
def test_sentence_transformers_loads_the_same_model(checkpoint, tmp_path, pooling):
    from sentence_transformers import SentenceTransformer

    embedder = Embedder.from_pretrained(checkpoint, pooling=pooling)
    normalize = pooling == "mean"  # one case with the Normalize module
    embedder.save_sentence_transformers(tmp_path / "st", normalize_embeddings=normalize)
    model = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    theirs = model.encode(SENTENCES, prompt="q : ")
    ours = embedder.encode(SENTENCES, prompt="q : ", normalize_embeddings=normalize)
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)
    if pooling != "mean":
        return  # the rest does not depend on the pooling
    their_tokens = model.encode(SENTENCES, output_value="token_embeddings")
    our_tokens = embedder.encode(SENTENCES, output_value="token_embeddings")
    for a, b in zip(their_tokens, our_tokens):
        np.testing.assert_allclose(b, a.numpy(), atol=TOL, rtol=0)
    for name in ("cosine", "dot", "euclidean", "manhattan"):
        model.similarity_fn_name = embedder.similarity_fn_name = name
        np.testing.assert_allclose(embedder.similarity(ours, ours[:2]), model.similarity(theirs, theirs[:2]), atol=1e-4)
    # sentence-transformers' own quantization of their vectors equals ours of ours (up to a bucket edge)
    from sentence_transformers import quantize_embeddings as st_quantize

    for precision in ("ubinary", "int8"):
        diff = np.abs(
            st_quantize(theirs, precision).astype(int)
            - embedder.encode(SENTENCES, prompt="q : ", normalize_embeddings=normalize, precision=precision).astype(int)
        )
        assert diff.max() <= (1 if precision == "int8" else 0)
