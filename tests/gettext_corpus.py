"""Real translated text for tokenizer tests: the gettext catalogs of this machine, and a BPE vocabulary trained on it.

`/usr/share/locale/<lang>/LC_MESSAGES/*.mo` (Debian packages' translations) hold each message in English (msgid) and
in the language (msgstr). `catalog_sentences` reads the translations of a language; `train_xlm_vocabulary` writes an
XLM-layout tokenizer (`vocab.json`, `merges.txt`, `tokenizer_config.json`) learnt on them with the Rust trainer.
"""

from __future__ import annotations

import gettext
import glob
import json
import os
import random
from collections.abc import Sequence

from xlm_flax.tokens import SPECIAL_TOKENS

LOCALE_DIR = "/usr/share/locale"


def catalog_sentences(lang: str, *, limit: int | None = None, seed: int = 0) -> list[str]:
    """Distinct non-empty one-line translations of `lang` in the catalogs, sorted, then a seeded sample of `limit`.

    Plural forms and multi-line messages are split into their lines; format strings are kept as they are (they are
    real text a tokenizer meets).
    """
    found: set[str] = set()
    for path in sorted(glob.glob(os.path.join(LOCALE_DIR, lang, "LC_MESSAGES", "*.mo"))):
        try:
            with open(path, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog
        except (OSError, UnicodeDecodeError):
            continue
        for key, value in catalog.items():
            if not key or not isinstance(value, str):
                continue  # the header entry
            for line in value.splitlines():
                if line.strip():
                    found.add(line.strip())
    sentences = sorted(found)
    if limit is not None and len(sentences) > limit:
        sentences = random.Random(seed).sample(sentences, limit)
    return sentences


def train_xlm_vocabulary(directory: str | os.PathLike, texts: Sequence[str], *, vocab_size: int = 8000) -> int:
    """Trains a BPE vocabulary on `texts` (whitespace words, `</w>` ending a word, as XLM's) and writes it with XLM's
    special-token layout (`<s>`=0, `</s>`=1, `<pad>`=2, `<unk>`=3, `<special0..9>`=4..13). Returns its size."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), end_of_word_suffix="</w>", show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    state = json.loads(tokenizer.to_str())["model"]
    vocab = state["vocab"]
    assert [vocab[t] for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["merges"]]
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("".join(f"{m}\n" for m in merges))
    return len(vocab)
