"""Training: the run's config, the MLM/TLM/CLM objectives, text-file data, the jitted step, the trainer and
evaluation.

* `config`: `TrainConfig`.
* `objectives`: masking, TLM pairs, CLM labels.
* `data`: `TextBatches` and the classification file reader.
* `step`: the optimiser and the pure training step.
* `trainer`: `Trainer` and `train` (mesh, orbax checkpoints, exact resume).
* `evaluation`: `evaluate_classifier`.
"""

from xlm_flax._lazy import lazy_namespace

__getattr__, __dir__ = lazy_namespace(
    __name__,
    {
        "TrainConfig": ".config",
        "Trainer": ".trainer",
        "train": ".trainer",
        "make_optimizer": ".step",
        "make_train_step": ".step",
        "TextBatches": ".data",
        "ClassificationMetrics": ".evaluation",
        "evaluate_classifier": ".evaluation",
    },
)
