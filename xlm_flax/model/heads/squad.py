"""The SQuAD beam-search head (transformers' `XLMSQuADHead` and its poolers).

The reference's odd corners are kept: `p_mask`ed logits are filled with `-1e30` (`-65500` when `p_mask` is float16)
by `x * (1 - p_mask) - fill * p_mask`, its "log probs" are softmax probabilities, and the end beam is flattened
end-major (`[batch, end_n_top * start_n_top]`, index `e * start_n_top + s`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from xlm_flax.config import XLMConfig
from xlm_flax.errors import ConfigError, InputError
from xlm_flax.model.heads.common import _check_positions, _dense, _KernelOnly
from xlm_flax.model.initializers import _normal
from xlm_flax.model.layers import DTypeLike, LayerNorm
from xlm_flax.model.losses import binary_cross_entropy_with_logits, cross_entropy
from xlm_flax.model.outputs import SquadOutput


def _apply_p_mask(x: jax.Array, p_mask: jax.Array | None) -> jax.Array:
    """The reference's masking: `x * (1 - p_mask) - fill * p_mask`, fill 65500 for a float16 mask, else 1e30.

    As in PyTorch, `1 - p_mask` and `fill * p_mask` are computed in the mask's own dtype when it is floating (so a
    float16 mask's fill is 65500 rounded to float16, i.e. 65504), in float32 otherwise; the logits stay float32.
    """
    if p_mask is None:
        return x
    if not jnp.issubdtype(p_mask.dtype, jnp.floating):
        p_mask = p_mask.astype(jnp.float32)
    fill = jnp.asarray(65500.0 if p_mask.dtype == jnp.float16 else 1e30, p_mask.dtype)
    keep = (jnp.asarray(1, p_mask.dtype) - p_mask).astype(jnp.float32)
    return x * keep - (fill * p_mask).astype(jnp.float32)


class PoolerStartLogits(nnx.Module):
    """SQuAD start logits: one linear map per position (transformers' `XLMPoolerStartLogits`).

    Built as `(config, *, dtype, param_dtype, precision, rngs)`, the sub-module convention of `xlm_flax.model`.
    """

    def __init__(self, config: XLMConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, precision: str, rngs: nnx.Rngs):
        self.dense = _dense(
            config,
            config.emb_dim,
            1,
            ("embed", None),
            dtype=dtype,
            param_dtype=param_dtype,
            precision=precision,
            rngs=rngs,
        )

    def __call__(self, hidden_states: jax.Array, p_mask: jax.Array | None = None) -> jax.Array:
        """Maps `[batch, length, emb_dim]` to float32 `[batch, length]`.

        Args:
            hidden_states: `[batch, length, emb_dim]`.
            p_mask: `[batch, length]`, 1 where the answer cannot start.
        """
        return _apply_p_mask(self.dense(hidden_states)[..., 0].astype(jnp.float32), p_mask)


class PoolerEndLogits(nnx.Module):
    """SQuAD end logits given a start (transformers' `XLMPoolerEndLogits`).

    `dense_0` acts on `concat([hidden, start_state])`; we apply its two halves separately and add, which is the same
    map without materialising the concatenation for every (position, start) pair of the beam.

    Built as `(config, *, dtype, param_dtype, precision, rngs)`, the sub-module convention of `xlm_flax.model`.
    """

    def __init__(self, config: XLMConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, precision: str, rngs: nnx.Rngs):
        d = config.emb_dim
        dense = partial(_dense, config, dtype=dtype, param_dtype=param_dtype, precision=precision, rngs=rngs)
        self.dense_0 = dense(2 * d, d, ("embed", "embed"))
        self.LayerNorm = LayerNorm(d, eps=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype)
        self.dense_1 = dense(d, 1, ("embed", None))
        self.dtype = dtype
        self.precision = precision

    def __call__(
        self,
        hidden_states: jax.Array,  # [batch, length, emb_dim]
        start_states: jax.Array,  # [batch, emb_dim] or [batch, beam, emb_dim]
        p_mask: jax.Array | None = None,  # [batch, length]
    ) -> jax.Array:
        """Returns float32 end logits `[batch, length]` (one start per row) or `[batch, length, beam]`.

        Args:
            hidden_states: `[batch, length, emb_dim]`.
            start_states: The start's hidden state, `[batch, emb_dim]` or `[batch, beam, emb_dim]`.
            p_mask: `[batch, length]`, 1 where the answer cannot end.
        """
        d = hidden_states.shape[-1]
        kernel = self.dense_0.kernel[...].astype(self.dtype)
        from_hidden = jnp.einsum("BSD,DO->BSO", hidden_states.astype(self.dtype), kernel[:d], precision=self.precision)
        from_start = jnp.einsum(
            "B...D,DO->B...O", start_states.astype(self.dtype), kernel[d:], precision=self.precision
        )
        bias = self.dense_0.bias[...].astype(self.dtype)
        if start_states.ndim == 2:
            x = from_hidden + from_start[:, None, :] + bias  # [B, S, D]
        else:
            x = from_hidden[:, :, None, :] + from_start[:, None, :, :] + bias  # [B, S, K, D]
        x = self.LayerNorm(jnp.tanh(x))
        logits = self.dense_1(x)[..., 0].astype(jnp.float32)
        if p_mask is not None and logits.ndim == 3:
            p_mask = p_mask[:, :, None]
        return _apply_p_mask(logits, p_mask)


class PoolerAnswerClass(nnx.Module):
    """SQuAD 2.0 answerability logit from the start state and the CLS state (transformers'
    `XLMPoolerAnswerClass`).

    Built as `(config, *, dtype, param_dtype, precision, rngs)`, the sub-module convention of `xlm_flax.model`.
    """

    def __init__(self, config: XLMConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, precision: str, rngs: nnx.Rngs):
        d = config.emb_dim
        layer = dict(dtype=dtype, param_dtype=param_dtype, precision=precision, rngs=rngs)
        self.dense_0 = _dense(config, 2 * d, d, ("embed", "embed"), **layer)
        self.dense_1 = _KernelOnly(d, 1, ("embed", None), init=_normal(config.init_std), **layer)

    def __call__(
        self,
        hidden_states: jax.Array,  # [batch, length, emb_dim]
        start_states: jax.Array,  # [batch, emb_dim]
        cls_index: jax.Array | None = None,  # [batch]; None: the last position
    ) -> jax.Array:
        """Returns float32 logits `[batch]`.

        Args:
            hidden_states: `[batch, length, emb_dim]`.
            start_states: `[batch, emb_dim]` state of the predicted or given start.
            cls_index: `[batch]` position of the CLS token; None takes the last position.
        """
        if cls_index is None:
            cls_state = hidden_states[:, -1]
        else:
            cls_state = jnp.take_along_axis(hidden_states, cls_index[:, None, None], axis=1)[:, 0]
        x = jnp.tanh(self.dense_0(jnp.concatenate([start_states.astype(cls_state.dtype), cls_state], axis=-1)))
        return self.dense_1(x)[..., 0].astype(jnp.float32)


class SquadHead(nnx.Module):
    """The XLNet-style SQuAD head (transformers' `XLMSQuADHead`): start, end-given-start and answerability.

    Built as `(config, *, dtype, param_dtype, precision, rngs)`, the sub-module convention of `xlm_flax.model`.
    """

    def __init__(self, config: XLMConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, precision: str, rngs: nnx.Rngs):
        for field in ("start_n_top", "end_n_top"):
            if getattr(config, field) < 1:
                raise ConfigError(f"config field {field}={getattr(config, field)}: the beam size must be at least 1")
        kwargs = dict(dtype=dtype, param_dtype=param_dtype, precision=precision, rngs=rngs)
        self.precision = precision
        self.start_n_top = config.start_n_top
        self.end_n_top = config.end_n_top
        self.start_logits = PoolerStartLogits(config, **kwargs)
        self.end_logits = PoolerEndLogits(config, **kwargs)
        self.answer_class = PoolerAnswerClass(config, **kwargs)

    def check_length(self, length: int) -> None:
        """Refuses (InputError) inputs shorter than the beam, which top-k cannot serve.

        Args:
            length: The input length.
        """
        if length < max(self.start_n_top, self.end_n_top):
            raise InputError(
                f"input length {length} is shorter than the beam (start_n_top={self.start_n_top}, "
                f"end_n_top={self.end_n_top}); pad the input or lower the beam sizes in the config"
            )

    def __call__(
        self,
        hidden_states: jax.Array,  # [batch, length, emb_dim]
        start_positions: jax.Array | None = None,  # [batch]
        end_positions: jax.Array | None = None,  # [batch]
        cls_index: jax.Array | None = None,  # [batch]
        is_impossible: jax.Array | None = None,  # [batch]
        p_mask: jax.Array | None = None,  # [batch, length], 1 = cannot be in the answer
    ) -> SquadOutput:
        """Training loss when both positions are given, else the beam-search outputs (see `SquadOutput`).

        Args:
            hidden_states: `[batch, length, emb_dim]` final hidden states.
            start_positions: `[batch]` answer start.
            end_positions: `[batch]` answer end.
            cls_index: `[batch]` position of the CLS token; None takes the last position.
            is_impossible: `[batch]` 1 for unanswerable questions.
            p_mask: `[batch, length]`, 1 where the answer cannot be.
        """
        batch, length = hidden_states.shape[:2]
        if p_mask is not None and p_mask.shape != (batch, length):
            raise InputError(f"p_mask has shape {p_mask.shape}; expected (batch, length) = {(batch, length)}")
        cls_index = _check_positions("cls_index", cls_index, batch)
        start_logits = self.start_logits(hidden_states, p_mask)  # [B, S]
        if start_positions is not None and end_positions is not None:
            start_positions = _check_positions("start_positions", start_positions, batch)
            end_positions = _check_positions("end_positions", end_positions, batch)
            start_states = jnp.take_along_axis(hidden_states, start_positions[:, None, None], axis=1)[:, 0]
            end_logits = self.end_logits(hidden_states, start_states, p_mask)
            loss = (cross_entropy(start_logits, start_positions) + cross_entropy(end_logits, end_positions)) / 2
            if cls_index is not None and is_impossible is not None:
                is_impossible = _check_positions("is_impossible", is_impossible, batch)
                cls_logits = self.answer_class(hidden_states, start_states, cls_index)
                loss = loss + 0.5 * binary_cross_entropy_with_logits(cls_logits, is_impossible)
            return SquadOutput(loss=loss)

        self.check_length(length)
        start_probs = jax.nn.softmax(start_logits, axis=-1)  # [B, S]
        start_top_probs, start_top_index = jax.lax.top_k(start_probs, self.start_n_top)  # [B, K]
        start_states = jnp.take_along_axis(hidden_states, start_top_index[:, :, None], axis=1)  # [B, K, D]
        end_logits = self.end_logits(hidden_states, start_states, p_mask)  # [B, S, K]
        end_probs = jax.nn.softmax(end_logits, axis=1)
        end_top_probs, end_top_index = jax.lax.top_k(jnp.swapaxes(end_probs, 1, 2), self.end_n_top)  # [B, K, E]
        # The reference takes top-k over positions of [B, S, K], giving [B, E, K], and flattens that end-major.
        end_top_probs = jnp.swapaxes(end_top_probs, 1, 2).reshape(batch, -1)
        end_top_index = jnp.swapaxes(end_top_index, 1, 2).reshape(batch, -1)
        expected_start = jnp.einsum(
            "BSD,BS->BD", hidden_states.astype(jnp.float32), start_probs, precision=self.precision
        )
        cls_logits = self.answer_class(hidden_states, expected_start, cls_index)
        return SquadOutput(
            start_top_log_probs=start_top_probs,
            start_top_index=start_top_index,
            end_top_log_probs=end_top_probs,
            end_top_index=end_top_index,
            cls_logits=cls_logits,
        )


__all__ = ["PoolerAnswerClass", "PoolerEndLogits", "PoolerStartLogits", "SquadHead"]
