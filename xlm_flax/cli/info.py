"""`xlm-flax info`: a checkpoint's config, parameter count, dtype, tokenizer and the devices JAX sees."""

from __future__ import annotations

import argparse

from xlm_flax.cli.common import add_hub_arguments, hub_kwargs


def add_info(sub: argparse._SubParsersAction) -> None:
    """Arguments of `xlm-flax info`.

    Args:
        sub: The subparsers of the `xlm-flax` parser, to add the command to.
    """
    p = sub.add_parser("info", help="describe a model: config, parameters, dtype, tokenizer, devices")
    p.add_argument("model", metavar="MODEL", help="checkpoint directory or hub id")
    add_hub_arguments(p)


def cmd_info(args: argparse.Namespace) -> int:
    """`xlm-flax info MODEL`.

    Args:
        args: The parsed command line.
    """
    import jax
    import numpy as np
    from flax import nnx

    from xlm_flax.checkpoints.hub import hub_options
    from xlm_flax.checkpoints.plan import abstract_model
    from xlm_flax.checkpoints.registry import MODEL_CLASSES
    from xlm_flax.checkpoints.sources import open_weights
    from xlm_flax.config import XLMConfig
    from xlm_flax.errors import MissingFileError
    from xlm_flax.tokenization import load_tokenizer

    hub = hub_kwargs(args)
    config = XLMConfig.from_pretrained(args.model, **hub)
    weights = open_weights(args.model, hub_options(hub))
    try:
        kind, names = weights.kind, weights.names()
        dtypes = sorted({np.dtype(weights.dtype(n)).name for n in names})
        stored = sum(int(np.prod(weights.shape(n))) for n in names)
    finally:
        weights.close()
    architecture = next((a for a in config.architectures if a in MODEL_CLASSES), "XLMModel")
    _, state = nnx.split(abstract_model(MODEL_CLASSES[architecture], config))
    n_params = sum(int(np.prod(v.shape)) for _, v in nnx.to_flat_state(state))
    langs = ", ".join(sorted(config.lang2id, key=config.lang2id.get)) or "(none named)"
    print(f"model: {args.model}")
    print(f"architecture: {architecture} ({'native xlm-flax' if kind == 'flax' else 'transformers'} weights)")
    print(
        f"config: {config.n_layers} layers, emb_dim {config.emb_dim}, {config.n_heads} heads, ffn {config.hidden_dim}, "
        f"vocabulary {config.vocab_size}, max positions {config.max_position_embeddings}"
    )
    print(
        f"languages: {config.n_langs} ({langs}); language embeddings: {'yes' if config.has_lang_embeddings else 'no'}; "
        f"causal: {'yes' if config.causal else 'no'}; activation: {'gelu' if config.gelu_activation else 'relu'}"
    )
    print(f"parameters: {n_params:,} ({stored:,} stored values, dtype {'/'.join(dtypes)})")
    try:
        tokenizer = load_tokenizer(args.model, **hub)
        print(
            f"tokenizer: XLMTokenizer, {tokenizer.vocab_size} tokens, mask token {tokenizer.mask_token} "
            f"(id {tokenizer.mask_token_id}), lowercase {'yes' if tokenizer.do_lower_case else 'no'}"
        )
    except MissingFileError as e:
        print(f"tokenizer: missing ({e})")
    devices = jax.devices()
    print(f"devices: {len(devices)} x {devices[0].platform} ({devices[0].device_kind})")
    return 0


__all__ = ["add_info", "cmd_info"]
