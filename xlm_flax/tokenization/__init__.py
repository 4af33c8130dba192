"""Tokenizer glue: transformers' `XLMTokenizer` (Moses + BPE) loaded from a model directory, and language handling.

XLM's vocabulary starts with the same special tokens in every public checkpoint: `<s>`=0, `</s>`=1, `<pad>`=2,
`<unk>`=3, `<special0>`..`<special9>`=4..13; the mask token is `<special1>` (id 5). Words are BPE pieces, a piece
that ends a word carrying a `</w>` suffix (`hello</w>`).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import weakref
from typing import Any

from xlm_flax.checkpoints.hub import hub_options, resolve_file
from xlm_flax.config import XLMConfig
from xlm_flax.errors import DependencyError, InputError, MissingFileError
from xlm_flax.tokens import SPECIAL_TOKENS

logger = logging.getLogger("xlm_flax")


VOCAB_FILE = "vocab.json"


MERGES_FILE = "merges.txt"


# Read when present; transformers writes the first, older hub repositories may have the others.
OPTIONAL_TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def load_tokenizer(path_or_hub_id: str | os.PathLike, **hub: Any) -> Any:
    """Loads transformers' `XLMTokenizer` from a model directory or hub id.

    Args:
        path_or_hub_id: A directory holding `vocab.json` and `merges.txt` (and usually `tokenizer_config.json`),
            or a hub id such as `FacebookAI/xlm-mlm-en-2048`.
        **hub: The hub's arguments: `revision`, `token`, `cache_dir`, `local_files_only`, `subfolder`,
            `force_download`.

    Returns:
        A `transformers.XLMTokenizer`.

    Raises:
        MissingFileError: the directory lacks `vocab.json` or `merges.txt` (the message names the file).
    """
    hub = hub_options(hub)
    try:
        vocab = resolve_file(path_or_hub_id, VOCAB_FILE, hub=hub)
        resolve_file(path_or_hub_id, MERGES_FILE, hub=hub)
    except MissingFileError as e:
        raise MissingFileError(
            f"{e} (the tokenizer needs {VOCAB_FILE} and {MERGES_FILE}; copy them from the original model, or "
            "convert it with `xlm-flax convert`, which copies them)"
        ) from e
    for name in OPTIONAL_TOKENIZER_FILES:
        resolve_file(
            path_or_hub_id, name, required=False, hub=hub
        )  # hub ids: bring them into the same snapshot directory
    from transformers import XLMTokenizer

    from xlm_flax.validation import check_tokenizer_files

    check_tokenizer_files(os.path.dirname(vocab))  # transformers answers damaged files with tracebacks
    return XLMTokenizer.from_pretrained(os.path.dirname(vocab))


class Languages:
    """Maps `lang="en"` to the Moses language code and to the `langs` id a model with language embeddings needs.

    Args:
        config: The model config (`lang2id`, `lang_id`, `n_langs`, `use_lang_emb`).
    """

    def __init__(self, config: XLMConfig):
        self.config = config
        self._warned_default = False

    def resolve(self, lang: str | None) -> tuple[str, int | None]:
        """Returns `(moses_code, lang_id)` for `lang`.

        `lang_id` is None for models without language embeddings. A model that needs a language and gets none uses
        the config's `lang_id` and says so once (per `Languages` object).

        Args:
            lang: A language code such as `"en"`, or None for the config's default.

        Raises:
            InputError: `lang` is not one of the config's languages (the message lists them).
        """
        config = self.config
        known = config.lang2id
        if lang is not None and not isinstance(lang, str):
            raise InputError(f"lang={lang!r}: give a language code such as 'en'")
        if lang is not None and known and lang not in known:
            raise InputError(f"unknown language {lang!r}; this model knows: {', '.join(sorted(known))}")
        if lang is not None:
            return lang, (known[lang] if config.has_lang_embeddings and known else None)
        default_code = config.id2lang.get(config.lang_id, "en")
        if not config.has_lang_embeddings:
            return default_code, None
        if not self._warned_default:
            self._warned_default = True
            logger.warning(
                "this model has language embeddings and no language was given: using the default %r (id %d); "
                "pass lang=... (one of %s)",
                default_code,
                config.lang_id,
                ", ".join(sorted(known)) or "no names in the config",
            )
        return default_code, config.lang_id


# XLMTokenizer segments these languages with optional packages before BPE: language -> (module, how to install).
SEGMENTERS = {
    "ja": ("Mykytea", "KyTea and its Python wrapper (pip install kytea)"),
    "th": ("pythainlp", "PyThaiNLP (pip install pythainlp)"),
    "zh": ("rjieba", "rjieba (pip install rjieba)"),
}


@functools.cache
def check_segmenter(lang: str) -> None:
    """Fails early, with the package to install, when `lang` needs a word segmenter that is missing (transformers
    would log several lines and raise a bare ImportError in the middle of a batch).

    Args:
        lang: Moses language code.

    Raises:
        DependencyError: the segmenter of `lang` is not installed.
    """
    if lang in SEGMENTERS and importlib.util.find_spec(SEGMENTERS[lang][0]) is None:
        raise DependencyError(f"tokenizing lang={lang!r} needs {SEGMENTERS[lang][1]}, which is not installed")


def fast_tokenizer(tokenizer: Any, rules: str = "language") -> Any:
    """The `FastXLMTokenizer` of an `XLMTokenizer` (built once per tokenizer and `rules`, then cached).

    Args:
        tokenizer: A transformers `XLMTokenizer`.
        rules: "language" (each language's Moses rules, what the models were trained on) or "transformers"
            (English rules for every language, as transformers 5's `tokenize(text, lang=...)`).
    """
    from xlm_flax.tokenization.fast import FastXLMTokenizer

    try:
        cached = _FAST.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable: build every time
        cached = {}
    if rules not in cached:
        cached[rules] = FastXLMTokenizer.from_xlm_tokenizer(tokenizer, rules=rules)
    return cached[rules]


_FAST: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def encode_text(tokenizer: Any, text: str, lang: str, *, rules: str = "language") -> list[int]:
    """Token ids of one text with `<s>` and `</s>` around it, tokenized with the Moses rules of `lang`.

    The ids are those of transformers' `XLMTokenizer` with the language's rules (`_tokenize(text, lang=lang)`),
    computed by `FastXLMTokenizer` (Rust BPE); `rules="transformers"` gives what transformers 5's
    `tokenizer(text, lang=lang)` gives (English rules whatever `lang`). A tokenizer that is not an
    `XLMTokenizer` (no Moses step) is called as `tokenizer.encode(text)`.

    Args:
        tokenizer: An `XLMTokenizer` (or another transformers tokenizer).
        text: The text.
        lang: Moses language code.
        rules: "language" (default) or "transformers".

    Raises:
        DependencyError: `lang` needs a word segmenter that is not installed (Japanese, Thai, Chinese).
        InputError: `rules` is neither.
    """
    from xlm_flax.tokenization.rules import check_rules, moses_language

    check_rules(rules)
    if not hasattr(tokenizer, "bpe_ranks"):
        return tokenizer.encode(text)
    check_segmenter(moses_language(lang, rules))
    return fast_tokenizer(tokenizer, rules).encode(text, lang)


def tokenize_text(tokenizer: Any, text: str, lang: str, *, rules: str = "language") -> list[str]:
    """The tokens of `text` (no `<s>`/`</s>`) under the Moses rules of `lang` (see `encode_text`)."""
    if not hasattr(tokenizer, "bpe_ranks"):
        return tokenizer.tokenize(text)
    return tokenizer.convert_ids_to_tokens(encode_text(tokenizer, text, lang, rules=rules)[1:-1])


def truncate(ids: list[int], max_length: int, eos_index: int) -> list[int]:
    """Cuts `ids` to `max_length` tokens, keeping the closing `</s>` (as transformers' truncation does).

    Args:
        ids: Token ids ending with `</s>`.
        max_length: Tokens to keep.
        eos_index: Id of `</s>`.
    """
    if len(ids) <= max_length:
        return ids
    return [*ids[: max_length - 1], eos_index]


__all__ = [
    "Languages",
    "MERGES_FILE",
    "OPTIONAL_TOKENIZER_FILES",
    "SEGMENTERS",
    "SPECIAL_TOKENS",
    "VOCAB_FILE",
    "check_segmenter",
    "encode_text",
    "fast_tokenizer",
    "load_tokenizer",
    "tokenize_text",
    "truncate",
]
