"""Learns a joint BPE vocabulary for all the corpus's languages and writes a from-scratch model directory.

Each language's text goes through XLMTokenizer's own pre-processing with that language's Moses rules (punctuation
normalisation, tokenisation, lowercasing and accent removal, as `xlm-mlm-tlm-xnli15-1024`), so the merges are
learned on exactly the words XLMTokenizer will split; the `tokenizers` trainer then learns one BPE over all of them.
Every language contributes the same number of sentences (the smallest language's count, each a stable sample), so
no language dominates the merges. The output directory gets:

- `vocab.json` with XLM's layout (`<s>`=0, `</s>`=1, `<pad>`=2, `<unk>`=3, `<special0..9>`=4..13, the mask token is
  `<special1>`), then the learned symbols, word-final ones with the `</w>` suffix; `merges.txt` in learned order;
- `tokenizer_config.json`: XLMTokenizer, lowercasing and accent removal, `lang2id` / `id2lang`;
- `config.json`: a small XLM (`XLMWithLMHeadModel`) with `lang2id`, `id2lang`, `n_langs` and `use_lang_emb=True`,
  to be trained from scratch by `train_models.py`.

Usage:
    python -m benchmarks.crosslingual.train_vocab /tmp/xl-corpus /tmp/xl-model --vocab-size 8000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

# One pre-processing for both vocabularies: XLMTokenizer's, with the language's Moses rules.
from benchmarks.build_small_tokenizer import pretokenize

SPECIALS = ["<s>", "</s>", "<pad>", "<unk>"] + [f"<special{i}>" for i in range(10)]


def _stable_sample(lines: list[str], n: int) -> list[str]:
    return sorted(lines, key=lambda line: hashlib.sha256(line.encode("utf-8")).digest())[:n]


def learn(texts: dict[str, list[str]], vocab_size: int, min_frequency: int = 2) -> tuple[dict[str, int], list[str]]:
    """Joint BPE over `{lang: sentences}`: XLM's specials first, then the learned symbols; and the merges."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    words = [" ".join(w) for lang, lines in texts.items() for w in pretokenize(lines, lang)]
    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # the words are already Moses tokens
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIALS),
        min_frequency=min_frequency,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tokenizer.train_from_iterator(words, trainer=trainer)
    learned = json.loads(tokenizer.to_str())["model"]
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for token, _ in sorted(learned["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    merges = [m if isinstance(m, str) else " ".join(m) for m in learned["merges"]]
    return vocab, merges


def model_config(vocab_size: int, langs: list[str], *, emb_dim: int, layers: int, heads: int, max_positions: int):
    """The small multilingual XLM's config (language embeddings on, as xlm-mlm-tlm-xnli15-1024)."""
    from xlm_flax import XLMConfig

    lang2id = {lang: i for i, lang in enumerate(langs)}
    return XLMConfig(
        vocab_size=vocab_size,
        emb_dim=emb_dim,
        n_layers=layers,
        n_heads=heads,
        n_langs=len(langs),
        use_lang_emb=True,
        max_position_embeddings=max_positions,
        dropout=0.1,
        attention_dropout=0.1,
        embed_init_std=emb_dim**-0.5,
        lang2id=lang2id,
        lang_id=lang2id.get("en", 0),
        architectures=("XLMWithLMHeadModel",),
    )


def _write_json(path: str, value) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=0 if path.endswith("vocab.json") else 2)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", help="build_corpus.py's output directory (reads train.<lang> and manifest.json)")
    parser.add_argument("out", help="output model directory")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--min-frequency", type=int, default=2)
    parser.add_argument("--emb-dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--max-positions", type=int, default=128, help="longest row (a TLM pair is two sentences)")
    parser.add_argument("--limit", type=int, help="at most this many sentences per language (quick runs)")
    args = parser.parse_args(argv)

    manifest_path = os.path.join(args.corpus, "manifest.json")
    if not os.path.isfile(manifest_path):
        print(f"error: {manifest_path} not found; build the corpus with build_corpus.py first", file=sys.stderr)
        return 2
    with open(manifest_path, encoding="utf-8") as f:
        langs = json.load(f)["languages"]
    texts = {}
    for lang in langs:
        with open(os.path.join(args.corpus, f"train.{lang}"), encoding="utf-8") as f:
            texts[lang] = [line.rstrip("\n") for line in f if line.strip()]
    n = min(len(lines) for lines in texts.values())
    if args.limit:
        n = min(n, args.limit)
    texts = {lang: _stable_sample(lines, n) for lang, lines in texts.items()}
    vocab, merges = learn(texts, args.vocab_size, args.min_frequency)

    os.makedirs(args.out, exist_ok=True)
    _write_json(os.path.join(args.out, "vocab.json"), vocab)
    with open(os.path.join(args.out, "merges.txt.tmp"), "w", encoding="utf-8") as f:
        f.write("".join(merge + "\n" for merge in merges))
    os.replace(os.path.join(args.out, "merges.txt.tmp"), os.path.join(args.out, "merges.txt"))
    config = model_config(
        len(vocab), langs, emb_dim=args.emb_dim, layers=args.layers, heads=args.heads, max_positions=args.max_positions
    )
    _write_json(
        os.path.join(args.out, "tokenizer_config.json"),
        {
            "tokenizer_class": "XLMTokenizer",
            "do_lowercase_and_remove_accent": True,
            "lang2id": config.lang2id,
            "id2lang": {str(i): lang for i, lang in config.id2lang.items()},
        },
    )
    with open(os.path.join(args.out, "config.json.tmp"), "w", encoding="utf-8") as f:
        f.write(config.to_json_string())
    os.replace(os.path.join(args.out, "config.json.tmp"), os.path.join(args.out, "config.json"))
    print(
        f"vocabulary of {len(vocab)} tokens, {len(merges)} merges, {n} sentences per language of {langs} -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
