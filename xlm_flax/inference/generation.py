"""Text generation with `XLMWithLMHeadModel`: greedy, sampling and beam search, the whole loop in one `jax.jit`.

Two schemes decide what the model sees at each step (`mode=`):

* `"causal"` (the default for causal models): the usual next-token scheme. The prompt runs once (prefill) and fills
  a static-shape key/value cache (`xlm_flax.model.cache`); each new token is then fed at the next slot and the
  logits of that last position give the next token. Prompts of different lengths are left-padded (the attention
  mask says where the tokens are); positions count from each row's first token, so a padded row gives what the row
  alone gives. Prompt lengths are padded up to a bucket (`xlm_flax.inference.batching.length_buckets`), so one
  compiled loop serves every prompt length in the bucket.
* `"transformers"`: what transformers' `XLMWithLMHeadModel.generate()` does, token for token
  (`prepare_inputs_for_generation` and its cache). Every step appends `mask_token_id` (`config.json`'s
  `mask_token_id`, 0 by default, i.e. `<s>`, not `mask_index`) and predicts at that position; only the new position
  is run, and the cache keeps the keys and values of the earlier *mask* positions: generated tokens never reach the
  model, except that they count, like the prompt's, towards the number of non-pad tokens from which the reference
  derives its padding mask (`lengths`). Languages are `config.lang_id` for every position, whatever the caller
  gives, and the caller's attention mask is ignored (so one given with zeros is refused). All rows must have the
  same length; the prompt is padded on the right to a bucket internally, masked out.

Both stop a row at `eos_index` (later tokens are `pad_index`) and stop the loop when every row has stopped, so the
output is shorter than `prompt + max_new_tokens` when every row stops early; beam search follows transformers'
vectorised beam search (`length_penalty`, `early_stopping` True, False or "never"), returning the best beam.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xlm_flax.errors import InputError
from xlm_flax.inference.batching import bucket_for, length_buckets
from xlm_flax.model.cache import KVCache, forward_cached
from xlm_flax.model.masking import AttentionMask

MODES = ("causal", "transformers")
_NEG = -1.0e9  # transformers' score for a beam that must not be picked


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """What `generate` does; hashable, a static argument of the compiled loop (one compilation per value).

    Attributes:
        max_new_tokens: Most tokens generated per row.
        mode: `"causal"` or `"transformers"` (see the module docstring).
        do_sample: Sample instead of taking the most likely token (greedy, or beam search's top candidates).
        temperature, top_k, top_p: Sampling filters, applied in transformers' order (temperature, top-k, top-p);
            `top_k=0` and `top_p=1.0` disable theirs.
        num_beams: Beam-search width; 1 is greedy or sampling.
        length_penalty: Beam scores are divided by `generated_length ** length_penalty`.
        early_stopping: Beam search stops a prompt as soon as `num_beams` beams are finished (True), by
            transformers' heuristic (False), or never before it cannot improve ("never").
    """

    max_new_tokens: int
    mode: str = "causal"
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False

    def check(self, vocab_size: int) -> None:
        """Raises InputError on a setting that cannot be run."""
        if self.mode not in MODES:
            raise InputError(f"mode={self.mode!r}: use one of {', '.join(map(repr, MODES))}")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise InputError(f"max_new_tokens={self.max_new_tokens!r}: give a positive integer")
        if not isinstance(self.num_beams, int) or self.num_beams < 1:
            raise InputError(f"num_beams={self.num_beams!r}: give a positive integer")
        if 2 * self.num_beams > vocab_size:
            raise InputError(f"num_beams={self.num_beams} needs a vocabulary of at least {2 * self.num_beams}")
        if not self.temperature > 0:
            raise InputError(f"temperature={self.temperature!r}: give a positive number")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise InputError(f"top_k={self.top_k!r}: give a non-negative integer (0 disables it)")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p={self.top_p!r}: give a number in (0, 1]")
        if self.early_stopping not in (True, False, "never"):
            raise InputError(f"early_stopping={self.early_stopping!r}: use True, False or 'never'")


# ------------------------------------------------------------------------------------------------ the two schemes


@dataclasses.dataclass(frozen=True)
class _Tokens:
    """The special ids the loop needs (static)."""

    pad: int
    eos: int
    mask: int  # transformers' `mask_token_id`
    lang: int  # `config.lang_id`


def _logits(model, hidden):  # [B, D] -> [B, V] float32
    return model.pred_layer(hidden[:, None], model.transformer.embeddings.embedding[...])[:, 0]


class _Scheme:
    """What the model sees at the prefill and at each step; holds the split model."""

    def __init__(self, graphdef: nnx.GraphDef, state: nnx.State, tokens: _Tokens, n_new: int):
        self.graphdef, self.state, self.tokens, self.n_new = graphdef, state, tokens, n_new
        self.config = nnx.merge(graphdef, state).config
        self.causal = self.config.causal

    @property
    def model(self):
        # Merged afresh at each use: an NNX module must not cross into the while loop's trace from outside it.
        return nnx.merge(self.graphdef, self.state)


class _CausalScheme(_Scheme):
    """Next-token decoding from left-padded prompts. `extra` holds per-row lengths and languages."""

    def prefill(self, input_ids, attention_mask, langs, prompt_len):
        del prompt_len  # left-padded: every row ends at the last column
        model = self.model
        batch, length = input_ids.shape
        slots = length + self.n_new
        tokens = attention_mask != 0
        lengths = jnp.sum(tokens, axis=1).astype(jnp.int32)
        positions = jnp.maximum(jnp.cumsum(tokens, axis=1) - 1, 0)
        valid = jnp.concatenate([tokens, jnp.ones((batch, self.n_new), bool)], axis=1)  # [B, S]
        t, s = jnp.arange(length)[:, None], jnp.arange(slots)[None, :]
        # A pad query sees itself only, so that no row is fully masked; a token sees the tokens up to it.
        allowed = ((s <= t)[None] & valid[:, None, :]) | (s == t)[None]
        cache = KVCache.zeros(self.config, batch, slots, model.transformer.dtype)
        mask = AttentionMask(allowed=allowed[:, None], causal=True)
        hidden, cache = forward_cached(
            model.transformer, input_ids, positions, langs, tokens, mask, jnp.int32(0), cache
        )
        extra = dict(lengths=lengths, lang=langs[:, -1], valid=valid)
        return _logits(model, hidden[:, -1]), cache, extra

    def step(self, token, generated, cache, extra, prompt_len, length):
        # `token` is the generated token number `generated` (1-based): fed at the slot after the prompt's last.
        model = self.model
        slot = length + generated - 1
        batch, slots = extra["valid"].shape
        allowed = (jnp.arange(slots)[None, :] <= slot) & extra["valid"]  # [B, S]
        mask = AttentionMask(allowed=allowed[:, None, None, :], causal=True)
        positions = (extra["lengths"] + generated - 1)[:, None]
        hidden, cache = forward_cached(
            model.transformer,
            token[:, None],
            positions,
            extra["lang"][:, None],
            jnp.ones((batch, 1)),
            mask,
            slot,
            cache,
        )
        return _logits(model, hidden[:, 0]), cache, extra


class _TransformersScheme(_Scheme):
    """transformers' mask-appending scheme (see the module docstring). `extra` holds each row's pad count."""

    def _langs(self, shape):
        return jnp.full(shape, self.tokens.lang, jnp.int32)

    def prefill(self, input_ids, attention_mask, langs, prompt_len):
        del attention_mask, langs  # transformers' prepare_inputs_for_generation drops the mask and sets langs
        model = self.model
        batch, length = input_ids.shape
        width = length + 1  # the prompt's bucket and one mask
        slots = width + self.n_new
        ids = jnp.concatenate([input_ids, jnp.full((batch, 1), self.tokens.pad, input_ids.dtype)], axis=1)
        ids = jax.lax.dynamic_update_slice_in_dim(
            ids, jnp.full((batch, 1), self.tokens.mask, ids.dtype), prompt_len, axis=1
        )
        t = jnp.arange(width)
        real = t[None, :] <= prompt_len  # [1, W]: the prompt and its mask; the rest is bucket padding
        lengths = jnp.sum((ids != self.tokens.pad) & real, axis=1)  # the reference's non-pad count
        s = jnp.arange(slots)
        if self.causal:
            allowed = jnp.broadcast_to((s[None, :] <= t[:, None])[None], (batch, width, slots))
        else:
            allowed = jnp.broadcast_to((s[None, None, :] < lengths[:, None, None]), (batch, width, slots))
        keep = t[None, :] < lengths[:, None]
        positions = jnp.broadcast_to(jnp.minimum(t, self.config.max_position_embeddings - 1), (batch, width))
        cache = KVCache.zeros(self.config, batch, slots, model.transformer.dtype)
        hidden, cache = forward_cached(
            model.transformer,
            ids,
            positions,
            self._langs((batch, width)),
            keep,
            AttentionMask(allowed=allowed[:, None], causal=self.causal),
            jnp.int32(0),
            cache,
        )
        last = jax.lax.dynamic_index_in_dim(hidden, prompt_len, axis=1, keepdims=False)
        extra = dict(pads=(prompt_len + 1 - lengths).astype(jnp.int32))
        return _logits(model, last), cache, extra

    def step(self, token, generated, cache, extra, prompt_len, length):
        # The generated token is only counted; a fresh mask goes at position prompt_len + generated.
        model = self.model
        batch = token.shape[0]
        pads = extra["pads"] + (token == self.tokens.pad).astype(jnp.int32)
        extra = dict(pads=pads)
        slot = prompt_len + generated
        slots = cache.k.shape[2]
        kept = pads == 0  # the reference keeps the new position only while the sequence holds no pad
        visible = jnp.broadcast_to(jnp.arange(slots)[None, :] <= slot, (batch, slots))
        uniform = None if self.causal else ~kept[:, None]  # non-causal: no pad, all visible; else all masked
        hidden, cache = forward_cached(
            model.transformer,
            jnp.full((batch, 1), self.tokens.mask, jnp.int32),
            jnp.full((batch, 1), slot, jnp.int32),
            self._langs((batch, 1)),
            kept[:, None],
            AttentionMask(allowed=visible[:, None, None, :], causal=self.causal),
            slot,
            cache,
            uniform,
        )
        return _logits(model, hidden[:, 0]), cache, extra


_SCHEMES = {"causal": _CausalScheme, "transformers": _TransformersScheme}


# -------------------------------------------------------------------------------------------------- token choice


def _filter_logits(logits: jax.Array, settings: GenerationSettings) -> jax.Array:
    """transformers' sampling warpers in its order: temperature, top-k, top-p (at least one token kept)."""
    logits = logits / settings.temperature
    if settings.top_k:
        kth = jax.lax.top_k(logits, min(settings.top_k, logits.shape[-1]))[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if settings.top_p < 1.0:
        order = jnp.argsort(logits, axis=-1)  # ascending, as transformers' TopPLogitsWarper
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        remove_sorted = cumulative <= 1 - settings.top_p
        remove_sorted = remove_sorted.at[..., -1].set(False)
        remove = jnp.zeros_like(remove_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(remove_sorted)
        logits = jnp.where(remove, -jnp.inf, logits)
    return logits


def _choose(logits: jax.Array, settings: GenerationSettings, key: jax.Array) -> jax.Array:
    if not settings.do_sample:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, _filter_logits(logits, settings), axis=-1).astype(jnp.int32)


# --------------------------------------------------------------------------------------------------- the loops


def _greedy_or_sample(scheme, settings, tokens, input_ids, attention_mask, langs, prompt_len, key):
    batch, length = input_ids.shape
    n = settings.max_new_tokens
    logits, cache, extra = scheme.prefill(input_ids, attention_mask, langs, prompt_len)
    keys = jax.random.split(key, n)
    first = _choose(logits, settings, keys[0])
    out = jnp.full((batch, n), tokens.pad, jnp.int32).at[:, 0].set(first)
    done = first == tokens.eos

    def cond(carry):
        generated, done = carry[0], carry[1]
        return (generated < n) & ~jnp.all(done)

    def body(carry):
        generated, done, out, cache, extra = carry
        previous = jax.lax.dynamic_index_in_dim(out, generated - 1, axis=1, keepdims=False)
        logits, cache, extra = scheme.step(previous, generated, cache, extra, prompt_len, length)
        token = _choose(logits, settings, keys[generated])
        token = jnp.where(done, tokens.pad, token)
        out = jax.lax.dynamic_update_slice_in_dim(out, token[:, None], generated, axis=1)
        return generated + 1, done | (token == tokens.eos), out, cache, extra

    generated, _, out, _, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), done, out, cache, extra))
    return out, generated


