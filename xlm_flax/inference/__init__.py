"""Inference: shape buckets and host batching, the shared engine, `FillMask` and `Embedder`.

* `batching`: length and batch buckets, padding, the prefetch thread.
* `engine`: the split model, compiled once per bucket, and the batch loop.
* `fill_mask`: `FillMask`; `embeddings`: `Embedder`; `generation`: `generate` and `Generator`.
"""

from xlm_flax._lazy import lazy_namespace

__getattr__, __dir__ = lazy_namespace(
    __name__,
    {"FillMask": ".fill_mask", "Embedder": ".embeddings", "Generator": ".generation", "generate": ".generation"},
)
