"""`Trainer` and `train`: a sharded training run with orbax checkpoints and exact resume.

Parameters are placed on a `(data, model)` mesh by their logical axes (`xlm_flax.sharding`), the batch is split over
`data`, and XLA inserts the collectives: the same code runs data parallel, model parallel or both. A run resumed from
a checkpoint (parameters, optimiser state, step, data position, seed) continues exactly as if it had never stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from xlm_flax.config import XLMConfig
from xlm_flax.errors import InputError, MissingFileError
from xlm_flax.model.heads.classification import XLMForSequenceClassification
from xlm_flax.model.lm_head import XLMWithLMHeadModel
from xlm_flax.sharding.mesh import make_mesh
from xlm_flax.sharding.placement import parameter_shardings
from xlm_flax.sharding.rules import DATA
from xlm_flax.training.config import TrainConfig
from xlm_flax.training.data import Batch, TextBatches, read_classification_file
from xlm_flax.training.evaluation import ClassificationMetrics, evaluate_classifier
from xlm_flax.training.step import _identity, make_optimizer, make_train_step, mlm_prepare

logger = logging.getLogger(__name__)


def _model_class(objective: str) -> type:
    """The model class an objective trains: the LM head for MLM/TLM/CLM, the sequence classifier otherwise."""
    return XLMForSequenceClassification if objective == "classification" else XLMWithLMHeadModel


class Trainer:
    """Runs a `TrainConfig`: builds the model on the mesh, the optimiser, the data, and trains with checkpoints.

    Args:
        config: The run.
        model: A model to train instead of building one from `config.model` (its class must suit the objective).
        tokenizer: A tokenizer instead of `XLMTokenizer.from_pretrained(config.tokenizer or config.model)`.
        log: Where progress lines go (default: the `xlm_flax.training` logger at INFO).

    Attributes:
        history: `(step, loss)` of every step run by this object, in order.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        model: nnx.Module | None = None,
        tokenizer: Any = None,
        log: Callable[[str], None] | None = None,
    ):
        self.config = config
        self.log = log or logger.info
        data, width = config.mesh_shape
        # Explicit sizes take the first devices (a (1, 1) mesh runs on one device of many); -1 takes them all.
        self.mesh = make_mesh(data, width, devices=jax.devices()[: data * width] if data > 0 and width > 0 else None)
        if config.batch_size % self.mesh.shape[DATA]:
            raise InputError(
                f"batch_size={config.batch_size} is not a multiple of the mesh's data axis ({self.mesh.shape[DATA]})"
            )
        if tokenizer is None:
            from transformers import XLMTokenizer

            source = config.tokenizer or config.model
            if not os.path.isfile(os.path.join(source, "vocab.json")):
                raise MissingFileError(
                    f"{source} has no vocab.json; give a model directory with the tokenizer files (vocab.json, "
                    "merges.txt) or set tokenizer="
                )

            tokenizer = XLMTokenizer.from_pretrained(source)
        self.tokenizer = tokenizer
        if model is None:
            model = self._build_model()
        self.model_config: XLMConfig = model.config
        self.data = TextBatches(
            config.train_file,
            tokenizer,
            self.model_config,
            objective=config.objective,
            batch_size=config.batch_size,
            accumulation=config.accumulation,
            buckets=config.buckets,
            seed=config.seed,
            langs=config.langs,
        )
        self.graphdef, params, self.rest = nnx.split(model, nnx.Param, ...)
        self._model = model
        shardings = parameter_shardings(params, self.mesh)
        self.params = jax.device_put(params, shardings)
        self.optimizer = make_optimizer(config)
        self.opt_state = self._init_opt_state(shardings)
        self.step = 0
        self.history: list[tuple[int, float]] = []
        prepare = (
            mlm_prepare(self.model_config, config.mlm_probability) if config.objective in ("mlm", "tlm") else _identity
        )
        state_shardings = (
            jax.tree.map(lambda a: a.sharding, self.params),
            jax.tree.map(lambda a: a.sharding, self.opt_state),
        )
        step = make_train_step(self.graphdef, self.optimizer, prepare=prepare, seed=config.seed)
        replicated = NamedSharding(self.mesh, PartitionSpec())
        self._step = jax.jit(
            step,
            out_shardings=(*state_shardings, replicated),
            donate_argnums=(0, 1),
        )
        self._checkpoints = None

    def _build_model(self) -> nnx.Module:
        config = self.config
        cls = _model_class(config.objective)
        kwargs = dict(
            dtype=jnp.dtype(config.dtype),
            param_dtype=jnp.dtype(config.param_dtype),
            precision=config.precision,
            remat=config.remat,
        )
        model_config = XLMConfig.from_pretrained(config.model)
        if config.objective == "classification":
            num_labels = config.num_labels
            if num_labels is None:
                _, labels = read_classification_file(config.train_file)
                num_labels = max(2, int(labels.max()) + 1)
            # A fresh head of num_labels classes; a base checkpoint's other tensors load as they are.
            model_config = model_config.replace(num_labels=num_labels)
        if config.from_scratch:
            return cls(model_config, rngs=nnx.Rngs(params=config.seed), **kwargs)
        return cls.from_pretrained(config.model, seed=config.seed, config=model_config, **kwargs)

    def _init_opt_state(self, shardings: nnx.State) -> Any:
        # Moments mirror the parameters and take their shardings; scalars (the step count) are replicated.
        abstract = jax.eval_shape(self.optimizer.init, self.params)
        replicated = NamedSharding(self.mesh, PartitionSpec())
        flat_shardings = {tuple(map(str, p)): s for p, s in jax.tree_util.tree_leaves_with_path(shardings)}

        def sharding_of(path, leaf):
            for n in range(len(path)):
                key = tuple(map(str, path[n:]))
                if key in flat_shardings and flat_shardings[key].shard_shape(leaf.shape) is not None:
                    return flat_shardings[key]
            return replicated

        out = jax.tree_util.tree_map_with_path(sharding_of, abstract)
        return jax.jit(self.optimizer.init, out_shardings=out)(self.params)

    # ---------------------------------------------------------------------------------------------- checkpoints

    @property
    def checkpoint_dir(self) -> str:
        """`output_dir/checkpoints`."""
        return os.path.join(os.path.abspath(self.config.output_dir), "checkpoints")

    def _manager(self):
        if self._checkpoints is None:
            import orbax.checkpoint as ocp

            self._checkpoints = ocp.CheckpointManager(
                self.checkpoint_dir,
                options=ocp.CheckpointManagerOptions(max_to_keep=self.config.keep_checkpoints, create=True),
            )
        return self._checkpoints

    def save_checkpoint(self) -> None:
        """Saves parameters, optimiser state, step, data position and seed (orbax, atomic per step)."""
        import orbax.checkpoint as ocp

        meta = {"step": self.step, "seed": self.config.seed, **self.data.position}
        self._manager().save(
            self.step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave({"params": self.params, "opt_state": self.opt_state}),
                meta=ocp.args.JsonSave(meta),
            ),
        )
        self._manager().wait_until_finished()

    def restore_checkpoint(self, step: int | None = None) -> bool:
        """Loads the latest (or the given) checkpoint of `output_dir`, if any; returns whether one was found.

        Raises:
            InputError: when the checkpoint was written with another seed.
        """
        import orbax.checkpoint as ocp

        manager = self._manager()
        step = manager.latest_step() if step is None else step
        if step is None:
            return False
        target = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
            {"params": self.params, "opt_state": self.opt_state},
        )
        restored = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
        )
        meta = restored["meta"]
        if meta["seed"] != self.config.seed:
            raise InputError(
                f"checkpoint {self.checkpoint_dir} step {step} was trained with seed {meta['seed']}, not "
                f"{self.config.seed}; use the same seed to resume, or another output_dir"
            )
        self.params, self.opt_state = restored["state"]["params"], restored["state"]["opt_state"]
        self.step = int(meta["step"])
        self.data.seek(int(meta["epoch"]), int(meta["offset"]))
        self.log(f"resumed from {self.checkpoint_dir} at step {self.step}")
        return True

    # ------------------------------------------------------------------------------------------------- training

    def _device_batch(self, batch: Batch) -> dict[str, jax.Array]:
        out = {}
        for name, value in batch.items():
            spec = PartitionSpec(None, DATA, *([None] * (value.ndim - 2)))
            out[name] = jax.device_put(value, NamedSharding(self.mesh, spec))
        return out

    def train(self, steps: int | None = None) -> list[tuple[int, float]]:
        """Trains up to step `steps` (default `config.steps`), checkpointing every `save_every` steps and at the end.

        Returns:
            `(step, loss)` for each step run by this call.
        """
        config = self.config
        until = config.steps if steps is None else min(steps, config.steps)
        losses: list[tuple[int, jax.Array]] = []
        window_tokens, window_start, window_losses = 0, time.perf_counter(), []
        while self.step < until:
            batch = next(self.data)
            window_tokens += int(batch["attention_mask"].sum())
            self.params, self.opt_state, metrics = self._step(
                self.params, self.opt_state, self.rest, self._device_batch(batch), jnp.int32(self.step)
            )
            self.step += 1
            losses.append((self.step, metrics["loss"]))
            window_losses.append(metrics["loss"])
            if self.step % config.log_every == 0 or self.step == until:
                mean = float(jnp.mean(jnp.stack(window_losses)))  # waits for the step: the timing is honest
                elapsed = time.perf_counter() - window_start
                self.log(
                    f"step {self.step}/{config.steps} loss {mean:.4f} grad_norm {float(metrics['grad_norm']):.3f} "
                    f"{window_tokens / elapsed:,.0f} tokens/s"
                )
                window_tokens, window_start, window_losses = 0, time.perf_counter(), []
            if config.save_every and self.step % config.save_every == 0:
                self.save_checkpoint()
        if not config.save_every or self.step % config.save_every:
            self.save_checkpoint()
        history = [(s, float(loss)) for s, loss in losses]
        self.history.extend(history)
        return history

    def evaluate(self, path: str, *, batch_size: int | None = None) -> ClassificationMetrics:
        """Accuracy and loss of the current classifier on a held-out `text<TAB>label` file.

        Args:
            path: The file.
            batch_size: Rows per forward pass; defaults to the training batch size.

        Returns:
            See `evaluate_classifier`.

        Raises:
            InputError: unless the objective is classification; on a bad file (see `read_classification_file`).
        """
        if self.config.objective != "classification":
            raise InputError(
                f"evaluate measures classification accuracy; this run's objective is {self.config.objective}"
            )
        return evaluate_classifier(
            self.model,
            self.tokenizer,
            path,
            batch_size=batch_size or self.config.batch_size,
            buckets=self.config.buckets,
            lang=self.data.langs[0],
        )

    @property
    def model(self) -> nnx.Module:
        """The model with the current parameters."""
        return nnx.merge(self.graphdef, self.params, self.rest)

    def save_model(self, directory: str | None = None) -> str:
        """Writes the trained model as a normal model directory (default `output_dir/model`), tokenizer included."""
        directory = directory or os.path.join(self.config.output_dir, "model")
        self.model.save_pretrained(directory, tokenizer_source=self.config.tokenizer or self.config.model)
        return directory


def train(config: TrainConfig, *, resume: bool = True, log: Callable[[str], None] | None = None) -> Trainer:
    """Runs a whole training: resumes from `output_dir`'s latest checkpoint when there is one, trains to
    `config.steps`, and writes the final model to `output_dir/model`.

    Returns:
        The `Trainer`, whose `history` holds the losses.
    """
    trainer = Trainer(config, log=log)
    if resume:
        trainer.restore_checkpoint()
    trainer.train()
    path = trainer.save_model()
    trainer.log(f"wrote {path}")
    with open(os.path.join(config.output_dir, "train_config.json"), "w", encoding="utf-8") as f:
        json.dump(dataclasses.asdict(config), f, indent=2)
    return trainer


__all__ = ["Trainer", "train"]
