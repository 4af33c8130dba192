"""The `xlm-flax` command line: the parser of every command and `main`.

Every command lives in a module of this package; heavy imports (JAX, transformers) happen inside the commands so
that `--help` and `--version` import no JAX. Options may come anywhere among a command's positional arguments
(argparse's intermixed parsing). Exit status: 0 success, 2 bad usage or bad input (one line on stderr, never a
traceback), 70 an internal failure (one line too; `--debug` or `XLM_FLAX_TRACEBACK=1` shows the traceback),
130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from xlm_flax.cli.checkpoints import add_convert, add_export, cmd_convert, cmd_export
from xlm_flax.cli.common import (
    EXIT_CODES_HELP,
    EXIT_INTERNAL,
    EXIT_USAGE,
    PROG,
    UsageError,
    _Parser,
    _print_err,
    configure_logging,
)
from xlm_flax.cli.demo import add_demo, cmd_demo
from xlm_flax.cli.generate import add_generate, cmd_generate
from xlm_flax.cli.inference import add_embed, add_fill_mask, cmd_embed, cmd_fill_mask
from xlm_flax.cli.info import add_info, cmd_info
from xlm_flax.cli.signals import exit_status
from xlm_flax.cli.train import add_train, cmd_train
from xlm_flax.errors import XLMFlaxError

# Every subcommand: name -> (function adding its arguments, function running it). One line per command.
COMMANDS: dict[str, tuple[Callable[[argparse._SubParsersAction], None], Callable[[argparse.Namespace], int]]] = {
    "convert": (add_convert, cmd_convert),
    "export": (add_export, cmd_export),
    "fill-mask": (add_fill_mask, cmd_fill_mask),
    "embed": (add_embed, cmd_embed),
    "generate": (add_generate, cmd_generate),
    "info": (add_info, cmd_info),
    "demo": (add_demo, cmd_demo),
    "train": (add_train, cmd_train),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(
        prog=PROG,
        description="XLM (Lample & Conneau, 2019) in JAX / Flax NNX: convert and export checkpoints, fill-mask, "
        "sentence embeddings, training. Options may come before, between or after a command's positional "
        "arguments. `xlm-flax COMMAND --help` describes a command.",
        epilog=EXIT_CODES_HELP,
    )
    from xlm_flax import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback instead of one line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add_arguments, _ in COMMANDS.values():
        add_arguments(sub)
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Command name -> its parser."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def parse_arguments(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parses `[top-level options] COMMAND [arguments]`, the command's options anywhere among its positionals.

    argparse cannot parse intermixed options through subparsers, so the command's own parser parses what follows
    the command name with `parse_intermixed_args`.

    Args:
        parser: `build_parser()`.
        argv: The arguments.

    Raises:
        UsageError: bad usage (one line).
    """
    argv = list(argv)
    at = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), len(argv))
    top = parser.parse_args(argv[:at])  # --help and --version exit here
    if at == len(argv):
        return top
    commands = _subcommands(parser)
    name = argv[at]
    if name not in commands:
        raise UsageError(
            f"{PROG}: unknown command {name!r}; the commands are {', '.join(commands)} (see {PROG} --help)"
        )
    args = commands[name].parse_intermixed_args(argv[at + 1 :])
    args.command = name
    args.debug = top.debug or getattr(args, "debug", False)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (see the module docstring).

    Args:
        argv: The arguments; None reads `sys.argv[1:]`.
    """
    configure_logging()
    # Without torch, importing transformers logs "PyTorch was not found. Models won't be available..." (an advisory
    # warning): nothing here needs transformers' models, and the extra stderr line would break the one-line errors.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or bool(os.environ.get("XLM_FLAX_TRACEBACK"))
    try:
        parser = build_parser()
        args = parse_arguments(parser, argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return COMMANDS[args.command][1](args)
    except UsageError as e:
        _print_err(str(e))
        return EXIT_USAGE
    except (XLMFlaxError, OSError, UnicodeError) as e:
        if debug:
            traceback.print_exc()
        else:
            _print_err(f"{PROG}: error: {_one_line(e)}")
        return EXIT_USAGE
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM/SIGHUP turned into one by `xlm_flax.cli.signals`
        _print_err(f"{PROG}: interrupted ({e or 'Ctrl-C'})")
        return exit_status(e)
    except Exception as e:  # a bug: still one line, with a status that says so
        if debug:
            traceback.print_exc()
        else:
            _print_err(
                f"{PROG}: internal error: {type(e).__name__}: {_one_line(e)} (a bug in {PROG} or a library it uses; "
                "rerun with --debug for the traceback, and please report it)"
            )
        return EXIT_INTERNAL


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{text}: {error.filename}"
    return " ".join(text.split())


__all__ = ["COMMANDS", "build_parser", "main", "parse_arguments"]
