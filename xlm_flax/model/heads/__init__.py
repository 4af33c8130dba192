"""Task heads on the XLM encoder, each mirroring its transformers class (module names, outputs, losses).

Every head is built as `XLMForX(config, rngs=rngs, **options)` with `XLMModel`'s options (`dtype`, `param_dtype`,
`layers`, `remat`, ...) and called as `model(*args, <its own keywords>, **kwargs)` with `XLMModel.__call__`'s
arguments, by position or by name: the encoder's are declared and documented there only, and each head declares
its own (`labels`, `cls_index`, `start_positions`, `end_positions`, `is_impossible`, `p_mask`).

* `common`: `_HeadModel` (builds the encoder under `transformer`, binds and forwards its inputs), dense layers,
  dropout keys, activations.
* `summary`: the sequence summary of the classification and multiple-choice heads.
* `classification`: `XLMForSequenceClassification`, `XLMForTokenClassification`.
* `squad`: the SQuAD beam-search head and its poolers.
* `question_answering`: `XLMForQuestionAnsweringSimple`, `XLMForQuestionAnswering`.
* `multiple_choice`: `XLMForMultipleChoice`.
"""

from xlm_flax._lazy import lazy_namespace

__getattr__, __dir__ = lazy_namespace(
    __name__,
    {
        "XLMForSequenceClassification": ".classification",
        "XLMForTokenClassification": ".classification",
        "XLMForQuestionAnsweringSimple": ".question_answering",
        "XLMForQuestionAnswering": ".question_answering",
        "XLMForMultipleChoice": ".multiple_choice",
        "SequenceSummary": ".summary",
        "SquadHead": ".squad",
    },
)
