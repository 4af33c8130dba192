"""Fuzzing the parsers of everything that comes from outside, with hypothesis: each input either loads correctly or
raises one of `xlm_flax.errors` (our one error type, `XLMFlaxError`) with a message; nothing else escapes.

* safetensors headers: any bytes, any header dictionary and nearly valid headers; exactly the files that
  `safetensors.safe_open` accepts load (but for a tensor named twice, which `safe_open` reads as one and this reader
  refuses), with the same values;
* `config.json`: any JSON object over the config's fields, and any bytes; what loads round-trips through `to_dict`;
* `model.safetensors.index.json`: any JSON, and weight maps with hostile shard names: nothing outside the model
  directory is ever read;
* tokenizer files (`vocab.json`, `merges.txt`, `tokenizer_config.json`): what the checks accept, transformers'
  `XLMTokenizer` loads;
* command lines: any list of the commands' options and odd values parses or is a one-line usage error.

Examples per test (`max_examples`, sized so that the file runs in about 20 s on one CI core) are listed in the
README's "Safety" section.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

import numpy as np
import pytest

pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis (pip install hypothesis, in the test extra)")

from helpers import raw_safetensors_file as _file  # noqa: E402
from helpers import safe_open_tensors as _reference  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from xlm_flax.checkpoints.safetensors_io import SafetensorsReader  # noqa: E402
from xlm_flax.errors import CheckpointError, XLMFlaxError  # noqa: E402


def _examples(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


# Examples per test: the figures of the README's "Safety" section.
SAFETENSORS_EXAMPLES = 100
CONFIG_EXAMPLES = 150
INDEX_EXAMPLES = 100
TOKENIZER_EXAMPLES = 15
CLI_EXAMPLES = 80

_SETTINGS = _examples(SAFETENSORS_EXAMPLES)

# ------------------------------------------------------------------------------------------ safetensors: any bytes


def _outcome(path: str) -> dict[str, np.ndarray] | None:
    """The tensors as this reader reads them (whole and as a slice), or None when it refuses the file; anything but
    a `CheckpointError` propagates and fails the test."""
    try:
        reader = SafetensorsReader(path)
    except CheckpointError:
        return None
    arrays = {}
    for name in reader.keys():
        arrays[name] = reader.read(name)
        whole = tuple(slice(None) for _ in reader.shape(name))
        np.testing.assert_array_equal(reader.read_slice(name, whole), arrays[name])
    return arrays


def _agree(path: str) -> None:
    ours, reference = _outcome(path), _reference(path)
    assert (ours is None) == (reference is None), (ours, reference)
    if ours is not None:
        assert ours.keys() == reference.keys()
        for name in ours:
            assert ours[name].dtype == reference[name].dtype and ours[name].shape == reference[name].shape
            np.testing.assert_array_equal(ours[name], reference[name])


@_SETTINGS
@given(header=st.binary(max_size=120), data=st.binary(max_size=40), length=st.none() | st.integers(0, 2**64 - 1))
def test_any_bytes_load_or_raise_checkpoint_error(header, data, length):
    with tempfile.TemporaryDirectory() as directory:
        _agree(_file(directory, header, data, length=length))


_DTYPE_CODES = ["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "Q9", "f32", 32, None]
_INTS = st.integers(-3, 24) | st.sampled_from([2**63, 2**64 - 1, 2**64]) | st.floats(0, 8) | st.booleans()
_ENTRY = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(_DTYPE_CODES),
        "shape": st.lists(st.integers(0, 4), max_size=3) | st.lists(_INTS, max_size=3) | _INTS,
        "data_offsets": st.lists(st.integers(0, 40), min_size=2, max_size=2) | st.lists(_INTS, max_size=3),
    },
    optional={"extra": st.integers()},
)
_METADATA = st.none() | st.dictionaries(st.text(max_size=3), st.text(max_size=3) | st.integers(), max_size=2)
_HEADERS = st.dictionaries(
    st.text(max_size=4).filter(lambda k: k != "__metadata__"), _ENTRY | st.integers(), max_size=4
)


@st.composite
def _consistent_headers(draw):
    """Headers that are mostly well formed: entries laid end to end from their shapes, then perhaps one damaged."""
    names = draw(st.lists(st.text(max_size=4).filter(lambda k: k != "__metadata__"), unique=True, max_size=4))
    header, offset = {}, 0
    for name in names:
        dtype = draw(st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL"]))
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        size = int(np.prod(shape)) * {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U8": 1, "BOOL": 1}[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if names and draw(st.booleans()):
        entry = header[draw(st.sampled_from(names))]
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        entry[field] = draw(_ENTRY)[field]
    if draw(st.booleans()):
        header["__metadata__"] = draw(_METADATA)
    return header, offset + draw(st.sampled_from([0, 0, 0, -1, 1, 4]))


@_SETTINGS
@given(header=_HEADERS, metadata=_METADATA, data=st.binary(max_size=48))
def test_any_header_loads_or_raises_checkpoint_error(header, metadata, data):
    if metadata is not None:
        header = {"__metadata__": metadata, **header}
    with tempfile.TemporaryDirectory() as directory:
        _agree(_file(directory, header, data))


@_SETTINGS
@given(drawn=_consistent_headers(), seed=st.integers(0, 2**32 - 1))
def test_nearly_valid_headers_load_or_raise_checkpoint_error(drawn, seed):
    header, data_size = drawn
    data = np.random.default_rng(seed).integers(0, 256, max(data_size, 0), dtype=np.uint8).tobytes()
    with tempfile.TemporaryDirectory() as directory:
        _agree(_file(directory, header, data))


# ----------------------------------------------------------------------------------------------------- config.json

_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-3, 70)
    | st.sampled_from([2**31, 2**63, -(2**40)])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=4)
)
_JSON = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
_CONFIG_FIELDS = [
    "vocab_size", "n_words", "emb_dim", "hidden_size", "n_layers", "n_heads", "n_langs", "use_lang_emb",
    "sinusoidal_embeddings", "causal", "gelu_activation", "max_position_embeddings", "layer_norm_eps", "dropout",
    "attention_dropout", "pad_index", "pad_token_id", "eos_index", "unk_index", "mask_index", "bos_index", "lang2id",
    "id2lang", "lang_id", "asm", "is_encoder", "init_std", "embed_init_std", "tie_word_embeddings", "num_labels",
    "id2label", "summary_type", "summary_use_proj", "summary_activation", "summary_first_dropout",
    "summary_last_dropout", "start_n_top", "end_n_top", "architectures", "model_type",
]  # fmt: skip
_SOUND_CONFIG = dict(vocab_size=41, emb_dim=30, n_layers=2, n_heads=5, max_position_embeddings=13)


@st.composite
def _configs(draw):
    """A sound tiny config with a few fields replaced by arbitrary JSON, or by values of the right kind."""
    config = dict(_SOUND_CONFIG)
    for field in draw(st.lists(st.sampled_from(_CONFIG_FIELDS), max_size=4)):
        config[field] = draw(_JSON | st.integers(0, 8) | st.sampled_from([{"en": 0}, {"0": "en"}, ["XLMModel"]]))
    return config


@_examples(CONFIG_EXAMPLES)
@given(data=_configs())
def test_any_config_loads_or_raises_config_error(data):
    from xlm_flax.config import XLMConfig
    from xlm_flax.errors import ConfigError

    try:
        config = XLMConfig.from_dict(data)
    except ConfigError as e:
        assert str(e)
        return
    # What loads is sound, and writes back a config.json that reads back the same.
    assert XLMConfig.from_dict(json.loads(config.to_json_string())) == config
    assert 0 <= config.lang_id < config.n_langs and config.emb_dim % config.n_heads == 0
    assert all(0 <= getattr(config, f) < config.vocab_size for f in ("pad_index", "eos_index", "mask_index"))


@_examples(CONFIG_EXAMPLES // 3)
@given(raw=st.binary(max_size=60) | _JSON.map(lambda v: json.dumps(v).encode()))
def test_any_config_file_loads_or_raises_config_error(tmp_path, raw):
    from xlm_flax.config import XLMConfig
    from xlm_flax.errors import ConfigError

    path = tmp_path / "config.json"
    path.write_bytes(raw)
    with contextlib.suppress(ConfigError):
        XLMConfig.from_json_file(path)


# ----------------------------------------------------------------------------------------------------- index files

_SHARDS = st.sampled_from(
    ["ok.safetensors", "../outside.safetensors", "/tmp/x.safetensors", "sub/../../outside.safetensors", "config.json",
     "", "a\\..\\..\\outside.safetensors", "C:outside.safetensors", "missing.safetensors"]
) | st.text(max_size=8)  # fmt: skip


@_examples(INDEX_EXAMPLES)
@given(index=_JSON | st.fixed_dictionaries({"weight_map": st.dictionaries(st.text(max_size=3), _SHARDS, max_size=3)}))
def test_any_index_file_loads_inside_the_directory_or_raises(tmp_path_factory, index):
    from xlm_flax.checkpoints.sources import open_weights

    root = tmp_path_factory.mktemp("index")
    model = root / "model"
    model.mkdir()
    # A valid shard inside, and one outside that must never be opened.
    os.replace(_file(str(root), {"outside": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, b"\1"),
               root / "outside.safetensors")  # fmt: skip
    os.replace(_file(str(root), {"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, b"\2"),
               model / "ok.safetensors")  # fmt: skip
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    try:
        source = open_weights(model)
    except XLMFlaxError as e:
        assert str(e)
        return
    assert source.names() == ["w"]  # only ok.safetensors, never the file outside


# ------------------------------------------------------------------------------------------------- tokenizer files

_TOKENS = st.sampled_from(["a", "b", "ab", "a</w>", "b</w>", "ab</w>", "<s>", "</s>", "<pad>", "<unk>"])


@_examples(TOKENIZER_EXAMPLES)
@given(
    vocab=st.dictionaries(_TOKENS, st.integers(0, 12), min_size=1, max_size=10).map(json.dumps)
    | st.just(json.dumps({t: i for i, t in enumerate(["<s>", "</s>", "<pad>", "<unk>", "a", "b", "ab", "a</w>", "b</w>"])}))
    | _JSON.map(json.dumps)
    | st.text(max_size=10),
    merges=st.lists(st.lists(_TOKENS, min_size=0, max_size=3).map(" ".join), max_size=4).map("\n".join)
    | st.text(max_size=10),
    config=st.none() | _JSON.map(json.dumps) | st.text(max_size=6),
)  # fmt: skip
def test_any_tokenizer_files_load_or_raise(tmp_path_factory, vocab, merges, config):
    pytest.importorskip("transformers", reason="the tokenizer is transformers' XLMTokenizer")
    from xlm_flax.tokenization import load_tokenizer

    directory = tmp_path_factory.mktemp("tokenizer")
    (directory / "vocab.json").write_text(vocab, encoding="utf-8")
    (directory / "merges.txt").write_text(merges + "\n", encoding="utf-8")
    if config is not None:
        (directory / "tokenizer_config.json").write_text(config, encoding="utf-8")
    try:
        tokenizer = load_tokenizer(directory)
    except XLMFlaxError as e:
        assert str(e)
        return
    ids = tokenizer("ab a b c", add_special_tokens=False)["input_ids"]
    assert ids and all(isinstance(i, int) and 0 <= i < len(tokenizer) for i in ids)


# --------------------------------------------------------------------------------------------------- command lines

_ARGUMENTS = st.sampled_from(
    ["convert", "export", "embed", "train", "fill-mask", "info", "--force", "--dtype", "float32", "bfloat16", "--buckets",
     "32,64", "a,b", "", "-1", "0", "--steps", "--batch-size", "--layer", "-1,-2", "--input", "--output", "x.npy",
     "--top-k", "--objective", "mlm", "--langs", "--pooling", "max", "--verify", "--", "-x", "--nope", "é"]
) | st.text(max_size=5)  # fmt: skip


@_examples(CLI_EXAMPLES)
@given(argv=st.lists(_ARGUMENTS, max_size=7))
def test_any_command_line_parses_or_is_a_usage_error(argv):
    from xlm_flax.cli.common import UsageError
    from xlm_flax.cli.main import build_parser

    if any(a.startswith("-") and "--help".startswith(a) and len(a) > 2 for a in argv) or "-h" in argv:
        return  # --help prints and exits 0: not a parse outcome
    try:
        build_parser().parse_args(argv)
    except UsageError as e:
        message = str(e)
        assert message and "\n" not in message
