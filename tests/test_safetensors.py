"""The safetensors reader: what the `safetensors` package writes reads back exactly (whole and sliced), every kind of
corrupt file is refused with a `CheckpointError` naming the file and the fix, and on any bytes at all the reader
either loads or raises `CheckpointError`, accepting exactly the files that `safetensors.safe_open` accepts (but for a
tensor named twice, which `safe_open` reads as one and this reader refuses)."""

from __future__ import annotations

import json
import os
import struct
import tempfile

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from xlm_flax.checkpoints.safetensors_io import SafetensorsReader, write_safetensors
from xlm_flax.errors import CheckpointError

FIX = "download or write it again"


def _file(directory, header: bytes | dict | list, data: bytes = b"", *, length: int | None = None) -> str:
    """A file of `length` (default: the header's) as 8 little-endian bytes, then the header, then `data`."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path = os.path.join(directory, "t.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


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


# ------------------------------------------------------------------------------------------------ any bytes at all

_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _outcome(path: str) -> dict[str, np.ndarray] | None:
    """The tensors as this reader reads them (whole and as a slice), or None when it refuses the file; anything but
    a `CheckpointError` propagates and fails the test."""
    try:
        reader = SafetensorsReader(path)
    except CheckpointError:
        return None
    arrays = {}
    for name in reader.keys():
        arrays[name] = reader.read(name)
        whole = tuple(slice(None) for _ in reader.shape(name))
        np.testing.assert_array_equal(reader.read_slice(name, whole), arrays[name])
    return arrays


def _reference(path: str) -> dict[str, np.ndarray] | None:
    """The tensors as `safetensors.safe_open` reads them, or None when it refuses the file (or cannot give a NumPy
    array of its dtype)."""
    try:
        with safe_open(path, framework="numpy") as f:
            return {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, AttributeError, TypeError):  # AttributeError/TypeError: float8 and other non-NumPy dtypes
        return None


def _agree(path: str) -> None:
    ours, reference = _outcome(path), _reference(path)
    assert (ours is None) == (reference is None), (ours, reference)
    if ours is not None:
        assert ours.keys() == reference.keys()
        for name in ours:
            assert ours[name].dtype == reference[name].dtype and ours[name].shape == reference[name].shape
            np.testing.assert_array_equal(ours[name], reference[name])


@_SETTINGS
@given(header=st.binary(max_size=120), data=st.binary(max_size=40), length=st.none() | st.integers(0, 2**64 - 1))
def test_any_bytes_load_or_raise_checkpoint_error(header, data, length):
    with tempfile.TemporaryDirectory() as directory:
        _agree(_file(directory, header, data, length=length))


_DTYPE_CODES = ["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "Q9", "f32", 32, None]
_INTS = st.integers(-3, 24) | st.sampled_from([2**63, 2**64 - 1, 2**64]) | st.floats(0, 8) | st.booleans()
_ENTRY = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(_DTYPE_CODES),
        "shape": st.lists(st.integers(0, 4), max_size=3) | st.lists(_INTS, max_size=3) | _INTS,
        "data_offsets": st.lists(st.integers(0, 40), min_size=2, max_size=2) | st.lists(_INTS, max_size=3),
    },
    optional={"extra": st.integers()},
)
_METADATA = st.none() | st.dictionaries(st.text(max_size=3), st.text(max_size=3) | st.integers(), max_size=2)
_HEADERS = st.dictionaries(
    st.text(max_size=4).filter(lambda k: k != "__metadata__"), _ENTRY | st.integers(), max_size=4
)


@st.composite
def _consistent_headers(draw):
    """Headers that are mostly well formed: entries laid end to end from their shapes, then perhaps one damaged."""
    names = draw(st.lists(st.text(max_size=4).filter(lambda k: k != "__metadata__"), unique=True, max_size=4))
    header, offset = {}, 0
    for name in names:
        dtype = draw(st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL"]))
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        size = int(np.prod(shape)) * {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U8": 1, "BOOL": 1}[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if names and draw(st.booleans()):
        entry = header[draw(st.sampled_from(names))]
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        entry[field] = draw(_ENTRY)[field]
    if draw(st.booleans()):
        header["__metadata__"] = draw(_METADATA)
    return header, offset + draw(st.sampled_from([0, 0, 0, -1, 1, 4]))


@_SETTINGS
@given(header=_HEADERS, metadata=_METADATA, data=st.binary(max_size=48))
def test_any_header_loads_or_raises_checkpoint_error(header, metadata, data):
    if metadata is not None:
        header = {"__metadata__": metadata, **header}
    with tempfile.TemporaryDirectory() as directory:
        _agree(_file(directory, header, data))


@_SETTINGS
@given(drawn=_consistent_headers(), seed=st.integers(0, 2**32 - 1))
def test_nearly_valid_headers_load_or_raise_checkpoint_error(drawn, seed):
    header, data_size = drawn
    data = np.random.default_rng(seed).integers(0, 256, max(data_size, 0), dtype=np.uint8).tobytes()
    with tempfile.TemporaryDirectory() as directory:
        _agree(_file(directory, header, data))
