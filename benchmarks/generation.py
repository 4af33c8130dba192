"""Greedy generation: tokens per second of `XLMWithLMHeadModel.generate` against transformers' `generate()` on the
same machine and the same random weights, and the compile time of the generation loop.

    python -m benchmarks.generation                                   # small model, batch 1 and 8
    python -m benchmarks.generation --preset xlm-clm-enfr-1024 --new-tokens 16

The model (a small 4 x 256 causal config by default, or a preset's architecture) gets seeded random weights, is
saved in transformers' layout and loaded by both libraries. Prompts are random ids of `--prompt` tokens; the end of
sentence is set to an id the random model does not produce early, so every run generates `--new-tokens` tokens
(the figures divide by the tokens actually generated). transformers is warmed up with a two-token run first. Ours is timed twice: the first call compiles the loop (its
time minus the second's is the compile time), the second is steady state. Both our schemes are timed: `causal`
(next token from the last position) and `transformers` (the scheme transformers' `generate()` runs).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial

import numpy as np
from flax import nnx

from xlm_flax import XLMConfig, XLMWithLMHeadModel

SMALL = dict(vocab_size=1000, emb_dim=256, n_layers=4, n_heads=8, max_position_embeddings=512, causal=True)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", help="a preset architecture (e.g. xlm-clm-enfr-1024); default: a small model")
    parser.add_argument("--prompt", type=int, default=16, help="prompt length in tokens (default 16)")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens to generate (default 16)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    args = parser.parse_args()

    import torch
    import transformers

    config = XLMConfig.preset(args.preset) if args.preset else XLMConfig(**SMALL)
    with tempfile.TemporaryDirectory() as directory:
        XLMWithLMHeadModel(config, rngs=nnx.Rngs(0)).save_pretrained(directory, format="pytorch")
        ours = XLMWithLMHeadModel.from_pretrained(directory)
        theirs = transformers.XLMWithLMHeadModel.from_pretrained(directory).eval()
    torch.set_num_threads(torch.get_num_threads())
    name = args.preset or "small 4x256"
    print(f"{name}: emb {config.emb_dim}, {config.n_layers} layers, vocab {config.vocab_size}, prompt {args.prompt}")
    rng = np.random.default_rng(0)
    for batch in args.batch:
        ids = rng.integers(4, config.vocab_size, size=(batch, args.prompt))
        eos = config.vocab_size - 1
        with torch.no_grad():
            theirs.generate(torch.tensor(ids), max_new_tokens=2, do_sample=False)  # warm-up, not timed
            ref, t_ref = _timed(
                partial(
                    theirs.generate,
                    torch.tensor(ids),
                    max_new_tokens=args.new_tokens,
                    do_sample=False,
                    eos_token_id=eos,
                )
            )
            ref = ref.numpy()
        n_ref = batch * (ref.shape[1] - args.prompt)
        line = f"  batch {batch}: transformers {n_ref / t_ref:8.1f} tok/s"
        for mode in ("causal", "transformers"):
            run = partial(ours.generate, ids, max_new_tokens=args.new_tokens, mode=mode, eos_token_id=eos)
            _, first = _timed(run)
            out, steady = _timed(run)
            n = batch * (out.shape[1] - args.prompt)
            line += f" | ours {mode} {n / steady:8.1f} tok/s (compile {first - steady:5.1f} s)"
            if mode == "transformers":
                line += f", same ids as transformers: {bool(np.array_equal(out, ref))}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
