"""Shape buckets and host-side batch preparation for the inference APIs.

Every new `(batch, length)` shape is a new XLA compilation. The inference objects therefore sort their inputs by
length, cut them into batches, and pad each batch up to a bucket: lengths to a power of two or 1.5 times one
(capped at `max_position_embeddings`), batch sizes to a power of two (capped at the requested batch size, and rounded to a
multiple of the mesh's data axis). Whatever the input stream, at most `len(length_buckets) * len(batch_buckets)`
shapes are ever compiled.

Batches are tokenized and padded on a background thread (`Prefetcher`) while the device runs the previous batch:
JAX dispatches asynchronously and releases the GIL while it waits, so the host work hides behind the device work.
"""

from __future__ import annotations

import dataclasses
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

    @property
    def n(self) -> int:
        """Number of real (not padding) rows."""
        return len(self.indices)


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


__all__ = ["HostBatch", "Prefetcher", "batch_buckets", "batch_order", "bucket_for", "length_buckets", "pad_batch"]
