"""Task heads on the XLM encoder, each mirroring its transformers class (module names, outputs, losses).

* `common`: the encoder under `transformer`, dense layers, dropout keys, activations.
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
