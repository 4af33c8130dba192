"""`xlm-flax generate`: continue a prompt with a language model."""

from __future__ import annotations

import argparse

from xlm_flax.errors import InputError


def add_generate(sub: argparse._SubParsersAction) -> None:
    """Arguments of `xlm-flax generate`.

    Args:
        sub: The subparsers of the `xlm-flax` parser, to add the command to.
    """
    p = sub.add_parser(
        "generate",
        help="continue a prompt with a language model (greedy, sampling or beam search)",
        description="Continue PROMPT with MODEL's language-model head and print the text. Causal models generate "
        "the next token from the last position (mode 'causal'); masked-LM models use transformers' scheme "
        "(mode 'transformers', token for token what transformers' generate() gives).",
    )
    p.add_argument("model", metavar="MODEL", help="native or transformers checkpoint directory with tokenizer files")
    p.add_argument("prompt", metavar="PROMPT", help="the text to continue")
    p.add_argument("--max-new-tokens", type=int, default=20, help="most tokens to add (default: 20)")
    p.add_argument("--lang", help="language code of the prompt (default: the model's default language)")
    p.add_argument("--mode", choices=("causal", "transformers"), help="generation scheme (default: by the model)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="sample from the smallest set of probability p")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampling (default: 0)")
    p.add_argument("--num-beams", type=int, default=1, help="beam-search width (default: 1, no beam search)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam scores / length**penalty (default: 1)")


def cmd_generate(args: argparse.Namespace) -> int:
    """`xlm-flax generate MODEL PROMPT`.

    Args:
        args: The parsed command line.
    """
    if not args.prompt.strip():
        raise InputError("the prompt is empty: give some text to continue")
    if args.sample and args.num_beams > 1:
        raise InputError("--sample with --num-beams > 1 is not supported: choose one")
    import jax

    from xlm_flax.inference.generation import Generator

    generator = Generator.from_pretrained(args.model)
    (text,) = generator(
        args.prompt,
        lang=args.lang,
        max_new_tokens=args.max_new_tokens,
        mode=args.mode,
        do_sample=args.sample,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        num_beams=args.num_beams,
        length_penalty=args.length_penalty,
        key=jax.random.key(args.seed),
    )
    print(text)
    return 0


__all__ = ["add_generate", "cmd_generate"]
