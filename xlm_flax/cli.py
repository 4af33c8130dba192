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


def cmd_train(args: argparse.Namespace) -> int:
    """`xlm-flax train MODEL TRAIN_FILE OUTPUT_DIR`."""
    from xlm_flax.training import TrainConfig, train

    config = TrainConfig(
        model=args.model,
        train_file=args.train_file,
        output_dir=args.output_dir,
        objective=args.objective,
        from_scratch=args.from_scratch,
        langs=tuple(args.langs.split(",")) if args.langs else (),
        steps=args.steps,
        batch_size=args.batch_size,
        accumulation=args.accumulation,
        buckets=tuple(int(b) for b in args.buckets.split(",")),
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        schedule=args.schedule,
        weight_decay=args.weight_decay,
        dtype=args.dtype,
        remat=args.remat,
        mesh_shape=(args.data, args.model_parallel),
        seed=args.seed,
        num_labels=args.num_labels,
        log_every=args.log_every,
        save_every=args.save_every,
    )
    train(config, resume=not args.no_resume, log=_print_err)
    return 0


def add_train(sub: argparse._SubParsersAction) -> None:
    """Arguments of `xlm-flax train`."""
    p = sub.add_parser(
        "train",
        help="pretrain (MLM/TLM/CLM) or fine-tune (classification) a model on a text file",
        description="Train with optax on every device; checkpoints go to OUTPUT_DIR/checkpoints (a rerun resumes), "
        "the final model to OUTPUT_DIR/model.",
    )
    p.add_argument("model", help="model directory (config.json, tokenizer files, and weights unless --from-scratch)")
    p.add_argument("train_file", help="one sentence per line; 'a<TAB>b' for tlm; 'text<TAB>label' for classification")
    p.add_argument("output_dir")
    p.add_argument("--objective", default="mlm", choices=["mlm", "tlm", "clm", "classification"])
    p.add_argument("--from-scratch", action="store_true", help="initialise the weights instead of loading them")
    p.add_argument("--langs", default="", help="language codes, e.g. en,fr for the two TLM columns")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--accumulation", type=int, default=1, help="microbatches per optimiser step")
    p.add_argument("--buckets", default="32,64,128", help="allowed sequence lengths (default: 32,64,128)")
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--schedule", default="linear", choices=["linear", "cosine", "constant"])
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")
    p.add_argument("--remat", action="store_true", help="recompute layer activations in the backward pass")
    p.add_argument("--data", type=int, default=-1, help="data-parallel mesh size (default: all devices)")
    p.add_argument("--model-parallel", type=int, default=1, help="model-parallel mesh size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-labels", type=int, default=None, help="classification classes (default: largest label + 1)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (default: only at the end)")
    p.add_argument("--no-resume", action="store_true", help="ignore checkpoints already in OUTPUT_DIR")


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
