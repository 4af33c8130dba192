"""`FastXLMTokenizer`: XLMTokenizer's token ids, with the BPE in Rust (`tokenizers`).

The pipeline is the reference's, step by step: special tokens are split off first (as
`PreTrainedTokenizer.tokenize` does: XLM's special tokens strip nothing around them), the rest goes through the
language's Moses steps and lowercasing (`MosesWords`, the same sacremoses and transformers functions), and the words
through a Rust `tokenizers.models.BPE(end_of_word_suffix="</w>")` built from the same vocabulary and merges.

Why the Rust BPE is exact: XLM's Python BPE merges the lowest-ranked pair everywhere, then looks the pieces up, an
unknown piece becoming `<unk>`; the Rust BPE merges by rank too but only over pieces of its vocabulary. The Rust model
is therefore given every piece that a merge reads or writes (ids after the real vocabulary), and those ids are mapped
back to `<unk>` afterwards. For merges learnt by BPE (a merge's parts are made by earlier merges) the order of merges
is the same in both.

Not reproduced, handed to the `XLMTokenizer` itself: Japanese, Thai and Chinese (`SEGMENTED_LANGUAGES`, segmented
by KyTea, PyThaiNLP and rjieba).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from xlm_flax.tokenization.rules import SEGMENTED_LANGUAGES, MosesWords, moses_language

_REFERENCE_LOCK = threading.Lock()


def reference_tokenize(tokenizer: Any, text: str, lang: str) -> list[str]:
    """transformers' `XLMTokenizer.tokenize(text)` with the Moses rules of `lang` (what `tokenize(text, lang=lang)`
    was meant to do): special tokens split off, each remaining piece through `_tokenize(piece, lang=lang)`.

    Args:
        tokenizer: An `XLMTokenizer`.
        text: The text.
        lang: Moses language code.
    """
    with _REFERENCE_LOCK:
        # tokenize() calls self._tokenize(piece) without lang: bind it on the instance for this call.
        tokenizer._tokenize = lambda piece, **kwargs: type(tokenizer)._tokenize(tokenizer, piece, lang=lang)
        try:
            return tokenizer.tokenize(text)
        finally:
            del tokenizer._tokenize


def reference_encode(tokenizer: Any, text: str, lang: str) -> list[int]:
    """`<s>` + ids of `reference_tokenize(tokenizer, text, lang)` + `</s>`."""
    ids = tokenizer.convert_tokens_to_ids(reference_tokenize(tokenizer, text, lang))
    return tokenizer.build_inputs_with_special_tokens(ids)


def read_merges(path: str) -> list[tuple[str, str]]:
    """The merges of an XLM `merges.txt` as `XLMTokenizer` reads them (one `a b [count]` per line, last line
    dropped when the file ends with a newline)."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")[:-1]
    return [tuple(line.split()[:2]) for line in lines]


