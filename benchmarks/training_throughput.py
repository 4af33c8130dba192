"""Training throughput, packed rows against length buckets, on the shipped small model's shape.

    python -m benchmarks.training_throughput                  # 2 rounds x 2 batchings, 60 timed steps each
    python -m benchmarks.training_throughput --steps 100 --rounds 3 --out /tmp/train-packing.json

The model is `xlm-small-en`'s configuration (4 layers x 128, vocabulary 4,000, 64 positions) trained from scratch
with MLM on 20,000 sentences of 3 to 60 words (`benchmarks.packing.sentences`, the waste benchmark's set, in the test
vocabulary, tokenized with the shipped tokenizer), through `Trainer` with `data="grain"`, batch 32:
- `buckets`: one sentence per row, padded to the buckets 16/32/48/64;
- `packed`: `packing=True`, several sentences per row of 64 tokens, `segment_ids` keeping them apart.
Each run first trains `--warmup` steps (every shape compiles there), then `--steps` steps in one logging window;
the trainer's own figure for that window is kept: non-padding tokens per second, compilation excluded. Rounds
alternate the two batchings (A B A B), so that a change in the machine's load falls on both; the best round of each
is reported with all rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile

from benchmarks.packing import sentences

BATCHINGS = ("buckets", "packed")


def run_once(batching: str, train_file: str, work: str, warmup: int, steps: int) -> float:
    """Non-padding tokens/s of `steps` steps after `warmup` steps of one fresh trainer."""
    from xlm_flax import TrainConfig, Trainer, small_model_path

    lines: list[str] = []
    config = TrainConfig(
        model=small_model_path(),
        train_file=train_file,
        output_dir=os.path.join(work, batching),
        objective="mlm",
        from_scratch=True,
        data="grain",
        packing=batching == "packed",
        buckets=(16, 32, 48, 64),
        batch_size=32,
        steps=warmup + steps,
        log_every=warmup + steps,  # logs at the end of each train() call: its window is the timed steps
        save_every=0,
        mesh_shape=(1, 1),
        seed=0,
    )
    trainer = Trainer(config, log=lines.append)
    trainer.train(warmup, progress=False)
    lines.clear()
    trainer.train(progress=False)
    trainer.close()
    rates = [float(m.group(1).replace(",", "")) for m in map(re.compile(r"([\d,]+) tokens/s").search, lines) if m]
    if not rates:
        raise RuntimeError(f"no throughput line in {lines}")
    return rates[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=20, help="steps before the timed window (compilation)")
    parser.add_argument("--steps", type=int, default=60, help="timed steps")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="xlm-flax-train-bench-") as work:
        train_file = os.path.join(work, "train.txt")
        with open(train_file, "w", encoding="utf-8") as f:
            f.write("\n".join(sentences(args.sentences)) + "\n")
        rates: dict[str, list[float]] = {b: [] for b in BATCHINGS}
        for r in range(args.rounds):
            for batching in BATCHINGS:
                rate = run_once(batching, train_file, os.path.join(work, f"round{r}"), args.warmup, args.steps)
                rates[batching].append(rate)
                print(f"round {r + 1} {batching}: {rate:,.0f} non-padding tokens/s", flush=True)
    best = {b: max(v) for b, v in rates.items()}
    results = {"rates": rates, "best": best, "packed_over_buckets": best["packed"] / best["buckets"], **vars(args)}
    print(f"best: buckets {best['buckets']:,.0f}, packed {best['packed']:,.0f} tokens/s: "
          f"{results['packed_over_buckets']:.2f}x")  # fmt: skip
    if args.out:
        with open(args.out + ".tmp", "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
        os.replace(args.out + ".tmp", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
