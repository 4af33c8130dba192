"""Every parameter of the ten public checkpoints' models has the shape transformers' state dict has.

Both sides are built without memory: ours with `nnx.eval_shape`, transformers' on `torch.device("meta")`. The key
config values are written out here (from the hub config.json files), so the presets are checked too, not trusted.
"""

from __future__ import annotations

import pytest
import transformers
from flax import nnx
from helpers import TORCH_REASON

from xlm_flax import XLMConfig, XLMModel, XLMWithLMHeadModel
from xlm_flax.checkpoints.names import is_ignored_torch_name
from xlm_flax.checkpoints.registry import model_rules, tied_torch_names

# Transformers' models are built on torch's meta device.
torch = pytest.importorskip("torch", reason=TORCH_REASON)

# name: (vocab_size, emb_dim, n_layers, n_heads, n_langs, use_lang_emb), from each hub config.json.
PUBLIC = {
    "xlm-mlm-en-2048": (30145, 2048, 12, 16, 1, True),
    "xlm-mlm-ende-1024": (64699, 1024, 6, 8, 2, True),
    "xlm-mlm-enfr-1024": (64139, 1024, 6, 8, 2, True),
    "xlm-mlm-enro-1024": (64592, 1024, 6, 8, 2, True),
    "xlm-mlm-xnli15-1024": (95000, 1024, 12, 8, 15, True),
    "xlm-mlm-tlm-xnli15-1024": (95000, 1024, 12, 8, 15, True),
    "xlm-clm-enfr-1024": (64139, 1024, 6, 8, 2, True),
    "xlm-clm-ende-1024": (64699, 1024, 6, 8, 2, True),
    "xlm-mlm-17-1280": (200000, 1280, 16, 16, 17, False),
    "xlm-mlm-100-1280": (200000, 1280, 16, 16, 100, False),
}
FIELDS = ("vocab_size", "emb_dim", "n_layers", "n_heads", "n_langs", "use_lang_emb")


def _flax_shapes(cls, config: XLMConfig) -> dict[str, tuple[int, ...]]:
    abstract = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))
    state = nnx.state(abstract, nnx.Param)
    return {".".join(map(str, path)): tuple(v.shape) for path, v in nnx.to_flat_state(state)}


def _torch_shapes(architecture: str, values: dict) -> dict[str, tuple[int, ...]]:
    config = transformers.XLMConfig(**values, max_position_embeddings=512)
    with torch.device("meta"):
        model = getattr(transformers, architecture)(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


@pytest.mark.parametrize("name", list(PUBLIC))
def test_public_config_shapes_match_transformers(name):
    values = dict(zip(FIELDS, PUBLIC[name]))
    config = XLMConfig.preset(f"FacebookAI/{name}")
    for field, value in values.items():
        assert getattr(config, field) == value, field
    assert config.max_position_embeddings == 512 and config.tie_word_embeddings
    assert len(config.lang2id) == config.n_langs or config.n_langs == 1

    for cls in (XLMWithLMHeadModel, XLMModel):
        ours = _flax_shapes(cls, config)
        theirs = _torch_shapes(cls.architecture, values)
        covered_flax, covered_torch = set(), set()
        for rule in model_rules(cls.architecture, config):
            flax_shape = ours[rule.flax_path]
            covered_flax.add(rule.flax_path)
            if rule.n_layers:
                assert flax_shape[0] == config.n_layers, rule.flax_path
                flax_shape = flax_shape[1:]
            expected = rule.layout.torch_shape(flax_shape)
            for torch_name in rule.torch_names:
                assert theirs[torch_name] == expected, (torch_name, theirs[torch_name], expected)
                covered_torch.add(torch_name)
        # nothing on either side is left out of the table
        assert covered_flax == set(ours)
        leftover = {
            n
            for n in theirs
            if n not in covered_torch
            and n not in tied_torch_names(cls.architecture, config)
            and not is_ignored_torch_name(n)
        }
        assert not leftover
        n_params = sum(_prod(s) for s in ours.values())
        n_torch = sum(_prod(s) for n, s in theirs.items() if n in covered_torch)
        assert n_params == n_torch
        has_lang = any("lang_embeddings" in p for p in ours)
        assert has_lang == (values["n_langs"] > 1 and values["use_lang_emb"])


def _prod(shape) -> int:
    out = 1
    for d in shape:
        out *= d
    return out
