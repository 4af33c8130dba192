"""The Hugging Face hub: finding model files in a local directory or through `huggingface_hub`'s cache, the hub's own
arguments (`revision`, `token`, `cache_dir`, `local_files_only`, `subfolder`, `force_download`) and `push_to_hub`.

Everything goes through `huggingface_hub`'s public API (`hf_hub_download`, `try_to_load_from_cache`,
`get_hf_file_metadata`, `HfApi`), so its cache layout, `HF_ENDPOINT`, `HF_HOME`, `HF_TOKEN` and `HF_HUB_OFFLINE` all
apply. Two things are added: `HF_HUB_OFFLINE=1` and an unreachable hub fail at once with a message saying what to do
(huggingface_hub would retry a file that is not cached for up to a minute), and a hub found unreachable once is not
asked again in this process.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Mapping
from typing import Any

from xlm_flax.errors import InputError, MissingFileError

# The hub's arguments, as huggingface_hub and transformers' `from_pretrained` name them.
HUB_ARGUMENTS = ("revision", "token", "cache_dir", "local_files_only", "subfolder", "force_download")

# Endpoints that failed to answer in this process: later files go to the cache only, at once.
_UNREACHABLE: set[str] = set()


@dataclasses.dataclass(frozen=True)
class HubOptions:
    """The hub's arguments for one load, passed on to `huggingface_hub.hf_hub_download`.

    Attributes:
        revision: Branch, tag or commit hash (default: the repository's default branch).
        token: Access token, True to use the saved one, or None (huggingface_hub reads `HF_TOKEN` and its login).
        cache_dir: Hub cache directory instead of huggingface_hub's (`HF_HUB_CACHE`).
        local_files_only: Use only the local cache, never the network.
        subfolder: Folder of the repository (or local directory) that holds the model files.
        force_download: Download again even when the files are cached.
    """

    revision: str | None = None
    token: str | bool | None = None
    cache_dir: str | os.PathLike | None = None
    local_files_only: bool = False
    subfolder: str | None = None
    force_download: bool = False

    @classmethod
    def pop_from(cls, kwargs: dict[str, Any]) -> HubOptions:
        """Takes the hub's arguments out of `kwargs` (in place) and returns them as options."""
        return cls(**{name: kwargs.pop(name) for name in HUB_ARGUMENTS if name in kwargs})

    def as_kwargs(self) -> dict[str, Any]:
        """The options that differ from the defaults, as keyword arguments (to pass them on)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) != f.default}


def hub_options(options: HubOptions | Mapping[str, Any] | None) -> HubOptions:
    """`options` as `HubOptions` (None: the defaults; a mapping: the hub's arguments by name).

    Raises:
        InputError: when a mapping holds another name.
    """
    if options is None:
        return HubOptions()
    if isinstance(options, HubOptions):
        return options
    unknown = set(options) - set(HUB_ARGUMENTS)
    if unknown:
        raise InputError(f"unknown hub arguments {sorted(unknown)}; the hub's arguments are {', '.join(HUB_ARGUMENTS)}")
    return HubOptions(**options)


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


def resolve_file(
    path_or_hub_id: str | os.PathLike,
    filename: str,
    *,
    required: bool = True,
    hub: HubOptions | Mapping[str, Any] | None = None,
) -> str | None:
    """Returns the local path of `filename` in a model directory or hub repository.

    Args:
        path_or_hub_id: A local model directory or a hub id.
        filename: The file wanted, relative to the model root.
        required: When false, a file that the directory or repository does not have gives None instead of an error.
        hub: The hub's arguments (`HubOptions` or a mapping); `subfolder` applies to local directories too.

    Raises:
        MissingFileError: the directory does not exist, or lacks a required file, or the hub cannot be reached.
    """
    hub = hub_options(hub)
    text = os.path.expanduser(os.fspath(path_or_hub_id))
    if is_local(text):
        if not os.path.isdir(text):
            raise MissingFileError(f"model directory {text} does not exist; give an existing directory or a hub id")
        path = os.path.join(text, hub.subfolder or "", filename)
        if os.path.isfile(path):
            return path
        if required:
            raise MissingFileError(f"{path} is missing: the model directory must contain {filename}")
        return None
    return _download(text, filename, required=required, hub=hub)


def _offline() -> bool:
    """`HF_HUB_OFFLINE` as huggingface_hub reads it, also when set after huggingface_hub was imported."""
    from huggingface_hub import constants

    return constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _where(repo_id: str, filename: str, hub: HubOptions) -> str:
    name = f"{hub.subfolder}/{filename}" if hub.subfolder else filename
    return f"{name} of {repo_id!r}" + (f" at revision {hub.revision!r}" if hub.revision else "")


def _download(repo_id: str, filename: str, *, required: bool, hub: HubOptions) -> str | None:
    # Imported here: huggingface_hub is only needed for hub ids, and importing it costs time at start-up.
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = _where(repo_id, filename, hub)
    offline = _offline()
    cache_only = hub.local_files_only or offline or constants.ENDPOINT in _UNREACHABLE
    if hub.force_download and cache_only:
        reason = "local_files_only=True" if hub.local_files_only else "the hub is offline or unreachable"
        raise InputError(f"force_download=True needs the network, and {reason}; drop one of them")
    kwargs = dict(
        subfolder=hub.subfolder,
        revision=hub.revision,
        token=hub.token,
        cache_dir=hub.cache_dir,
        force_download=hub.force_download,
    )
    try:
        if not cache_only and not isinstance(
            try_to_load_from_cache(repo_id, _in_repo(filename, hub), hub.cache_dir, hub.revision), str
        ):
            # Not cached: one quick look first. Left to itself, huggingface_hub retries an unreachable hub for up to
            # a minute before giving up on a file that is not in the cache.
            if not _reachable(repo_id, filename, hub):
                _UNREACHABLE.add(constants.ENDPOINT)
                cache_only = True
        return hf_hub_download(repo_id, filename, local_files_only=cache_only, **kwargs)
    except HFValidationError as e:
        raise MissingFileError(f"{repo_id!r} is neither an existing directory nor a valid hub id ({e})") from e
    except RevisionNotFoundError as e:
        raise MissingFileError(f"hub repository {repo_id!r} has no revision {hub.revision!r}") from e
    except GatedRepoError as e:
        raise MissingFileError(
            f"hub repository {repo_id!r} is gated: accept its conditions on the hub and pass token= (or log in)"
        ) from e
    except RepositoryNotFoundError as e:
        raise MissingFileError(
            f"{repo_id!r} is not a local directory and the hub has no repository of that name (a private one needs "
            "token=)"
        ) from e
    except LocalEntryNotFoundError as e:
        if not required:
            return None  # an optional file that the cache lacks: the cache is all there is
        if hub.local_files_only or offline:
            why = "local_files_only=True" if hub.local_files_only else "HF_HUB_OFFLINE is set"
            raise MissingFileError(
                f"cannot get {where}: {why} and the file is not in the local hub cache; download it once online "
                f"(without {'local_files_only' if hub.local_files_only else 'HF_HUB_OFFLINE'}), or pass a local "
                "model directory"
            ) from e
        raise MissingFileError(
            f"cannot get {where}: the hub ({constants.ENDPOINT}) is unreachable and the file is not in the local "
            "cache; connect to the network once, or pass a local model directory"
        ) from e
    except EntryNotFoundError as e:
        if required:
            raise MissingFileError(f"hub repository {repo_id!r} has no file {_in_repo(filename, hub)}") from e
        return None


def _in_repo(filename: str, hub: HubOptions) -> str:
    return f"{hub.subfolder}/{filename}" if hub.subfolder else filename


def _reachable(repo_id: str, filename: str, hub: HubOptions) -> bool:
    """One HEAD request without retries: False when the hub does not answer at all (an HTTP error is an answer)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    url = hf_hub_url(repo_id, _in_repo(filename, hub), revision=hub.revision)
    options = {"token": hub.token, "timeout": constants.HF_HUB_ETAG_TIMEOUT}
    if "retry_on_errors" in inspect.signature(get_hf_file_metadata).parameters:
        options["retry_on_errors"] = False  # huggingface_hub >= 1.x can retry; older versions never do here
    try:
        get_hf_file_metadata(url, **options)
    except HfHubHTTPError:
        return True  # 404, 401, ...: hf_hub_download reports it properly
    except Exception:  # noqa: BLE001 - the HTTP client's connection and timeout errors (its classes change)
        return False
    return True


def push_to_hub(
    directory: str | os.PathLike,
    repo_id: str,
    *,
    token: str | bool | None = None,
    revision: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload model with xlm-flax",
    create_repo: bool = True,
) -> str:
    """Uploads a model directory (`save_pretrained`'s, native or `format="pytorch"`) to a hub repository in one
    commit, through `huggingface_hub.HfApi`.

    Args:
        directory: The directory to upload (every file in it).
        repo_id: `user/name` or `org/name`.
        token: Access token (default: `HF_TOKEN` or the saved login).
        revision: Branch to commit to (default: the default branch).
        private: Visibility of a repository created here (None: the hub's default).
        commit_message: The commit message.
        create_repo: Create the repository first when it does not exist.

    Returns:
        The URL of the commit.

    Raises:
        MissingFileError: when `directory` is not a directory.
    """
    from huggingface_hub import HfApi

    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise MissingFileError(f"{directory} is not a directory; write the model with save_pretrained first")
    if _offline():
        raise InputError("push_to_hub needs the network and HF_HUB_OFFLINE is set; unset it to upload")
    api = HfApi(token=token)
    if create_repo:
        api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=directory, repo_id=repo_id, revision=revision, commit_message=commit_message)
    return info.commit_url


__all__ = ["HUB_ARGUMENTS", "HubOptions", "hub_options", "is_local", "push_to_hub", "resolve_file"]
