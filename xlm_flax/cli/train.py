"""`xlm-flax train`."""

from __future__ import annotations

import argparse

from xlm_flax.cli.common import PRECISION_HELP, _print_err, add_common_flags
from xlm_flax.cli.signals import handles_termination


@handles_termination
def cmd_train(args: argparse.Namespace) -> int:
    """`xlm-flax train MODEL TRAIN_FILE OUTPUT_DIR`."""
    from xlm_flax import TrainConfig, train

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
        buckets=args.buckets,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        schedule=args.schedule,
        weight_decay=args.weight_decay,
        dtype=args.dtype,
        precision=args.precision,
        remat=args.remat,
        mesh_shape=(args.data, args.model_parallel),
        seed=args.seed,
        num_labels=args.num_labels,
        log_every=args.log_every,
        save_every=args.save_every,
    )
    train(config, resume=not args.no_resume, log=_print_err, progress=not args.no_progress)
    return 0


def parse_lengths(text: str) -> tuple[int, ...]:
    """Parses `--buckets`: comma-separated sequence lengths of at least 2, such as `32,64,128`.

    Raises:
        argparse.ArgumentTypeError: for anything else (the parser turns it into a one-line usage error).
    """
    try:
        lengths = tuple(int(part) for part in text.split(","))
    except ValueError:
        lengths = ()
    if not lengths or min(lengths) < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: give lengths of at least 2 separated by commas, e.g. 32,64,128")
    return lengths


def add_train(sub: argparse._SubParsersAction) -> None:
    """Arguments of `xlm-flax train`."""
    p = sub.add_parser(
        "train",
        help="pretrain (MLM/TLM/CLM) or fine-tune (classification) a model on a text file",
        description="Train with optax on every device; checkpoints go to OUTPUT_DIR/checkpoints (a rerun resumes), "
        "the final model to OUTPUT_DIR/model. A progress bar shows the loss and throughput; the train step is "
        "compiled once per batch shape (said in a line, and left out of the tokens/s figures).",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="model directory (config.json, tokenizer files, and weights unless --from-scratch)",
    )
    p.add_argument(
        "train_file",
        metavar="TRAIN_FILE",
        help="UTF-8 text, one example per line: a sentence (mlm, clm), 'a<TAB>b' (tlm), 'text<TAB>label' "
        "(classification)",
    )
    p.add_argument("output_dir", metavar="OUTPUT_DIR", help="where checkpoints/ and the final model/ go")
    p.add_argument(
        "--objective",
        default="mlm",
        choices=["mlm", "tlm", "clm", "classification"],
        help="masked LM, translation LM (pairs), causal LM, or fine-tuning a sequence classifier",
    )
    p.add_argument("--from-scratch", action="store_true", help="initialise the weights instead of loading them")
    p.add_argument("--langs", default="", help="language codes, e.g. en,fr for the two TLM columns (default: none)")
    p.add_argument("--steps", type=int, default=1000, help="optimiser steps to train to")
    p.add_argument("--batch-size", type=int, default=32, help="rows per microbatch (a multiple of the data axis)")
    p.add_argument("--accumulation", type=int, default=1, help="microbatches per optimiser step")
    p.add_argument(
        "--buckets",
        default=(32, 64, 128),
        type=parse_lengths,
        help="allowed sequence lengths, comma-separated (default: 32,64,128)",
    )
    p.add_argument("--learning-rate", type=float, default=1e-4, help="peak learning rate (AdamW)")
    p.add_argument("--warmup-steps", type=int, default=100, help="steps of linear warm-up from 0 to the peak")
    p.add_argument(
        "--schedule",
        default="linear",
        choices=["linear", "cosine", "constant"],
        help="learning-rate decay after warm-up",
    )
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")
    p.add_argument("--precision", default=None, help=PRECISION_HELP)
    p.add_argument("--remat", action="store_true", help="recompute layer activations in the backward pass")
    p.add_argument("--data", type=int, default=-1, help="data-parallel mesh size (-1: all devices)")
    p.add_argument("--model-parallel", type=int, default=1, help="model-parallel mesh size")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights, masking and data order")
    p.add_argument("--num-labels", type=int, default=None, help="classification classes (default: largest label + 1)")
    p.add_argument("--log-every", type=int, default=10, help="steps per progress line (mean loss, tokens/s)")
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (default: only at the end)")
    p.add_argument("--no-resume", action="store_true", help="ignore checkpoints already in OUTPUT_DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (the progress lines still print)")
    add_common_flags(p)


__all__ = ["add_train", "cmd_train", "parse_lengths"]
