"""XLM's fixed token ids and the ignored-label value, defined once (no JAX, no transformers).

Every XLM vocabulary (the original facebookresearch/XLM dictionaries and transformers' checkpoints alike) starts with
the same 14 special tokens: `<s>`=0, `</s>`=1, `<pad>`=2, `<unk>`=3, `<special0>`..`<special9>`=4..13, the mask
being `<special1>` (id 5). Labels equal to `IGNORE_INDEX` carry no loss, as with PyTorch's `cross_entropy`.
"""

from __future__ import annotations

SPECIAL_TOKENS: tuple[str, ...] = ("<s>", "</s>", "<pad>", "<unk>", *(f"<special{i}>" for i in range(10)))


N_SPECIAL_TOKENS = len(SPECIAL_TOKENS)  # 14: ids 0..13


MASK_TOKEN = "<special1>"


# The config fields of the special ids and their values in every XLM vocabulary (XLMConfig's defaults).
SPECIAL_INDICES: dict[str, int] = {
    "bos_index": SPECIAL_TOKENS.index("<s>"),
    "eos_index": SPECIAL_TOKENS.index("</s>"),
    "pad_index": SPECIAL_TOKENS.index("<pad>"),
    "unk_index": SPECIAL_TOKENS.index("<unk>"),
    "mask_index": SPECIAL_TOKENS.index(MASK_TOKEN),
}


IGNORE_INDEX = -100  # label of positions without loss (PyTorch's cross_entropy default)


__all__ = ["IGNORE_INDEX", "MASK_TOKEN", "N_SPECIAL_TOKENS", "SPECIAL_INDICES", "SPECIAL_TOKENS"]
