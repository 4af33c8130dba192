"""What `FillMask` and `Embedder` share: the split model, tokenizer, languages, buckets and the batch loop.

Both follow one pattern: build once from a checkpoint, hold `graphdef, state = nnx.split(model)`, and run a pure
function of `(state, batch)` compiled once per shape bucket (`xlm_flax.inference.batching`). Inputs are sorted by
length, cut into batches, tokenized and padded on a background thread while the device works on the previous batch,
and the results are put back in input order.

Two batchings (`batching=`): `"packed"` (the default, exact for XLM: each sentence computes what it computes alone)
puts several sentences in each row, with `segment_ids`, so that almost no padding is computed; `"buckets"` pads one
sentence per row up to a length bucket, as xlm-flax 0.1 did. With a `mesh`, parameters are placed by their logical axes and every
batch is padded to a multiple of the data axis and split over it.
"""

from __future__ import annotations

import itertools
import logging
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from xlm_flax.config import XLMConfig
from xlm_flax.errors import InputError
from xlm_flax.inference.batching import (
    HostBatch,
    Prefetcher,
    TokenCount,
    batch_buckets,
    batch_order,
    bucket_for,
    length_buckets,
    pack_batch,
    pack_rows,
    pad_batch,
)
from xlm_flax.sharding.mesh import auto_mesh, to_mesh
from xlm_flax.sharding.placement import data_sharding, shard_model
from xlm_flax.sharding.rules import batch_multiple
from xlm_flax.tokenization import Languages, check_segmenter, encode_text, fast_tokenizer, truncate
from xlm_flax.tokenization.rules import moses_language
from xlm_flax.tokenization.workers import ParallelEncoder
from xlm_flax.validation import check_tokenizer_fits

logger = logging.getLogger("xlm_flax")

BATCHINGS = ("packed", "buckets")
# Sentences tokenized and packed together: enough for best fit to pair long sentences with short ones, few enough
# that the first batch is dispatched soon (the next window is tokenized while the device runs this one's batches).
PACKING_WINDOW = 4096
# Texts per task sent to a tokenizer worker: large enough to amortise the copies between processes, small enough
# that a window of inputs is spread over every worker.
WORKER_CHUNK = 128
# Shortest packed row: rows of a window of short sentences still hold several of them.
MIN_ROW_LENGTH = 64