class FastXLMTokenizer:
    """Token ids of XLM's tokenizer (Moses + BPE), with the BPE in Rust; picklable, for worker processes.

    Args:
        vocab: Token -> id (`vocab.json`).
        merges: BPE merges in rank order.
        lowercase: Lowercase and strip accents (`do_lowercase_and_remove_accent`).
        special_tokens: Tokens split off the text before Moses (token -> id), XLM's 14 usually.
        bos_id: Id put first.
        eos_id: Id put last.
        unk_token: The unknown token.
        rules: "language" (each language's Moses rules, the default) or "transformers" (English rules for every
            language, as transformers 5's `tokenize(text, lang=...)` does).
        fallback: The `XLMTokenizer`, used for the languages not reproduced here (see the module docstring).
    """

    def __init__(
        self,
        vocab: dict[str, int],
        merges: Sequence[tuple[str, str]],
        *,
        lowercase: bool,
        special_tokens: dict[str, int],
        bos_id: int,
        eos_id: int,
        unk_token: str = "<unk>",
        rules: str = "language",
        fallback: Any = None,
    ):
        moses_language("en", rules)  # validates rules
        self.vocab, self.merges = dict(vocab), list(merges)
        self.lowercase, self.special_tokens = lowercase, dict(special_tokens)
        self.bos_id, self.eos_id, self.unk_token, self.rules = bos_id, eos_id, unk_token, rules
        self.unk_id = self.vocab[unk_token]
        self.fallback = fallback
        self._build()

    def _build(self) -> None:
        from tokenizers import Tokenizer
        from tokenizers.models import BPE

        extended = dict(self.vocab)
        self._first_extra = max(extended.values(), default=-1) + 1
        for a, b in self.merges:
            for piece in (a, b, a + b):
                extended.setdefault(piece, len(extended) - len(self.vocab) + self._first_extra)
        self._rust = Tokenizer(BPE(extended, self.merges, unk_token=self.unk_token, end_of_word_suffix="</w>"))
        names = sorted(self.special_tokens, key=len, reverse=True)
        self._special = re.compile("(" + "|".join(map(re.escape, names)) + ")") if names else None
        self._words = MosesWords(self.lowercase)

    @classmethod
    def from_xlm_tokenizer(cls, tokenizer: Any, *, rules: str = "language") -> FastXLMTokenizer:
        """Builds one from a transformers `XLMTokenizer` (its vocabulary, merges, casing and special tokens)."""
        ranks = tokenizer.bpe_ranks
        return cls(
            tokenizer.encoder,
            sorted(ranks, key=ranks.get),
            lowercase=bool(tokenizer.do_lowercase_and_remove_accent),
            special_tokens=tokenizer.get_added_vocab(),
            bos_id=tokenizer.bos_token_id,
            eos_id=tokenizer.sep_token_id,
            unk_token=tokenizer.unk_token,
            rules=rules,
            fallback=tokenizer,
        )

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for name in ("_rust", "_special", "_words"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._build()

    def is_exact(self, lang: str) -> bool:
        """Whether `lang` runs on the fast path (else on the `XLMTokenizer` fallback)."""
        return moses_language(lang, self.rules) not in SEGMENTED_LANGUAGES

    def _pieces(self, text: str, lang: str) -> list[list[str] | int]:
        # Words of the text between special tokens, and the special tokens' ids, in order.
        parts = self._special.split(text) if self._special is not None else [text]
        out: list[list[str] | int] = []
        for i, part in enumerate(parts):
            if i % 2:
                out.append(self.special_tokens[part])
            elif part:
                out.append(self._words(part, lang))
        return out

    def encode_batch(self, texts: Iterable[str], lang: str, *, add_special_tokens: bool = True) -> list[list[int]]:
        """Token ids of each text (with `<s>` ... `</s>` unless `add_special_tokens=False`).

        Args:
            texts: The texts.
            lang: Language code.
            add_special_tokens: Frame each text with `<s>` and `</s>`.

        Raises:
            DependencyError: `lang` falls back to `XLMTokenizer` and needs a segmenter that is not installed.
            InputError: a fallback language without a fallback tokenizer.
        """
        texts = list(texts)
        code = moses_language(lang, self.rules)
        if code in SEGMENTED_LANGUAGES:
            return [self._fallback_ids(text, code, add_special_tokens) for text in texts]
        pieces = [self._pieces(text, code) for text in texts]
        words = [p for text_pieces in pieces for p in text_pieces if not isinstance(p, int)]
        encoded = iter(self._rust.encode_batch(words, is_pretokenized=True, add_special_tokens=False))
        first_extra, unk = self._first_extra, self.unk_id
        result = []
        for text_pieces in pieces:
            ids = [self.bos_id] if add_special_tokens else []
            for p in text_pieces:
                if isinstance(p, int):
                    ids.append(p)
                else:
                    ids.extend(i if i < first_extra else unk for i in next(encoded).ids)
            if add_special_tokens:
                ids.append(self.eos_id)
            result.append(ids)
        return result

    def encode(self, text: str, lang: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids of one text; see `encode_batch`."""
        return self.encode_batch([text], lang, add_special_tokens=add_special_tokens)[0]

    def _fallback_ids(self, text: str, code: str, add_special_tokens: bool) -> list[int]:
        from xlm_flax.tokenization import check_segmenter

        if self.fallback is None:
            from xlm_flax.errors import InputError

            raise InputError(f"lang={code!r} needs the XLMTokenizer itself; build with from_xlm_tokenizer")
        check_segmenter(code)
        tokens = reference_tokenize(self.fallback, text, code)
        ids = self.fallback.convert_tokens_to_ids(tokens)
        return self.fallback.build_inputs_with_special_tokens(ids) if add_special_tokens else ids


__all__ = ["FastXLMTokenizer", "read_merges", "reference_encode", "reference_tokenize"]
