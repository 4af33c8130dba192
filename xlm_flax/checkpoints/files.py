"""Checkpoint directory files: names, atomic directory writes, `config.json` and tokenizer files."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator

import numpy as np

from xlm_flax.checkpoints.hub import HubOptions, resolve_file
from xlm_flax.config import CONFIG_NAME, XLMConfig
from xlm_flax.errors import InputError, MissingFileError

WEIGHTS_NAME = "model.safetensors"


WEIGHTS_INDEX_NAME = "model.safetensors.index.json"


TORCH_WEIGHTS_NAME = "pytorch_model.bin"


NATIVE_METADATA = {"format": "flax", "library": "xlm_flax", "layout": "1"}


TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def check_destination(destination: str | os.PathLike, *, force: bool = False) -> str:
    """Checks that `destination` can be written as a new directory; returns its absolute path.

    Called before long work (a conversion) so that a bad output path fails at once, and again by
    `atomic_directory`.

    Args:
        destination: The output directory.
        force: Accept a non-empty directory (it will be replaced).

    Raises:
        InputError: if `destination` is a file, or a non-empty directory without `force`.
    """
    destination = os.path.abspath(os.fspath(destination))
    if os.path.isfile(destination):
        raise InputError(f"{destination} is a file; give a directory path for the output")
    if os.path.isdir(destination) and os.listdir(destination) and not force:
        raise InputError(f"{destination} exists and is not empty; choose another path or pass --force to replace it")
    return destination


@contextlib.contextmanager
def atomic_directory(destination: str | os.PathLike, *, force: bool = False, merge: bool = False) -> Iterator[str]:
    """Yields a temporary directory whose contents land in `destination` only when the block succeeds.

    On failure the temporary directory is removed and `destination` is untouched.

    Args:
        destination: The directory to produce.
        force: Replace an existing non-empty `destination` (only once the new one is complete).
        merge: Keep an existing `destination` and move each new file into it (each move is atomic), leaving files
            that were not rewritten in place; used by `save_pretrained`, whose directory may hold other files.

    Raises:
        InputError: if `destination` is a file, or a non-empty directory without `force` or `merge`.
    """
    destination = check_destination(destination, force=force or merge)
    exists = os.path.isdir(destination)
    parent = os.path.dirname(destination)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(destination)}.tmp-", dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if merge and exists:
        for name in os.listdir(tmp):
            os.replace(os.path.join(tmp, name), os.path.join(destination, name))
        os.rmdir(tmp)
        return
    old = None
    if exists:
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(destination)}.old-", dir=parent)
        os.rename(destination, os.path.join(old, "previous"))
    os.rename(tmp, destination)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_config(directory: str, config: XLMConfig, architecture: str, dtype: np.dtype | None = None) -> None:
    """Writes `config.json` for `architecture`, recording the storage `dtype` as transformers does."""
    config = config.replace(architectures=(architecture,))
    data = config.to_dict()
    if dtype is not None:
        data["dtype"] = np.dtype(dtype).name
    with open(os.path.join(directory, CONFIG_NAME), "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def copy_tokenizer_files(source: str | os.PathLike | None, directory: str, hub: HubOptions | None = None) -> list[str]:
    """Copies the tokenizer files that `source` (a directory or hub id) has into `directory`; returns their names.

    Args:
        source: A directory or hub id; None copies nothing.
        directory: Where to copy them.
        hub: The hub's arguments for a hub id.
    """
    if source is None:
        return []
    copied = []
    for filename in TOKENIZER_FILES:
        try:
            path = resolve_file(source, filename, required=False, hub=hub)
        except MissingFileError:
            return copied
        if path is not None and not os.path.exists(os.path.join(directory, filename)):
            shutil.copyfile(path, os.path.join(directory, filename))
            copied.append(filename)
    return copied


__all__ = [
    "NATIVE_METADATA",
    "TOKENIZER_FILES",
    "TORCH_WEIGHTS_NAME",
    "WEIGHTS_INDEX_NAME",
    "WEIGHTS_NAME",
    "atomic_directory",
    "check_destination",
    "copy_tokenizer_files",
    "write_config",
]
