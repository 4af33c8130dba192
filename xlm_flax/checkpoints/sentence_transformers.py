"""A directory `sentence_transformers.SentenceTransformer(directory)` loads: the encoder as transformers' PyTorch
XLM (`config.json` + `model.safetensors` with transformers' names), its tokenizer, and the module files
sentence-transformers reads (`modules.json`, `sentence_bert_config.json`, `1_Pooling/config.json`, and
`2_Normalize` when the vectors are unit length).

The files use the long-standing layout (module types `sentence_transformers.models.*`, `pooling_mode_*` flags),
which sentence-transformers 2.x to 6.x all read. Nothing here imports torch or sentence-transformers.
"""

from __future__ import annotations

import json
import os
from typing import Any

from flax import nnx

from xlm_flax.checkpoints.files import atomic_directory
from xlm_flax.errors import InputError

# Our pooling name -> sentence-transformers' Pooling flag.
POOLING_FLAGS = {
    "mean": "pooling_mode_mean_tokens",
    "first": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
}
ALL_POOLING_FLAGS = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


def _write_json(path: str, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def module_files(*, emb_dim: int, max_seq_length: int, pooling: str, normalize: bool, similarity_fn_name: str) -> dict:
    """The sentence-transformers module files: relative path -> JSON content.

    Args:
        emb_dim: The encoder's hidden size.
        max_seq_length: Longest input in tokens (the model's `max_position_embeddings`).
        pooling: `"mean"`, `"first"` (sentence-transformers' `cls`) or `"max"`.
        normalize: Add a `Normalize` module (unit-length vectors).
        similarity_fn_name: `"cosine"`, `"dot"`, `"euclidean"` or `"manhattan"`.
    """
    if pooling not in POOLING_FLAGS:
        raise InputError(f"pooling={pooling!r}: use one of {', '.join(POOLING_FLAGS)}")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    files: dict[str, Any] = {
        "sentence_bert_config.json": {"max_seq_length": max_seq_length, "do_lower_case": False},
        "1_Pooling/config.json": {
            "word_embedding_dimension": emb_dim,
            **{flag: flag == POOLING_FLAGS[pooling] for flag in ALL_POOLING_FLAGS},
            "include_prompt": True,
        },
        "config_sentence_transformers.json": {
            "prompts": {},
            "default_prompt_name": None,
            "similarity_fn_name": similarity_fn_name,
        },
    }
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        files["2_Normalize/.keep"] = None  # the Normalize module has no config; its directory must exist
    files["modules.json"] = modules
    return files


def save_sentence_transformers(
    encoder: nnx.Module,
    tokenizer: Any,
    directory: str | os.PathLike,
    *,
    pooling: str,
    normalize: bool = False,
    similarity_fn_name: str = "cosine",
    force: bool = False,
) -> str:
    """Writes a sentence-transformers model directory for `encoder` (an `XLMModel`) and `tokenizer`.

    Args:
        encoder: The `XLMModel` whose last hidden state is pooled.
        tokenizer: Its `XLMTokenizer`.
        directory: Output directory; it must not exist or be empty, unless `force`. Written atomically.
        pooling: See `module_files`.
        normalize: Unit-length vectors (a `Normalize` module).
        similarity_fn_name: The similarity function recorded for `SentenceTransformer.similarity`.
        force: Replace a non-empty `directory` (once the new one is complete).

    Returns:
        The directory written.

    Raises:
        InputError: the model has language embeddings (sentence-transformers passes no language ids, so its vectors
            would differ from this package's), or bad `pooling`.
    """
    from xlm_flax.checkpoints.save import save_pretrained

    config = encoder.config
    if config.has_lang_embeddings:
        raise InputError(
            "this model has language embeddings, and sentence-transformers calls the model without language ids, "
            "so its vectors would not be the ones Embedder.encode gives; export a model without language embeddings "
            "(n_langs=1 or use_lang_emb=False)"
        )
    files = module_files(
        emb_dim=config.emb_dim,
        max_seq_length=config.max_position_embeddings,
        pooling=pooling,
        normalize=normalize,
        similarity_fn_name=similarity_fn_name,
    )
    directory = os.fspath(directory)
    with atomic_directory(directory, force=force) as tmp:
        save_pretrained(encoder, tmp, format="pytorch")
        tokenizer.save_pretrained(tmp)
        for relative, content in files.items():
            path = os.path.join(tmp, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if content is None:
                continue
            _write_json(path, content)
    return directory


__all__ = ["module_files", "save_sentence_transformers"]
