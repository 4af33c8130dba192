"""`xlm-flax convert` and `xlm-flax export`."""

from __future__ import annotations

import argparse

from xlm_flax.cli.common import PROG, UsageError, _print_err, add_hub_arguments, hub_kwargs


def cmd_convert(args: argparse.Namespace) -> int:
    """`xlm-flax convert SRC DST`.

    Args:
        args: The parsed command line.
    """
    from xlm_flax.checkpoints.convert import convert_checkpoint
    from xlm_flax.checkpoints.original import convert_original, is_original_checkpoint

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
            args.source,
            args.destination,
            dtype=args.dtype,
            force=args.force,
            verify=args.verify,
            log=_print_err,
            **hub_kwargs(args),
        )
    print(report.summary())
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
    add_hub_arguments(convert)


def cmd_export(args: argparse.Namespace) -> int:
    """`xlm-flax export SRC DST`.

    Args:
        args: The parsed command line.
    """
    from xlm_flax.checkpoints.export import export_checkpoint

    report = export_checkpoint(args.source, args.destination, force=args.force, log=_print_err)
    print(report.summary())
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


__all__ = ["add_convert", "add_export", "cmd_convert", "cmd_export"]
