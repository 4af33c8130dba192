"""Held-out masked-token accuracy of a model directory, against the most-frequent-token baseline.

Masks the held-out sentences as in training (15 % of non-special tokens; 80 % `<special1>`, 10 % random, 10 % kept;
a fixed seed), predicts every chosen position, and reports top-1 accuracy over all chosen positions and over those
replaced by the mask token. The baseline always predicts the most frequent non-special token of the training file.
Public API only.

Usage:
    python benchmarks/evaluate_small_model.py xlm_flax/data/xlm-small-en /tmp/corpus/heldout.txt \
        --train-file /tmp/corpus/train.txt
"""

from __future__ import annotations

import argparse
import collections

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from transformers import XLMTokenizer

from xlm_flax import XLMWithLMHeadModel
from xlm_flax.training.objectives import IGNORE_INDEX, mask_tokens, pad_batch, special_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("heldout")
    parser.add_argument("--train-file", help="for the most-frequent-token baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    tokenizer = XLMTokenizer.from_pretrained(args.model)
    model = XLMWithLMHeadModel.from_pretrained(args.model)
    config = model.config
    exclude = special_ids(config)
    limit = config.max_position_embeddings

    def encode(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    ids = tokenizer.encode(line.strip())
                    yield ids if len(ids) <= limit else ids[: limit - 1] + ids[-1:]

    heldout = list(encode(args.heldout))
    most_frequent = None
    if args.train_file:
        counts = collections.Counter(i for ids in encode(args.train_file) for i in ids if i not in exclude)
        most_frequent = counts.most_common(1)[0][0]

    graphdef, state = nnx.split(model)

    @jax.jit
    def predict(state, ids, attention, key):
        masked, labels = mask_tokens(
            key, ids, mask_index=config.mask_index, vocab_size=config.vocab_size, exclude=exclude,
            attention_mask=attention,
        )  # fmt: skip
        logits = nnx.merge(graphdef, state)(masked, attention_mask=attention).logits
        return jnp.argmax(logits, -1), masked, labels

    key = jax.random.key(args.seed)
    hits = total = mask_hits = mask_total = base_hits = base_mask_hits = 0
    for start in range(0, len(heldout), args.batch_size):
        rows = [{"input_ids": np.asarray(ids)} for ids in heldout[start : start + args.batch_size]]
        rows += [{"input_ids": np.asarray([0, 1])}] * (args.batch_size - len(rows))  # fixed batch shape
        batch = pad_batch(rows, limit, {"input_ids": config.pad_index})
        predicted, masked, labels = map(
            np.asarray, predict(state, batch["input_ids"], batch["attention_mask"], jax.random.fold_in(key, start))
        )
        chosen = labels != IGNORE_INDEX
        correct = (predicted == labels) & chosen
        hits += int(correct.sum())
        total += int(chosen.sum())
        is_mask = chosen & (masked == config.mask_index)
        mask_hits += int((correct & is_mask).sum())
        mask_total += int(is_mask.sum())
        if most_frequent is not None:
            base_hits += int(((labels == most_frequent) & chosen).sum())
            base_mask_hits += int(((labels == most_frequent) & is_mask).sum())
    print(f"held-out sentences: {len(heldout)}, chosen tokens: {total} ({mask_total} replaced by the mask token)")
    print(f"top-1 accuracy, all chosen tokens: {hits / total:.4f}")
    print(f"top-1 accuracy, mask-token positions: {mask_hits / mask_total:.4f}")
    if most_frequent is not None:
        token = tokenizer.convert_ids_to_tokens(most_frequent)
        print(
            f"most-frequent-token baseline ({token!r}): {base_hits / total:.4f} (all chosen), "
            f"{base_mask_hits / mask_total:.4f} (mask-token positions)"
        )
    examples = [
        "The <special1> statement is used to define a function.",
        "This module provides access to the <special1> system.",
        "You can use a for <special1> to iterate over a list.",
        "The default value is <special1>.",
    ]
    for text in examples:
        ids = tokenizer.encode(text)
        at = ids.index(config.mask_index)
        logits = nnx.merge(graphdef, state)(jnp.asarray([ids])).logits[0, at]
        top = [tokenizer.convert_ids_to_tokens(int(i)) for i in jnp.argsort(-logits)[:5]]
        print(f"{text!r}: {top}")


if __name__ == "__main__":
    main()
