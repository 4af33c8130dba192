"""Packed batching: padding waste, `encode` against sentence-transformers, and XLA:CPU's oneDNN options.

    python -m benchmarks.packing waste                 # 2,000 sentences of 3-60 words: packing vs buckets
    python -m benchmarks.packing encode                # small model shape, 500 sentences
    python -m benchmarks.packing encode --full         # xlm-mlm-en-2048 shape, 5,000 sentences (heavy)
    python -m benchmarks.packing encode --full --sentences 400
    python -m benchmarks.packing onednn [--full]       # the forward on packed rows with and without oneDNN

`waste` = (elements of the token arrays that enter compiled code, padding rows included) / (real tokens, `<s>` and
`</s>` included) - 1, with `encode()`'s defaults (batch_size=32), read from `Embedder.last_token_count`.

`encode` builds transformers' PyTorch `XLMModel` with random weights (seeded), saves it with `save_pretrained`,
and embeds the same sentences with sentence-transformers itself (`SentenceTransformer` over that directory: its
`Transformer` module and mean `Pooling`, its own length sorting and batching), with xlm-flax packed (the default)
and with xlm-flax buckets; each timed after a warm-up on the same sentences (every 10th at full size; shapes compiled
during the timed run anyway are counted), with the largest absolute difference of the vectors from
sentence-transformers'. It also times a 2048² float32 matmul in JAX and torch (best of 5) in the same run: the kernel
ratio. With `--out`, the JSON is rewritten after each system, so a long run keeps what it measured.

`onednn` runs the jitted forward on packed rows (`segment_ids`) in child processes with `XLA_FLAGS` set to each of
`--xla_cpu_use_onednn=true` and `--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true` (both
known to jaxlib 0.10.2) and without them, plus the 2048² matmul.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from tests.helpers import DEFAULT_WORDS, build_test_tokenizer

SMALL = dict(vocab_size=30145, emb_dim=256, n_layers=4, n_heads=8, max_position_embeddings=512)
FULL = "xlm-mlm-en-2048"
ONEDNN = {
    "default": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "onednn+custom_call": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true",
}


def sentences(n: int, low: int = 3, high: int = 60, seed: int = 0) -> list[str]:
    """`n` sentences of `low` to `high` random words of the test vocabulary."""
    rng = np.random.default_rng(seed)
    words = np.array(DEFAULT_WORDS)
    return [" ".join(rng.choice(words, size=int(rng.integers(low, high + 1)))) + " ." for _ in range(n)]


def model_fields(full: bool) -> dict:
    """transformers XLMConfig fields of the benchmark model."""
    if not full:
        return dict(SMALL)
    from xlm_flax import XLMConfig

    c = XLMConfig.preset(FULL)
    return dict(
        vocab_size=c.vocab_size,
        emb_dim=c.emb_dim,
        n_layers=c.n_layers,
        n_heads=c.n_heads,
        max_position_embeddings=c.max_position_embeddings,
    )


def matmul_gflops(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best-of GFLOP/s of an n x n float32 matmul, JAX and torch."""
    import jax
    import jax.numpy as jnp
    import torch

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    ja = jnp.asarray(a)
    f = jax.jit(lambda x: x @ x)
    f(ja).block_until_ready()
    ta = torch.from_numpy(a)
    out = {}
    for name, run in (("jax", lambda: f(ja).block_until_ready()), ("torch", lambda: ta @ ta)):
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        out[name] = 2 * n**3 / best / 1e9
    return out


def build_reference(directory: str, full: bool):
    """A seeded random transformers `XLMModel` saved in `directory` with the test tokenizer."""
    import torch
    import transformers

    vocab = build_test_tokenizer(directory, model_max_length=512)
    fields = model_fields(full)
    assert vocab <= fields["vocab_size"]
    torch.manual_seed(0)
    model = transformers.XLMModel(transformers.XLMConfig(**fields)).eval()
    model.save_pretrained(directory)
    del model


