"""Finding model files: in a local directory, or on the Hugging Face hub through `huggingface_hub`'s cache."""

from __future__ import annotations

import os

from xlm_flax.errors import MissingFileError


def is_local(path_or_hub_id: str | os.PathLike) -> bool:
    """Whether `path_or_hub_id` names something on this machine rather than a hub repository.

    A string that exists on disk, is absolute, starts with `.` or `~`, or has more than one `/` is a path; anything
    else (`FacebookAI/xlm-mlm-en-2048`, `xlm-mlm-en-2048`) is a hub id.

    Args:
        path_or_hub_id: A path or hub id.
    """
    text = os.fspath(path_or_hub_id)
    return (
        os.path.exists(text)
        or os.path.isabs(text)
        or text.startswith((".", "~"))
        or text.count("/") > 1
        or os.sep != "/"
        and os.sep in text
    )


def resolve_file(path_or_hub_id: str | os.PathLike, filename: str, *, required: bool = True) -> str | None:
    """Returns the local path of `filename` in a model directory or hub repository.

    Args:
        path_or_hub_id: A local model directory or a hub id.
        filename: The file wanted, relative to the model root.
        required: When false, a file that the directory or repository does not have gives None instead of an error.

    Raises:
        MissingFileError: the directory does not exist, or lacks a required file, or the hub cannot be reached.
    """
    text = os.path.expanduser(os.fspath(path_or_hub_id))
    if is_local(text):
        if not os.path.isdir(text):
            raise MissingFileError(f"model directory {text} does not exist; give an existing directory or a hub id")
        path = os.path.join(text, filename)
        if os.path.isfile(path):
            return path
        if required:
            raise MissingFileError(f"{path} is missing: the model directory must contain {filename}")
        return None
    return _download(text, filename, required=required)


def _download(repo_id: str, filename: str, *, required: bool) -> str | None:
    # Imported here: huggingface_hub is only needed for hub ids, and importing it costs time at start-up.
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return hf_hub_download(repo_id, filename)
    except HFValidationError as e:
        raise MissingFileError(f"{repo_id!r} is neither an existing directory nor a valid hub id ({e})") from e
    except RepositoryNotFoundError as e:
        raise MissingFileError(
            f"{repo_id!r} is not a local directory and the hub has no repository of that name"
        ) from e
    except LocalEntryNotFoundError as e:
        raise MissingFileError(
            f"cannot get {filename} of {repo_id!r}: the hub is unreachable and the file is not in the local cache; "
            "connect to the network once, or pass a local model directory"
        ) from e
    except EntryNotFoundError as e:
        if required:
            raise MissingFileError(f"hub repository {repo_id!r} has no file {filename}") from e
        return None


__all__ = ["is_local", "resolve_file"]