def _row_counts(rows: int, batch_size: int, sizes: tuple[int, ...]) -> list[int]:
    """How many rows each batch of a window takes: full batches of `batch_size`, then the rest cut greedily into
    batch buckets (24 rows as 16 + 8), so that only the very last batch is rounded up and no new shape appears."""
    counts = [batch_size] * (rows // batch_size)
    rest = rows - sum(counts)
    while rest > 0:
        fitting = [b for b in sizes if b <= rest]
        take = min(fitting[-1] if fitting else sizes[0], rest)
        counts.append(take)
        rest -= take
    return counts


def check_batching(batching: str) -> str:
    """Validates a `batching=` argument."""
    if batching not in BATCHINGS:
        raise InputError(f"batching={batching!r}: use one of {', '.join(BATCHINGS)}")
    return batching


def check_tokenizer_workers(workers: int) -> int:
    """Validates a `tokenizer_workers=` argument."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise InputError(f"tokenizer_workers={workers!r}: give 0 (tokenize in this process) or a number of processes")
    return workers


def _preview(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def _check_texts(inputs: str | Sequence[str], what: str) -> tuple[list[str], bool]:
    """The inputs as a list, and whether a single string was given."""
    if isinstance(inputs, str):
        return [inputs], True
    if isinstance(inputs, bytes) or not isinstance(inputs, Sequence | Iterator):
        raise InputError(f"{what}: give a string or a list of strings, not {type(inputs).__name__}")
    texts = list(inputs)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"{what}: input {i} is a {type(text).__name__}, not a string")
    return texts, False


def _wait_quietly(outputs: Any) -> None:
    """Blocks until `outputs` are computed, ignoring their errors (the caller is already leaving on another)."""
    try:
        jax.block_until_ready(outputs)
    except Exception:  # noqa: BLE001, S110 - best effort on the way out; the original exception propagates
        pass


class _Engine:
    """What `FillMask` and `Embedder` share: the split model, the tokenizer, languages, buckets and the batch loop.

    Args:
        model: The model to run (its parameters are placed on `mesh` when one is given).
        tokenizer: transformers' `XLMTokenizer` for the model.
        mesh: Optional device mesh: `xlm_flax.make_mesh`, or the caller's own (`jax.make_mesh`, Explicit or Auto
            axes) with `rules` naming its axes.
        rules: Logical-axis rules for placing the parameters and splitting the batch (default `DEFAULT_RULES`;
            `axis_rules(data="dp", model="tp")` for a mesh with axes `("dp", "tp")`).
        batching: `"packed"` (several sentences per row; the default) or `"buckets"` (one padded sentence per row).
        tokenizer_workers: Processes that tokenize (Moses is pure Python and holds the GIL); 0 tokenizes on the
            prefetch thread of this process. The ids are the same either way.
    """

    def __init__(
        self,
        model: nnx.Module,
        tokenizer: Any,
        *,
        mesh: Mesh | None = None,
        rules: Any = None,
        batching: str = "packed",
        tokenizer_workers: int = 0,
    ):
        self.batching = check_batching(batching)
        self.tokenizer_workers = check_tokenizer_workers(tokenizer_workers)
        self._encoder: ParallelEncoder | None = None
        if mesh is not None:
            shard_model(model, mesh, rules)  # a no-op for parameters already placed so (from_pretrained)
        self.config: XLMConfig = model.config
        check_tokenizer_fits(tokenizer, self.config.vocab_size)  # larger: ids past the embeddings, NaN outputs
        self.tokenizer = tokenizer
        self.mesh = mesh
        self.rules = rules
        # The model runs on the Auto view of the caller's mesh (its modules leave shardings to XLA's propagation);
        # the parameters move onto it without a copy.
        self._compute_mesh = auto_mesh(mesh) if mesh is not None else None
        self.languages = Languages(self.config)
        self.graphdef, self.state = nnx.split(model)
        if self._compute_mesh is not None:
            self.state = to_mesh(self.state, self._compute_mesh)
        self.max_length = self.config.max_position_embeddings
        self.length_buckets = length_buckets(self.max_length)
        self._multiple = batch_multiple(mesh, rules)
        self._executables: dict[tuple, Any] = {}
        self.last_token_count = TokenCount()  # of the last call, for padding benchmarks

    @property
    def model(self) -> nnx.Module:
        """The model (a new NNX object over the same parameters, on `mesh` when one was given)."""
        return nnx.merge(self.graphdef, self.state if self.mesh is None else to_mesh(self.state, self.mesh))

    @property
    def num_compilations(self) -> int:
        """Number of shapes compiled so far (one per bucket and option set used)."""
        return len(self._executables)

    def bucket_count(self, batch_size: int) -> int:
        """Number of (batch, length) buckets for `batch_size`: the most compilations one option set can cause."""
        return len(batch_buckets(batch_size, self._multiple)) * len(self.length_buckets)

    # ------------------------------------------------------------------------------------------- host side

    def _parallel_encoder(self) -> ParallelEncoder | None:
        """The worker pool (started on first use, kept for later calls), or None to tokenize in this process."""
        if self.tokenizer_workers == 0 or not hasattr(self.tokenizer, "bpe_ranks"):  # not an XLMTokenizer
            return None
        if self._encoder is None:
            encoder = ParallelEncoder(fast_tokenizer(self.tokenizer), self.tokenizer_workers, chunk_size=WORKER_CHUNK)
            weakref.finalize(self, encoder.close)
            self._encoder = encoder
        return self._encoder

    def close(self) -> None:
        """Stops the tokenizer worker processes, if any (they also stop when this object is collected)."""
        if self._encoder is not None:
            self._encoder.close()
            self._encoder = None

    def __enter__(self) -> _Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _encoded(
        self, texts: list[str], order: Iterable[int], code: str, truncation: bool, truncated: list[int]
    ) -> Iterator[list[int]]:
        """The ids of `texts[i]` for each `i` of `order`, lazily: in worker processes (which run ahead, a bounded
        number of chunks) when `tokenizer_workers` > 0, else here."""
        encoder = self._parallel_encoder()
        if encoder is None:
            for i in order:
                yield self._fit(texts, i, encode_text(self.tokenizer, texts[i], code), truncation, truncated)
            return
        check_segmenter(moses_language(code, "language"))  # before the workers, with the package to install
        order = list(order)
        for i, ids in zip(order, encoder.imap((texts[i] for i in order), code), strict=True):
            yield self._fit(texts, i, ids, truncation, truncated)

    def _fit(self, texts: list[str], i: int, ids: list[int], truncation: bool, truncated: list[int]) -> list[int]:
        """`ids` of input `i`, truncated to the model's length (or an error when truncation is off)."""
        if len(ids) > self.max_length:
            if not truncation:
                raise InputError(
                    f"input {i} ({_preview(texts[i])}) is {len(ids)} tokens long, more than the model's "
                    f"max_position_embeddings={self.max_length}; shorten it or allow truncation"
                )
            truncated.append(int(i))
            ids = truncate(ids, self.max_length, self.config.eos_index)
        return ids

    def _host_batches(
        self,
        texts: list[str],
        batch_size: int,
        lang: tuple[str, int | None],
        truncation: bool,
        truncated: list[int],
        prepare: Callable[[HostBatch], None] | None,
    ) -> Iterator[HostBatch]:
        """Tokenizes and pads (or packs) batch after batch (runs on the prefetch thread)."""
        code, lang_id = lang
        sizes = batch_buckets(batch_size, self._multiple)
        if self.batching == "packed":
            batches = self._packed_batches(texts, batch_size, sizes, code, lang_id, truncation, truncated)
        else:
            batches = self._bucketed_batches(texts, batch_size, sizes, code, lang_id, truncation, truncated)
        for batch in batches:
            if prepare is not None:
                prepare(batch)
            yield batch

    def _bucketed_batches(self, texts, batch_size, sizes, code, lang_id, truncation, truncated) -> Iterator[HostBatch]:
        """One sentence per row, sorted by length, padded to a length bucket."""
        order = batch_order([len(t) for t in texts], batch_size)
        encoded = self._encoded(texts, (int(i) for indices in order for i in indices), code, truncation, truncated)
        for indices in order:
            sequences = list(itertools.islice(encoded, len(indices)))
            yield pad_batch(
                indices,
                sequences,
                batch=bucket_for(len(indices), sizes),
                length=bucket_for(max(len(s) for s in sequences), self.length_buckets),
                pad_index=self.config.pad_index,
                lang_id=lang_id,
            )

    def _packed_batches(self, texts, batch_size, sizes, code, lang_id, truncation, truncated) -> Iterator[HostBatch]:
        """Several sentences per row: each window of inputs is packed into rows of one length bucket, and the rows
        are cut into batches of `batch_size` rows (the last rounded up to a batch bucket)."""
        # One stream over all inputs, so that the workers tokenize the next window while this one is packed.
        encoded = self._encoded(texts, range(len(texts)), code, truncation, truncated)
        for first in range(0, len(texts), PACKING_WINDOW):
            indices = np.arange(first, min(first + PACKING_WINDOW, len(texts)))
            sequences = list(itertools.islice(encoded, len(indices)))
            lengths = [len(s) for s in sequences]
            length = bucket_for(max(max(lengths), min(MIN_ROW_LENGTH, self.max_length)), self.length_buckets)
            rows = pack_rows(lengths, length)
            start = 0
            for size in _row_counts(len(rows), batch_size, sizes):
                chunk, start = rows[start : start + size], start + size
                members = [s for row in chunk for s in row]
                position = {s: k for k, s in enumerate(members)}
                yield pack_batch(
                    indices[members],
                    [sequences[s] for s in members],
                    [[position[s] for s in row] for row in chunk],
                    batch=bucket_for(len(chunk), sizes),
                    length=length,
                    pad_index=self.config.pad_index,
                    lang_id=lang_id,
                )

    def _put(self, array: np.ndarray | None) -> jax.Array | None:
        if array is None:
            return None
        if self.mesh is None:
            return jax.device_put(array)
        return jax.device_put(array, data_sharding(self._compute_mesh, array.ndim, self.rules))

    # ----------------------------------------------------------------------------------------- device side

    def _call(self, key: tuple, build: Callable[[], Callable], args: list[jax.Array | None]) -> Any:
        """Runs the executable of `key` (compiling it on first use) on `args`; returns without waiting."""
        executable = self._executables.get(key)
        if executable is None:
            executable = jax.jit(build()).lower(self.state, *args).compile()
            self._executables[key] = executable
        return executable(self.state, *args)

    def _stream(
        self,
        texts: list[str],
        *,
        batch_size: int,
        lang: str | None,
        truncation: bool,
        options: tuple,
        build: Callable[[], Callable],
        prepare: Callable[[HostBatch], None] | None = None,
        finish: Callable[[HostBatch, Any], Any] | None = None,
    ) -> Iterator[tuple[HostBatch, Any]]:
        """Yields `(host batch, outputs as NumPy)` for every batch of `texts`.

        Batch i+1 is tokenized (prefetch thread) and dispatched before the outputs of batch i are fetched, so the
        device always has work queued while the host waits. The kernel `build` makes takes `(state, input_ids,
        mask_or_segments, langs, *extra)`: `attention_mask` for padded batches, `segment_ids` for packed ones
        (`options` must tell the two apart, e.g. through `self.batching`). `finish(batch, device outputs)`, if
        given, is dispatched on the device outputs before they are fetched (e.g. per-sentence pooling of packed
        rows, a small computation compiled apart from the model).
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise InputError(f"batch_size={batch_size!r}: must be a positive integer")
        resolved = self.languages.resolve(lang)
        truncated: list[int] = []
        count = self.last_token_count = TokenCount()
        pending = None
        producer = self._host_batches(texts, batch_size, resolved, truncation, truncated, prepare)
        with Prefetcher(producer) as batches:
            try:
                for batch in batches:
                    host = [batch.input_ids, batch.mask_or_segments, batch.langs, *batch.extra.values()]
                    key = (*options, batch.packed, tuple(None if a is None else a.shape for a in host))
                    outputs = self._call(key, build, [self._put(a) for a in host])
                    if finish is not None:
                        outputs = finish(batch, outputs)
                    count.real += sum(len(s) for s in batch.sequences)
                    count.computed += batch.input_ids.size
                    # `pending` holds the newest dispatched work before the yield, so that an interruption there
                    # (the consumer's Ctrl-C) waits for it in `finally`.
                    previous, pending = pending, (batch, outputs)
                    if previous is not None:
                        yield previous[0], jax.tree.map(np.asarray, previous[1])
                if pending is not None:
                    batch, outputs, pending = *pending, None
                    yield batch, jax.tree.map(np.asarray, outputs)
            finally:
                # Interrupted (Ctrl-C, SIGTERM) or closed early: let the dispatched device work finish before the
                # prefetch thread is joined and the interpreter may shut down; tearing the runtime down under
                # running work is what can end in a segmentation fault.
                if pending is not None:
                    _wait_quietly(pending[1])
        if truncated:
            logger.warning(
                "%d of %d inputs were longer than max_position_embeddings=%d tokens and were truncated (first: "
                "input %d); pass truncation=False (--no-truncate) to get an error instead",
                len(truncated),
                len(texts),
                self.max_length,
                min(truncated),
            )