def waste(args) -> dict:
    from xlm_flax import Embedder

    texts = sentences(args.sentences)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        from flax import nnx

        from xlm_flax import XLMConfig, XLMModel
        from xlm_flax.tokenization import load_tokenizer

        vocab = build_test_tokenizer(tmp, model_max_length=512)
        config = XLMConfig(vocab_size=vocab, emb_dim=16, n_layers=1, n_heads=2, max_position_embeddings=512)
        tokenizer = load_tokenizer(tmp)
        for batching in ("packed", "buckets"):
            embedder = Embedder(XLMModel(config, rngs=nnx.Rngs(0)), tokenizer, batching=batching)
            embedder.encode(texts)
            count = embedder.last_token_count
            out[batching] = dict(
                real=count.real,
                computed=count.computed,
                waste=count.waste,
                compilations=embedder.num_compilations,
            )
            print(
                f"{batching:8s}: {count.real} real tokens, {count.computed} computed, waste {count.waste:.1%}, "
                f"{embedder.num_compilations} compiled shapes"
            )
    return out


def encode(args, save=lambda results: None) -> dict:
    """The three systems take turns on consecutive chunks of the sentences, in a rotating order, and the figures so
    far (all three systems on the same sentences) are passed to `save` after each chunk: a run stopped early keeps a
    fair comparison, and a change of machine speed during the run falls on every system alike."""
    import jax
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    from xlm_flax import Embedder

    n = args.sentences or (5000 if args.full else 500)
    texts = sentences(n)
    chunks = args.chunks or (5 if args.full else 1)
    results: dict = {"sentences": n, "chunks": chunks, "full": args.full, "torch_threads": torch.get_num_threads()}
    results["matmul_before"] = matmul_gflops()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        build_reference(tmp, args.full)
        print(f"built and saved the random checkpoint in {time.perf_counter() - start:.0f} s", flush=True)
        word = Transformer(tmp, max_seq_length=512)
        st = SentenceTransformer(modules=[word, Pooling(word.get_embedding_dimension(), "mean")], device="cpu")
        embedders = {b: Embedder.from_pretrained(tmp, pooling="mean", batching=b) for b in ("packed", "buckets")}
        systems = {"sentence_transformers": (lambda t, m=st: m.encode(t, batch_size=32, convert_to_numpy=True), None)}
        for batching, embedder in embedders.items():
            systems[f"xlm_flax_{batching}"] = (lambda t, e=embedder: e.encode(t, batch_size=32), embedder)

        # The warm-up compiles the shapes of the timed run: all the sentences on the small shape; at full size every
        # 10th sentence (the same length distribution, a tenth of the cost). Shapes compiled during the timed run
        # anyway are counted in the results.
        warmup = texts if not args.full else texts[::10]
        for run, _ in systems.values():
            run(texts[: min(len(texts), 64)])
            run(warmup)
        seconds = dict.fromkeys(systems, 0.0)
        compiled = dict.fromkeys(systems, 0)
        tokens = {name: [0, 0] for name in systems}
        vectors: dict[str, list[np.ndarray]] = {name: [] for name in systems}
        bounds = np.linspace(0, n, chunks + 1).astype(int)
        for c, (low, high) in enumerate(zip(bounds[:-1], bounds[1:])):
            names = list(systems)
            for name in names[c % len(names) :] + names[: c % len(names)]:
                run, embedder = systems[name]
                before = embedder.num_compilations if embedder else 0
                start = time.perf_counter()
                vectors[name].append(np.asarray(run(texts[low:high])))
                seconds[name] += time.perf_counter() - start
                if embedder:
                    compiled[name] += embedder.num_compilations - before
                    tokens[name][0] += embedder.last_token_count.real
                    tokens[name][1] += embedder.last_token_count.computed
            done = int(high)
            results["sentences_done"] = done
            reference = np.concatenate(vectors["sentence_transformers"])
            for name in systems:
                results[name] = dict(
                    seconds=seconds[name], sentences_per_s=done / seconds[name], timed_compilations=compiled[name]
                )
                if name != "sentence_transformers":
                    real, computed = tokens[name]
                    results[name]["waste"] = computed / real - 1
                    results[name]["compilations"] = systems[name][1].num_compilations
                    results[name]["max_abs_diff"] = float(np.max(np.abs(np.concatenate(vectors[name]) - reference)))
                    results[name]["vs_sentence_transformers"] = (
                        results[name]["sentences_per_s"] / results["sentence_transformers"]["sentences_per_s"]
                    )
            results["packed_vs_buckets"] = (
                results["xlm_flax_packed"]["sentences_per_s"] / results["xlm_flax_buckets"]["sentences_per_s"]
            )
            print(
                f"{done} sentences: "
                + ", ".join(f"{name} {results[name]['sentences_per_s']:.2f}/s" for name in systems),
                flush=True,
            )
            save(results)
        del st, word, embedders, systems
    results["matmul_after"] = matmul_gflops()
    kernel = {k: max(results["matmul_before"][k], results["matmul_after"][k]) for k in ("jax", "torch")}
    results["matmul_2048_gflops"] = kernel
    results["kernel_ratio_jax_over_torch"] = kernel["jax"] / kernel["torch"]
    results["devices"] = f"{jax.device_count()} x {jax.devices()[0].platform}"
    for name in ("xlm_flax_packed", "xlm_flax_buckets"):
        r = results[name]
        print(
            f"{name}: {r['vs_sentence_transformers']:.2f}x sentence-transformers, max |diff| {r['max_abs_diff']:.2e},"
            f" waste {r['waste']:.1%}"
        )
    print(
        f"packed / buckets {results['packed_vs_buckets']:.2f}x; 2048^2 matmul JAX {kernel['jax']:.0f} GFLOP/s, "
        f"torch {kernel['torch']:.0f} GFLOP/s: kernel ratio {results['kernel_ratio_jax_over_torch']:.2f}"
    )
    return results


