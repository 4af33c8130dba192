"""Export to transformers: every model class's `save_pretrained(format="pytorch")` and `xlm-flax export` load in
transformers with no missing or unexpected keys, equal the Flax model, and round-trip PyTorch -> Flax -> PyTorch
bit for bit in float32."""

from __future__ import annotations

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from helpers import TORCH_REASON, build_reference_checkpoint, random_inputs
from safetensors.numpy import load_file

from xlm_flax.checkpoints.registry import MODEL_CLASSES
from xlm_flax.cli.main import main

# Every export is loaded back by transformers' PyTorch XLM.
torch = pytest.importorskip("torch", reason=TORCH_REASON)

CASES = {
    "lm_tied": ("XLMWithLMHeadModel", {}),
    "lm_untied": ("XLMWithLMHeadModel", dict(tie_word_embeddings=False)),
    "base": ("XLMModel", {}),
    "sequence": ("XLMForSequenceClassification", dict(num_labels=3)),
    "token": ("XLMForTokenClassification", dict(num_labels=3)),
    "qa_simple": ("XLMForQuestionAnsweringSimple", {}),
    "squad": ("XLMForQuestionAnswering", {}),
    "multiple_choice": ("XLMForMultipleChoice", dict(num_labels=3)),
}
TOKENIZER = {"vocab.json": '{"<s>": 0}\n', "merges.txt": "a b 1\n"}
OUTPUT_FIELD = {
    "XLMModel": "last_hidden_state",
    "XLMForQuestionAnsweringSimple": "start_logits",
    "XLMForQuestionAnswering": "start_top_log_probs",
}


def _with_tokenizer(directory):
    for name, text in TOKENIZER.items():
        with open(os.path.join(directory, name), "w") as f:
            f.write(text)


def _assert_same_state(torch_model, directory):
    """The exported file holds exactly the tensors transformers itself saves, bit for bit."""
    exported = load_file(os.path.join(directory, "model.safetensors"))
    reference = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    saved_by_transformers = set(load_file(os.path.join(torch_model.name_or_path, "model.safetensors")))
    assert set(exported) == saved_by_transformers
    for name, array in exported.items():
        assert array.dtype == np.float32
        np.testing.assert_array_equal(array, reference[name], err_msg=name)


@pytest.mark.parametrize("case", list(CASES))
def test_save_pretrained_pytorch_loads_in_transformers(case, tmp_path):
    architecture, overrides = CASES[case]
    directory, torch_model = build_reference_checkpoint(tmp_path / "src", architecture, n_langs=3, **overrides)
    torch_model.name_or_path = directory
    _with_tokenizer(directory)
    ours = MODEL_CLASSES[architecture].from_pretrained(directory)
    out = tmp_path / "out"
    ours.save_pretrained(out, format="pytorch")
    assert {n: (out / n).read_text() for n in TOKENIZER} == TOKENIZER
    assert json.loads((out / "config.json").read_text())["architectures"] == [architecture]
    reloaded, info = getattr(transformers, architecture).from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    _assert_same_state(torch_model, out)

    ids, mask, langs = random_inputs(torch_model.config, length=9)
    inputs = dict(input_ids=ids, attention_mask=mask, langs=langs)
    if architecture == "XLMForMultipleChoice":
        inputs = {k: np.stack([v, v[::-1]], axis=1) for k, v in inputs.items()}
    if architecture == "XLMForQuestionAnswering":
        inputs["p_mask"] = (1 - mask).astype(np.float32)
    field = OUTPUT_FIELD.get(architecture, "logits")
    with torch.no_grad():
        expected = getattr(reloaded.eval()(**{k: torch.from_numpy(v) for k, v in inputs.items()}), field)
    got = getattr(ours(**{k: jnp.asarray(v) for k, v in inputs.items()}), field)
    assert float(np.max(np.abs(np.asarray(got) - expected.numpy()))) <= 1e-5


