"""`xlm-flax fill-mask` and `xlm-flax embed`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from xlm_flax.cli.common import PRECISION_HELP
from xlm_flax.errors import InputError

DTYPES = ("float32", "bfloat16")


def read_lines(path: str, *, keep_blank: bool = True) -> list[str]:
    """Reads a UTF-8 text file (or stdin for `-`) as a list of lines without their line endings.

    Args:
        path: A file path, or `-` for standard input.
        keep_blank: Keep empty and whitespace-only lines (they still count for line numbers either way).

    Raises:
        InputError: a line is not valid UTF-8 (the message names the file and the line).
        OSError: the file cannot be read.
    """
    name = "standard input" if path == "-" else path
    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(path, "rb") as f:
            data = f.read()
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()  # the final newline ends the last line; it does not start a new one
    lines = []
    for number, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(
                f"{name}: line {number} is not valid UTF-8 (byte {e.start + 1} of the line is {raw[e.start : e.start + 1]!r}); "
                "re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8"
            ) from e
        line = line.removesuffix("\r")
        if number == 1:
            line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark
        if keep_blank or line.strip():
            lines.append(line)
    return lines


def parse_layers(text: str) -> int | list[int]:
    """Parses `--layer`: `-1`, or a comma-separated list such as `-1,-2,-3,-4` (averaged).

    Args:
        text: The option's value.
    """
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise InputError(f"--layer {text!r}: give a layer index such as -1, or a list such as -1,-2") from None
    return values[0] if len(values) == 1 else values


def _dtype(name: str):
    import jax.numpy as jnp

    return jnp.dtype(name)


def _progress_flag(args: argparse.Namespace) -> bool | None:
    return {"auto": None, "always": True, "never": False}[args.progress]


def add_fill_mask(sub: argparse._SubParsersAction) -> None:
    """Arguments of `xlm-flax fill-mask`.

    Args:
        sub: The subparsers of the `xlm-flax` parser, to add the command to.
    """
    p = sub.add_parser(
        "fill-mask",
        help="predict the masked word(s) of texts",
        description="Predict masked words, as transformers' fill-mask pipeline. Write the model's mask token "
        "(<special1> for the public XLM checkpoints) where a word is missing.",
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint directory (with tokenizer files) or hub id")
    p.add_argument("texts", metavar="TEXT", nargs="*", help="texts with the mask token; none: one per line of stdin")
    p.add_argument("--top-k", type=int, default=5, help="predictions per mask (default 5)")
    p.add_argument("--targets", help="comma-separated tokens to restrict the candidates to")
    p.add_argument("--lang", help="language code (e.g. en) for tokenization and language embeddings")
    p.add_argument("--json", action="store_true", help="print one JSON object per text (JSON lines)")
    p.add_argument("--batch-size", type=int, default=8, help="texts per device batch (default 8)")
    p.add_argument("--no-truncate", action="store_true", help="fail on texts longer than the model's maximum")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="compute dtype (default float32)")
    p.add_argument("--precision", default=None, help=PRECISION_HELP)


def cmd_fill_mask(args: argparse.Namespace) -> int:
    """`xlm-flax fill-mask MODEL [TEXT ...]`.

    Args:
        args: The parsed command line.
    """
    texts = args.texts or read_lines("-", keep_blank=False)
    if not texts:
        raise InputError("no text given: pass TEXT arguments or lines on standard input")
    from xlm_flax.inference.fill_mask import FillMask

    fill = FillMask.from_pretrained(args.model, dtype=_dtype(args.dtype), precision=args.precision)
    targets = [t for t in args.targets.split(",") if t] if args.targets else None
    results = fill(
        texts,
        top_k=args.top_k,
        targets=targets,
        lang=args.lang,
        batch_size=args.batch_size,
        truncation=not args.no_truncate,
    )
    for text, result in zip(texts, results):
        if args.json:
            print(json.dumps({"input": text, "predictions": result}, ensure_ascii=False))
            continue
        print(text)
        per_mask = [result] if isinstance(result[0], dict) else result
        for m, candidates in enumerate(per_mask):
            if len(per_mask) > 1:
                print(f"  mask {m + 1}:")
            for c in candidates:
                print(f"  {c['score']:.4f}  {c['token_str']:<16} {c['sequence']}")
    return 0


def add_embed(sub: argparse._SubParsersAction) -> None:
    """Arguments of `xlm-flax embed`.

    Args:
        sub: The subparsers of the `xlm-flax` parser, to add the command to.
    """
    p = sub.add_parser(
        "embed",
        help="embed sentences (one per line) into a .npy matrix",
        description="Embed every line of a UTF-8 text file (or stdin) and save an [n, emb_dim] float32 .npy file, "
        "rows in input order (blank lines included).",
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint directory (with tokenizer files) or hub id")
    p.add_argument("--input", required=True, metavar="FILE", help="text file, one sentence per line; - for stdin")
    p.add_argument("--output", required=True, metavar="OUT.npy", help="where to write the embeddings")
    p.add_argument("--pooling", default="mean", choices=("mean", "first", "max"), help="default mean")
    p.add_argument(
        "--layer", default="-1", help="hidden layer to pool (-1: last), or a list to average, written --layer=-1,-2"
    )
    p.add_argument("--batch-size", type=int, default=32, help="sentences per device batch (default 32)")
    p.add_argument("--normalize", action="store_true", help="scale each vector to unit length")
    p.add_argument("--lang", help="language code (e.g. en) for tokenization and language embeddings")
    p.add_argument("--no-truncate", action="store_true", help="fail on sentences longer than the model's maximum")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="compute dtype (default float32)")
    p.add_argument("--precision", default=None, help=PRECISION_HELP)
    p.add_argument(
        "--progress",
        default="auto",
        choices=("auto", "always", "never"),
        help="progress bar on stderr (auto: long inputs on a terminal)",
    )


def cmd_embed(args: argparse.Namespace) -> int:
    """`xlm-flax embed MODEL --input FILE --output OUT.npy`.

    Args:
        args: The parsed command line.
    """
    import numpy as np

    if not args.output.endswith(".npy"):
        raise InputError(f"--output {args.output}: give a path ending in .npy")
    layer = parse_layers(args.layer)
    sentences = read_lines(args.input)
    from xlm_flax.inference.embeddings import Embedder

    embedder = Embedder.from_pretrained(
        args.model, pooling=args.pooling, dtype=_dtype(args.dtype), precision=args.precision
    )
    vectors = embedder.encode(
        sentences,
        batch_size=args.batch_size,
        normalize=args.normalize,
        layer=layer,
        lang=args.lang,
        show_progress_bar=_progress_flag(args),
        truncation=not args.no_truncate,
    )
    directory = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".embed-", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, vectors)
        os.replace(tmp, args.output)
    except BaseException:
        os.unlink(tmp)
        raise
    print(
        f"wrote {args.output}: {vectors.shape[0]} x {vectors.shape[1]} float32 ({args.pooling} pooling, layer {args.layer})"
    )
    return 0


__all__ = ["DTYPES", "add_embed", "add_fill_mask", "cmd_embed", "cmd_fill_mask", "parse_layers", "read_lines"]
