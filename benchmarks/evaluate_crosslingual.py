"""Cross-lingual evaluation of XLM models on build_corpus.py's test split (issue 16), with baselines.

Tasks (every language of the corpus against English):
- **retrieval**: P@1 of finding each English test message's translation among all test messages of the language
  (`en->xx`), and the reverse (`xx->en`), by cosine similarity of mean-pooled hidden states (padding excluded).
  The layer is chosen per model on the valid split (best mean P@1 over languages and directions).
- **classification** (XNLI's protocol in miniature): the label of a message is its Debian package, among the K
  packages with the most English training messages. A classification head (`XLMForSequenceClassification`, the
  whole model fine-tuned with optax AdamW) is trained on English training messages only and evaluated on the test
  messages of those packages, in English and in every other language (zero-shot transfer).
- **fill-mask** (TLM-style): one whole English word (a single vocabulary token) of each test message is replaced by
  the mask token; top-1 accuracy of predicting it from the English sentence alone, and with its translation next to
  it (a TLM pair: positions restart, one language id per sentence).

Baselines in the same table: chance (1/N retrieval, 1/K classification, 1/vocab fill-mask), the majority class
(classification; the most frequent training word for fill-mask), and character 3-grams: cosine similarity of
3-gram count vectors (retrieval) and a nearest-centroid classifier on them (classification).

Usage:
    python benchmarks/evaluate_crosslingual.py /tmp/xl-corpus --model mlm=/tmp/xl-run-mlm/model \
        --model mlm+tlm=/tmp/xl-run-tlm/model --out /tmp/xl-eval
    python benchmarks/evaluate_crosslingual.py /tmp/xl-corpus --limit 50 --finetune-steps 10   # seconds
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import sys
from collections.abc import Sequence

import numpy as np

from xlm_flax.tokenization import encode_text

BUCKETS = (16, 32, 64, 128)


# ----------------------------------------------------------------------------------------------------- data


def _read(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def _stable_order(keys: Sequence[str]) -> list[int]:
    return sorted(range(len(keys)), key=lambda i: hashlib.sha256(keys[i].encode("utf-8")).digest())


def load_pairs(corpus: str, split: str, lang: str, limit: int | None) -> dict[str, list[str]]:
    """`{"en", "xx", "pkg"}` of a split's `en-<lang>` pairs, in a stable order, at most `limit`."""
    prefix = os.path.join(corpus, f"{split}.en-{lang}")
    en, xx, pkg = _read(prefix + ".en"), _read(prefix + f".{lang}"), _read(prefix + ".pkg")
    order = _stable_order(en)[:limit] if limit else _stable_order(en)
    return {"en": [en[i] for i in order], "xx": [xx[i] for i in order], "pkg": [pkg[i] for i in order]}


# ------------------------------------------------------------------------------------------ char 3-grams


def char_ngram_matrix(texts: Sequence[str], vocabulary: dict[str, int] | None = None, n: int = 3):
    """Rows of character `n`-gram counts (lowercased, padded with spaces), L2-normalised, as a scipy CSR matrix."""
    from scipy import sparse

    vocabulary = {} if vocabulary is None else vocabulary
    grow = not vocabulary
    rows, cols, vals = [], [], []
    for r, text in enumerate(texts):
        padded = f" {' '.join(text.lower().split())} "
        counts = collections.Counter(padded[i : i + n] for i in range(max(1, len(padded) - n + 1)))
        for gram, count in counts.items():
            if gram not in vocabulary:
                if not grow:
                    continue
                vocabulary[gram] = len(vocabulary)
            rows.append(r)
            cols.append(vocabulary[gram])
            vals.append(float(count))
    matrix = sparse.csr_matrix((vals, (rows, cols)), shape=(len(texts), max(1, len(vocabulary))))
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(1))).ravel()
    return sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ matrix, vocabulary


