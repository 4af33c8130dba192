"""The safetensors reader: what the `safetensors` package writes reads back exactly (whole and sliced), every kind of
corrupt file is refused with a `CheckpointError` naming the file and the fix, and on any bytes at all the reader
either loads or raises `CheckpointError`, accepting exactly the files that `safetensors.safe_open` accepts (but for a
tensor named twice, which `safe_open` reads as one and this reader refuses)."""

from __future__ import annotations

import os

import ml_dtypes
import numpy as np
import pytest
from helpers import raw_safetensors_file as _file
from helpers import safe_open_tensors as _reference
from safetensors import safe_open
from safetensors.numpy import save_file

from xlm_flax.checkpoints.safetensors_io import SafetensorsReader, write_safetensors
from xlm_flax.errors import CheckpointError

FIX = "download or write it again"


def _f32(shape, offsets) -> dict:
    return {"dtype": "F32", "shape": shape, "data_offsets": offsets}


# ------------------------------------------------------------------------------------------------ good files


def test_reads_what_the_safetensors_package_writes(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "bf16": rng.standard_normal((4, 2)).astype(ml_dtypes.bfloat16),
        "f16": rng.standard_normal(7).astype(np.float16),
        "f64": rng.standard_normal((2, 1, 3)),
        "i64": rng.integers(-(2**40), 2**40, (2, 2)),
        "u16": rng.integers(0, 2**16, 5).astype(np.uint16),
        "bool": rng.random(6) < 0.5,
        "scalar": np.array(3.5, np.float32),
        "empty": np.zeros((0, 4), np.float32),
    }
    path = str(tmp_path / "m.safetensors")
    save_file(tensors, path, metadata={"format": "pt"})
    reader = SafetensorsReader(path)
    assert reader.metadata == {"format": "pt"}
    assert sorted(reader.keys()) == sorted(tensors)
    for name, expected in tensors.items():
        assert reader.shape(name) == expected.shape and reader.dtype(name) == expected.dtype, name
        got = reader.read(name)
        assert got.dtype == expected.dtype, name
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_read_slice_is_the_slice_of_the_tensor(tmp_path):
    array = np.arange(6 * 8 * 5, dtype=np.float32).reshape(6, 8, 5)
    path = str(tmp_path / "m.safetensors")
    save_file({"a": array, "b": np.ones(3, np.int32)}, path)
    reader = SafetensorsReader(path)
    for index in [
        (slice(None), slice(None), slice(None)),
        (slice(2, 4), slice(None), slice(None)),
        (slice(None), slice(4, 8), slice(None)),
        (slice(1, 2), slice(0, 3), slice(2, 5)),
        (slice(3, 3), slice(None), slice(None)),
    ]:
        got = reader.read_slice("a", index)
        np.testing.assert_array_equal(got, array[index], err_msg=str(index))
        assert type(got) is np.ndarray and got.flags.writeable and got.base is None  # a copy, not a view of a map
    np.testing.assert_array_equal(reader.read_slice("b", (slice(1, None),)), [1, 1])


def test_streaming_writer_output_is_read_by_safetensors(tmp_path):
    arrays = {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "y": np.arange(5, dtype=ml_dtypes.bfloat16)}
    path = str(tmp_path / "w.safetensors")
    write_safetensors(path, [(n, a.shape, a.dtype) for n, a in arrays.items()], arrays.__getitem__, {"k": "v"})
    with safe_open(path, framework="numpy") as f:
        assert f.metadata() == {"k": "v"}
        for name, expected in arrays.items():
            np.testing.assert_array_equal(f.get_tensor(name), expected)
    assert SafetensorsReader(path).metadata == {"k": "v"}


def test_a_file_without_tensors_is_empty(tmp_path):
    reader = SafetensorsReader(_file(tmp_path, {"__metadata__": None}))
    assert reader.keys() == [] and reader.metadata == {}


# ------------------------------------------------------------------------------------------------ corrupt files

