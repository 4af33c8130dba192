"""xlm-flax: XLM (Lample & Conneau, 2019) in JAX / Flax NNX.

The public names below resolve lazily, on first use: `import xlm_flax` imports no JAX. The package is organised by
concern (see the README, "How the code is organised"):

* `xlm_flax.model`: layers, attention, the encoder and its layer stack, the LM head, the task heads, outputs, losses.
* `xlm_flax.checkpoints`: the PyTorch name table, tensor sources, hub files, load, save, convert, export.
* `xlm_flax.sharding`: logical-axis rules, meshes, placement, sharded forward, multi-host.
* `xlm_flax.inference`: batching and buckets, the engine, `FillMask`, `Embedder`.
* `xlm_flax.training`: config, objectives, data, the step, the trainer, evaluation.
* `xlm_flax.cli`: the `xlm-flax` command line, one module per command group.
* `xlm_flax.config`, `xlm_flax.tokenization`, `xlm_flax.errors`: what every layer above uses.
"""

from xlm_flax._lazy import lazy_namespace

__version__ = "0.2.0.dev0"

_NAMES = {
    # the model
    "XLMConfig": "xlm_flax.config",
    "XLMModel": "xlm_flax.model.encoder",
    "XLMWithLMHeadModel": "xlm_flax.model.lm_head",
    "XLMForSequenceClassification": "xlm_flax.model.heads.classification",
    "XLMForTokenClassification": "xlm_flax.model.heads.classification",
    "XLMForQuestionAnsweringSimple": "xlm_flax.model.heads.question_answering",
    "XLMForQuestionAnswering": "xlm_flax.model.heads.question_answering",
    "XLMForMultipleChoice": "xlm_flax.model.heads.multiple_choice",
    "BaseModelOutput": "xlm_flax.model.outputs",
    "MaskedLMOutput": "xlm_flax.model.outputs",
    "ClassifierOutput": "xlm_flax.model.outputs",
    "QuestionAnsweringOutput": "xlm_flax.model.outputs",
    "SquadOutput": "xlm_flax.model.outputs",
    "unstack_layers": "xlm_flax.model.stack",
    # sharding
    "DEFAULT_RULES": "xlm_flax.sharding.rules",
    "axis_rules": "xlm_flax.sharding.rules",
    "make_mesh": "xlm_flax.sharding.mesh",
    "shard_model": "xlm_flax.sharding.placement",
    "sharded_forward": "xlm_flax.sharding.forward",
    "pmap_forward": "xlm_flax.sharding.forward",
    "distributed": "xlm_flax.sharding.multihost:",
    # inference
    "Embedder": "xlm_flax.inference.embeddings",
    "FillMask": "xlm_flax.inference.fill_mask",
    "small_model_path": "xlm_flax.demo",
    "multilingual_model_path": "xlm_flax.demo",
    # training
    "TrainConfig": "xlm_flax.training.config",
    "Trainer": "xlm_flax.training.trainer",
    "train": "xlm_flax.training.trainer",
    # errors
    "XLMFlaxError": "xlm_flax.errors",
    "ConfigError": "xlm_flax.errors",
    "CheckpointError": "xlm_flax.errors",
    "MissingFileError": "xlm_flax.errors",
    "InputError": "xlm_flax.errors",
    "DependencyError": "xlm_flax.errors",
}

__getattr__, __dir__ = lazy_namespace(__name__, _NAMES)
__all__ = ["__version__", *_NAMES]
