"""Benchmarks of xlm-flax against transformers' PyTorch XLM on the same machine (`python -m benchmarks.run`).

Uses only the public API of `xlm_flax`; see benchmarks/README.md for what each figure means.
"""
