"""Original facebookresearch/XLM `.pth` checkpoints: a file in the original layout, built here from a seeded
transformers model, converts to a model equal to it; its vocabulary and BPE codes give a working XLMTokenizer; a
pickle that would run code is refused and runs nothing."""

from __future__ import annotations

import argparse
import os
import pickle

import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from helpers import TINY_LANGS, TORCH_REASON, build_reference_checkpoint, random_inputs

from xlm_flax import XLMConfig, XLMWithLMHeadModel
from xlm_flax.checkpoints.original import read_original_checkpoint
from xlm_flax.cli.main import main
from xlm_flax.errors import CheckpointError
from xlm_flax.tokenization import encode_text, load_tokenizer

# Original .pth files are torch pickles: reading them needs torch.
torch = pytest.importorskip("torch", reason=TORCH_REASON)

WORDS = ["hello", "wor@@", "ld", "h@@", "e@@", "l@@", "o"] + [f"w{i}" for i in range(20)]  # 27 + 14 specials = 41
CODES = "h e 50\nl l 40\nhe ll 30\nhell o</w> 20\nw o 10\nwo r 9\nl d</w> 8\n"


def _id2word() -> dict[int, str]:
    specials = ["<s>", "</s>", "<pad>", "<unk>"] + [f"<special{i}>" for i in range(10)]
    return dict(enumerate(specials + WORDS))


def _original_file(path, torch_model, *, prefix: str = "", namespace: bool = False, **param_changes) -> str:
    """Writes `torch_model` as the original trainer would: module names without `transformer.`, tied prediction
    weight stored, vocabulary dicts, and `params` with a tensor and a NumPy array in it, as real files have."""
    config = torch_model.config
    model = {}
    for name, tensor in torch_model.state_dict().items():
        if name.endswith("position_ids"):
            continue
        model[prefix + name.removeprefix("transformer.")] = tensor.clone()
    model[prefix + "pred_layer.proj.weight"] = model[prefix + "embeddings.weight"]  # shared, as share_inout_emb does
    id2word = _id2word()
    params = dict(
        emb_dim=config.emb_dim,
        n_layers=config.n_layers,
        n_heads=config.n_heads,
        n_langs=config.n_langs,
        n_words=config.vocab_size,
        use_lang_emb=True,
        sinusoidal_embeddings=False,
        gelu_activation=True,
        share_inout_emb=True,
        asm=False,
        dropout=0.1,
        attention_dropout=0.1,
        lang2id=dict(TINY_LANGS),
        id2lang={v: k for k, v in TINY_LANGS.items()},
        langs=list(TINY_LANGS),
        mlm_steps=[("en", None), ("fr", None)],
        bos_index=0,
        eos_index=1,
        pad_index=2,
        unk_index=3,
        mask_index=5,
        pred_probs=torch.FloatTensor([0.8, 0.1, 0.1]),
        mask_scores=np.maximum(np.arange(len(id2word)), 1) ** -0.5,
        sample_alpha=np.float64(0.0),
    )
    params.update(param_changes)
    data = {
        "model": model,
        "dico_id2word": id2word,
        "dico_word2id": {w: i for i, w in id2word.items()},
        "dico_counts": {w: 100 - i for i, w in id2word.items()},
        "params": argparse.Namespace(**params) if namespace else params,
    }
    torch.save(data, path)
    return str(path)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    _, torch_model = build_reference_checkpoint(tmp_path_factory.mktemp("ref"), n_langs=3)
    codes = tmp_path_factory.mktemp("codes") / "codes"
    codes.write_text(CODES)
    return torch_model, str(codes)


@pytest.mark.parametrize("layout", ["dict_params", "module_prefix_namespace"])
def test_original_checkpoint_converts_to_the_same_model(reference, tmp_path, layout):
    torch_model, codes = reference
    variant = dict(prefix="module.", namespace=True) if layout != "dict_params" else {}
    source = _original_file(tmp_path / "mlm.pth", torch_model, **variant)
    destination = tmp_path / "converted"
    assert main(["convert", source, str(destination), "--codes", codes]) == 0

    config = XLMConfig.from_pretrained(destination)
    assert (config.emb_dim, config.n_layers, config.n_heads, config.n_langs) == (30, 3, 5, 3)
    assert config.lang2id == TINY_LANGS and config.architectures == ("XLMWithLMHeadModel",)
    ours = XLMWithLMHeadModel.from_pretrained(destination)
    ids, mask, langs = random_inputs(torch_model.config)
    with torch.no_grad():
        expected = torch_model(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            langs=torch.from_numpy(langs),
            output_hidden_states=True,
        )
    got = ours(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(langs), output_hidden_states=True)
    assert float(np.max(np.abs(np.asarray(got.logits) - expected.logits.numpy()))) <= 1e-5
    for a, b in zip(got.hidden_states, expected.hidden_states):
        assert float(np.max(np.abs(np.asarray(a) - b.numpy()))) <= 1e-5


