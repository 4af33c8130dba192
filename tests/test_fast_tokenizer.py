"""FastXLMTokenizer gives the ids of the reference (transformers' XLMTokenizer with the language's Moses rules) on real
translated text in five languages, uncased and cased; its fallback, special tokens, unknown pieces, rules option."""

from __future__ import annotations

import importlib.machinery
import os
import sys
import time
import types

import pytest
from gettext_corpus import catalog_sentences, train_xlm_vocabulary
from helpers import build_test_tokenizer

from xlm_flax.errors import InputError
from xlm_flax.tokenization import encode_text, load_tokenizer
from xlm_flax.tokenization.fast import FastXLMTokenizer, reference_encode
from xlm_flax.tokenization.rules import MosesWords

LANGUAGES = ("de", "fr", "es", "ru", "pl")
# Sentences per language and casing checked against the reference in CI (the reference runs ~1-3k sentences/s);
# XLM_FLAX_TOKENIZER_SENTENCES=10000 runs the full check of the README and CHANGELOG (10,000 per language).
SENTENCES = int(os.environ.get("XLM_FLAX_TOKENIZER_SENTENCES", "500"))


@pytest.fixture(scope="module")
def corpus():
    return {lang: catalog_sentences(lang, limit=max(SENTENCES, 1000), seed=1) for lang in (*LANGUAGES, "ro")}


@pytest.fixture(scope="module")
def vocabulary(tmp_path_factory, corpus):
    # Learnt on the same catalogs (raw and lowercased words) so that merges fire on the test text.
    directory = tmp_path_factory.mktemp("gettext-bpe")
    words = MosesWords(lowercase=True)
    texts = [s for sentences in corpus.values() for s in sentences[:1000]]
    texts += [" ".join(words(s, lang)) for lang, sentences in corpus.items() for s in sentences[:1000]]
    train_xlm_vocabulary(directory, texts, vocab_size=8000)
    return str(directory)


def _xlm_tokenizer(directory: str, lowercase: bool):
    from transformers import XLMTokenizer

    return XLMTokenizer(
        os.path.join(directory, "vocab.json"),
        os.path.join(directory, "merges.txt"),
        do_lowercase_and_remove_accent=lowercase,
    )


@pytest.mark.parametrize("lowercase", [True, False], ids=["uncased", "cased"])
@pytest.mark.parametrize("lang", [*LANGUAGES, "ro"])
def test_same_ids_as_the_reference(vocabulary, corpus, lang, lowercase):
    tokenizer = _xlm_tokenizer(vocabulary, lowercase)
    fast = FastXLMTokenizer.from_xlm_tokenizer(tokenizer)
    sentences = corpus[lang][: SENTENCES if lang != "ro" else 500]
    start = time.perf_counter()
    expected = [reference_encode(tokenizer, s, lang) for s in sentences]
    reference_s = time.perf_counter() - start
    start = time.perf_counter()
    got = fast.encode_batch(sentences, lang)
    fast_s = time.perf_counter() - start
    print(f"{lang} lowercase={lowercase}: {len(sentences)} sentences, reference {reference_s:.2f}s, fast {fast_s:.2f}s")
    mismatches = [s for s, e, g in zip(sentences, expected, got) if e != g]
    assert not mismatches, f"{len(mismatches)} of {len(sentences)} differ, e.g. {mismatches[:3]}"
    # The test means something: BPE merged (fewer tokens than characters) and the vocabulary covers the text.
    n_tokens = sum(len(e) - 2 for e in expected)
    assert n_tokens < 0.5 * sum(len(s.replace(" ", "")) for s in sentences)
    assert sum(e.count(tokenizer.unk_token_id) for e in expected) < 0.01 * n_tokens


def test_language_rules_are_the_default_and_transformers_rules_an_option(tmp_path):
    from transformers import XLMTokenizer

    build_test_tokenizer(tmp_path, words=("l'", "homme", "qu'", "il"))
    tokenizer = XLMTokenizer.from_pretrained(str(tmp_path))
    text = "l'homme qu'il"
    # transformers 5 drops lang= on the way to _tokenize: French text gets the English rules ("l 'homme").
    english = tokenizer(text, lang="fr")["input_ids"]
    assert english == tokenizer(text)["input_ids"]
    french = tokenizer.build_inputs_with_special_tokens(
        tokenizer.convert_tokens_to_ids(tokenizer._tokenize(text, lang="fr"))
    )
    assert french != english
    assert tokenizer.convert_ids_to_tokens(french)[1:3] == ["l'</w>", "homme</w>"]
    assert FastXLMTokenizer.from_xlm_tokenizer(tokenizer).encode(text, "fr") == french
    assert FastXLMTokenizer.from_xlm_tokenizer(tokenizer, rules="transformers").encode(text, "fr") == english
    assert encode_text(tokenizer, text, "fr") == french
    assert encode_text(tokenizer, text, "fr", rules="transformers") == english
    with pytest.raises(InputError, match="rules='moses'"):
        FastXLMTokenizer.from_xlm_tokenizer(tokenizer, rules="moses")


