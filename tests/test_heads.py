"""Parity of every task head with its transformers class on the same seeded random weights (float32, 1e-5), and
loading a base or LM checkpoint into a head (head initialised fresh and reported)."""

from __future__ import annotations

import logging

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import build_reference_checkpoint, optional_import, random_inputs

from xlm_flax import (
    XLMConfig,
    XLMForMultipleChoice,
    XLMForQuestionAnswering,
    XLMForQuestionAnsweringSimple,
    XLMForSequenceClassification,
    XLMForTokenClassification,
    XLMWithLMHeadModel,
)
from xlm_flax.checkpoints.registry import MODEL_CLASSES
from xlm_flax.errors import CheckpointError, ConfigError, InputError
from xlm_flax.model.layers import logical_axes

# None without torch: the tests that use it build the PyTorch reference, and skip there.
torch = optional_import("torch")

TOL = 1e-5
FIGURES: dict[str, float] = {}  # largest differences seen, printed at the end with -s


def _torch(model, **inputs):
    with torch.no_grad():
        return model(**{k: torch.as_tensor(np.asarray(v)) for k, v in inputs.items() if v is not None})


def _flax(model, **inputs):
    return model(**{k: jnp.asarray(v) for k, v in inputs.items() if v is not None})


def _diff(name: str, ours, theirs) -> float:
    d = float(np.max(np.abs(np.asarray(ours, dtype=np.float64) - theirs.detach().double().numpy())))
    FIGURES[name] = max(FIGURES.get(name, 0.0), d)
    return d


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """Returns (directory, PyTorch model, our model) for an architecture and config overrides, cached."""
    cache = {}

    def get(architecture: str, **overrides):
        key = (architecture, tuple(sorted(overrides.items())))
        if key not in cache:
            directory, torch_model = build_reference_checkpoint(
                tmp_path_factory.mktemp(architecture), architecture, n_langs=3, **overrides
            )
            cache[key] = directory, torch_model, MODEL_CLASSES[architecture].from_pretrained(directory)
        return cache[key]

    return get


def _inputs(config, **kwargs):
    ids, mask, langs = random_inputs(config, **kwargs)
    return dict(input_ids=ids, attention_mask=mask, langs=langs)


# ------------------------------------------------------------------------------------------- sequence classification

SUMMARIES = {
    "first_to_labels": dict(num_labels=3),
    "last_tanh": dict(num_labels=4, summary_type="last", summary_activation="tanh"),
    "mean_no_proj": dict(num_labels=3, summary_type="mean", summary_use_proj=False),
    "cls_index_to_hidden_gelu": dict(
        summary_type="cls_index", summary_proj_to_labels=False, summary_activation="gelu", summary_last_dropout=0.2
    ),
}


@pytest.mark.parametrize("summary", list(SUMMARIES))
def test_sequence_classification_logits_and_loss(build, summary):
    _, torch_model, ours = build("XLMForSequenceClassification", **SUMMARIES[summary])
    inputs = _inputs(torch_model.config)
    expected, got = _torch(torch_model, **inputs), _flax(ours, **inputs)
    assert got.logits.dtype == jnp.float32
    assert got.logits.shape == tuple(expected.logits.shape)
    assert _diff(f"seqcls[{summary}] logits", got.logits, expected.logits) <= TOL
    features = got.logits.shape[-1]
    if features == torch_model.config.num_labels:  # the reference's loss needs num_labels-wide logits
        labels = np.array([0, features - 1, 1])
        expected = _torch(torch_model, **inputs, labels=labels)
        got = _flax(ours, **inputs, labels=labels)
        assert _diff(f"seqcls[{summary}] loss", got.loss, expected.loss) <= TOL


