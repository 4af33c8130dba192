"""`xlm-flax demo` and the small model shipped with xlm-flax: it runs without torch, checks parity with PyTorch when
torch is there, and the model fills masks with words."""

from __future__ import annotations

import importlib.resources
import os
import re
import shutil
import subprocess
import sys

import pytest
from helpers import requires_torch

from xlm_flax import FillMask
from xlm_flax.cli.main import main
from xlm_flax.demo import run_demo, small_model_path
from xlm_flax.errors import MissingFileError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Runs the command line with torch unimportable: `import torch` raises ImportError, find_spec("torch") is None.
WITHOUT_TORCH = (
    "import sys; sys.modules['torch'] = None; "
    "from xlm_flax.cli import main; "
    "code = main(['demo', '--sentences', '16']); "
    "assert 'torch' not in sys.modules or sys.modules['torch'] is None, 'torch was imported'; "
    "sys.exit(code)"
)
# Sentences in the style of the held-out split (Python documentation prose), none of them among the demo's.
HELD_OUT_STYLE = (
    "The default value is {mask}.",
    "Return the number of items in the {mask}.",
    "The {mask} argument must be an integer.",
)


@pytest.fixture(scope="module")
def fill():
    return FillMask.from_pretrained(small_model_path())


def test_demo_runs_without_torch():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device: faster start-up
    env.update(PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run([sys.executable, "-c", WITHOUT_TORCH], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"xlm-flax demo: {small_model_path()}" in out and "shipped with xlm-flax" in out
    assert "random" not in out.lower()
    # Each fill-mask line lists five "word probability" pairs.
    lines = out.split("fill-mask (top 5")[1].split("sentence embeddings")[0].splitlines()
    candidates = [line for line in lines if re.fullmatch(r"\s+(mask \d: )?(\S+ \d\.\d{3}, ){4}\S+ \d\.\d{3}", line)]
    assert len(candidates) >= 5, out
    assert "cosine similarity" in out and "sentences/s" in out
    # The cross-lingual part, on the shipped multilingual model: a 6 x 6 table, one star per row, and TLM fill-mask.
    crosslingual = out.split("cross-lingual, on xlm-small-multilingual")[1]
    table = [line for line in crosslingual.splitlines() if re.match(r"  \d: ", line)]
    assert len(table) == 6 and all(line.count("*") == 1 for line in table), crosslingual
    assert re.search(r"own translation most similar .*: fr \d/6, de \d/6, es \d/6, ru \d/6", crosslingual)
    pairs = crosslingual.split("TLM fill-mask (top 5)")[1].splitlines()
    assert pairs[1].startswith("  alone: ") and pairs[2].startswith("  next to its fr translation"), crosslingual
    assert "parity with PyTorch: skipped, torch is not installed" in out
    assert "Traceback" not in result.stderr


@requires_torch
def test_demo_checks_parity_with_torch():
    lines: list[str] = []
    figures = run_demo(n_sentences=8, out=lines.append)
    assert set(figures["parity"]) == {"logits", "last_hidden_state"}
    assert max(figures["parity"].values()) <= 1e-5, figures["parity"]
    assert any("parity with transformers' PyTorch XLM on the same weights" in line for line in lines)


def test_demo_can_skip_parity(capsys):
    assert main(["demo", "--sentences", "4", "--no-parity"]) == 0
    assert "parity with PyTorch: skipped (--no-parity)" in capsys.readouterr().out


@pytest.mark.parametrize("template", HELD_OUT_STYLE)
def test_top1_is_a_word(fill, template):
    (candidates,) = fill([template.format(mask=fill.mask_token)], top_k=1)
    top = candidates[0]
    assert top["token"] not in fill.tokenizer.all_special_ids, top
    assert top["token_str"].isalpha(), top  # a word, not punctuation, a number or a special token


def test_modal_verb(fill):
    # "You ___ use this module ..." takes a modal verb in English; the model puts most of its mass on one.
    (candidates,) = fill([f"You {fill.mask_token} use this module to read files."], top_k=1)
    assert candidates[0]["token_str"] in {"can", "may", "should", "must", "will", "could", "might"}, candidates


def test_missing_model_files(tmp_path, monkeypatch, capsys):
    shipped = small_model_path()
    model = tmp_path / "data" / "xlm-small-en"
    shutil.copytree(shipped, model)
    monkeypatch.setattr(importlib.resources, "files", lambda package: tmp_path)
    assert small_model_path() == str(model)

    (model / "vocab.json").unlink()
    with pytest.raises(MissingFileError, match=r"missing vocab\.json; reinstall xlm-flax"):
        small_model_path()
    assert main(["demo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "vocab.json" in err[0] and "reinstall" in err[0], err

    shutil.copy(os.path.join(shipped, "vocab.json"), model)
    (model / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 5\n")
    with pytest.raises(MissingFileError, match=r"model\.safetensors \(found a placeholder"):
        small_model_path()
