"""Shape buckets and host-side batch preparation for the inference APIs.

Every new `(batch, length)` shape is a new XLA compilation. The inference objects therefore sort their inputs by
length, cut them into batches, and pad each batch up to a bucket: lengths to a power of two or 1.5 times one
(capped at `max_position_embeddings`), batch sizes to a power of two (capped at the requested batch size, and rounded to a
multiple of the mesh's data axis). Whatever the input stream, at most `len(length_buckets) * len(batch_buckets)`
shapes are ever compiled.

Packed batching (the default) puts several sentences in each row instead: a packing window of inputs is
tokenized, packed best-fit-decreasing into rows of one length (`row_length`: a bucket at least the window's
longest sentence), and cut into batches of `batch_size` rows (the last one rounded up to a batch bucket). Each token
carries its sentence's 1-based number in its row (`segment_ids`, 0 on padding), which the model turns into
block-diagonal attention and per-sentence positions, so each sentence computes exactly what it computes alone.

Batches are tokenized and padded on a background thread (`Prefetcher`) while the device runs the previous batch:
JAX dispatches asynchronously and releases the GIL while it waits, so the host work hides behind the device work.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from xlm_flax.errors import InputError


def length_buckets(max_length: int, minimum: int = 8) -> tuple[int, ...]:
    """Padded lengths: powers of two from `minimum`, with 1.5x steps between them from 16 on (24, 48, 96, ...),
    below `max_length`, then `max_length` itself. Padding wastes at most a third of a batch (half with plain
    powers of two), and every bucket from 16 on stays a multiple of 8, which accelerators like.

    >>> length_buckets(512)
    (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
    >>> length_buckets(13)
    (8, 13)

    Args:
        max_length: The longest length (the model's `max_position_embeddings`).
        minimum: The shortest bucket.
    """
    sizes = []
    size = minimum
    while size < max_length:
        sizes.append(size)
        if size >= 16 and size * 3 // 2 < max_length:
            sizes.append(size * 3 // 2)
        size *= 2
    sizes.append(max_length)
    return tuple(sizes)


def batch_buckets(batch_size: int, multiple: int = 1) -> tuple[int, ...]:
    """Padded batch sizes: powers of two below `batch_size`, then `batch_size`, each rounded up to `multiple` (the
    mesh's data-axis size, so that every batch splits evenly over the devices).

    >>> batch_buckets(32)
    (1, 2, 4, 8, 16, 32)
    >>> batch_buckets(12, multiple=8)
    (8, 16)

    Args:
        batch_size: The largest batch.
        multiple: Every bucket is a multiple of this (the mesh's data axis).
    """
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}: must be at least 1")
    sizes = set()
    size = 1
    while size < batch_size:
        sizes.add(size)
        size *= 2
    sizes.add(batch_size)
    return tuple(sorted({-(-s // multiple) * multiple for s in sizes}))


def bucket_for(value: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds `value`.

    Args:
        value: A length or batch size.
        buckets: Increasing bucket sizes.
    """
    for size in buckets:
        if value <= size:
            return size
    raise InputError(f"{value} exceeds the largest bucket {buckets[-1]}")


@dataclasses.dataclass
class HostBatch:
    """One padded batch, ready to be put on device.

    Attributes:
        indices: Input position of each real row `[n]`; padding rows follow them.
        sequences: The unpadded token ids of each real row.
        input_ids: `[batch, length]` int32, padded with the pad id.
        attention_mask: `[batch, length]` int32, 1 on tokens.
        langs: `[batch, length]` int32 language ids, or None for models without language embeddings.
        segment_ids: Packed batches: `[batch, length]` int32, the 1-based number of each token's sentence in its
            row, 0 on padding; None for padded (one sentence per row) batches.
        spans: `[n, 2]` int: the row and the first token of each real sentence (`(i, 0)` without packing).
        extra: Kernel-specific host arrays (e.g. mask positions), put on device with the batch.
        meta: Kernel-specific host-only data (e.g. where each row's masks are).
    """

    indices: np.ndarray
    sequences: list[list[int]]
    input_ids: np.ndarray
    attention_mask: np.ndarray
    langs: np.ndarray | None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    meta: Any = None
    segment_ids: np.ndarray | None = None
    spans: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.spans is None:
            self.spans = np.stack([np.arange(len(self.indices)), np.zeros(len(self.indices), dtype=np.int64)], axis=1)

    @property
    def n(self) -> int:
        """Number of real sentences (rows without packing)."""
        return len(self.indices)

    @property
    def packed(self) -> bool:
        """Several sentences may share a row (`segment_ids` is set)."""
        return self.segment_ids is not None

    @property
    def mask_or_segments(self) -> np.ndarray:
        """What the kernel takes as its second array: `segment_ids` when packed, else `attention_mask`."""
        return self.segment_ids if self.segment_ids is not None else self.attention_mask

    def sentence_slices(self, array: np.ndarray) -> list[np.ndarray]:
        """Cuts a per-token output (`[batch, length, ...]`, e.g. hidden states) into one array per real sentence,
        in the order of `indices` (`[length_i, ...]` each)."""
        return [array[row, start : start + len(seq)] for (row, start), seq in zip(self.spans, self.sequences)]


def pad_batch(
    indices: np.ndarray,
    sequences: list[list[int]],
    *,
    batch: int,
    length: int,
    pad_index: int,
    lang_id: int | None,
) -> HostBatch:
    """Pads `sequences` into a `[batch, length]` `HostBatch`; padding rows are all padding (mask 0).

    Args:
        indices: Input positions of the rows.
        sequences: Token ids of each row.
        batch: Padded batch size.
        length: Padded length.
        pad_index: Padding token id.
        lang_id: Language id for every token, or None for no `langs`.
    """
    ids = np.full((batch, length), pad_index, dtype=np.int32)
    mask = np.zeros((batch, length), dtype=np.int32)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    langs = None if lang_id is None else np.full((batch, length), lang_id, dtype=np.int32)
    return HostBatch(indices=indices, sequences=sequences, input_ids=ids, attention_mask=mask, langs=langs)


def pack_rows(lengths: Sequence[int], row_length: int) -> list[list[int]]:
    """Packs items of the given lengths into as few rows of `row_length` as it can, best fit decreasing: longest
    first, each into the fullest row that still has room (a new row when none has).

    Best fit decreasing uses at most 11/9 of the optimal number of rows plus one, and on many short items far
    closer to it. Cost is O(n log n + n * row_length): rows are kept in lists by free space.

    >>> pack_rows([5, 3, 7, 2, 4, 1], 8)  # item indices per row: lengths 7+1, 5+3, 4+2
    [[2, 5], [0, 1], [4, 3]]

    Args:
        lengths: Length of each item (each at most `row_length`).
        row_length: Capacity of a row.

    Returns:
        The item indices of each row, in packing order.
    """
    if any(n > row_length for n in lengths):
        raise InputError(f"an item of length {max(lengths)} does not fit in rows of {row_length}")
    rows: list[list[int]] = []
    by_free: list[list[int]] = [[] for _ in range(row_length + 1)]  # free space -> rows with exactly that room
    for item in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        need = lengths[item]
        row = None
        for free in range(need, row_length + 1):
            if by_free[free]:
                row = by_free[free].pop()
                break
        if row is None:
            row, free = len(rows), row_length
            rows.append([])
        rows[row].append(item)
        by_free[free - need].append(row)
    return rows


def pack_batch(
    indices: np.ndarray,
    sequences: list[list[int]],
    rows: list[list[int]],
    *,
    batch: int,
    length: int,
    pad_index: int,
    lang_id: int | None,
) -> HostBatch:
    """Lays packed rows out as a `[batch, length]` `HostBatch` with `segment_ids`; rows past `len(rows)` and the
    end of every row are padding (segment 0, the pad id).

    Args:
        indices: Input positions of the sentences.
        sequences: Token ids of each sentence.
        rows: For each row, the positions (into `indices`/`sequences`) of its sentences, in row order.
        batch: Padded number of rows.
        length: Row length.
        pad_index: Padding token id.
        lang_id: Language id for every token, or None for no `langs`.
    """
    ids = np.full((batch, length), pad_index, dtype=np.int32)
    segments = np.zeros((batch, length), dtype=np.int32)
    spans = np.zeros((len(sequences), 2), dtype=np.int64)
    for r, members in enumerate(rows):
        start = 0
        for segment, s in enumerate(members, start=1):
            seq = sequences[s]
            ids[r, start : start + len(seq)] = seq
            segments[r, start : start + len(seq)] = segment
            spans[s] = (r, start)
            start += len(seq)
        if start > length:
            raise InputError(f"row {r} holds {start} tokens, more than its length {length}")
    langs = None if lang_id is None else np.full((batch, length), lang_id, dtype=np.int32)
    return HostBatch(
        indices=np.asarray(indices),
        sequences=sequences,
        input_ids=ids,
        attention_mask=(segments > 0).astype(np.int32),
        langs=langs,
        segment_ids=segments,
        spans=spans,
    )


def slot_count(n: int) -> int:
    """Output slots for `n` sentences of a packed batch: the next power of two (a handful of cheap pooling
    compilations, whatever the counts)."""
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


@dataclasses.dataclass
class TokenCount:
    """Tokens of one call: `real` (every sentence's tokens, `<s>` and `</s>` included) and `computed` (elements of
    the token arrays that entered compiled code, padding and padding rows included).

    Attributes:
        real: Real tokens.
        computed: Computed tokens.
    """

    real: int = 0
    computed: int = 0

    @property
    def waste(self) -> float:
        """Padding waste: `computed / real - 1`."""
        return self.computed / self.real - 1 if self.real else 0.0


def batch_order(size_hints: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Cuts input positions into batches of similar size, longest first.

    Args:
        size_hints: A cheap proxy of each input's token count (its length in characters): sorting on it lets
            tokenization happen batch by batch, overlapped with device work, instead of all up front.
        batch_size: Rows per batch.

    Returns:
        Index arrays, one per batch, covering every input once.
    """
    order = np.argsort(-np.asarray(size_hints, dtype=np.int64), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class Prefetcher:
    """Runs an iterator on a background thread, `depth` items ahead of the consumer.

    Exceptions raised by the producer are re-raised in the consumer, in order. `close()` (or leaving the `with`
    block) stops the producer even if the consumer stopped early.

    Args:
        items: The iterable to run ahead.
        depth: How many items may wait in the queue.
    """

    def __init__(self, items: Iterable[Any], depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(iter(items),), daemon=True, name="xlm-prefetch")
        self._thread.start()

    def _put(self, message: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, items: Iterator[Any]) -> None:
        try:
            for item in items:
                if not self._put(("item", item)):
                    return
        except BaseException as e:  # handed to the consumer, which raises it
            self._put(("error", e))
            return
        self._put(("done", None))

    def __iter__(self) -> Iterator[Any]:
        while True:
            kind, value = self._queue.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return

    def close(self) -> None:
        """Stops the producer and waits for its thread."""
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "HostBatch",
    "Prefetcher",
    "TokenCount",
    "batch_buckets",
    "batch_order",
    "bucket_for",
    "length_buckets",
    "pack_batch",
    "pack_rows",
    "pad_batch",
    "slot_count",
]
