"""Renders the README's benchmark table from a `benchmarks.run` JSON file: `python -m benchmarks.table results.json`.

Add `--note "..."` to state the conditions (e.g. a shared machine) under the machine line.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:,.1f} ms"


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _load(values: list[float] | None) -> str:
    return "?" if not values else f"{values[0]:.1f}"


def machine_line(machine: dict[str, Any]) -> str:
    """One line describing the machine and the library versions."""
    return (
        f"{machine['cpu']}, {machine['cores']} cores, {machine.get('memory_gib')} GiB; "
        f"jax {machine['jax']} (jaxlib {machine['jaxlib']}), flax {machine['flax']}, torch {machine.get('torch')} "
        f"({machine.get('torch_threads')} threads), transformers {machine.get('transformers')}"
        + (f"; XLA_FLAGS={machine['xla_flags']}" if machine.get("xla_flags") else "")
    )


def render(results: dict[str, Any], note: str | None = None) -> str:
    """The markdown of every section present in `results`."""
    s = results["sections"]
    c = results["config"]
    lines = [
        f"Machine: {machine_line(results['machine'])}.",
        f"Model: {c['emb_dim']} x {c['n_layers']} layers, {c['n_heads']} heads, FFN {c['hidden_dim']}, vocabulary "
        f"{c['vocab_size']}, random weights, float32{' (--quick)' if results.get('quick') else ''}. "
        f"Run {results.get('started')}; load average at start / end "
        f"{_load(results['machine'].get('load_average'))} / {_load(results.get('load_average_end'))}.",
    ]
    if note:
        lines.append(note)
    if "matmul" in s:
        m = s["matmul"]
        lines += [
            "",
            f"Matmul ceiling ({m['n']}² fp32, best of {m['jax']['n']}): JAX {m['jax']['gflops']:.0f} GFLOP/s, "
            f"torch {m['torch']['gflops']:.0f} GFLOP/s; ceiling = {m['ceiling_gflops']:.0f} GFLOP/s.",
        ]
    if "forward" in s:
        rows = s["forward"]["rows"]
        lines += [
            "",
            "| batch × length | xlm-flax (jit) | PyTorch eager | torch.compile | xlm-flax / eager | "
            "xlm-flax / compile | xlm-flax ceiling fraction | eager ceiling fraction |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            ours, eager, comp = r["xlm_flax"], r["torch_eager"], r.get("torch_compile")

            def tps(x):
                return "—" if x is None else f"{x['tokens_per_s']:,.0f} tok/s"

            def frac(x):
                return "—" if x is None or x.get("ceiling_fraction") is None else f"{x['ceiling_fraction']:.2f}"

            vs_compile = "—" if comp is None else f"{comp['min_s'] / ours['min_s']:.2f}×"
            lines.append(
                f"| {r['batch']} × {r['length']} | {tps(ours)} | {tps(eager)} | {tps(comp)} | "
                f"{ours['speedup_vs_eager']:.2f}× | {vs_compile} | {frac(ours)} | {frac(eager)} |"
            )
        if s["forward"].get("torch_compile_note"):
            lines.append(f"\ntorch.compile: {s['forward']['torch_compile_note']}.")
    if "compile" in s or "latency" in s:
        lines += ["", "| figure | value |", "|---|---|"]
        if "compile" in s:
            k = s["compile"]
            for name in ("scan", "unrolled"):
                lines.append(
                    f"| compile, {name} layers ({k['n_layers']} layers, 1 × 128): lower + compile | "
                    f"{k[name]['lower_s']:.2f} s + {k[name]['compile_s']:.2f} s = {k[name]['total_s']:.2f} s |"
                )
        if "latency" in s:
            lat = s["latency"]
            lines.append(f"| first call at 1 × 128 (trace + compile + run) | {lat['first_call_s']:.2f} s |")
            lines.append(
                f"| steady-state latency at 1 × 128, median (best): xlm-flax / PyTorch eager | "
                f"{_ms(lat['xlm_flax']['median_s'])} ({_ms(lat['xlm_flax']['min_s'])}) / "
                f"{_ms(lat['torch_eager']['median_s'])} ({_ms(lat['torch_eager']['min_s'])}) |"
            )
        if "convert" in s:
            v = s["convert"]
            lines += [
                f"| `xlm-flax convert` wall time | {v['convert_wall_s']:.1f} s |",
                f"| convert peak RSS / fp32 parameter bytes | {_gib(v['convert_peak_rss_bytes'])} / "
                f"{_gib(v['param_bytes_fp32'])} = {v['convert_rss_ratio']:.2f}× (interpreter + JAX alone: "
                f"{_gib(v['interpreter_baseline_rss_bytes'])}) |",
                f"| load converted directory (`from_pretrained`) | {v['load_s']:.1f} s, peak RSS "
                f"{_gib(v['load_peak_rss_bytes'])} ({v['load_rss_ratio']:.2f}×) |",
            ]
    elif "convert" in s:
        v = s["convert"]
        lines.append(
            f"\nConvert: {v['convert_wall_s']:.1f} s, peak RSS {v['convert_rss_ratio']:.2f}× fp32 params; "
            f"load {v['load_s']:.1f} s."
        )
    if "encode" in s:
        e = s["encode"]
        if e.get("status") != "ok":
            lines.append(f"\nencode: {e.get('status')} ({e.get('reason', '')}).")
        else:
            lines.append(
                f"\nencode ({e['sentences']} sentences, {e['tokens']:,} tokens, batch {e['batch_size']}): xlm-flax "
                f"{e['xlm_flax']['sentences_per_s']:.1f} sentences/s, PyTorch loop "
                f"{e['torch_loop']['sentences_per_s']:.1f} sentences/s = {e['speedup']:.2f}×; "
                f"max |difference| of the vectors {e['max_abs_diff']:.1e}."
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Prints the table of a results file."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.table", description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="JSON written by python -m benchmarks.run")
    p.add_argument("--note", default=None, help="a line on the conditions, printed under the machine line")
    args = p.parse_args(argv)
    with open(args.results, encoding="utf-8") as f:
        print(render(json.load(f), args.note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
