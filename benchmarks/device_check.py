"""The accelerator check: `python -m benchmarks.device_check [--smoke] --out FILE.json` (markdown next to it).

One command for a lent GPU or TPU machine (under 8 minutes at full size on one chip), and a tiny `--smoke` run that
works anywhere, CPU included, and is part of the test suite. It measures, on JAX's default device:

* **parity** against transformers' PyTorch `XLMWithLMHeadModel` with the same random weights, on the same device
  where PyTorch has it (CUDA; else PyTorch runs on the CPU): LM logits, max |difference|, in float32 with
  `precision="highest"` (expected <= 1e-5: `parity.float32_highest.max_abs_diff`), in float32 with
  `precision="default"` (TF32 / one bfloat16 pass: the tolerance it needs, measured) and with bfloat16 compute;
* **forward throughput** (encoder, bfloat16 weights and compute) at (64, 512) and (256, 128) on the
  xlm-mlm-en-2048 shape: tokens/s, model FLOP utilisation against the chip's bfloat16 peak where it is known,
  against PyTorch bfloat16 on the same GPU with `scaled_dot_product_attention` (transformers' XLM has no SDPA path,
  so the encoder is re-run from its own modules with SDPA, checked against transformers' output) and transformers'
  eager attention;
* whether the **fused attention kernel** ran: the compiled HLO is searched for cuDNN's fused-attention custom call
  (`__cudnn$fmha`) on GPU, for a Pallas TPU kernel (`tpu_custom_call`) on TPU;
* `Embedder.encode` **sentences/s** at full size (bfloat16), first call (compiling) and steady state;
* **compile times** of every jitted forward, and **peak device memory** (`device.memory_stats()`).

Only the public API of `xlm_flax` is used. `--smoke` shrinks every shape (a 2-layer, 64-wide model) so that the run
takes seconds on a CPU; its figures check the script, not the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

# Dense bfloat16 peak FLOP/s per chip by `device_kind` (vendor figures, without sparsity).
PEAK_BF16_FLOPS = {
    "NVIDIA H200": 989e12,
    "NVIDIA H100 80GB HBM3": 989e12,
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA A100-PCIE-40GB": 312e12,
    "NVIDIA L4": 121e12,
    "Tesla T4": 65e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
}

FULL = dict(parity=(8, 128), throughput=((64, 512), (256, 128)), encode=1024, encode_batch=64, repeats=10)
SMOKE = dict(parity=(2, 16), throughput=((2, 32), (4, 16)), encode=16, encode_batch=8, repeats=2)
HIGHEST_TOLERANCE = 1e-5


def log(message: str) -> None:
    print(f"[device_check] {message}", file=sys.stderr, flush=True)


def model_config(smoke: bool):
    """The xlm-mlm-en-2048 shape, or a tiny model of the same kind for `--smoke`."""
    from xlm_flax import XLMConfig

    config = XLMConfig.preset("xlm-mlm-en-2048")
    if smoke:
        config = config.replace(vocab_size=1000, emb_dim=64, n_layers=2, n_heads=4, max_position_embeddings=64)
    return config


def device_info() -> dict[str, Any]:
    import jax

    device = jax.devices()[0]
    kind = device.device_kind
    return {
        "backend": jax.default_backend(),
        "device_kind": kind,
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "peak_bf16_flops": PEAK_BF16_FLOPS.get(kind),
    }


def peak_memory_bytes() -> int | None:
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def model_flops(config: Any, batch: int, length: int) -> int:
    """Matmul FLOPs of one encoder forward (multiply-add = 2): projections, feed-forward, attention products."""
    b, t, d, f = batch, length, config.emb_dim, config.hidden_dim
    return config.n_layers * (8 * b * t * d * d + 4 * b * t * d * f + 4 * b * t * t * d)


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of `repeats` calls of `fn` (which must block until its result is ready)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_tokenizer(directory: str, vocab_size: int) -> None:
    from benchmarks.run import write_tokenizer as write

    write(directory, vocab_size)


# ------------------------------------------------------------------------------------------------ PyTorch side


class Torch:
    """The PyTorch reference: a seeded random transformers `XLMWithLMHeadModel`, saved for xlm-flax to load."""

    def __init__(self, config: Any, directory: str, seed: int = 0):
        import torch
        import transformers

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        torch.manual_seed(seed)
        self.model = transformers.XLMWithLMHeadModel(transformers.XLMConfig(**config.to_dict())).eval()
        self.model.save_pretrained(directory)
        write_tokenizer(directory, config.vocab_size)
        self.model.to(self.device)

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def logits(self, ids, mask):
        torch = self.torch
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.from_numpy(ids).long().to(self.device),
                attention_mask=torch.from_numpy(mask).long().to(self.device),
            )
        return out.logits.float().cpu().numpy()

    def encoder_bf16(self):
        """transformers' encoder, converted to bfloat16 in place (call after parity)."""
        return self.model.transformer.to(self.torch.bfloat16)

    def sdpa_forward(self, encoder, ids, mask):
        """transformers' XLM encoder (post-LayerNorm, GELU, no language embeddings) re-run from its own modules,
        with `torch.nn.functional.scaled_dot_product_attention` in place of its explicit attention."""
        torch = self.torch
        f = torch.nn.functional
        batch, length = ids.shape
        positions = torch.arange(length, device=ids.device)[None]
        x = encoder.embeddings(ids) + encoder.position_embeddings(positions)
        x = encoder.layer_norm_emb(x) * mask[..., None].to(x.dtype)
        allowed = mask[:, None, None, :].bool()
        for i in range(encoder.n_layers):
            attention = encoder.attentions[i]
            heads = attention.n_heads

            def split(t, heads=heads):
                return t.view(batch, length, heads, -1).transpose(1, 2)

            q, k, v = split(attention.q_lin(x)), split(attention.k_lin(x)), split(attention.v_lin(x))
            context = f.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
            x = encoder.layer_norm1[i](x + attention.out_lin(context.transpose(1, 2).reshape(batch, length, -1)))
            x = encoder.layer_norm2[i](x + encoder.ffns[i](x))
            x = x * mask[..., None].to(x.dtype)
        return x


