"""`from_pretrained` / `save_pretrained` on every model class.

The methods import `xlm_flax.checkpoints` when they are called: the model layer itself never depends on the
checkpoint layer at import time.
"""

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp

from xlm_flax.model.layers import DTypeLike


class PretrainedMixin:
    """`from_pretrained` / `save_pretrained` for every model class of this package.

    Subclasses set `architecture` to the transformers class name they mirror.
    """

    architecture: str = ""

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        subfolder: str | None = None,
        force_download: bool = False,
        **kwargs: Any,
    ):
        """Loads a model from a native or transformers checkpoint directory, or from a hub id.

        Args:
            path_or_hub_id: A directory written by `save_pretrained` or `xlm-flax convert`, a transformers model
                directory (`model.safetensors`, sharded safetensors or `pytorch_model.bin`), or a hub id such as
                `FacebookAI/xlm-mlm-en-2048` (converted in memory, tensor by tensor).
            dtype: Compute dtype.
            param_dtype: Storage dtype; None keeps the checkpoint's.
            revision: Branch, tag or commit hash of a hub repository.
            token: Hub access token (default: `HF_TOKEN` or the saved login).
            cache_dir: Hub cache directory instead of huggingface_hub's default.
            local_files_only: Use only the local hub cache (as `HF_HUB_OFFLINE=1` does).
            subfolder: Folder of the repository or directory that holds the model files.
            force_download: Download the files again even when cached.
            **kwargs: `mesh`, `rules`, `placer`, `strict`, `seed`, `config` (see
                `xlm_flax.checkpoints.load_pretrained`) and constructor arguments such as `layers` and `remat`.

        Raises:
            TypeError: on a keyword argument that neither this method nor the constructor takes.
        """
        from xlm_flax.checkpoints.hub import HubOptions
        from xlm_flax.checkpoints.load import load_pretrained

        hub = HubOptions(revision, token, cache_dir, local_files_only, subfolder, force_download)
        return load_pretrained(cls, path_or_hub_id, dtype=dtype, param_dtype=param_dtype, hub=hub, **kwargs)

    def save_pretrained(self, directory: str | os.PathLike, *, format: str = "flax", **kwargs: Any) -> str:
        """Writes the model to `directory`: `format="flax"` (native, no torch needed to read) or `"pytorch"`
        (transformers names). See `xlm_flax.checkpoints.save_pretrained` for the other arguments.

        Args:
            directory: Output directory.
            format: `"flax"` or `"pytorch"`.
            **kwargs: Passed to `xlm_flax.checkpoints.save_pretrained` (e.g. `force`).
        """
        from xlm_flax.checkpoints.save import save_pretrained

        return save_pretrained(self, directory, format=format, **kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        format: str = "flax",
        token: str | bool | None = None,
        revision: str | None = None,
        private: bool | None = None,
        commit_message: str = "Upload model with xlm-flax",
        **kwargs: Any,
    ) -> str:
        """Writes the model with `save_pretrained` (native `format="flax"` or `"pytorch"`, which transformers
        loads) and uploads the directory to the hub repository `repo_id` in one commit (`huggingface_hub.HfApi`),
        creating the repository if needed.

        Args:
            repo_id: `user/name` or `org/name`.
            format: `"flax"` or `"pytorch"`.
            token: Hub access token (default: `HF_TOKEN` or the saved login).
            revision: Branch to commit to (default: the default branch).
            private: Visibility of a repository created here.
            commit_message: The commit message.
            **kwargs: Passed to `save_pretrained` (e.g. `dtype`, `tokenizer_source`).

        Returns:
            The URL of the commit.
        """
        import tempfile

        from xlm_flax.checkpoints.hub import push_to_hub

        with tempfile.TemporaryDirectory(prefix="xlm-flax-push-") as tmp:
            directory = self.save_pretrained(os.path.join(tmp, "model"), format=format, **kwargs)
            return push_to_hub(
                directory, repo_id, token=token, revision=revision, private=private, commit_message=commit_message
            )


__all__ = ["PretrainedMixin"]