@pytest.fixture(scope="module")
def native_squad(tmp_path_factory):
    """A transformers SQuAD checkpoint (with tokenizer files) converted to our native layout by the CLI."""
    source, torch_model = build_reference_checkpoint(
        tmp_path_factory.mktemp("squad"), "XLMForQuestionAnswering", n_langs=3
    )
    torch_model.name_or_path = source
    _with_tokenizer(source)
    native = str(tmp_path_factory.mktemp("native") / "model")
    assert main(["convert", source, native]) == 0
    return source, native, torch_model


def test_cli_export_round_trip_is_exact(native_squad, tmp_path, capsys):
    source, native, torch_model = native_squad
    out = tmp_path / "pt"
    assert main(["export", native, str(out)]) == 0
    assert "XLMForQuestionAnswering" in capsys.readouterr().out
    _assert_same_state(torch_model, out)
    assert {n: (out / n).read_text() for n in TOKENIZER} == TOKENIZER
    _, info = transformers.XLMForQuestionAnswering.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_cli_export_refuses_to_overwrite_without_force(native_squad, tmp_path, capsys):
    _, native, _ = native_squad
    out = tmp_path / "pt"
    out.mkdir()
    (out / "keep").write_text("x")
    capsys.readouterr()
    assert main(["export", native, str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err
    assert (out / "keep").exists()
    assert main(["export", native, str(out), "--force"]) == 0
    assert not (out / "keep").exists() and (out / "model.safetensors").exists()


def test_cli_export_refuses_a_transformers_directory(native_squad, tmp_path, capsys):
    source, _, _ = native_squad
    assert main(["export", source, str(tmp_path / "x")]) == 2
    assert "already a transformers checkpoint" in capsys.readouterr().err


def test_export_refuses_tensors_that_do_not_fit_listing_each(native_squad, tmp_path):
    from safetensors.numpy import save_file

    from xlm_flax.checkpoints.export import export_checkpoint
    from xlm_flax.checkpoints.plan import TensorMismatchError

    _, native, _ = native_squad
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(os.path.join(native, "config.json"), bad / "config.json")
    tensors = load_file(os.path.join(native, "model.safetensors"))
    del tensors["qa_outputs.start_logits.dense.bias"]
    tensors["transformer.bogus"] = np.zeros(3, np.float32)
    tensors["transformer.ffns.lin1.bias"] = tensors["transformer.ffns.lin1.bias"][:2]  # 2 layers where 3 are wanted
    save_file(tensors, str(bad / "model.safetensors"), metadata={"format": "flax", "library": "xlm_flax"})
    with pytest.raises(TensorMismatchError) as info:
        export_checkpoint(bad, tmp_path / "out")
    message = str(info.value)
    for name in ("qa_outputs.start_logits.dense.bias", "transformer.bogus", "transformer.ffns.lin1.bias"):
        assert name in message, name
    assert info.value.missing_head == ("qa_outputs.start_logits.dense.bias",)
    assert info.value.unexpected == ("transformer.bogus",)
    assert "[2, 120]" in message and "[3, 120]" in message  # the checkpoint's shape and the one the config wants
    assert not (tmp_path / "out").exists()


def test_convert_and_export_report_the_same_way(native_squad, tmp_path, capsys):
    source, native, torch_model = native_squad
    n_parameters = sum(a.size for a in load_file(os.path.join(source, "model.safetensors")).values())
    capsys.readouterr()
    assert main(["convert", source, str(tmp_path / "native")]) == 0
    converted = capsys.readouterr().out.strip()
    assert main(["export", native, str(tmp_path / "pt")]) == 0
    exported = capsys.readouterr().out.strip()
    for line, kind, n_tensors in (
        (converted, "native", len(load_file(os.path.join(native, "model.safetensors")))),
        (exported, "transformers", len(load_file(os.path.join(source, "model.safetensors")))),
    ):
        assert line.startswith("wrote ") and f": {kind} XLMForQuestionAnswering, {n_tensors} tensors, " in line, line
        assert f"{n_parameters:,} parameters (float32), tokenizer files: vocab.json, merges.txt" in line, line