def _take_rows(tree, rows):
    return jax.tree.map(lambda a: jnp.take(a, rows, axis=0), tree)


def _beam_search(scheme, settings, tokens, input_ids, attention_mask, langs, prompt_len, key):
    """transformers' `_beam_search` (greedy candidates, or sampled ones with `do_sample`), vectorised the same way;
    sequences hold only the generated part, the prompt being the same for every beam."""
    batch, length = input_ids.shape
    k, n = settings.num_beams, settings.max_new_tokens
    keep_k = 2 * k  # transformers: max(2, 1 + number of eos ids) * num_beams
    lp, early = settings.length_penalty, settings.early_stopping
    logits, cache, extra = scheme.prefill(input_ids, attention_mask, langs, prompt_len)
    logits = jnp.repeat(logits, k, axis=0)  # the beams of one prompt start identical
    cache, extra = cache.repeat(k), jax.tree.map(lambda a: jnp.repeat(a, k, axis=0), extra)
    vocab = logits.shape[-1]
    top_mask = jnp.arange(keep_k) < k
    fill = tokens.pad if tokens.pad else tokens.eos
    state = dict(
        g=jnp.int32(0),
        logits=logits,
        cache=cache,
        extra=extra,
        running=jnp.full((batch, k, n), fill, jnp.int32),
        running_scores=jnp.zeros((batch, k)).at[:, 1:].set(_NEG),
        sequences=jnp.full((batch, k, n), fill, jnp.int32),
        scores=jnp.full((batch, k), _NEG),
        lengths=jnp.zeros((batch, k), jnp.int32),
        finished=jnp.zeros((batch, k), bool),
        unsatisfied=jnp.ones((batch,), bool),
        go=jnp.bool_(True),
        key=key,
    )

    def gather(a, index):  # a: [B, K', ...], index: [B, K]
        return jnp.take_along_axis(a, index.reshape(index.shape + (1,) * (a.ndim - 2)), axis=1)

    def body(st):
        g = st["g"]
        log_probs = jax.nn.log_softmax(st["logits"], axis=-1).reshape(batch, k, vocab)
        if settings.do_sample:
            log_probs = jax.nn.log_softmax(_filter_logits(st["logits"], settings), axis=-1).reshape(batch, k, vocab)
        accumulated = (log_probs + st["running_scores"][:, :, None]).reshape(batch, k * vocab)
        key, sub = jax.random.split(st["key"])
        if settings.do_sample:  # sampling without replacement (Gumbel top-k), then sorted by score
            gumbel = jax.random.gumbel(sub, accumulated.shape)
            picked = jax.lax.top_k(accumulated + gumbel, keep_k)[1]
            top_scores = jnp.take_along_axis(accumulated, picked, axis=1)
            order = jnp.argsort(-top_scores, axis=1)
            top_scores, top_index = jnp.take_along_axis(top_scores, order, 1), jnp.take_along_axis(picked, order, 1)
        else:
            top_scores, top_index = jax.lax.top_k(accumulated, keep_k)
        parent, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
        top_sequences = gather(st["running"], parent).at[:, :, g].set(token)
        hits = (token == tokens.eos) | (g + 1 >= n)
        # The running beams for the next step: the best candidates that did not stop.
        next_index = jax.lax.top_k(top_scores + hits * _NEG, k)[1]
        running = gather(top_sequences, next_index)
        running_scores = gather(top_scores + hits * _NEG, next_index)
        running_parent = gather(parent, next_index)
        # The finished beams: merge the candidates that stopped among the top `num_beams`.
        finished_scores = top_scores / ((g + 1).astype(jnp.float32) ** lp)
        full = jnp.all(st["finished"], axis=1, keepdims=True) & (early is True)
        finished_scores = finished_scores + full * _NEG + (~st["unsatisfied"][:, None]) * _NEG
        just_finished = hits & top_mask[None, :]
        finished_scores = finished_scores + (~just_finished) * _NEG
        merged = jnp.concatenate([st["scores"], finished_scores], axis=1)
        best = jax.lax.top_k(merged, k)[1]
        sequences = gather(jnp.concatenate([st["sequences"], top_sequences], axis=1), best)
        scores = gather(merged, best)
        lengths = gather(jnp.concatenate([st["lengths"], jnp.full((batch, keep_k), g + 1)], axis=1), best)
        finished = gather(jnp.concatenate([st["finished"], just_finished], axis=1), best)
        g = g + 1
        # transformers' early-stop heuristic and loop condition.
        best_length = jnp.float32(n) if (early == "never" and lp > 0) else g.astype(jnp.float32)
        best_running = running_scores[:, :1] / best_length**lp
        worst = jnp.where(finished, jnp.min(scores, axis=1, keepdims=True), _NEG)
        unsatisfied = st["unsatisfied"] & jnp.any(best_running > worst, axis=1)
        go = jnp.any(unsatisfied) & ~(jnp.all(finished) & (early is True)) & ~jnp.all(hits)
        rows = (jnp.arange(batch)[:, None] * k + running_parent).reshape(-1)
        cache, extra = st["cache"].take(rows), _take_rows(st["extra"], rows)

        def advance(args):
            cache, extra = args
            return scheme.step(running[:, :, g - 1].reshape(-1), g, cache, extra, prompt_len, length)

        logits, cache, extra = jax.lax.cond(go, advance, lambda a: (st["logits"], *a), (cache, extra))
        return dict(
            g=g,
            logits=logits,
            cache=cache,
            extra=extra,
            running=running,
            running_scores=running_scores,
            sequences=sequences,
            scores=scores,
            lengths=lengths,
            finished=finished,
            unsatisfied=unsatisfied,
            go=go,
            key=key,
        )

    state = jax.lax.while_loop(lambda st: st["go"], body, state)
    return state["sequences"][:, 0], jnp.max(state["lengths"][:, 0])


