"""Task heads on the XLM encoder: sequence and token classification, question answering, multiple choice.

Each head mirrors its transformers class (`XLMForSequenceClassification`, `XLMForTokenClassification`,
`XLMForQuestionAnsweringSimple`, `XLMForQuestionAnswering`, `XLMForMultipleChoice`): the same module names (so that
`xlm_flax.weights` converts them with a readable table), the same outputs and the same losses, including the
reference's odd corners:

* the sequence summary's `"last"` takes the last position even when it is padding (whose hidden state is zero);
* `XLMForQuestionAnsweringSimple` clamps positions to `[0, length]` and ignores exactly `length`, so a -100 label
  becomes position 0 and counts;
* the SQuAD head fills `p_mask`ed logits with `-1e30` (`-65500` when `p_mask` is float16) by
  `x * (1 - p_mask) - fill * p_mask`, its "log probs" are softmax probabilities, and the end beam is flattened
  end-major (`[batch, end_n_top * start_n_top]`, index `e * start_n_top + s`);
* multiple choice flattens `[batch, choices, length]` inputs to `[batch * choices, length]` and ignores `lengths`.

Every head is built like `XLMWithLMHeadModel` (`config, *, rngs, dtype, param_dtype, scan_layers, remat`), registers
itself in `xlm_flax.modeling.MODEL_CLASSES` (used by conversion and export) and takes `deterministic=True` by default;
dropout draws from `rngs.dropout`. Logits and losses are float32 whatever the compute dtype.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from xlm_flax.config import XLMConfig
from xlm_flax.errors import ConfigError, InputError
from xlm_flax.layers import Dense, LayerNorm, dropout, param
from xlm_flax.modeling import MODEL_CLASSES, DTypeLike, PretrainedMixin, XLMModel, _normal

logger = logging.getLogger("xlm_flax")

# transformers' ACT2FN names that a summary may use; anything else is refused rather than silently replaced.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": partial(jax.nn.gelu, approximate=False),
    "gelu_new": partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": partial(jax.nn.gelu, approximate=True),
    "sigmoid": jax.nn.sigmoid,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "linear": lambda x: x,
}


# --------------------------------------------------------------------------------------------------------- outputs


@flax.struct.dataclass
class ClassifierOutput:
    """Output of the sequence, token and multiple-choice heads (transformers' `SequenceClassifierOutput`,
    `TokenClassifierOutput`, `MultipleChoiceModelOutput`).

    Attributes:
        logits: float32; `[batch, num_labels]` (sequence), `[batch, length, num_labels]` (token) or
            `[batch, num_choices]` (multiple choice).
        loss: Scalar, when labels were given.
        hidden_states: The encoder's, when asked for (multiple choice: over `batch * num_choices` rows).
        attentions: The encoder's, when asked for.
    """

    logits: jax.Array
    loss: jax.Array | None = None
    hidden_states: tuple[jax.Array, ...] | None = None
    attentions: tuple[jax.Array, ...] | None = None


@flax.struct.dataclass
class QuestionAnsweringOutput:
    """Output of `XLMForQuestionAnsweringSimple` (transformers' `QuestionAnsweringModelOutput`).

    Attributes:
        start_logits: `[batch, length]` float32.
        end_logits: `[batch, length]` float32.
        loss: Mean of the start and end cross-entropies, when both positions were given.
        hidden_states: The encoder's, when asked for.
        attentions: The encoder's, when asked for.
    """

    start_logits: jax.Array
    end_logits: jax.Array
    loss: jax.Array | None = None
    hidden_states: tuple[jax.Array, ...] | None = None
    attentions: tuple[jax.Array, ...] | None = None


@flax.struct.dataclass
class SquadOutput:
    """Output of `XLMForQuestionAnswering` (transformers' `XLMForQuestionAnsweringOutput`).

    With start and end positions (training) only `loss` is set; without them (inference) the beam outputs are.

    Attributes:
        loss: `(start_loss + end_loss) / 2`, plus `0.5 * answerability loss` when `cls_index` and `is_impossible`
            are given.
        start_top_log_probs: `[batch, start_n_top]` softmax probabilities of the best starts (named as in the
            reference, which returns probabilities, not logarithms).
        start_top_index: `[batch, start_n_top]` their positions.
        end_top_log_probs: `[batch, end_n_top * start_n_top]` probabilities of the best ends for each start,
            end-major.
        end_top_index: `[batch, end_n_top * start_n_top]` their positions.
        cls_logits: `[batch]` answerability logits.
        hidden_states: The encoder's, when asked for.
        attentions: The encoder's, when asked for.
    """

    loss: jax.Array | None = None
    start_top_log_probs: jax.Array | None = None
    start_top_index: jax.Array | None = None
    end_top_log_probs: jax.Array | None = None
    end_top_index: jax.Array | None = None
    cls_logits: jax.Array | None = None
    hidden_states: tuple[jax.Array, ...] | None = None
    attentions: tuple[jax.Array, ...] | None = None


# ---------------------------------------------------------------------------------------------------------- losses


def cross_entropy(logits: jax.Array, labels: jax.Array, ignore_index: int | jax.Array = -100) -> jax.Array:
    """Mean cross-entropy of `logits [n, classes]` against integer `labels [n]`, skipping `ignore_index`
    (PyTorch's `CrossEntropyLoss`; NaN when every label is ignored, as there).

    Args:
        logits: `[n, classes]`.
        labels: `[n]` class ids.
        ignore_index: Label value to skip.
    """
    valid = labels != ignore_index
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(log_probs, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    return -jnp.sum(jnp.where(valid, picked, 0.0)) / jnp.sum(valid)


def binary_cross_entropy_with_logits(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean binary cross-entropy on logits, in the overflow-free form PyTorch's `BCEWithLogitsLoss` uses.

    Args:
        logits: Logits of any shape.
        targets: Targets in [0, 1], same shape.
    """
    x, y = logits.astype(jnp.float32), targets.astype(jnp.float32)
    return jnp.mean(jnp.maximum(x, 0.0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x))))


def _mean_squared_error(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(predictions.astype(jnp.float32) - targets.astype(jnp.float32)))


# ---------------------------------------------------------------------------------------------------------- pieces


def _dense(config: XLMConfig, in_features: int, out_features: int, axes: tuple, *, dtype, param_dtype, rngs) -> Dense:
    return Dense(
        (in_features,),
        (out_features,),
        kernel_axes=axes,
        bias_axes=axes[1:],
        init=_normal(config.init_std),
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


class _KernelOnly(nnx.Module):
    """A bias-free linear map (transformers' `nn.Linear(..., bias=False)`)."""

    def __init__(self, in_features: int, out_features: int, axes: tuple, *, init, dtype, param_dtype, rngs):
        self.dtype = dtype
        self.kernel = param(init(rngs.params(), (in_features, out_features), param_dtype), axes)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.einsum("...D,DO->...O", x.astype(self.dtype), self.kernel[...].astype(self.dtype))


def _dropout_key(rate: float, deterministic: bool, rngs: nnx.Rngs | None) -> jax.Array | None:
    """A key for one head dropout, or None when it is off."""
    if deterministic or rate == 0.0:
        return None
    if rngs is None:
        raise ValueError("deterministic=False needs rngs with a 'dropout' stream, e.g. rngs=nnx.Rngs(dropout=0)")
    return rngs.dropout()


def _check_positions(name: str, value: jax.Array | None, batch: int) -> jax.Array | None:
    """Accepts `[batch]` or `[batch, 1]` position-like labels (the reference squeezes the latter)."""
    if value is None:
        return None
    value = jnp.asarray(value)
    if value.ndim == 2 and value.shape[1] == 1:
        value = value[:, 0]
    if value.shape != (batch,):
        raise InputError(f"{name} has shape {value.shape}; expected (batch,) = ({batch},)")
    return value


class SequenceSummary(nnx.Module):
    """One vector per sequence from the final hidden states (transformers' `XLMSequenceSummary`).

    `summary_type` picks the position (`first`, `last`, `mean` over every position, padding included, or
    `cls_index`); then first dropout, optional projection (to `num_labels` with `summary_proj_to_labels`, else to
    `emb_dim`), optional activation, last dropout.

    Args:
        config: The model's hyper-parameters.
        dtype: Compute dtype.
        param_dtype: Storage dtype of the parameters.
        rngs: Random streams for parameter initialisation.

    Raises:
        ConfigError: for `summary_type="attn"` (not implemented in the reference either) or an unknown activation.
    """

    def __init__(self, config: XLMConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
        self.check_config(config)
        self.summary_type = config.summary_type
        self.activation = config.summary_activation or None
        self.first_rate = float(config.summary_first_dropout or 0.0)
        self.last_rate = float(config.summary_last_dropout or 0.0)
        self.dtype = dtype
        if config.summary_use_proj:
            to_labels = self.features(config) == config.num_labels and config.summary_proj_to_labels
            axes = ("embed", "classes") if to_labels else ("embed", "embed")
            self.summary = _dense(
                config, config.emb_dim, self.features(config), axes, dtype=dtype, param_dtype=param_dtype, rngs=rngs
            )
        else:
            self.summary = None

    @staticmethod
    def check_config(config: XLMConfig) -> None:
        """Refuses (ConfigError) a summary the reference cannot build either; called before anything is built.

        Args:
            config: The config to check.
        """
        if config.summary_type not in ("first", "last", "mean", "cls_index"):
            raise ConfigError(
                f"config field summary_type={config.summary_type!r}: use 'first', 'last', 'mean' or 'cls_index' "
                "('attn' is not implemented, in transformers either)"
            )
        activation = config.summary_activation
        if activation and activation not in ACTIVATIONS:
            raise ConfigError(
                f"config field summary_activation={activation!r}: use one of {', '.join(sorted(ACTIVATIONS))} or null"
            )

    @staticmethod
    def features(config: XLMConfig) -> int:
        """Size of the summary vector: `num_labels` when projecting to labels, else `emb_dim`.

        Args:
            config: The model's config.
        """
        if config.summary_use_proj and config.summary_proj_to_labels and config.num_labels > 0:
            return config.num_labels
        return config.emb_dim

    def __call__(
        self,
        hidden_states: jax.Array,  # [batch, length, emb_dim]
        cls_index: jax.Array | None = None,  # [batch]
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """Returns the summary `[batch, features]` in the compute dtype.

        Args:
            hidden_states: Final hidden states.
            cls_index: Position to take per row for `summary_type="cls_index"`; None takes the last position.
            deterministic: Disable dropout.
            rngs: Random streams with `dropout`, when not deterministic.
        """
        if self.summary_type == "first":
            x = hidden_states[:, 0]
        elif self.summary_type == "last":
            x = hidden_states[:, -1]
        elif self.summary_type == "mean":
            x = jnp.mean(hidden_states.astype(jnp.float32), axis=1).astype(hidden_states.dtype)
        else:
            if cls_index is None:
                x = hidden_states[:, -1]
            else:
                index = _check_positions("cls_index", cls_index, hidden_states.shape[0])
                x = jnp.take_along_axis(hidden_states, index[:, None, None], axis=1)[:, 0]
        x = dropout(x, self.first_rate, _dropout_key(self.first_rate, deterministic, rngs))
        if self.summary is not None:
            x = self.summary(x)
        if self.activation is not None:
            x = ACTIVATIONS[self.activation](x)
        return dropout(x, self.last_rate, _dropout_key(self.last_rate, deterministic, rngs))


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

    Args:
        config: The model's hyper-parameters.
        dtype: Compute dtype.
        param_dtype: Storage dtype of the parameters.
        rngs: Random streams for parameter initialisation.
    """

    def __init__(self, config: XLMConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
        self.dense = _dense(config, config.emb_dim, 1, ("embed", None), dtype=dtype, param_dtype=param_dtype, rngs=rngs)

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

    Args:
        config: The model's hyper-parameters.
        dtype: Compute dtype.
        param_dtype: Storage dtype of the parameters.
        rngs: Random streams for parameter initialisation.
    """

    def __init__(self, config: XLMConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
        d = config.emb_dim
        dense = partial(_dense, config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dense_0 = dense(2 * d, d, ("embed", "embed"))
        self.LayerNorm = LayerNorm(d, eps=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype)
        self.dense_1 = dense(d, 1, ("embed", None))
        self.dtype = dtype

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
        from_hidden = jnp.einsum("BSD,DO->BSO", hidden_states.astype(self.dtype), kernel[:d])
        from_start = jnp.einsum("B...D,DO->B...O", start_states.astype(self.dtype), kernel[d:])
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

    Args:
        config: The model's hyper-parameters.
        dtype: Compute dtype.
        param_dtype: Storage dtype of the parameters.
        rngs: Random streams for parameter initialisation.
    """

    def __init__(self, config: XLMConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
        d = config.emb_dim
        self.dense_0 = _dense(config, 2 * d, d, ("embed", "embed"), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dense_1 = _KernelOnly(
            d, 1, ("embed", None), init=_normal(config.init_std), dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

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

    Args:
        config: The model's hyper-parameters.
        dtype: Compute dtype.
        param_dtype: Storage dtype of the parameters.
        rngs: Random streams for parameter initialisation.
    """

    def __init__(self, config: XLMConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
        for field in ("start_n_top", "end_n_top"):
            if getattr(config, field) < 1:
                raise ConfigError(f"config field {field}={getattr(config, field)}: the beam size must be at least 1")
        kwargs = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
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
        expected_start = jnp.einsum("BSD,BS->BD", hidden_states.astype(jnp.float32), start_probs)
        cls_logits = self.answer_class(hidden_states, expected_start, cls_index)
        return SquadOutput(
            start_top_log_probs=start_top_probs,
            start_top_index=start_top_index,
            end_top_log_probs=end_top_probs,
            end_top_index=end_top_index,
            cls_logits=cls_logits,
        )


# ------------------------------------------------------------------------------------------------------ head models


class _HeadModel(PretrainedMixin, nnx.Module):
    """Shared constructor part: the encoder under `transformer`, as in every transformers head model."""

    def _build_encoder(self, config, rngs, dtype, param_dtype, scan_layers, remat) -> None:
        self.config = config
        self.transformer = XLMModel(
            config, rngs=rngs, dtype=dtype, param_dtype=param_dtype, scan_layers=scan_layers, remat=remat
        )

    def _encode(self, inputs: dict, output_hidden_states, output_attentions, deterministic, rngs):
        # `inputs` is the caller's `locals()`: its encoder arguments under their own names.
        return self.transformer(
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs["langs"],
            inputs["token_type_ids"],
            inputs["position_ids"],
            inputs["lengths"],
            inputs_embeds=inputs["inputs_embeds"],
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            deterministic=deterministic,
            rngs=rngs,
        )


class XLMForSequenceClassification(_HeadModel):
    """XLM with a sequence-summary classifier (transformers' `XLMForSequenceClassification`).

    Args:
        config: Hyper-parameters; `num_labels` and the `summary_*` fields shape the head.
        rngs: Random streams for parameter initialisation.
        dtype: Compute dtype; logits and losses are float32.
        param_dtype: Storage dtype of the parameters.
        scan_layers: See `XLMModel`.
        remat: See `XLMModel`.

    Raises:
        ConfigError: for a summary the reference cannot build either (`summary_type="attn"`, unknown activation).
    """

    architecture = "XLMForSequenceClassification"

    def __init__(
        self,
        config: XLMConfig,
        *,
        rngs: nnx.Rngs,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        scan_layers: bool = True,
        remat: bool = False,
    ):
        SequenceSummary.check_config(config)
        self._build_encoder(config, rngs, dtype, param_dtype, scan_layers, remat)
        self.sequence_summary = SequenceSummary(
            config, dtype=self.transformer.dtype, param_dtype=self.transformer.param_dtype, rngs=rngs
        )

    def problem_type(self, labels: jax.Array) -> str:
        """`config.json`'s `problem_type`, else what transformers infers: `regression` for one label,
        `single_label_classification` for integer labels, `multi_label_classification` otherwise.

        Args:
            labels: The labels passed to `__call__`.
        """
        declared = self.config.extra.get("problem_type")
        if declared:
            return declared
        if self.config.num_labels == 1:
            return "regression"
        if jnp.issubdtype(labels.dtype, jnp.integer):
            return "single_label_classification"
        return "multi_label_classification"

    def __call__(
        self,
        input_ids: jax.Array | None = None,  # [batch, length]
        attention_mask: jax.Array | None = None,  # [batch, length]
        langs: jax.Array | None = None,  # [batch, length]
        token_type_ids: jax.Array | None = None,  # [batch, length]
        position_ids: jax.Array | None = None,  # [batch, length]
        lengths: jax.Array | None = None,  # [batch]
        *,
        labels: jax.Array | None = None,  # [batch] int, [batch] float (regression) or [batch, num_labels] float
        cls_index: jax.Array | None = None,  # [batch]
        inputs_embeds: jax.Array | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> ClassifierOutput:
        """Classifies each sequence: float32 `logits [batch, num_labels]`.

        The encoder arguments are those of `XLMModel.__call__`. With `labels`, `loss` is the MSE (regression),
        cross-entropy (single label) or binary cross-entropy (multi-label), chosen as in `problem_type`.
        `cls_index` is the position summarised per row when `summary_type="cls_index"`; transformers' forward has
        no such argument and always takes the last position, which is what None does.

        Args:
            input_ids: Token ids `[batch, length]`.
            attention_mask: `[batch, length]`, nonzero on tokens.
            langs: Language id of every token `[batch, length]` (models with language embeddings).
            token_type_ids: `[batch, length]` ids added through the word-embedding table.
            position_ids: `[batch, length]`; defaults to `0..length-1`.
            lengths: `[batch]` tokens to attend to, when no `attention_mask` is given.
            labels: `[batch]` class ids, `[batch]` floats (regression) or `[batch, num_labels]` floats (multi-
                label).
            cls_index: `[batch]` position to summarise per row for `summary_type="cls_index"`.
            inputs_embeds: Word embeddings `[batch, length, emb_dim]` instead of `input_ids`.
            output_hidden_states: Also return the embeddings output and every layer's output.
            output_attentions: Also return every layer's attention weights.
            deterministic: Disable dropout; when false, `rngs` must have a `dropout` stream.
            rngs: Random streams for dropout.
        """
        inputs = dict(locals())
        out = self._encode(inputs, output_hidden_states, output_attentions, deterministic, rngs)
        logits = self.sequence_summary(out.last_hidden_state, cls_index, deterministic=deterministic, rngs=rngs).astype(
            jnp.float32
        )
        loss = None
        if labels is not None:
            labels = jnp.asarray(labels)
            problem = self.problem_type(labels)
            if problem == "regression":
                if self.config.num_labels == 1:
                    loss = _mean_squared_error(logits.reshape(-1), labels.reshape(-1))
                else:
                    loss = _mean_squared_error(logits, labels)
            elif problem == "single_label_classification":
                # As the reference: a summary without projection to num_labels cannot take this loss.
                loss = cross_entropy(logits.reshape(-1, self.config.num_labels), labels.reshape(-1))
            elif problem == "multi_label_classification":
                loss = binary_cross_entropy_with_logits(logits, labels)
            else:
                raise ConfigError(
                    f"config field problem_type={problem!r}: use regression, single_label_classification or "
                    "multi_label_classification"
                )
        return ClassifierOutput(logits=logits, loss=loss, hidden_states=out.hidden_states, attentions=out.attentions)


class XLMForTokenClassification(_HeadModel):
    """XLM with a per-token classifier (transformers' `XLMForTokenClassification`): dropout (`config.dropout`)
    then `classifier`, a linear map to `num_labels`.

    Args:
        config: The model's hyper-parameters.
        rngs: Random streams for parameter initialisation (`params`).
        dtype: Compute dtype; logits and losses are float32.
        param_dtype: Storage dtype of the parameters.
        scan_layers: See `XLMModel`.
        remat: See `XLMModel`.
    """

    architecture = "XLMForTokenClassification"

    def __init__(
        self,
        config: XLMConfig,
        *,
        rngs: nnx.Rngs,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        scan_layers: bool = True,
        remat: bool = False,
    ):
        self._build_encoder(config, rngs, dtype, param_dtype, scan_layers, remat)
        self.classifier = _dense(
            config,
            config.emb_dim,
            config.num_labels,
            ("embed", "classes"),
            dtype=self.transformer.dtype,
            param_dtype=self.transformer.param_dtype,
            rngs=rngs,
        )

    def __call__(
        self,
        input_ids: jax.Array | None = None,  # [batch, length]
        attention_mask: jax.Array | None = None,  # [batch, length]
        langs: jax.Array | None = None,  # [batch, length]
        token_type_ids: jax.Array | None = None,  # [batch, length]
        position_ids: jax.Array | None = None,  # [batch, length]
        lengths: jax.Array | None = None,  # [batch]
        *,
        labels: jax.Array | None = None,  # [batch, length] int, -100 where no loss is wanted
        inputs_embeds: jax.Array | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> ClassifierOutput:
        """Classifies every token: float32 `logits [batch, length, num_labels]`; with `labels`, the mean
        cross-entropy over labels that are not -100. Encoder arguments as in `XLMModel.__call__`.

        Args:
            input_ids: Token ids `[batch, length]`.
            attention_mask: `[batch, length]`, nonzero on tokens.
            langs: Language id of every token `[batch, length]` (models with language embeddings).
            token_type_ids: `[batch, length]` ids added through the word-embedding table.
            position_ids: `[batch, length]`; defaults to `0..length-1`.
            lengths: `[batch]` tokens to attend to, when no `attention_mask` is given.
            labels: `[batch, length]` class ids; -100 is ignored.
            inputs_embeds: Word embeddings `[batch, length, emb_dim]` instead of `input_ids`.
            output_hidden_states: Also return the embeddings output and every layer's output.
            output_attentions: Also return every layer's attention weights.
            deterministic: Disable dropout; when false, `rngs` must have a `dropout` stream.
            rngs: Random streams for dropout.
        """
        inputs = dict(locals())
        out = self._encode(inputs, output_hidden_states, output_attentions, deterministic, rngs)
        x = dropout(out.last_hidden_state, self.config.dropout, _dropout_key(self.config.dropout, deterministic, rngs))
        logits = self.classifier(x).astype(jnp.float32)
        loss = None
        if labels is not None:
            loss = cross_entropy(logits.reshape(-1, logits.shape[-1]), jnp.asarray(labels).reshape(-1))
        return ClassifierOutput(logits=logits, loss=loss, hidden_states=out.hidden_states, attentions=out.attentions)


class XLMForQuestionAnsweringSimple(_HeadModel):
    """XLM with a linear span head (transformers' `XLMForQuestionAnsweringSimple`): `qa_outputs` maps each hidden
    state to a start and an end logit.

    Args:
        config: The model's hyper-parameters.
        rngs: Random streams for parameter initialisation (`params`).
        dtype: Compute dtype; logits and losses are float32.
        param_dtype: Storage dtype of the parameters.
        scan_layers: See `XLMModel`.
        remat: See `XLMModel`.

    Raises:
        ConfigError: unless `num_labels == 2` (the reference splits the output into exactly start and end).
    """

    architecture = "XLMForQuestionAnsweringSimple"

    def __init__(
        self,
        config: XLMConfig,
        *,
        rngs: nnx.Rngs,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        scan_layers: bool = True,
        remat: bool = False,
    ):
        if config.num_labels != 2:
            raise ConfigError(
                f"config field num_labels={config.num_labels}: XLMForQuestionAnsweringSimple needs 2 (start, end)"
            )
        self._build_encoder(config, rngs, dtype, param_dtype, scan_layers, remat)
        self.qa_outputs = _dense(
            config,
            config.emb_dim,
            2,
            ("embed", "classes"),
            dtype=self.transformer.dtype,
            param_dtype=self.transformer.param_dtype,
            rngs=rngs,
        )

    def __call__(
        self,
        input_ids: jax.Array | None = None,  # [batch, length]
        attention_mask: jax.Array | None = None,  # [batch, length]
        langs: jax.Array | None = None,  # [batch, length]
        token_type_ids: jax.Array | None = None,  # [batch, length]
        position_ids: jax.Array | None = None,  # [batch, length]
        lengths: jax.Array | None = None,  # [batch]
        *,
        start_positions: jax.Array | None = None,  # [batch]
        end_positions: jax.Array | None = None,  # [batch]
        inputs_embeds: jax.Array | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> QuestionAnsweringOutput:
        """Scores every position as answer start and end (encoder arguments as in `XLMModel.__call__`).

        With both `start_positions` and `end_positions`, `loss` is the mean of the two cross-entropies; positions
        are clamped to `[0, length]` and `length` itself is ignored, as in the reference.

        Args:
            input_ids: Token ids `[batch, length]`.
            attention_mask: `[batch, length]`, nonzero on tokens.
            langs: Language id of every token `[batch, length]` (models with language embeddings).
            token_type_ids: `[batch, length]` ids added through the word-embedding table.
            position_ids: `[batch, length]`; defaults to `0..length-1`.
            lengths: `[batch]` tokens to attend to, when no `attention_mask` is given.
            start_positions: `[batch]` answer start (with `end_positions`: the loss).
            end_positions: `[batch]` answer end.
            inputs_embeds: Word embeddings `[batch, length, emb_dim]` instead of `input_ids`.
            output_hidden_states: Also return the embeddings output and every layer's output.
            output_attentions: Also return every layer's attention weights.
            deterministic: Disable dropout; when false, `rngs` must have a `dropout` stream.
            rngs: Random streams for dropout.
        """
        inputs = dict(locals())
        out = self._encode(inputs, output_hidden_states, output_attentions, deterministic, rngs)
        logits = self.qa_outputs(out.last_hidden_state).astype(jnp.float32)  # [B, S, 2]
        start_logits, end_logits = logits[..., 0], logits[..., 1]
        loss = None
        if start_positions is not None and end_positions is not None:
            batch, length = start_logits.shape
            start = jnp.clip(_check_positions("start_positions", start_positions, batch), 0, length)
            end = jnp.clip(_check_positions("end_positions", end_positions, batch), 0, length)
            loss = (cross_entropy(start_logits, start, length) + cross_entropy(end_logits, end, length)) / 2
        return QuestionAnsweringOutput(
            start_logits=start_logits,
            end_logits=end_logits,
            loss=loss,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )


class XLMForQuestionAnswering(_HeadModel):
    """XLM with the SQuAD beam-search head (transformers' `XLMForQuestionAnswering`); see `SquadHead` and
    `SquadOutput`. The beam sizes are `config.start_n_top` and `config.end_n_top`.

    Args:
        config: The model's hyper-parameters.
        rngs: Random streams for parameter initialisation (`params`).
        dtype: Compute dtype; logits and losses are float32.
        param_dtype: Storage dtype of the parameters.
        scan_layers: See `XLMModel`.
        remat: See `XLMModel`.
    """

    architecture = "XLMForQuestionAnswering"

    def __init__(
        self,
        config: XLMConfig,
        *,
        rngs: nnx.Rngs,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        scan_layers: bool = True,
        remat: bool = False,
    ):
        self._build_encoder(config, rngs, dtype, param_dtype, scan_layers, remat)
        self.qa_outputs = SquadHead(
            config, dtype=self.transformer.dtype, param_dtype=self.transformer.param_dtype, rngs=rngs
        )

    def __call__(
        self,
        input_ids: jax.Array | None = None,  # [batch, length]
        attention_mask: jax.Array | None = None,  # [batch, length]
        langs: jax.Array | None = None,  # [batch, length]
        token_type_ids: jax.Array | None = None,  # [batch, length]
        position_ids: jax.Array | None = None,  # [batch, length]
        lengths: jax.Array | None = None,  # [batch]
        *,
        start_positions: jax.Array | None = None,  # [batch]
        end_positions: jax.Array | None = None,  # [batch]
        is_impossible: jax.Array | None = None,  # [batch] 0/1
        cls_index: jax.Array | None = None,  # [batch]
        p_mask: jax.Array | None = None,  # [batch, length], 1 where the answer cannot be
        inputs_embeds: jax.Array | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> SquadOutput:
        """Training loss (given both positions) or beam-search outputs (otherwise); see `SquadOutput`.

        The encoder arguments are those of `XLMModel.__call__`. `start_positions`/`end_positions` are the answer
        span, for the loss; `is_impossible` (with `cls_index`) adds the answerability loss; `cls_index` is the
        position of the CLS token per row (None: the last position); `p_mask` marks positions that cannot be part
        of an answer (1.0 = masked).

        Args:
            input_ids: Token ids `[batch, length]`.
            attention_mask: `[batch, length]`, nonzero on tokens.
            langs: Language id of every token `[batch, length]` (models with language embeddings).
            token_type_ids: `[batch, length]` ids added through the word-embedding table.
            position_ids: `[batch, length]`; defaults to `0..length-1`.
            lengths: `[batch]` tokens to attend to, when no `attention_mask` is given.
            start_positions: `[batch]` answer start (with `end_positions`: the training loss).
            end_positions: `[batch]` answer end.
            is_impossible: `[batch]` 1 for unanswerable questions (SQuAD 2.0 loss).
            cls_index: `[batch]` position of the CLS token; None takes the last position.
            p_mask: `[batch, length]`, 1 where the answer cannot be.
            inputs_embeds: Word embeddings `[batch, length, emb_dim]` instead of `input_ids`.
            output_hidden_states: Also return the embeddings output and every layer's output.
            output_attentions: Also return every layer's attention weights.
            deterministic: Disable dropout; when false, `rngs` must have a `dropout` stream.
            rngs: Random streams for dropout.
        """
        inputs = dict(locals())
        length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if (start_positions is None or end_positions is None) and length < max(
            self.config.start_n_top, self.config.end_n_top
        ):
            self.qa_outputs.check_length(length)  # fail before running the encoder
        out = self._encode(inputs, output_hidden_states, output_attentions, deterministic, rngs)
        head = self.qa_outputs(
            out.last_hidden_state,
            start_positions=start_positions,
            end_positions=end_positions,
            cls_index=cls_index,
            is_impossible=is_impossible,
            p_mask=None if p_mask is None else jnp.asarray(p_mask),
        )
        return head.replace(hidden_states=out.hidden_states, attentions=out.attentions)


class XLMForMultipleChoice(_HeadModel):
    """XLM scoring each of several choices (transformers' `XLMForMultipleChoice`): sequence summary, then
    `logits_proj` from `num_labels` features to one score per choice.

    Args:
        config: The model's hyper-parameters.
        rngs: Random streams for parameter initialisation (`params`).
        dtype: Compute dtype; logits and losses are float32.
        param_dtype: Storage dtype of the parameters.
        scan_layers: See `XLMModel`.
        remat: See `XLMModel`.

    Raises:
        ConfigError: when the summary does not produce `num_labels` features (the reference would fail at its
            first call).
    """

    architecture = "XLMForMultipleChoice"

    def __init__(
        self,
        config: XLMConfig,
        *,
        rngs: nnx.Rngs,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        scan_layers: bool = True,
        remat: bool = False,
    ):
        SequenceSummary.check_config(config)
        features = SequenceSummary.features(config)
        if features != config.num_labels:
            raise ConfigError(
                f"config field num_labels={config.num_labels}: XLMForMultipleChoice projects the {features}-feature "
                "summary with a num_labels-input layer; set summary_use_proj and summary_proj_to_labels to true"
            )
        self._build_encoder(config, rngs, dtype, param_dtype, scan_layers, remat)
        dtype, param_dtype = self.transformer.dtype, self.transformer.param_dtype
        self.sequence_summary = SequenceSummary(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.logits_proj = _dense(
            config, config.num_labels, 1, ("classes", None), dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(
        self,
        input_ids: jax.Array | None = None,  # [batch, choices, length]
        attention_mask: jax.Array | None = None,  # [batch, choices, length]
        langs: jax.Array | None = None,  # [batch, choices, length]
        token_type_ids: jax.Array | None = None,  # [batch, choices, length]
        position_ids: jax.Array | None = None,  # [batch, choices, length]
        lengths: jax.Array | None = None,  # ignored, as in the reference
        *,
        labels: jax.Array | None = None,  # [batch] index of the right choice
        inputs_embeds: jax.Array | None = None,  # [batch, choices, length, emb_dim]
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> ClassifierOutput:
        """Scores every choice: float32 `logits [batch, choices]`; with `labels`, the mean cross-entropy.

        Inputs have a choices axis and are flattened to `[batch * choices, length]` for the encoder. `lengths` is
        ignored with a warning (the reference does the same; use `attention_mask`).

        Args:
            input_ids: Token ids `[batch, choices, length]`.
            attention_mask: `[batch, choices, length]`, nonzero on tokens.
            langs: Language id of every token `[batch, choices, length]` (models with language embeddings).
            token_type_ids: `[batch, choices, length]` ids added through the word-embedding table.
            position_ids: `[batch, choices, length]`; defaults to `0..length-1`.
            lengths: `[batch, choices]` tokens to attend to, when no `attention_mask` is given.
            labels: `[batch]` index of the right choice.
            inputs_embeds: Word embeddings `[batch, choices, length, emb_dim]` instead of `input_ids`.
            output_hidden_states: Also return the embeddings output and every layer's output.
            output_attentions: Also return every layer's attention weights.
            deterministic: Disable dropout; when false, `rngs` must have a `dropout` stream.
            rngs: Random streams for dropout.
        """
        if input_ids is None and inputs_embeds is None:
            raise ValueError("give input_ids or inputs_embeds")
        n_choices = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if lengths is not None:
            logger.warning("XLMForMultipleChoice ignores `lengths` (as transformers does); use attention_mask")

        def flat(x, trailing=1):
            return None if x is None else jnp.asarray(x).reshape(-1, *jnp.shape(x)[-trailing:])

        inputs = dict(
            input_ids=flat(input_ids),
            attention_mask=flat(attention_mask),
            langs=flat(langs),
            token_type_ids=flat(token_type_ids),
            position_ids=flat(position_ids),
            lengths=None,
            inputs_embeds=flat(inputs_embeds, 2),
        )
        out = self._encode(inputs, output_hidden_states, output_attentions, deterministic, rngs)
        summary = self.sequence_summary(out.last_hidden_state, deterministic=deterministic, rngs=rngs)
        logits = self.logits_proj(summary).astype(jnp.float32).reshape(-1, n_choices)
        loss = cross_entropy(logits, jnp.asarray(labels)) if labels is not None else None
        return ClassifierOutput(logits=logits, loss=loss, hidden_states=out.hidden_states, attentions=out.attentions)


HEAD_CLASSES: dict[str, type] = {
    cls.architecture: cls
    for cls in (
        XLMForSequenceClassification,
        XLMForTokenClassification,
        XLMForQuestionAnsweringSimple,
        XLMForQuestionAnswering,
        XLMForMultipleChoice,
    )
}
MODEL_CLASSES.update(HEAD_CLASSES)

__all__ = [
    "ACTIVATIONS",
    "HEAD_CLASSES",
    "ClassifierOutput",
    "PoolerAnswerClass",
    "PoolerEndLogits",
    "PoolerStartLogits",
    "QuestionAnsweringOutput",
    "SequenceSummary",
    "SquadHead",
    "SquadOutput",
    "XLMForMultipleChoice",
    "XLMForQuestionAnswering",
    "XLMForQuestionAnsweringSimple",
    "XLMForSequenceClassification",
    "XLMForTokenClassification",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
]
