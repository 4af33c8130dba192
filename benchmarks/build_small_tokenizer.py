"""Learns a BPE vocabulary with the `tokenizers` library and writes it in XLMTokenizer's format.

The text is first put through XLMTokenizer's own English pre-processing (Moses punctuation normalisation and
tokenisation, then lowercasing and accent removal), so that the merges are learned on exactly the words
XLMTokenizer will later split. The output directory gets:

- `vocab.json`: token -> id with XLM's special-token layout (`<s>`=0, `</s>`=1, `<pad>`=2, `<unk>`=3,
  `<special0>`..`<special9>`=4..13; the mask token is `<special1>`, id 5), then the learned symbols; a symbol that
  ends a word carries the `</w>` suffix, as in XLM's vocabularies.
- `merges.txt`: one merge per line, `left right`, in the order they were learned (XLMTokenizer's merge ranks).
- `tokenizer_config.json`: the XLMTokenizer class and its lowercasing option.

Usage:
    python benchmarks/build_small_tokenizer.py CORPUS.txt OUT_DIR --vocab-size 4000
"""

from __future__ import annotations

import argparse
import json
import os

SPECIALS = ["<s>", "</s>", "<pad>", "<unk>"] + [f"<special{i}>" for i in range(10)]


def pretokenize(lines, lang: str = "en"):
    """XLMTokenizer's pre-processing of each line with `lang`'s Moses rules: a list of words per line."""
    import sacremoses
    from transformers.models.xlm.tokenization_xlm import (
        lowercase_and_remove_accent,
        remove_non_printing_char,
        replace_unicode_punct,
    )

    normalizer = sacremoses.MosesPunctNormalizer(lang=lang)
    tokenizer = sacremoses.MosesTokenizer(lang=lang)
    for line in lines:
        text = remove_non_printing_char(normalizer.normalize(replace_unicode_punct(line)))
        yield lowercase_and_remove_accent(tokenizer.tokenize(text, return_str=False, escape=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", help="training text, one sentence per line")
    parser.add_argument("out", help="output directory")
    parser.add_argument("--vocab-size", type=int, default=4000)
    parser.add_argument("--min-frequency", type=int, default=2)
    args = parser.parse_args()

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    with open(args.corpus, encoding="utf-8") as f:
        words = [" ".join(w) for w in pretokenize(line.strip() for line in f)]
    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # the words are already Moses tokens
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab_size - len(SPECIALS),
        min_frequency=args.min_frequency,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tokenizer.train_from_iterator(words, trainer=trainer)
    learned = json.loads(tokenizer.to_str())["model"]
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for token, _ in sorted(learned["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    merges = [m if isinstance(m, str) else " ".join(m) for m in learned["merges"]]

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, indent=0)
    with open(os.path.join(args.out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("".join(merge + "\n" for merge in merges))
    with open(os.path.join(args.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "XLMTokenizer", "do_lowercase_and_remove_accent": True}, f, indent=2)
    print(f"vocabulary of {len(vocab)} tokens, {len(merges)} merges -> {args.out}")


if __name__ == "__main__":
    main()