@pytest.mark.parametrize("problem", ["regression", "multi_label"])
def test_sequence_classification_other_losses(build, problem):
    num_labels = 1 if problem == "regression" else 4
    _, torch_model, ours = build("XLMForSequenceClassification", num_labels=num_labels)
    inputs = _inputs(torch_model.config)
    rng = np.random.default_rng(3)
    if problem == "regression":
        labels = rng.normal(size=(3,)).astype(np.float32)
    else:
        labels = (rng.random((3, num_labels)) < 0.5).astype(np.float32)
    torch_model.config.problem_type = None  # transformers caches the inferred type on the config
    expected, got = _torch(torch_model, **inputs, labels=labels), _flax(ours, **inputs, labels=labels)
    assert _diff(f"seqcls[{problem}] loss", got.loss, expected.loss) <= TOL


def test_summary_cls_index_matches_reference_module(build):
    """transformers' XLMForSequenceClassification never passes cls_index; its summary module takes one, and ours
    must match that module when given explicit positions."""
    _, torch_model, ours = build("XLMForSequenceClassification", **SUMMARIES["cls_index_to_hidden_gelu"])
    hidden = np.random.default_rng(4).normal(size=(3, 9, 30)).astype(np.float32)
    cls_index = np.array([0, 4, 8])
    with torch.no_grad():
        expected = torch_model.sequence_summary(torch.from_numpy(hidden), torch.from_numpy(cls_index))
        default = torch_model.sequence_summary(torch.from_numpy(hidden))
    assert (
        _diff("summary cls_index", ours.sequence_summary(jnp.asarray(hidden), jnp.asarray(cls_index)), expected) <= TOL
    )
    assert _diff("summary cls_index=None", ours.sequence_summary(jnp.asarray(hidden)), default) <= TOL


def test_summary_dropouts_use_rngs(build):
    """The summary's own dropouts (the encoder's are tested in test_parity) draw from rngs.dropout."""
    _, torch_model, ours = build("XLMForSequenceClassification", **SUMMARIES["cls_index_to_hidden_gelu"])
    hidden = jnp.asarray(np.random.default_rng(6).normal(size=(3, 9, 30)).astype(np.float32))
    summary = ours.sequence_summary
    a = summary(hidden, deterministic=False, rngs=nnx.Rngs(dropout=0))
    b = summary(hidden, deterministic=False, rngs=nnx.Rngs(dropout=0))
    c = summary(hidden, deterministic=False, rngs=nnx.Rngs(dropout=1))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
    assert not np.allclose(np.asarray(a), np.asarray(summary(hidden)))
    with pytest.raises(ValueError, match="rngs"):
        summary(hidden, deterministic=False)


def test_attn_summary_and_unknown_activation_are_refused():
    with pytest.raises(ConfigError, match="attn"):
        XLMConfig(vocab_size=41, emb_dim=30, n_layers=1, n_heads=5, summary_type="attn")
    config = XLMConfig(vocab_size=41, emb_dim=30, n_layers=1, n_heads=5, summary_activation="softplus")
    with pytest.raises(ConfigError, match="summary_activation"):
        XLMForSequenceClassification(config, rngs=nnx.Rngs(0))


# ---------------------------------------------------------------------------------------------- token classification


def test_token_classification(build):
    _, torch_model, ours = build("XLMForTokenClassification", num_labels=5)
    inputs = _inputs(torch_model.config)
    labels = np.random.default_rng(5).integers(0, 5, size=inputs["input_ids"].shape)
    labels[inputs["attention_mask"] == 0] = -100
    expected, got = _torch(torch_model, **inputs, labels=labels), _flax(ours, **inputs, labels=labels)
    assert got.logits.shape == (3, 9, 5)
    assert _diff("tokcls logits", got.logits, expected.logits) <= TOL
    assert _diff("tokcls loss", got.loss, expected.loss) <= TOL


# -------------------------------------------------------------------------------------------- question answering