@partial(jax.jit, static_argnames=("graphdef", "settings", "tokens"))
def _generate_kernel(graphdef, state, input_ids, attention_mask, langs, prompt_len, key, *, settings, tokens):
    scheme = _SCHEMES[settings.mode](graphdef, state, tokens, settings.max_new_tokens)
    loop = _beam_search if settings.num_beams > 1 else _greedy_or_sample
    return loop(scheme, settings, tokens, input_ids, attention_mask, langs, prompt_len, key)


# ------------------------------------------------------------------------------------------------ the entry point


def _special_tokens(config, eos: int | None) -> _Tokens:
    return _Tokens(
        pad=config.pad_index,
        eos=config.eos_index if eos is None else int(eos),
        mask=int(config.extra.get("mask_token_id", 0)),
        lang=config.lang_id,
    )


def _as_array(name: str, value: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise InputError(f"{name} must be a [batch, length] array of integers, got shape {array.shape}")
    if shape is not None and array.shape != shape:
        raise InputError(f"{name} has shape {array.shape}; expected {shape}, that of input_ids")
    return array.astype(np.int32)


def generate(
    model: Any,
    input_ids: Any,  # [batch, length] int
    *,
    max_new_tokens: int,
    mode: str | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    langs: Any = None,  # [batch, length] int
    lang: str | None = None,
    attention_mask: Any = None,  # [batch, length], 1 on tokens; left padding
    key: jax.Array | None = None,
    eos_token_id: int | None = None,
) -> np.ndarray:
    """Generates continuations of `input_ids` with an `XLMWithLMHeadModel` (see the module docstring).

    Args:
        model: An `XLMWithLMHeadModel`.
        input_ids: Prompts `[batch, length]`; in `"causal"` mode padded on the left (zeros of `attention_mask`).
        max_new_tokens: Most tokens to add.
        mode: `"causal"` or `"transformers"`; None picks `"causal"` for causal models, else `"transformers"` (the
            only scheme a masked-LM model can generate with).
        do_sample: Sample the next token instead of taking the most likely one (`key` seeds it).
        temperature: Sampling temperature.
        top_k: Sample among the `top_k` most likely tokens (0: all).
        top_p: Sample among the smallest set of tokens whose probability reaches `top_p` (1.0: all).
        num_beams: Beam-search width (1: no beam search).
        length_penalty: Finished beams are scored `log_prob / generated_length ** length_penalty`.
        early_stopping: Beam search's stopping rule: True, False (transformers' heuristic) or "never".
        langs: Language ids `[batch, length]` (`"causal"` mode); new tokens take each row's last language.
        lang: A language code for every token instead of `langs`. Neither: `config.lang_id`.
        attention_mask: `[batch, length]`, 1 on tokens, 0 on left padding (`"causal"` mode).
        key: JAX random key for sampling; defaults to `jax.random.key(0)`.
        eos_token_id: The id that ends a row, instead of `config.eos_index` (as transformers' `generate` takes it).

    Returns:
        `[batch, length + generated]` int32 token ids: the prompts as given, then the new tokens (`pad_index` after
        a row's end of sentence); `generated < max_new_tokens` when every row stopped early.

    Raises:
        InputError: bad settings, shapes, languages or padding, or a prompt too long for the model.
    """
    config = model.config
    if not hasattr(model, "pred_layer"):
        raise InputError(f"generate needs a model with a language-model head, not {type(model).__name__}")
    mode = mode if mode is not None else ("causal" if config.causal else "transformers")
    settings = GenerationSettings(
        max_new_tokens=max_new_tokens,
        mode=mode,
        do_sample=bool(do_sample),
        temperature=float(temperature),
        top_k=top_k,
        top_p=float(top_p),
        num_beams=num_beams,
        length_penalty=float(length_penalty),
        early_stopping=early_stopping,
    )
    settings.check(config.vocab_size)
    if eos_token_id is not None and not 0 <= int(eos_token_id) < config.vocab_size:
        raise InputError(f"eos_token_id={eos_token_id!r} is outside the vocabulary [0, {config.vocab_size})")
    ids = _as_array("input_ids", input_ids)
    batch, length = ids.shape
    if length == 0:
        raise InputError("input_ids is empty: give a prompt of at least one token")
    if ids.min() < 0 or ids.max() >= config.vocab_size:
        raise InputError(f"input_ids hold ids outside the vocabulary [0, {config.vocab_size})")
    mask = np.ones_like(ids) if attention_mask is None else _as_array("attention_mask", attention_mask, ids.shape)
    mask = (mask != 0).astype(np.int32)
    if lang is not None and langs is not None:
        raise InputError("give lang or langs, not both")
    if lang is not None:
        if lang not in config.lang2id:
            known = ", ".join(sorted(config.lang2id)) or "none (a monolingual model)"
            raise InputError(f"unknown language {lang!r}; this model knows: {known}")
        lang_ids = np.full_like(ids, config.lang2id[lang])
    elif langs is not None:
        lang_ids = _as_array("langs", langs, ids.shape)
        if lang_ids.min() < 0 or lang_ids.max() >= config.n_langs:
            raise InputError(f"langs hold ids outside [0, {config.n_langs})")
    else:
        lang_ids = np.full_like(ids, config.lang_id)
    max_positions = config.max_position_embeddings
    if mode == "causal":
        if np.any(np.diff(mask, axis=1) < 0) or np.any(mask[:, -1] == 0):
            raise InputError(
                "causal generation needs prompts padded on the left (attention_mask 0 then 1, each row ending in a "
                "token): pad with padding_side='left'"
            )
        longest = int(mask.sum(1).max())
    else:
        if not mask.all():
            raise InputError(
                "mode='transformers' ignores attention_mask, as transformers does: give prompts of one length "
                "without padding, or use mode='causal' for a causal model"
            )
        longest = length
    if longest + max_new_tokens > max_positions:
        raise InputError(
            f"prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) exceeds max_position_embeddings="
            f"{max_positions}: shorten the prompt or ask for fewer tokens"
        )
    bucket = bucket_for(length, length_buckets(max_positions))
    extra = bucket - length
    if mode == "causal":  # more padding on the left, masked out
        padded_ids = np.pad(ids, ((0, 0), (extra, 0)), constant_values=config.pad_index)
        padded_mask = np.pad(mask, ((0, 0), (extra, 0)))
        padded_langs = np.pad(lang_ids, ((0, 0), (extra, 0)), mode="edge")
    else:  # on the right, beyond the mask position
        padded_ids = np.pad(ids, ((0, 0), (0, extra)), constant_values=config.pad_index)
        padded_mask = np.pad(mask, ((0, 0), (0, extra)))
        padded_langs = np.pad(lang_ids, ((0, 0), (0, extra)), mode="edge")
    graphdef, state = nnx.split(model)
    new, generated = _generate_kernel(
        graphdef,
        state,
        jnp.asarray(padded_ids),
        jnp.asarray(padded_mask),
        jnp.asarray(padded_langs),
        jnp.int32(length),
        jax.random.key(0) if key is None else key,
        settings=settings,
        tokens=_special_tokens(config, eos_token_id),
    )
    new = np.asarray(new)[:, : int(generated)]
    return np.concatenate([ids, new], axis=1)


class Generator:
    """Generates text from text with an `XLMWithLMHeadModel` and its tokenizer (the `xlm-flax generate` command).

    Args:
        model: An `XLMWithLMHeadModel`.
        tokenizer: Its tokenizer.

    Example:
        >>> gen = Generator.from_pretrained("./xlm-clm-enfr-1024")
        >>> gen(["the cat"], max_new_tokens=10, lang="en")
    """

    def __init__(self, model: Any, tokenizer: Any):
        if not hasattr(model, "pred_layer"):
            raise InputError(f"Generator needs a model with a language-model head, not {type(model).__name__}")
        self.model, self.tokenizer = model, tokenizer

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, **options: Any) -> Generator:
        """Loads the model (`XLMWithLMHeadModel.from_pretrained(path, **options)`) and its tokenizer."""
        from xlm_flax.model.lm_head import XLMWithLMHeadModel
        from xlm_flax.tokenization import load_tokenizer

        tokenizer = load_tokenizer(path_or_hub_id)
        return cls(XLMWithLMHeadModel.from_pretrained(path_or_hub_id, **options), tokenizer)

    def __call__(self, prompts: str | Sequence[str], *, lang: str | None = None, **settings: Any) -> list[str]:
        """Continues each prompt; returns the prompts with their continuations, decoded without special tokens.

        A prompt is framed as the tokenizer frames a sentence (`tokenization.encode_text`: `<s>`, or `</s>` for the
        original code's models, then the words), without the closing `</s>`: the model continues the sentence.

        Args:
            prompts: One text or several.
            lang: The prompts' language code (tokenization, and the language of a model with language embeddings).
            **settings: Keyword arguments of `generate` (`max_new_tokens`, `num_beams`, `do_sample`, ...).
        """
        from xlm_flax.tokenization import Languages, encode_text

        texts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise InputError("give one or more non-empty prompts")
        config = self.model.config
        mode = settings.get("mode") or ("causal" if config.causal else "transformers")
        if "max_new_tokens" in settings:  # bad settings first: their error is then the only thing said
            names = [f.name for f in dataclasses.fields(GenerationSettings)]
            fields = {name: settings[name] for name in names if name in settings}
            GenerationSettings(**{**fields, "mode": mode}).check(config.vocab_size)
        code, lang_id = Languages(config).resolve(lang)
        rows = [encode_text(self.tokenizer, text, code)[:-1] for text in texts]
        # transformers' scheme has no padding: one call per prompt; the causal one takes one left-padded batch.
        groups = [list(range(len(rows)))] if mode == "causal" else [[i] for i in range(len(rows))]
        outputs: dict[int, list[int]] = {}
        for group in groups:
            width = max(len(rows[i]) for i in group)
            ids = np.full((len(group), width), config.pad_index, np.int32)
            mask = np.zeros_like(ids)
            for r, i in enumerate(group):
                ids[r, width - len(rows[i]) :] = rows[i]
                mask[r, width - len(rows[i]) :] = 1
            langs = None if lang_id is None else np.full_like(ids, lang_id)
            out = generate(self.model, ids, attention_mask=mask, langs=langs, **settings)
            for r, i in enumerate(group):
                outputs[i] = [int(t) for t in out[r][width - len(rows[i]) :]]
        return [self.tokenizer.decode(outputs[i], skip_special_tokens=True) for i in range(len(rows))]


__all__ = ["GenerationSettings", "Generator", "MODES", "generate"]
