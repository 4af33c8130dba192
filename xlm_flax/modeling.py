"""The XLM encoder and its language-model head as Flax NNX modules.

Module and parameter names mirror transformers' PyTorch XLM (`embeddings`, `position_embeddings`,
`lang_embeddings`, `layer_norm_emb`, `attentions.q_lin`, `layer_norm1`, `ffns.lin1`, `layer_norm2`,
`pred_layer.proj`), so that `xlm_flax.weights` converts checkpoints with a table one can read. The per-layer modules
are stacked along a leading `layers` axis and run with `nnx.scan`: the compiled program holds one layer body however
deep the model is. transformers' `attentions.3.q_lin.weight` is row 3 of our `attentions.q_lin.kernel`.

The forward pass reproduces the reference exactly, including its odd corners: hidden states are multiplied by the
padding mask after the embeddings and after every layer; masked attention scores are filled with the dtype's
minimum (so a row with nothing to attend to becomes uniform); `token_type_ids` are looked up in the word-embedding
table; with neither `attention_mask` nor `lengths`, the mask is a prefix as long as the count of non-pad tokens; a
causal model's attention mask is triangular and ignores padding.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xlm_flax.config import XLMConfig
from xlm_flax.layers import Dense, Embed, LayerNorm, dropout, param

DTypeLike = Any  # a jnp dtype or its name, e.g. jnp.bfloat16 or "bfloat16"


@flax.struct.dataclass
class BaseModelOutput:
    """Output of `XLMModel`, as transformers' `BaseModelOutput`.

    Attributes:
        last_hidden_state: `[batch, length, emb_dim]` in the compute dtype.
        hidden_states: When asked for, `n_layers + 1` arrays: the embeddings output, then each layer's output.
        attentions: When asked for, `n_layers` attention-weight arrays `[batch, heads, length, length]`.
    """

    last_hidden_state: jax.Array
    hidden_states: tuple[jax.Array, ...] | None = None
    attentions: tuple[jax.Array, ...] | None = None


@flax.struct.dataclass
class MaskedLMOutput:
    """Output of `XLMWithLMHeadModel`, as transformers' `MaskedLMOutput`.

    Attributes:
        logits: `[batch, length, vocab_size]`, always float32.
        loss: Mean cross-entropy over labels that are not -100, when `labels` were given.
        hidden_states: As in `BaseModelOutput`.
        attentions: As in `BaseModelOutput`.
    """

    logits: jax.Array
    loss: jax.Array | None = None
    hidden_states: tuple[jax.Array, ...] | None = None
    attentions: tuple[jax.Array, ...] | None = None


def sinusoidal_table(n_positions: int, dim: int) -> np.ndarray:
    """The fixed position table of `sinusoidal_embeddings=True` models, computed as transformers does (float64 math,
    float32 result): even columns `sin(pos / 10000^(2i/dim))`, odd columns the matching cosine.

    Args:
        n_positions: Number of positions.
        dim: Embedding size.
    """
    pos = np.arange(n_positions, dtype=np.float64)[:, None]
    j = np.arange(dim)
    angles = pos / np.power(10000, 2 * (j // 2) / dim)
    table = np.empty((n_positions, dim), dtype=np.float32)
    table[:, 0::2] = np.sin(angles[:, 0::2])
    table[:, 1::2] = np.cos(angles[:, 1::2])
    return table


def _normal(std: float) -> Callable:
    return jax.nn.initializers.normal(stddev=std)


def _word_embedding_init(std: float, pad_index: int) -> Callable:
    def init(key, shape, dtype):
        table = jax.random.normal(key, shape, dtype) * jnp.asarray(std, dtype)
        return table.at[pad_index].set(0)  # as torch's padding_idx: the pad row starts at zero

    return init


def _sinusoidal_init(key, shape, dtype):
    del key
    return jnp.asarray(sinusoidal_table(*shape), dtype)


class MultiHeadAttention(nnx.Module):
    """Self-attention with separate q/k/v/out projections, heads kept as their own axis.

    Args:
        config: The model's hyper-parameters.
        dtype: Compute dtype.
        param_dtype: Storage dtype of the parameters.
        rngs: Random streams for parameter initialisation.
    """

    def __init__(self, config: XLMConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
        d, n, h = config.emb_dim, config.n_heads, config.head_dim
        dense = partial(Dense, init=_normal(config.init_std), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        qkv_axes = dict(kernel_axes=("embed", "heads", "head_dim"), bias_axes=("heads", "head_dim"))
        self.q_lin = dense((d,), (n, h), **qkv_axes)
        self.k_lin = dense((d,), (n, h), **qkv_axes)
        self.v_lin = dense((d,), (n, h), **qkv_axes)
        self.out_lin = dense((n, h), (d,), kernel_axes=("heads", "head_dim", "embed"), bias_axes=("embed",))
        self.head_dim = h
        self.rate = config.attention_dropout
        self.dtype = dtype

    def __call__(
        self, x: jax.Array, attend: jax.Array, key: jax.Array | None, *, output_weights: bool = True
    ) -> tuple[jax.Array, jax.Array | None]:
        """Attends over `x`.

        Args:
            x: `[batch, length, emb_dim]`.
            attend: Boolean, true where attention is allowed: `[batch, 1, 1, length]` (padding) or
                `[batch, 1, length, length]` (causal).
            key: Dropout key for the attention weights, or None when deterministic.
            output_weights: Return the attention weights. When false and there is no attention dropout, the
                product goes through `jax.nn.dot_product_attention`, which picks the backend's kernel (cuDNN's
                fused attention on GPU where it applies, the same XLA einsums as below elsewhere).

        Returns:
            The output `[batch, length, emb_dim]` and the attention weights `[batch, heads, length, length]` (None
            when `output_weights` is false).
        """
        q = self.q_lin(x) / math.sqrt(self.head_dim)  # [B, T, N, H]; scaled before the product, as the reference
        k = self.k_lin(x)  # [B, S, N, H]
        v = self.v_lin(x)  # [B, S, N, H]
        if not output_weights and (key is None or self.rate == 0.0):
            # Same math as the explicit path: masked scores are replaced by a large negative number (rows with
            # nothing to attend to become uniform, as with the reference's finfo.min) and the softmax is float32.
            # scale=1 because q is already scaled, in the reference's order.
            context = jax.nn.dot_product_attention(q, k, v, mask=attend, scale=1.0)
            return self.out_lin(context), None
        scores = jnp.einsum("BTNH,BSNH->BNTS", q, k, preferred_element_type=jnp.float32)
        scores = jnp.where(attend, scores, jnp.finfo(scores.dtype).min)
        weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)  # softmax always in float32
        dropped = dropout(weights, self.rate, key)
        context = jnp.einsum("BNTS,BSNH->BTNH", dropped, v)
        return self.out_lin(context), weights


class TransformerFFN(nnx.Module):
    """The position-wise feed-forward block: `lin2(act(lin1(x)))` with dropout.

    Args:
        config: The model's hyper-parameters.
        dtype: Compute dtype.
        param_dtype: Storage dtype of the parameters.
        rngs: Random streams for parameter initialisation.
    """

    def __init__(self, config: XLMConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
        d, m = config.emb_dim, config.hidden_dim
        dense = partial(Dense, init=_normal(config.init_std), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.lin1 = dense((d,), (m,), kernel_axes=("embed", "mlp"), bias_axes=("mlp",))
        self.lin2 = dense((m,), (d,), kernel_axes=("mlp", "embed"), bias_axes=("embed",))
        self.gelu = config.gelu_activation
        self.rate = config.dropout

    def __call__(self, x: jax.Array, key: jax.Array | None) -> jax.Array:
        """Maps `[batch, length, emb_dim]` to the same shape.

        Args:
            x: `[batch, length, emb_dim]`.
            key: Dropout key; None disables dropout.
        """
        h = self.lin1(x)
        h = jax.nn.gelu(h, approximate=False) if self.gelu else jax.nn.relu(h)
        return dropout(self.lin2(h), self.rate, key)


def _stacked(n: int, make: Callable[[nnx.Rngs], nnx.Module], rngs: nnx.Rngs) -> nnx.Module:
    """Builds `n` independently initialised copies of a module as one module whose parameters have a leading
    `layers` axis, ready for `nnx.scan`."""

    @nnx.split_rngs(splits=n)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def build(rngs: nnx.Rngs) -> nnx.Module:
        return make(rngs)

    module = build(rngs)
    for _, variable in nnx.iter_graph(module):
        if isinstance(variable, nnx.Param):
            axes = variable.get_metadata()["logical_axes"]
            variable.set_metadata(logical_axes=("layers", *axes))
    return module


def _canonical_dtype(dtype: DTypeLike) -> jnp.dtype:
    return jnp.dtype(dtype)


class PretrainedMixin:
    """`from_pretrained` / `save_pretrained` for every model class of this package.

    Subclasses set `architecture` to the transformers class name they mirror.
    """

    architecture: str = ""

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike | None = None,
        **kwargs: Any,
    ):
        """Loads a model from a native or transformers checkpoint directory, or from a hub id.

        Args:
            path_or_hub_id: A directory written by `save_pretrained` or `xlm-flax convert`, a transformers model
                directory (`model.safetensors`, sharded safetensors or `pytorch_model.bin`), or a hub id such as
                `FacebookAI/xlm-mlm-en-2048` (converted in memory, tensor by tensor).
            dtype: Compute dtype.
            param_dtype: Storage dtype; None keeps the checkpoint's.
            **kwargs: `placer`, `strict`, `seed` (see `xlm_flax.checkpoint.load_pretrained`) and constructor
                arguments such as `scan_layers` and `remat`.
        """
        from xlm_flax.checkpoint import load_pretrained

        return load_pretrained(cls, path_or_hub_id, dtype=dtype, param_dtype=param_dtype, **kwargs)

    def save_pretrained(self, directory: str | os.PathLike, *, format: str = "flax", **kwargs: Any) -> str:
        """Writes the model to `directory`: `format="flax"` (native, no torch needed to read) or `"pytorch"`
        (transformers names). See `xlm_flax.checkpoint.save_pretrained` for the other arguments.

        Args:
            directory: Output directory.
            format: `"flax"` or `"pytorch"`.
            **kwargs: Passed to `xlm_flax.checkpoint.save_pretrained` (e.g. `force`).
        """
        from xlm_flax.checkpoint import save_pretrained

        return save_pretrained(self, directory, format=format, **kwargs)


class XLMModel(PretrainedMixin, nnx.Module):
    """The XLM transformer encoder (transformers' `XLMModel`).

    Args:
        config: The model's hyper-parameters.
        rngs: Random streams for parameter initialisation (`params`).
        dtype: Compute dtype (e.g. `jnp.bfloat16`). Softmax, LayerNorm statistics and logits stay float32.
        param_dtype: Storage dtype of the parameters.
        scan_layers: Run the layers with `nnx.scan` (one compiled body); false unrolls them into straight-line code.
        remat: Recompute each layer's activations in the backward pass instead of storing them (saves memory in
            training).
    """

    architecture = "XLMModel"

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
        dtype, param_dtype = _canonical_dtype(dtype), _canonical_dtype(param_dtype)
        self.config = config
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.scan_layers = scan_layers
        self.remat = remat
        d = config.emb_dim
        embed = partial(Embed, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        position_init = _sinusoidal_init if config.sinusoidal_embeddings else _normal(config.embed_init_std)
        self.position_embeddings = embed(
            config.max_position_embeddings, d, axes=("position", "embed"), init=position_init
        )
        if config.has_lang_embeddings:
            self.lang_embeddings = embed(config.n_langs, d, axes=("lang", "embed"), init=_normal(config.embed_init_std))
        else:
            self.lang_embeddings = None
        self.embeddings = embed(
            config.vocab_size,
            d,
            axes=("vocab", "embed"),
            init=_word_embedding_init(config.embed_init_std, config.pad_index),
        )
        norm = partial(LayerNorm, d, eps=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype)
        self.layer_norm_emb = norm()
        n = config.n_layers
        module_kwargs = dict(dtype=dtype, param_dtype=param_dtype)
        self.attentions = _stacked(n, lambda r: MultiHeadAttention(config, rngs=r, **module_kwargs), rngs)
        self.layer_norm1 = _stacked(n, lambda r: norm(), rngs)
        self.ffns = _stacked(n, lambda r: TransformerFFN(config, rngs=r, **module_kwargs), rngs)
        self.layer_norm2 = _stacked(n, lambda r: norm(), rngs)

    def __call__(
        self,
        input_ids: jax.Array | None = None,  # [batch, length] int
        attention_mask: jax.Array | None = None,  # [batch, length], 1 = token, 0 = padding
        langs: jax.Array | None = None,  # [batch, length] language id per token
        token_type_ids: jax.Array | None = None,  # [batch, length], looked up in the word embeddings
        position_ids: jax.Array | None = None,  # [batch, length]
        lengths: jax.Array | None = None,  # [batch]
        *,
        inputs_embeds: jax.Array | None = None,  # [batch, length, emb_dim], instead of input_ids
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> BaseModelOutput:
        """Encodes a batch.

        Args:
            input_ids: Token ids `[batch, length]`.
            attention_mask: `[batch, length]`, nonzero on tokens. Takes precedence over `lengths`.
            langs: Language id of every token `[batch, length]`; used only when the model has language embeddings.
            token_type_ids: `[batch, length]` ids added through the word-embedding table (as in transformers).
            position_ids: `[batch, length]`; defaults to `0..length-1` for every row.
            lengths: `[batch]` number of leading tokens to attend to, when no `attention_mask` is given. With
                neither, the count of non-pad tokens of each row is used.
            inputs_embeds: Word embeddings `[batch, length, emb_dim]` to use instead of looking up `input_ids`.
            output_hidden_states: Also return the embeddings output and every layer's output.
            output_attentions: Also return every layer's attention weights.
            deterministic: Disable dropout. When false, `rngs` must have a `dropout` stream.
            rngs: Random streams for dropout.

        Returns:
            A `BaseModelOutput`.
        """
        config = self.config
        if input_ids is None and inputs_embeds is None:
            raise ValueError("give input_ids or inputs_embeds")
        batch, length = input_ids.shape if input_ids is not None else inputs_embeds.shape[:2]
        if length > config.max_position_embeddings and position_ids is None:
            raise ValueError(
                f"input length {length} exceeds max_position_embeddings={config.max_position_embeddings}; "
                "truncate the input"
            )
        for name, value in (
            ("attention_mask", attention_mask),
            ("langs", langs),
            ("position_ids", position_ids),
            ("token_type_ids", token_type_ids),
        ):
            if value is not None and value.shape != (batch, length):
                raise ValueError(f"{name} has shape {value.shape}; expected (batch, length) = {(batch, length)}")
        keys = self._dropout_keys(deterministic, rngs)

        positions = jnp.arange(length)
        if attention_mask is not None:
            # The reference multiplies hidden states by the mask as given and attends where it is nonzero.
            keep = attention_mask.astype(self.dtype)
            attend = attention_mask != 0
        else:
            if lengths is None:
                if input_ids is not None:
                    lengths = jnp.sum(input_ids != config.pad_index, axis=1)
                else:
                    lengths = jnp.full((batch,), length)
            attend = positions[None, :] < lengths[:, None]
            keep = attend.astype(self.dtype)
        if config.causal:
            attend = (positions[None, :] <= positions[:, None])[None, None, :, :]  # [1, 1, T, S]
        else:
            attend = attend[:, None, None, :]  # [B, 1, 1, S]

        if position_ids is None:
            position_ids = positions[None, :]
        x = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds.astype(self.dtype)
        x = x + self.position_embeddings(position_ids)
        if langs is not None and self.lang_embeddings is not None:
            x = x + self.lang_embeddings(langs)
        if token_type_ids is not None:
            x = x + self.embeddings(token_type_ids)
        x = self.layer_norm_emb(x)
        x = dropout(x, config.dropout, keys[0] if keys is not None else None)
        x = x * keep[..., None]

        embedded = x
        x, layer_states, layer_weights = self._run_layers(
            x, attend, keep, keys[1] if keys is not None else None, output_hidden_states, output_attentions
        )
        return BaseModelOutput(
            last_hidden_state=x,
            hidden_states=(embedded, *layer_states) if output_hidden_states else None,
            attentions=tuple(layer_weights) if output_attentions else None,
        )

    def _dropout_keys(self, deterministic: bool, rngs: nnx.Rngs | None) -> jax.Array | None:
        """Two keys (embeddings, layers) when dropout is on, else None."""
        if deterministic or (self.config.dropout == 0 and self.config.attention_dropout == 0):
            return None
        if rngs is None:
            raise ValueError("deterministic=False needs rngs with a 'dropout' stream, e.g. rngs=nnx.Rngs(dropout=0)")
        return jax.random.split(rngs.dropout(), 2)

    def _run_layers(
        self,
        x: jax.Array,  # [B, T, D]
        attend: jax.Array,  # [B, 1, 1, S] or [1, 1, T, S]
        keep: jax.Array,  # [B, T]
        key: jax.Array | None,
        output_hidden_states: bool,
        output_attentions: bool,
    ) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
        """Runs every layer with `nnx.scan`; returns the output and, when asked, the stacked per-layer outputs
        `[L, B, T, D]` and attention weights `[L, B, N, T, S]`."""
        layer_keys = None if key is None else jax.random.split(key, self.config.n_layers)
        if isinstance(self.attentions, nnx.List):  # per-layer weights, see `xlm_flax.unstacked`
            from xlm_flax.unstacked import run_unstacked

            return run_unstacked(
                self,
                x,
                attend,
                keep,
                layer_keys,
                rate=self.config.dropout,
                output_hidden_states=output_hidden_states,
                output_attentions=output_attentions,
            )
        graphdef, state = nnx.split((self.attentions, self.layer_norm1, self.ffns, self.layer_norm2))
        return _layer_stack(
            graphdef,
            state,
            x,
            attend,
            keep,
            layer_keys,
            rate=self.config.dropout,
            unroll=1 if self.scan_layers else self.config.n_layers,
            remat=self.remat,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )


def transformer_layer(
    x: jax.Array,  # [B, T, D]
    attention: MultiHeadAttention,
    norm1: LayerNorm,
    ffn: TransformerFFN,
    norm2: LayerNorm,
    key: jax.Array | None,
    *,
    attend: jax.Array,
    keep: jax.Array,  # [B, T]
    rate: float,
    output_attentions: bool,
) -> tuple[jax.Array, jax.Array | None]:
    """One post-LayerNorm block, as the reference: attention, dropout, residual, LayerNorm, FFN, residual,
    LayerNorm, then the padding mask. Shared by the scanned stack and the per-layer path (`xlm_flax.unstacked`).

    Returns:
        The block's output `[B, T, D]` and, when `output_attentions`, its attention weights `[B, N, T, S]`.
    """
    k_attention, k_output, k_ffn = (None, None, None) if key is None else jax.random.split(key, 3)
    out, weights = attention(x, attend, k_attention, output_weights=output_attentions)
    x = norm1(x + dropout(out, rate, k_output))
    x = norm2(x + ffn(x, k_ffn))
    return x * keep[..., None], weights if output_attentions else None


@partial(jax.jit, static_argnames=("graphdef", "rate", "unroll", "remat", "output_hidden_states", "output_attentions"))
def _layer_stack(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    x: jax.Array,  # [B, T, D]
    attend: jax.Array,
    keep: jax.Array,  # [B, T]
    layer_keys: jax.Array | None,  # [L, 2] or None
    *,
    rate: float,
    unroll: int,
    remat: bool,
    output_hidden_states: bool,
    output_attentions: bool,
) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """The layer stack as a pure, jitted function of the stacked layer state.

    Jitted so that an eager call of the model (a notebook, a test) compiles the scanned body once per input shape
    and reuses it, instead of tracing and compiling the scan anew on every call; inside an outer `jit` it is inlined.
    """
    attentions, layer_norm1, ffns, layer_norm2 = nnx.merge(graphdef, state)

    def layer(x, attention, norm1, ffn, norm2, key):
        x, weights = transformer_layer(
            x,
            attention,
            norm1,
            ffn,
            norm2,
            key,
            attend=attend,
            keep=keep,
            rate=rate,
            output_attentions=output_attentions,
        )
        return x, (x if output_hidden_states else None, weights)

    if remat:
        layer = nnx.remat(layer)
    scan = nnx.scan(
        layer,
        in_axes=(nnx.Carry, 0, 0, 0, 0, None if layer_keys is None else 0),
        out_axes=(nnx.Carry, 0),
        unroll=unroll,
    )
    x, (states, weights) = scan(x, attentions, layer_norm1, ffns, layer_norm2, layer_keys)
    return x, states, weights


class XLMPredLayer(nnx.Module):
    """The prediction layer: logits over the vocabulary from hidden states.

    With `tie_word_embeddings` (every public checkpoint) the projection reuses the word-embedding matrix and owns
    only its bias, `pred_layer.proj.bias`; otherwise it has its own `[embed, vocab]` kernel as well.

    Args:
        config: The model's hyper-parameters.
        dtype: Compute dtype.
        param_dtype: Storage dtype of the parameters.
        rngs: Random streams for parameter initialisation.
    """

    def __init__(self, config: XLMConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, rngs: nnx.Rngs):
        self.dtype = dtype
        self.tied = config.tie_word_embeddings
        if self.tied:
            self.proj = _Bias(config.vocab_size, param_dtype)
        else:
            self.proj = Dense(
                (config.emb_dim,),
                (config.vocab_size,),
                kernel_axes=("embed", "vocab"),
                bias_axes=("vocab",),
                init=_normal(config.init_std),
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )

    def __call__(self, x: jax.Array, word_embeddings: jax.Array) -> jax.Array:
        """Maps `[batch, length, emb_dim]` to float32 logits `[batch, length, vocab]`.

        Args:
            x: Final hidden states.
            word_embeddings: The `[vocab, emb_dim]` table, used when the weights are tied.
        """
        if self.tied:
            kernel = word_embeddings.astype(self.dtype)
            logits = jnp.einsum("BTD,VD->BTV", x.astype(self.dtype), kernel, preferred_element_type=jnp.float32)
        else:
            kernel = self.proj.kernel[...].astype(self.dtype)
            logits = jnp.einsum("BTD,DV->BTV", x.astype(self.dtype), kernel, preferred_element_type=jnp.float32)
        return logits + self.proj.bias[...].astype(jnp.float32)


class _Bias(nnx.Module):
    """Holds only a bias, so that the tied projection's parameter path is `pred_layer.proj.bias`."""

    def __init__(self, features: int, param_dtype: DTypeLike):
        self.bias = param(jnp.zeros((features,), param_dtype), ("vocab",))


