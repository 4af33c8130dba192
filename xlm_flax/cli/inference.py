"""`xlm-flax fill-mask` and `xlm-flax embed`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile

from xlm_flax.cli.common import PRECISION_HELP, add_common_flags, add_hub_arguments, hub_kwargs
from xlm_flax.cli.signals import handles_termination
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
        data = _read_stdin()
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


def _read_stdin() -> bytes:
    """All of standard input; an InputError when there is none (started with `<&-`, or detached)."""
    stdin = sys.stdin
    if stdin is None or getattr(stdin, "closed", False) or not hasattr(stdin, "buffer"):
        raise InputError("standard input is closed: give the texts as arguments or a file (--input FILE)")
    try:
        return stdin.buffer.read()
    except (OSError, ValueError) as e:  # ValueError: "I/O operation on closed file"; OSError: EBADF
        raise InputError(
            f"cannot read standard input ({e}): give the texts as arguments or a file (--input FILE)"
        ) from e


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it; undone at once
    os.umask(mask)
    return mask


def _sweep_embed_leftovers(directory: str) -> None:
    """Removes the `.embed-PID-*.npy` temporary files that killed `embed` runs of dead processes left in `directory`."""
    for name in os.listdir(directory):
        parts = name.split("-")
        if not (name.startswith(".embed-") and name.endswith(".npy") and len(parts) >= 3 and parts[1].isdigit()):
            continue
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
        except (PermissionError, OverflowError):
            continue


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


TOKENIZER_WORKERS_HELP = "processes that tokenize while the model runs (default 0: tokenize in this process)"


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
    p.add_argument("--batch-size", type=int, default=8, help="texts per device batch (default 8)")
    p.add_argument("--tokenizer-workers", type=int, default=0, metavar="N", help=TOKENIZER_WORKERS_HELP)
    p.add_argument("--no-truncate", action="store_true", help="fail on texts longer than the model's maximum")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="compute dtype (default float32)")
    add_common_flags(p, json_output='one object per text, {"input": ..., "predictions": ...} (JSON lines)')
    add_hub_arguments(p)
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

    fill = FillMask.from_pretrained(
        args.model,
        dtype=_dtype(args.dtype),
        precision=args.precision,
        tokenizer_workers=args.tokenizer_workers,
        **hub_kwargs(args),
    )
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
        help="embed sentences (one per line) into a .npy matrix, or JSON lines on stdout",
        description="Embed every line of a UTF-8 text file (or stdin) and save an [n, emb_dim] float32 .npy file, "
        "rows in input order (blank lines included). With --output -, write the vectors to stdout instead as JSON "
        "lines: one JSON array of emb_dim numbers per input line, in input order (each number is the float32 value "
        "exactly, written as the shortest decimal that reads back to it).",
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint directory (with tokenizer files) or hub id")
    p.add_argument("--input", required=True, metavar="FILE", help="text file, one sentence per line; - for stdin")
    p.add_argument(
        "--output", required=True, metavar="OUT.npy", help="where to write the embeddings; - for JSON lines on stdout"
    )
    p.add_argument("--pooling", default="mean", choices=("mean", "first", "max"), help="default mean")
    p.add_argument(
        "--layer", default="-1", help="hidden layer to pool (-1: last), or a list to average, written --layer=-1,-2"
    )
    p.add_argument("--batch-size", type=int, default=32, help="sentences per device batch (default 32)")
    p.add_argument("--tokenizer-workers", type=int, default=0, metavar="N", help=TOKENIZER_WORKERS_HELP)
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
    add_common_flags(p)
    add_hub_arguments(p)


@handles_termination
def cmd_embed(args: argparse.Namespace) -> int:
    """`xlm-flax embed MODEL --input FILE --output OUT.npy`.

    Args:
        args: The parsed command line.
    """
    import numpy as np

    to_stdout = args.output == "-"
    if not to_stdout and not args.output.endswith(".npy"):
        raise InputError(f"--output {args.output}: give a path ending in .npy, or - for JSON lines on stdout")
    layer = parse_layers(args.layer)
    sentences = read_lines(args.input)
    from xlm_flax.inference.embeddings import Embedder

    embedder = Embedder.from_pretrained(
        args.model,
        pooling=args.pooling,
        dtype=_dtype(args.dtype),
        precision=args.precision,
        tokenizer_workers=args.tokenizer_workers,
        **hub_kwargs(args),
    )
    vectors = embedder.encode(
        sentences,
        batch_size=args.batch_size,
        normalize_embeddings=args.normalize,
        layer=layer,
        lang=args.lang,
        show_progress_bar=_progress_flag(args),
        truncation=not args.no_truncate,
    )
    summary = f"{vectors.shape[0]} x {vectors.shape[1]} float32 ({args.pooling} pooling, layer {args.layer})"
    if to_stdout:
        write_json_lines(vectors, sys.stdout)
        print(f"wrote {summary} to stdout as JSON lines", file=sys.stderr)
        return 0
    directory = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(directory, exist_ok=True)
    _sweep_embed_leftovers(directory)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".embed-{os.getpid()}-", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, vectors)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's file is 0600; the output gets what open() would give it
        os.replace(tmp, args.output)
    except BaseException:
        os.unlink(tmp)
        raise
    print(f"wrote {args.output}: {summary}")
    return 0


def write_json_lines(vectors, out) -> None:
    """Writes one JSON array per row of `vectors` (float32 values as the shortest decimals that read back to them).

    Args:
        vectors: `[n, dim]` float32.
        out: A text stream.
    """
    for row in vectors:  # str of a NumPy float32: the shortest decimal that reads back to it, e.g. 0.1 or 1e-20
        out.write("[" + ",".join(str(v) for v in row) + "]\n")
    out.flush()


__all__ = [
    "DTYPES",
    "add_embed",
    "add_fill_mask",
    "cmd_embed",
    "cmd_fill_mask",
    "parse_layers",
    "read_lines",
    "write_json_lines",
]
