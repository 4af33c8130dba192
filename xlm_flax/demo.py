"""`xlm-flax demo`: fill-mask and sentence embeddings end to end, offline, on the small model shipped with xlm-flax.

The model is `xlm_flax/data/xlm-small-en` (see its `MODEL_CARD.md`): a 4-layer, 128-wide English XLM trained with
this package on prose from the Python documentation. It is a toy (top-1 accuracy 0.22 on held-out masked tokens),
but its guesses are words that fit, so the demo sentences are Python-documentation prose. Nothing here needs torch;
when torch is installed the demo also checks the model against transformers' PyTorch XLM on the same weights.
`run_demo(model=...)` runs the same code on any checkpoint directory or hub id.
"""

from __future__ import annotations

import importlib.resources
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from xlm_flax.errors import MissingFileError

SMALL_MODEL_NAME = "xlm-small-en"
MULTILINGUAL_MODEL_NAME = "xlm-small-multilingual"
SMALL_MODEL_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json")

# Sentences in the style of the training corpus. Chosen by running the shipped model on two dozen such sentences:
# these are ones where its top guesses make sense; the last one shows a typical miss ("list" is only third).
# The model card's held-out top-1 accuracy (0.22) is the honest summary; these are illustrations.
DEMO_TEXTS = (
    "You {mask} use this module to read files.",
    "{mask} the documentation for more {mask}.",
    "This module is {mask} in Python 3.",
    "This function returns a new {mask} object.",
    "The result is a {mask} of tuples.",
)
DEMO_SENTENCES = (
    "The function returns a list of strings.",
    "This method returns a list of names.",
    "The file is opened in binary mode.",
    "Open the file for reading and writing.",
    "The thread waits until the lock is released.",
)
# Words for the throughput stream: each is one token of the shipped vocabulary, so 3 to 40 of them stay within its
# 64 positions (no truncation) while still spreading over several shape buckets.
STREAM_WORDS = (
    "the a an of and to in is are be it this that with for as by from can not if when each new default function "
    "module class object method value list string file name type data number error exception argument attribute "
    "returns return used called raised set read write open close call create python thread process lock mode"
).split()


def small_model_path() -> str:
    """The directory of the small English model shipped with xlm-flax (`xlm_flax/data/xlm-small-en`).

    It is a native checkpoint with tokenizer files: pass it to `FillMask.from_pretrained`, `Embedder.from_pretrained`
    or `XLMWithLMHeadModel.from_pretrained`. Its `MODEL_CARD.md` says how it was trained and how well it does.

    Returns:
        The directory's path.

    Raises:
        MissingFileError: a file of the model is missing or is a Git LFS pointer (a broken install or checkout).
    """
    return shipped_model_path(SMALL_MODEL_NAME)


def multilingual_model_path() -> str:
    """The directory of the small multilingual model shipped with xlm-flax (`xlm_flax/data/xlm-small-multilingual`):
    English, French, German, Spanish and Russian, with language embeddings, trained on Debian's translated program
    messages (see its `MODEL_CARD.md` for the corpus, the training and the cross-lingual evaluation).

    Raises:
        MissingFileError: a file of the model is missing or is a Git LFS pointer.
    """
    return shipped_model_path(MULTILINGUAL_MODEL_NAME)


def shipped_model_path(name: str) -> str:
    """The directory of the model `name` under `xlm_flax/data`, checked to be complete.

    Raises:
        MissingFileError: a file of the model is missing or is a Git LFS pointer (a broken install or checkout).
    """
    directory = os.fspath(importlib.resources.files("xlm_flax") / "data" / name)
    missing = [name for name in SMALL_MODEL_FILES if not os.path.isfile(os.path.join(directory, name))]
    weights = os.path.join(directory, "model.safetensors")
    if not missing and os.path.getsize(weights) < 1024:  # a few hundred bytes: a Git LFS pointer, not the weights
        missing.append("model.safetensors (found a placeholder of a few bytes, not the weights)")
    if missing:
        raise MissingFileError(
            f"the model {name} shipped with xlm-flax is incomplete in {directory}: missing {', '.join(missing)}; "
            "reinstall xlm-flax (pip install --force-reinstall xlm-flax, or `git checkout -- xlm_flax/data` in a clone)"
        )
    return directory


