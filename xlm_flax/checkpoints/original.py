"""Checkpoints of the original facebookresearch/XLM code (`.pth`), read safely and converted to our layout.

Such a file is a `torch.save`d dictionary: `model` (the `TransformerModel` state dict, with a `module.` prefix when it
was saved from a distributed wrapper), `dico_id2word`, `dico_word2id`, `dico_counts` (the vocabulary) and `params`
(the training options, a dict or an `argparse.Namespace`; the trainer also stores in it a tensor, `pred_probs`, and a
NumPy array, `mask_scores`). It is read with `torch.load(weights_only=True)` and only the classes those entries need
allow-listed (`ORIGINAL_SAFE_GLOBALS`); a file that asks for anything else is refused with the name of what it
asked for, and nothing in it runs.

The original module names are transformers' (which took them from this code): `embeddings`, `position_embeddings`,
`lang_embeddings`, `layer_norm_emb`, `attentions.{i}.{q,k,v,out}_lin`, `layer_norm1.{i}`, `ffns.{i}.lin{1,2}`,
`layer_norm2.{i}`, `pred_layer.proj`; only the `transformer.` prefix of transformers' head models is missing. So the
file maps onto transformers' names and from there through the one table of `xlm_flax.checkpoints.names`. The config comes from
`params`; the tokenizer's `vocab.json` from the vocabulary (a word without `@@` ends a word and gets `</w>`, a word
with `@@` continues and loses it; the 14 special tokens stay as they are), and `merges.txt` from the BPE codes file
the model was trained with (fastBPE's `left right count` lines, which `XLMTokenizer` reads as they are).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from xlm_flax.checkpoints.files import atomic_directory, check_destination
from xlm_flax.checkpoints.report import CheckpointReport
from xlm_flax.checkpoints.sources import ArraySource, torch_to_numpy
from xlm_flax.config import XLMConfig
from xlm_flax.errors import CheckpointError, ConfigError, InputError
from xlm_flax.tokens import N_SPECIAL_TOKENS, SPECIAL_INDICES

# The original code's fixed LayerNorm epsilon (its special words are `xlm_flax.tokens.SPECIAL_TOKENS`).
ORIGINAL_LAYER_NORM_EPS = 1e-12

# The token that opens every sentence in the original code ("we use <EOS> for <BOS> everywhere").
ORIGINAL_BOS_TOKEN = "</s>"


def original_safe_globals() -> list:
    """The classes an original checkpoint may need beyond tensors and plain containers: `argparse.Namespace` (for
    `params`) and what NumPy arrays and scalars unpickle with (`mask_scores`), under NumPy 1 and NumPy 2 names.
    Rebuilding these from their pickled state runs no user code."""
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # NumPy 1
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = {
        type(np.dtype(t))
        for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
        + (np.float16, np.float32, np.float64, np.complex64, np.complex128, np.str_, np.bytes_, np.object_)
    }
    allowed: list = [argparse.Namespace, np.ndarray, np.dtype, *sorted(dtype_classes, key=lambda c: c.__name__)]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(_reconstruct, f"{module}._reconstruct"), (scalar, f"{module}.scalar")]
    return allowed


@dataclasses.dataclass
class OriginalCheckpoint:
    """The parts of an original checkpoint that conversion uses.

    Attributes:
        path: The file read.
        state: Model tensors as NumPy arrays, under the original names without any `module.` prefix.
        params: The training options, as a dict.
        id2word: Token id to BPE token, in the original notation (`@@` marks a non-final piece).
    """

    path: str
    state: dict[str, np.ndarray]
    params: dict[str, Any]
    id2word: dict[int, str]


def read_original_checkpoint(path: str | os.PathLike) -> OriginalCheckpoint:
    """Reads an original facebookresearch/XLM `.pth` file without running anything it holds.

    Args:
        path: The `.pth` file.

    Raises:
        CheckpointError: the file needs a class outside `original_safe_globals()` (the message names it), is not
            a PyTorch file, or lacks `model` / `params` / the vocabulary, or holds a model this port cannot run
            (translation encoder/decoder, product-key memory layers).
    """
    path = os.fspath(path)
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(f"reading {path} needs torch: pip install 'xlm-flax[torch]'") from e
    if not os.path.isfile(path):
        raise InputError(f"{path} does not exist or is not a file")
    try:
        with torch.serialization.safe_globals(original_safe_globals()):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        asked = re.search(r"GLOBAL ([\w.]+)", str(e)) or re.search(r"got <class '([\w.]+)'>", str(e))
        what = f" it asks for {asked.group(1)}," if asked else ""
        raise CheckpointError(
            f"refusing to read {path}:{what} which is not among the classes an XLM checkpoint needs "
            "(tensors, containers, argparse.Namespace, NumPy arrays); unpickling it could run code"
        ) from e
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not an XLM checkpoint dictionary")
    if "model" not in data:
        if "encoder" in data or "decoder" in data:
            raise CheckpointError(
                f"{path} is a translation checkpoint (encoder/decoder); only pretrained XLM models ('model') "
                "can be converted"
            )
        raise CheckpointError(f"{path} has no 'model' entry: it is not an original XLM checkpoint")
    for key in ("params", "dico_id2word"):
        if key not in data:
            raise CheckpointError(f"{path} has no {key!r} entry: it is not a complete original XLM checkpoint")
    params = data["params"]
    params = vars(params) if isinstance(params, argparse.Namespace) else params
    if not isinstance(params, Mapping):
        raise CheckpointError(f"{path}: 'params' is a {type(params).__name__}, expected a dict or Namespace")
    state = {}
    for name, tensor in data["model"].items():
        if not isinstance(tensor, torch.Tensor):
            continue
        name = name.removeprefix("module.")
        if name.startswith("memories."):
            raise CheckpointError(f"{path} has product-key memory layers ({name}); they are not supported")
        state[name] = torch_to_numpy(tensor)
    id2word = {int(i): str(w) for i, w in dict(data["dico_id2word"]).items()}
    word2id = data.get("dico_word2id")
    if word2id is not None:
        wrong = [w for i, w in id2word.items() if dict(word2id).get(w) != i]
        if wrong:
            raise CheckpointError(f"{path}: dico_word2id and dico_id2word disagree (e.g. on {wrong[0]!r})")
    return OriginalCheckpoint(path=path, state=state, params=dict(params), id2word=id2word)


def _param(params: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if name in params and params[name] is not None:
            return params[name]
    return default


def original_causal(params: Mapping[str, Any]) -> bool:
    """Whether an original checkpoint is a causal (CLM) model.

    The original code never stores `causal` in `params`: causality is an argument of each forward call, and every
    CLM use passes `causal=True`. The objective is recorded only in `clm_steps` / `mlm_steps`, so a checkpoint
    trained with CLM steps and no MLM steps is causal. An explicit `causal` in `params` (some forks write it) wins.

    Args:
        params: The checkpoint's `params`.
    """
    declared = _param(params, "causal")
    if declared is not None:
        return bool(declared)
    return bool(_param(params, "clm_steps", default=())) and not _param(params, "mlm_steps", default=())


def original_config(checkpoint: OriginalCheckpoint, *, causal: bool | None = None) -> XLMConfig:
    """The `XLMConfig` of an original checkpoint, from its `params` checked against its tensor shapes.

    Args:
        checkpoint: The checkpoint read by `read_original_checkpoint`.
        causal: Whether the model is causal; None decides from `params` (`original_causal`).

    Raises:
        ConfigError: `params` lacks `n_heads`, or disagrees with the tensors, or describes a model this port cannot
            run (e.g. `asm=True`).
    """
    params, state = checkpoint.params, checkpoint.state
    if "embeddings.weight" not in state or "position_embeddings.weight" not in state:
        raise CheckpointError(f"{checkpoint.path}: the model has no embeddings; it is not an XLM TransformerModel")
    vocab_size, emb_dim = state["embeddings.weight"].shape
    layers = {int(m.group(1)) for n in state if (m := re.match(r"attentions\.(\d+)\.", n))}
    n_layers = max(layers) + 1 if layers else 0
    checks = {
        "n_words": (_param(params, "n_words"), vocab_size),
        "emb_dim": (_param(params, "emb_dim", "emb_dim_encoder"), emb_dim),
        "n_layers": (_param(params, "n_layers", "n_enc_layers"), n_layers),
    }
    for field, (declared, actual) in checks.items():
        if declared is not None and int(declared) != actual:
            raise ConfigError(
                f"params {field}={declared} but the model's tensors have {actual}; the file is inconsistent"
            )
    n_heads = _param(params, "n_heads")
    if n_heads is None:
        raise ConfigError(f"{checkpoint.path}: params has no n_heads, which the tensors cannot tell")
    lang2id = _param(params, "lang2id")
    if lang2id is None and _param(params, "id2lang"):
        lang2id = {lang: int(i) for i, lang in dict(params["id2lang"]).items()}
    n_langs = int(_param(params, "n_langs", default=len(lang2id or {}) or 1))
    if len(checkpoint.id2word) != vocab_size:
        raise CheckpointError(
            f"{checkpoint.path}: the vocabulary has {len(checkpoint.id2word)} words but the embeddings {vocab_size} rows"
        )
    specials = {k: int(_param(params, k, default=v)) for k, v in SPECIAL_INDICES.items()}
    return XLMConfig(
        vocab_size=int(vocab_size),
        emb_dim=int(emb_dim),
        n_layers=n_layers,
        n_heads=int(n_heads),
        n_langs=n_langs,
        use_lang_emb=bool(_param(params, "use_lang_emb", default=True)),
        sinusoidal_embeddings=bool(_param(params, "sinusoidal_embeddings", default=False)),
        causal=original_causal(params) if causal is None else bool(causal),
        asm=bool(_param(params, "asm", default=False)),
        gelu_activation=bool(_param(params, "gelu_activation", default=False)),  # the original option's default
        max_position_embeddings=int(state["position_embeddings.weight"].shape[0]),
        layer_norm_eps=ORIGINAL_LAYER_NORM_EPS,
        dropout=float(_param(params, "dropout", default=0.0)),
        attention_dropout=float(_param(params, "attention_dropout", default=0.0)),
        lang2id={str(k): int(v) for k, v in dict(lang2id or {}).items()},
        embed_init_std=float(emb_dim) ** -0.5,
        tie_word_embeddings=bool(_param(params, "share_inout_emb", default=True)),
        **specials,
    )


def transformers_state(checkpoint: OriginalCheckpoint, config: XLMConfig) -> tuple[str, dict[str, np.ndarray]]:
    """The architecture (`XLMWithLMHeadModel` when the file has a prediction layer, else `XLMModel`) and the tensors
    under transformers' names. A tied prediction weight must equal the word embeddings and is dropped.

    Args:
        checkpoint: The original checkpoint.
        config: Its config (`original_config`).
    """
    state = dict(checkpoint.state)
    if "pred_layer.proj.bias" not in state:
        return "XLMModel", state
    if config.tie_word_embeddings and "pred_layer.proj.weight" in state:
        if not np.array_equal(state["pred_layer.proj.weight"], state["embeddings.weight"]):
            raise CheckpointError(
                f"{checkpoint.path}: params say share_inout_emb but pred_layer.proj.weight differs from the embeddings"
            )
        del state["pred_layer.proj.weight"]
    return "XLMWithLMHeadModel", {
        (n if n.startswith("pred_layer.") else f"transformer.{n}"): a for n, a in state.items()
    }


def bpe_vocabulary(id2word: Mapping[int, str]) -> dict[str, int]:
    """`XLMTokenizer`'s `vocab.json` from the original vocabulary: `</w>` marks word ends instead of `@@` marking
    continuations; the special words keep their names.

    Args:
        id2word: The original `dico_id2word`.

    Raises:
        CheckpointError: two words map to the same token.
    """
    vocab: dict[str, int] = {}
    for i in sorted(id2word):
        word = id2word[i]
        token = word if i < N_SPECIAL_TOKENS else (word.replace("@@", "") if "@@" in word else word + "</w>")
        if token in vocab:
            raise CheckpointError(f"vocabulary words {vocab[token]} and {i} both become the token {token!r}")
        vocab[token] = i
    return vocab


def read_bpe_codes(path: str | os.PathLike) -> list[str]:
    """The merges of a fastBPE codes file (`left right count` per line), as `merges.txt` lines.

    Args:
        path: The codes file.

    Raises:
        InputError: the file is missing or a line is not `left right [count]`.
    """
    lines = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) not in (2, 3) or (len(fields) == 3 and not fields[2].isdigit()):
                    raise InputError(f"{path}:{number}: expected 'left right count', got {line.strip()!r}")
                lines.append(" ".join(fields))
    except FileNotFoundError as e:
        raise InputError(f"BPE codes file {path} does not exist") from e
    if not lines:
        raise InputError(f"BPE codes file {path} holds no merges")
    return lines


def write_tokenizer_files(
    directory: str, id2word: Mapping[int, str], codes: list[str], config: XLMConfig, *, lowercase: bool = True
) -> list[str]:
    """Writes `vocab.json`, `merges.txt` and `tokenizer_config.json` for `XLMTokenizer`; returns their names.

    Args:
        directory: Output directory.
        id2word: The original vocabulary.
        codes: The merges, as `read_bpe_codes` returns them.
        config: The model's config (special tokens, languages).
        lowercase: Whether the tokenizer lowercases and strips accents (false for XLM-17 and XLM-100).
    """
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(bpe_vocabulary(id2word), f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in codes))  # XLMTokenizer drops whatever follows the last newline
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "XLMTokenizer",
        # The original frames every sentence as `</s> w1 ... wn </s>` ("we use <EOS> for <BOS> everywhere"), so the
        # sentence-opening token (XLMTokenizer's `bos_token`) is `</s>` for its models, not transformers' `<s>`.
        "bos_token": ORIGINAL_BOS_TOKEN,
        "do_lowercase_and_remove_accent": lowercase,
        "model_max_length": config.max_position_embeddings,
    }
    if config.lang2id:
        tokenizer_config["lang2id"] = dict(config.lang2id)
        tokenizer_config["id2lang"] = {str(i): lang for i, lang in sorted(config.id2lang.items())}
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_config, f, indent=2, sort_keys=True)
        f.write("\n")
    return ["vocab.json", "merges.txt", "tokenizer_config.json"]


def convert_original(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    codes: str | os.PathLike | None = None,
    dtype: str = "float32",
    force: bool = False,
    lowercase: bool = True,
    causal: bool | None = None,
    log: Callable[[str], Any] = lambda message: None,
) -> CheckpointReport:
    """Converts an original facebookresearch/XLM `.pth` checkpoint into a native checkpoint directory.

    Args:
        source: The `.pth` file.
        destination: Directory to create; it must not exist or be empty, unless `force`.
        codes: The BPE codes file the model was trained with; without it no tokenizer files are written.
        dtype: Storage dtype of the output: `float32`, `bfloat16` or `float16`.
        force: Replace a non-empty `destination` (only once the new directory is complete).
        lowercase: Whether the tokenizer lowercases and strips accents (true for the English, pair and XNLI-15
            models; false for XLM-17 and XLM-100).
        causal: Convert as a causal (CLM) model or not; None decides from `params` (`original_causal`: CLM steps
            and no MLM steps). The choice is logged.
        log: Called with progress lines.

    Returns:
        A `CheckpointReport` (format `"flax"`).

    Raises:
        CheckpointError, ConfigError, InputError: see `read_original_checkpoint`, `original_config`,
            `read_bpe_codes`; missing or unexpected tensors are all listed.
    """

    from xlm_flax.checkpoints.convert import plan_native_weights, storage_dtype

    out_dtype = storage_dtype(dtype)
    check_destination(destination, force=force, source=source)  # fail before the long part, not after it
    merges = read_bpe_codes(codes) if codes is not None else None
    checkpoint = read_original_checkpoint(source)
    config = original_config(checkpoint, causal=causal)
    how = (
        "as given"
        if causal is not None
        else "from params: clm_steps/mlm_steps"
        + (", causal" if _param(checkpoint.params, "causal") is not None else "")
    )
    log(
        f"model is {'causal (CLM)' if config.causal else 'not causal (MLM)'} ({how}; override with --causal/--no-causal)"
    )
    architecture, arrays = transformers_state(checkpoint, config)
    tensors = ArraySource(arrays, "torch", checkpoint.path)
    weights = plan_native_weights(tensors, architecture, config, out_dtype)
    with atomic_directory(destination, force=force, source=source) as tmp:
        log(f"converting original {architecture} from {checkpoint.path}: {len(weights.specs)} tensors, storage {dtype}")
        weights.write(tmp)
        written = []
        if merges is not None:
            written = write_tokenizer_files(tmp, checkpoint.id2word, merges, config, lowercase=lowercase)
        else:
            log("no --codes given: tokenizer files not written (XLMTokenizer needs the model's BPE codes)")
    return CheckpointReport.of(os.fspath(destination), architecture, "flax", weights.specs, written)


def is_original_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` names a single file (an original `.pth`) rather than a model directory or hub id.

    Args:
        path: A path or hub id.
    """
    return os.path.isfile(os.fspath(path))


__all__ = [
    "ORIGINAL_BOS_TOKEN",
    "ORIGINAL_LAYER_NORM_EPS",
    "OriginalCheckpoint",
    "bpe_vocabulary",
    "convert_original",
    "is_original_checkpoint",
    "original_causal",
    "original_config",
    "original_safe_globals",
    "read_bpe_codes",
    "read_original_checkpoint",
    "transformers_state",
    "write_tokenizer_files",
]
