"""XLMConfig reads transformers' config.json (v5 and old hub style), keeps every forward-relevant field, writes it
back readably, and refuses what the port cannot run."""

from __future__ import annotations

import json

import pytest
import transformers

from xlm_flax import XLMConfig
from xlm_flax.errors import ConfigError

# Every field that changes the forward pass, with non-default values so that a dropped field shows.
FORWARD = dict(
    vocab_size=41,
    emb_dim=30,
    n_layers=3,
    n_heads=5,
    n_langs=3,
    use_lang_emb=False,
    sinusoidal_embeddings=True,
    causal=True,
    gelu_activation=False,
    max_position_embeddings=13,
    layer_norm_eps=1e-6,
    pad_index=4,
    eos_index=7,
    unk_index=8,
    mask_index=9,
    bos_index=6,
    init_std=0.03,
    embed_init_std=0.1,
)
LANG2ID = {"en": 0, "fr": 1, "de": 2}
# The hub file of FacebookAI/xlm-mlm-ende-1024 as it is written (old field names, no transformers_version).
OLD_STYLE = {
    "architectures": ["XLMWithLMHeadModel"],
    "asm": False,
    "attention_dropout": 0.1,
    "bos_index": 0,
    "causal": False,
    "dropout": 0.1,
    "emb_dim": 1024,
    "embed_init_std": 0.02209708691207961,
    "eos_index": 1,
    "gelu_activation": True,
    "id2lang": {"0": "de", "1": "en"},
    "init_std": 0.02,
    "is_encoder": True,
    "lang2id": {"de": 0, "en": 1},
    "layer_norm_eps": 1e-12,
    "mask_index": 5,
    "max_position_embeddings": 512,
    "n_heads": 8,
    "n_langs": 2,
    "n_layers": 6,
    "n_words": 64699,
    "pad_index": 2,
    "sinusoidal_embeddings": False,
    "unk_index": 3,
    "use_lang_emb": True,
}


def _assert_same_forward_fields(ours: XLMConfig, theirs: transformers.XLMConfig) -> None:
    for field in FORWARD:
        assert getattr(ours, field) == getattr(theirs, field), field
    assert ours.asm == theirs.asm and ours.is_encoder == theirs.is_encoder
    assert ours.lang2id == {k: int(v) for k, v in theirs.lang2id.items()}
    assert {str(k): v for k, v in ours.id2lang.items()} == {str(k): v for k, v in theirs.id2lang.items()}


@pytest.fixture
def v5_directory(tmp_path):
    config = transformers.XLMConfig(**FORWARD, lang2id=LANG2ID, id2lang={v: k for k, v in LANG2ID.items()})
    config.save_pretrained(tmp_path)
    return tmp_path


def test_reads_transformers_v5_config(v5_directory):
    data = json.loads((v5_directory / "config.json").read_text())
    assert "transformers_version" in data  # really written by transformers
    ours = XLMConfig.from_pretrained(v5_directory)
    _assert_same_forward_fields(ours, transformers.XLMConfig.from_pretrained(v5_directory))
    # the literal values, not only agreement with transformers
    for field, value in FORWARD.items():
        assert getattr(ours, field) == value, field
    assert ours.lang2id == LANG2ID
    assert ours.id2lang == {0: "en", 1: "fr", 2: "de"}
    assert ours.has_lang_embeddings is False  # use_lang_emb=False wins over n_langs=3
    assert ours.head_dim == 6 and ours.hidden_dim == 120


def test_reads_old_style_hub_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(OLD_STYLE))
    ours = XLMConfig.from_pretrained(tmp_path)
    theirs = transformers.XLMConfig.from_pretrained(tmp_path)
    assert ours.vocab_size == theirs.vocab_size == 64699  # n_words
    assert (ours.pad_index, ours.bos_index, ours.eos_index) == (2, 0, 1)
    assert (ours.pad_index, ours.bos_index, ours.eos_index) == (
        theirs.pad_token_id,
        theirs.bos_token_id,
        theirs.eos_token_id,
    )
    assert (ours.unk_index, ours.mask_index) == (theirs.unk_index, theirs.mask_index) == (3, 5)
    assert (ours.emb_dim, ours.n_layers, ours.n_heads, ours.n_langs) == (1024, 6, 8, 2)
    assert ours.lang2id == {"de": 0, "en": 1} and ours.id2lang == {0: "de", 1: "en"}
    assert ours.embed_init_std == OLD_STYLE["embed_init_std"]
    assert ours.architectures == ("XLMWithLMHeadModel",)


def test_reads_a_config_file_path_and_matches_preset(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(OLD_STYLE))
    from_file = XLMConfig.from_pretrained(tmp_path / "config.json")
    preset = XLMConfig.preset("FacebookAI/xlm-mlm-ende-1024")
    for field in (*FORWARD, "lang2id", "n_langs"):
        assert getattr(from_file, field) == getattr(preset, field), field


@pytest.mark.parametrize("source", ["v5", "old"])
def test_round_trip_through_transformers(source, v5_directory, tmp_path):
    if source == "old":
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "config.json").write_text(json.dumps(OLD_STYLE))
        original_dir = tmp_path / "src"
    else:
        original_dir = v5_directory
    ours = XLMConfig.from_pretrained(original_dir)
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text(ours.to_json_string())
    reread_by_transformers = transformers.XLMConfig.from_pretrained(out)
    _assert_same_forward_fields(ours, reread_by_transformers)
    _assert_same_forward_fields(ours, transformers.XLMConfig.from_pretrained(original_dir))
    again = XLMConfig.from_pretrained(out)
    assert again == ours
    assert again.to_dict() == ours.to_dict()
    # and transformers' own re-save reads back to the same config
    resaved = tmp_path / "resaved"
    reread_by_transformers.save_pretrained(resaved)
    assert XLMConfig.from_pretrained(resaved).replace(extra={}) == ours.replace(extra={})


def test_unknown_fields_survive_round_trip():
    data = dict(OLD_STYLE, some_future_field={"a": 1})
    assert XLMConfig.from_dict(data).to_dict()["some_future_field"] == {"a": 1}


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(asm=True), "asm"),
        (dict(is_encoder=False), "is_encoder"),
        (dict(emb_dim=30, n_heads=7), "emb_dim"),
    ],
)
def test_refuses_what_the_port_cannot_run(changes, field, tmp_path):
    data = dict(OLD_STYLE, **changes)
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=rf"\b{field}\b") as info:
        XLMConfig.from_pretrained(tmp_path)
    assert "config field" in str(info.value)
    with pytest.raises(ConfigError, match=rf"\b{field}\b"):
        XLMConfig(**dict(FORWARD, **changes))


def test_refuses_other_bad_configs(tmp_path):
    with pytest.raises(ConfigError, match="model_type"):
        XLMConfig.from_dict({"model_type": "bert"})
    with pytest.raises(ConfigError, match="lang2id"):
        XLMConfig.from_dict(dict(OLD_STYLE, lang2id={"de": 0, "en": 5}, id2lang=None))
    with pytest.raises(ConfigError, match="lang2id and id2lang"):
        XLMConfig.from_dict(dict(OLD_STYLE, id2lang={"0": "en", "1": "de"}))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        XLMConfig.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="unknown preset"):
        XLMConfig.preset("xlm-mlm-xx-9")


def test_config_is_frozen_and_hashable():
    config = XLMConfig(**FORWARD)
    with pytest.raises(AttributeError):
        config.emb_dim = 10
    assert hash(config) == hash(XLMConfig(**FORWARD))
    assert config.replace(causal=False) != config