def test_question_answering_simple(build):
    _, torch_model, ours = build("XLMForQuestionAnsweringSimple")
    inputs = _inputs(torch_model.config)
    expected, got = _torch(torch_model, **inputs), _flax(ours, **inputs)
    assert _diff("qa_simple start_logits", got.start_logits, expected.start_logits) <= TOL
    assert _diff("qa_simple end_logits", got.end_logits, expected.end_logits) <= TOL
    # Out-of-range positions: 20 clamps to the length and is ignored; -100 clamps to 0 and counts (as the reference).
    for start, end in (([1, 4, 2], [3, 5, 2]), ([1, 20, -100], [3, 7, 20])):
        positions = dict(start_positions=np.array(start), end_positions=np.array(end))
        expected, got = _torch(torch_model, **inputs, **positions), _flax(ours, **inputs, **positions)
        assert _diff("qa_simple loss", got.loss, expected.loss) <= TOL


def test_question_answering_simple_needs_two_labels():
    config = XLMConfig(vocab_size=41, emb_dim=30, n_layers=1, n_heads=5, num_labels=3)
    with pytest.raises(ConfigError, match="num_labels"):
        XLMForQuestionAnsweringSimple(config, rngs=nnx.Rngs(0))


def _qa_inputs(config):
    inputs = _inputs(config, length=11)
    p_mask = 1.0 - inputs["attention_mask"].astype(np.float32)  # padding cannot be an answer
    p_mask[:, 0] = 1.0  # nor the first token
    return inputs, p_mask


@pytest.mark.parametrize("cls_index", [None, np.array([0, 3, 10])], ids=["cls_last", "cls_index"])
def test_question_answering_beam_outputs(build, cls_index):
    _, torch_model, ours = build("XLMForQuestionAnswering", start_n_top=4, end_n_top=3)
    padded, p_mask = _qa_inputs(torch_model.config)
    # Padding positions have identical (zeroed) hidden states, so without a p_mask their scores tie and the order
    # torch.topk gives ties is unspecified: that case runs on unpadded rows.
    unpadded = _inputs(torch_model.config, length=11, pad_rows=False)
    for inputs, mask in ((unpadded, None), (padded, p_mask)):
        expected = _torch(torch_model, **inputs, p_mask=mask, cls_index=cls_index)
        got = _flax(ours, **inputs, p_mask=mask, cls_index=cls_index)
        assert got.loss is None
        assert got.start_top_index.shape == (3, 4) and got.end_top_index.shape == (3, 12)
        np.testing.assert_array_equal(np.asarray(got.start_top_index), expected.start_top_index.numpy())
        np.testing.assert_array_equal(np.asarray(got.end_top_index), expected.end_top_index.numpy())
        assert _diff("qa start_top_log_probs", got.start_top_log_probs, expected.start_top_log_probs) <= TOL
        assert _diff("qa end_top_log_probs", got.end_top_log_probs, expected.end_top_log_probs) <= TOL
        assert _diff("qa cls_logits", got.cls_logits, expected.cls_logits) <= TOL
    # the mask really took effect: no masked position among the best starts
    masked = np.take_along_axis(p_mask, np.asarray(got.start_top_index), axis=1)
    assert np.all(masked == 0)


def test_question_answering_losses(build):
    _, torch_model, ours = build("XLMForQuestionAnswering", start_n_top=4, end_n_top=3)
    inputs, p_mask = _qa_inputs(torch_model.config)
    positions = dict(start_positions=np.array([1, 2, 3]), end_positions=np.array([4, 2, 5]))
    answerable = dict(cls_index=np.array([0, 3, 10]), is_impossible=np.array([0.0, 1.0, 0.0], dtype=np.float32))
    for extra in ({}, answerable, dict(p_mask=p_mask), dict(answerable, p_mask=p_mask)):
        expected = _torch(torch_model, **inputs, **positions, **extra)
        got = _flax(ours, **inputs, **positions, **extra)
        assert got.start_top_index is None and got.cls_logits is None
        assert _diff("qa loss", got.loss, expected.loss) <= TOL


