"""Tokenizer glue: a language whose word segmenter is missing fails early with the package to install."""

import pytest
from helpers import build_test_tokenizer

from xlm_flax import tokenization
from xlm_flax.errors import DependencyError
from xlm_flax.tokenization import encode_text, load_tokenizer


def test_missing_segmenter_is_a_dependency_error(tmp_path, monkeypatch):
    build_test_tokenizer(tmp_path)
    tokenizer = load_tokenizer(str(tmp_path))
    monkeypatch.setitem(tokenization.SEGMENTERS, "zh", ("xlm_flax_no_such_segmenter", "the segmenter (pip install x)"))
    tokenization.check_segmenter.cache_clear()
    try:
        with pytest.raises(DependencyError, match=r"lang='zh' needs the segmenter \(pip install x\)"):
            encode_text(tokenizer, "你好", "zh")
        # Languages without a segmenter are untouched.
        assert encode_text(tokenizer, "the cat", "en")[0] == 0
    finally:
        tokenization.check_segmenter.cache_clear()
