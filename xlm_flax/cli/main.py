"""The `xlm-flax` command line: the parser of every command and `main`.

Every command lives in a module of this package; heavy imports (JAX, transformers) happen inside the commands so
that `--help` and `--version` import no JAX. Bad usage or bad input exits with status 2 and one line on stderr, never
a traceback (set `XLM_FLAX_TRACEBACK=1` to see one).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from xlm_flax.cli.checkpoints import add_convert, add_export, cmd_convert, cmd_export
from xlm_flax.cli.common import PROG, UsageError, _Parser, _print_err, configure_logging
from xlm_flax.cli.demo import add_demo, cmd_demo
from xlm_flax.cli.inference import add_embed, add_fill_mask, cmd_embed, cmd_fill_mask
from xlm_flax.cli.info import add_info, cmd_info
from xlm_flax.cli.train import add_train, cmd_train
from xlm_flax.errors import XLMFlaxError

# Every subcommand: name -> (function adding its arguments, function running it). One line per command.
COMMANDS: dict[str, tuple[Callable[[argparse._SubParsersAction], None], Callable[[argparse.Namespace], int]]] = {
    "convert": (add_convert, cmd_convert),
    "export": (add_export, cmd_export),
    "fill-mask": (add_fill_mask, cmd_fill_mask),
    "embed": (add_embed, cmd_embed),
    "info": (add_info, cmd_info),
    "demo": (add_demo, cmd_demo),
    "train": (add_train, cmd_train),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog=PROG, description="XLM in JAX / Flax NNX.")
    from xlm_flax import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add_arguments, _ in COMMANDS.values():
        add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status.

    Args:
        argv: The arguments; None reads `sys.argv[1:]`.
    """
    configure_logging()
    # Without torch, importing transformers logs "PyTorch was not found. Models won't be available..." (an advisory
    # warning): nothing here needs transformers' models, and the extra stderr line would break the one-line errors.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        return COMMANDS[args.command][1](args)
    except UsageError as e:
        _print_err(str(e))
        return 2
    except (XLMFlaxError, OSError, UnicodeError) as e:
        if os.environ.get("XLM_FLAX_TRACEBACK"):
            raise
        _print_err(f"{PROG}: error: {_one_line(e)}")
        return 2
    except KeyboardInterrupt:
        _print_err(f"{PROG}: interrupted")
        return 130


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{text}: {error.filename}"
    return " ".join(text.split())


__all__ = ["COMMANDS", "build_parser", "main"]
