"""Tensor sources: named tensors read one at a time from safetensors files or a `pytorch_model.bin`.

Two on-disk layouts share the directory shape `config.json` + weights (+ tokenizer files):

* **native** (`save_pretrained(dir)`): `model.safetensors` whose tensors are named by our flat parameter paths
  (`transformer.attentions.q_lin.kernel`, stacked over layers), marked `{"library": "xlm_flax"}` in its metadata.
  Reading it needs neither torch nor transformers' model code.
* **transformers** (`save_pretrained(dir, format="pytorch")`, or any hub checkpoint): `model.safetensors`, a sharded
  `model.safetensors.index.json`, or `pytorch_model.bin` (read with `torch.load(weights_only=True)`), with
  transformers' tensor names; converted through the table in `xlm_flax.checkpoints.names`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import ml_dtypes
import numpy as np

from xlm_flax.checkpoints.files import TORCH_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME
from xlm_flax.checkpoints.hub import HubOptions, resolve_file
from xlm_flax.checkpoints.safetensors_io import SafetensorsReader
from xlm_flax.errors import CheckpointError, MissingFileError


class TensorSource:
    """Named tensors read one at a time.

    Attributes:
        kind: `"flax"` for our native layout, `"torch"` for transformers names.
        description: Where the tensors come from, for messages.
    """

    kind: str
    description: str

    def names(self) -> list[str]:
        """Every tensor name."""
        raise NotImplementedError

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of `name` without reading it.

        Args:
            name: Tensor name.
        """
        raise NotImplementedError

    def dtype(self, name: str) -> np.dtype:
        """NumPy dtype of `name` without reading it.

        Args:
            name: Tensor name.
        """
        raise NotImplementedError

    def read(self, name: str) -> np.ndarray:
        """Reads `name` into a new NumPy array.

        Args:
            name: Tensor name.
        """
        raise NotImplementedError

    def read_slice(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
        """Reads `tensor[index]` of `name` into a new NumPy array (sources that can, read only those bytes).

        Args:
            name: Tensor name.
            index: A tuple of slices over the leading dimensions (a device's shard, or one layer).
        """
        return self.read(name)[index]

    def close(self) -> None:
        """Releases what the source holds open."""


class ArraySource(TensorSource):
    """Named arrays already in memory (a model's parameters, an original checkpoint's state) as a `TensorSource`.

    Args:
        arrays: Name -> array (NumPy, or `jax.Array` with `to_host`).
        kind: `"flax"` (native names) or `"torch"` (transformers names).
        description: What the arrays are, for messages.
        to_host: Brings an array (or a slice of it) to the host as NumPy; multi-host arrays need a gather, which
            every process must then take part in.
    """

    def __init__(
        self,
        arrays: Mapping[str, Any],
        kind: str,
        description: str,
        to_host: Callable[[Any], np.ndarray] = np.asarray,
    ):
        self._arrays = arrays
        self.kind = kind
        self.description = description
        self._to_host = to_host

    def names(self) -> list[str]:
        """Every tensor name."""
        return list(self._arrays)

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of `name`.

        Args:
            name: Tensor name.
        """
        return tuple(self._arrays[name].shape)

    def dtype(self, name: str) -> np.dtype:
        """NumPy dtype of `name`.

        Args:
            name: Tensor name.
        """
        return np.dtype(self._arrays[name].dtype)

    def read(self, name: str) -> np.ndarray:
        """`name` as a host array.

        Args:
            name: Tensor name.
        """
        return self._to_host(self._arrays[name])

    def read_slice(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
        """`name[index]` as a host array; a device array is sliced before it is brought to the host.

        Args:
            name: Tensor name.
            index: A tuple of slices over the leading dimensions.
        """
        return self._to_host(self._arrays[name][index])


class SafetensorsSource(TensorSource):
    """One or several (sharded) safetensors files.

    Args:
        paths: The safetensors files.
        kind: `"flax"` (native names) or `"torch"` (transformers names).
    """

    def __init__(self, paths: list[str], kind: str):
        self.kind = kind
        self.description = paths[0] if len(paths) == 1 else f"{len(paths)} shards in {os.path.dirname(paths[0])}"
        self._readers: dict[str, SafetensorsReader] = {}
        for path in paths:
            reader = SafetensorsReader(path)
            for name in reader.keys():
                if name in self._readers:  # which copy would win is arbitrary: refuse rather than guess
                    raise CheckpointError(
                        f"tensor {name!r} is in two shards, {self._readers[name].path} and {path}; the checkpoint is "
                        "damaged: download it again"
                    )
                self._readers[name] = reader

    def names(self) -> list[str]:
        """Every tensor name."""
        return list(self._readers)

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of `name` without reading it.

        Args:
            name: Tensor name.
        """
        return self._readers[name].shape(name)

    def dtype(self, name: str) -> np.dtype:
        """NumPy dtype of `name` without reading it.

        Args:
            name: Tensor name.
        """
        return self._readers[name].dtype(name)

    def read(self, name: str) -> np.ndarray:
        """Reads `name` into a new NumPy array.

        Args:
            name: Tensor name.
        """
        return self._readers[name].read(name)

    def read_slice(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
        """Reads `tensor[index]` of `name`, reading only the pages of the file that hold it.

        Args:
            name: Tensor name.
            index: A tuple of slices over the leading dimensions (a device's shard, or one layer).
        """
        return self._readers[name].read_slice(name, index)


class TorchFileSource(TensorSource):
    """A `pytorch_model.bin`, loaded with `torch.load(weights_only=True)`: tensors and plain containers only, so a
    file that would run code when unpickled is refused.

    Args:
        path: The `pytorch_model.bin` file.
    """

    kind = "torch"

    def __init__(self, path: str):
        self.description = path
        try:
            import torch
        except ImportError as e:
            raise CheckpointError(
                f"{path} is a PyTorch file and reading it needs torch: pip install 'xlm-flax[torch]', "
                "or convert a safetensors checkpoint instead"
            ) from e
        state = _load_torch_file(path)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} holds a {type(state).__name__}, not a dictionary of tensors")
        self._state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        for name, tensor in self._state.items():
            _check_torch_tensor(path, name, tensor)

    def names(self) -> list[str]:
        """Every tensor name."""
        return list(self._state)

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of `name`.

        Args:
            name: Tensor name.
        """
        return tuple(self._state[name].shape)

    def dtype(self, name: str) -> np.dtype:
        """NumPy dtype of `name`.

        Args:
            name: Tensor name.
        """
        import torch

        tensor = self._state[name]
        if tensor.dtype == torch.bfloat16:
            return np.dtype(ml_dtypes.bfloat16)
        return np.dtype(torch.empty((), dtype=tensor.dtype).numpy().dtype)

    def read(self, name: str) -> np.ndarray:
        """Converts `name` to a new NumPy array.

        Args:
            name: Tensor name.
        """
        return torch_to_numpy(self._state[name])

    def close(self) -> None:
        """Drops the loaded tensors."""
        self._state = {}


_FIX_TORCH = "download it again, or use a safetensors checkpoint"


def _load_torch_file(path: str) -> Any:
    """`torch.load(path, weights_only=True)`: tensors and plain containers only, so nothing in the file can run code.

    Raises:
        CheckpointError: naming the file, for anything that is not a readable PyTorch file of tensors (empty,
            truncated, not a zip or legacy archive, objects other than tensors, storages torch cannot rebuild).
    """
    import pickle

    import torch

    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # files in torch's legacy (pre-zip) format cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to read {path}: it holds objects other than tensors, and unpickling them could run "
            f"code ({_first_line(e)}); use a safetensors checkpoint"
        ) from e
    except OSError:
        raise  # unreadable for the operating system (permissions, a directory): the CLI reports it as it is
    except Exception as e:  # noqa: BLE001 - torch's readers raise RuntimeError, EOFError, KeyError, TypeError, ...
        size = os.path.getsize(path)
        raise CheckpointError(
            f"{path} ({size} bytes) is not a readable PyTorch file ({_first_line(e)}); {_FIX_TORCH}"
        ) from e


# The torch dtypes that have a NumPy equivalent of the same bytes (bfloat16 through ml_dtypes).
_TORCH_DTYPES = (
    "float64",
    "float32",
    "float16",
    "bfloat16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint64",
    "uint32",
    "uint16",
    "uint8",
    "bool",
)


def _check_torch_tensor(path: str, name: str, tensor: Any) -> None:
    """Refuses a tensor that cannot become a NumPy array of the same values (sparse, quantised, complex, float8)."""
    import torch

    if tensor.layout != torch.strided:
        raise CheckpointError(
            f"{path}: tensor {name!r} has layout {tensor.layout}; only dense tensors can be read: save the state "
            f"dict with dense tensors (tensor.to_dense()), or {_FIX_TORCH}"
        )
    dtype = str(tensor.dtype).removeprefix("torch.")
    if dtype not in _TORCH_DTYPES or tensor.is_quantized:
        raise CheckpointError(
            f"{path}: tensor {name!r} has dtype {dtype}, which a model cannot hold; supported: "
            f"{', '.join(_TORCH_DTYPES)}: save it in float32, or {_FIX_TORCH}"
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def torch_to_numpy(tensor: Any) -> np.ndarray:
    """Converts a CPU torch tensor to NumPy without an intermediate float32 copy (bfloat16 included)."""
    import torch

    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
    return tensor.numpy().copy()


def open_weights(path_or_hub_id: str | os.PathLike, hub: HubOptions | None = None) -> TensorSource:
    """Opens the weights of a model directory or hub id, whichever layout they are in.

    Args:
        path_or_hub_id: A model directory or hub id.
        hub: The hub's arguments (`revision`, ...).

    Raises:
        MissingFileError: when no weight file is found (the message lists the names looked for).
        CheckpointError: when the file cannot be read.
    """
    single = resolve_file(path_or_hub_id, WEIGHTS_NAME, required=False, hub=hub)
    if single is not None:
        reader = SafetensorsReader(single)
        native = reader.metadata.get("library") == "xlm_flax"
        return SafetensorsSource([single], "flax" if native else "torch")
    index = resolve_file(path_or_hub_id, WEIGHTS_INDEX_NAME, required=False, hub=hub)
    if index is not None:
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f).get("weight_map", {})
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:  # AttributeError: not an object
            raise CheckpointError(f"{index} is not a JSON object with a weight_map ({e}); download it again") from e
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{index}: weight_map is not an object of file names; download it again")
        shards = sorted(set(weight_map.values()))
        if not shards:
            raise CheckpointError(f"{index} lists no shards; download it again")
        for shard in shards:
            check_shard_name(index, shard)
        return SafetensorsSource([resolve_file(path_or_hub_id, shard, hub=hub) for shard in shards], "torch")
    torch_file = resolve_file(path_or_hub_id, TORCH_WEIGHTS_NAME, required=False, hub=hub)
    if torch_file is not None:
        return TorchFileSource(torch_file)
    raise MissingFileError(
        f"{os.fspath(path_or_hub_id)} has no weights: expected {WEIGHTS_NAME}, {WEIGHTS_INDEX_NAME} or "
        f"{TORCH_WEIGHTS_NAME}"
    )


def check_shard_name(index: str, shard: str) -> None:
    """Refuses a shard name of an index file that could lead outside the model directory.

    A weight map is data from the checkpoint: `../../x` or `/etc/x` would read a file the user never gave.

    Args:
        index: The index file, for messages.
        shard: A file name from its `weight_map`.

    Raises:
        CheckpointError: for an absolute name, one with `..`, or one that is not a `.safetensors` file.
    """
    parts = shard.replace("\\", "/").split("/")
    if (
        not shard
        or os.path.isabs(shard)
        or shard.startswith(("/", "\\"))
        or ".." in parts
        or "\0" in shard
        or ":" in shard
        or not shard.endswith(".safetensors")
    ):
        raise CheckpointError(
            f"{index}: weight_map names the shard {shard[:80]!r}, which is not a .safetensors file inside the model "
            "directory; the index is damaged or hostile: download it again"
        )


__all__ = [
    "ArraySource",
    "SafetensorsSource",
    "TensorSource",
    "TorchFileSource",
    "check_shard_name",
    "open_weights",
    "torch_to_numpy",
]