def retrieval_p_at_1(similarity: np.ndarray) -> float:
    """Share of rows whose most similar column is their own index (the translation); ties count as misses."""
    similarity = np.asarray(similarity, dtype=np.float64)
    best = similarity.max(axis=1)
    own = np.diag(similarity)
    unique = (similarity == best[:, None]).sum(axis=1) == 1
    return float(np.mean((own == best) & unique))


def char_ngram_retrieval(source: Sequence[str], target: Sequence[str]) -> tuple[float, float]:
    """P@1 source->target and target->source with character 3-gram cosine similarity."""
    vocabulary: dict[str, int] = {}
    a, vocabulary = char_ngram_matrix(list(source) + list(target), vocabulary)
    sim = (a[: len(source)] @ a[len(source) :].T).toarray()
    return retrieval_p_at_1(sim), retrieval_p_at_1(sim.T)


def char_ngram_classifier(train_texts, train_labels, test_texts) -> np.ndarray:
    """Nearest class centroid (cosine) on character 3-gram vectors of the training texts."""
    train, vocabulary = char_ngram_matrix(train_texts)
    test, _ = char_ngram_matrix(test_texts, vocabulary)
    labels = np.asarray(train_labels)
    classes = np.unique(labels)
    centroids = np.vstack([np.asarray(train[labels == c].mean(axis=0)) for c in classes])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    return classes[np.argmax(test @ centroids.T, axis=1)]


# ------------------------------------------------------------------------------------------------- models


class ModelUnderTest:
    """A model directory: tokenizer, LM model, and jitted mean-pooled embeddings of every layer."""

    def __init__(self, path: str, buckets: Sequence[int] = BUCKETS):
        import jax
        from flax import nnx
        from transformers import XLMTokenizer

        from xlm_flax import XLMWithLMHeadModel

        self.path = path
        self.tokenizer = XLMTokenizer.from_pretrained(path)
        self.model = XLMWithLMHeadModel.from_pretrained(path)
        self.config = self.model.config
        self.buckets = tuple(sorted(buckets))
        self.limit = min(self.config.max_position_embeddings, self.buckets[-1])
        graphdef, state = nnx.split(self.model)

        def pooled(state, ids, mask, langs):
            model = nnx.merge(graphdef, state)
            out = model.transformer(ids, attention_mask=mask, langs=langs, output_hidden_states=True)
            weights = mask[..., None].astype(out.last_hidden_state.dtype)
            return [jax.numpy.sum(h * weights, 1) / jax.numpy.maximum(weights.sum(1), 1) for h in out.hidden_states]

        def predict(state, ids, mask, langs, positions, at):
            # The language-model head at one position per row only: the full [batch, length, vocabulary] logits
            # would be most of the time and of the host transfers.
            model = nnx.merge(graphdef, state)
            hidden = model.transformer(ids, attention_mask=mask, langs=langs, position_ids=positions).last_hidden_state
            picked = jax.numpy.take_along_axis(hidden, at[:, None, None], axis=1)  # [batch, 1, emb_dim]
            logits = model.pred_layer(picked, model.transformer.embeddings.embedding[...])
            return jax.numpy.argmax(logits[:, 0], axis=-1)

        self._state = state
        self._pooled = jax.jit(pooled)
        self._predict = jax.jit(predict)

    def lang_id(self, lang: str) -> int:
        return self.config.lang2id.get(lang, self.config.lang_id)

    def encode_ids(self, text: str, lang: str) -> list[int]:
        ids = encode_text(self.tokenizer, text, lang)  # the language's Moses rules, as in training
        return ids if len(ids) <= self.limit else ids[: self.limit - 1] + ids[-1:]

    def _batch(self, rows: list[dict[str, np.ndarray]], batch_size: int):
        length = next((b for b in self.buckets if b >= max(len(r["input_ids"]) for r in rows)), self.buckets[-1])
        n = len(rows)
        out = {
            "input_ids": np.full((batch_size, length), self.config.pad_index, np.int32),
            "attention_mask": np.zeros((batch_size, length), np.int32),
            "langs": np.zeros((batch_size, length), np.int32),
            "position_ids": np.zeros((batch_size, length), np.int32),
        }
        for i, row in enumerate(rows):
            k = len(row["input_ids"])
            out["input_ids"][i, :k] = row["input_ids"]
            out["attention_mask"][i, :k] = 1
            out["langs"][i, :k] = row["langs"]
            out["position_ids"][i, :k] = row.get("position_ids", np.arange(k))
        return out, n

    def embed(self, texts: Sequence[str], lang: str, batch_size: int = 32) -> list[np.ndarray]:
        """Mean-pooled embeddings `[n, emb_dim]` of the embeddings output and of every layer."""
        lid = self.lang_id(lang)
        rows = []
        for text in texts:
            ids = np.asarray(self.encode_ids(text, lang), np.int32)
            rows.append({"input_ids": ids, "langs": np.full(len(ids), lid, np.int32)})
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
        layers: list[np.ndarray] | None = None
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch, n = self._batch([rows[i] for i in chunk], batch_size)
            pooled = self._pooled(self._state, batch["input_ids"], batch["attention_mask"], batch["langs"])
            if layers is None:
                layers = [np.zeros((len(rows), p.shape[-1]), np.float32) for p in pooled]
            for layer, p in zip(layers, pooled):
                layer[chunk] = np.asarray(p)[:n]
        return layers or []

    def predict_masked(self, rows: list[dict[str, np.ndarray]], at: list[int], batch_size: int = 32) -> np.ndarray:
        """Argmax prediction at position `at[i]` of each row."""
        predictions = np.zeros(len(rows), np.int64)
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            batch, n = self._batch(chunk, batch_size)
            positions = np.zeros(batch_size, np.int32)
            positions[:n] = at[start : start + n]
            predicted = self._predict(
                self._state,
                batch["input_ids"],
                batch["attention_mask"],
                batch["langs"],
                batch["position_ids"],
                positions,
            )
            predictions[start : start + n] = np.asarray(predicted)[:n]
        return predictions


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def model_retrieval(model: ModelUnderTest, pairs: dict[str, dict[str, list[str]]], batch_size: int):
    """`{lang: [(p@1 en->xx, p@1 xx->en) per layer]}`."""
    out = {}
    for lang, data in pairs.items():
        en = model.embed(data["en"], "en", batch_size)
        xx = model.embed(data["xx"], lang, batch_size)
        out[lang] = []
        for a, b in zip(en, xx):
            sim = _cosine(a, b)
            out[lang].append((retrieval_p_at_1(sim), retrieval_p_at_1(sim.T)))
    return out


