"""Training objectives of XLM: masked (MLM), translation (TLM) and causal (CLM) language modelling.

MLM masking runs on device, inside the jitted training step, from a `jax.random` key: the key of step `s` is derived
from the run's base key and `s`, so a resumed run masks exactly as an uninterrupted one and no masked copy of the
batch crosses from host to device. As in the XLM paper and reference code, every token is chosen independently with
probability 15 %; of the chosen tokens 80 % become the mask token, 10 % a random token and 10 % stay unchanged; the
loss is taken on the chosen tokens only (labels are -100 elsewhere). Padding and special tokens are never chosen:
in XLM's vocabulary layout these are ids 0..13 (`<s>`, `</s>`, `<pad>`, `<unk>`, `<special0..9>`), plus whatever the
config names as pad/bos/eos/unk/mask. Random replacements are drawn uniformly from the other tokens.

TLM pairs and CLM targets are built on the host in numpy, where the batch is assembled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from xlm_flax.config import XLMConfig
from xlm_flax.errors import InputError
from xlm_flax.tokens import IGNORE_INDEX, N_SPECIAL_TOKENS


def special_ids(config: XLMConfig, n_special: int = N_SPECIAL_TOKENS) -> tuple[int, ...]:
    """Ids that MLM never chooses: the first `n_special` ids and the config's pad/bos/eos/unk/mask ids."""
    named = (config.pad_index, config.bos_index, config.eos_index, config.unk_index, config.mask_index)
    return tuple(sorted(set(range(min(n_special, config.vocab_size))) | set(named)))


def mask_tokens(
    key: jax.Array,
    input_ids: jax.Array,  # [batch, length]
    *,
    mask_index: int,
    vocab_size: int,
    exclude: Sequence[int],
    probability: float = 0.15,
    mask_rate: float = 0.8,
    random_rate: float = 0.1,
    attention_mask: jax.Array | None = None,  # [batch, length]; 0 on padding
) -> tuple[jax.Array, jax.Array]:
    """BERT/XLM masking of a batch (jittable).

    Args:
        key: A `jax.random` key.
        input_ids: Token ids `[batch, length]`.
        mask_index: Id of the mask token (`<special1>` = 5 in XLM vocabularies).
        vocab_size: Size of the vocabulary, for random replacements.
        exclude: Ids that are never chosen (padding and special tokens), e.g. `special_ids(config)`.
        probability: Chance of each eligible token to be chosen.
        mask_rate: Share of the chosen tokens replaced by `mask_index`.
        random_rate: Share of the chosen tokens replaced by a random non-special token; the rest stay unchanged.
        attention_mask: When given, positions where it is 0 are never chosen either.

    Returns:
        `(masked_ids, labels)`: the input with chosen tokens replaced, and the original ids at chosen positions,
        `IGNORE_INDEX` elsewhere, both `[batch, length]`.

    Raises:
        InputError: when the rates are not probabilities or no token is left to draw replacements from.
    """
    if not (0.0 <= probability <= 1.0 and mask_rate >= 0 and random_rate >= 0 and mask_rate + random_rate <= 1.0):
        raise InputError(
            f"mask_tokens: probability={probability}, mask_rate={mask_rate}, random_rate={random_rate} are not "
            "valid rates; use values in [0, 1] with mask_rate + random_rate <= 1"
        )
    excluded = np.zeros(vocab_size, dtype=bool)
    excluded[[i for i in exclude if 0 <= i < vocab_size]] = True
    candidates = np.flatnonzero(~excluded)
    if candidates.size == 0:
        raise InputError("mask_tokens: every id is excluded; nothing to draw random replacements from")
    k_choose, k_kind, k_random = jax.random.split(key, 3)
    eligible = ~jnp.asarray(excluded)[input_ids]
    if attention_mask is not None:
        eligible &= attention_mask != 0
    chosen = eligible & jax.random.bernoulli(k_choose, probability, input_ids.shape)
    kind = jax.random.uniform(k_kind, input_ids.shape)  # < mask_rate: mask; then random_rate: random; else keep
    random_ids = jnp.asarray(candidates, input_ids.dtype)[
        jax.random.randint(k_random, input_ids.shape, 0, candidates.size)
    ]
    replaced = jnp.where(kind < mask_rate, jnp.asarray(mask_index, input_ids.dtype), input_ids)
    replaced = jnp.where((kind >= mask_rate) & (kind < mask_rate + random_rate), random_ids, replaced)
    masked_ids = jnp.where(chosen, replaced, input_ids)
    labels = jnp.where(chosen, input_ids, IGNORE_INDEX)
    return masked_ids, labels


