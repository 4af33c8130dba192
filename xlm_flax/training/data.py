"""Training data from text files: fixed-shape batches `[accumulation, batch, bucket]`, resumable.

`bucket` is the smallest of the allowed lengths that holds the longest row, so the step compiles once per bucket,
not once per batch. The data order of epoch `e` comes from a NumPy generator seeded with `(seed, e)`, so a resumed
run continues exactly where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from xlm_flax.config import XLMConfig
from xlm_flax.errors import InputError, MissingFileError
from xlm_flax.tokenization import encode_text
from xlm_flax.training.objectives import clm_labels, pad_batch, tlm_pair

Batch = dict[str, np.ndarray]


def read_classification_file(path: str) -> tuple[list[str], np.ndarray]:
    """Reads a `text<TAB>label` file (integer labels, from 0; empty lines skipped).

    Args:
        path: The file.

    Returns:
        `(texts, labels)`: the texts and an int32 array `[n]` of their labels.

    Raises:
        MissingFileError: when the file does not exist.
        InputError: on a line without a tab, a label that is not a non-negative integer, or an empty file.
    """
    if not os.path.isfile(path):
        raise MissingFileError(f"classification file {path} does not exist; give a file of 'text<TAB>label' lines")
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            text, sep, label = line.rstrip("\n").rpartition("\t")
            if not sep:
                raise InputError(f"{path}:{number}: no tab; write 'text<TAB>label'")
            try:
                value = int(label.strip())
            except ValueError:
                value = -1
            if value < 0:
                raise InputError(f"{path}:{number}: label {label!r} is not a class id; labels are integers from 0")
            texts.append(text)
            labels.append(value)
    if not texts:
        raise InputError(f"{path} has no 'text<TAB>label' lines")
    return texts, np.asarray(labels, np.int32)


def _encode(tokenizer: Any, text: str, lang: str, limit: int, rules: str = "language") -> list[int]:
    # XLMTokenizer: the language's Moses rules (transformers' encode(text, lang=...) would drop lang), Rust BPE.
    ids = encode_text(tokenizer, text, lang, rules=rules)
    return ids if len(ids) <= limit else ids[: limit - 1] + ids[-1:]  # keep the closing </s>


def _check_labels(labels: np.ndarray, num_labels: int, path: str) -> None:
    if labels.size and int(labels.max()) >= num_labels:
        raise InputError(
            f"{path} has label {int(labels.max())} but the model has num_labels={num_labels} (labels 0..{num_labels - 1});"
            " set TrainConfig.num_labels (--num-labels) or fix the labels"
        )


class TextBatches:
    """Fixed-shape batches from a text file, tokenised on the fly, in a reproducible order.

    Lines are read once; each is tokenised the first time it is used (and cached). Epoch `e` visits the lines in
    the order of `np.random.default_rng((seed, e)).permutation`; the position `(epoch, offset)` says where the
    next batch starts, so a resumed run reads the same batches. A last partial batch of an epoch is dropped.

    Args:
        path: The text file.
        tokenizer: A transformers `XLMTokenizer`.
        config: The model's config (special ids, languages).
        objective: See `TrainConfig.objective`.
        batch_size: Rows per microbatch.
        accumulation: Microbatches per step.
        buckets: Allowed lengths.
        seed: Data-order seed.
        langs: Language codes (see `TrainConfig.langs`).
        rules: Moses rules (see `TrainConfig.tokenizer_rules`).
    """

    process_local = False

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
        rules: str = "language",
    ):
        if not os.path.isfile(path):
            raise MissingFileError(f"training file {path} does not exist; give a text file, one example per line")
        with open(path, encoding="utf-8") as f:
            self.lines = [line.rstrip("\n") for line in f if line.strip()]
        self.labels: np.ndarray | None = None
        if objective == "classification":
            self.lines, self.labels = read_classification_file(path)
            _check_labels(self.labels, config.num_labels, path)
        self.per_step = batch_size * accumulation
        if len(self.lines) < self.per_step:
            raise InputError(
                f"{path} has {len(self.lines)} non-empty lines, fewer than one step's {self.per_step} "
                "(batch_size x accumulation); use a smaller batch or more data"
            )
        self.tokenizer, self.config, self.objective, self.rules = tokenizer, config, objective, rules
        self.batch_size, self.accumulation, self.buckets, self.seed = batch_size, accumulation, buckets, seed
        self.lang_ids = [self._lang_id(code) for code in langs] or [config.lang_id]
        self.langs = list(langs) or [config.id2lang.get(config.lang_id, "en")]
        self._cache: dict[int, dict[str, np.ndarray]] = {}
        self.epoch, self.offset = 0, 0
        self._order = self._permutation(0)

    def _lang_id(self, code: str) -> int:
        if not self.config.lang2id:
            return 0
        if code not in self.config.lang2id:
            raise InputError(f"language {code!r} is not in the model's lang2id {sorted(self.config.lang2id)}")
        return self.config.lang2id[code]

    def _permutation(self, epoch: int) -> np.ndarray:
        # Shuffle, then sort each window of 50 steps' lines by length and shuffle the steps: rows of a batch have
        # similar lengths, so little of the bucket is padding, and the order still changes every epoch.
        rng = np.random.default_rng((self.seed, epoch))
        order = rng.permutation(len(self.lines))
        n_steps = len(order) // self.per_step
        order = order[: n_steps * self.per_step]
        window = 50 * self.per_step
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            order[start : start + window] = chunk[np.argsort([len(self.lines[i]) for i in chunk], kind="stable")]
        steps = order.reshape(n_steps, self.per_step)[rng.permutation(n_steps)]
        # Within a step, spread the lengths over the microbatches and rows as they come.
        return steps.reshape(-1)

    @property
    def position(self) -> dict[str, int]:
        """Where the next batch starts: `{"epoch": e, "offset": i}`."""
        return {"epoch": self.epoch, "offset": self.offset}

    def seek(self, epoch: int, offset: int) -> None:
        """Continues from a saved `position`."""
        self.epoch, self.offset = int(epoch), int(offset)
        self._order = self._permutation(self.epoch)

    def save_args(self) -> dict[str, Any]:
        """Extra orbax checkpoint items: none (the position goes into the JSON metadata)."""
        return {}

    restore_args = save_args

    def _encode(self, text: str, lang: str) -> list[int]:
        return _encode(self.tokenizer, text, lang, self.buckets[-1], self.rules)

    def _row(self, index: int) -> dict[str, np.ndarray]:
        if index in self._cache:
            return self._cache[index]
        line = self.lines[index]
        if self.objective == "tlm":
            if "\t" not in line:
                raise InputError(f"tlm: line {index + 1} has no tab; write 'first<TAB>second'")
            first, second = line.split("\t", 1)
            langs = (self.langs + self.langs)[:2]
            ids = (self.lang_ids + self.lang_ids)[:2]
            row = tlm_pair(
                self._encode(first, langs[0]),
                self._encode(second, langs[1]),
                ids[0],
                ids[1],
                max_length=self.buckets[-1],
            )
        else:
            # Classification: `lines` holds the texts (labels parsed in __init__); MLM/CLM: the sentences.
            ids = self._encode(line, self.langs[0])
            row = {"input_ids": np.asarray(ids, np.int32)}
            if self.config.has_lang_embeddings:
                row["langs"] = np.full(len(ids), self.lang_ids[0], np.int32)
        self._cache[index] = row
        return row

    def _bucket(self, length: int) -> int:
        return next(b for b in self.buckets if b >= length)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        """The next batch: arrays `[accumulation, batch_size, bucket]` (classification labels `[acc, batch]`)."""
        if self.offset + self.per_step > len(self._order):
            self.seek(self.epoch + 1, 0)
        indices = self._order[self.offset : self.offset + self.per_step]
        self.offset += self.per_step
        rows = [self._row(int(i)) for i in indices]
        length = self._bucket(max(len(r["input_ids"]) for r in rows))
        batch = pad_batch(rows, length, {"input_ids": self.config.pad_index})
        if self.objective == "clm":
            batch["labels"] = clm_labels(batch["input_ids"], batch["attention_mask"])
        if self.labels is not None:
            batch["labels"] = self.labels[indices]  # [accumulation * batch]: one class id per row
        shape = (self.accumulation, self.batch_size)
        return {name: value.reshape(shape + value.shape[1:]) for name, value in batch.items()}


def make_batches(config: Any, tokenizer: Any, model_config: XLMConfig) -> Any:
    """The training batches of a `TrainConfig`: `TextBatches` (data="memory") or `StreamingBatches` (data="grain",
    tokenized by `FastXLMTokenizer`).

    Raises:
        DependencyError: data="grain" without grain installed.
    """
    common = dict(
        objective=config.objective,
        batch_size=config.batch_size,
        accumulation=config.accumulation,
        buckets=config.buckets,
        seed=config.seed,
        langs=config.langs,
    )
    if config.data == "memory":
        return TextBatches(config.train_file, tokenizer, model_config, rules=config.tokenizer_rules, **common)
    from xlm_flax.tokenization import fast_tokenizer
    from xlm_flax.training.streaming import StreamingBatches

    return StreamingBatches(
        config.train_file,
        fast_tokenizer(tokenizer, config.tokenizer_rules),
        model_config,
        packing=config.packing,
        workers=config.data_workers,
        **common,
    )


__all__ = ["Batch", "TextBatches", "make_batches", "read_classification_file"]