def test_special_tokens_in_text_and_empty_text(tmp_path):
    build_test_tokenizer(tmp_path)
    tokenizer = load_tokenizer(str(tmp_path))
    fast = FastXLMTokenizer.from_xlm_tokenizer(tokenizer)
    texts = ["the <special1> of france.", "<s>the</s><special1><special1>", "", "   ", "a<pad>b <unk> c"]
    assert fast.encode_batch(texts, "en") == [reference_encode(tokenizer, t, "en") for t in texts]
    assert fast.encode("the <special1>", "en")[2] == 5


def test_merges_whose_pieces_are_not_in_the_vocabulary_give_unk(tmp_path):
    # XLM's Python BPE merges regardless of the vocabulary and maps unknown pieces to <unk>; so must the fast path.
    from transformers import XLMTokenizer

    build_test_tokenizer(tmp_path, words=("hello", "help"))
    tokenizer = XLMTokenizer.from_pretrained(str(tmp_path))
    for piece in ("hel", "hello</w>"):
        del tokenizer.encoder[piece]
    fast = FastXLMTokenizer.from_xlm_tokenizer(tokenizer)
    texts = ["hello help", "hell hello", "help hel"]
    expected = [reference_encode(tokenizer, t, "en") for t in texts]
    assert any(tokenizer.unk_token_id in e[1:-1] for e in expected)
    assert fast.encode_batch(texts, "en") == expected


def test_segmented_languages_fall_back_to_xlm_tokenizer(tmp_path, monkeypatch):
    # zh goes through rjieba inside XLMTokenizer; a stand-in module shows the fast tokenizer hands zh text to it.
    build_test_tokenizer(tmp_path, words=("ab", "cd"))
    tokenizer = load_tokenizer(str(tmp_path))
    rjieba = types.ModuleType("rjieba")
    rjieba.__spec__ = importlib.machinery.ModuleSpec("rjieba", None)
    rjieba.cut = lambda text: [text[i : i + 2] for i in range(0, len(text), 2)]
    monkeypatch.setitem(sys.modules, "rjieba", rjieba)
    fast = FastXLMTokenizer.from_xlm_tokenizer(tokenizer)
    assert not fast.is_exact("zh") and fast.is_exact("en")
    ids = fast.encode("abcdab", "zh")
    assert ids == reference_encode(tokenizer, "abcdab", "zh")
    assert tokenizer.convert_ids_to_tokens(ids) == ["<s>", "ab</w>", "cd</w>", "ab</w>", "</s>"]
    # Without the reference tokenizer there is nothing to fall back to.
    bare = FastXLMTokenizer(tokenizer.encoder, [], lowercase=True, special_tokens={}, bos_id=0, eos_id=1, fallback=None)
    with pytest.raises(InputError, match="needs the XLMTokenizer"):
        bare.encode("abcd", "zh")


def test_pickles_for_worker_processes(tmp_path):
    import pickle

    build_test_tokenizer(tmp_path)
    fast = FastXLMTokenizer.from_xlm_tokenizer(load_tokenizer(str(tmp_path)))
    clone = pickle.loads(pickle.dumps(fast))
    assert clone.encode_batch(["the cat, the dog."], "en") == fast.encode_batch(["the cat, the dog."], "en")


def test_worker_processes_keep_order_and_bound_the_queue(tmp_path):
    from xlm_flax.tokenization.workers import ParallelEncoder

    build_test_tokenizer(tmp_path)
    tokenizer = load_tokenizer(str(tmp_path))
    fast = FastXLMTokenizer.from_xlm_tokenizer(tokenizer)
    texts = [f"the {'cat ' * (i % 7)}sat on {i} mats." for i in range(300)]
    consumed = []

    def stream():
        for text in texts:
            consumed.append(text)
            yield text

    with ParallelEncoder(fast, 2, chunk_size=10, max_pending=3) as encoder:
        results = encoder.imap(stream(), "en")
        first = next(results)
        assert len(consumed) <= (3 + 1) * 10  # texts are read as results are taken, not all at once
        got = [first, *results]
    assert got == [reference_encode(tokenizer, t, "en") for t in texts]
    assert ParallelEncoder(fast, 0, chunk_size=7).encode(texts[:20], "en") == got[:20]
    with pytest.raises(InputError, match="workers=-1"):
        ParallelEncoder(fast, -1)