def test_tokenizer_from_vocabulary_and_codes(reference, tmp_path):
    torch_model, codes = reference
    source = _original_file(tmp_path / "mlm.pth", torch_model)
    destination = tmp_path / "converted"
    assert main(["convert", source, str(destination), "--codes", codes]) == 0
    tokenizer = transformers.XLMTokenizer.from_pretrained(destination)
    id2word = _id2word()
    expected = [1, WORDS.index("hello") + 14, WORDS.index("wor@@") + 14, WORDS.index("ld") + 14, 1]
    # Framed as the original code frames every sentence: `</s> ... </s>` ("we use <EOS> for <BOS> everywhere").
    assert [id2word[i] for i in expected] == ["</s>", "hello", "wor@@", "ld", "</s>"]
    assert tokenizer("Hello World")["input_ids"] == expected  # lowercased, as the default tokenizer config says
    assert tokenizer.lang2id == TINY_LANGS
    # Everything of ours that adds special tokens goes through the tokenizer's framing (fill-mask, embed, generate)
    # or its encode (training data): the same ids.
    ours = load_tokenizer(destination)
    assert encode_text(ours, "Hello World", "en") == expected
    assert ours.encode("Hello World") == expected


@pytest.fixture(scope="module")
def causal_reference(tmp_path_factory):
    _, torch_model = build_reference_checkpoint(tmp_path_factory.mktemp("clm"), n_langs=3, causal=True)
    return torch_model


@pytest.mark.parametrize("override", [None, "--causal", "--no-causal"])
def test_clm_only_checkpoint_converts_causal(causal_reference, tmp_path, capsys, override):
    # The original trainer records the objective only in clm_steps / mlm_steps; params never hold `causal`.
    source = _original_file(tmp_path / "clm.pth", causal_reference, mlm_steps=[], clm_steps=[("en", None)])
    destination = tmp_path / "converted"
    assert main(["convert", source, str(destination), *([override] if override else [])]) == 0
    err = capsys.readouterr().err
    causal = override != "--no-causal"
    config = XLMConfig.from_pretrained(destination)
    assert config.causal is causal
    assert ("model is causal (CLM)" if causal else "model is not causal (MLM)") in err
    assert ("as given" in err) == (override is not None)
    if causal:  # the converted model is transformers' causal model
        ours = XLMWithLMHeadModel.from_pretrained(destination)
        ids, _, langs = random_inputs(causal_reference.config)
        with torch.no_grad():
            expected = causal_reference(input_ids=torch.from_numpy(ids), langs=torch.from_numpy(langs)).logits
        got = ours(jnp.asarray(ids), langs=jnp.asarray(langs)).logits
        assert float(np.max(np.abs(np.asarray(got) - expected.numpy()))) <= 1e-5


def test_mlm_checkpoint_converts_not_causal(reference, tmp_path, capsys):
    torch_model, _ = reference
    source = _original_file(tmp_path / "mlm.pth", torch_model, clm_steps=[("en", None)])  # MLM and CLM steps
    assert main(["convert", source, str(tmp_path / "out")]) == 0
    assert "model is not causal (MLM) (from params" in capsys.readouterr().err
    assert XLMConfig.from_pretrained(tmp_path / "out").causal is False


def test_causal_flag_needs_an_original_checkpoint(tmp_path, capsys):
    assert main(["convert", str(tmp_path), str(tmp_path / "out"), "--no-causal"]) == 2
    assert "--causal/--no-causal apply only" in capsys.readouterr().err


def test_without_codes_writes_no_tokenizer(reference, tmp_path, capsys):
    torch_model, _ = reference
    source = _original_file(tmp_path / "mlm.pth", torch_model)
    assert main(["convert", source, str(tmp_path / "out")]) == 0
    assert "no --codes" in capsys.readouterr().err
    assert not (tmp_path / "out" / "vocab.json").exists()


def test_unsupported_model_is_refused(reference, tmp_path, capsys):
    torch_model, _ = reference
    source = _original_file(tmp_path / "asm.pth", torch_model, asm=True)
    assert main(["convert", source, str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "asm" in err
    assert not (tmp_path / "out").exists()


class _Payload:
    """Unpickling this calls os.system, which would create the marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch_save", "raw_pickle"])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, writer, capsys):
    marker = tmp_path / "pwned"
    data = {"model": {}, "dico_id2word": {}, "params": _Payload(str(marker))}
    path = tmp_path / "evil.pth"
    if writer == "torch_save":
        torch.save(data, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=2)
    with pytest.raises(CheckpointError, match="refusing to read .*system"):
        read_original_checkpoint(path)
    assert main(["convert", str(path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing" in err
    assert not marker.exists()
    assert not (tmp_path / "out").exists()
