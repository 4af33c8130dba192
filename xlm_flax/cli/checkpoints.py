"""`xlm-flax convert` and `xlm-flax export`."""

from __future__ import annotations

import argparse
import dataclasses

from xlm_flax.cli.common import (
    PROG,
    UsageError,
    _print_err,
    add_common_flags,
    add_hub_arguments,
    hub_kwargs,
    print_json,
)
from xlm_flax.cli.signals import handles_termination


@handles_termination
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
            causal=args.causal,
            log=_print_err,
        )
    elif args.codes is not None or args.cased or args.causal is not None:
        raise UsageError(
            f"{PROG} convert: --codes, --cased and --causal/--no-causal apply only to an original XLM .pth file"
        )
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
    _print_report(report, args.json)
    return 0


def _print_report(report, as_json: bool) -> None:
    if as_json:
        print_json(dataclasses.asdict(report))
    else:
        print(report.summary())


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
    convert.add_argument(
        "--causal",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="original XLM .pth only: convert as a causal (CLM) model or not (default: causal when params have "
        "clm_steps and no mlm_steps, as the original trainer records the objective; the choice is printed)",
    )
    add_common_flags(
        convert,
        json_output="the report (destination, architecture, format, dtype, n_tensors, n_parameters, "
        "tokenizer_files, max_abs_diff)",
    )
    add_hub_arguments(convert)


@handles_termination
def cmd_export(args: argparse.Namespace) -> int:
    """`xlm-flax export SRC DST`.

    Args:
        args: The parsed command line.
    """
    if args.format == "sentence-transformers":
        return _export_sentence_transformers(args)
    if args.pooling is not None or args.normalize:
        raise UsageError(f"{PROG} export: --pooling and --normalize apply only to --format sentence-transformers")
    from xlm_flax.checkpoints.export import export_checkpoint

    report = export_checkpoint(args.source, args.destination, force=args.force, log=_print_err)
    _print_report(report, args.json)
    return 0


def _export_sentence_transformers(args: argparse.Namespace) -> int:
    from xlm_flax.inference.embeddings import Embedder

    pooling = args.pooling or "mean"
    embedder = Embedder.from_pretrained(args.source, pooling=pooling)
    embedder.save_sentence_transformers(args.destination, normalize_embeddings=args.normalize, force=args.force)
    result = {
        "destination": args.destination,
        "format": "sentence-transformers",
        "architecture": "XLMModel",
        "pooling": pooling,
        "normalize": args.normalize,
        "dimension": embedder.dim,
    }
    if args.json:
        print_json(result)
    else:
        print(
            f"wrote {args.destination}: sentence-transformers model (transformers XLMModel, {pooling} pooling"
            f"{', normalized' if args.normalize else ''}, {embedder.dim} dimensions); load it with "
            f"sentence_transformers.SentenceTransformer({args.destination!r})"
        )
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    """Arguments of `xlm-flax export`.

    Args:
        sub: The subparsers of the `xlm-flax` parser, to add the command to.
    """
    export = sub.add_parser(
        "export",
        help="export a checkpoint to a transformers (PyTorch) or sentence-transformers directory",
        description="--format pytorch (the default): write config.json + model.safetensors with transformers' names "
        "and the tokenizer files, loadable by transformers, from a native checkpoint directory. --format "
        "sentence-transformers: write a directory sentence_transformers.SentenceTransformer loads, giving the "
        "vectors of `xlm-flax embed` / Embedder.encode with the same --pooling and --normalize (native or "
        "transformers source; models with language embeddings are refused, as sentence-transformers passes no "
        "language ids).",
    )
    export.add_argument("source", metavar="SRC", help="checkpoint directory (save_pretrained / convert)")
    export.add_argument("destination", metavar="DST", help="output directory (must not exist or be empty)")
    export.add_argument(
        "--format", default="pytorch", choices=["pytorch", "sentence-transformers"], help="what to write"
    )
    export.add_argument(
        "--pooling",
        choices=["mean", "first", "max"],
        help="sentence-transformers only: how token vectors become one sentence vector (default: mean)",
    )
    export.add_argument(
        "--normalize", action="store_true", help="sentence-transformers only: unit-length vectors (a Normalize module)"
    )
    export.add_argument("--force", action="store_true", help="replace DST if it exists and is not empty")
    add_common_flags(export, json_output="what was written")


__all__ = ["add_convert", "add_export", "cmd_convert", "cmd_export"]
