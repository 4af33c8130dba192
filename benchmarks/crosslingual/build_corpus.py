"""Builds an English-centred parallel corpus from the gettext catalogs of a Debian machine.

Every `LOCALE_DIR/<lang>/LC_MESSAGES/<domain>.mo` is read with `gettext.GNUTranslations` (the catalog format, never
pickle); each entry pairs an English `msgid` with its `msgstr` in `<lang>`. The text is cleaned (context prefixes,
printf/brace/shell format strings, `_`/`&` accelerators, markup tags and entities, whitespace), and a pair is kept
when the message is translated, differs from its English, has at least `--min-words` English words, at most
`--max-words`, and is mostly letters. One translation is kept per English message and language (the most common
over packages, then the first by package name).

Splits are made by English message: messages are grouped by a normalised key (lowercased, digits and punctuation
removed, whitespace collapsed), and each group goes to train / valid / test by a stable hash of its key, so neither
a message nor one differing from it only in case, digits, punctuation or spacing is in two splits, and the English
test messages are the same for every language.

Output directory (plain text, one sentence per line, UTF-8):
- `<split>.<lang>`: monolingual text (for English, every English message of the split, once);
- `<split>.en-<lang>.en` / `<split>.en-<lang>.<lang>`: parallel files aligned line by line;
- `<split>.en-<lang>.tsv`: the same pairs as `english<TAB>translation` (the trainer's TLM format);
- `<split>.en-<lang>.pkg` and `<split>.en.pkg`: the Debian package of each line's English message;
- `manifest.json`: sizes per split and language, the packages read with their versions and licences.

Usage:
    python benchmarks/crosslingual/build_corpus.py /tmp/xl-corpus --langs fr,de,es,ru
"""

from __future__ import annotations

import argparse
import collections
import gettext
import glob
import hashlib
import html
import json
import os
import re
import subprocess
import sys
import tempfile
import unicodedata
from collections.abc import Sequence

SPLITS = ("train", "valid", "test")

_PRINTF = re.compile(
    r"%(?:\d+\$)?(?:\([A-Za-z_][\w.-]*\))?[-+ #0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|h|ll|l|L|q|j|z|t|I64|I32)?[diouxXeEfFgGaAcspnm%]"
)
_BRACE = re.compile(r"\$\{[^}]*\}|\{[\w.:!\[\]-]*\}|\$[A-Za-z_]\w*")
_TAG = re.compile(r"</?[A-Za-z][\w:-]*(?:\s[^<>]*)?/?>")
_ACCEL_PAREN = re.compile(r"\s*\([_&][^\s()]\)")
_ACCEL_AMP = re.compile(r"&(?=[^\W\d_])(?![A-Za-z]+;|#\d+;)")
_ACCEL_UNDERSCORE = re.compile(r"^([^\W\d_]*)_([^\W\d_]+[.,:;!?…]*)$")  # "_Save", "Sa_ve"; not "XDG_CONFIG_HOME"
_SPACE = re.compile(r"\s+")
_EMPTY_QUOTES = re.compile(
    "(?:'\\s*'|\"\\s*\"|`\\s*'|\u2018\\s*\u2019|\u201c\\s*\u201d|\u00ab\\s*\u00bb|\u201e\\s*\u201c|\\(\\s*\\))"
)
_KEY_DROP = re.compile(r"[\d\W_]+", re.UNICODE)


def clean(text: str) -> str:
    """One catalog message as plain text: no context, format strings, accelerators, markup or extra spaces."""
    text = text.rsplit("\x04", 1)[-1]  # "context\x04message"
    text = text.replace("\\n", " ")
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Cf") else c for c in text)  # \t, \n, \a, ZWSP
    text = _PRINTF.sub(" ", text)
    text = _BRACE.sub(" ", text)
    text = _TAG.sub(" ", text)
    text = _ACCEL_PAREN.sub("", text)
    text = text.replace("&&", "\x00")
    text = _ACCEL_AMP.sub("", text)
    text = text.replace("\x00", "&")
    text = html.unescape(text)
    text = " ".join(_ACCEL_UNDERSCORE.sub(r"\1\2", word) if not word.isupper() else word for word in text.split())
    text = _EMPTY_QUOTES.sub(" ", _SPACE.sub(" ", text))  # the quotes around a removed placeholder
    text = _SPACE.sub(" ", text).strip().lstrip(":;,. ")
    return re.sub(r"\s+([.,:;!?])$", r"\1", text)


def normalised_key(english: str) -> str:
    """The grouping key of a message: lowercased, digits/punctuation dropped, whitespace collapsed."""
    return _SPACE.sub(" ", _KEY_DROP.sub(" ", english.lower())).strip()


def split_of(key: str, valid: float, test: float) -> str:
    """The split of a key group, from a stable hash (the same on every machine and run)."""
    value = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
    return "valid" if value < valid else "test" if value < valid + test else "train"


def _mostly_letters(text: str) -> bool:
    letters = sum(unicodedata.category(c).startswith("L") for c in text)
    return letters >= 0.6 * len(text.replace(" ", ""))