# --------------------------------------------------------------------------------------------------- sections


def _lm_forward(model):
    import jax
    from flax import nnx

    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, ids, mask):
        return nnx.merge(graphdef, state)(ids, attention_mask=mask).logits

    return forward, state


def section_parity(directory: str, torch_ref: Torch, shape: tuple[int, int], config: Any) -> dict[str, Any]:
    import jax.numpy as jnp
    import numpy as np

    from xlm_flax import XLMWithLMHeadModel

    batch, length = shape
    rng = np.random.default_rng(0)
    ids = rng.integers(14, config.vocab_size, size=shape).astype(np.int32)
    mask = np.ones(shape, np.int32)
    mask[0, length // 2 :] = 0  # one padded row
    reference = torch_ref.logits(ids, mask)
    scale = float(np.max(np.abs(reference)))
    out: dict[str, Any] = {"shape": list(shape), "torch_device": torch_ref.device, "reference_max_abs": scale}
    for name, kwargs in {
        "float32_highest": dict(precision="highest"),
        "float32_default": dict(precision="default"),
        "bfloat16": dict(dtype=jnp.bfloat16),
    }.items():
        model = XLMWithLMHeadModel.from_pretrained(directory, **kwargs)
        forward, state = _lm_forward(model)
        start = time.perf_counter()
        logits = np.asarray(forward(state, jnp.asarray(ids), jnp.asarray(mask)), np.float32)
        diff = float(np.max(np.abs(logits - reference)))
        out[name] = {"max_abs_diff": diff, "relative": diff / scale, "first_call_s": time.perf_counter() - start}
        log(f"parity {name}: max |diff| {diff:.3g}")
        del model, state
    out["float32_highest"]["within_1e-5"] = out["float32_highest"]["max_abs_diff"] <= HIGHEST_TOLERANCE
    return out


def _fused_attention_in(compiled_text: str, backend: str) -> bool | None:
    if backend == "gpu":
        return "__cudnn$fmha" in compiled_text
    if backend == "tpu":
        return "tpu_custom_call" in compiled_text
    return None


def section_throughput(directory: str, torch_ref: Torch, config: Any, plan: dict[str, Any]) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from xlm_flax import XLMModel

    backend = jax.default_backend()
    peak = PEAK_BF16_FLOPS.get(jax.devices()[0].device_kind)
    model = XLMModel.from_pretrained(directory, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    graphdef, state = nnx.split(model)

    def forward(state, ids, mask):
        return nnx.merge(graphdef, state)(ids, attention_mask=mask).last_hidden_state

    jitted = jax.jit(forward)
    encoder = torch_ref.encoder_bf16()
    torch = torch_ref.torch
    rows = []
    for batch, length in plan["throughput"]:
        ids = np.random.default_rng(batch + length).integers(14, config.vocab_size, (batch, length)).astype(np.int32)
        mask = np.ones((batch, length), np.int32)
        ids_j, mask_j = jnp.asarray(ids), jnp.asarray(mask)
        start = time.perf_counter()
        compiled = jitted.lower(state, ids_j, mask_j).compile()
        compile_s = time.perf_counter() - start
        fused = _fused_attention_in(compiled.as_text(), backend)
        compiled(state, ids_j, mask_j).block_until_ready()  # warm-up

        def ours(compiled=compiled, ids_j=ids_j, mask_j=mask_j, state=state):
            return compiled(state, ids_j, mask_j).block_until_ready()

        ours_s = timed(ours, plan["repeats"])
        flops = model_flops(config, batch, length)
        row: dict[str, Any] = {
            "batch": batch,
            "length": length,
            "compile_s": compile_s,
            "fused_attention": fused,
            "xlm_flax_s": ours_s,
            "xlm_flax_tokens_per_s": batch * length / ours_s,
            "xlm_flax_mfu": flops / ours_s / peak if peak else None,
        }
        ids_t = torch.from_numpy(ids).long().to(torch_ref.device)
        mask_t = torch.from_numpy(mask).long().to(torch_ref.device)

        def sdpa(ids_t=ids_t, mask_t=mask_t):
            with torch.inference_mode():
                out = torch_ref.sdpa_forward(encoder, ids_t, mask_t)
            torch_ref.sync()
            return out

        def eager(ids_t=ids_t, mask_t=mask_t):
            with torch.inference_mode():
                out = encoder(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
            torch_ref.sync()
            return out

        check = float((sdpa().float() - eager().float()).abs().max())
        for name, fn in (("torch_sdpa", sdpa), ("torch_eager", eager)):
            seconds = timed(fn, plan["repeats"])
            row[f"{name}_s"] = seconds
            row[f"{name}_tokens_per_s"] = batch * length / seconds
            row[f"{name}_mfu"] = flops / seconds / peak if peak else None
        row["torch_sdpa_vs_eager_max_abs_diff"] = check
        row["speedup_vs_torch_sdpa"] = row["torch_sdpa_s"] / ours_s
        log(f"forward {batch}x{length}: {row['xlm_flax_tokens_per_s']:.0f} tok/s, fused attention {fused}")
        rows.append(row)
    del model, state
    return {"dtype": "bfloat16", "rows": rows}


def section_encode(directory: str, plan: dict[str, Any]) -> dict[str, Any]:
    import jax.numpy as jnp

    from benchmarks.run import sentences_for
    from xlm_flax import Embedder

    embedder = Embedder.from_pretrained(directory, dtype=jnp.bfloat16)
    sentences = sentences_for(plan["encode"])
    start = time.perf_counter()
    embedder.encode(sentences, batch_size=plan["encode_batch"])
    first = time.perf_counter() - start
    start = time.perf_counter()
    embedder.encode(sentences, batch_size=plan["encode_batch"])
    steady = time.perf_counter() - start
    log(f"encode: {len(sentences) / steady:.0f} sentences/s")
    return {
        "dtype": "bfloat16",
        "sentences": len(sentences),
        "batch_size": plan["encode_batch"],
        "first_call_s": first,
        "sentences_per_s": len(sentences) / steady,
    }


# ------------------------------------------------------------------------------------------------------ output


def _fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec)


def render(results: dict[str, Any]) -> str:
    """The markdown report of a results dict."""
    d, p = results["device"], results["parity"]
    lines = [
        f"## Device check: {d['device_kind']} ({d['backend']}, {d['device_count']} device(s), jax {d['jax']})"
        + (" — smoke run, tiny shapes" if results["smoke"] else ""),
        "",
        f"Parity against transformers' PyTorch model (torch on {p['torch_device']}), LM logits {p['shape']}:",
        "",
        "| compute | max abs diff | relative |",
        "|---|---|---|",
    ]
    for name in ("float32_highest", "float32_default", "bfloat16"):
        lines.append(f"| {name} | {_fmt(p[name]['max_abs_diff'])} | {_fmt(p[name]['relative'])} |")
    lines += [
        "",
        "Encoder forward, bfloat16 (MFU against the chip's bfloat16 peak where known):",
        "",
        "| batch x length | compile s | fused attention | xlm-flax tok/s | MFU | torch SDPA tok/s | MFU "
        "| torch eager tok/s | speed-up vs SDPA |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["forward"]["rows"]:
        lines.append(
            f"| {r['batch']} x {r['length']} | {_fmt(r['compile_s'], '.1f')} | {_fmt(r['fused_attention'])} "
            f"| {_fmt(r['xlm_flax_tokens_per_s'], '.0f')} | {_fmt(r['xlm_flax_mfu'], '.1%')} "
            f"| {_fmt(r['torch_sdpa_tokens_per_s'], '.0f')} | {_fmt(r['torch_sdpa_mfu'], '.1%')} "
            f"| {_fmt(r['torch_eager_tokens_per_s'], '.0f')} | {_fmt(r['speedup_vs_torch_sdpa'], '.2f')}x |"
        )
    e = results["encode"]
    lines += [
        "",
        f"`Embedder.encode` (bfloat16): {_fmt(e['sentences_per_s'], '.0f')} sentences/s steady, first call "
        f"{_fmt(e['first_call_s'], '.1f')} s ({e['sentences']} sentences, batch {e['batch_size']}). "
        f"Peak device memory: {_fmt(results['peak_memory_bytes'] and results['peak_memory_bytes'] / 2**30, '.2f')} "
        f"GiB. Total {results['total_s']:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def _write_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp", encoding="utf-8") as f:
        f.write(text)
    os.replace(f.name, path)


def run(smoke: bool) -> dict[str, Any]:
    """Every measurement; returns the results dict."""
    start = time.perf_counter()
    plan = SMOKE if smoke else FULL
    config = model_config(smoke)
    logging.getLogger("xlm_flax").setLevel(logging.ERROR)  # the encoder leaves the LM bias unused: expected
    results: dict[str, Any] = {"smoke": smoke, "device": device_info(), "config": config.to_dict()}
    with tempfile.TemporaryDirectory() as directory:
        log(f"building a random transformers model {config.emb_dim}x{config.n_layers}")
        torch_ref = Torch(config, directory)
        results["parity"] = section_parity(directory, torch_ref, plan["parity"], config)
        results["forward"] = section_throughput(directory, torch_ref, config, plan)
        del torch_ref
        results["encode"] = section_encode(directory, plan)
    results["peak_memory_bytes"] = peak_memory_bytes()
    results["total_s"] = time.perf_counter() - start
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny shapes: checks the script in seconds, on any machine"
    )
    parser.add_argument("--out", required=True, help="JSON results file; the markdown table goes next to it (.md)")
    args = parser.parse_args(argv)
    results = run(args.smoke)
    markdown = render(results)
    _write_atomic(args.out, json.dumps(results, indent=2) + "\n")
    _write_atomic(os.path.splitext(args.out)[0] + ".md", markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
