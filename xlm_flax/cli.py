"""The `xlm-flax` command line.

Every subcommand lives in its own function; heavy imports (JAX, transformers) happen inside them so that `--help`
is instant. Bad usage or bad input exits with status 2 and one line on stderr, never a traceback (set
`XLM_FLAX_TRACEBACK=1` to see one).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from xlm_flax.errors import XLMFlaxError
from xlm_flax.inference_cli import (
    add_demo,
    add_embed,
    add_fill_mask,
    add_info,
    cmd_demo,
    cmd_embed,
    cmd_fill_mask,
    cmd_info,
)

PROG = "xlm-flax"


class UsageError(Exception):
    """Bad command-line usage (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _print_err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- commands


def cmd_convert(args: argparse.Namespace) -> int:
    """`xlm-flax convert SRC DST`.

    Args:
        args: The parsed command line.
    """
    from xlm_flax.conversion import convert_checkpoint
    from xlm_flax.original import convert_original, is_original_checkpoint

    if is_original_checkpoint(args.source):
        if args.verify:
            raise UsageError(f"{PROG} convert: --verify needs a transformers checkpoint, not an original .pth file")
        report = convert_original(
            args.source,
            args.destination,
            codes=args.codes,
            dtype=args.dtype,
            force=args.force,
            lowercase=not args.cased,
            log=_print_err,
        )
    elif args.codes is not None or args.cased:
        raise UsageError(f"{PROG} convert: --codes and --cased apply only to an original XLM .pth file")
    else:
        report = convert_checkpoint(
            args.source, args.destination, dtype=args.dtype, force=args.force, verify=args.verify, log=_print_err
        )
    print(
        f"wrote {report.destination}: {report.architecture}, {report.n_tensors} tensors, "
        f"{report.n_parameters:,} parameters ({args.dtype})"
        + (
            f", tokenizer files: {', '.join(report.tokenizer_files)}"
            if report.tokenizer_files
            else ", no tokenizer files"
        )
    )
    if getattr(report, "max_abs_diff", None) is not None:
        largest = max(report.max_abs_diff.values())
        print(f"verified against PyTorch: largest difference {largest:.3g}")
    return 0


def add_convert(sub: argparse._SubParsersAction) -> None:
    """Arguments of `xlm-flax convert`.

    Args:
        sub: The subparsers of the `xlm-flax` parser, to add the command to.
    """
    convert = sub.add_parser(
        "convert",
        help="convert a transformers XLM checkpoint (hub id or directory) or an original XLM .pth file to a native "
        "checkpoint directory",
        description="Convert a transformers XLM checkpoint into a directory loadable without torch.",
    )
    convert.add_argument(
        "source",
        metavar="SRC",
        help="hub id (FacebookAI/xlm-mlm-en-2048), transformers directory, or original facebookresearch/XLM .pth",
    )
    convert.add_argument("destination", metavar="DST", help="output directory (must not exist or be empty)")
    convert.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="storage dtype of the output (default: float32)",
    )
    convert.add_argument(
        "--verify",
        action="store_true",
        help="run PyTorch and Flax on random tokens and print the largest difference (needs torch)",
    )
    convert.add_argument("--force", action="store_true", help="replace DST if it exists and is not empty")
    convert.add_argument(
        "--codes",
        metavar="CODES",
        help="original XLM .pth only: the BPE codes file the model was trained with (writes vocab.json/merges.txt)",
    )
    convert.add_argument(
        "--cased",
        action="store_true",
        help="original XLM .pth only: the tokenizer keeps case and accents (XLM-17, XLM-100)",
    )


def cmd_export(args: argparse.Namespace) -> int:
    """`xlm-flax export SRC DST`.

    Args:
        args: The parsed command line.
    """
    from xlm_flax.export import export_checkpoint

    report = export_checkpoint(args.source, args.destination, force=args.force, log=_print_err)
    files = ", ".join(report.tokenizer_files) if report.tokenizer_files else "none"
    print(
        f"wrote {report.destination}: transformers {report.architecture}, {report.n_tensors} tensors, "
        f"tokenizer files: {files}"
    )
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    """Arguments of `xlm-flax export`.

    Args:
        sub: The subparsers of the `xlm-flax` parser, to add the command to.
    """
    export = sub.add_parser(
        "export",
        help="export a native checkpoint directory to a transformers (PyTorch) directory",
        description="Write config.json + model.safetensors with transformers' names, loadable by transformers.",
    )
    export.add_argument("source", metavar="SRC", help="native checkpoint directory (save_pretrained / convert)")
    export.add_argument("destination", metavar="DST", help="output directory (must not exist or be empty)")
    export.add_argument("--force", action="store_true", help="replace DST if it exists and is not empty")


# Every subcommand: name -> (function adding its arguments, function running it). One line per command.
COMMANDS: dict[str, tuple[Callable[[argparse._SubParsersAction], None], Callable[[argparse.Namespace], int]]] = {
    "convert": (add_convert, cmd_convert),
    "export": (add_export, cmd_export),
    "fill-mask": (add_fill_mask, cmd_fill_mask),
    "embed": (add_embed, cmd_embed),
    "info": (add_info, cmd_info),
    "demo": (add_demo, cmd_demo),
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
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
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


if __name__ == "__main__":
    sys.exit(main())
