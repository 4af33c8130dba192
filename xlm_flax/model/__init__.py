"""The model: layers, attention, the transformer block, the layer stack, the encoder, the LM head, the task heads,
their outputs and losses. Nothing here imports the checkpoint, sharding, inference, training or CLI layers at
import time (`from_pretrained` / `save_pretrained` import `xlm_flax.checkpoints` when called).

* `layers`: `Dense`, `Embed`, `LayerNorm`, dropout, and how a parameter gets its logical axis names.
* `initializers`: parameter initialisers, as transformers initialises them.
* `precision`: the `precision=` option (matmul precision names) and how every dot product receives it.
* `attention`: multi-head self-attention, where scores and weights are computed.
* `kernels`: the fused attention kernels (cuDNN, Pallas splash) and the choice between them and XLA.
* `block`: one transformer block (attention, FFN, residuals, LayerNorms).
* `stack`: the stacked layers and their runners (scanned, unrolled, per layer).
* `encoder`: `XLMModel` (embeddings, masks, the stack).
* `lm_head`: the prediction layer and `XLMWithLMHeadModel`.
* `heads`: the task heads, one module per task.
* `outputs`, `losses`, `pretrained`: output dataclasses, losses, the `from_pretrained` mixin.

Sub-modules (attention, FFN, prediction layer, head pieces) are built as `(config, *, dtype, param_dtype, rngs)`:
the model's `XLMConfig`, the compute dtype, the storage dtype of the parameters, and the random streams that
initialise them. Models (`XLMModel` and everything built on it) take `(config, *, rngs, **options)`, the options
declared once on `XLMModel`.
"""

from xlm_flax._lazy import lazy_namespace

__getattr__, __dir__ = lazy_namespace(
    __name__,
    {
        "XLMModel": ".encoder",
        "XLMWithLMHeadModel": ".lm_head",
        "BaseModelOutput": ".outputs",
        "MaskedLMOutput": ".outputs",
        "ClassifierOutput": ".outputs",
        "QuestionAnsweringOutput": ".outputs",
        "SquadOutput": ".outputs",
        "unstack_layers": ".stack",
        "is_unstacked": ".stack",
    },
)
