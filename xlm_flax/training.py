"""Pretraining and fine-tuning: a jitted, sharded training step with optax, text-file inputs and orbax checkpoints.

The step follows the package's one NNX boundary: `graphdef, params, rest = nnx.split(model, nnx.Param, ...)`, and
`jax.jit` compiles a pure function of `(params, opt_state, batch, step)` that merges the model inside, with the
parameter and optimiser buffers donated. Parameters are placed on a `(data, model)` mesh by their logical axes
(`xlm_flax.parallel`), the batch is split over `data`, and XLA inserts the collectives: the same code runs data
parallel, model parallel or both.

Every random draw of step `s` (MLM masking, dropout) comes from `fold_in(key(seed), s)`, and the data order of
epoch `e` from a NumPy generator seeded with `(seed, e)`: a run resumed from a checkpoint (parameters, optimiser
state, step, data position, seed) continues exactly as if it had never stopped.

Batches have fixed shapes: `[accumulation, batch, bucket]` where `bucket` is the smallest of `buckets` that holds
the longest row, so the step compiles once per bucket, not once per batch. Gradient accumulation is a `lax.scan`
over the microbatches inside the step; the update is the mean of the microbatch gradients.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from xlm_flax.config import XLMConfig
from xlm_flax.errors import InputError, MissingFileError
from xlm_flax.objectives import IGNORE_INDEX, clm_labels, mask_tokens, pad_batch, special_ids, tlm_pair
from xlm_flax.parallel import DATA, make_mesh, parameter_shardings

logger = logging.getLogger(__name__)

OBJECTIVES = ("mlm", "tlm", "clm", "classification")
Batch = dict[str, np.ndarray]
LossFn = Callable[[nnx.Module, Mapping[str, jax.Array], nnx.Rngs], jax.Array]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything a training run needs.

    Attributes:
        model: Model directory: `config.json` and tokenizer files, and weights unless `from_scratch`.
        train_file: Text file: one sentence per line (MLM, CLM), `first<TAB>second` (TLM), `text<TAB>label`
            with an integer label (classification).
        output_dir: Where checkpoints (`checkpoints/`) and the final model (`model/`) go.
        objective: "mlm", "tlm", "clm" or "classification".
        from_scratch: Initialise the weights from `seed` instead of loading them from `model`.
        tokenizer: Directory of the tokenizer files; defaults to `model`.
        langs: Language codes of the two TLM columns (or the one language of MLM/CLM text), looked up in the
            config's `lang2id`; unused by monolingual models.
        steps: Number of optimiser steps.
        batch_size: Sentences per microbatch (a multiple of the mesh's data axis).
        accumulation: Microbatches per optimiser step.
        buckets: Allowed sequence lengths; rows longer than the largest are cut.
        learning_rate: Peak learning rate.
        warmup_steps: Linear warm-up from 0 to the peak.
        schedule: Decay after warm-up to 0 at `steps`: "linear", "cosine" or "constant".
        weight_decay: AdamW decoupled weight decay, applied to matrices only (not to biases and LayerNorm).
        max_grad_norm: Global-norm gradient clipping (0 disables it).
        dtype: Compute dtype, e.g. "bfloat16"; parameters and optimiser state stay `param_dtype`.
        param_dtype: Storage dtype of the master weights.
        remat: Recompute layer activations in the backward pass (less memory, more compute).
        mesh_shape: `(data, model)` sizes of the device mesh; -1 takes the remaining devices.
        seed: Seeds initialisation, data order, masking and dropout.
        mlm_probability: Share of tokens chosen for MLM.
        num_labels: Classes of the classification head; None takes the largest label of `train_file` plus one
            (at least 2). A model passed to `Trainer` keeps its own `config.num_labels`.
        log_every: Log loss and throughput every this many steps.
        save_every: Save a checkpoint every this many steps (0: only at the end).
        keep_checkpoints: How many step checkpoints to keep.
    """

    model: str
    train_file: str
    output_dir: str
    objective: str = "mlm"
    from_scratch: bool = False
    tokenizer: str | None = None
    langs: tuple[str, ...] = ()
    steps: int = 1000
    batch_size: int = 32
    accumulation: int = 1
    buckets: tuple[int, ...] = (32, 64, 128)
    learning_rate: float = 1e-4
    warmup_steps: int = 100
    schedule: str = "linear"
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: bool = False
    mesh_shape: tuple[int, int] = (-1, 1)
    seed: int = 0
    mlm_probability: float = 0.15
    num_labels: int | None = None
    log_every: int = 10
    save_every: int = 0
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise InputError(f"objective={self.objective!r}: use one of {', '.join(OBJECTIVES)}")
        if self.schedule not in ("linear", "cosine", "constant"):
            raise InputError(f"schedule={self.schedule!r}: use 'linear', 'cosine' or 'constant'")
        for name in ("steps", "batch_size", "accumulation", "log_every"):
            if getattr(self, name) < 1:
                raise InputError(f"{name}={getattr(self, name)}: must be at least 1")
        if self.num_labels is not None and self.num_labels < 2:
            raise InputError(f"num_labels={self.num_labels}: a classification head needs at least 2 classes")
        if not self.buckets or min(self.buckets) < 2:
            raise InputError(f"buckets={self.buckets}: give one or more lengths of at least 2")
        object.__setattr__(self, "buckets", tuple(sorted(self.buckets)))