def read_catalog(path: str) -> list[tuple[str, str]]:
    """`(msgid, msgstr)` of one .mo file: the header dropped, plural entries as their first form."""
    with open(path, "rb") as f:
        catalog = gettext.GNUTranslations(f)._catalog  # the parsed entries; GNUTranslations has no public accessor
    pairs = []
    for key, value in catalog.items():
        if isinstance(key, tuple):  # plural: (singular msgid, form index); keep form 0 with the singular
            key, form = key
            if form != 0:
                continue
        if key == "":  # the header entry
            continue
        pairs.append((key, value))
    return pairs


def owning_packages(paths: list[str], use_dpkg: bool) -> dict[str, str]:
    """The Debian package of each file (`dpkg -S`); the catalog's domain when dpkg does not know the file."""
    owners = {p: "domain:" + os.path.splitext(os.path.basename(p))[0] for p in paths}
    if not use_dpkg:
        return owners
    for start in range(0, len(paths), 200):
        chunk = paths[start : start + 200]
        result = subprocess.run(["dpkg", "-S", *chunk], capture_output=True, text=True, check=False)
        for line in result.stdout.splitlines():
            package, sep, path = line.partition(": ")
            if sep and path.strip() in owners:
                owners[path.strip()] = package.split(",")[0].strip()
    return owners


