"""Cross-lingual corpus, vocabulary and training scripts (issue 16)."""