# Held-out (test split) messages of the cross-lingual corpus with their translations, as they come: the first six,
# in sha256 order of the English text, of the test messages of 4-8 words translated into all four languages (not
# chosen by what the model does with them).
CROSSLINGUAL_MESSAGES = (
    (
        "Japanese (alias for Han + Hiragana + Katakana)",
        {
            "fr": "japonais (alias pour han + hiragana + katakana)",
            "de": "Japanisch (Alias für Han + Hiragana + Katakana)",
            "es": "japonés (alias para Han + Hiragana + Katakana)",
            "ru": "Японская (тоже, что и хань+хирагана+катакана)",
        },
    ),
    (
        "invalid '..' path segment",
        {
            "fr": "segment de chemin '..' invalide",
            "de": "ungültiges '..' Pfadsegment",
            "es": "segmento de ruta '..' inválido",
            "ru": "неправильная часть пути «..»",
        },
    ),
    (
        "returned error code . Exiting.",
        {
            "fr": "a retourné le code d'erreur . Abandon.",
            "de": "» « gab den Fehlercode zurück. Programmende.",
            "es": "devolvió el código de error . Saliendo.",
            "ru": "Работа завершилась с кодом ошибки . Завершение работы.",
        },
    ),
    (
        "HTTP Live Streaming playlist",
        {
            "fr": "liste de lecture de flux HTTP Live",
            "de": "HTTP Live-Streaming-Wiedergabeliste",
            "es": "lista de reproducción de flujo en directo HTTP",
            "ru": "Список воспроизведения HTTP-потока",
        },
    ),
    (
        "Retrieved file size was zero.",
        {
            "fr": "La taille du fichier récupéré est nulle.",
            "de": "Die abgerufene Dateigröße war Null.",
            "es": "Lo sentimos, algo a salido mal. El tamaño del archivo recuperado es cero.",
            "ru": "Размер полученного файла был равен нулю.",
        },
    ),
    (
        "No theme index file.",
        {
            "fr": "Aucun fichier d'index de thème.",
            "de": "Keine Thema-Indexdatei.",
            "es": "No existe el archivo índice del tema.",
            "ru": "Нет файла с индексом темы.",
        },
    ),
)
# Layer of the mean-pooled embeddings compared across languages: the one the model card's evaluation chose on the
# valid split (hidden state 0 is the embeddings' output, n_layers the last layer's).
CROSSLINGUAL_LAYER = 2
# TLM fill-mask: a held-out message with one word masked, alone and next to its French translation.
TLM_EXAMPLE = ("--tag does not support --text {mask}", "fr", "--tag ne prend pas en charge le mode --text")


def _sentences(n: int, seed: int = 0) -> list[str]:
    """`n` sentences of 3 to 40 random words (varied lengths exercise the buckets)."""
    rng = np.random.default_rng(seed)
    words = np.array(STREAM_WORDS)
    return [" ".join(rng.choice(words, size=int(rng.integers(3, 41)))) + " ." for _ in range(n)]


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def check_parity(path: str | os.PathLike, *, log: Callable[[str], Any] = lambda message: None) -> dict[str, float]:
    """Compares the model of `path` with transformers' PyTorch XLM on the same weights (needs torch).

    A native directory is first exported to transformers' format in a temporary directory; a transformers checkpoint
    or hub id is loaded by both sides as it is.

    Args:
        path: A checkpoint directory or hub id.
        log: Called with one line per compared output.

    Returns:
        The largest absolute difference per compared output (`logits`, `last_hidden_state`).

    Raises:
        CheckpointError: torch is missing, or the outputs differ by more than rounding.
    """
    from xlm_flax.checkpoints.export import export_checkpoint
    from xlm_flax.checkpoints.sources import open_weights
    from xlm_flax.checkpoints.verify import check_against_transformers

    source = open_weights(path)
    native = source.kind == "flax"
    source.close()
    if not native:
        return check_against_transformers(path, path, log=log)
    with tempfile.TemporaryDirectory(prefix="xlm-flax-demo-") as work:
        exported = export_checkpoint(path, os.path.join(work, "transformers")).destination
        return check_against_transformers(exported, path, log=log)


