"""The one table between transformers' PyTorch tensor names and our Flax parameter paths.

Each `Rule` pairs a transformers name (with `{layer}` for per-layer tensors) with a Flax path and a `Layout` that
says how the tensor is rearranged. Per-layer tensors are stacked along a leading `layers` axis on the Flax side:
`attentions.{layer}.q_lin.weight` for layers 0..L-1 becomes `attentions.q_lin.kernel[L, embed, heads, head_dim]`.
Import (`from_pretrained`, `xlm-flax convert`) and export (`save_pretrained(format="pytorch")`, `xlm-flax export`)
all read this table; nothing guesses names by probing a model. This module builds the rules; which rules each model
class has is the registry's (`xlm_flax.checkpoints.registry`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from xlm_flax.config import XLMConfig

# Prefix of the encoder's tensors inside every head model, on both sides (`transformer.embeddings.weight`).
ENCODER_PREFIX = "transformer."


# Buffers that transformers (or older versions of it) saved in checkpoints but that are not parameters.
IGNORED_TORCH_SUFFIXES = ("position_ids",)


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one tensor is rearranged between PyTorch and Flax (per layer, before stacking).

    Attributes:
        name: Short description, shown in error messages.
        to_flax: Maps the PyTorch array to the Flax array.
        to_torch: The inverse.
        torch_shape: The PyTorch shape that corresponds to a Flax shape.
    """

    name: str
    to_flax: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]
    torch_shape: Callable[[tuple[int, ...]], tuple[int, ...]]


def _prod(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape)) if shape else 1


COPY = Layout("copy", lambda a: a, lambda a: a, lambda s: s)


# torch.nn.Linear stores weight [out, in]; our kernels are [in, out].
LINEAR = Layout("transpose", lambda a: a.T, lambda a: a.T, lambda s: (s[1], s[0]))


def _heads_out(n_heads: int) -> Layout:
    """q/k/v projections: torch weight [heads*head_dim, embed] <-> kernel [embed, heads, head_dim]."""
    return Layout(
        "transpose, split heads",
        lambda a: a.T.reshape(a.shape[1], n_heads, -1),
        lambda a: a.reshape(a.shape[0], -1).T,
        lambda s: (_prod(s[1:]), s[0]),
    )


def _heads_bias(n_heads: int) -> Layout:
    """q/k/v biases: [heads*head_dim] <-> [heads, head_dim]."""
    return Layout(
        "split heads",
        lambda a: a.reshape(n_heads, -1),
        lambda a: a.reshape(-1),
        lambda s: (_prod(s),),
    )


def _heads_in(n_heads: int) -> Layout:
    """Output projection: torch weight [embed, heads*head_dim] <-> kernel [heads, head_dim, embed]."""
    return Layout(
        "transpose, split heads",
        lambda a: a.T.reshape(n_heads, -1, a.shape[0]),
        lambda a: a.reshape(-1, a.shape[-1]).T,
        lambda s: (s[-1], _prod(s[:-1])),
    )


