"""Fuzzing the safetensors reader with hypothesis: any bytes, any header dictionary and nearly valid headers either
load or raise `CheckpointError`, and exactly the files that `safetensors.safe_open` accepts load (but for a tensor
named twice, which `safe_open` reads as one and this reader refuses)."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest

pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis (pip install hypothesis, in the test extra)")

from helpers import raw_safetensors_file as _file  # noqa: E402
from helpers import safe_open_tensors as _reference  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from xlm_flax.checkpoints.safetensors_io import SafetensorsReader  # noqa: E402
from xlm_flax.errors import CheckpointError  # noqa: E402

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
