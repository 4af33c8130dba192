"""Tokenization in worker processes: ordered results, a bounded number of chunks in flight.

Moses is pure Python and holds the GIL, so threads do not help; processes do. Each worker gets the pickled
`FastXLMTokenizer` once (at start) and then chunks of texts; results come back in input order, and at most
`max_pending` chunks are queued or running at any time, so memory stays bounded on an endless stream.
Workers are started with "spawn" (never "fork": the parent may hold JAX's threads).
"""

from __future__ import annotations

import collections
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

_WORKER_TOKENIZER: Any = None


def _init_worker(tokenizer: Any) -> None:
    global _WORKER_TOKENIZER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker; no Rust thread pool on top
    _WORKER_TOKENIZER = tokenizer


def _encode_chunk(texts: list[str], lang: str) -> list[list[int]]:
    return _WORKER_TOKENIZER.encode_batch(texts, lang)


def _chunks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class ParallelEncoder:
    """Encodes texts with a `FastXLMTokenizer` in `workers` processes, in order.

    Use as a context manager (or call `close`). `workers=0` encodes in this process (same results).

    Args:
        tokenizer: A `FastXLMTokenizer` (see `xlm_flax.tokenization.fast_tokenizer`).
        workers: Worker processes.
        chunk_size: Texts per task (larger amortises the inter-process copies).
        max_pending: Chunks queued or running at most (default: 2 per worker).
    """

    def __init__(self, tokenizer: Any, workers: int, *, chunk_size: int = 256, max_pending: int | None = None):
        if workers < 0 or chunk_size < 1:
            from xlm_flax.errors import InputError

            raise InputError(f"workers={workers}, chunk_size={chunk_size}: use workers >= 0 and chunk_size >= 1")
        self.tokenizer, self.workers, self.chunk_size = tokenizer, workers, chunk_size
        self.max_pending = max_pending or max(2 * workers, 1)
        self._pool = None
        if workers:
            self._pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(tokenizer,),
            )

    def imap(self, texts: Iterable[str], lang: str) -> Iterator[list[int]]:
        """Ids of each text (with `<s>` ... `</s>`), in the order of `texts`; `texts` is read lazily."""
        if self._pool is None:
            for chunk in _chunks(texts, self.chunk_size):
                yield from self.tokenizer.encode_batch(chunk, lang)
            return
        pending: collections.deque[Future] = collections.deque()
        for chunk in _chunks(texts, self.chunk_size):
            if len(pending) >= self.max_pending:
                yield from pending.popleft().result()
            pending.append(self._pool.submit(_encode_chunk, chunk, lang))
        while pending:
            yield from pending.popleft().result()

    def encode(self, texts: Iterable[str], lang: str) -> list[list[int]]:
        """`list(self.imap(texts, lang))`."""
        return list(self.imap(texts, lang))

    def close(self) -> None:
        """Stops the workers."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> ParallelEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ParallelEncoder"]
