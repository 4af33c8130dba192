"""The XLM encoder (`XLMModel`): embeddings, masks and the layer stack.

Module and parameter names mirror transformers' PyTorch XLM (`embeddings`, `position_embeddings`,
`lang_embeddings`, `layer_norm_emb`, `attentions.q_lin`, `layer_norm1`, `ffns.lin1`, `layer_norm2`), so that
`xlm_flax.checkpoints.names` converts checkpoints with a table one can read.

The forward pass reproduces the reference exactly, including its odd corners: hidden states are multiplied by the
padding mask after the embeddings and after every layer; masked attention scores are filled with the dtype's
minimum (so a row with nothing to attend to becomes uniform); `token_type_ids` are looked up in the word-embedding
table; with neither `attention_mask` nor `lengths`, the mask is a prefix as long as the count of non-pad tokens; a
causal model's attention mask is triangular and ignores padding.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from xlm_flax.config import XLMConfig
from xlm_flax.errors import ConfigError
from xlm_flax.model.attention import MultiHeadAttention
from xlm_flax.model.block import TransformerFFN
from xlm_flax.model.initializers import _normal, _sinusoidal_init, _word_embedding_init
from xlm_flax.model.kernels import check_implementation
from xlm_flax.model.layers import DTypeLike, Embed, LayerNorm, dropout
from xlm_flax.model.masking import AttentionMask, padding_mask, segment_mask, segment_positions
from xlm_flax.model.outputs import BaseModelOutput
from xlm_flax.model.precision import canonical_precision
from xlm_flax.model.pretrained import PretrainedMixin
from xlm_flax.model.stack import _deprecated, _layer_stack, _stacked, _to_per_layer, check_layout, run_unstacked


def _canonical_dtype(dtype: DTypeLike) -> jnp.dtype:
    return jnp.dtype(dtype)


def _layout(layers: str, scan_layers: bool | None) -> str:
    """The layout from `layers=` and the deprecated `scan_layers=`."""
    check_layout(layers)
    if scan_layers is None:
        return layers
    replacement = "scan" if scan_layers else "unrolled"
    if layers != "scan":
        raise ConfigError(
            f"scan_layers={scan_layers!r} and layers={layers!r}: give only layers= (scan_layers is deprecated)"
        )
    _deprecated(f"scan_layers={scan_layers!r} is deprecated; use layers={replacement!r}")
    return replacement


class XLMModel(PretrainedMixin, nnx.Module):
    """The XLM transformer encoder (transformers' `XLMModel`).

    Args:
        config: The model's hyper-parameters.
        rngs: Random streams for parameter initialisation (`params`).
        dtype: Compute dtype (e.g. `jnp.bfloat16`). Softmax, LayerNorm statistics and logits stay float32.
        param_dtype: Storage dtype of the parameters.
        layers: How the `n_layers` blocks are held and run; outputs are the same in all three (float32 parity
            with transformers in each):

            * `"scan"` (default; use it for training): weights stacked along a leading `layers` axis, run with
              `nnx.scan`. One compiled layer body whatever the depth: compile time barely grows with depth.
            * `"unrolled"`: the same stacked weights, the scan unrolled into straight-line code. The slowest to
              compile (time grows with depth), each layer still slicing its weights out of the stacked arrays; no
              faster than `"scan"` in our measurements.
            * `"per_layer"`: separate per-layer modules (`attentions[i]`, ...), each weight its own array, read in
              place with no per-layer slice copy: the fastest forward on CPU (1.37x at batch 1 x 128 on a 4 x 2048
              model). Compile time grows with depth, more slowly than `"unrolled"`. Checkpoints are still written
              stacked (`xlm_flax.model.stack.stacked_parameters`); building one fresh initialises stacked and
              splits (the same weights as the other layouts), `from_pretrained` loads straight into the layers.

            Measured with `python -m benchmarks.layers_layout` (jitted float32 forward, batch 1 x 128, vocab 1000,
            8 heads; 2-core CPU shared with other jobs, so figures are ranges over runs). 4 layers x 256: compile
            1.4-2.2 s (scan), 2.8-4.4 s (unrolled), 1.3-1.9 s (per_layer); one forward 33-39 ms, 33-39 ms,
            30-33 ms. 12 layers x 256 (`--layers 12`): compile 2.2 s, 12.3 s, 3.8 s.
        remat: Recompute each layer's activations in the backward pass instead of storing them (saves memory in
            training).
        scan_layers: Deprecated alias (for one release) of `layers`: true is `"scan"`, false `"unrolled"`.
        precision: Matmul precision of every dot product of the model (projections, attention, heads), by JAX's
            name (`xlm_flax.model.precision`): `"highest"` (the default, None) computes float32 in full float32 on
            every backend, so float32 parity with PyTorch holds on GPU and TPU; `"default"` lets the backend use
            TF32 (GPU) or one bfloat16 pass (TPU) for float32 operands; `"tensorfloat32"`, `"bfloat16"`,
            `"F32_F32_F32"`, `"BF16_BF16_F32_X3"` ... choose exactly. A `jax.lax.Precision` or
            `DotAlgorithmPreset` works too. It matters only for float32 compute: bfloat16 operands are bfloat16
            whatever it says.
        attention_implementation: The attention kernel when no weights are returned: None (default) chooses by
            backend (cuDNN on GPU, Pallas splash on TPU where dtype and shapes allow, XLA otherwise; see
            `xlm_flax.model.kernels`), or `"xla"`, `"cudnn"`, `"splash"` to insist.

    Raises:
        ConfigError: on a `layers`, `precision` or `attention_implementation` value other than those above.
    """

    architecture = "XLMModel"

    def __init__(
        self,
        config: XLMConfig,
        *,
        rngs: nnx.Rngs,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        layers: str = "scan",
        remat: bool = False,
        scan_layers: bool | None = None,
        precision: Any = None,
        attention_implementation: str | None = None,
    ):
        layers = _layout(layers, scan_layers)
        self.precision = canonical_precision(precision)
        self.attention_implementation = check_implementation(attention_implementation)
        dtype, param_dtype = _canonical_dtype(dtype), _canonical_dtype(param_dtype)
        self.config = config
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.layer_layout = layers
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
        module_kwargs = dict(dtype=dtype, param_dtype=param_dtype, precision=self.precision)
        self.attentions = _stacked(
            n,
            lambda r: MultiHeadAttention(config, rngs=r, implementation=attention_implementation, **module_kwargs),
            rngs,
        )
        self.layer_norm1 = _stacked(n, lambda r: norm(), rngs)
        self.ffns = _stacked(n, lambda r: TransformerFFN(config, rngs=r, **module_kwargs), rngs)
        self.layer_norm2 = _stacked(n, lambda r: norm(), rngs)
        if layers == "per_layer":
            # Built stacked, then split: every layout draws the same initial weights from the same `rngs`.
            _to_per_layer(self)

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
        segment_ids: jax.Array | None = None,  # [batch, length] packed rows: sentence number, 0 = padding
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
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
            segment_ids: Packed rows, several sentences per row: `[batch, length]` 1-based number of the sentence
                each token belongs to, 0 on padding (segments are contiguous). Attention stays within each
                segment (and is causal within it for a causal model), `position_ids` default to the position
                within each segment, and every sentence's outputs equal those of the sentence alone. Replaces
                `attention_mask` and `lengths` (give neither).
            output_hidden_states: Also return the embeddings output and every layer's output; None (the default)
                uses `config.output_hidden_states`, as transformers does.
            output_attentions: Also return every layer's attention weights; None uses `config.output_attentions`.
            deterministic: Disable dropout. When false, `rngs` must have a `dropout` stream.
            rngs: Random streams for dropout.

        Returns:
            A `BaseModelOutput`.
        """
        config = self.config
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
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
        if segment_ids is not None:
            if segment_ids.shape != (batch, length):
                raise ValueError(
                    f"segment_ids has shape {segment_ids.shape}; expected (batch, length) = {(batch, length)}"
                )
            if attention_mask is not None or lengths is not None:
                raise ValueError("give segment_ids alone: they replace attention_mask and lengths (0 marks padding)")
            keep = (segment_ids != 0).astype(self.dtype)
            mask = segment_mask(segment_ids, causal=config.causal)
            if position_ids is None:
                position_ids = segment_positions(segment_ids)
        else:
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
            mask = padding_mask(attend, causal=config.causal)

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
            x, mask, keep, keys[1] if keys is not None else None, output_hidden_states, output_attentions
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
        mask: AttentionMask,
        keep: jax.Array,  # [B, T]
        key: jax.Array | None,
        output_hidden_states: bool,
        output_attentions: bool,
    ) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
        """Runs every layer in the model's layout; returns the output and, when asked, the stacked per-layer outputs
        `[L, B, T, D]` and attention weights `[L, B, N, T, S]`."""
        layer_keys = None if key is None else jax.random.split(key, self.config.n_layers)
        if self.layer_layout == "per_layer":  # see `xlm_flax.model.stack`
            return run_unstacked(
                self,
                x,
                mask,
                keep,
                layer_keys,
                rate=self.config.dropout,
                remat=self.remat,
                output_hidden_states=output_hidden_states,
                output_attentions=output_attentions,
            )
        graphdef, state = nnx.split((self.attentions, self.layer_norm1, self.ffns, self.layer_norm2))
        return _layer_stack(
            graphdef,
            state,
            x,
            mask,
            keep,
            layer_keys,
            rate=self.config.dropout,
            unroll=self.config.n_layers if self.layer_layout == "unrolled" else 1,
            remat=self.remat,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )


__all__ = ["XLMModel"]