def forward_child(full: bool, rows: int, length: int, repeats: int) -> dict:
    """One configuration's forward timings (runs in a child with XLA_FLAGS set)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from xlm_flax import XLMConfig, XLMModel

    fields = model_fields(full)
    model = XLMModel(XLMConfig(**fields), rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(6, fields["vocab_size"], size=(rows, length)), dtype=jnp.int32)
    # rows of several sentences of 10-60 tokens each
    segments = np.zeros((rows, length), dtype=np.int32)
    for r in range(rows):
        start, segment = 0, 1
        while start < length:
            n = min(int(rng.integers(10, 61)), length - start)
            segments[r, start : start + n] = segment
            start, segment = start + n, segment + 1
    segments = jnp.asarray(segments)

    @jax.jit
    def forward(state, ids, segments):
        return nnx.merge(graphdef, state)(ids, segment_ids=segments).last_hidden_state

    forward(state, ids, segments).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        forward(state, ids, segments).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return dict(tokens_per_s=rows * length / best, seconds=best, matmul_jax_gflops=matmul_gflops()["jax"])


def onednn(args) -> dict:
    rows, length = (8, 128) if args.full else (16, 128)
    out = {"rows": rows, "length": length, "full": args.full}
    for name, flags in ONEDNN.items():
        env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip())
        command = [sys.executable, "-m", "benchmarks.packing", "_forward", "--rows", str(rows)]
        command += ["--length", str(length), "--repeats", str(args.repeats)] + (["--full"] if args.full else [])
        child = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        out[name] = json.loads(child.stdout.strip().splitlines()[-1])
        r = out[name]
        print(
            f"{name:20s}: forward {rows} x {length} packed: {r['tokens_per_s']:.0f} tokens/s "
            f"({r['seconds']:.2f} s); 2048^2 matmul {r['matmul_jax_gflops']:.0f} GFLOP/s",
            flush=True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["waste", "encode", "onednn", "_forward"])
    parser.add_argument("--full", action="store_true", help="the xlm-mlm-en-2048 shape (heavy)")
    parser.add_argument("--sentences", type=int, default=None, help="waste: 2000; encode: 500 (5000 with --full)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--chunks", type=int, default=None, help="encode: turns per system (5 with --full, else 1)")
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args()
    if args.what == "_forward":
        print(json.dumps(forward_child(args.full, args.rows, args.length, args.repeats)))
        return
    if args.what == "waste":
        args.sentences = args.sentences or 2000

    def save(results: dict) -> None:
        if args.out:
            with open(args.out + ".tmp", "w") as f:
                json.dump(results, f, indent=1)
            os.replace(args.out + ".tmp", args.out)

    if args.what == "encode":
        save(encode(args, save))
    else:
        save({"waste": waste, "onednn": onednn}[args.what](args))


if __name__ == "__main__":
    main()
