"""Reading and writing safetensors files one tensor at a time, with NumPy and no torch.

Why not the `safetensors` package for reading: `safe_open` memory-maps the whole file for as long as the handle is
open, and every page a read touches stays in the process's resident set until it is closed. Measured with
`benchmarks/safetensors_rss.py` (a 1280 MiB float32 file of 20 tensors of 64 MiB written by `write_safetensors`,
every tensor read one at a time in a child process, peak `ru_maxrss`; python + numpy + safetensors alone: 36 MiB):

| reader                                   | peak RSS |
| ---------------------------------------- | -------- |
| `SafetensorsReader.read` (`readinto`)    | 98 MiB   |
| `safe_open(...).get_tensor`, held open   | 1371 MiB (the whole file) |
| `safe_open` reopened for every tensor    | 155 MiB  |

Reopening bounds the resident set but parses the whole header on every read: 3.3 ms a tensor on a 1000-tensor file
(102 KiB header), 3.3 s to read it where one open takes 11 ms (same script). So this module reads a whole tensor
with `readinto` and a slice through a `numpy.memmap` that lives only for that read (only the pages of the slice are
read, and they leave the resident set with the map), and checks the header itself as strictly as the reference implementation
(`parse_header`). The package's `save_file` needs every output tensor in memory at once, so `write_safetensors`
writes each tensor as it is produced. The format is the documented one (8-byte little-endian header length, JSON
header, raw little-endian data); files written here are read by the `safetensors` package and by transformers, and
the tests check that this reader accepts exactly what `safe_open` accepts, but for a header that names a tensor twice
(`safe_open` keeps one of the two entries; this reader refuses the file).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

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
    "U64": np.dtype(np.uint64),
    "U32": np.dtype(np.uint32),
    "U16": np.dtype(np.uint16),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}


_CODES = {dtype: code for code, dtype in _DTYPES.items()}


_MAX_HEADER = 100_000_000  # bytes: the limit the reference implementation enforces


_MAX_INT = 2**64  # offsets and dimensions are unsigned 64-bit integers in the reference implementation


_FIX = "the file is damaged or not a safetensors file: download or write it again"


class TensorEntry(NamedTuple):
    """Where one tensor lies in a safetensors file.

    Attributes:
        dtype: NumPy dtype.
        shape: Shape.
        begin: Offset of its first byte, from the start of the data section.
        end: Offset one past its last byte.
    """

    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


def _is_int(value: Any) -> bool:
    # JSON `true` parses to a bool, which is an int to Python but not an integer to the format.
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_INT


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicate = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"the key {duplicate!r} appears twice")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_header(path: str, raw: bytes, data_size: int) -> tuple[dict[str, str], dict[str, TensorEntry]]:
    """Parses and checks a safetensors header: the metadata and where each tensor lies.

    Checks what the reference implementation checks: the header is a JSON object; `__metadata__` (optional) maps
    strings to strings; every other entry has a known `dtype`, a `shape` of non-negative integers and two
    non-negative integer `data_offsets` whose span is the tensor's byte size; sorted by offset, the tensors follow
    each other without gap or overlap and end exactly at the end of the file.

    Args:
        path: The file, for messages.
        raw: The header bytes (after the 8-byte length).
        data_size: Bytes in the file after the header.

    Returns:
        `(metadata, {name: TensorEntry})`, the entries in the header's order.

    Raises:
        CheckpointError: naming the file, the first problem found and the fix.
    """

    def fail(problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: {problem}; {_FIX}")

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError as e:
        raise fail(f"the header is not UTF-8 text ({e.reason} at byte {e.start})") from e
    except (ValueError, RecursionError) as e:  # json.JSONDecodeError is a ValueError
        raise fail(f"the header is not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise fail(f"the header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise fail("__metadata__ is not an object of strings")
    entries: dict[str, TensorEntry] = {}
    for name, entry in header.items():
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise fail(f"tensor {name!r} is not an object with dtype, shape and data_offsets")
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(code, str) or code not in _DTYPES:
            raise fail(f"tensor {name!r} has dtype {code!r}, not one of {', '.join(_DTYPES)}")
        if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
            raise fail(f"tensor {name!r} has shape {shape!r}, not a list of non-negative integers")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
            raise fail(f"tensor {name!r} has data_offsets {offsets!r}, not two non-negative integers")
        begin, end = offsets
        nbytes = math.prod(shape) * _DTYPES[code].itemsize
        if end < begin or end - begin != nbytes:
            raise fail(f"tensor {name!r} spans bytes {begin}..{end}, but {code}{shape} takes {nbytes} bytes")
        entries[name] = TensorEntry(_DTYPES[code], tuple(shape), begin, end)
    covered = 0
    for name, entry in sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin != covered:
            what = (
                "overlaps the tensor before it"
                if entry.begin < covered
                else f"leaves bytes {covered}..{entry.begin} unused"
            )
            raise fail(f"tensor {name!r} (bytes {entry.begin}..{entry.end}) {what}")
        covered = entry.end
    if covered != data_size:
        raise fail(f"the tensors take {covered} bytes of data but the file holds {data_size}")
    return metadata, entries


class SafetensorsReader:
    """Random access to the tensors of one safetensors file, reading only the bytes asked for.

    The header is read and checked once (`parse_header`); no file handle or mapping stays open between reads.

    Args:
        path: The `.safetensors` file.

    Raises:
        CheckpointError: if the file is not a well-formed safetensors file (the message says what is wrong).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        with open(self.path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            size_bytes = f.read(8)
            if len(size_bytes) != 8:
                raise CheckpointError(f"{self.path}: {file_size} bytes, too short for a safetensors header; {_FIX}")
            (header_size,) = struct.unpack("<Q", size_bytes)
            if header_size > _MAX_HEADER:
                raise CheckpointError(f"{self.path}: header length {header_size} is over 100 MB; {_FIX}")
            if header_size > file_size - 8:
                raise CheckpointError(
                    f"{self.path}: header length {header_size} runs past the end of the file ({file_size} bytes); "
                    f"{_FIX}"
                )
            raw = f.read(header_size)
        self._data_start = 8 + header_size
        self.metadata, self._entries = parse_header(self.path, raw, file_size - self._data_start)

    def keys(self) -> list[str]:
        """Names of the tensors in the file, in the header's order."""
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of tensor `name`, without reading it.

        Args:
            name: Tensor name.
        """
        return self._entries[name].shape

    def dtype(self, name: str) -> np.dtype:
        """NumPy dtype of tensor `name`, without reading it.

        Args:
            name: Tensor name.
        """
        return self._entries[name].dtype

    def read(self, name: str) -> np.ndarray:
        """Reads tensor `name` into a new NumPy array.

        Args:
            name: Tensor name.

        Raises:
            CheckpointError: the file was cut short since it was opened.
        """
        dtype, shape, begin, end = self._entries[name]
        out = np.empty(shape, dtype=dtype)
        with open(self.path, "rb") as f:
            f.seek(self._data_start + begin)
            if f.readinto(memoryview(out.reshape(-1).view(np.uint8))) != end - begin:
                raise CheckpointError(f"{self.path}: tensor {name!r} is cut short; {_FIX}")
        return out

    def read_slice(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
        """Reads `tensor[index]` of tensor `name` into a new NumPy array, reading only the pages that hold it.

        Args:
            name: Tensor name.
            index: A tuple of slices over the leading dimensions, e.g. a device's shard as
                `jax.make_array_from_callback` gives it.

        Raises:
            CheckpointError: the file was cut short since it was opened.
        """
        dtype, shape, begin, end = self._entries[name]
        if end == begin:  # numpy cannot map zero bytes
            return np.empty(shape, dtype=dtype)[index]
        if os.path.getsize(self.path) < self._data_start + end:
            raise CheckpointError(f"{self.path}: tensor {name!r} is cut short; {_FIX}")
        # The map lives only inside this call: the pages it read leave the resident set with it (see the module
        # docstring for why a long-lived map is avoided).
        mapped = np.memmap(self.path, dtype=dtype, mode="r", offset=self._data_start + begin, shape=shape)
        try:
            return np.array(mapped[index], copy=True)
        finally:
            del mapped


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


__all__ = ["SafetensorsReader", "TensorEntry", "parse_header", "write_safetensors"]
