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


__all__ = ["PROG", "UsageError"]
