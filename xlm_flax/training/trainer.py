"""`Trainer` and `train`: a sharded training run with orbax checkpoints and exact resume.

Parameters are placed on a `(data, model)` mesh by their logical axes (`xlm_flax.sharding`), the batch is split over
`data`, and XLA inserts the collectives: the same code runs data parallel, model parallel or both. A run resumed from
a checkpoint (parameters, optimiser state, step, data position, seed) continues exactly as if it had never stopped.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from xlm_flax.config import XLMConfig
from xlm_flax.errors import CheckpointError, InputError, MissingFileError
from xlm_flax.model.encoder import XLMModel
from xlm_flax.model.heads.classification import XLMForSequenceClassification
from xlm_flax.model.lm_head import XLMWithLMHeadModel
from xlm_flax.sharding.mesh import auto_mesh, make_mesh
from xlm_flax.sharding.placement import parameter_shardings
from xlm_flax.sharding.rules import Rules, batch_axis, batch_multiple
from xlm_flax.training.config import TrainConfig
from xlm_flax.training.data import Batch, make_batches, read_classification_file
from xlm_flax.training.evaluation import ClassificationMetrics, evaluate_classifier
from xlm_flax.training.step import _identity, make_optimizer, make_train_step, mlm_prepare
from xlm_flax.training.streaming import model_inputs
from xlm_flax.validation import check_tokenizer_fits

logger = logging.getLogger(__name__)


def _model_class(objective: str) -> type:
    """The model class an objective trains: the LM head for MLM/TLM/CLM, the sequence classifier otherwise."""
    return XLMForSequenceClassification if objective == "classification" else XLMWithLMHeadModel


def _shape_key(batch: dict[str, jax.Array]) -> tuple:
    """What the compiled train step depends on: the names and shapes of the batch's arrays."""
    return tuple((name, value.shape) for name, value in batch.items())


