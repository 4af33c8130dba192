"""`TextLineSource`: random access to the lines of a text file without holding the file in memory.

The index keeps the byte offset of every `block`-th line only (8 bytes per 64 lines by default: 2.5 MB for 20 million
lines); line `i` is read by seeking to its block and reading forward at most `block` lines. The file is scanned once,
in chunks, with numpy. The object is picklable (the open file is not part of its state), so it can be read from
worker processes.
"""

from __future__ import annotations

import os

import numpy as np

from xlm_flax.errors import InputError, MissingFileError

_SCAN_CHUNK = 1 << 20  # bytes read per step of the scan: its transient memory is ~3x this


def _scan(path: str, block: int) -> tuple[np.ndarray, int]:
    """Offsets of lines 0, block, 2*block, ... and the number of lines (a last line without newline counts)."""
    offsets = [np.zeros(1, np.int64)]
    n_lines, position, last_byte = 0, 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(_SCAN_CHUNK):
            ends = np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10) + position + 1  # start of the next line
            # Line k starts at the end of line k-1: keep the starts of lines block, 2*block, ...
            numbers = np.arange(n_lines + 1, n_lines + 1 + len(ends))
            offsets.append(ends[numbers % block == 0].astype(np.int64))
            n_lines += len(ends)
            position += len(chunk)
            last_byte = chunk[-1:]
    if position and last_byte != b"\n":
        n_lines += 1
    index = np.concatenate(offsets)
    return index[: (n_lines + block - 1) // block] if n_lines else index[:0], n_lines


class TextLineSource:
    """The lines of a UTF-8 text file (without their newline), by number; `len()` counts every line.

    Args:
        path: The file.
        block: Lines per index entry (memory: 8 bytes per `block` lines; reading a line reads up to `block` lines).

    Raises:
        MissingFileError: the file does not exist.
        InputError: the file is empty.
    """

    def __init__(self, path: str | os.PathLike, *, block: int = 64):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise MissingFileError(f"training file {self.path} does not exist; give a text file, one example per line")
        self.block = block
        self.offsets, self.n_lines = _scan(self.path, block)
        if not self.n_lines:
            raise InputError(f"{self.path} is empty; give a text file, one example per line")
        self._file = None

    def __len__(self) -> int:
        return self.n_lines

    def __getitem__(self, index: int) -> str:
        if not 0 <= index < self.n_lines:
            raise IndexError(f"line {index} of {self.n_lines}")
        if self._file is None:
            self._file = open(self.path, "rb")  # noqa: SIM115 (kept open for the object's life; closed in close())
        block, within = divmod(int(index), self.block)
        self._file.seek(int(self.offsets[block]))
        for _ in range(within):
            self._file.readline()
        return self._file.readline().rstrip(b"\r\n").decode("utf-8")

    def close(self) -> None:
        """Closes the file (reopened on the next read)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None}

    def __repr__(self) -> str:
        return f"TextLineSource({self.path!r}, {self.n_lines} lines)"


__all__ = ["TextLineSource"]
