"""`CheckpointReport`: what a conversion or an export wrote, the one report of `convert_checkpoint`,
`convert_original` and `export_checkpoint`, printed the same way by `xlm-flax convert` and `xlm-flax export`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

# What each format is called in the report: native (`format="flax"`) or transformers (`format="pytorch"`).
FORMAT_NAMES = {"flax": "native", "pytorch": "transformers"}


@dataclasses.dataclass
class CheckpointReport:
    """What a conversion or an export wrote.

    Attributes:
        destination: The directory written.
        architecture: transformers class name of the model (the one to load it with).
        format: `"flax"` (native layout) or `"pytorch"` (transformers' names).
        dtype: Storage dtype of the tensors written (the first tensor's, when they differ).
        n_tensors: Tensors written.
        n_parameters: Parameters written.
        tokenizer_files: Tokenizer files copied or written.
        max_abs_diff: Largest difference against the PyTorch model per output, when verified.
    """

    destination: str
    architecture: str
    format: str
    dtype: str
    n_tensors: int
    n_parameters: int
    tokenizer_files: list[str]
    max_abs_diff: dict[str, float] | None = None

    @classmethod
    def of(
        cls,
        destination: str,
        architecture: str,
        format: str,
        specs: Sequence[tuple[str, tuple[int, ...], np.dtype]],
        tokenizer_files: list[str],
    ) -> CheckpointReport:
        """The report of a file written from `specs`, the `(name, shape, dtype)` of every tensor.

        Args:
            destination: The directory written.
            architecture: transformers class name.
            format: `"flax"` or `"pytorch"`.
            specs: What `write_safetensors` wrote.
            tokenizer_files: Tokenizer files copied or written.
        """
        return cls(
            destination=destination,
            architecture=architecture,
            format=format,
            dtype=np.dtype(specs[0][2]).name if specs else "float32",
            n_tensors=len(specs),
            n_parameters=sum(math.prod(shape) for _, shape, _ in specs),
            tokenizer_files=list(tokenizer_files),
        )

    def summary(self) -> str:
        """One line for the command line: what was written where, and with which tokenizer files."""
        files = f"tokenizer files: {', '.join(self.tokenizer_files)}" if self.tokenizer_files else "no tokenizer files"
        line = (
            f"wrote {self.destination}: {FORMAT_NAMES[self.format]} {self.architecture}, {self.n_tensors} tensors, "
            f"{self.n_parameters:,} parameters ({self.dtype}), {files}"
        )
        if self.max_abs_diff is not None:
            line += f"\nverified against PyTorch: largest difference {max(self.max_abs_diff.values()):.3g}"
        return line


__all__ = ["FORMAT_NAMES", "CheckpointReport"]