# ---------------------------------------------------------------------------------------- classification


def finetune_classifier(
    path: str, texts, labels, num_labels: int, *, steps: int, batch_size: int, lr: float, seed: int, buckets=BUCKETS
):
    """`XLMForSequenceClassification` from `path` (fresh head), fine-tuned on English `texts` with AdamW."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx
    from transformers import XLMTokenizer

    from xlm_flax import XLMConfig, XLMForSequenceClassification

    config = XLMConfig.from_pretrained(path).replace(num_labels=num_labels)
    model = XLMForSequenceClassification.from_pretrained(path, config=config, seed=seed)
    tokenizer = XLMTokenizer.from_pretrained(path)
    helper = _Encoder(tokenizer, config, buckets)
    rows = [helper.row(t, "en") for t in texts]
    labels = np.asarray(labels, np.int32)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(lr, weight_decay=0.01))
    opt_state = jax.jit(optimizer.init)(params)  # one compiled call, not one per leaf

    @jax.jit
    def step(params, opt_state, ids, mask, langs, y, key):
        def loss_fn(p):
            m = nnx.merge(graphdef, p, rest)
            return m(
                ids, attention_mask=mask, langs=langs, labels=y, deterministic=False, rngs=nnx.Rngs(dropout=key)
            ).loss

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    batch_size = min(batch_size, len(rows))
    order, cursor = rng.permutation(len(rows)), 0
    for i in range(steps):
        if cursor + batch_size > len(order):
            order, cursor = rng.permutation(len(rows)), 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        batch = helper.batch([rows[j] for j in idx], batch_size)
        params, opt_state, loss = step(
            params, opt_state, batch["input_ids"], batch["attention_mask"], batch["langs"], jnp.asarray(labels[idx]),
            jax.random.fold_in(key, i),
        )  # fmt: skip
    model = nnx.merge(graphdef, params, rest)
    logits_fn = jax.jit(
        lambda p, ids, mask, langs: nnx.merge(graphdef, p, rest)(ids, attention_mask=mask, langs=langs).logits
    )

    def predict(texts: Sequence[str], lang: str) -> np.ndarray:
        rows = [helper.row(t, lang) for t in texts]
        out = np.zeros(len(rows), np.int64)
        for start in range(0, len(rows), 32):
            chunk = rows[start : start + 32]
            b = helper.batch(chunk, 32)
            out[start : start + len(chunk)] = np.argmax(
                np.asarray(logits_fn(params, b["input_ids"], b["attention_mask"], b["langs"]))[: len(chunk)], -1
            )
        return out

    return predict


class _Encoder:
    def __init__(self, tokenizer, config, buckets: Sequence[int] = BUCKETS):
        self.tokenizer, self.config, self.buckets = tokenizer, config, tuple(sorted(buckets))
        self.limit = min(config.max_position_embeddings, self.buckets[-1])

    def row(self, text: str, lang: str) -> dict[str, np.ndarray]:
        ids = encode_text(self.tokenizer, text, lang)  # transformers' encode(lang=) would use English rules
        ids = ids if len(ids) <= self.limit else ids[: self.limit - 1] + ids[-1:]
        lid = self.config.lang2id.get(lang, self.config.lang_id)
        return {"input_ids": np.asarray(ids, np.int32), "langs": np.full(len(ids), lid, np.int32)}

    def batch(self, rows, batch_size: int) -> dict[str, np.ndarray]:
        length = next((b for b in self.buckets if b >= max(len(r["input_ids"]) for r in rows)), self.buckets[-1])
        out = {
            "input_ids": np.full((batch_size, length), self.config.pad_index, np.int32),
            "attention_mask": np.zeros((batch_size, length), np.int32),
            "langs": np.zeros((batch_size, length), np.int32),
        }
        for i, row in enumerate(rows):
            k = len(row["input_ids"])
            out["input_ids"][i, :k], out["attention_mask"][i, :k], out["langs"][i, :k] = (
                row["input_ids"],
                1,
                row["langs"],
            )
        return out


# -------------------------------------------------------------------------------------------------- fill-mask


def fill_mask_rows(model: ModelUnderTest, en: str, xx: str, lang: str):
    """The masked English row alone and as a TLM pair with its translation, the masked position and the target;
    None when the sentence has no whole word that is one vocabulary token of 3+ letters."""
    from xlm_flax.training.objectives import tlm_pair

    ids = model.encode_ids(en, "en")
    tokens = model.tokenizer.convert_ids_to_tokens(ids)
    candidates = [
        i
        for i in range(1, len(ids) - 1)
        if tokens[i].endswith("</w>")
        and (i == 1 or tokens[i - 1].endswith("</w>"))
        and len(tokens[i]) >= 3 + 4
        and tokens[i][:-4].isalpha()
    ]
    if not candidates:
        return None
    at = candidates[int(hashlib.sha256(en.encode("utf-8")).hexdigest(), 16) % len(candidates)]
    target = ids[at]
    masked = list(ids)
    masked[at] = model.config.mask_index
    en_id, xx_id = model.lang_id("en"), model.lang_id(lang)
    alone = {"input_ids": np.asarray(masked, np.int32), "langs": np.full(len(masked), en_id, np.int32)}
    second = model.encode_ids(xx, lang)
    if len(masked) + len(second) > model.limit:
        return None
    pair = tlm_pair(masked, second, en_id, xx_id)
    return alone, pair, at, target


# -------------------------------------------------------------------------------------------------- report


def evaluate(args) -> dict:
    with open(os.path.join(args.corpus, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    langs = [lang for lang in manifest["languages"] if lang != "en"]
    if args.langs:
        langs = [lang for lang in args.langs.split(",") if lang in langs]
    test = {lang: load_pairs(args.corpus, "test", lang, args.limit) for lang in langs}
    valid = {lang: load_pairs(args.corpus, "valid", lang, args.limit) for lang in langs}
    results: list[dict] = []

    def record(task, lang, metric, system, value, n):
        results.append({"task": task, "lang": lang, "metric": metric, "system": system, "value": value, "n": n})

    # Retrieval baselines.
    for lang, data in test.items():
        n = len(data["en"])
        forward, backward = char_ngram_retrieval(data["en"], data["xx"])
        for direction, value in ((f"en->{lang}", forward), (f"{lang}->en", backward)):
            record("retrieval", direction, "P@1", "chance", 1.0 / n, n)
            record("retrieval", direction, "P@1", "char 3-gram", value, n)

    # Classification data: K largest packages by English training messages.
    train_en, train_pkg = _read(os.path.join(args.corpus, "train.en")), _read(os.path.join(args.corpus, "train.en.pkg"))
    top = [p for p, _ in collections.Counter(train_pkg).most_common(args.classes)]
    label_of = {p: i for i, p in enumerate(top)}
    train_idx = [i for i in _stable_order(train_en) if train_pkg[i] in label_of]
    if args.limit:
        train_idx = train_idx[: args.limit * 4]
    cls_texts = [train_en[i] for i in train_idx]
    cls_labels = np.asarray([label_of[train_pkg[i]] for i in train_idx])
    # Test sets: every English test message of those packages, and each language's translated ones.
    test_en, test_pkg = _read(os.path.join(args.corpus, "test.en")), _read(os.path.join(args.corpus, "test.en.pkg"))
    en_idx = [i for i in _stable_order(test_en) if test_pkg[i] in label_of][: args.limit or None]
    cls_test = {"en": ([test_en[i] for i in en_idx], np.asarray([label_of[test_pkg[i]] for i in en_idx], np.int64))}
    for lang, data in test.items():
        keep = [i for i, p in enumerate(data["pkg"]) if p in label_of]
        cls_test[lang] = ([data["xx"][i] for i in keep], np.asarray([label_of[data["pkg"][i]] for i in keep], np.int64))
    majority = int(np.bincount(cls_labels, minlength=len(top)).argmax()) if len(cls_labels) else 0
    for lang, (texts, y) in cls_test.items():
        n = len(y)
        record("classification", lang, "accuracy", "chance", 1.0 / max(1, len(top)), n)
        record("classification", lang, "accuracy", "majority", float(np.mean(y == majority)) if n else 0.0, n)
        if n and len(cls_labels):
            pred = char_ngram_classifier(cls_texts, cls_labels, texts)
            record("classification", lang, "accuracy", "char 3-gram", float(np.mean(pred == y)), n)

    for name, path in args.model:
        model = ModelUnderTest(path, args.buckets)
        # Retrieval: layer chosen on valid.
        per_layer = model_retrieval(model, valid, args.batch_size)
        n_layers = len(next(iter(per_layer.values())))
        means = [np.mean([np.mean(per_layer[lang][k]) for lang in per_layer]) for k in range(n_layers)]
        layer = int(np.argmax(means))
        record("retrieval", "all", "chosen layer (valid)", name, layer, 0)
        scores = model_retrieval(model, test, args.batch_size)
        for lang in langs:
            forward, backward = scores[lang][layer]
            record("retrieval", f"en->{lang}", "P@1", name, forward, len(test[lang]["en"]))
            record("retrieval", f"{lang}->en", "P@1", name, backward, len(test[lang]["en"]))
        # Zero-shot classification.
        if len(cls_labels) and len(top) >= 2:
            predict = finetune_classifier(
                path, cls_texts, cls_labels, len(top), steps=args.finetune_steps, batch_size=args.batch_size,
                lr=args.finetune_lr, seed=args.seed, buckets=args.buckets,
            )  # fmt: skip
            for lang, (texts, y) in cls_test.items():
                accuracy = float(np.mean(predict(texts, lang) == y)) if len(y) else 0.0
                record("classification", lang, "accuracy", name, accuracy, len(y))
        # Fill-mask, alone vs with the translation; the baseline predicts the most frequent English training token.
        frequent = collections.Counter(t for e in cls_texts[:2000] for t in model.encode_ids(e, "en")[1:-1])
        most_frequent = frequent.most_common(1)[0][0] if frequent else -1
        for lang, data in test.items():
            cases = [c for c in (fill_mask_rows(model, e, x, lang) for e, x in zip(data["en"], data["xx"])) if c]
            if not cases:
                continue
            at = [c[2] for c in cases]
            target = np.asarray([c[3] for c in cases])
            alone = model.predict_masked([c[0] for c in cases], at, args.batch_size)
            paired = model.predict_masked([c[1] for c in cases], at, args.batch_size)
            record("fill-mask", lang, "accuracy, English alone", name, float(np.mean(alone == target)), len(cases))
            record(
                "fill-mask",
                lang,
                f"accuracy, with {lang} translation",
                name,
                float(np.mean(paired == target)),
                len(cases),
            )
            record("fill-mask", lang, "accuracy, English alone", "chance", 1.0 / model.config.vocab_size, len(cases))
            baseline = float(np.mean(target == most_frequent))
            record("fill-mask", lang, "accuracy, English alone", "most frequent token", baseline, len(cases))

    return {
        "corpus": os.path.abspath(args.corpus),
        "limit": args.limit,
        "classes": top,
        "models": dict(args.model),
        "results": results,
    }


def markdown(report: dict) -> str:
    """One table: a row per (task, language or direction, metric), a column per system."""
    systems: list[str] = []
    rows: dict[tuple[str, str, str], dict[str, float]] = {}
    counts: dict[tuple[str, str, str], int] = {}
    for r in report["results"]:
        if r["system"] not in systems:
            systems.append(r["system"])
        key = (r["task"], r["lang"], r["metric"])
        rows.setdefault(key, {})[r["system"]] = r["value"]
        counts[key] = max(counts.get(key, 0), r["n"])
    lines = ["| task | language | metric | n | " + " | ".join(systems) + " |", "|---" * (4 + len(systems)) + "|"]
    for key, values in rows.items():
        cells = []
        for s in systems:
            v = values.get(s)
            cells.append("" if v is None else str(v) if isinstance(v, int) else f"{100 * v:.1f}")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {counts[key]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nValues in %, except the chosen layer (0 = embeddings output).\n"


def _model_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--model {text!r}: write NAME=PATH")
    return name, path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", help="build_corpus.py's output directory")
    parser.add_argument("--model", type=_model_arg, action="append", default=[], help="NAME=PATH, repeatable")
    parser.add_argument("--langs", help="comma-separated subset of the corpus's languages")
    parser.add_argument("--limit", type=int, help="at most this many test (and valid) pairs per language")
    parser.add_argument("--classes", type=int, default=5, help="K: the largest packages are the labels")
    parser.add_argument("--finetune-steps", type=int, default=500)
    parser.add_argument("--finetune-lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--buckets", type=lambda t: tuple(int(x) for x in t.split(",")), default=BUCKETS,
        help="padded lengths, comma-separated (one compilation each; longer rows are cut); default %(default)s",
    )  # fmt: skip
    parser.add_argument("--out", help="directory for results.json and results.md (default: print only)")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.corpus, "manifest.json")):
        print(f"error: {args.corpus}/manifest.json not found; build the corpus first", file=sys.stderr)
        return 2
    for name, path in args.model:
        if not os.path.isfile(os.path.join(path, "config.json")):
            print(f"error: --model {name}={path}: no config.json there", file=sys.stderr)
            return 2
    report = evaluate(args)
    table = markdown(report)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        for name, text in (("results.json", json.dumps(report, indent=1)), ("results.md", table)):
            tmp = os.path.join(args.out, name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, os.path.join(args.out, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
