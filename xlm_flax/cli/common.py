"""What every command shares: the program name, the usage error and the one-line argument parser."""

from __future__ import annotations

import argparse
import sys

PROG = "xlm-flax"


class UsageError(Exception):
    """Bad command-line usage (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _print_err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# jax-free, so that `--help` stays cheap; the model checks the name (`xlm_flax.model.precision`).
PRECISION_HELP = (
    "matmul precision, as JAX names it: highest (default: float32 parity on GPU/TPU), default (TF32 on GPU, "
    "one bfloat16 pass on TPU), tensorfloat32, bfloat16, or a dot algorithm such as F32_F32_F32, BF16_BF16_F32_X3"
)


__all__ = ["PRECISION_HELP", "PROG", "UsageError"]