def run_demo(
    model: str | os.PathLike | None = None,
    *,
    n_sentences: int = 512,
    parity: bool = True,
    out: Callable[[str], Any] = print,
    log: Callable[[str], Any] = lambda message: None,
) -> dict[str, Any]:
    """Runs fill-mask and embeddings on `model` (default: `small_model_path()`) and prints results and timings.

    Args:
        model: A checkpoint directory or hub id; None uses the small model shipped with xlm-flax.
        n_sentences: Sentences in the throughput run.
        parity: When torch is installed, compare with transformers' PyTorch model on the same weights.
        out: Prints a result line.
        log: Prints a progress line.

    Returns:
        The figures printed: load, fill-mask, first-call and parity times, sentences per second, compilations, and
        the largest differences against PyTorch (`parity`, absent without torch).

    Raises:
        MissingFileError: the shipped model is incomplete, or `model` lacks a file.
        CheckpointError: the model cannot be read, or differs from PyTorch by more than rounding.
    """
    import jax

    from xlm_flax.inference.embeddings import Embedder
    from xlm_flax.inference.fill_mask import FillMask

    total = time.perf_counter()
    path = small_model_path() if model is None else os.fspath(model)
    out(f"xlm-flax demo: {path}")
    if model is None:
        out(
            "the small English XLM shipped with xlm-flax (4 layers x 128, trained on Python documentation prose; "
            "a toy: top-1 0.22 on held-out masked tokens, see MODEL_CARD.md there)"
        )
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
    predictions = fill(texts, top_k=5)
    figures["fill_mask_s"] = time.perf_counter() - start
    out(f"\nfill-mask (top 5 with probabilities; {figures['fill_mask_s']:.2f} s including compilation):")
    for text, result in zip(texts, predictions):
        out(f"  {text}")
        per_mask = [result] if isinstance(result[0], dict) else result
        for m, candidates in enumerate(per_mask):
            label = f"mask {m + 1}: " if len(per_mask) > 1 else ""
            out("    " + label + ", ".join(f"{c['token_str']} {c['score']:.3f}" for c in candidates))

    embedder = Embedder(fill.model, fill.tokenizer, pooling="mean")
    start = time.perf_counter()
    vectors = embedder.encode(list(DEMO_SENTENCES), normalize_embeddings=True)
    figures["embed_s"] = time.perf_counter() - start
    out(
        f"\nsentence embeddings (mean pooling, normalised): {vectors.shape[0]} x {vectors.shape[1]} in "
        f"{figures['embed_s']:.2f} s; cosine similarity:"
    )
    for i, (sentence, row) in enumerate(zip(DEMO_SENTENCES, vectors @ vectors.T)):
        out(f"  {i + 1}: {' '.join(f'{v:5.2f}' for v in row)}  {sentence}")

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

    if model is None:
        figures["crosslingual"] = run_crosslingual_demo(out=out)

    if not parity:
        out("\nparity with PyTorch: skipped (--no-parity)")
    elif not _torch_available():
        out("\nparity with PyTorch: skipped, torch is not installed (everything above ran without it)")
    else:
        start = time.perf_counter()
        diffs = check_parity(path, log=log)
        figures["parity"] = diffs
        figures["parity_s"] = time.perf_counter() - start
        checked = ", ".join(f"{name} {value:.2g}" for name, value in sorted(diffs.items()))
        out(
            f"\nparity with transformers' PyTorch XLM on the same weights (one padded batch): max |diff| {checked} "
            f"({figures['parity_s']:.2f} s)"
        )
    figures["total_s"] = time.perf_counter() - total
    out(f"\ndemo done in {figures['total_s']:.1f} s")
    return figures


