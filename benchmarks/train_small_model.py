"""Trains the small English XLM that ships in `xlm_flax/data/xlm-small-en`, with this package's training code.

Steps (see `xlm_flax/data/xlm-small-en/MODEL_CARD.md`):
    apt-get download python3.11-doc && dpkg-deb -x python3.11-doc_*.deb /tmp/pydoc
    python benchmarks/prepare_small_corpus.py /tmp/pydoc /tmp/corpus
    python benchmarks/build_small_tokenizer.py /tmp/corpus/train.txt /tmp/tok --vocab-size 4000
    python benchmarks/train_small_model.py /tmp/tok /tmp/corpus/train.txt /tmp/run --steps 450 --emb-dim 128 --learning-rate 2e-3
    python benchmarks/train_small_model.py /tmp/tok /tmp/corpus/train.txt /tmp/run2 --init /tmp/run/model ...
The final model is written to `/tmp/run/model`; the run resumes from `/tmp/run/checkpoints` if stopped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

from xlm_flax import TrainConfig, XLMConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tokenizer", help="directory with vocab.json, merges.txt, tokenizer_config.json")
    parser.add_argument("train_file", help="one sentence per line")
    parser.add_argument("output_dir")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--emb-dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--init", help="continue from this model directory (weights only, fresh optimiser)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32", help="compute dtype (bfloat16 is slow on CPUs without AMX)")
    args = parser.parse_args()

    import json

    with open(os.path.join(args.tokenizer, "vocab.json"), encoding="utf-8") as f:
        vocab_size = len(json.load(f))
    start = os.path.join(args.output_dir, "init")
    os.makedirs(start, exist_ok=True)
    config = XLMConfig(
        vocab_size=vocab_size,
        emb_dim=args.emb_dim,
        n_layers=args.layers,
        n_heads=args.heads,
        n_langs=1,
        max_position_embeddings=64,
        dropout=0.1,
        attention_dropout=0.1,
        embed_init_std=args.emb_dim**-0.5,
        lang2id={"en": 0},
        architectures=("XLMWithLMHeadModel",),
    )
    with open(os.path.join(start, "config.json"), "w", encoding="utf-8") as f:
        f.write(config.to_json_string())
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(args.tokenizer, name), os.path.join(start, name))
    t0 = time.perf_counter()
    trainer = train(
        TrainConfig(
            model=args.init or start,
            train_file=args.train_file,
            output_dir=args.output_dir,
            objective="mlm",
            from_scratch=args.init is None,
            seed=args.seed,
            steps=args.steps,
            batch_size=args.batch_size,
            buckets=(16, 32, 48, 64),
            learning_rate=args.learning_rate,
            warmup_steps=min(200, args.steps // 10),
            schedule="linear",
            weight_decay=0.01,
            dtype=args.dtype,
            log_every=10,
            save_every=100,
            mesh_shape=(1, 1),
        ),
        log=lambda line: print(line, flush=True),
    )
    print(f"trained {trainer.step} steps in {time.perf_counter() - t0:.0f} s (this process)", flush=True)


if __name__ == "__main__":
    main()
