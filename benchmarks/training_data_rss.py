"""Peak resident memory of training data on a small and a multi-gigabyte text file (and the old in-memory path).

    python -m benchmarks.training_data_rss --small-mb 20 --big-gb 2 --out rss.json

Each measurement runs in a fresh child process and reports its own peak RSS (`ru_maxrss`):

* `stream`: `StreamingBatches` (grain: lazy line source, shuffle, FastXLMTokenizer, packing) drawing `--batches`
  batches of 32 x 64 from the file; also the time to index the file.
* `train`: `Trainer` with `data="grain"` (buckets) training the shipped small model (`xlm_flax/data/xlm-small-en`,
  from scratch) for `--steps` steps.
* `memory` (small file only): the same training with `data="memory"` (`TextBatches` reads the whole file).

The files are generated under `--workdir` (default: a temporary directory under /tmp) from random English-like
sentences and deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_MODEL = os.path.join(REPO_ROOT, "xlm_flax", "data", "xlm-small-en")
WORDS = (
    "the of and to in is was for that with as on by at from his an were are which this be has had it not or one "
    "first also their new after its who two her time they she been other when there all during into school year "
    "city would more may world some people over most only team used national south university state can under"
).split()


def generate(path: str, size_bytes: int, seed: int = 0) -> int:
    """Writes random sentences (3-40 words) until the file reaches `size_bytes`; returns the number of lines."""
    rng = np.random.default_rng(seed)
    block = [" ".join(rng.choice(WORDS, size=rng.integers(3, 41))) + " ." for _ in range(50_000)]
    data = ("\n".join(block) + "\n").encode()
    lines, written = 0, 0
    with open(path, "wb") as f:
        while written < size_bytes:
            chunk = data[: size_bytes - written] if written + len(data) > size_bytes else data
            chunk = chunk[: chunk.rfind(b"\n") + 1] or data
            f.write(chunk)
            written += len(chunk)
            lines += chunk.count(b"\n")
    return lines


def child(mode: str, path: str, batches: int, steps: int) -> None:
    """Runs one measurement in this (child) process and prints a JSON line."""
    start = time.perf_counter()
    result: dict = {"mode": mode}
    if mode == "stream":
        from xlm_flax import XLMConfig
        from xlm_flax.tokenization import fast_tokenizer, load_tokenizer
        from xlm_flax.training.streaming import StreamingBatches

        config = XLMConfig.from_pretrained(SMALL_MODEL)
        tokenizer = fast_tokenizer(load_tokenizer(SMALL_MODEL))
        data = StreamingBatches(
            path, tokenizer, config, objective="mlm", batch_size=32, accumulation=1, buckets=(64,), seed=0,
            packing=True, process_index=0, process_count=1,
        )  # fmt: skip
        result["index_s"] = time.perf_counter() - start
        tokens = 0
        t0 = time.perf_counter()
        for _ in range(batches):
            tokens += int(next(data)["attention_mask"].sum())
        result["tokens_per_s"] = tokens / (time.perf_counter() - t0)
        result["lines"] = len(data.source)
        data.close()
    else:
        from xlm_flax.training.config import TrainConfig
        from xlm_flax.training.trainer import Trainer

        with tempfile.TemporaryDirectory() as out:
            config = TrainConfig(
                model=SMALL_MODEL, train_file=path, output_dir=out, from_scratch=True, steps=steps, batch_size=32,
                buckets=(32, 64), log_every=1000, mesh_shape=(1, 1), data="grain" if mode == "train" else "memory",
                warmup_steps=1,
            )  # fmt: skip
            trainer = Trainer(config, log=lambda _: None)
            trainer.train()
    result["seconds"] = time.perf_counter() - start
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result), flush=True)


def measure(mode: str, path: str, batches: int, steps: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.training_data_rss", "--child", mode, "--file", path,
         "--batches", str(batches), "--steps", str(steps)],
        capture_output=True, text=True, cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"{mode} on {path} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small-mb", type=float, default=20)
    p.add_argument("--big-gb", type=float, default=0, help="0 skips the big file (the full run uses 2)")
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--modes", default="stream,train,memory", help="which measurements (memory: small file only)")
    p.add_argument("--workdir")
    p.add_argument("--out")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.file, args.batches, args.steps)
        return {}
    results: dict = {}
    with tempfile.TemporaryDirectory(dir=args.workdir or "/tmp") as workdir:
        files = {"small": args.small_mb * 2**20} if args.small_mb else {}  # --small-mb 0: the big file only
        if args.big_gb:
            files["big"] = args.big_gb * 2**30
        for name, size in files.items():
            path = os.path.join(workdir, f"{name}.txt")
            start = time.perf_counter()
            lines = generate(path, int(size))
            results[name] = {"bytes": os.path.getsize(path), "lines": lines, "generate_s": time.perf_counter() - start}
            modes = [m for m in args.modes.split(",") if m != "memory" or name == "small"]
            for mode in modes:
                results[name][mode] = measure(mode, path, args.batches, args.steps)
                print(json.dumps({name: {mode: results[name][mode]}}), file=sys.stderr, flush=True)
            os.remove(path)
    if "big" in results and "small" in results:
        for mode in set(args.modes.split(",")) - {"memory"}:
            ratio = results["big"][mode]["peak_rss_mb"] / results["small"][mode]["peak_rss_mb"]
            results[f"{mode}_rss_ratio_big_to_small"] = ratio
    print(json.dumps(results, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
