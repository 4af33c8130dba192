"""Convert a transformers XLM checkpoint into an xlm-flax directory (same as `xlm-flax convert`).

    python convert/convert.py FacebookAI/xlm-mlm-en-2048 ./xlm-en-2048 [--dtype bfloat16] [--verify] [--force]

Uses only the public API: `xlm_flax.checkpoints.convert_checkpoint`. See convert/README.md.
"""

from __future__ import annotations

import argparse
import sys

from xlm_flax import XLMFlaxError
from xlm_flax.checkpoints import convert_checkpoint


def main(argv: list[str] | None = None) -> int:
    """Parses the arguments, converts, prints a summary; returns the exit status (2 on bad input)."""
    parser = argparse.ArgumentParser(description="Convert a transformers XLM checkpoint to an xlm-flax directory.")
    parser.add_argument("source", help="hub id (FacebookAI/xlm-mlm-en-2048) or local transformers directory")
    parser.add_argument("destination", help="output directory (must not exist or be empty, unless --force)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--verify", action="store_true", help="compare with PyTorch on random tokens (needs torch)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty destination")
    args = parser.parse_args(argv)
    try:
        report = convert_checkpoint(
            args.source,
            args.destination,
            dtype=args.dtype,
            force=args.force,
            verify=args.verify,
            log=lambda line: print(line, file=sys.stderr),
        )
    except (XLMFlaxError, OSError) as e:
        print(f"convert.py: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(f"wrote {report.destination}: {report.architecture}, {report.n_parameters:,} parameters ({args.dtype})")
    if report.max_abs_diff is not None:
        print(f"largest difference against PyTorch: {max(report.max_abs_diff.values()):.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