@dataclasses.dataclass(frozen=True)
class Rule:
    """One row of the table.

    Attributes:
        torch_name: transformers' name, with `{layer}` for per-layer tensors.
        flax_path: Our parameter path, dot-separated.
        layout: How the tensor is rearranged.
        n_layers: For per-layer tensors, how many are stacked; 0 otherwise.
    """

    torch_name: str
    flax_path: str
    layout: Layout
    n_layers: int = 0

    def per_layer(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one layer of a Flax tensor of this rule: without its leading `layers` axis when stacked.

        Args:
            shape: The Flax tensor's shape.
        """
        return tuple(shape[1:]) if self.n_layers else tuple(shape)

    def torch_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of each transformers tensor of this rule, from the Flax tensor's (stacked) shape.

        Args:
            shape: The Flax tensor's shape.
        """
        return tuple(self.layout.torch_shape(self.per_layer(shape)))

    @property
    def torch_names(self) -> list[str]:
        """Every transformers name this rule reads or writes, in layer order."""
        if not self.n_layers:
            return [self.torch_name]
        return [self.torch_name.format(layer=i) for i in range(self.n_layers)]


def encoder_rules(config: XLMConfig, torch_prefix: str = "", flax_prefix: str = "") -> list[Rule]:
    """The rules of `XLMModel`'s tensors.

    Args:
        config: Decides which optional tensors exist (language embeddings) and the head count.
        torch_prefix: Prefix of the transformers names (`"transformer."` inside head models).
        flax_prefix: Prefix of the Flax paths (`"transformer."` inside our head models).
    """
    n, heads = config.n_layers, config.n_heads
    t, f = torch_prefix, flax_prefix
    rules = [
        Rule(f"{t}position_embeddings.weight", f"{f}position_embeddings.embedding", COPY),
        Rule(f"{t}embeddings.weight", f"{f}embeddings.embedding", COPY),
        Rule(f"{t}layer_norm_emb.weight", f"{f}layer_norm_emb.scale", COPY),
        Rule(f"{t}layer_norm_emb.bias", f"{f}layer_norm_emb.bias", COPY),
    ]
    if config.has_lang_embeddings:
        rules.append(Rule(f"{t}lang_embeddings.weight", f"{f}lang_embeddings.embedding", COPY))
    for proj in ("q_lin", "k_lin", "v_lin"):
        rules.append(
            Rule(f"{t}attentions.{{layer}}.{proj}.weight", f"{f}attentions.{proj}.kernel", _heads_out(heads), n)
        )
        rules.append(Rule(f"{t}attentions.{{layer}}.{proj}.bias", f"{f}attentions.{proj}.bias", _heads_bias(heads), n))
    rules += [
        Rule(f"{t}attentions.{{layer}}.out_lin.weight", f"{f}attentions.out_lin.kernel", _heads_in(heads), n),
        Rule(f"{t}attentions.{{layer}}.out_lin.bias", f"{f}attentions.out_lin.bias", COPY, n),
    ]
    for norm in ("layer_norm1", "layer_norm2"):
        rules.append(Rule(f"{t}{norm}.{{layer}}.weight", f"{f}{norm}.scale", COPY, n))
        rules.append(Rule(f"{t}{norm}.{{layer}}.bias", f"{f}{norm}.bias", COPY, n))
    for lin in ("lin1", "lin2"):
        rules.append(Rule(f"{t}ffns.{{layer}}.{lin}.weight", f"{f}ffns.{lin}.kernel", LINEAR, n))
        rules.append(Rule(f"{t}ffns.{{layer}}.{lin}.bias", f"{f}ffns.{lin}.bias", COPY, n))
    return rules


def lm_head_rules(config: XLMConfig) -> list[Rule]:
    """The rules of `XLMWithLMHeadModel`'s own tensors (the encoder's come from `encoder_rules`).

    Args:
        config: The model's config.
    """
    rules = [Rule("pred_layer.proj.bias", "pred_layer.proj.bias", COPY)]
    if not config.tie_word_embeddings:
        rules.append(Rule("pred_layer.proj.weight", "pred_layer.proj.kernel", LINEAR))
    return rules


def lm_head_tied_names(config: XLMConfig) -> set[str]:
    """`XLMWithLMHeadModel`'s transformers names that duplicate another tensor (the prediction matrix tied to the word
    embeddings): accepted on import, not written on export.

    Args:
        config: The model's config.
    """
    return {"pred_layer.proj.weight"} if config.tie_word_embeddings else set()


def _linear(torch_prefix: str, flax_prefix: str | None = None, *, bias: bool = True) -> list[Rule]:
    """A `torch.nn.Linear` (`weight [out, in]`, `bias`) <-> our `Dense` (`kernel [in, out]`, `bias`)."""
    f = torch_prefix if flax_prefix is None else flax_prefix
    rules = [Rule(f"{torch_prefix}.weight", f"{f}.kernel", LINEAR)]
    if bias:
        rules.append(Rule(f"{torch_prefix}.bias", f"{f}.bias", COPY))
    return rules


def sequence_summary_rules(config: XLMConfig) -> list[Rule]:
    """`XLMForSequenceClassification`: the summary projection, when `summary_use_proj`.

    Args:
        config: The model's config.
    """
    return _linear("sequence_summary.summary") if config.summary_use_proj else []


def token_classification_rules(config: XLMConfig) -> list[Rule]:
    """`XLMForTokenClassification`: `classifier`.

    Args:
        config: The model's config.
    """
    del config
    return _linear("classifier")


def question_answering_simple_rules(config: XLMConfig) -> list[Rule]:
    """`XLMForQuestionAnsweringSimple`: `qa_outputs`.

    Args:
        config: The model's config.
    """
    del config
    return _linear("qa_outputs")


def question_answering_rules(config: XLMConfig) -> list[Rule]:
    """`XLMForQuestionAnswering`: the SQuAD head's start, end (with its `LayerNorm`) and answer-class layers.

    Args:
        config: The model's config.
    """
    del config
    return [
        *_linear("qa_outputs.start_logits.dense"),
        *_linear("qa_outputs.end_logits.dense_0"),
        Rule("qa_outputs.end_logits.LayerNorm.weight", "qa_outputs.end_logits.LayerNorm.scale", COPY),
        Rule("qa_outputs.end_logits.LayerNorm.bias", "qa_outputs.end_logits.LayerNorm.bias", COPY),
        *_linear("qa_outputs.end_logits.dense_1"),
        *_linear("qa_outputs.answer_class.dense_0"),
        *_linear("qa_outputs.answer_class.dense_1", bias=False),
    ]


def multiple_choice_rules(config: XLMConfig) -> list[Rule]:
    """`XLMForMultipleChoice`: the summary projection and `logits_proj`.

    Args:
        config: The model's config.
    """
    return sequence_summary_rules(config) + _linear("logits_proj")


def is_ignored_torch_name(name: str) -> bool:
    """Whether a transformers checkpoint entry is a non-parameter buffer that conversion skips.

    Args:
        name: A transformers state-dict key.
    """
    return name.rsplit(".", 1)[-1] in IGNORED_TORCH_SUFFIXES


__all__ = [
    "COPY",
    "ENCODER_PREFIX",
    "IGNORED_TORCH_SUFFIXES",
    "LINEAR",
    "Layout",
    "Rule",
    "encoder_rules",
    "is_ignored_torch_name",
    "lm_head_rules",
    "lm_head_tied_names",
    "multiple_choice_rules",
    "question_answering_rules",
    "question_answering_simple_rules",
    "sequence_summary_rules",
    "token_classification_rules",
]
