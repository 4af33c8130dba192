"""Checkpoint directory files: names, atomic directory writes, `config.json` and tokenizer files."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from xlm_flax.checkpoints.hub import HubOptions, resolve_file
from xlm_flax.config import CONFIG_NAME, XLMConfig
from xlm_flax.errors import InputError, MissingFileError

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"


WEIGHTS_INDEX_NAME = "model.safetensors.index.json"


TORCH_WEIGHTS_NAME = "pytorch_model.bin"


NATIVE_METADATA = {"format": "flax", "library": "xlm_flax", "layout": "1"}


TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def check_destination(
    destination: str | os.PathLike, *, force: bool = False, source: str | os.PathLike | None = None
) -> str:
    """Checks that `destination` can be written as a new directory; returns its absolute path.

    Called before long work (a conversion) so that a bad output path fails at once, and again by
    `atomic_directory`.

    Args:
        destination: The output directory.
        force: Accept a non-empty directory (it will be replaced).
        source: The local file or directory the output is made from, if any: replacing `destination` must not
            delete it.

    Raises:
        InputError: if `destination` is a file or a dangling symbolic link, a non-empty directory without `force`,
            or the source itself or a directory holding it.
    """
    destination = os.path.abspath(os.fspath(destination))
    if os.path.isfile(destination):
        raise InputError(f"{destination} is a file; give a directory path for the output")
    if os.path.islink(destination) and not os.path.exists(destination):
        raise InputError(
            f"{destination} is a symbolic link to nothing ({os.readlink(destination)}); remove it or give another path"
        )
    if source is not None and os.path.exists(os.fspath(source)):
        real_source, real_destination = os.path.realpath(os.fspath(source)), os.path.realpath(destination)
        if real_source == real_destination or real_source.startswith(real_destination.rstrip(os.sep) + os.sep):
            raise InputError(
                f"{destination} is the source {os.fspath(source)} or holds it: writing there would delete the source; "
                "give another output directory"
            )
    if os.path.isdir(destination) and os.listdir(destination) and not force:
        raise InputError(f"{destination} exists and is not empty; choose another path or pass --force to replace it")
    return destination


# Temporary directories of `atomic_directory` are named `.{destination}.tmp-*` (the new contents) and
# `.{destination}.old-*` (the previous contents while they are being replaced), next to the destination, and hold
# an owner file naming the host and process that made them, so that a later run can tell a killed run's leftovers
# from a live run's work.
_OWNER_FILE = ".xlm-flax-owner"


def _umask() -> int:
    # The only portable way to read the umask is to set it; the call is immediately undone.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _make_temporary(parent: str, prefix: str) -> str:
    """A new directory in `parent` with the permissions a plain `mkdir` gives (mkdtemp's are 0700), and an owner
    file."""
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    os.chmod(path, 0o777 & ~_umask())
    with open(os.path.join(path, _OWNER_FILE), "w", encoding="utf-8") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid()}, f)
    return path


def _is_abandoned(path: str) -> bool:
    """Whether a temporary directory was left by a process of this host that no longer runs."""
    try:
        with open(os.path.join(path, _OWNER_FILE), encoding="utf-8") as f:
            owner = json.load(f)
        host, pid = owner["host"], int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        # No readable owner file: killed between mkdtemp and writing it (a fraction of a millisecond), or not ours.
        # Old enough means abandoned.
        try:
            return time.time() - os.path.getmtime(path) > 3600
        except OSError:
            return False
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # the process exists (another user's)
        return False
    return False


def sweep_leftovers(destination: str | os.PathLike, log: Callable[[str], Any] | None = None) -> list[str]:
    """Removes the temporary directories that killed runs writing `destination` left next to it.

    A run killed while replacing `destination` (between moving the old directory aside and moving the new one in)
    leaves the old contents in `.{name}.old-*/previous`; when `destination` is then missing, they are moved back
    rather than deleted. Directories of runs still alive (or of other hosts) are left alone and reported.

    Args:
        destination: The directory an `atomic_directory` writes.
        log: Called with one line per directory swept or left.

    Returns:
        The paths removed or restored.
    """
    destination = os.path.abspath(os.fspath(destination))
    parent, name = os.path.split(destination)
    log = log or logger.warning
    swept = []
    try:
        candidates = sorted(os.listdir(parent))
    except OSError:
        return swept
    for entry in candidates:
        if not entry.startswith((f".{name}.tmp-", f".{name}.old-")):
            continue
        path = os.path.join(parent, entry)
        if not os.path.isdir(path) or os.path.islink(path):
            continue
        if not _is_abandoned(path):
            log(f"{path} belongs to a run still in progress (or to another host); left in place")
            continue
        previous = os.path.join(path, "previous")
        if ".old-" in entry and os.path.isdir(previous) and not os.path.lexists(destination):
            os.rename(previous, destination)
            log(f"restored {destination} from {path}, left by an interrupted run")
        else:
            log(f"removed {path}, left by an interrupted run")
        shutil.rmtree(path, ignore_errors=True)
        swept.append(path)
    return swept


@contextlib.contextmanager
def atomic_directory(
    destination: str | os.PathLike,
    *,
    force: bool = False,
    merge: bool = False,
    source: str | os.PathLike | None = None,
) -> Iterator[str]:
    """Yields a temporary directory whose contents land in `destination` only when the block succeeds.

    On any failure (an exception, Ctrl-C, or SIGTERM/SIGHUP turned into one by the command line), including a
    failed final rename, the temporary directory is removed and `destination` is as it was. Leftovers of earlier
    runs that were killed outright (SIGKILL) are swept first (`sweep_leftovers`). The new directory gets the
    permissions a plain `mkdir` would give under the current umask.

    Args:
        destination: The directory to produce.
        force: Replace an existing non-empty `destination` (only once the new one is complete).
        merge: Keep an existing `destination` and move each new file into it (each move is atomic), leaving files
            that were not rewritten in place; used by `save_pretrained`, whose directory may hold other files.
        source: The local source of the output, which must be neither `destination` nor inside it.

    Raises:
        InputError: if `destination` is a file, or a non-empty directory without `force` or `merge`, or holds
            `source`, or was created by another process while this one was writing.
    """
    destination = check_destination(destination, force=force or merge, source=source)
    parent = os.path.dirname(destination)
    os.makedirs(parent, exist_ok=True)
    sweep_leftovers(destination)
    tmp = _make_temporary(parent, f".{os.path.basename(destination)}.tmp-")
    try:
        yield tmp
        os.unlink(os.path.join(tmp, _OWNER_FILE))
        _commit(tmp, destination, force=force, merge=merge)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _commit(tmp: str, destination: str, *, force: bool, merge: bool) -> None:
    """Moves the finished `tmp` into place; on failure `destination` is left as it was (the caller removes tmp)."""
    exists = os.path.isdir(destination)
    if merge and exists:
        for name in os.listdir(tmp):
            os.replace(os.path.join(tmp, name), os.path.join(destination, name))
        os.rmdir(tmp)
        return
    if exists and os.listdir(destination) and not force:
        raise InputError(
            f"{destination} was filled by another process while this one was writing; nothing was replaced: "
            "choose another path or pass --force"
        )
    parent, name = os.path.split(destination)
    old = None
    try:
        if exists:
            old = _make_temporary(parent, f".{name}.old-")
            os.rename(destination, os.path.join(old, "previous"))
        os.rename(tmp, destination)
    except BaseException as e:  # a failed rename, or a signal between the two: put the previous contents back
        if old is not None:
            previous = os.path.join(old, "previous")
            if os.path.isdir(previous) and not os.path.lexists(destination):
                os.rename(previous, destination)
            shutil.rmtree(old, ignore_errors=True)
        if isinstance(e, OSError):
            raise InputError(
                f"cannot move the new directory into {destination} ({e.strerror}); another process may have written "
                "there meanwhile: nothing was replaced, run again"
            ) from e
        raise
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
    "sweep_leftovers",
    "write_config",
]
