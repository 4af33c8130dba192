"""XLM's word-level preprocessing before BPE: the Moses steps of a language, Romanian's extra step, lowercasing.

These are the steps of transformers' `XLMTokenizer._tokenize(text, lang=...)` (and of the original XLM
preprocessing, `tokenize.sh -l $lang` then `lowercase_and_remove_accent.py`), called through the same functions
(transformers' module-level helpers and sacremoses' classes), so the words are the reference's by construction.

Which rules: the models were trained on each language's own Moses rules, so `rules="language"` (the default
everywhere in xlm-flax) applies them. transformers 5's `XLMTokenizer.tokenize(text, lang=...)` and
`tokenizer(text, lang=...)` drop `lang` on the way to `_tokenize` (`PreTrainedTokenizer.tokenize` calls
`self._tokenize(token)` without the keyword arguments), so every language gets the English rules there;
`rules="transformers"` reproduces that.
"""

from __future__ import annotations

from typing import Literal

RULES = ("language", "transformers")


Rules = Literal["language", "transformers"]


# Languages XLMTokenizer segments with extra packages (KyTea, PyThaiNLP, rjieba) instead of Moses' tokenizer:
# xlm-flax's fast path does not reproduce them and hands such texts to the XLMTokenizer itself.
SEGMENTED_LANGUAGES = frozenset({"ja", "th", "zh"})


def check_rules(rules: str) -> None:
    """Raises `InputError` unless `rules` is one of `RULES`."""
    if rules not in RULES:
        from xlm_flax.errors import InputError

        raise InputError(f"rules={rules!r}: use 'language' (each language's Moses rules) or 'transformers'")


def moses_language(lang: str, rules: str) -> str:
    """The Moses language whose rules tokenize a text of `lang` under `rules` (transformers' default is English)."""
    check_rules(rules)
    return lang if rules == "language" else "en"


class MosesWords:
    """Splits text into the words BPE sees, for one language at a time (sacremoses objects cached per language).

    Args:
        lowercase: Lowercase and strip accents (`do_lowercase_and_remove_accent`; True for the uncased models).
    """

    def __init__(self, lowercase: bool):
        import sacremoses
        from transformers.models.xlm import tokenization_xlm as xlm

        self.lowercase = lowercase
        self._sm = sacremoses
        self._xlm = xlm
        self._normalizers: dict[str, object] = {}
        self._tokenizers: dict[str, object] = {}

    def __call__(self, text: str, lang: str) -> list[str]:
        """The words of `text` under the Moses rules of `lang` (not one of `SEGMENTED_LANGUAGES`)."""
        xlm = self._xlm
        normalizer = self._normalizers.get(lang)
        if normalizer is None:
            normalizer = self._normalizers[lang] = self._sm.MosesPunctNormalizer(lang=lang)
            self._tokenizers[lang] = self._sm.MosesTokenizer(lang=lang)
        text = xlm.replace_unicode_punct(text)
        text = normalizer.normalize(text)
        text = xlm.remove_non_printing_char(text)
        if lang == "ro":
            text = xlm.romanian_preprocessing(text)
        words = self._tokenizers[lang].tokenize(text, return_str=False, escape=False)
        if self.lowercase:
            words = xlm.lowercase_and_remove_accent(words)
        return [word for word in words if word]

    def __getstate__(self) -> dict:
        return {"lowercase": self.lowercase}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["lowercase"])


__all__ = ["RULES", "Rules", "SEGMENTED_LANGUAGES", "MosesWords", "check_rules", "moses_language"]
