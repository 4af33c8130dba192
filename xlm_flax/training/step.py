"""The optimiser and the pure, jitted training step.

The step follows the package's one NNX boundary: `graphdef, params, rest = nnx.split(model, nnx.Param, ...)`, and
`jax.jit` compiles a pure function of `(params, opt_state, batch, step)` that merges the model inside, with the
parameter and optimiser buffers donated. Gradient accumulation is a `lax.scan` over the microbatches inside the
step; the update is the mean of the microbatch gradients. Every random draw of step `s` (MLM masking, dropout) comes
from `fold_in(key(seed), s)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from xlm_flax.config import XLMConfig
from xlm_flax.training.config import TrainConfig
from xlm_flax.training.objectives import IGNORE_INDEX, mask_tokens, special_ids

LossFn = Callable[[nnx.Module, Mapping[str, jax.Array], nnx.Rngs], jax.Array]


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """AdamW with linear warm-up then `config.schedule` decay, decay on matrices only, global-norm clipping."""
    warmup = min(config.warmup_steps, config.steps)
    decay_steps = max(config.steps - warmup, 1)
    if config.schedule == "cosine":
        decay = optax.cosine_decay_schedule(config.learning_rate, decay_steps)
    elif config.schedule == "linear":
        decay = optax.linear_schedule(config.learning_rate, 0.0, decay_steps)
    else:
        decay = optax.constant_schedule(config.learning_rate)
    schedule = optax.join_schedules([optax.linear_schedule(0.0, config.learning_rate, warmup), decay], [warmup])
    adamw = optax.adamw(
        schedule, weight_decay=config.weight_decay, mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
    )
    if config.max_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), adamw)
    return adamw


def model_loss(model: nnx.Module, batch: Mapping[str, jax.Array], rngs: nnx.Rngs) -> jax.Array:
    """The loss of any model of this package that takes `labels` and returns `.loss` (the LM head for
    MLM/TLM/CLM, a classification head for fine-tuning): `model(**batch, deterministic=False, rngs=rngs).loss`.

    Packed rows carry `segment_ids`, which replace the attention mask in the model (the mask stays in the batch for
    the masking of MLM)."""
    if "segment_ids" in batch:
        batch = {k: v for k, v in batch.items() if k != "attention_mask"}
    return model(**batch, deterministic=False, rngs=rngs).loss


def mlm_prepare(config: XLMConfig, probability: float = 0.15) -> Callable[[dict, jax.Array], dict]:
    """A batch transform that masks `input_ids` on device and adds `labels` (see `xlm_flax.training.objectives`)."""
    exclude = special_ids(config)

    def prepare(batch: dict, key: jax.Array) -> dict:
        masked, labels = mask_tokens(
            key,
            batch["input_ids"],
            mask_index=config.mask_index,
            vocab_size=config.vocab_size,
            exclude=exclude,
            probability=probability,
            attention_mask=batch.get("attention_mask"),
        )
        # A microbatch in which nothing was chosen would divide 0 by 0; give it one harmless label.
        none = jnp.all(labels == IGNORE_INDEX)
        labels = labels.at[0, 0].set(jnp.where(none, batch["input_ids"][0, 0], labels[0, 0]))
        return {**batch, "input_ids": masked, "labels": labels}

    return prepare


def _identity(batch: dict, key: jax.Array) -> dict:
    del key
    return batch


def make_train_step(
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    *,
    loss_fn: LossFn = model_loss,
    prepare: Callable[[dict, jax.Array], dict] = _identity,
    seed: int = 0,
) -> Callable:
    """The pure training step `(params, opt_state, rest, batch, step) -> (params, opt_state, metrics)`.

    Args:
        graphdef: From `nnx.split(model, nnx.Param, ...)`.
        optimizer: An optax transformation.
        loss_fn: `(model, microbatch, rngs) -> scalar loss`.
        prepare: `(microbatch, key) -> microbatch` on device before the loss (e.g. MLM masking).
        seed: Base of every key: step `s` uses `fold_in(key(seed), s)`.

    Returns:
        A function to be wrapped in `jax.jit`; `batch` arrays are `[accumulation, batch, length]`, `step` an int32
        scalar; `metrics` holds `loss` (mean over microbatches) and `grad_norm`.
    """

    def step(params, opt_state, rest, batch, step):
        key = jax.random.fold_in(jax.random.key(seed), step)
        n_micro = next(iter(batch.values())).shape[0]

        def micro_loss(p, micro, k):
            k_prepare, k_dropout = jax.random.split(k)
            model = nnx.merge(graphdef, p, rest)
            return loss_fn(model, prepare(micro, k_prepare), nnx.Rngs(dropout=k_dropout))

        def accumulate(carry, xs):
            grads, total = carry
            micro, k = xs
            loss, g = jax.value_and_grad(micro_loss)(params, micro, k)
            return (jax.tree.map(jnp.add, grads, g), total + loss), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        (grads, total), _ = jax.lax.scan(
            accumulate, (zeros, jnp.zeros((), jnp.float32)), (batch, jax.random.split(key, n_micro))
        )
        grads = jax.tree.map(lambda g: g / n_micro, grads)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"loss": total / n_micro, "grad_norm": optax.global_norm(grads)}

    return step


__all__ = ["LossFn", "make_optimizer", "make_train_step", "mlm_prepare", "model_loss"]
