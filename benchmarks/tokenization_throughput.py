"""Tokenization sentences/s: transformers' XLMTokenizer (the reference, language rules) against FastXLMTokenizer in
this process and in N worker processes (`ParallelEncoder`), on real translated text of five languages.

    python -m benchmarks.tokenization_throughput --sentences 2000 --workers 1,2 --out tok.json

The text is the gettext catalogs of this machine (`tests/gettext_corpus.py`, the corpus of the identity test); the
vocabulary is BPE learnt on it (8,000 pieces, uncased). Every figure is sentences per second of wall time, best of
`--repeats`; worker figures exclude the pool's start (one warm-up pass first) and are also given per worker process.
Ids are checked equal to the reference's on every sentence.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from functools import partial

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))  # the identity test's corpus reader and vocabulary trainer

from gettext_corpus import catalog_sentences, train_xlm_vocabulary  # noqa: E402

from xlm_flax.tokenization.fast import FastXLMTokenizer, reference_encode  # noqa: E402
from xlm_flax.tokenization.rules import MosesWords  # noqa: E402
from xlm_flax.tokenization.workers import ParallelEncoder  # noqa: E402


def encode_reference(tokenizer, sentences: list[str], lang: str) -> list[list[int]]:
    """The reference's ids, one sentence at a time (as transformers tokenizes)."""
    return [reference_encode(tokenizer, s, lang) for s in sentences]


def best_rate(fn, n: int, repeats: int) -> float:
    """Best sentences/s of `repeats` calls of `fn` over `n` sentences."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--languages", default="de,fr,es,ru,pl")
    p.add_argument("--sentences", type=int, default=2000, help="per language")
    p.add_argument("--workers", default="1,2", help="worker process counts")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", help="JSON results file")
    args = p.parse_args(argv)
    from transformers import XLMTokenizer

    languages = args.languages.split(",")
    workers = [int(w) for w in args.workers.split(",") if w]
    corpus = {lang: catalog_sentences(lang, limit=args.sentences, seed=2) for lang in languages}
    words = MosesWords(lowercase=True)
    with tempfile.TemporaryDirectory() as directory:
        texts = [s for sentences in corpus.values() for s in sentences[:1000]]
        texts += [" ".join(words(s, lang)) for lang, sentences in corpus.items() for s in sentences[:1000]]
        train_xlm_vocabulary(directory, texts)
        reference = XLMTokenizer(os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt"))
    fast = FastXLMTokenizer.from_xlm_tokenizer(reference)
    english_rules = FastXLMTokenizer.from_xlm_tokenizer(reference, rules="transformers")
    results: dict = {"cpu_count": os.cpu_count(), "sentences_per_language": args.sentences, "languages": {}}
    pools = {n: ParallelEncoder(fast, n, chunk_size=256) for n in workers}
    try:
        for lang, sentences in corpus.items():
            expected = [reference_encode(reference, s, lang) for s in sentences]
            row = {"sentences": len(sentences)}
            n_sentences = len(sentences)
            row["reference"] = best_rate(
                partial(encode_reference, reference, sentences, lang), n_sentences, args.repeats
            )
            row["fast_in_process"] = best_rate(partial(fast.encode_batch, sentences, lang), n_sentences, args.repeats)
            identical = fast.encode_batch(sentences, lang) == expected
            for n, pool in pools.items():
                assert pool.encode(sentences[:512], lang) == expected[:512]  # warm-up: workers started and loaded
                row[f"workers_{n}"] = best_rate(partial(pool.encode, sentences, lang), n_sentences, args.repeats)
                row[f"workers_{n}_per_worker"] = row[f"workers_{n}"] / n
                identical &= pool.encode(sentences, lang) == expected
            row["identical_ids"] = bool(identical)
            # Share of sentences whose ids differ under transformers' own behaviour (English rules for every lang).
            english = english_rules.encode_batch(sentences, lang)
            row["differ_with_english_rules"] = sum(a != b for a, b in zip(english, expected)) / len(sentences)
            results["languages"][lang] = row
            print(json.dumps({lang: row}), file=sys.stderr, flush=True)
    finally:
        for pool in pools.values():
            pool.close()
    header = ["language", "reference", "fast (1 process)"] + [f"{n} workers (per worker)" for n in workers]
    header += ["identical", "differ with English rules"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for lang, row in results["languages"].items():
        cells = [lang, f"{row['reference']:,.0f}", f"{row['fast_in_process']:,.0f}"]
        cells += [f"{row[f'workers_{n}']:,.0f} ({row[f'workers_{n}_per_worker']:,.0f})" for n in workers]
        cells += [str(row["identical_ids"]), f"{row['differ_with_english_rules']:.1%}"]
        print("| " + " | ".join(cells) + " |")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
