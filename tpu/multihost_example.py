"""Fill-mask and sentence embeddings on every chip of a TPU VM or a multi-host slice.

Run the same command on every worker (tpu/run.sh does that):

    tpu/run.sh -- python3 tpu/multihost_example.py --checkpoint ~/checkpoints/xlm-mlm-en-2048

Each host joins the run (`xlm_flax.distributed.initialize`: found automatically on TPU VMs), the mesh spans every
chip of every host, the model is loaded sharded by the logical-axis rules, and the batch is split over the data axis.
Results are gathered on every host; process 0 prints them. Uses only the public API.
"""

from __future__ import annotations

import argparse

import numpy as np

import xlm_flax
from xlm_flax import distributed

SENTENCES = [
    "The capital of France is Paris.",
    "Berlin is the capital of Germany.",
    "I like to read books in the evening.",
    "Reading a novel before bed is relaxing.",
    "The stock market fell sharply today.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="converted checkpoint directory on every worker")
    parser.add_argument("--model", type=int, default=1, help="model-axis size (weights split over this many chips)")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args()

    info = distributed.initialize()  # before anything else touches JAX
    mesh = xlm_flax.make_mesh(data=-1, model=args.model)
    if info.is_main:
        print(f"{info.process_count} process(es), {info.device_count} devices, mesh {dict(mesh.shape)}")

    fill_mask = xlm_flax.FillMask.from_pretrained(args.checkpoint, mesh=mesh)
    mask = getattr(fill_mask, "mask_token", "<special1>")
    texts = [f"The capital of France is {mask} .", f"I like to {mask} books in the evening ."]
    predictions = fill_mask(texts, top_k=args.top_k)

    embedder = xlm_flax.Embedder.from_pretrained(args.checkpoint, mesh=mesh)
    embeddings = np.asarray(embedder.encode(SENTENCES))  # [sentences, emb_dim]
    unit = embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)
    similarity = unit @ unit.T

    if info.is_main:
        for text, prediction in zip(texts, predictions):
            print(text, "->", prediction)
        print("embeddings", embeddings.shape)
        for i, sentence in enumerate(SENTENCES):
            nearest = max((j for j in range(len(SENTENCES)) if j != i), key=lambda j: similarity[i, j])
            print(f"{sentence!r} is closest to {SENTENCES[nearest]!r} ({similarity[i, nearest]:.3f})")


if __name__ == "__main__":
    main()