# ------------------------------------------------------------------------------------------------------- optimiser


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


# ----------------------------------------------------------------------------------------------------- loss functions


def model_loss(model: nnx.Module, batch: Mapping[str, jax.Array], rngs: nnx.Rngs) -> jax.Array:
    """The loss of any model of this package that takes `labels` and returns `.loss` (the LM head for
    MLM/TLM/CLM, a classification head for fine-tuning): `model(**batch, deterministic=False, rngs=rngs).loss`."""
    return model(**batch, deterministic=False, rngs=rngs).loss


def mlm_prepare(config: XLMConfig, probability: float = 0.15) -> Callable[[dict, jax.Array], dict]:
    """A batch transform that masks `input_ids` on device and adds `labels` (see `xlm_flax.objectives`)."""
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


# ------------------------------------------------------------------------------------------------------ train step


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


# ------------------------------------------------------------------------------------------------------------ data


def read_classification_file(path: str) -> tuple[list[str], np.ndarray]:
    """Reads a `text<TAB>label` file (integer labels, from 0; empty lines skipped).

    Args:
        path: The file.

    Returns:
        `(texts, labels)`: the texts and an int32 array `[n]` of their labels.

    Raises:
        MissingFileError: when the file does not exist.
        InputError: on a line without a tab, a label that is not a non-negative integer, or an empty file.
    """
    if not os.path.isfile(path):
        raise MissingFileError(f"classification file {path} does not exist; give a file of 'text<TAB>label' lines")
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            text, sep, label = line.rstrip("\n").rpartition("\t")
            if not sep:
                raise InputError(f"{path}:{number}: no tab; write 'text<TAB>label'")
            try:
                value = int(label.strip())
            except ValueError:
                value = -1
            if value < 0:
                raise InputError(f"{path}:{number}: label {label!r} is not a class id; labels are integers from 0")
            texts.append(text)
            labels.append(value)
    if not texts:
        raise InputError(f"{path} has no 'text<TAB>label' lines")
    return texts, np.asarray(labels, np.int32)


def _encode(tokenizer: Any, text: str, lang: str, limit: int) -> list[int]:
    # Moses-based XLM tokenizers take the language; others (e.g. a plain BPE tokenizer) do not.
    lang_aware = "lang" in tokenizer._tokenize.__code__.co_varnames
    ids = tokenizer.encode(text, lang=lang) if lang_aware else tokenizer.encode(text)
    return ids if len(ids) <= limit else ids[: limit - 1] + ids[-1:]  # keep the closing </s>


def _check_labels(labels: np.ndarray, num_labels: int, path: str) -> None:
    if labels.size and int(labels.max()) >= num_labels:
        raise InputError(
            f"{path} has label {int(labels.max())} but the model has num_labels={num_labels} (labels 0..{num_labels - 1});"
            " set TrainConfig.num_labels (--num-labels) or fix the labels"
        )