CORRUPT = {
    # name: (header, data, length override, what the message must say)
    "too short": (b"", b"", None, "too short"),
    "header over 100 MB": (b"{}", b"", 100_000_001, "over 100 MB"),
    "header past the end": (b"{}", b"", 50, "runs past the end"),
    "not UTF-8": (b'{"\xff": 1}', b"", None, "not UTF-8"),
    "not JSON": (b"{nope", b"", None, "not valid JSON"),
    "truncated JSON": (b'{"a": {"dtype": "F32"', b"", None, "not valid JSON"),
    "duplicate name": (
        b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
        b"\0" * 4,
        None,
        "appears twice",
    ),
    "NaN": (b'{"a": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 4]}}', b"\0" * 4, None, "not valid JSON"),
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, b"", None, "not valid JSON"),
    "header a list": ([1, 2], b"", None, "not an object"),
    "header a string": (b'"x"', b"", None, "not an object"),
    "metadata a list": ({"__metadata__": ["x"]}, b"", None, "__metadata__"),
    "metadata not strings": ({"__metadata__": {"format": 1}}, b"", None, "__metadata__"),
    "entry a number": ({"a": 3}, b"", None, "dtype, shape and data_offsets"),
    "entry without offsets": ({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4, None, "data_offsets"),
    "unknown dtype": ({"a": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, None, "'Q9'"),
    "dtype numpy cannot hold": (
        {"a": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}},
        b"\0" * 4,
        None,
        "'F8_E4M3'",
    ),
    "dtype not a string": ({"a": {"dtype": 32, "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, None, "dtype 32"),
    "shape not a list": ({"a": _f32(4, [0, 16])}, b"\0" * 16, None, "shape 4"),
    "negative dimension": ({"a": _f32([-1], [0, 4])}, b"\0" * 4, None, "shape [-1]"),
    "fractional dimension": ({"a": _f32([1.0], [0, 4])}, b"\0" * 4, None, "shape [1.0]"),
    "boolean dimension": ({"a": _f32([True], [0, 4])}, b"\0" * 4, None, "shape [True]"),
    "dimension past 64 bits": ({"a": _f32([2**64], [0, 4])}, b"\0" * 4, None, "non-negative integers"),
    "three offsets": ({"a": _f32([1], [0, 4, 4])}, b"\0" * 4, None, "data_offsets [0, 4, 4]"),
    "negative offset": ({"a": _f32([1], [-4, 0])}, b"\0" * 4, None, "data_offsets [-4, 0]"),
    "fractional offset": ({"a": _f32([1], [0, 4.0])}, b"\0" * 4, None, "data_offsets [0, 4.0]"),
    "offsets backwards": ({"a": _f32([0], [4, 0])}, b"\0" * 4, None, "spans bytes 4..0"),
    "span not the tensor's size": ({"a": _f32([2], [0, 4])}, b"\0" * 4, None, "takes 8 bytes"),
    "gap": ({"a": _f32([1], [0, 4]), "b": _f32([1], [8, 12])}, b"\0" * 12, None, "bytes 4..8 unused"),
    "leading gap": ({"a": _f32([1], [4, 8])}, b"\0" * 8, None, "bytes 0..4 unused"),
    "overlap": ({"a": _f32([2], [0, 8]), "b": _f32([1], [4, 8])}, b"\0" * 8, None, "overlaps"),
    "same bytes twice": ({"a": _f32([1], [0, 4]), "b": _f32([1], [0, 4])}, b"\0" * 4, None, "overlaps"),
    "data cut short": ({"a": _f32([2], [0, 8])}, b"\0" * 4, None, "take 8 bytes of data but the file holds 4"),
    "trailing data": ({"a": _f32([1], [0, 4])}, b"\0" * 8, None, "take 4 bytes of data but the file holds 8"),
    "data without tensors": ({}, b"\0" * 4, None, "take 0 bytes of data but the file holds 4"),
}


STRICTER_THAN_REFERENCE = {"duplicate name"}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_file_is_refused_naming_file_problem_and_fix(case, tmp_path):
    header, data, length, says = CORRUPT[case]
    path = _file(tmp_path, header, data, length=length)
    if case == "too short":
        with open(path, "wb") as f:
            f.write(b"\x01\x02\x03")
    with pytest.raises(CheckpointError) as info:
        SafetensorsReader(path)
    message = str(info.value)
    assert path in message and FIX in message and says in message, message
    # The reference implementation refuses it too, but for a header that names a tensor twice, where it silently
    # keeps one of the two entries.
    assert (_reference(path) is None) == (case not in STRICTER_THAN_REFERENCE)


@pytest.mark.parametrize("read", ["read", "read_slice"])
def test_file_cut_short_after_opening_is_refused(read, tmp_path):
    path = str(tmp_path / "m.safetensors")
    save_file({"a": np.arange(64, dtype=np.float32).reshape(8, 8)}, path)
    reader = SafetensorsReader(path)
    os.truncate(path, os.path.getsize(path) - 4)
    with pytest.raises(CheckpointError, match="cut short") as info:
        reader.read("a") if read == "read" else reader.read_slice("a", (slice(0, 2), slice(None)))
    assert path in str(info.value)