def run_crosslingual_demo(
    model: str | os.PathLike | None = None, *, out: Callable[[str], Any] = print
) -> dict[str, Any]:
    """Cross-lingual similarity and TLM fill-mask on `model` (default: `multilingual_model_path()`).

    Prints the cosine similarities of held-out English messages against their translations (`CROSSLINGUAL_MESSAGES`,
    mean-pooled embeddings of layer `CROSSLINGUAL_LAYER`), how often each English message's own translation is the
    most similar, and `TLM_EXAMPLE` filled alone and next to its translation.

    Returns:
        `{"ranked_first": {lang: count}, "messages": n, "similarity": {lang: matrix}, "alone": [...],
        "with_translation": [...]}`.
    """
    from xlm_flax.inference.embeddings import Embedder
    from xlm_flax.inference.fill_mask import FillMask

    path = multilingual_model_path() if model is None else os.fspath(model)
    start = time.perf_counter()
    fill = FillMask.from_pretrained(path)
    embedder = Embedder(fill.model, fill.tokenizer, pooling="mean")
    langs = [lang for lang in ("fr", "de", "es", "ru") if lang in fill.config.lang2id]
    out(
        f"\ncross-lingual, on {os.path.basename(path.rstrip(os.sep))} (languages: "
        f"{', '.join(sorted(fill.config.lang2id, key=fill.config.lang2id.get))}; see MODEL_CARD.md there)"
    )
    english = [message for message, _ in CROSSLINGUAL_MESSAGES]
    layer = min(CROSSLINGUAL_LAYER, fill.config.n_layers)
    source = embedder.encode(english, lang="en", layer=layer, normalize_embeddings=True)
    figures: dict[str, Any] = {"messages": len(english), "ranked_first": {}, "similarity": {}}
    for lang in langs:
        translations = [by_lang[lang] for _, by_lang in CROSSLINGUAL_MESSAGES]
        target = embedder.encode(translations, lang=lang, layer=layer, normalize_embeddings=True)
        similarity = source @ target.T
        figures["similarity"][lang] = similarity
        figures["ranked_first"][lang] = int((similarity.argmax(1) == np.arange(len(english))).sum())
    shown = "ru" if "ru" in langs else langs[0]
    out(
        f"cosine similarity (mean pooling, layer {layer}) of {len(english)} held-out English messages (rows) and "
        f"their {shown} translations (columns; the diagonal is each message's own translation):"
    )
    for i, (message, row) in enumerate(zip(english, figures["similarity"][shown])):
        marks = " ".join(f"{v:5.2f}{'*' if j == row.argmax() else ' '}" for j, v in enumerate(row))
        out(f"  {i + 1}: {marks}  {message}")
    out(
        "own translation most similar (* above): "
        + ", ".join(f"{lang} {figures['ranked_first'][lang]}/{len(english)}" for lang in langs)
        + f" (chance {1 / len(english):.2f} each)"
    )

    template, lang, translation = TLM_EXAMPLE
    text = template.format(mask=fill.mask_token)
    figures["alone"] = fill(text, lang="en", top_k=5)
    figures["with_translation"] = fill.with_translation(text, translation, lang="en", translation_lang=lang, top_k=5)
    out(f"\nTLM fill-mask (top 5): {text}")
    out("  alone:                 " + ", ".join(f"{c['token_str']} {c['score']:.3f}" for c in figures["alone"]))
    out(
        f"  next to its {lang} translation ({translation!r}): "
        + ", ".join(f"{c['token_str']} {c['score']:.3f}" for c in figures["with_translation"])
    )
    figures["seconds"] = time.perf_counter() - start
    out(f"cross-lingual part: {figures['seconds']:.2f} s including loading and compilation")
    return figures


__all__ = [
    "CROSSLINGUAL_MESSAGES",
    "DEMO_SENTENCES",
    "DEMO_TEXTS",
    "TLM_EXAMPLE",
    "check_parity",
    "multilingual_model_path",
    "run_crosslingual_demo",
    "run_demo",
    "shipped_model_path",
    "small_model_path",
]
