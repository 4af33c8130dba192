"""Checks of the files and objects that come from outside, made once where they enter (no JAX, no transformers).

* `check_tokenizer_files`: a model directory's `vocab.json`, `merges.txt` and the optional JSON files, before
  transformers' `XLMTokenizer` reads them (it answers a damaged file with a `KeyError`, an `AttributeError` or a
  `JSONDecodeError` from deep inside, or worse, with a tokenizer that silently maps text to the wrong ids).
* `check_tokenizer_fits`: a tokenizer against the model's vocabulary: an id at or past `vocab_size` would index
  past the embedding table, which JAX answers with NaN rather than an error.

Each raises one of `xlm_flax.errors`, naming the file (or the sizes) and the fix.
"""

from __future__ import annotations

import json
import os
from typing import Any

from xlm_flax.errors import CheckpointError, ConfigError

_FIX = "copy the tokenizer files of the original model again, or convert it again with `xlm-flax convert`"


def _read_json(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path} is not UTF-8 text (byte {e.start}); {_FIX}") from e
    except (ValueError, RecursionError) as e:  # json.JSONDecodeError is a ValueError
        raise CheckpointError(f"{path} is not valid JSON ({e}); {_FIX}") from e


def check_vocab_file(path: str) -> int:
    """Checks a `vocab.json`: a JSON object of tokens to distinct non-negative integer ids.

    Args:
        path: The file.

    Returns:
        The number of tokens.

    Raises:
        CheckpointError: naming the file and the first problem.
    """
    vocab = _read_json(path)
    if not isinstance(vocab, dict) or not vocab:
        raise CheckpointError(f"{path} is not a JSON object of tokens to ids; {_FIX}")
    ids = set()
    for token, index in vocab.items():
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 2**31:
            raise CheckpointError(f"{path}: token {token[:40]!r} has id {index!r}, not a non-negative integer; {_FIX}")
        if index in ids:
            raise CheckpointError(f"{path}: id {index} is given to two tokens; {_FIX}")
        ids.add(index)
    return len(vocab)


def check_merges_file(path: str) -> int:
    """Checks a `merges.txt`: UTF-8 lines of two space-separated tokens (an optional `#version` first line).

    Args:
        path: The file.

    Returns:
        The number of merges.

    Raises:
        CheckpointError: naming the file, the line and the fix.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path} is not UTF-8 text (byte {e.start}); {_FIX}") from e
    count = 0
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line or (number == 1 and line.startswith("#version")):
            continue
        # XLMTokenizer reads the first two columns of each line (a third, a count, is ignored).
        if len(line.split()) < 2:
            raise CheckpointError(f"{path}: line {number} ({line[:40]!r}) is not a merge of two tokens ('a b'); {_FIX}")
        count += 1
    return count


def check_tokenizer_files(directory: str | os.PathLike) -> None:
    """Checks the tokenizer files of a model directory before transformers reads them.

    `vocab.json` and `merges.txt` must exist (see `check_vocab_file`, `check_merges_file`); `tokenizer_config.json`,
    `special_tokens_map.json` and `added_tokens.json`, when present, must be JSON objects.

    Args:
        directory: The directory holding them.

    Raises:
        CheckpointError: naming the file and the problem.
    """
    directory = os.fspath(directory)
    vocab_path = os.path.join(directory, "vocab.json")
    check_vocab_file(vocab_path)
    check_merges_file(os.path.join(directory, "merges.txt"))
    unk = "<unk>"
    for name in ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        contents = _read_json(path)
        if not isinstance(contents, dict):
            raise CheckpointError(f"{path} is not a JSON object; {_FIX}")
        if name != "added_tokens.json" and isinstance(contents.get("unk_token"), str):
            unk = contents["unk_token"]
    # Without its unknown token a tokenizer maps every piece it lacks to None instead of an id.
    if unk not in _read_json(vocab_path):
        raise CheckpointError(f"{vocab_path} lacks the unknown token {unk[:40]!r}; {_FIX}")


def check_tokenizer_fits(tokenizer: Any, vocab_size: int) -> None:
    """Refuses a tokenizer that can produce ids the model has no embedding for.

    Args:
        tokenizer: A transformers tokenizer (`len(tokenizer)` counts added tokens too).
        vocab_size: The model's `config.vocab_size`.

    Raises:
        ConfigError: when the tokenizer has more tokens than the model.
    """
    size = len(tokenizer)
    if size > vocab_size:
        raise ConfigError(
            f"the tokenizer has {size} tokens but the model's vocab_size is {vocab_size}: ids from {vocab_size} on "
            "have no embedding; use the tokenizer files the model was trained with"
        )


__all__ = ["check_merges_file", "check_tokenizer_files", "check_tokenizer_fits", "check_vocab_file"]
