"""Compile time and forward time of the three layer layouts (`XLMModel(layers=...)`) on one small model.

    python -m benchmarks.layers_layout [--layers 4] [--dim 256] [--batch 1] [--length 128] [--repeats 50]

For each of `scan`, `unrolled` and `per_layer`: the time to lower and compile the jitted forward pass
(state, ids, mask) -> last hidden state (the least of 3), then the median of `--repeats` timed forward calls after
one warm-up. The layouts take turns in both, so that other load on the machine falls on all of them alike.
Float32 on the default device; the weights are random (the timings do not depend on them).
"""

from __future__ import annotations

import argparse
import statistics
import time


def measure(
    layers: int, dim: int, batch: int, length: int, repeats: int, compiles: int = 3
) -> dict[str, dict[str, float]]:
    """{layout: {"compile_s": ..., "forward_ms": ...}} for one model size and input shape."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from xlm_flax import XLMConfig, XLMModel
    from xlm_flax.model.stack import LAYOUTS

    config = XLMConfig(vocab_size=1000, emb_dim=dim, n_layers=layers, n_heads=8, max_position_embeddings=length)
    ids = jnp.asarray(np.random.default_rng(0).integers(6, 1000, size=(batch, length)), jnp.int32)
    mask = jnp.ones((batch, length), jnp.int32)
    forwards, compiled, compile_s, times = {}, {}, {}, {}
    for layout in LAYOUTS:
        graphdef, state = nnx.split(XLMModel(config, rngs=nnx.Rngs(0), layers=layout))

        def forward(state, ids, mask, graphdef=graphdef):
            return nnx.merge(graphdef, state)(ids, attention_mask=mask).last_hidden_state

        forwards[layout] = (forward, state)
        compile_s[layout], times[layout] = [], []
    # The layouts take turns, so that load from other processes falls on all of them alike; the minimum compile
    # time and the median forward time are reported.
    for _ in range(compiles):
        for layout, (forward, state) in forwards.items():
            jax.clear_caches()  # or the second compile of the same program is a cache hit
            start = time.perf_counter()
            compiled[layout] = jax.jit(forward).lower(state, ids, mask).compile()
            compile_s[layout].append(time.perf_counter() - start)
    for layout, (_, state) in forwards.items():
        compiled[layout](state, ids, mask).block_until_ready()  # warm-up
    for _ in range(repeats):
        for layout, (_, state) in forwards.items():
            start = time.perf_counter()
            compiled[layout](state, ids, mask).block_until_ready()
            times[layout].append(time.perf_counter() - start)
    return {
        layout: {"compile_s": min(compile_s[layout]), "forward_ms": 1e3 * statistics.median(times[layout])}
        for layout in LAYOUTS
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    results = measure(args.layers, args.dim, args.batch, args.length, args.repeats)
    print(f"{args.layers} layers x {args.dim}, batch {args.batch} x {args.length}, float32")
    for layout, r in results.items():
        print(f"{layout:>10}: compile {r['compile_s']:.2f} s, forward {r['forward_ms']:.2f} ms")


if __name__ == "__main__":
    main()
