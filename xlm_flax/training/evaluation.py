"""Evaluation of classification heads on a labelled text file."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xlm_flax.config import XLMConfig
from xlm_flax.errors import InputError
from xlm_flax.model.losses import cross_entropy
from xlm_flax.training.data import _check_labels, _encode, read_classification_file
from xlm_flax.training.objectives import pad_batch


@dataclasses.dataclass(frozen=True)
class ClassificationMetrics:
    """What `evaluate_classifier` measured.

    Attributes:
        accuracy: Share of examples whose arg-max class is the label.
        loss: Mean cross-entropy.
        n_examples: Examples evaluated.
        predictions: int32 `[n_examples]` predicted classes, in file order.
        labels: int32 `[n_examples]` the labels, in file order.
    """

    accuracy: float
    loss: float
    n_examples: int
    predictions: np.ndarray
    labels: np.ndarray


def evaluate_classifier(
    model: nnx.Module,
    tokenizer: Any,
    data: str | tuple[Sequence[str], Sequence[int]],
    *,
    batch_size: int = 32,
    buckets: Sequence[int] = (32, 64, 128),
    lang: str | None = None,
) -> ClassificationMetrics:
    """Accuracy and mean cross-entropy of a sequence classifier on labelled texts, without dropout.

    Texts are tokenised as in training (`TextBatches`), cut to the largest bucket, and run in batches of fixed
    shape `[batch_size, bucket]` (the last one padded with empty rows that are not counted), so the forward
    compiles once per bucket.

    Args:
        model: An `XLMForSequenceClassification`.
        tokenizer: Its tokenizer (e.g. transformers' `XLMTokenizer`).
        data: A `text<TAB>label` file, or `(texts, labels)`.
        batch_size: Rows per forward pass.
        buckets: Allowed sequence lengths.
        lang: Language code of the texts (tokenizer and language embeddings); defaults to the config's `lang_id`.

    Returns:
        A `ClassificationMetrics`.

    Raises:
        InputError: on a bad file, a label outside `0..num_labels-1`, or mismatched texts and labels.
    """

    config: XLMConfig = model.config
    if isinstance(data, str):
        texts, labels = read_classification_file(data)
        where = data
    else:
        texts, labels = list(data[0]), np.asarray(data[1], np.int32)
        where = "the labels given"
        if len(texts) != len(labels) or not texts:
            raise InputError(f"evaluate_classifier: {len(texts)} texts and {len(labels)} labels; give as many of each")
    _check_labels(labels, config.num_labels, where)
    buckets = tuple(sorted(buckets))
    lang = lang or config.id2lang.get(config.lang_id, "en")
    lang_id = config.lang2id.get(lang, config.lang_id)
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, batch):
        return nnx.merge(graphdef, state)(**batch).logits  # [batch, num_labels]

    encoded = [_encode(tokenizer, text, lang, buckets[-1]) for text in texts]
    logits = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        rows = [{"input_ids": np.asarray(ids, np.int32)} for ids in chunk]
        rows += [{"input_ids": np.asarray([config.pad_index], np.int32)}] * (batch_size - len(rows))
        if config.has_lang_embeddings:
            rows = [{**r, "langs": np.full(len(r["input_ids"]), lang_id, np.int32)} for r in rows]
        length = next(b for b in buckets if b >= max(len(r["input_ids"]) for r in rows))
        batch = pad_batch(rows, length, {"input_ids": config.pad_index})
        logits.append(np.asarray(forward(state, batch))[: len(chunk)])
    logits = np.concatenate(logits)
    predictions = logits.argmax(-1).astype(np.int32)
    return ClassificationMetrics(
        accuracy=float(np.mean(predictions == labels)),
        loss=float(cross_entropy(jnp.asarray(logits), jnp.asarray(labels))),
        n_examples=len(labels),
        predictions=predictions,
        labels=labels,
    )


__all__ = ["ClassificationMetrics", "evaluate_classifier"]
