"""`xlm-flax demo`: fill-mask and sentence embeddings end to end, offline, on a small randomly initialised model.

`demo_model()` is the one place that decides which model the demo runs: today it builds (once, cached under the
user's cache directory) a seeded transformers XLM checkpoint with a small tokenizer, converts it with
`convert_checkpoint(..., verify=True)` (which checks parity with PyTorch) and returns the converted directory. A
trained model shipped later only needs `demo_model()` to return its directory. `run_demo(model=...)` takes any
checkpoint directory or hub id through the same code path.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from xlm_flax.errors import DependencyError
from xlm_flax.tokenization import DEFAULT_WORDS, build_test_tokenizer

DEMO_NAME = "demo-xlm-v1"  # bump when the demo model changes: old caches are then ignored
DEMO_SEED = 0
# A small XLM: big enough that timings mean something on a CPU, small enough to build in seconds.
DEMO_CONFIG = dict(emb_dim=128, n_layers=4, n_heads=8, max_position_embeddings=128)
PARITY_FILE = "demo_parity.json"
RANDOM_NOTICE = (
    "NOTE: randomly initialised demo model (seeded, never trained): its predictions are noise. The demo shows the "
    "machinery and its speed, not language understanding; give --model DIR_OR_HUB_ID for a real checkpoint."
)

DEMO_TEXTS = ("paris is the capital of {mask} .", "the cat sat on the {mask} .", "i like to read {mask} and {mask} .")
DEMO_SENTENCES = ("the cat sat on the mat .", "a dog sat on the mat .", "paris is a big city .", "")


def cache_directory() -> str:
    """Where xlm-flax caches what it builds: `$XLM_FLAX_CACHE`, else `$XDG_CACHE_HOME/xlm-flax`, else
    `~/.cache/xlm-flax`."""
    if os.environ.get("XLM_FLAX_CACHE"):
        return os.path.expanduser(os.environ["XLM_FLAX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "xlm-flax")


def _complete(directory: str) -> bool:
    return all(
        os.path.isfile(os.path.join(directory, name))
        for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt", PARITY_FILE)
    )


def demo_model(*, rebuild: bool = False, log: Callable[[str], Any] = lambda message: None) -> str:
    """The directory of the model the demo runs, built on first use.

    Args:
        rebuild: Build again even if a cached copy exists.
        log: Called with progress lines.

    Returns:
        A native checkpoint directory with tokenizer files.

    Raises:
        DependencyError: the model must be built and torch is not installed.
    """
    target = os.path.join(cache_directory(), DEMO_NAME)
    if _complete(target) and not rebuild:
        return target
    build_demo_model(target, log=log)
    return target


def build_demo_model(target: str, *, log: Callable[[str], Any] = lambda message: None) -> dict[str, float]:
    """Builds the seeded PyTorch demo checkpoint, converts it into `target` and checks parity.

    Everything is built in a temporary directory next to `target` and renamed into place at the end, so an
    interrupted build leaves nothing half-written, and concurrent builds leave one complete copy.

    Args:
        target: The directory to create.
        log: Called with progress lines.

    Returns:
        The largest differences against PyTorch, per output.

    Raises:
        DependencyError: torch is not installed.
    """
    try:
        import torch
        import transformers
    except ImportError as e:
        raise DependencyError(
            "xlm-flax demo builds its small random model with PyTorch, which is not installed: "
            "pip install torch --index-url https://download.pytorch.org/whl/cpu (or run "
            "xlm-flax demo --model DIR_OR_HUB_ID on an existing checkpoint)"
        ) from e
    from xlm_flax.conversion import convert_checkpoint

    transformers.utils.logging.disable_progress_bar()  # keep stderr to our own progress lines
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=f".{os.path.basename(target)}.build-") as work:
        source = os.path.join(work, "pytorch")
        vocab_size = build_test_tokenizer(source, model_max_length=DEMO_CONFIG["max_position_embeddings"])
        log(f"building the demo model: seeded random transformers XLM, vocabulary {vocab_size}, {DEMO_CONFIG}")
        torch.manual_seed(DEMO_SEED)
        config = transformers.XLMConfig(vocab_size=vocab_size, **DEMO_CONFIG)
        transformers.XLMWithLMHeadModel(config).eval().save_pretrained(source)
        converted = os.path.join(work, "flax")
        report = convert_checkpoint(source, converted, verify=True, log=log)
        with open(os.path.join(converted, PARITY_FILE), "w", encoding="utf-8") as f:
            json.dump({"max_abs_diff": report.max_abs_diff, "seed": DEMO_SEED, "config": DEMO_CONFIG}, f, indent=2)
        old = None
        if os.path.exists(target):
            old = os.path.join(work, "old")
            os.rename(target, old)
        try:
            os.rename(converted, target)
        except OSError:
            if not _complete(target):  # another process won the race with a complete copy: keep it
                raise
    return report.max_abs_diff


def _sentences(n: int, seed: int = 0) -> list[str]:
    """`n` sentences of 3 to 40 random words (varied lengths exercise the buckets)."""
    rng = np.random.default_rng(seed)
    words = np.array(DEFAULT_WORDS)
    return [" ".join(rng.choice(words, size=int(rng.integers(3, 41)))) + " ." for _ in range(n)]


def run_demo(
    model: str | os.PathLike | None = None,
    *,
    rebuild: bool = False,
    n_sentences: int = 512,
    out: Callable[[str], Any] = print,
    log: Callable[[str], Any] = lambda message: None,
) -> dict[str, Any]:
    """Runs fill-mask and embeddings on `model` (default: `demo_model()`) and prints results and timings.

    Args:
        model: A checkpoint directory or hub id; None uses the demo model.
        rebuild: Rebuild the cached demo model first.
        n_sentences: Sentences in the throughput run.
        out: Prints a result line.
        log: Prints a progress line.

    Returns:
        The figures printed: load and first-call times, sentences per second, compilations.
    """
    import jax

    from xlm_flax.inference import Embedder, FillMask

    is_demo = model is None
    path = demo_model(rebuild=rebuild, log=log) if is_demo else os.fspath(model)
    out(f"xlm-flax demo: {path}")
    if is_demo:
        out(RANDOM_NOTICE)
        with open(os.path.join(path, PARITY_FILE), encoding="utf-8") as f:
            parity = json.load(f)["max_abs_diff"]
        checked = ", ".join(f"{name} {value:.2g}" for name, value in sorted(parity.items()))
        out(f"parity with transformers' PyTorch XLM on the same weights (checked when built): max |diff| {checked}")
    devices = jax.devices()
    out(f"devices: {len(devices)} x {devices[0].platform}")
    figures: dict[str, Any] = {}

    start = time.perf_counter()
    fill = FillMask.from_pretrained(path)
    figures["load_s"] = time.perf_counter() - start
    config = fill.config
    out(
        f"model: {config.n_layers} layers, emb_dim {config.emb_dim}, vocabulary {config.vocab_size}, "
        f"loaded in {figures['load_s']:.2f} s"
    )

    texts = [t.replace("{mask}", fill.mask_token) for t in DEMO_TEXTS]
    start = time.perf_counter()
    predictions = fill(texts, top_k=3)
    figures["fill_mask_s"] = time.perf_counter() - start
    out(f"\nfill-mask (top 3; {figures['fill_mask_s']:.2f} s including compilation):")
    for text, result in zip(texts, predictions):
        out(f"  {text}")
        per_mask = [result] if isinstance(result[0], dict) else result
        for m, candidates in enumerate(per_mask):
            label = f"mask {m + 1}: " if len(per_mask) > 1 else ""
            out("    " + label + ", ".join(f"{c['token_str']!r} {c['score']:.4f}" for c in candidates))

    embedder = Embedder(fill.model, fill.tokenizer, pooling="mean")
    vectors = embedder.encode(list(DEMO_SENTENCES), normalize=True)
    out(f"\nsentence embeddings (mean pooling, normalised): {vectors.shape[0]} x {vectors.shape[1]}; cosine:")
    for sentence, row in zip(DEMO_SENTENCES, vectors @ vectors.T):
        out(f"  {' '.join(f'{v:5.2f}' for v in row)}  {sentence!r}")

    stream = _sentences(n_sentences)
    start = time.perf_counter()
    embedder.encode(stream, batch_size=32)
    first = time.perf_counter() - start
    start = time.perf_counter()
    embedder.encode(stream, batch_size=32)
    steady = time.perf_counter() - start
    figures.update(
        first_encode_s=first,
        sentences_per_s=n_sentences / steady,
        compilations=embedder.num_compilations,
        buckets=embedder.bucket_count(32),
    )
    out(
        f"\nencode {n_sentences} sentences of 3-40 words, batch 32: first call {first:.2f} s (compiles the shape "
        f"buckets it meets), then {steady:.2f} s = {figures['sentences_per_s']:.0f} sentences/s; "
        f"{figures['compilations']} compilations in all (bound: {figures['buckets']} buckets)"
    )
    return figures


def remove_demo_model() -> None:
    """Deletes the cached demo model."""
    shutil.rmtree(os.path.join(cache_directory(), DEMO_NAME), ignore_errors=True)


__all__ = ["build_demo_model", "cache_directory", "demo_model", "remove_demo_model", "run_demo"]