@pytest.mark.parametrize("mask_dtype", [np.float32, np.float16])
def test_question_answering_p_mask_fill_value(build, mask_dtype):
    """A gold start on a masked position makes the loss about half the fill value: 1e30 for a float32 mask, 65500
    for a float16 one, as in the reference."""
    _, torch_model, ours = build("XLMForQuestionAnswering", start_n_top=4, end_n_top=3)
    inputs, p_mask = _qa_inputs(torch_model.config)
    positions = dict(start_positions=np.array([0, 2, 3]), end_positions=np.array([4, 2, 5]))  # 0 is masked
    expected = _torch(torch_model, **inputs, **positions, p_mask=p_mask.astype(mask_dtype))
    got = _flax(ours, **inputs, **positions, p_mask=p_mask.astype(mask_dtype))
    scale = abs(float(expected.loss))
    assert scale > (1e4 if mask_dtype == np.float16 else 1e28)
    relative = abs(float(got.loss) - float(expected.loss)) / scale
    FIGURES[f"qa loss, gold start masked by a {np.dtype(mask_dtype).name} p_mask (relative)"] = relative
    assert relative <= TOL


def test_question_answering_beam_longer_than_input_is_refused(build):
    _, torch_model, ours = build("XLMForQuestionAnswering", start_n_top=4, end_n_top=3)
    with pytest.raises(InputError, match="beam"):
        ours(jnp.asarray(_inputs(torch_model.config, length=3)["input_ids"]))


# ------------------------------------------------------------------------------------------------- multiple choice


def test_multiple_choice(build, caplog):
    _, torch_model, ours = build("XLMForMultipleChoice", num_labels=4)
    rows = [_inputs(torch_model.config, seed=s, length=7) for s in range(3)]  # 3 choices of 3 rows each
    inputs = {k: np.stack([r[k] for r in rows], axis=1) for k in rows[0]}  # [batch=3, choices=3, length=7]
    labels = np.array([2, 0, 1])
    expected, got = _torch(torch_model, **inputs, labels=labels), _flax(ours, **inputs, labels=labels)
    assert got.logits.shape == (3, 3)
    assert np.ptp(np.asarray(got.logits)) > 1e-3  # choices really differ
    assert _diff("mc logits", got.logits, expected.logits) <= TOL
    assert _diff("mc loss", got.loss, expected.loss) <= TOL
    with caplog.at_level(logging.WARNING, logger="xlm_flax"):
        with_lengths = _flax(ours, **inputs, lengths=np.array([1, 1, 1]))
    assert "lengths" in caplog.text
    np.testing.assert_array_equal(np.asarray(with_lengths.logits), np.asarray(got.logits))


def test_multiple_choice_needs_a_num_labels_summary():
    config = XLMConfig(vocab_size=41, emb_dim=30, n_layers=1, n_heads=5, summary_proj_to_labels=False)
    with pytest.raises(ConfigError, match="num_labels"):
        XLMForMultipleChoice(config, rngs=nnx.Rngs(0))


# ----------------------------------------------------------------------------------------- base checkpoint -> head

# Every head's own parameters, written out by hand (not derived from the conversion table under test).
HEAD_PARAMETERS = {
    XLMForSequenceClassification: ["sequence_summary.summary.kernel", "sequence_summary.summary.bias"],
    XLMForTokenClassification: ["classifier.kernel", "classifier.bias"],
    XLMForQuestionAnsweringSimple: ["qa_outputs.kernel", "qa_outputs.bias"],
    XLMForQuestionAnswering: [
        "qa_outputs.start_logits.dense.kernel",
        "qa_outputs.start_logits.dense.bias",
        "qa_outputs.end_logits.dense_0.kernel",
        "qa_outputs.end_logits.dense_0.bias",
        "qa_outputs.end_logits.LayerNorm.scale",
        "qa_outputs.end_logits.LayerNorm.bias",
        "qa_outputs.end_logits.dense_1.kernel",
        "qa_outputs.end_logits.dense_1.bias",
        "qa_outputs.answer_class.dense_0.kernel",
        "qa_outputs.answer_class.dense_0.bias",
        "qa_outputs.answer_class.dense_1.kernel",
    ],
    XLMForMultipleChoice: [
        "sequence_summary.summary.kernel",
        "sequence_summary.summary.bias",
        "logits_proj.kernel",
        "logits_proj.bias",
    ],
}


