"""`TrainConfig`: everything a training run needs."""

from __future__ import annotations

import dataclasses

from xlm_flax.errors import InputError

OBJECTIVES = ("mlm", "tlm", "clm", "classification")


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
        precision: Matmul precision of the model, by JAX's name (`XLMModel`'s `precision`); None is its default,
            `"highest"`.
        remat: Recompute layer activations in the backward pass (less memory, more compute).
        mesh_shape: `(data, model)` sizes of the device mesh; -1 takes the remaining devices.
        seed: Seeds initialisation, data order, masking and dropout.
        mlm_probability: Share of tokens chosen for MLM.
        num_labels: Classes of the classification head; None takes the largest label of `train_file` plus one
            (at least 2). A model passed to `Trainer` keeps its own `config.num_labels`.
        log_every: Log loss and throughput every this many steps.
        save_every: Save a checkpoint every this many steps (0: only at the end).
        keep_checkpoints: How many step checkpoints to keep.
        data: "memory" (`TextBatches`: the file read into memory, rows cached) or "grain" (`StreamingBatches`:
            lines read lazily, tokenized in `data_workers` processes, each JAX process reading its own rows; needs
            grain, `pip install 'xlm-flax[data]'`; MLM, TLM and CLM).
        packing: With data="grain", pack several sentences into rows of `max(buckets)` tokens (`segment_ids` and
            per-sentence positions; needs a model whose attention takes `segment_ids`); else one sentence per row.
        data_workers: With data="grain", tokenization processes (0: in the training process).
        tokenizer_rules: "language" (each language's Moses rules, what XLM was trained on) or "transformers"
            (English rules for every language, what transformers 5's `tokenizer(text, lang=...)` does).
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
    precision: str | None = None
    remat: bool = False
    mesh_shape: tuple[int, int] = (-1, 1)
    seed: int = 0
    mlm_probability: float = 0.15
    num_labels: int | None = None
    log_every: int = 10
    save_every: int = 0
    keep_checkpoints: int = 2
    data: str = "memory"
    packing: bool = False
    data_workers: int = 0
    tokenizer_rules: str = "language"

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
        if self.data not in ("memory", "grain"):
            raise InputError(f"data={self.data!r}: use 'memory' or 'grain'")
        if self.data_workers < 0:
            raise InputError(f"data_workers={self.data_workers}: must be 0 or more")
        if self.tokenizer_rules not in ("language", "transformers"):
            raise InputError(f"tokenizer_rules={self.tokenizer_rules!r}: use 'language' or 'transformers'")
        if not self.buckets or min(self.buckets) < 2:
            raise InputError(f"buckets={self.buckets}: give one or more lengths of at least 2")
        object.__setattr__(self, "buckets", tuple(sorted(self.buckets)))


__all__ = ["OBJECTIVES", "TrainConfig"]
