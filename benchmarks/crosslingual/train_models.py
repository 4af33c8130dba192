"""Trains the small multilingual XLM from scratch: MLM only, or MLM alternating with TLM (the paper's recipe).

The existing `Trainer` runs one objective on one file; XLM pretrains on several streams. This script keeps the
trainer (its jitted step, optimiser, orbax checkpoints) and gives it an `AlternatingBatches` source:

- `mlm`: one MLM stream per language (`train.<lang>`, each row tagged with its language id), taken in turn;
- `mlm+tlm`: every other step a TLM step, over `train.en-<lang>.tsv` pairs in both directions (en→xx and xx→en,
  as XLM's TLM), the MLM steps as above. A TLM row is two sentences, so TLM batches hold half as many rows
  (`--batch-size // 2`): a step sees about the same number of tokens whatever its objective, and both runs get the
  same budget in steps and (nearly) in tokens.

Masking is the same for both (15 % of non-special tokens, 80/10/10; `mlm_prepare`). The run resumes from
`OUT/checkpoints` (parameters, optimiser state, step, and the position of every stream), so it can be stopped and
restarted with the same command. `--time-limit` stops cleanly (checkpoint written) after that many seconds, for
smoke runs and sessions that end; the final model goes to `OUT/model` when `--steps` is reached.

Usage:
    python benchmarks/crosslingual/train_models.py /tmp/xl-model /tmp/xl-corpus /tmp/xl-run-mlm --objective mlm
    python benchmarks/crosslingual/train_models.py /tmp/xl-model /tmp/xl-corpus /tmp/xl-run-tlm --objective mlm+tlm
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence

from xlm_flax import TrainConfig
from xlm_flax.training.data import Batch, TextBatches


class AlternatingBatches:
    """Batches from several `TextBatches` streams in a fixed schedule, resumable like one stream.

    Step `i` takes group `i % len(groups)`, and within it stream `(i // len(groups)) % len(group)`: with groups
    `[mlm_streams, tlm_streams]` MLM and TLM steps alternate, each cycling over its languages. The position is the
    number of batches drawn; `seek` recomputes every stream's own `(epoch, offset)` from it.

    Args:
        groups: Lists of streams.
    """

    def __init__(self, groups: Sequence[Sequence[TextBatches]]):
        self.groups = [list(g) for g in groups if g]
        self.drawn = 0
        self.langs = self.groups[0][0].langs  # what Trainer.evaluate would read; unused in pretraining

    process_local = False  # every process draws the global batch, as TextBatches does

    def save_args(self) -> dict:
        """Extra orbax checkpoint items: none (the position goes into the trainer's JSON metadata)."""
        return {}

    restore_args = save_args

    def _stream(self, i: int) -> TextBatches:
        group = self.groups[i % len(self.groups)]
        return group[(i // len(self.groups)) % len(group)]

    @property
    def position(self) -> dict[str, int]:
        """`{"epoch": batches drawn, "offset": 0}` (the trainer's checkpoint fields)."""
        return {"epoch": self.drawn, "offset": 0}

    def seek(self, epoch: int, offset: int) -> None:
        """Continues after `epoch` batches drawn (`offset` is always 0)."""
        del offset
        counts: dict[int, int] = {}
        for i in range(epoch):
            key = id(self._stream(i))
            counts[key] = counts.get(key, 0) + 1
        for group in self.groups:
            for stream in group:
                n = counts.get(id(stream), 0)
                per_epoch = len(stream.lines) // stream.per_step
                stream.seek(n // per_epoch, (n % per_epoch) * stream.per_step)
        self.drawn = epoch

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        stream = self._stream(self.drawn)
        self.drawn += 1
        return next(stream)


def _reversed_tsv(source: str, target: str) -> str:
    with open(source, encoding="utf-8") as f:
        lines = [line.rstrip("\n").split("\t", 1) for line in f if line.strip()]
    tmp = target + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(f"{b}\t{a}\n" for a, b in lines))
    os.replace(tmp, target)
    return target


def build_streams(trainer, corpus: str, langs: list[str], objective: str, work: str, batch_size: int, seed: int):
    """The MLM streams (one per language) and, for `mlm+tlm`, the TLM streams (each pair, both directions)."""
    common = dict(accumulation=1, buckets=trainer.config.buckets, seed=seed)

    def stream(path, kind, stream_langs, rows):
        return TextBatches(
            path, trainer.tokenizer, trainer.model_config, objective=kind, batch_size=rows, langs=stream_langs, **common
        )

    mlm = [stream(os.path.join(corpus, f"train.{lang}"), "mlm", (lang,), batch_size) for lang in langs]
    if objective == "mlm":
        return [mlm]
    os.makedirs(work, exist_ok=True)
    tlm = []
    for lang in langs:
        if lang == "en":
            continue
        forward = os.path.join(corpus, f"train.en-{lang}.tsv")
        backward = _reversed_tsv(forward, os.path.join(work, f"train.{lang}-en.tsv"))
        tlm.append(stream(forward, "tlm", ("en", lang), max(1, batch_size // 2)))
        tlm.append(stream(backward, "tlm", (lang, "en"), max(1, batch_size // 2)))
    return [mlm, tlm]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="train_vocab.py's directory (config.json + tokenizer files)")
    parser.add_argument("corpus", help="build_corpus.py's directory")
    parser.add_argument("output_dir")
    parser.add_argument("--objective", choices=("mlm", "mlm+tlm"), required=True)
    parser.add_argument("--steps", type=int, default=5000, help="about an hour on 2 quiet cores (estimate)")
    parser.add_argument("--batch-size", type=int, default=32, help="rows of an MLM step (a TLM step has half)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=250)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--time-limit", type=float, help="stop (with a checkpoint) after this many seconds")
    args = parser.parse_args(argv)

    from xlm_flax.training.trainer import Trainer

    with open(os.path.join(args.corpus, "manifest.json"), encoding="utf-8") as f:
        langs = json.load(f)["languages"]
    with open(os.path.join(args.model, "config.json"), encoding="utf-8") as f:
        max_positions = json.load(f)["max_position_embeddings"]
    buckets = tuple(b for b in (32, 64, 128) if b < max_positions) + (min(128, max_positions),)
    config = TrainConfig(
        model=args.model,
        train_file=os.path.join(args.corpus, "train.en"),
        output_dir=args.output_dir,
        objective="mlm",  # MLM and TLM share the masking transform; the streams decide the rows
        from_scratch=True,
        langs=("en",),
        steps=args.steps,
        batch_size=args.batch_size,
        buckets=buckets,  # (32, 64, 128) for the 128-position model
        learning_rate=args.learning_rate,
        warmup_steps=min(args.warmup_steps, args.steps // 10),
        schedule="linear",
        weight_decay=0.01,
        log_every=args.log_every,
        save_every=args.save_every,
        mesh_shape=(1, 1),
        seed=args.seed,
    )
    log = lambda line: print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)  # noqa: E731
    trainer = Trainer(config, log=log)
    trainer.data = AlternatingBatches(
        build_streams(
            trainer,
            args.corpus,
            langs,
            args.objective,
            os.path.join(args.output_dir, "data"),
            args.batch_size,
            args.seed,
        )
    )
    trainer.restore_checkpoint()
    start_step, t0 = trainer.step, time.perf_counter()
    first_chunk_end = None
    while trainer.step < config.steps:
        trainer.train(steps=trainer.step + args.save_every)  # ends on a save_every boundary: one checkpoint
        if first_chunk_end is None:
            first_chunk_end = (trainer.step, time.perf_counter())  # the chunk with the compilations
        if args.time_limit and time.perf_counter() - t0 > args.time_limit:
            break
    elapsed = time.perf_counter() - t0
    summary = {"objective": args.objective, "steps_run": trainer.step - start_step, "seconds": round(elapsed, 1)}
    if first_chunk_end and trainer.step > first_chunk_end[0]:
        summary["steady_steps_per_s"] = round(
            (trainer.step - first_chunk_end[0]) / (time.perf_counter() - first_chunk_end[1]), 3
        )
    log(f"summary {json.dumps(summary)}")
    if trainer.step >= config.steps:
        path = trainer.save_model()
        with open(os.path.join(args.output_dir, "train_config.json"), "w", encoding="utf-8") as f:
            json.dump({**dataclasses.asdict(config), "streams": args.objective}, f, indent=2)
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
