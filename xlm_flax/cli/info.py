"""`xlm-flax info`: a checkpoint's config, parameter count, dtype, tokenizer and the devices JAX sees."""

from __future__ import annotations

import argparse
from typing import Any

from xlm_flax.cli.common import add_common_flags, add_hub_arguments, hub_kwargs, print_json


def add_info(sub: argparse._SubParsersAction) -> None:
    """Arguments of `xlm-flax info`.

    Args:
        sub: The subparsers of the `xlm-flax` parser, to add the command to.
    """
    p = sub.add_parser(
        "info",
        help="describe a model: config, parameters, dtype, tokenizer, devices",
        description="Describe a checkpoint (native or transformers directory, or hub id) without running it: its "
        "architecture, configuration, languages, parameter count and stored dtype, its tokenizer, and the devices "
        "JAX sees here.",
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint directory or hub id")
    add_common_flags(
        p,
        json_output="one object (model, architecture, weights, config, languages, parameters, stored_values, "
        "dtypes, tokenizer, devices)",
    )
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
    from xlm_flax.checkpoints.registry import MODEL_CLASSES, architecture_of
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
    # The loaders' own rule: the config's entry, else (no entry) what the tensor names show; never a guess.
    architecture = architecture_of(config, names)
    _, state = nnx.split(abstract_model(MODEL_CLASSES[architecture], config))
    n_params = sum(int(np.prod(v.shape)) for _, v in nnx.to_flat_state(state))
    info: dict[str, Any] = {
        "model": str(args.model),
        "architecture": architecture,
        "weights": "native" if kind == "flax" else "transformers",
        "config": {
            "n_layers": config.n_layers,
            "emb_dim": config.emb_dim,
            "n_heads": config.n_heads,
            "hidden_dim": config.hidden_dim,
            "vocab_size": config.vocab_size,
            "max_position_embeddings": config.max_position_embeddings,
            "n_langs": config.n_langs,
            "lang_embeddings": bool(config.has_lang_embeddings),
            "causal": bool(config.causal),
            "activation": "gelu" if config.gelu_activation else "relu",
        },
        "languages": sorted(config.lang2id, key=config.lang2id.get),
        "parameters": n_params,
        "stored_values": stored,
        "dtypes": dtypes,
    }
    try:
        tokenizer = load_tokenizer(args.model, **hub)
        info["tokenizer"] = {
            "class": type(tokenizer).__name__,
            "vocab_size": tokenizer.vocab_size,
            "mask_token": tokenizer.mask_token,
            "mask_token_id": tokenizer.mask_token_id,
            "lowercase": bool(tokenizer.do_lower_case),
        }
    except MissingFileError as e:
        info["tokenizer"] = {"missing": str(e)}
    devices = jax.devices()
    info["devices"] = {"count": len(devices), "platform": devices[0].platform, "kind": devices[0].device_kind}
    if args.json:
        print_json(info)
    else:
        _print_text(info)
    return 0


def _print_text(info: dict[str, Any]) -> None:
    c, t, d = info["config"], info["tokenizer"], info["devices"]
    yes = {True: "yes", False: "no"}
    print(f"model: {info['model']}")
    print(
        f"architecture: {info['architecture']} ({'native xlm-flax' if info['weights'] == 'native' else 'transformers'} weights)"
    )
    print(
        f"config: {c['n_layers']} layers, emb_dim {c['emb_dim']}, {c['n_heads']} heads, ffn {c['hidden_dim']}, "
        f"vocabulary {c['vocab_size']}, max positions {c['max_position_embeddings']}"
    )
    print(
        f"languages: {c['n_langs']} ({', '.join(info['languages']) or '(none named)'}); language embeddings: "
        f"{yes[c['lang_embeddings']]}; causal: {yes[c['causal']]}; activation: {c['activation']}"
    )
    print(
        f"parameters: {info['parameters']:,} ({info['stored_values']:,} stored values, dtype {'/'.join(info['dtypes'])})"
    )
    if "missing" in t:
        print(f"tokenizer: missing ({t['missing']})")
    else:
        print(
            f"tokenizer: {t['class']}, {t['vocab_size']} tokens, mask token {t['mask_token']} "
            f"(id {t['mask_token_id']}), lowercase {yes[t['lowercase']]}"
        )
    print(f"devices: {d['count']} x {d['platform']} ({d['kind']})")


__all__ = ["add_info", "cmd_info"]