def masked_lm_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy of `logits [..., vocab]` against `labels [...]`, skipping labels equal to -100
    (PyTorch's `cross_entropy` with its default `ignore_index`).

    Args:
        logits: `[batch, length, vocab]` float32.
        labels: `[batch, length]` ids; -100 is ignored.
    """
    valid = labels != -100
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(log_probs, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    return -jnp.sum(jnp.where(valid, picked, 0.0)) / jnp.sum(valid)


class XLMWithLMHeadModel(PretrainedMixin, nnx.Module):
    """XLM encoder plus the language-model head (transformers' `XLMWithLMHeadModel`).

    Args:
        config: The model's hyper-parameters.
        rngs: Random streams for parameter initialisation.
        dtype: Compute dtype; logits are float32 whatever it is.
        param_dtype: Storage dtype of the parameters.
        scan_layers: See `XLMModel`.
        remat: See `XLMModel`.
    """

    architecture = "XLMWithLMHeadModel"

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
        self.config = config
        self.transformer = XLMModel(
            config, rngs=rngs, dtype=dtype, param_dtype=param_dtype, scan_layers=scan_layers, remat=remat
        )
        self.pred_layer = XLMPredLayer(config, dtype=self.transformer.dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(
        self,
        input_ids: jax.Array | None = None,  # [batch, length]
        attention_mask: jax.Array | None = None,  # [batch, length]
        langs: jax.Array | None = None,  # [batch, length]
        token_type_ids: jax.Array | None = None,  # [batch, length]
        position_ids: jax.Array | None = None,  # [batch, length]
        lengths: jax.Array | None = None,  # [batch]
        *,
        labels: jax.Array | None = None,  # [batch, length], -100 where no loss is wanted
        inputs_embeds: jax.Array | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> MaskedLMOutput:
        """Encodes a batch and predicts every position's token.

        Args are those of `XLMModel.__call__`, plus `labels`: when given, `loss` is the mean cross-entropy over
        positions whose label is not -100.

        Args:
            input_ids: Token ids `[batch, length]`.
            attention_mask: `[batch, length]`, nonzero on tokens.
            langs: Language id of every token `[batch, length]` (models with language embeddings).
            token_type_ids: `[batch, length]` ids added through the word-embedding table.
            position_ids: `[batch, length]`; defaults to `0..length-1`.
            lengths: `[batch]` tokens to attend to, when no `attention_mask` is given.
            labels: `[batch, length]` token ids to predict; -100 is ignored (the MLM loss).
            inputs_embeds: Word embeddings `[batch, length, emb_dim]` instead of `input_ids`.
            output_hidden_states: Also return the embeddings output and every layer's output.
            output_attentions: Also return every layer's attention weights.
            deterministic: Disable dropout; when false, `rngs` must have a `dropout` stream.
            rngs: Random streams for dropout.

        Returns:
            A `MaskedLMOutput` with float32 `logits [batch, length, vocab]`.
        """
        out = self.transformer(
            input_ids,
            attention_mask,
            langs,
            token_type_ids,
            position_ids,
            lengths,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            deterministic=deterministic,
            rngs=rngs,
        )
        logits = self.pred_layer(out.last_hidden_state, self.transformer.embeddings.embedding[...])
        loss = masked_lm_loss(logits, labels) if labels is not None else None
        return MaskedLMOutput(logits=logits, loss=loss, hidden_states=out.hidden_states, attentions=out.attentions)


# transformers architecture name -> class; head models add themselves in `xlm_flax.heads`.
MODEL_CLASSES: dict[str, type] = {"XLMModel": XLMModel, "XLMWithLMHeadModel": XLMWithLMHeadModel}
