"""What every command shares: the program name, the usage error and the one-line argument parser."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

PROG = "xlm-flax"


class UsageError(Exception):
    """Bad command-line usage (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _print_err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def configure_logging() -> None:
    """Sends this package's warnings to stderr as `xlm-flax: WARNING: ...`, once each.

    Only the `xlm_flax` logger gets a handler, never the root logger: huggingface_hub and transformers have their
    own handlers, and a root handler too would print each of their warnings twice (their loggers propagate).
    """
    package = logging.getLogger("xlm_flax")
    if not any(getattr(h, "name", None) == _HANDLER_NAME for h in package.handlers):
        handler = logging.StreamHandler()
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
        package.addHandler(handler)
    package.setLevel(logging.WARNING)


_HANDLER_NAME = "xlm-flax-cli"


def add_hub_arguments(parser: argparse.ArgumentParser) -> None:
    """The hub's arguments, for a command that takes a hub id (passed on to huggingface_hub)."""
    hub = parser.add_argument_group("hub options (for a hub id)")
    hub.add_argument("--revision", help="branch, tag or commit hash (default: the repository's default branch)")
    hub.add_argument("--token", help="hub access token (default: HF_TOKEN or the saved login)")
    hub.add_argument("--cache-dir", metavar="DIR", help="hub cache directory (default: huggingface_hub's)")
    hub.add_argument("--local-files-only", action="store_true", help="use only the local hub cache, never the network")
    hub.add_argument("--subfolder", help="folder of the repository (or directory) holding the model files")
    hub.add_argument("--force-download", action="store_true", help="download again even when cached")


def hub_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The hub's arguments given on the command line, as keyword arguments of `from_pretrained`."""
    names = ("revision", "token", "cache_dir", "local_files_only", "subfolder", "force_download")
    return {name: getattr(args, name) for name in names if getattr(args, name, None)}


__all__ = ["PROG", "UsageError", "add_hub_arguments", "configure_logging", "hub_kwargs"]
