"""What every command shares: the program name, the exit codes, the usage error, the one-line argument parser, its
help formatter (defaults shown), the `--debug` flag and the `--json` printer."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

PROG = "xlm-flax"

# Exit codes (documented in `xlm-flax --help` and the README).
EXIT_OK = 0
EXIT_USAGE = 2  # bad usage or bad input: a missing file, a wrong option, an unreadable line
EXIT_INTERNAL = 70  # an internal failure (a bug in xlm-flax or a library it uses); sysexits' EX_SOFTWARE
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES_HELP = (
    f"exit status: {EXIT_OK} success; {EXIT_USAGE} bad usage or bad input; {EXIT_INTERNAL} internal failure (a bug: "
    f"please report it with the traceback --debug shows); {EXIT_INTERRUPTED} interrupted. Errors are one line on "
    "stderr; --debug (or XLM_FLAX_TRACEBACK=1) shows the traceback instead."
)


class UsageError(Exception):
    """Bad command-line usage (exit status 2)."""


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, adding `(default: X)` to every option with a default worth stating (not None/False,
    and not already stated in its help)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default in (None, False, argparse.SUPPRESS)
            or isinstance(action, argparse._HelpAction | argparse._VersionAction)
            or (not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))
        ):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def add_common_flags(parser: argparse.ArgumentParser, *, json_output: str | None = None) -> None:
    """Flags every command takes: `--debug`, and `--json` for those that print a result.

    Args:
        parser: A command's parser.
        json_output: What `--json` prints, for the help; None adds no `--json`.
    """
    if json_output is not None:
        parser.add_argument("--json", action="store_true", help=f"print {json_output} as JSON instead of text")
    parser.add_argument(
        "--debug", action="store_true", help="on an error, show the Python traceback instead of one line"
    )


def print_json(value: Any) -> None:
    """Prints `value` as one line of JSON on stdout (non-ASCII text as it is)."""
    print(json.dumps(value, ensure_ascii=False))


def _print_err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def configure_logging() -> None:
    """Sends this package's warnings to stderr as `xlm-flax: WARNING: ...`, once each.

    Only the `xlm_flax` logger gets a handler, never the root logger: huggingface_hub and transformers have their
    own handlers, and a root handler too would print each of their warnings twice (their loggers propagate).
    """
    package = logging.getLogger("xlm_flax")
    if not any(getattr(h, "name", None) == _HANDLER_NAME for h in package.handlers):
        handler = _StderrHandler()
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
        package.addHandler(handler)
    package.setLevel(logging.WARNING)


_HANDLER_NAME = "xlm-flax-cli"


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to `sys.stderr` as it is when each message is written, not as it was when the
    handler was made: `main()` called again in one process (tests, notebooks) may run under another stderr, and the
    first one may be closed by then."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: D102 - logging.StreamHandler's attribute
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass  # always the current sys.stderr


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


# jax-free, so that `--help` stays cheap; the model checks the name (`xlm_flax.model.precision`).
PRECISION_HELP = (
    "matmul precision, as JAX names it: highest (default: float32 parity on GPU/TPU), default (TF32 on GPU, "
    "one bfloat16 pass on TPU), tensorfloat32, bfloat16, or a dot algorithm such as F32_F32_F32, BF16_BF16_F32_X3"
)


__all__ = [
    "PRECISION_HELP",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "HelpFormatter",
    "UsageError",
    "add_common_flags",
    "add_hub_arguments",
    "configure_logging",
    "hub_kwargs",
    "print_json",
]