@pytest.fixture(scope="module")
def base_sources(lm_checkpoint, tmp_path_factory):
    """The LM checkpoint in transformers layout, its encoder alone (XLMModel, unprefixed names) and our native
    layout."""
    directory, torch_lm = lm_checkpoint
    bare = tmp_path_factory.mktemp("bare")
    torch_lm.transformer.save_pretrained(bare)
    native = tmp_path_factory.mktemp("native")
    XLMWithLMHeadModel.from_pretrained(directory).save_pretrained(native)
    return {"lm": directory, "bare": str(bare), "native": str(native)}, torch_lm


def _params(model) -> dict[str, np.ndarray]:
    return {".".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


# Every head from the transformers LM checkpoint; the other two layouts with the SQuAD head (the biggest).
BASE_CASES = [("lm", cls) for cls in HEAD_PARAMETERS] + [(s, XLMForQuestionAnswering) for s in ("bare", "native")]


@pytest.mark.parametrize("source,cls", BASE_CASES, ids=[f"{s}-{c.__name__}" for s, c in BASE_CASES])
def test_base_checkpoint_into_head(base_sources, source, cls, caplog):
    sources, torch_lm = base_sources
    with caplog.at_level(logging.WARNING, logger="xlm_flax"):
        model = cls.from_pretrained(sources[source])
    assert sorted(model.fresh_parameters) == sorted(HEAD_PARAMETERS[cls])
    assert "initialised fresh" in caplog.text and HEAD_PARAMETERS[cls][0] in caplog.text
    params = _params(model)
    reference = torch_lm.transformer.embeddings.weight.detach().numpy()
    np.testing.assert_array_equal(params["transformer.embeddings.embedding"], reference)
    assert np.any(params[HEAD_PARAMETERS[cls][0]] != 0)  # the fresh head is initialised, not left empty
    ids = jnp.asarray(random_inputs(torch_lm.config, length=6)[0])
    out = model(ids[:, None, :] if cls is XLMForMultipleChoice else ids)
    first = out.start_top_log_probs if cls is XLMForQuestionAnswering else getattr(out, "logits", None)
    first = out.start_logits if first is None else first
    assert np.all(np.isfinite(np.asarray(first)))


def test_head_lacking_its_tensors_is_refused_when_strict(base_sources):
    sources, _ = base_sources
    with pytest.raises(CheckpointError, match=r"missing tensors: classifier\.kernel, classifier\.bias"):
        XLMForTokenClassification.from_pretrained(sources["lm"], strict=True)


@pytest.mark.parametrize("cls", list(HEAD_PARAMETERS), ids=lambda c: c.__name__)
def test_head_parameters_have_logical_axes(cls):
    config = XLMConfig(vocab_size=41, emb_dim=30, n_layers=2, n_heads=5, num_labels=2)
    model = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        axes = logical_axes(variable)
        assert axes is not None and len(axes) == len(variable.shape), path


@pytest.fixture(scope="module", autouse=True)
def report_figures():
    """Prints the largest differences measured in this module at its end (visible with -s)."""
    yield
    for name, value in sorted(FIGURES.items()):
        print(f"parity {name}: {value:.3g}")


def test_fresh_head_with_another_num_labels(base_sources):
    sources, _ = base_sources
    config = XLMConfig.from_pretrained(sources["lm"]).replace(num_labels=7)
    model = XLMForSequenceClassification.from_pretrained(sources["lm"], config=config)
    assert model.sequence_summary.summary.kernel.shape == (30, 7)
    assert "sequence_summary.summary.kernel" in model.fresh_parameters


# ----------------------------------------------------------------------- one calling convention (XLMModel's inputs)

ALL_MODELS = [*HEAD_PARAMETERS, XLMWithLMHeadModel]
_FIRST_OUTPUT = {XLMForQuestionAnswering: "start_top_log_probs", XLMForQuestionAnsweringSimple: "start_logits"}


def _tiny(cls, **options):
    config = XLMConfig(vocab_size=41, emb_dim=30, n_layers=2, n_heads=5, num_labels=2, n_langs=3, dropout=0.3)
    return cls(config, rngs=nnx.Rngs(0), **options)


def _tiny_inputs(cls):
    ids, mask, langs = random_inputs(XLMConfig(vocab_size=41, n_langs=3), length=7)
    if cls is XLMForMultipleChoice:  # two choices
        ids, mask, langs = (np.stack([x, x[::-1]], axis=1) for x in (ids, mask, langs))
    return jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(langs)


def _first(cls, out) -> np.ndarray:
    return np.asarray(getattr(out, _FIRST_OUTPUT.get(cls, "logits")))


@pytest.mark.parametrize("cls", ALL_MODELS, ids=lambda c: c.__name__)
def test_encoder_inputs_by_position_or_by_name(cls):
    """transformers' convention: the encoder's inputs by position (`model(ids, mask, langs)`) or by name, the
    same outputs; the encoder's keywords (`output_hidden_states`, `deterministic`, `rngs`) reach it."""
    model = _tiny(cls)
    ids, mask, langs = _tiny_inputs(cls)
    by_position = model(ids, mask, langs)
    by_name = model(input_ids=ids, attention_mask=mask, langs=langs, output_hidden_states=True)
    np.testing.assert_array_equal(_first(cls, by_position), _first(cls, by_name))
    assert by_position.hidden_states is None and len(by_name.hidden_states) == 3
    without_langs = model(ids, mask)
    assert not np.array_equal(_first(cls, without_langs), _first(cls, by_position))  # langs really was used
    dropped = model(ids, mask, langs, deterministic=False, rngs=nnx.Rngs(dropout=1))
    again = model(ids, mask, langs, deterministic=False, rngs=nnx.Rngs(dropout=1))
    np.testing.assert_array_equal(_first(cls, dropped), _first(cls, again))
    assert not np.allclose(_first(cls, dropped), _first(cls, by_position))
    with pytest.raises(ValueError, match="rngs"):
        model(ids, mask, deterministic=False)


@pytest.mark.parametrize("cls", ALL_MODELS, ids=lambda c: c.__name__)
def test_unknown_arguments_are_refused_by_name(cls):
    model = _tiny(cls)
    ids, mask, _ = _tiny_inputs(cls)
    with pytest.raises(TypeError, match=rf"{cls.__name__}: .*'atention_mask'.*attention_mask"):
        model(ids, atention_mask=mask)
    with pytest.raises(TypeError, match="too many positional arguments"):
        model(ids, mask, None, None, None, None, None)
    with pytest.raises(TypeError, match="'scan_layer'"):
        _tiny(cls, scan_layer=False)


def test_head_only_arguments_are_not_passed_to_other_heads():
    model = _tiny(XLMForTokenClassification)
    ids, mask, _ = _tiny_inputs(XLMForTokenClassification)
    with pytest.raises(TypeError, match="'cls_index'"):
        model(ids, mask, cls_index=jnp.zeros((3,), jnp.int32))


@pytest.mark.parametrize("cls", ALL_MODELS, ids=lambda c: c.__name__)
def test_encoder_options_reach_the_encoder_and_the_head(cls):
    model = _tiny(cls, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, layers="unrolled", remat=True)
    encoder = model.transformer
    assert (encoder.dtype, encoder.param_dtype, encoder.layer_layout, encoder.remat) == (
        jnp.bfloat16,
        jnp.bfloat16,
        "unrolled",
        True,
    )
    dtypes = {v.dtype for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert dtypes == {jnp.dtype(jnp.bfloat16)}  # the head's parameters too
    out = model(*_tiny_inputs(cls)[:2])
    assert _first(cls, out).dtype == np.float32  # logits stay float32
