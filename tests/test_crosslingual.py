"""The cross-lingual corpus builder, vocabulary, alternating training streams and evaluation (issue 16), on small
synthetic gettext catalogs written here in the .mo format that `msgfmt` writes."""

from __future__ import annotations

import array
import json
import os
import struct

import numpy as np
import pytest

from benchmarks import evaluate_crosslingual as ev
from benchmarks.crosslingual import build_corpus as bc

HEADER = "Content-Type: text/plain; charset=UTF-8\nPlural-Forms: nplurals=2; plural=(n != 1);\n"


def write_mo(path: str, messages: dict[str, str]) -> None:
    """A GNU .mo file (no hash table), as Tools/i18n/msgfmt.py writes it."""
    keys = sorted(k.encode("utf-8") for k in messages)
    values = {k.encode("utf-8"): v.encode("utf-8") for k, v in messages.items()}
    ids = strs = b""
    offsets = []
    for k in keys:
        offsets.append((len(ids), len(k), len(strs), len(values[k])))
        ids += k + b"\0"
        strs += values[k] + b"\0"
    key_start = 7 * 4 + 16 * len(keys)
    value_start = key_start + len(ids)
    key_table, value_table = [], []
    for o1, l1, o2, l2 in offsets:
        key_table += [l1, o1 + key_start]
        value_table += [l2, o2 + value_start]
    head = struct.pack("Iiiiiii", 0x950412DE, 0, len(keys), 7 * 4, 7 * 4 + len(keys) * 8, 0, 0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(head + array.array("i", key_table).tobytes() + array.array("i", value_table).tobytes() + ids + strs)


WORDS = "file folder window network printer server user account disk device colour picture sound music".split()
VERBS = "open close save print copy delete rename share move check".split()
FR = dict(zip(WORDS, "fichier dossier fenêtre réseau imprimante serveur utilisateur compte disque appareil "
              "couleur image son musique".split()))  # fmt: skip
FR_VERBS = dict(
    zip(VERBS, "ouvrir fermer enregistrer imprimer copier supprimer renommer partager déplacer vérifier".split())
)
DE = dict(zip(WORDS, "Datei Ordner Fenster Netzwerk Drucker Server Benutzer Konto Platte Gerät Farbe Bild Ton "
              "Musik".split()))  # fmt: skip
DE_VERBS = dict(
    zip(VERBS, "öffnen schließen speichern drucken kopieren löschen umbenennen teilen verschieben prüfen".split())
)


def synthetic_locale(root: str) -> None:
    """Two packages (domains `alpha`, `beta`) in fr and de: real sentences, near-duplicates and noise."""
    for lang, nouns, verbs in (("fr", FR, FR_VERBS), ("de", DE, DE_VERBS)):
        for domain, chosen in (("alpha", VERBS[:5]), ("beta", VERBS[5:])):
            messages = {"": HEADER}
            for verb in chosen:
                for noun in WORDS:
                    en = f"Could not {verb} the {noun} now"
                    messages[en] = f"{verbs[verb]} {nouns[noun]} impossible maintenant"
                    # Near-duplicates of the same message: case, digits, punctuation, a format string.
                    messages[f"could not {verb} the {noun} now 2!"] = f"{verbs[verb]} {nouns[noun]} impossible 2"
                    messages[f"Could not {verb} the {noun} now: %s"] = f"{verbs[verb]} {nouns[noun]} impossible : %s"
            messages["Too short"] = "Trop court"  # under four words
            messages["Not translated at all here"] = ""  # untranslated
            messages["Same text in both languages"] = "Same text in both languages"  # identical
            messages["menu\x04_Open the selected file"] = f"_{verbs['open']} le {nouns['file']} choisi"  # context
            messages["One file was removed\0%d files were removed"] = "Un fichier supprimé\0%d fichiers supprimés"
            write_mo(os.path.join(root, lang, "LC_MESSAGES", f"{domain}.mo"), messages)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("xl")
    synthetic_locale(str(root / "locale"))
    out = str(root / "corpus")
    manifest = bc.build(str(root / "locale"), out, ["fr", "de"], valid=0.2, test=0.2, use_dpkg=False)
    return out, manifest


def test_clean_removes_format_strings_accelerators_markup_and_context():
    assert bc.clean("menu\x04_Open the <b>selected</b> file") == "Open the selected file"
    assert bc.clean("Could not open '%s': %(reason)s (%1$d) {0} ${HOME}") == "Could not open:"
    assert bc.clean("Save &As… &amp; R&&D") == "Save As… & R&D"
    assert bc.clean("Sa_ve the XDG_CONFIG_HOME file (_S)") == "Save the XDG_CONFIG_HOME file"
    assert bc.clean("Line one\\nline\ttwo\x07") == "Line one line two"


def test_normalised_key_groups_near_duplicates():
    assert bc.normalised_key("Could not open the file now") == bc.normalised_key("could not open  the file now 2!")
    assert bc.normalised_key("Could not open the file") != bc.normalised_key("Could not close the file")


def test_splits_are_disjoint_by_message_and_normalised_key(corpus):
    out, manifest = corpus
    english = {s: open(os.path.join(out, f"{s}.en"), encoding="utf-8").read().splitlines() for s in bc.SPLITS}
    assert all(english.values())  # every split has messages with these shares (0.6 / 0.2 / 0.2 of 140 groups)
    for a in bc.SPLITS:
        for b in bc.SPLITS:
            if a < b:
                assert not set(english[a]) & set(english[b])
                keys_a = {bc.normalised_key(e) for e in english[a]}
                assert not keys_a & {bc.normalised_key(e) for e in english[b]}
    # The near-duplicate variants of one message stay together.
    split_of = {e: s for s, lines in english.items() for e in lines}
    assert split_of["Could not open the file now"] == split_of["could not open the file now 2!"]
    # Every pair file's English lines belong to its split.
    for s in bc.SPLITS:
        for lang in ("fr", "de"):
            pair_en = open(os.path.join(out, f"{s}.en-{lang}.en"), encoding="utf-8").read().splitlines()
            assert set(pair_en) <= set(english[s])


def test_builder_drops_noise_and_keeps_files_aligned(corpus):
    out, manifest = corpus
    everything = "".join(open(os.path.join(out, f"{s}.en"), encoding="utf-8").read() for s in bc.SPLITS)
    for dropped in ("Too short", "Not translated", "Same text in both", "files were removed", "%s", "menu"):
        assert dropped not in everything
    assert "Open the selected file" in everything  # the context prefix and accelerator went, the message stayed
    assert "One file was removed" in everything  # plural: the singular with the first form
    # 14 nouns x 10 verbs, 3 variants each ("now", "now 2!", "now:"), plus the context and plural messages.
    total = sum(manifest["sizes"][s]["en-fr"]["pairs"] for s in bc.SPLITS)
    assert total == 14 * 10 * 3 + 2
    for s in bc.SPLITS:
        en = open(os.path.join(out, f"{s}.en-fr.en"), encoding="utf-8").read().splitlines()
        fr = open(os.path.join(out, f"{s}.en-fr.fr"), encoding="utf-8").read().splitlines()
        pkg = open(os.path.join(out, f"{s}.en-fr.pkg"), encoding="utf-8").read().splitlines()
        tsv = open(os.path.join(out, f"{s}.en-fr.tsv"), encoding="utf-8").read().splitlines()
        assert len(en) == len(fr) == len(pkg) == len(tsv) == manifest["sizes"][s]["en-fr"]["pairs"]
        assert tsv == [f"{e}\t{f}" for e, f in zip(en, fr)]
        for e, f, p in zip(en, fr, pkg):
            verb = e.split()[2].lower() if e.lower().startswith("could not") else None
            if verb:
                assert f.startswith(FR_VERBS[verb])  # aligned with its own translation
                assert p == ("domain:alpha" if verb in VERBS[:5] else "domain:beta")
    assert set(manifest["packages"]) == {"domain:alpha", "domain:beta"}


def test_retrieval_and_classification_baselines_on_constructed_cases():
    sim = np.array([[0.9, 0.1, 0.0], [0.5, 0.2, 0.3], [0.0, 0.4, 0.4]])
    assert ev.retrieval_p_at_1(sim) == pytest.approx(1 / 3)  # row 1 misses, row 2 is a tie (a miss)
    assert ev.retrieval_p_at_1(sim.T) == pytest.approx(2 / 3)  # columns: 0 and 2 find themselves, 1 finds 2
    source = ["the red house", "a blue car", "green trees grow"]
    target = ["green trees grow!", "the red house.", "a blue car?"]
    forward, backward = ev.char_ngram_retrieval(source, [target[1], target[2], target[0]])
    assert (forward, backward) == (1.0, 1.0)
    predicted = ev.char_ngram_classifier(
        ["open the file", "open a file", "play the music", "play some music"], [0, 0, 1, 1], ["file open", "music"]
    )
    assert predicted.tolist() == [0, 1]


def test_alternating_batches_resume_where_they_stopped():
    from benchmarks.crosslingual.train_models import AlternatingBatches

    class Stream:
        def __init__(self, name, lines, per_step):
            self.name, self.lines, self.per_step, self.langs = name, lines, per_step, ["en"]
            self.epoch = self.offset = 0

        def seek(self, epoch, offset):
            self.epoch, self.offset = epoch, offset

        def __next__(self):
            if self.offset + self.per_step > (len(self.lines) // self.per_step) * self.per_step:
                self.seek(self.epoch + 1, 0)
            out = (self.name, self.epoch, self.offset)
            self.offset += self.per_step
            return out

    def make():
        mlm = [Stream("en", [0] * 10, 2), Stream("fr", [0] * 6, 2)]
        tlm = [Stream("en-fr", [0] * 7, 1)]
        return AlternatingBatches([mlm, tlm])

    whole = make()
    expected = [next(whole) for _ in range(30)]
    assert [e[0] for e in expected[:6]] == ["en", "en-fr", "fr", "en-fr", "en", "en-fr"]
    first = make()
    head = [next(first) for _ in range(13)]
    resumed = make()
    resumed.seek(**first.position)
    assert head + [next(resumed) for _ in range(17)] == expected


@pytest.mark.slow
def test_vocabulary_and_evaluation_run_end_to_end(corpus, tmp_path):
    from transformers import XLMTokenizer

    from benchmarks.crosslingual import train_vocab
    from xlm_flax import XLMConfig

    out, _ = corpus
    model_dir = str(tmp_path / "model")
    assert train_vocab.main([out, model_dir, "--vocab-size", "200", "--emb-dim", "16", "--layers", "2",
                             "--heads", "2", "--max-positions", "64"]) == 0  # fmt: skip
    vocab = json.load(open(os.path.join(model_dir, "vocab.json"), encoding="utf-8"))
    assert [vocab[t] for t in ("<s>", "</s>", "<pad>", "<unk>", "<special0>", "<special1>", "<special9>")] == [
        0, 1, 2, 3, 4, 5, 13,
    ]  # fmt: skip
    assert any(t.endswith("</w>") for t in vocab)
    config = XLMConfig.from_pretrained(model_dir)
    assert config.lang2id == {"en": 0, "fr": 1, "de": 2} and config.n_langs == 3 and config.has_lang_embeddings
    tokenizer = XLMTokenizer.from_pretrained(model_dir)
    assert tokenizer.mask_token == "<special1>" and tokenizer.convert_tokens_to_ids("<special1>") == 5
    assert tokenizer.encode("Could not open the file now", lang="en")[0] == 0

    # Two steps of the MLM+TLM alternation (one of each) through the training script itself.
    from benchmarks.crosslingual import train_models

    run = str(tmp_path / "run")
    assert train_models.main([model_dir, out, run, "--objective", "mlm+tlm", "--steps", "2", "--save-every", "2",
                              "--log-every", "1", "--batch-size", "4"]) == 0  # fmt: skip
    trained = os.path.join(run, "model")
    assert XLMConfig.from_pretrained(trained).lang2id == config.lang2id
    results = str(tmp_path / "eval")
    assert ev.main([out, "--model", f"tiny={trained}", "--limit", "20", "--classes", "2", "--finetune-steps", "2",
                    "--batch-size", "8", "--buckets", "64", "--out", results]) == 0  # fmt: skip
    report = json.load(open(os.path.join(results, "results.json"), encoding="utf-8"))
    rows = {(r["task"], r["lang"], r["metric"], r["system"]): r for r in report["results"]}
    for lang in ("fr", "de"):
        for direction in (f"en->{lang}", f"{lang}->en"):
            assert rows[("retrieval", direction, "P@1", "chance")]["value"] == pytest.approx(1 / 20)
            assert 0 <= rows[("retrieval", direction, "P@1", "tiny")]["value"] <= 1
        assert 0 <= rows[("classification", lang, "accuracy", "tiny")]["value"] <= 1
        assert rows[("classification", lang, "accuracy", "chance")]["value"] == 0.5
        assert ("fill-mask", lang, f"accuracy, with {lang} translation", "tiny") in rows
    assert ("classification", "en", "accuracy", "tiny") in rows
    assert "| retrieval | en->fr | P@1 |" in open(os.path.join(results, "results.md"), encoding="utf-8").read()


def test_shipped_multilingual_model_loads_with_its_languages():
    from xlm_flax import Embedder, FillMask, multilingual_model_path
    from xlm_flax.demo import CROSSLINGUAL_LAYER, CROSSLINGUAL_MESSAGES
    from xlm_flax.errors import InputError

    directory = multilingual_model_path()
    assert sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory)) <= 10 * 2**20
    card = open(os.path.join(directory, "MODEL_CARD.md"), encoding="utf-8").read()
    assert "Licence" in card and "| retrieval |" in card  # the corpus's licences and the evaluation table
    fill = FillMask.from_pretrained(directory)
    config = fill.config
    assert config.lang2id == {"en": 0, "fr": 1, "de": 2, "es": 3, "ru": 4} and config.has_lang_embeddings
    assert fill.mask_id == 5 and fill.tokenizer.convert_ids_to_tokens(13) == "<special9>"
    embedder = Embedder(fill.model, fill.tokenizer)
    english = [message for message, _ in CROSSLINGUAL_MESSAGES]
    russian = [by_lang["ru"] for _, by_lang in CROSSLINGUAL_MESSAGES]
    a = embedder.encode(english, lang="en", layer=CROSSLINGUAL_LAYER, normalize_embeddings=True)
    b = embedder.encode(russian, lang="ru", layer=CROSSLINGUAL_LAYER, normalize_embeddings=True)
    assert np.isfinite(a).all() and np.isfinite(b).all() and a.shape == b.shape == (len(english), config.emb_dim)
    # The language id reaches the model: the same text embeds differently as French and as English.
    assert not np.allclose(embedder.encode(english[:1], lang="fr"), embedder.encode(english[:1], lang="en"))
    with pytest.raises(InputError, match="unknown language 'it'"):
        embedder.encode(english[:1], lang="it")