class TextBatches:
    """Fixed-shape batches from a text file, tokenised on the fly, in a reproducible order.

    Lines are read once; each is tokenised the first time it is used (and cached). Epoch `e` visits the lines in
    the order of `np.random.default_rng((seed, e)).permutation`; the position `(epoch, offset)` says where the
    next batch starts, so a resumed run reads the same batches. A last partial batch of an epoch is dropped.

    Args:
        path: The text file.
        tokenizer: A transformers `XLMTokenizer`.
        config: The model's config (special ids, languages).
        objective: See `TrainConfig.objective`.
        batch_size: Rows per microbatch.
        accumulation: Microbatches per step.
        buckets: Allowed lengths.
        seed: Data-order seed.
        langs: Language codes (see `TrainConfig.langs`).
    """

    def __init__(
        self,
        path: str,
        tokenizer: Any,
        config: XLMConfig,
        *,
        objective: str,
        batch_size: int,
        accumulation: int,
        buckets: Sequence[int],
        seed: int,
        langs: Sequence[str] = (),
    ):
        if not os.path.isfile(path):
            raise MissingFileError(f"training file {path} does not exist; give a text file, one example per line")
        with open(path, encoding="utf-8") as f:
            self.lines = [line.rstrip("\n") for line in f if line.strip()]
        self.labels: np.ndarray | None = None
        if objective == "classification":
            self.lines, self.labels = read_classification_file(path)
            _check_labels(self.labels, config.num_labels, path)
        self.per_step = batch_size * accumulation
        if len(self.lines) < self.per_step:
            raise InputError(
                f"{path} has {len(self.lines)} non-empty lines, fewer than one step's {self.per_step} "
                "(batch_size x accumulation); use a smaller batch or more data"
            )
        self.tokenizer, self.config, self.objective = tokenizer, config, objective
        self.batch_size, self.accumulation, self.buckets, self.seed = batch_size, accumulation, buckets, seed
        self.lang_ids = [self._lang_id(code) for code in langs] or [config.lang_id]
        self.langs = list(langs) or [config.id2lang.get(config.lang_id, "en")]
        self._cache: dict[int, dict[str, np.ndarray]] = {}
        self.epoch, self.offset = 0, 0
        self._order = self._permutation(0)

    def _lang_id(self, code: str) -> int:
        if not self.config.lang2id:
            return 0
        if code not in self.config.lang2id:
            raise InputError(f"language {code!r} is not in the model's lang2id {sorted(self.config.lang2id)}")
        return self.config.lang2id[code]

    def _permutation(self, epoch: int) -> np.ndarray:
        # Shuffle, then sort each window of 50 steps' lines by length and shuffle the steps: rows of a batch have
        # similar lengths, so little of the bucket is padding, and the order still changes every epoch.
        rng = np.random.default_rng((self.seed, epoch))
        order = rng.permutation(len(self.lines))
        n_steps = len(order) // self.per_step
        order = order[: n_steps * self.per_step]
        window = 50 * self.per_step
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            order[start : start + window] = chunk[np.argsort([len(self.lines[i]) for i in chunk], kind="stable")]
        steps = order.reshape(n_steps, self.per_step)[rng.permutation(n_steps)]
        # Within a step, spread the lengths over the microbatches and rows as they come.
        return steps.reshape(-1)

    @property
    def position(self) -> dict[str, int]:
        """Where the next batch starts: `{"epoch": e, "offset": i}`."""
        return {"epoch": self.epoch, "offset": self.offset}

    def seek(self, epoch: int, offset: int) -> None:
        """Continues from a saved `position`."""
        self.epoch, self.offset = epoch, offset
        self._order = self._permutation(epoch)

    def _encode(self, text: str, lang: str) -> list[int]:
        return _encode(self.tokenizer, text, lang, self.buckets[-1])

    def _row(self, index: int) -> dict[str, np.ndarray]:
        if index in self._cache:
            return self._cache[index]
        line = self.lines[index]
        if self.objective == "tlm":
            if "\t" not in line:
                raise InputError(f"tlm: line {index + 1} has no tab; write 'first<TAB>second'")
            first, second = line.split("\t", 1)
            langs = (self.langs + self.langs)[:2]
            ids = (self.lang_ids + self.lang_ids)[:2]
            row = tlm_pair(
                self._encode(first, langs[0]),
                self._encode(second, langs[1]),
                ids[0],
                ids[1],
                max_length=self.buckets[-1],
            )
        else:
            # Classification: `lines` holds the texts (labels parsed in __init__); MLM/CLM: the sentences.
            ids = self._encode(line, self.langs[0])
            row = {"input_ids": np.asarray(ids, np.int32)}
            if self.config.has_lang_embeddings:
                row["langs"] = np.full(len(ids), self.lang_ids[0], np.int32)
        self._cache[index] = row
        return row

    def _bucket(self, length: int) -> int:
        return next(b for b in self.buckets if b >= length)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        """The next batch: arrays `[accumulation, batch_size, bucket]` (classification labels `[acc, batch]`)."""
        if self.offset + self.per_step > len(self._order):
            self.seek(self.epoch + 1, 0)
        indices = self._order[self.offset : self.offset + self.per_step]
        self.offset += self.per_step
        rows = [self._row(int(i)) for i in indices]
        length = self._bucket(max(len(r["input_ids"]) for r in rows))
        batch = pad_batch(rows, length, {"input_ids": self.config.pad_index})
        if self.objective == "clm":
            batch["labels"] = clm_labels(batch["input_ids"], batch["attention_mask"])
        if self.labels is not None:
            batch["labels"] = self.labels[indices]  # [accumulation * batch]: one class id per row
        shape = (self.accumulation, self.batch_size)
        return {name: value.reshape(shape + value.shape[1:]) for name, value in batch.items()}


