"""The sequence summary (transformers' `XLMSequenceSummary`): one vector per sequence."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xlm_flax.config import XLMConfig
from xlm_flax.errors import ConfigError
from xlm_flax.model.heads.common import ACTIVATIONS, _check_positions, _dense, _dropout_key
from xlm_flax.model.layers import DTypeLike, dropout


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

    def __init__(self, config: XLMConfig, *, dtype: DTypeLike, param_dtype: DTypeLike, precision: str, rngs: nnx.Rngs):
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
                config,
                config.emb_dim,
                self.features(config),
                axes,
                dtype=dtype,
                param_dtype=param_dtype,
                precision=precision,
                rngs=rngs,
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


__all__ = ["SequenceSummary"]