def package_facts(packages: list[str]) -> dict[str, dict[str, object]]:
    """Version (`dpkg-query -W`) and licences (`/usr/share/doc/<pkg>/copyright`'s `License:` fields) of each."""
    facts: dict[str, dict[str, object]] = {}
    real = [p for p in packages if not p.startswith("domain:")]
    versions = {}
    if real:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Package}:${Architecture}\t${Version}\n", *real],
            capture_output=True,
            text=True,
            check=False,
        )
        for line in result.stdout.splitlines():
            name, _, version = line.partition("\t")
            versions[name] = version
            versions.setdefault(name.split(":")[0], version)
    for package in packages:
        doc = os.path.join("/usr/share/doc", package.split(":")[0], "copyright")
        licences: list[str] = []
        if os.path.isfile(doc):
            with open(doc, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith("License:"):
                        name = line.split(":", 1)[1].strip()
                        if name and name not in licences:
                            licences.append(name)
        facts[package] = {
            "version": versions.get(package, versions.get(package.split(":")[0])),
            "licences": licences or (["see " + doc] if os.path.isfile(doc) else []),
        }
    return facts


def collect(
    locale_dir: str,
    langs: list[str],
    *,
    min_words: int,
    max_words: int,
    use_dpkg: bool,
    domains: Sequence[str] | None = None,
):
    """Cleaned pairs per language: `{lang: {english: (translation, package)}}`, and the files read (only the
    catalogs of `domains`, e.g. `["coreutils", "tar"]`, when given)."""
    files = {lang: sorted(glob.glob(os.path.join(locale_dir, lang, "LC_MESSAGES", "*.mo"))) for lang in langs}
    if domains is not None:
        wanted = set(domains)
        files = {
            lang: [p for p in paths if os.path.basename(p)[: -len(".mo")] in wanted] for lang, paths in files.items()
        }
    owners = owning_packages([p for paths in files.values() for p in paths], use_dpkg)
    pairs: dict[str, dict[str, tuple[str, str]]] = {}
    unreadable = []
    for lang in langs:
        candidates: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        first_package: dict[tuple[str, str], str] = {}
        for path in files[lang]:
            try:
                entries = read_catalog(path)
            except (OSError, UnicodeDecodeError, LookupError, ValueError) as error:  # bad charset, truncated file
                unreadable.append(f"{path}: {error}")
                continue
            package = owners[path]
            for msgid, msgstr in entries:
                english, translation = clean(msgid), clean(msgstr)
                words = len(english.split())
                if not translation or not (min_words <= words <= max_words) or len(translation.split()) < 2:
                    continue
                if english.casefold() == translation.casefold() or not _mostly_letters(english):
                    continue
                if not _mostly_letters(translation):
                    continue
                candidates[english][translation] += 1
                first_package.setdefault((english, translation), package)
                first_package[(english, translation)] = min(first_package[(english, translation)], package)
        chosen = {}
        for english, counts in candidates.items():
            translation = min(counts, key=lambda t: (-counts[t], first_package[(english, t)], t))
            chosen[english] = (translation, first_package[(english, translation)])
        pairs[lang] = chosen
    return pairs, files, owners, unreadable


def _write_lines(path: str, lines: list[str]) -> None:
    for line in lines:
        if "\n" in line or line.count("\t") > 1:
            raise ValueError(f"a line holds a newline or more than one tab: {line!r}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def build(
    locale_dir: str,
    out: str,
    langs: list[str],
    *,
    min_words: int = 4,
    max_words: int = 40,
    valid: float = 0.05,
    test: float = 0.05,
    use_dpkg: bool = True,
    domains: Sequence[str] | None = None,
) -> dict:
    """Reads the catalogs (of `domains` only, when given), cleans, splits and writes the corpus to `out`; returns
    the manifest. The split of a message depends on its text alone, so a slice built from a few domains has its
    messages in the same splits as the full corpus."""
    pairs, files, owners, unreadable = collect(
        locale_dir, langs, min_words=min_words, max_words=max_words, use_dpkg=use_dpkg, domains=domains
    )
    # One package per English message, over all languages: the most frequent, then the first by name.
    votes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for lang in langs:
        for english, (_, package) in pairs[lang].items():
            votes[english][package] += 1
    package_of = {e: min(c, key=lambda p: (-c[p], p)) for e, c in votes.items()}
    split_by_english = {e: split_of(normalised_key(e), valid, test) for e in package_of}

    staging = tempfile.mkdtemp(prefix=".staging-", dir=os.path.dirname(os.path.abspath(out)) or ".")
    sizes: dict[str, dict[str, dict[str, int]]] = {s: {} for s in SPLITS}
    for split in SPLITS:
        english_lines = sorted(e for e, s in split_by_english.items() if s == split)
        _write_lines(os.path.join(staging, f"{split}.en"), english_lines)
        _write_lines(os.path.join(staging, f"{split}.en.pkg"), [package_of[e] for e in english_lines])
        sizes[split]["en"] = {"sentences": len(english_lines), "words": sum(len(e.split()) for e in english_lines)}
        for lang in langs:
            english = sorted(e for e in pairs[lang] if split_by_english[e] == split)
            translations = [pairs[lang][e][0] for e in english]
            prefix = os.path.join(staging, f"{split}.en-{lang}")
            _write_lines(prefix + ".en", english)
            _write_lines(prefix + f".{lang}", translations)
            _write_lines(prefix + ".tsv", [f"{e}\t{t}" for e, t in zip(english, translations)])
            _write_lines(prefix + ".pkg", [package_of[e] for e in english])
            _write_lines(os.path.join(staging, f"{split}.{lang}"), sorted(set(translations)))
            sizes[split][f"en-{lang}"] = {
                "pairs": len(english),
                "en_words": sum(len(e.split()) for e in english),
                f"{lang}_words": sum(len(t.split()) for t in translations),
            }
            sizes[split][lang] = {"sentences": len(set(translations))}
    used = sorted({package for lang in langs for _, package in pairs[lang].values()})
    pairs_per_package = collections.Counter(package_of.values())
    manifest = {
        "source": os.path.abspath(locale_dir),
        "languages": ["en", *langs],
        "options": {"min_words": min_words, "max_words": max_words, "valid": valid, "test": test, "domains": domains},
        "split_rule": "sha256(normalised English key) -> [0,1): < valid: valid, < valid+test: test, else train",
        "sizes": sizes,
        "catalogs_read": {lang: len(files[lang]) for lang in langs},
        "unreadable": unreadable,
        "packages": {
            package: {**facts, "english_messages": pairs_per_package.get(package, 0)}
            for package, facts in package_facts(used).items()
        },
    }
    with open(os.path.join(staging, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
    # Atomic: the finished directory replaces any previous one in one rename.
    if os.path.isdir(out):
        old = out.rstrip("/") + ".old"
        os.rename(out, old)
        os.rename(staging, out)
        subprocess.run(["rm", "-rf", old], check=False)
    else:
        os.rename(staging, out)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="/tmp/xl-corpus", help="output directory (default %(default)s)")
    parser.add_argument("--locale-dir", default="/usr/share/locale")
    parser.add_argument("--langs", default="fr,de,es,ru", help="comma-separated, besides English")
    parser.add_argument("--min-words", type=int, default=4)
    parser.add_argument("--max-words", type=int, default=40)
    parser.add_argument("--valid", type=float, default=0.05, help="share of English key groups in valid")
    parser.add_argument("--test", type=float, default=0.05, help="share of English key groups in test")
    parser.add_argument("--no-dpkg", action="store_true", help="name packages by catalog domain (no dpkg)")
    parser.add_argument("--domains", help="comma-separated catalog domains to read (default: all), e.g. coreutils,tar")
    args = parser.parse_args(argv)
    langs = [code.strip() for code in args.langs.split(",") if code.strip()]
    missing = [lang for lang in langs if not os.path.isdir(os.path.join(args.locale_dir, lang, "LC_MESSAGES"))]
    if missing or not langs:
        print(f"error: no {args.locale_dir}/<lang>/LC_MESSAGES for {missing or 'any language'}", file=sys.stderr)
        return 2
    manifest = build(
        args.locale_dir,
        args.out,
        langs,
        min_words=args.min_words,
        max_words=args.max_words,
        valid=args.valid,
        test=args.test,
        use_dpkg=not args.no_dpkg,
        domains=[d.strip() for d in args.domains.split(",") if d.strip()] if args.domains else None,
    )
    for split in SPLITS:
        row = manifest["sizes"][split]
        print(
            split, " ".join(f"en-{lang}={row[f'en-{lang}']['pairs']}" for lang in langs), f"en={row['en']['sentences']}"
        )
    print(f"{len(manifest['packages'])} packages -> {args.out}/manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