# --------------------------------------------------------------------------------------------------------- trainer


def _model_class(objective: str) -> type:
    if objective != "classification":
        from xlm_flax.modeling import XLMWithLMHeadModel

        return XLMWithLMHeadModel
    try:
        from xlm_flax.heads import XLMForSequenceClassification
    except ImportError:
        raise InputError(
            "objective='classification' needs xlm_flax.heads.XLMForSequenceClassification, which this installation "
            "lacks"
        ) from None
    return XLMForSequenceClassification


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
        kwargs = dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype), remat=config.remat)
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


# ------------------------------------------------------------------------------------------------------ evaluation


@dataclasses.dataclass(frozen=True)
class ClassificationMetrics:
    """What `evaluate_classifier` measured.

    Attributes:
        accuracy: Share of examples whose arg-max class is the label.
        loss: Mean cross-entropy.
        n_examples: Examples evaluated.
        predictions: int32 `[n_examples]` predicted classes, in file order.
        labels: int32 `[n_examples]` the labels, in file order.
    """

    accuracy: float
    loss: float
    n_examples: int
    predictions: np.ndarray
    labels: np.ndarray


def evaluate_classifier(
    model: nnx.Module,
    tokenizer: Any,
    data: str | tuple[Sequence[str], Sequence[int]],
    *,
    batch_size: int = 32,
    buckets: Sequence[int] = (32, 64, 128),
    lang: str | None = None,
) -> ClassificationMetrics:
    """Accuracy and mean cross-entropy of a sequence classifier on labelled texts, without dropout.

    Texts are tokenised as in training (`TextBatches`), cut to the largest bucket, and run in batches of fixed
    shape `[batch_size, bucket]` (the last one padded with empty rows that are not counted), so the forward
    compiles once per bucket.

    Args:
        model: An `XLMForSequenceClassification`.
        tokenizer: Its tokenizer (e.g. transformers' `XLMTokenizer`).
        data: A `text<TAB>label` file, or `(texts, labels)`.
        batch_size: Rows per forward pass.
        buckets: Allowed sequence lengths.
        lang: Language code of the texts (tokenizer and language embeddings); defaults to the config's `lang_id`.

    Returns:
        A `ClassificationMetrics`.

    Raises:
        InputError: on a bad file, a label outside `0..num_labels-1`, or mismatched texts and labels.
    """
    from xlm_flax.heads import cross_entropy

    config: XLMConfig = model.config
    if isinstance(data, str):
        texts, labels = read_classification_file(data)
        where = data
    else:
        texts, labels = list(data[0]), np.asarray(data[1], np.int32)
        where = "the labels given"
        if len(texts) != len(labels) or not texts:
            raise InputError(f"evaluate_classifier: {len(texts)} texts and {len(labels)} labels; give as many of each")
    _check_labels(labels, config.num_labels, where)
    buckets = tuple(sorted(buckets))
    lang = lang or config.id2lang.get(config.lang_id, "en")
    lang_id = config.lang2id.get(lang, config.lang_id)
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, batch):
        return nnx.merge(graphdef, state)(**batch).logits  # [batch, num_labels]

    encoded = [_encode(tokenizer, text, lang, buckets[-1]) for text in texts]
    logits = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        rows = [{"input_ids": np.asarray(ids, np.int32)} for ids in chunk]
        rows += [{"input_ids": np.asarray([config.pad_index], np.int32)}] * (batch_size - len(rows))
        if config.has_lang_embeddings:
            rows = [{**r, "langs": np.full(len(r["input_ids"]), lang_id, np.int32)} for r in rows]
        length = next(b for b in buckets if b >= max(len(r["input_ids"]) for r in rows))
        batch = pad_batch(rows, length, {"input_ids": config.pad_index})
        logits.append(np.asarray(forward(state, batch))[: len(chunk)])
    logits = np.concatenate(logits)
    predictions = logits.argmax(-1).astype(np.int32)
    return ClassificationMetrics(
        accuracy=float(np.mean(predictions == labels)),
        loss=float(cross_entropy(jnp.asarray(logits), jnp.asarray(labels))),
        n_examples=len(labels),
        predictions=predictions,
        labels=labels,
    )


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


__all__ = [
    "OBJECTIVES",
    "ClassificationMetrics",
    "TextBatches",
    "TrainConfig",
    "Trainer",
    "evaluate_classifier",
    "make_optimizer",
    "make_train_step",
    "mlm_prepare",
    "model_loss",
    "read_classification_file",
    "train",
]
