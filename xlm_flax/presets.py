"""The configs of the ten public XLM checkpoints, as their hub `config.json` files give them.

Used to build full-size models offline (abstract shape checks, benchmarks, random-weight conversions). Values
common to all ten (bos 0, eos 1, pad 2, unk 3, mask 5, GELU, dropout 0.1, max_position_embeddings 512,
layer_norm_eps 1e-12, asm false) are the `XLMConfig` defaults. Note that the hub configs of the two CLM checkpoints
say `"causal": false`: transformers runs them with bidirectional attention unless `causal=True` is set, and so do
we, to stay equal to transformers.
"""

from __future__ import annotations

from typing import Any


def _langs(codes: str) -> dict[str, int]:
    return {code: i for i, code in enumerate(codes.split())}


_XNLI15 = _langs("ar bg de el en es fr hi ru sw th tr ur vi zh")
_LANGS17 = _langs("ar de en es fr hi it ja ko nl pl pt ru sv tr vi zh")
_LANGS100 = _langs(
    "af als am an ang ar arz ast az bar be bg bn br bs ca ceb ckb cs cy da de el en eo es et eu fa fi fr fy ga gan "
    "gl gu he hi hr hu hy ia id is it ja jv ka kk kn ko ku la lb lt lv mk ml mn mr ms my nds ne nl nn no oc pl pt "
    "ro ru scn sco sh si simple sk sl sq sr sv sw ta te th tl tr tt uk ur uz vi war wuu yi zh zh_classical "
    "zh_min_nan zh_yue"
)


def _pair(vocab: int, langs: str, *, layers: int = 6) -> dict[str, Any]:
    return dict(vocab_size=vocab, emb_dim=1024, n_layers=layers, n_heads=8, n_langs=2, lang2id=_langs(langs))


PRESETS: dict[str, dict[str, Any]] = {
    "xlm-mlm-en-2048": dict(vocab_size=30145, emb_dim=2048, n_layers=12, n_heads=16, n_langs=1),
    "xlm-mlm-ende-1024": _pair(64699, "de en"),
    "xlm-mlm-enfr-1024": _pair(64139, "en fr"),
    "xlm-mlm-enro-1024": _pair(64592, "en ro"),
    "xlm-mlm-xnli15-1024": dict(vocab_size=95000, emb_dim=1024, n_layers=12, n_heads=8, n_langs=15, lang2id=_XNLI15),
    "xlm-mlm-tlm-xnli15-1024": dict(
        vocab_size=95000, emb_dim=1024, n_layers=12, n_heads=8, n_langs=15, lang2id=_XNLI15
    ),
    "xlm-clm-enfr-1024": _pair(64139, "en fr"),
    "xlm-clm-ende-1024": _pair(64699, "de en"),
    "xlm-mlm-17-1280": dict(
        vocab_size=200000, emb_dim=1280, n_layers=16, n_heads=16, n_langs=17, use_lang_emb=False, lang2id=_LANGS17
    ),
    "xlm-mlm-100-1280": dict(
        vocab_size=200000, emb_dim=1280, n_layers=16, n_heads=16, n_langs=100, use_lang_emb=False, lang2id=_LANGS100
    ),
}
for _preset in PRESETS.values():
    _preset.setdefault("architectures", ["XLMWithLMHeadModel"])
    _preset.setdefault("embed_init_std", 2048**-0.5)  # the transformers default, kept by every hub config

__all__ = ["PRESETS"]
