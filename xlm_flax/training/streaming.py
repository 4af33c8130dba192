"""Streaming training data on grain: lazy lines, seeded shuffle, tokenization in workers, packing or buckets.

The pipeline (grain's `MapDataset` / `IterDataset`):

    TextLineSource(file)                      lines read on demand (sparse offset index, not the file)
      [process_index::process_count]          each JAX process reads only its own lines
      .shuffle(seed).repeat()                 a new permutation every epoch (grain's index shuffle: O(1) memory)
      .map(Tokenize)                          FastXLMTokenizer (Moses + Rust BPE); blank lines dropped
      .to_iter_dataset().mp_prefetch(workers) tokenization in `workers` processes, bounded buffers, in order
      FirstFitPackIterDataset                 packing: several sentences per row (or: buckets, one per row)
      .batch(rows per step)                   -> `[accumulation, batch, length]`

A packed row carries `segment_ids` (1..k for its sentences, 0 on padding) and `position_ids` restarting at every
sentence (a TLM pair is one segment whose positions restart at its second sentence, as in `tlm_pair`); CLM labels
never cross a segment boundary. The iterator's state (a few integers per stage) is saved with the orbax checkpoint
through `grain.checkpoint.CheckpointSave`, one file per JAX process, so a resumed run reads the same batches.

grain is an optional dependency (`pip install 'xlm-flax[data]'`); without it `TrainConfig(data="memory")` (the
default) trains from `TextBatches`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import numpy as np

from xlm_flax.config import XLMConfig
from xlm_flax.errors import DependencyError, InputError
from xlm_flax.tokens import IGNORE_INDEX
from xlm_flax.training.objectives import pad_batch
from xlm_flax.training.text_source import TextLineSource

Batch = dict[str, np.ndarray]


def require_grain() -> Any:
    """Imports grain, or raises `DependencyError` with the install command."""
    if importlib.util.find_spec("grain") is None:
        raise DependencyError(
            "data='grain' needs grain, which is not installed: pip install 'xlm-flax[data]' (or pip install grain), "
            "or train with data='memory'"
        )
    import grain

    return grain


def _absl_flags_parsed() -> None:
    # grain 0.2's mp_prefetch reads an absl flag's value (worker profiling) when the JAX profiler is loaded; outside an
    # absl app the flags are unparsed and that read raises. Marking them parsed keeps every flag at its default.
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def packed_clm_labels(input_ids: np.ndarray, segment_ids: np.ndarray) -> np.ndarray:
    """Next-token targets inside each segment: `labels[:, t] = input_ids[:, t + 1]` where tokens t and t+1 belong to
    the same (non-padding) segment, `IGNORE_INDEX` elsewhere (a segment's first token is never a target of the
    previous segment's last).

    Args:
        input_ids: `[batch, length]`.
        segment_ids: `[batch, length]`, 0 on padding.
    """
    labels = np.full(input_ids.shape, IGNORE_INDEX, dtype=np.int32)
    same = (segment_ids[:, 1:] == segment_ids[:, :-1]) & (segment_ids[:, 1:] != 0)
    labels[:, :-1] = np.where(same, input_ids[:, 1:], IGNORE_INDEX)
    return labels


def model_inputs(batch: Batch, *, accepts_segment_ids: bool) -> Batch:
    """The batch as the model takes it: the one place where packed rows meet the model.

    Args:
        batch: Arrays from `StreamingBatches` (`segment_ids` present on packed rows).
        accepts_segment_ids: Whether the model's `__call__` takes `segment_ids` (block-diagonal attention).

    Raises:
        InputError: packed rows for a model that would attend across their sentences.
    """
    if "segment_ids" in batch and not accepts_segment_ids:
        raise InputError(
            "packed rows need a model whose attention takes segment_ids (block-diagonal by sentence); this model "
            "does not: train with packing=False"
        )
    return batch


class Tokenize:
    """Line -> row for the objective (MLM/CLM: one sentence; TLM: `first<TAB>second`), or None for a blank line.

    Rows hold `input_ids`, `position_ids` (restarting at a TLM pair's second sentence) and, for models with language
    embeddings, `langs`; each sentence is `<s> ... </s>`, cut to `max_length` keeping `</s>`.
    """

    def __init__(self, tokenizer: Any, *, objective: str, langs: Sequence[str], lang_ids: Sequence[int],
                 max_length: int, with_langs: bool):  # fmt: skip
        self.tokenizer, self.objective, self.max_length, self.with_langs = tokenizer, objective, max_length, with_langs
        self.langs, self.lang_ids = (list(langs) * 2)[:2], (list(lang_ids) * 2)[:2]

    def _ids(self, text: str, lang: str, limit: int) -> list[int]:
        ids = self.tokenizer.encode(text, lang)
        return ids if len(ids) <= limit else ids[: limit - 1] + ids[-1:]

    def __call__(self, line: str) -> dict[str, np.ndarray] | None:
        if not line.strip():
            return None
        if self.objective == "tlm":
            if "\t" not in line:
                raise InputError(f"tlm: line {line[:40]!r} has no tab; write 'first<TAB>second'")
            texts = line.split("\t", 1)
            half = [self.max_length // 2, self.max_length - self.max_length // 2]
            parts = [self._ids(t, lang, h) for t, lang, h in zip(texts, self.langs, half)]
        else:
            parts = [self._ids(line, self.langs[0], self.max_length)]
        row = {
            "input_ids": np.asarray([i for p in parts for i in p], np.int32),
            "position_ids": np.concatenate([np.arange(len(p)) for p in parts]).astype(np.int32),
        }
        if self.with_langs:
            row["langs"] = np.concatenate([np.full(len(p), i) for p, i in zip(parts, self.lang_ids)]).astype(np.int32)
        return row


class _PadToBucket:
    """`batch_fn` of the bucket mode: rows padded to the smallest bucket holding the longest."""

    def __init__(self, buckets: Sequence[int], pad_index: int):
        self.buckets, self.pad_index = tuple(buckets), pad_index

    def __call__(self, rows: Sequence[dict[str, np.ndarray]]) -> Batch:
        longest = max(len(r["input_ids"]) for r in rows)
        length = next(b for b in self.buckets if b >= longest)
        return pad_batch(rows, length, {"input_ids": self.pad_index})


class _FromPacked:
    """Renames grain's packed features to the model's: `segment_ids`, `attention_mask`, per-sentence positions."""

    def __call__(self, batch: Batch) -> Batch:
        out = {name: batch[name] for name in ("input_ids", "position_ids", "langs") if name in batch}
        out["segment_ids"] = batch["input_ids_segment_ids"].astype(np.int32)
        out["attention_mask"] = (out["segment_ids"] != 0).astype(np.int32)
        return out


class StreamingBatches:
    """Fixed-shape training batches streamed from a text file with grain (see the module docstring).

    Same interface as `TextBatches` for the `Trainer`: `next()` gives arrays `[accumulation, batch, length]`;
    `save_args()` / `restore_args()` are the orbax checkpoint items of the iterator's state. Each JAX process gets
    `batch_size * accumulation / process_count` rows of every step (`process_local` is True).

    Args:
        path: The text file.
        tokenizer: A `FastXLMTokenizer` (see `xlm_flax.tokenization.fast_tokenizer`).
        config: The model's config (special ids, languages).
        objective: "mlm", "tlm" or "clm".
        batch_size: Rows per microbatch (global).
        accumulation: Microbatches per step.
        buckets: Allowed lengths; packing fills rows of the largest.
        seed: Shuffle seed.
        langs: Language codes (see `TrainConfig.langs`).
        packing: Pack several sentences per row (else one sentence per row, padded to a bucket).
        workers: Tokenization processes (0: in this process).
        process_index: This JAX process (default `jax.process_index()`).
        process_count: JAX processes (default `jax.process_count()`).

    Raises:
        DependencyError: grain is not installed.
        InputError: classification (use `TextBatches`); fewer lines than one step; bad sizes.
    """

    process_local = True

    def __init__(
        self,
        path: str,
        tokenizer: Any,
        config: XLMConfig,
        *,
        objective: str,
        batch_size: int,
        accumulation: int,
        buckets: Sequence[int],
        seed: int,
        langs: Sequence[str] = (),
        packing: bool = True,
        workers: int = 0,
        process_index: int | None = None,
        process_count: int | None = None,
    ):
        grain = require_grain()
        if objective not in ("mlm", "tlm", "clm"):
            raise InputError(f"data='grain' streams mlm, tlm and clm text; train {objective} with data='memory'")
        if process_index is None or process_count is None:
            import jax

            process_index, process_count = jax.process_index(), jax.process_count()
        rows = batch_size * accumulation
        if rows % process_count:
            raise InputError(f"batch_size x accumulation = {rows} is not a multiple of the {process_count} processes")
        self.local_rows, self.accumulation = rows // process_count, accumulation
        self.local_batch = self.local_rows // accumulation
        self.objective, self.config, self.packing = objective, config, packing
        self.source = TextLineSource(path)
        if len(self.source) < rows:
            raise InputError(
                f"{path} has {len(self.source)} lines, fewer than one step's {rows} (batch_size x accumulation); "
                "use a smaller batch or more data"
            )
        self.langs = list(langs) or [config.id2lang.get(config.lang_id, "en")]
        lang_ids = [self._lang_id(code) for code in langs] or [config.lang_id]
        length = max(buckets)
        tokenize = Tokenize(
            tokenizer, objective=objective, langs=self.langs, lang_ids=lang_ids, max_length=length,
            with_langs=config.has_lang_embeddings,
        )  # fmt: skip
        ds = grain.MapDataset.source(self.source)[process_index::process_count]
        ds = ds.shuffle(seed=seed).repeat(None).map(tokenize)
        ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
        if workers:
            _absl_flags_parsed()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2))
        if packing:
            features = {name: length for name in ("input_ids", "position_ids", "langs") if name != "langs" or
                        config.has_lang_embeddings}  # fmt: skip
            ds = grain.experimental.FirstFitPackIterDataset(
                ds,
                length_struct=features,
                num_packing_bins=self.local_rows,
                seed=seed,
                shuffle_bins=False,
                padding_struct={name: (config.pad_index if name == "input_ids" else 0) for name in features},
            )
            ds = ds.batch(self.local_rows, drop_remainder=True).map(_FromPacked())
        else:
            ds = ds.batch(self.local_rows, drop_remainder=True, batch_fn=_PadToBucket(buckets, config.pad_index))
        self._dataset = ds
        self._iterator = iter(ds)

    def _lang_id(self, code: str) -> int:
        if not self.config.lang2id:
            return 0
        if code not in self.config.lang2id:
            raise InputError(f"language {code!r} is not in the model's lang2id {sorted(self.config.lang2id)}")
        return self.config.lang2id[code]

    def __iter__(self) -> StreamingBatches:
        return self

    def __next__(self) -> Batch:
        """This process's rows of the next step: arrays `[accumulation, local batch, length]`."""
        batch = dict(next(self._iterator))
        if self.objective == "clm":
            segments = batch.get("segment_ids", batch["attention_mask"])
            batch["labels"] = packed_clm_labels(batch["input_ids"], segments)
        shape = (self.accumulation, self.local_batch)
        return {name: value.reshape(shape + value.shape[1:]) for name, value in batch.items()}

    @property
    def position(self) -> dict:
        """Nothing in the JSON metadata: the state is saved per process by `save_args()`."""
        return {}

    def seek(self) -> None:
        """No-op: the position comes back through `restore_args()` / `restored()`."""

    def get_state(self) -> dict:
        """The grain iterator's state (JSON-serialisable)."""
        return self._iterator.get_state()

    def set_state(self, state: dict) -> None:
        """Continues from a `get_state()`."""
        self._iterator.set_state(state)

    def save_args(self) -> dict[str, Any]:
        """Orbax `Composite` items that save the iterator's state (one JSON file per JAX process)."""
        import grain

        return {"data": grain.checkpoint.CheckpointSave(self._iterator)}

    def restore_args(self) -> dict[str, Any]:
        """Orbax `Composite` items that restore the iterator's state into this object."""
        import grain

        return {"data": grain.checkpoint.CheckpointRestore(self._iterator)}

    def close(self) -> None:
        """Stops the worker processes and closes the file."""
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()
        self.source.close()


__all__ = ["StreamingBatches", "TextLineSource", "Tokenize", "model_inputs", "packed_clm_labels", "require_grain"]