class Trainer:
    """Runs a `TrainConfig`: builds the model on the mesh, the optimiser, the data, and trains with checkpoints.

    Args:
        config: The run.
        model: A model to train instead of building one from `config.model` (its class must suit the objective).
        tokenizer: A tokenizer instead of `XLMTokenizer.from_pretrained(config.tokenizer or config.model)`.
        log: Where progress lines go (default: the `xlm_flax.training` logger at INFO).
        mesh: A mesh of the caller's own (e.g. `jax.make_mesh((4, 2), ("dp", "tp"))`, Explicit or Auto axes) instead
            of one built from `config.mesh_shape`.
        rules: Logical-axis rules for the mesh; needed when its axes are not named `data` and `model`
            (`xlm_flax.sharding.axis_rules(data="dp", model="tp")`).

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
        mesh: Mesh | None = None,
        rules: Rules | None = None,
    ):
        self.config = config
        self.log = log or logger.info
        check_output_dirs(config.output_dir)  # before any work: a run that cannot save must not train for hours
        if mesh is None:
            data, width = config.mesh_shape
            # Explicit sizes take the first devices (a (1, 1) mesh runs on one device of many); -1 takes them all.
            mesh = make_mesh(data, width, devices=jax.devices()[: data * width] if data > 0 and width > 0 else None)
        self.mesh = mesh
        self.rules = rules
        # The step runs on the Auto view of the mesh (the modules leave shardings to XLA's propagation); parameters
        # and optimiser state live there too.
        self._compute_mesh = auto_mesh(mesh)
        self._data_axis = batch_axis(mesh, rules)  # checks that the rules fit the mesh
        multiple = batch_multiple(mesh, rules)
        if config.batch_size % multiple:
            raise InputError(f"batch_size={config.batch_size} is not a multiple of the mesh's data axis ({multiple})")
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
        check_tokenizer_fits(tokenizer, self.model_config.vocab_size)
        if max(config.buckets) > self.model_config.max_position_embeddings:
            raise InputError(
                f"buckets={','.join(map(str, config.buckets))}: lengths above the model's max_position_embeddings="
                f"{self.model_config.max_position_embeddings} have no position embedding; give --buckets of at most "
                f"{self.model_config.max_position_embeddings}"
            )
        self.data = make_batches(config, tokenizer, self.model_config)
        # Every model of this package runs its encoder, which takes packed rows; a model of the caller's own must
        # say so in its signature.
        self._accepts_segment_ids = isinstance(getattr(model, "transformer", model), XLMModel) or (
            "segment_ids" in inspect.signature(type(model).__call__).parameters
        )
        self.graphdef, params, self.rest = nnx.split(model, nnx.Param, ...)
        self._model = model
        shardings = parameter_shardings(params, self._compute_mesh, rules)
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
        replicated = NamedSharding(self._compute_mesh, PartitionSpec())
        self._step = jax.jit(
            step,
            out_shardings=(*state_shardings, replicated),
            donate_argnums=(0, 1),
        )
        self._checkpoints = None
        self._executables: dict[tuple, Any] = {}  # batch shapes -> the compiled train step

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
        replicated = NamedSharding(self._compute_mesh, PartitionSpec())
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

    def close(self) -> None:
        """Waits for pending checkpoint writes and closes the checkpoint manager (its background threads)."""
        if self._checkpoints is not None:
            manager, self._checkpoints = self._checkpoints, None
            manager.close()

    def save_checkpoint(self) -> None:
        """Saves parameters, optimiser state, step, data position and seed (orbax, atomic per step)."""
        import orbax.checkpoint as ocp

        meta = {"step": self.step, "seed": self.config.seed, **self.data.position}
        self._manager().save(
            self.step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave({"params": self.params, "opt_state": self.opt_state}),
                meta=ocp.args.JsonSave(meta),
                **self.data.save_args(),  # grain: the iterator's state, one file per process
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
        fix = (
            f"delete {os.path.join(self.checkpoint_dir, str(step))} to resume from an earlier step, or pass --no-resume"
        )
        try:
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore(), **self.data.restore_args()
                ),
            )
        except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many types for a damaged checkpoint
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise CheckpointError(
                f"checkpoint {self.checkpoint_dir} step {step} cannot be restored ({type(e).__name__}: {first}); {fix}"
            ) from e
        meta = restored["meta"]
        if not isinstance(meta, dict) or not all(
            isinstance(meta.get(k), int) for k in ("step", "seed", *self.data.position)
        ):
            raise CheckpointError(f"checkpoint {self.checkpoint_dir} step {step} has damaged metadata; {fix}")
        if meta["seed"] != self.config.seed:
            raise InputError(
                f"checkpoint {self.checkpoint_dir} step {step} was trained with seed {meta['seed']}, not "
                f"{self.config.seed}; use the same seed to resume, or another output_dir"
            )
        self.params, self.opt_state = restored["state"]["params"], restored["state"]["opt_state"]
        self.step = int(meta["step"])
        self.data.seek(**{name: meta[name] for name in self.data.position})
        self.log(f"resumed from {self.checkpoint_dir} at step {self.step}")
        return True

    # ------------------------------------------------------------------------------------------------- training

    def _device_batch(self, batch: Batch) -> dict[str, jax.Array]:
        out = {}
        for name, value in batch.items():
            spec = PartitionSpec(None, self._data_axis, *([None] * (value.ndim - 2)))
            sharding = NamedSharding(self._compute_mesh, spec)
            # A data object without the attribute (the caller's own) gives global batches, as TextBatches does.
            if getattr(self.data, "process_local", False):  # this process's rows only (StreamingBatches)
                out[name] = jax.make_array_from_process_local_data(sharding, value)
            else:
                out[name] = jax.device_put(value, sharding)
        return out

    def _compile(self, args: tuple) -> float:
        """Compiles the train step for the shapes of `args` (ahead of time, so that compilation stays out of the
        throughput figures); returns the seconds it took."""
        start = time.perf_counter()
        self._executables[_shape_key(args[3])] = self._step.lower(*args).compile()
        return time.perf_counter() - start

    def train(self, steps: int | None = None, *, progress: bool = False) -> list[tuple[int, float]]:
        """Trains up to step `steps` (default `config.steps`), checkpointing every `save_every` steps and at the end.

        Every `log_every` steps a line gives the mean loss, the gradient norm and the throughput in tokens/s; the
        train step is compiled ahead of time for each new batch shape (said in a line, and left out of the
        throughput).

        Args:
            steps: Stop at this step (at most `config.steps`).
            progress: Show a progress bar (tqdm.auto: a widget in notebooks, stderr elsewhere) with the loss and
                throughput, and "compiling" while the step compiles.

        Returns:
            `(step, loss)` for each step run by this call.
        """
        from tqdm.auto import tqdm

        config = self.config
        until = config.steps if steps is None else min(steps, config.steps)
        losses: list[tuple[int, jax.Array]] = []
        # The first window starts at the first step (not before the data's first batch is read and tokenized).
        window_tokens, window_start, window_losses = 0, None, []
        bar = tqdm(
            total=until, initial=self.step, disable=not progress or self.step >= until, unit="step", desc="training"
        )

        def say(message: str) -> None:
            with tqdm.external_write_mode():  # the line above the bar, not through it
                self.log(message)

        try:
            while self.step < until:
                batch = model_inputs(next(self.data), accepts_segment_ids=self._accepts_segment_ids)
                tokens = int(batch["attention_mask"].sum())
                args = (self.params, self.opt_state, self.rest, self._device_batch(batch), jnp.int32(self.step))
                if _shape_key(args[3]) not in self._executables:
                    if losses:
                        jax.block_until_ready(losses[-1][1])  # the window's steps so far, timed without compiling
                    paused = time.perf_counter()
                    shape = "x".join(str(d) for d in batch["input_ids"].shape)
                    bar.set_description(f"compiling for batches of {shape}")
                    say(f"compiling the train step for batches of {shape} tokens (once per shape)")
                    say(f"compiled in {self._compile(args):.1f} s")
                    bar.set_description("training")
                    if window_start is not None:
                        window_start += time.perf_counter() - paused
                executable = self._executables[_shape_key(args[3])]
                if window_start is None:
                    window_start = time.perf_counter()
                window_tokens += tokens
                self.params, self.opt_state, metrics = executable(*args)
                self.step += 1
                bar.update(1)
                losses.append((self.step, metrics["loss"]))
                window_losses.append(metrics["loss"])
                if self.step % config.log_every == 0 or self.step == until:
                    # On the host: waits for the steps (the timing is honest) and compiles nothing (an eager
                    # jnp.mean would compile on the first window and count in its time).
                    mean = float(np.mean(jax.device_get(window_losses)))
                    rate = window_tokens / max(time.perf_counter() - window_start, 1e-9)
                    say(
                        f"step {self.step}/{config.steps} loss {mean:.4f} grad_norm {float(metrics['grad_norm']):.3f} "
                        f"{rate:,.0f} tokens/s"
                    )
                    bar.set_postfix_str(f"loss {mean:.4f}, {rate:,.0f} tokens/s")
                    window_tokens, window_start, window_losses = 0, time.perf_counter(), []
                if config.save_every and self.step % config.save_every == 0:
                    self.save_checkpoint()
        finally:
            bar.close()
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


def train(
    config: TrainConfig,
    *,
    resume: bool = True,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
    mesh: Mesh | None = None,
    rules: Rules | None = None,
) -> Trainer:
    """Runs a whole training: resumes from `output_dir`'s latest checkpoint when there is one, trains to
    `config.steps`, and writes the final model to `output_dir/model`.

    Args:
        config: The run.
        resume: Continue from the latest checkpoint in `output_dir`, if any.
        log: Where progress lines go (default: the `xlm_flax.training` logger at INFO).
        progress: Show a progress bar with the loss and throughput (False for none).
        mesh: A mesh of the caller's own instead of `config.mesh_shape` (see `Trainer`).
        rules: Logical-axis rules for `mesh` (see `Trainer`).

    Returns:
        The `Trainer`, whose `history` holds the losses.
    """
    trainer = Trainer(config, log=log, mesh=mesh, rules=rules)
    try:
        if resume:
            trainer.restore_checkpoint()
        trainer.train(progress=progress)
        path = trainer.save_model()
        trainer.log(f"wrote {path}")
        with open(os.path.join(config.output_dir, "train_config.json"), "w", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(config), f, indent=2)
    finally:
        # Always: the manager's threads would otherwise keep a failed run from exiting.
        trainer.close()
    return trainer


def check_output_dirs(output_dir: str | os.PathLike) -> None:
    """Creates `output_dir` and `output_dir/checkpoints` and checks that files can be written in them.

    Raises:
        InputError: naming the directory that cannot be used and why.
    """
    for directory in (os.fspath(output_dir), os.path.join(os.fspath(output_dir), "checkpoints")):
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise InputError(f"{directory} is not a directory; give an output directory path")
        try:
            os.makedirs(directory, exist_ok=True)
            with tempfile.TemporaryFile(dir=directory):
                pass
        except OSError as e:
            raise InputError(f"cannot write in {directory} ({e.strerror}); give a writable output directory") from e


__all__ = ["Trainer", "train"]
