"""`xlm-flax train`."""

from __future__ import annotations

import argparse

from xlm_flax.cli.common import PRECISION_HELP, _print_err


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
        buckets=tuple(int(b) for b in args.buckets.split(",")),
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
    p.add_argument("--precision", default=None, help=PRECISION_HELP)
    p.add_argument("--remat", action="store_true", help="recompute layer activations in the backward pass")
    p.add_argument("--data", type=int, default=-1, help="data-parallel mesh size (default: all devices)")
    p.add_argument("--model-parallel", type=int, default=1, help="model-parallel mesh size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-labels", type=int, default=None, help="classification classes (default: largest label + 1)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (default: only at the end)")
    p.add_argument("--no-resume", action="store_true", help="ignore checkpoints already in OUTPUT_DIR")


__all__ = ["add_train", "cmd_train"]
