"""Sentences per second of `Embedder.encode`, and the number of compilations over a long random-length stream.

    python benchmarks/encode_throughput.py --model demo --sentences 512
    python benchmarks/encode_throughput.py --model xlm-mlm-en-2048 --sentences 64   # random weights, ~2.7 GB
    python benchmarks/encode_throughput.py --model demo --compilations 10000

`demo` is the small model shipped with xlm-flax (`xlm-flax demo`'s); a preset name (`xlm-mlm-en-2048`, ...) builds that architecture with
random weights (no download) and tokenizes with the small demo vocabulary, so only the shapes are realistic; any
other value is loaded as a checkpoint directory or hub id. Sentences are 3 to 30 random words. The first `encode`
(which compiles each bucket it meets) is timed apart from the second (steady state).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import numpy as np
from flax import nnx

from tests.helpers import DEFAULT_WORDS, build_test_tokenizer
from xlm_flax import Embedder, XLMConfig, XLMModel
from xlm_flax.demo import small_model_path
from xlm_flax.presets import PRESETS
from xlm_flax.tokenization import load_tokenizer

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def sentences(n: int, low: int = 3, high: int = 30, seed: int = 0) -> list[str]:
    """`n` sentences of `low` to `high` random words."""
    rng = np.random.default_rng(seed)
    words = np.array(DEFAULT_WORDS)
    return [" ".join(rng.choice(words, size=int(rng.integers(low, high + 1)))) + " ." for _ in range(n)]


def make_embedder(name: str, dtype: str) -> Embedder:
    """The embedder of the shipped small model, of a preset architecture with random weights, or of a checkpoint."""
    if name == "demo":
        return Embedder.from_pretrained(small_model_path(), dtype=dtype)
    if name.split("/")[-1] in PRESETS:
        config = XLMConfig.preset(name)
        model = XLMModel(config, rngs=nnx.Rngs(0), dtype=dtype)
        with tempfile.TemporaryDirectory() as tmp:
            build_test_tokenizer(tmp)
            tokenizer = load_tokenizer(tmp)
        return Embedder(model, tokenizer)
    return Embedder.from_pretrained(name, dtype=dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="demo, a preset name (random weights), or a checkpoint")
    parser.add_argument("--sentences", type=int, default=512, help="sentences in the throughput run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--compilations", type=int, default=0, help="also count compilations over this many sentences")
    args = parser.parse_args()

    start = time.perf_counter()
    embedder = make_embedder(args.model, args.dtype)
    config = embedder.config
    print(
        f"model {args.model}: {config.n_layers} layers, emb_dim {config.emb_dim}, compute {args.dtype}, "
        f"{jax.device_count()} x {jax.devices()[0].platform}; built/loaded in {time.perf_counter() - start:.1f} s"
    )
    texts = sentences(args.sentences)
    start = time.perf_counter()
    embedder.encode(texts, batch_size=args.batch_size)
    first = time.perf_counter() - start
    start = time.perf_counter()
    embedder.encode(texts, batch_size=args.batch_size)
    steady = time.perf_counter() - start
    print(
        f"encode {len(texts)} sentences (3-30 words), batch {args.batch_size}: first call {first:.2f} s "
        f"({len(texts) / first:.1f} sentences/s, with compilation), second {steady:.2f} s "
        f"({len(texts) / steady:.1f} sentences/s); compilations so far {embedder.num_compilations}"
    )
    if args.compilations:
        compiles = []

        def listener(event: str, duration: float, **kwargs) -> None:
            if event == COMPILE_EVENT:
                compiles.append(duration)

        jax.monitoring.register_event_duration_secs_listener(listener)
        before = embedder.num_compilations
        stream = sentences(args.compilations, low=0, high=120, seed=1)  # 0-120 words: up to and past the maximum
        start = time.perf_counter()
        embedder.encode(stream, batch_size=args.batch_size)
        jax.monitoring.unregister_event_duration_listener(listener)
        print(
            f"{len(stream)} random-length sentences (0-120 words) in {time.perf_counter() - start:.1f} s: "
            f"{len(compiles)} new XLA compilations ({embedder.num_compilations - before} new bucket shapes; "
            f"{embedder.num_compilations} in all, bound {embedder.bucket_count(args.batch_size)} buckets)"
        )


if __name__ == "__main__":
    main()
