"""`xlm-flax demo`."""

from __future__ import annotations

import argparse
import sys

from xlm_flax.cli.common import add_common_flags
from xlm_flax.errors import InputError


def add_demo(sub: argparse._SubParsersAction) -> None:
    """Arguments of `xlm-flax demo`.

    Args:
        sub: The subparsers of the `xlm-flax` parser, to add the command to.
    """
    p = sub.add_parser(
        "demo",
        help="fill-mask and embeddings end to end on the small trained model shipped with xlm-flax (offline)",
        description="Runs fill-mask on a few Python-documentation sentences, sentence embeddings with a cosine table "
        "and an encode throughput run, with timings, on the small English model shipped with xlm-flax "
        "(xlm_flax/data/xlm-small-en; no torch needed). When torch is installed it also compares the model with "
        "transformers' PyTorch XLM on the same weights.",
    )
    p.add_argument("--model", help="run on this checkpoint directory or hub id instead of the shipped small model")
    p.add_argument(
        "--no-parity", action="store_true", help="skip the comparison with PyTorch (when torch is installed)"
    )
    p.add_argument("--sentences", type=int, default=512, help="sentences in the throughput run (default 512)")
    add_common_flags(p)


def cmd_demo(args: argparse.Namespace) -> int:
    """`xlm-flax demo`.

    Args:
        args: The parsed command line.
    """
    from xlm_flax.demo import run_demo

    if args.sentences < 1:
        raise InputError(f"--sentences {args.sentences}: must be at least 1")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    run_demo(args.model, n_sentences=args.sentences, parity=not args.no_parity, log=log)
    return 0


__all__ = ["add_demo", "cmd_demo"]
