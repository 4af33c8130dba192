"""Reading and writing safetensors files one tensor at a time, with NumPy and no torch.

Why not the `safetensors` package for everything: its `safe_open` memory-maps the file, so every tensor read stays
in the process's resident memory until the file is closed (a full-size conversion would hold the whole input), and
its `save_file` needs every output tensor in memory at once. Converting xlm-mlm-en-2048 must stay near one copy of
the parameters, so we read with plain `readinto` and write each tensor as it is produced. The format is the
documented one (8-byte little-endian header length, JSON header, raw little-endian data); files written here are
read by the `safetensors` package and by transformers, which the tests check.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterable, Mapping

import ml_dtypes
import numpy as np

from xlm_flax.errors import CheckpointError

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}


_CODES = {dtype: code for code, dtype in _DTYPES.items()}


_MAX_HEADER = 100 * 1024 * 1024  # the limit the reference implementation enforces


class SafetensorsReader:
    """Random access to the tensors of one safetensors file, reading only the bytes of the tensor asked for.

    Args:
        path: The `.safetensors` file.

    Raises:
        CheckpointError: if the file is not a well-formed safetensors file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            with open(self.path, "rb") as f:
                size_bytes = f.read(8)
                if len(size_bytes) != 8:
                    raise CheckpointError(f"{self.path} is too short to be a safetensors file")
                (header_size,) = struct.unpack("<Q", size_bytes)
                if header_size > _MAX_HEADER:
                    raise CheckpointError(f"{self.path}: header of {header_size} bytes; not a safetensors file")
                header = json.loads(f.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{self.path} is not a safetensors file (unreadable header: {e})") from e
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._data_start = 8 + header_size
        self._entries: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = {}
        file_size = os.path.getsize(self.path)
        for name, entry in header.items():
            try:
                dtype = _DTYPES[entry["dtype"]]
                shape = tuple(int(d) for d in entry["shape"])
                begin, end = (int(o) for o in entry["data_offsets"])
            except (KeyError, TypeError, ValueError) as e:
                raise CheckpointError(f"{self.path}: malformed entry for tensor {name!r} ({e!r})") from e
            if end - begin != dtype.itemsize * int(np.prod(shape)) or self._data_start + end > file_size:
                raise CheckpointError(f"{self.path}: tensor {name!r} has inconsistent offsets; the file is corrupt")
            self._entries[name] = (dtype, shape, begin, end)

    def keys(self) -> list[str]:
        """Names of the tensors in the file."""
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of tensor `name`, without reading it.

        Args:
            name: Tensor name.
        """
        return self._entries[name][1]

    def dtype(self, name: str) -> np.dtype:
        """NumPy dtype of tensor `name`, without reading it.

        Args:
            name: Tensor name.
        """
        return self._entries[name][0]

    def read(self, name: str) -> np.ndarray:
        """Reads tensor `name` into a new NumPy array.

        Args:
            name: Tensor name.
        """
        dtype, shape, begin, end = self._entries[name]
        out = np.empty(shape, dtype=dtype)
        with open(self.path, "rb") as f:
            f.seek(self._data_start + begin)
            view = memoryview(out.reshape(-1).view(np.uint8))
            if f.readinto(view) != end - begin:
                raise CheckpointError(f"{self.path}: tensor {name!r} is truncated; the file is corrupt")
        return out


def write_safetensors(
    path: str | os.PathLike,
    specs: Iterable[tuple[str, tuple[int, ...], np.dtype]],
    produce: Callable[[str], np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Writes a safetensors file, asking for one tensor at a time.

    Args:
        path: Output file (written in place: callers write into a temporary directory and rename).
        specs: `(name, shape, dtype)` of every tensor, in the order they are written.
        produce: Returns the array for a name; it must match its spec. Only one is held at a time.
        metadata: String key/values stored in the header's `__metadata__`.
    """
    specs = [(name, tuple(shape), np.dtype(dtype)) for name, shape, dtype in specs]
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, shape, dtype in specs:
        if dtype not in _CODES:
            raise CheckpointError(f"tensor {name!r}: dtype {dtype} cannot be stored in safetensors")
        nbytes = dtype.itemsize * int(np.prod(shape))
        header[name] = {"dtype": _CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # pad so that tensor data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for name, shape, dtype in specs:
            array = np.ascontiguousarray(produce(name))
            if array.shape != shape or array.dtype != dtype:
                raise CheckpointError(
                    f"tensor {name!r}: produced {array.dtype}{list(array.shape)}, expected {dtype}{list(shape)}"
                )
            f.write(memoryview(array.reshape(-1).view(np.uint8)))


__all__ = ["SafetensorsReader", "write_safetensors"]