def tlm_pair(
    first: Sequence[int], second: Sequence[int], first_lang: int, second_lang: int, *, max_length: int | None = None
) -> dict[str, np.ndarray]:
    """One TLM example: two tokenised sentences (each with its own `<s> ... </s>`) side by side.

    As in XLM's reference code, positions restart at 0 for the second sentence and every token carries the id of
    its sentence's language. When `max_length` is given, each sentence is cut to at most half of it (keeping its
    last token, the end-of-sentence marker).

    Args:
        first: Ids of the first sentence.
        second: Ids of the second sentence.
        first_lang: Language id of the first sentence.
        second_lang: Language id of the second sentence.
        max_length: Longest result.

    Returns:
        `input_ids`, `position_ids` and `langs`, each `[len(first) + len(second)]` int32.
    """
    parts = [list(first), list(second)]
    if max_length is not None:
        half = [max_length // 2, max_length - max_length // 2]
        parts = [p if len(p) <= h else p[: h - 1] + p[-1:] for p, h in zip(parts, half)]
    ids = np.asarray(parts[0] + parts[1], dtype=np.int32)
    positions = np.concatenate([np.arange(len(parts[0])), np.arange(len(parts[1]))]).astype(np.int32)
    langs = np.asarray([first_lang] * len(parts[0]) + [second_lang] * len(parts[1]), dtype=np.int32)
    return {"input_ids": ids, "position_ids": positions, "langs": langs}


def clm_labels(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Next-token targets of a causal model: `labels[:, t] = input_ids[:, t + 1]`, -100 at the last position and
    wherever the next token is padding.

    Args:
        input_ids: `[batch, length]`.
        attention_mask: `[batch, length]`, 0 on padding.

    Returns:
        Labels `[batch, length]` int32.
    """
    labels = np.full(input_ids.shape, IGNORE_INDEX, dtype=np.int32)
    labels[:, :-1] = np.where(attention_mask[:, 1:] != 0, input_ids[:, 1:], IGNORE_INDEX)
    return labels


def pad_batch(rows: Iterable[dict[str, np.ndarray]], length: int, pad_values: dict[str, int]) -> dict[str, np.ndarray]:
    """Stacks variable-length rows into `[batch, length]` arrays, right-padded, plus an `attention_mask`.

    Args:
        rows: Dicts of 1-D arrays of equal length per row (e.g. from `tlm_pair`).
        length: Width of the batch; longer rows are an error.
        pad_values: Padding value of each key (keys not named are padded with 0).

    Raises:
        InputError: when a row is longer than `length`.
    """
    rows = list(rows)
    out: dict[str, np.ndarray] = {}
    for name in rows[0]:
        out[name] = np.full((len(rows), length), pad_values.get(name, 0), dtype=np.int32)
    out["attention_mask"] = np.zeros((len(rows), length), dtype=np.int32)
    for i, row in enumerate(rows):
        n = len(next(iter(row.values())))
        if n > length:
            raise InputError(f"pad_batch: a row of length {n} does not fit in {length}; raise the bucket size")
        for name, value in row.items():
            out[name][i, :n] = value
        out["attention_mask"][i, :n] = 1
    return out


__all__ = ["IGNORE_INDEX", "clm_labels", "mask_tokens", "pad_batch", "special_ids", "tlm_pair"]
