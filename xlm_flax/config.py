"""XLM model configuration: the fields that decide the forward pass, read from and written to `config.json`.

`XLMConfig` is a frozen, keyword-only dataclass. It reads any transformers XLM `config.json` (old hub files with
`n_words`/`pad_index` as well as transformers v5 files with `vocab_size`/`pad_token_id`), keeps every field that
changes what the model computes, and writes a `config.json` that transformers reads back. Fields it does not model
are kept verbatim in `extra` so that a round trip loses nothing. Compute dtype and sharding are not part of the
config: they are passed to the model separately.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any

from xlm_flax.errors import ConfigError

CONFIG_NAME = "config.json"

# Old XLM config files name some fields differently; transformers maps these names onto its own.
_ALIASES = {
    "n_words": "vocab_size",
    "pad_token_id": "pad_index",
    "bos_token_id": "bos_index",
    "eos_token_id": "eos_index",
    "hidden_size": "emb_dim",
    "num_attention_heads": "n_heads",
    "num_hidden_layers": "n_layers",
}

# Head fields (sequence summary, SQuAD beam sizes, labels) that transformers' head models read from the config.
_HEAD_FIELDS = (
    "summary_type",
    "summary_use_proj",
    "summary_activation",
    "summary_proj_to_labels",
    "summary_first_dropout",
    "summary_last_dropout",
    "start_n_top",
    "end_n_top",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class XLMConfig:
    """Hyper-parameters of an XLM encoder and its heads, mirroring transformers' `XLMConfig`.

    Attributes:
        vocab_size: Number of BPE tokens (`n_words` in old config files).
        emb_dim: Hidden size; the feed-forward inner size is `4 * emb_dim`.
        n_layers: Number of transformer blocks.
        n_heads: Attention heads; must divide `emb_dim`.
        n_langs: Number of languages the model was trained on.
        use_lang_emb: Whether language embeddings exist (only when `n_langs > 1`).
        sinusoidal_embeddings: Whether position embeddings were initialised with a fixed sinusoid table.
        causal: Whether attention is triangular (CLM models).
        gelu_activation: Exact (erf) GELU when true, ReLU otherwise.
        max_position_embeddings: Number of rows of the position table: the longest input.
        layer_norm_eps: Epsilon of every LayerNorm.
        dropout: Dropout after the embeddings, attention output and feed-forward output.
        attention_dropout: Dropout on attention weights.
        pad_index, eos_index, unk_index, mask_index, bos_index: Special token ids.
        lang2id: Language code to language id; `id2lang` is its inverse.
        lang_id: Default language id, used when a multilingual model gets no language.
        asm: Adaptive softmax prediction layer (refused: not supported by this port).
        is_encoder: Encoder (true) or decoder (refused: transformers only runs XLM as an encoder).
        init_std: Standard deviation of dense-layer initialisation.
        embed_init_std: Standard deviation of embedding initialisation.
        tie_word_embeddings: Whether the LM head reuses the word-embedding matrix.
        num_labels: Output classes of the classification heads.
        summary_type, summary_use_proj, summary_activation, summary_proj_to_labels, summary_first_dropout,
        summary_last_dropout: The sequence-summary block of the classification and multiple-choice heads.
        start_n_top, end_n_top: Beam sizes of the SQuAD head at inference.
        output_hidden_states, output_attentions: What the models return when a call does not say (transformers
            uses these `config.json` fields as the call defaults too).
        architectures: transformers class names recorded in `config.json`.
        extra: Every other `config.json` field, kept only to be written back.
    """

    vocab_size: int = 30145
    emb_dim: int = 2048
    n_layers: int = 12
    n_heads: int = 16
    n_langs: int = 1
    use_lang_emb: bool = True
    sinusoidal_embeddings: bool = False
    causal: bool = False
    gelu_activation: bool = True
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1
    attention_dropout: float = 0.1
    pad_index: int = 2
    eos_index: int = 1
    unk_index: int = 3
    mask_index: int = 5
    bos_index: int = 0
    lang2id: Mapping[str, int] = dataclasses.field(default_factory=dict)
    lang_id: int = 0
    asm: bool = False
    is_encoder: bool = True
    init_std: float = 0.02
    embed_init_std: float = 2048**-0.5
    tie_word_embeddings: bool = True
    num_labels: int = 2
    summary_type: str = "first"
    summary_use_proj: bool = True
    summary_activation: str | None = None
    summary_proj_to_labels: bool = True
    summary_first_dropout: float = 0.1
    summary_last_dropout: float = 0.0
    start_n_top: int = 5
    end_n_top: int = 5
    output_hidden_states: bool = False
    output_attentions: bool = False
    architectures: tuple[str, ...] = ()
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self._check_types()
        object.__setattr__(self, "lang2id", {str(k): int(v) for k, v in dict(self.lang2id).items()})
        object.__setattr__(self, "architectures", tuple(self.architectures or ()))
        object.__setattr__(self, "extra", dict(self.extra))
        for field in _FLOAT_FIELDS:
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, float(value))
        for field in _BOOL_FIELDS:
            object.__setattr__(self, field, bool(getattr(self, field)))
        self._validate()

    def __hash__(self) -> int:
        # Modules hold the config as a static attribute, and jit caches on it, so it must be hashable even though
        # it carries dictionaries.
        return hash(json.dumps(self.to_dict(), sort_keys=True, default=str))

    # ----------------------------------------------------------------------------------------------- derived values

    @property
    def hidden_dim(self) -> int:
        """Feed-forward inner size (`4 * emb_dim`, as in the reference)."""
        return 4 * self.emb_dim

    @property
    def head_dim(self) -> int:
        """Size of one attention head."""
        return self.emb_dim // self.n_heads

    @property
    def has_lang_embeddings(self) -> bool:
        """Whether the model has a language-embedding table (`n_langs > 1 and use_lang_emb`)."""
        return self.n_langs > 1 and self.use_lang_emb

    @property
    def id2lang(self) -> dict[int, str]:
        """Language id to language code, the inverse of `lang2id`."""
        return {v: k for k, v in self.lang2id.items()}

    def replace(self, **changes: Any) -> XLMConfig:
        """Returns a copy with `changes` applied (and validated).

        Args:
            **changes: Field name -> new value.
        """
        return dataclasses.replace(self, **changes)

    # --------------------------------------------------------------------------------------------------- validation

    def _check_types(self) -> None:
        """Refuses a field of the wrong JSON type, naming it, before anything converts or compares it."""

        def refuse(field: str, expected: str) -> None:
            value = getattr(self, field)
            raise ConfigError(
                f"config field {field}={_show(value)} is {_json_type(value)}; it must be {expected}: fix config.json"
            )

        for field in _INT_FIELDS:
            value = getattr(self, field)
            if not _is_int(value) or abs(value) > _MAX_INT:
                refuse(field, f"an integer of at most {_MAX_INT} (token ids are int32)")
        for field in _BOOL_FIELDS:
            value = getattr(self, field)
            if not isinstance(value, bool) and not (_is_int(value) and value in (0, 1)):
                refuse(field, "true or false")
        for field in _FLOAT_FIELDS:
            value = getattr(self, field)
            if not (_is_number(value) and math.isfinite(value)) and not (field in _OPTIONAL and value is None):
                refuse(field, "a finite number")
        for field in ("summary_type", "summary_activation"):
            value = getattr(self, field)
            if not isinstance(value, str) and not (field in _OPTIONAL and value is None):
                refuse(field, "a string")
        if not isinstance(self.lang2id, Mapping) or not all(
            isinstance(k, str) and _is_int(v) for k, v in self.lang2id.items()
        ):
            refuse("lang2id", 'an object of language codes to integer ids, e.g. {"en": 0, "fr": 1}')
        if self.architectures is not None and (
            isinstance(self.architectures, str)
            or not isinstance(self.architectures, list | tuple)
            or not all(isinstance(a, str) for a in self.architectures)
        ):
            refuse("architectures", 'a list of class names, e.g. ["XLMWithLMHeadModel"]')
        if not isinstance(self.extra, Mapping):
            refuse("extra", "a mapping")

    def _validate(self) -> None:
        def refuse(field: str, why: str) -> None:
            raise ConfigError(f"config field {field}={_show(getattr(self, field))}: {why}")

        for field in ("vocab_size", "emb_dim", "n_layers", "n_heads", "n_langs", "max_position_embeddings"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                refuse(field, "must be a positive integer")
        if self.asm:
            refuse("asm", "the adaptive-softmax prediction layer is not supported; only asm=false models can be run")
        if not self.is_encoder:
            refuse("is_encoder", "XLM runs only as an encoder (transformers refuses decoders too)")
        if self.emb_dim % self.n_heads:
            refuse("emb_dim", f"must be divisible by n_heads={self.n_heads} to split into attention heads")
        for field in ("pad_index", "eos_index", "unk_index", "mask_index", "bos_index"):
            value = getattr(self, field)
            if not 0 <= value < self.vocab_size:
                refuse(field, f"must be a token id in [0, vocab_size={self.vocab_size})")
        for field in ("num_labels",):
            if getattr(self, field) < 1:
                refuse(field, "must be a positive integer")
        for field in ("start_n_top", "end_n_top"):
            if getattr(self, field) < 1:
                refuse(field, "must be a positive beam size")
        for field in ("dropout", "attention_dropout", "summary_first_dropout", "summary_last_dropout"):
            value = getattr(self, field)
            if value is not None and not 0.0 <= value < 1.0:
                refuse(field, "must be a dropout rate in [0, 1)")
        if not self.layer_norm_eps > 0:
            refuse("layer_norm_eps", "must be positive (LayerNorm divides by sqrt(variance + eps))")
        for field in ("init_std", "embed_init_std"):
            if getattr(self, field) < 0:
                refuse(field, "must be a non-negative standard deviation")
        if not 0 <= self.lang_id < self.n_langs:
            # A default language outside the table would index past the language embeddings: NaN vectors.
            refuse("lang_id", f"must be a language id in [0, n_langs={self.n_langs})")
        bad_langs = {k: v for k, v in self.lang2id.items() if not 0 <= v < self.n_langs}
        if bad_langs:
            raise ConfigError(
                f"config field lang2id={bad_langs!r}: language ids must be in [0, n_langs={self.n_langs})"
            )
        if self.summary_type == "attn":
            refuse("summary_type", "'attn' summaries are not implemented (transformers refuses them too)")
        if self.summary_type not in ("first", "last", "mean", "cls_index"):
            refuse("summary_type", "must be one of 'first', 'last', 'mean', 'cls_index'")

    # ------------------------------------------------------------------------------------------------- config.json

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> XLMConfig:
        """Builds a config from the contents of a transformers XLM `config.json`.

        Args:
            data: The parsed JSON object. Old names (`n_words`, `pad_token_id`, ...) are accepted.

        Raises:
            ConfigError: if the file is not an XLM config or describes a model this port cannot run.
        """
        data = dict(data)
        model_type = data.get("model_type", "xlm")
        if model_type != "xlm":
            raise ConfigError(f"config field model_type={model_type!r}: expected 'xlm'")
        for alias, name in _ALIASES.items():
            if alias in data:
                value = data.pop(alias)
                # The canonical name wins when both are present (transformers resolves them the same way).
                data.setdefault(name, value)
        eos = data.get("eos_index")
        if isinstance(eos, list):  # some hub files give a list of end-of-sentence ids; the first is the one used
            if not eos:
                raise ConfigError("config field eos_index=[]: give the end-of-sentence token id, e.g. 1")
            data["eos_index"] = eos[0]
        lang2id = data.pop("lang2id", None)
        id2lang = data.pop("id2lang", None)
        if id2lang is not None:
            id2lang = _language_table(id2lang)
        if lang2id is not None and not isinstance(lang2id, dict):
            raise ConfigError(
                f"config field lang2id={_show(lang2id)} is {_json_type(lang2id)}; it must be an object of language "
                'codes to integer ids, e.g. {"en": 0, "fr": 1}: fix config.json'
            )
        if lang2id is None and id2lang:
            lang2id = {lang: i for i, lang in id2lang.items()}
        elif lang2id and id2lang:
            inverse = {lang: i for i, lang in id2lang.items()}
            if inverse != lang2id:
                raise ConfigError("config fields lang2id and id2lang disagree; fix one so that each inverts the other")
        id2label = data.get("id2label")
        if id2label is not None and not isinstance(id2label, dict):
            raise ConfigError(
                f"config field id2label={_show(id2label)} is {_json_type(id2label)}; it must be an object of class ids "
                'to label names, e.g. {"0": "negative", "1": "positive"}: fix config.json'
            )
        if "num_labels" not in data and id2label:
            data["num_labels"] = len(id2label)
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "lang2id"}
        kwargs: dict[str, Any] = {k: data.pop(k) for k in list(data) if k in known}
        for key in ("model_type",):
            data.pop(key, None)
        if kwargs.get("embed_init_std") is None:
            emb_dim = kwargs.get("emb_dim", cls.emb_dim)
            kwargs["embed_init_std"] = float(emb_dim) ** -0.5 if _is_int(emb_dim) and emb_dim > 0 else 0.0
        if kwargs.get("summary_last_dropout") is None:
            kwargs.pop("summary_last_dropout", None)
        return cls(lang2id=lang2id or {}, extra=data, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Returns the `config.json` object that transformers' `XLMConfig` reads back."""
        out: dict[str, Any] = dict(self.extra)
        for field in dataclasses.fields(self):
            if field.name in ("extra", "lang2id", "architectures", "summary_last_dropout"):
                continue
            out[field.name] = getattr(self, field.name)
        if self.summary_last_dropout:
            out["summary_last_dropout"] = self.summary_last_dropout
        # transformers stores the special ids under its own names; write both so old readers work too.
        out["pad_token_id"] = self.pad_index
        out["bos_token_id"] = self.bos_index
        out["eos_token_id"] = self.eos_index
        out["n_words"] = self.vocab_size
        out["lang2id"] = dict(sorted(self.lang2id.items(), key=lambda kv: kv[1])) if self.lang2id else None
        out["id2lang"] = {str(i): lang for i, lang in sorted(self.id2lang.items())} if self.lang2id else None
        if self.architectures:
            out["architectures"] = list(self.architectures)
        out["model_type"] = "xlm"
        return out

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> XLMConfig:
        """Reads a `config.json` file.

        Args:
            path: The `config.json` file.

        Raises:
            ConfigError: if the file is not valid JSON or not a runnable XLM config.
        """
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"{path} is not UTF-8 text (byte {e.start}); re-download or re-create the config file"
            ) from e
        except (json.JSONDecodeError, RecursionError) as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); re-download or re-create the config file") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path} does not hold a JSON object; it is not a model config")
        return cls.from_dict(data)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, **hub: Any) -> XLMConfig:
        """Reads the config of a model directory, a `config.json` path, or a hub id.

        Args:
            path_or_hub_id: A local directory holding `config.json`, the path of such a file, or a Hugging Face hub
                id such as `FacebookAI/xlm-mlm-en-2048` (downloaded, or taken from the local hub cache).
            **hub: The hub's arguments: `revision`, `token`, `cache_dir`, `local_files_only`, `subfolder`,
                `force_download` (see `xlm_flax.checkpoints.hub.HubOptions`).

        Raises:
            ConfigError: if the config is missing, unreadable or describes a model this port cannot run.
        """
        if os.path.isfile(path_or_hub_id):
            return cls.from_json_file(path_or_hub_id)
        # The config layer knows nothing of checkpoints until asked.
        from xlm_flax.checkpoints.hub import hub_options, resolve_file

        return cls.from_json_file(resolve_file(path_or_hub_id, CONFIG_NAME, hub=hub_options(hub)))

    def to_json_string(self) -> str:
        """Returns the `config.json` text (sorted keys, two-space indent)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def preset(cls, name: str) -> XLMConfig:
        """Returns the config of one of the ten public XLM checkpoints, e.g. `"xlm-mlm-en-2048"`.

        The `FacebookAI/` prefix is optional. Used to build full-size models (random or abstract) offline.

        Args:
            name: Checkpoint name, with or without the `FacebookAI/` prefix.
        """
        from xlm_flax.presets import PRESETS  # local import: presets import this module

        key = name.split("/")[-1]
        if key not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
        return cls.from_dict(PRESETS[key])


_INT_FIELDS = (
    "vocab_size",
    "emb_dim",
    "n_layers",
    "n_heads",
    "n_langs",
    "max_position_embeddings",
    "pad_index",
    "eos_index",
    "unk_index",
    "mask_index",
    "bos_index",
    "lang_id",
    "num_labels",
    "start_n_top",
    "end_n_top",
)


_BOOL_FIELDS = (
    "use_lang_emb",
    "sinusoidal_embeddings",
    "causal",
    "gelu_activation",
    "asm",
    "is_encoder",
    "tie_word_embeddings",
    "summary_use_proj",
    "summary_proj_to_labels",
)


_FLOAT_FIELDS = (
    "layer_norm_eps",
    "dropout",
    "attention_dropout",
    "init_std",
    "embed_init_std",
    "summary_first_dropout",
    "summary_last_dropout",
)


# Fields that transformers writes as `null` in some files.
_OPTIONAL = ("summary_activation", "summary_first_dropout", "summary_last_dropout")


def _is_int(value: Any) -> bool:
    # JSON `true` parses to a bool, which is an int to Python but not an integer in a config.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_MAX_INT = 2**31 - 1


def _json_type(value: Any) -> str:
    """The JSON name of `value`'s type with its article, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def _show(value: Any, width: int = 60) -> str:
    """`repr(value)`, shortened: a hostile config may hold a huge value."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _language_table(id2lang: Any) -> dict[int, str]:
    """`id2lang` (`{"0": "en", ...}`) with integer ids, or a ConfigError naming the field."""
    error = ConfigError(
        f"config field id2lang={_show(id2lang)}: it must be an object of integer ids to language codes, e.g. "
        '{"0": "en", "1": "fr"}: fix config.json'
    )
    if not isinstance(id2lang, dict):
        raise error
    table = {}
    for key, lang in id2lang.items():
        try:
            table[int(key)] = lang
        except (TypeError, ValueError):
            raise error from None
        if not isinstance(lang, str) or isinstance(key, bool):
            raise error
    return table


__all__ = ["CONFIG_NAME", "XLMConfig"]
