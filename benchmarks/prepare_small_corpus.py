"""Builds the English corpus of the shipped small model from the Python documentation's reST sources.

Source: Debian's `python3.11-doc` package (Python Software Foundation License; the Debian `copyright` file lists it),
fetched with `apt-get download python3.11-doc` and unpacked with `dpkg-deb -x`. Only prose paragraphs are kept:
indented blocks (code, directive bodies), directive and heading lines, tables and short fragments are dropped, reST
roles are reduced to their text, and paragraphs are split into sentences, one per line. Every 50th sentence goes to
the held-out split.

Usage:
    python benchmarks/prepare_small_corpus.py /tmp/python3.11-doc OUT_DIR
"""

from __future__ import annotations

import argparse
import os
import re

ROLE = re.compile(r":[\w:+-]+:`(?:[^`<]*<)?~?!?([^`>]*)>?`")  # :class:`Foo <bar.Foo>` -> bar.Foo; :func:`f` -> f
LITERAL = re.compile(r"``([^`]*)``")
LINK = re.compile(r"`([^`<]*?)\s*<[^>]*>`_+")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def paragraphs(text: str):
    """Unindented prose paragraphs of one reST file."""
    block: list[str] = []
    for line in text.splitlines() + [""]:
        prose = (
            line.strip()
            and not line.startswith((" ", "\t", ".. ", "..", "|", "+", "*", "=", "-", ">>>"))
            and not re.fullmatch(r"[=\-~^*#\"'+`:.]{3,}", line.strip())
        )
        if prose:
            block.append(line.strip())
        else:
            if block:
                yield " ".join(block)
            block = []


def clean(paragraph: str) -> str:
    paragraph = ROLE.sub(r"\1", paragraph)
    paragraph = LINK.sub(r"\1", paragraph)
    paragraph = LITERAL.sub(r"\1", paragraph)
    paragraph = paragraph.replace("*", "").replace("`", "").replace("\\", "")
    return " ".join(paragraph.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="directory where python3.11-doc was unpacked (dpkg-deb -x)")
    parser.add_argument("out", help="output directory: train.txt and heldout.txt")
    parser.add_argument("--every", type=int, default=50, help="every N-th sentence is held out")
    args = parser.parse_args()
    sources = os.path.join(args.root, "usr/share/doc/python3.11/html/_sources")
    sentences: list[str] = []
    for directory, _, files in sorted(os.walk(sources)):
        for name in sorted(files):
            if not name.endswith(".rst.txt"):
                continue
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                text = f.read()
            for paragraph in paragraphs(text):
                for sentence in SENTENCE_END.split(clean(paragraph)):
                    words = sentence.split()
                    if 5 <= len(words) <= 60 and sentence[0].isupper():
                        sentences.append(sentence)
    os.makedirs(args.out, exist_ok=True)
    with (
        open(os.path.join(args.out, "train.txt"), "w", encoding="utf-8") as train,
        open(os.path.join(args.out, "heldout.txt"), "w", encoding="utf-8") as heldout,
    ):
        for i, sentence in enumerate(sentences):
            (heldout if i % args.every == 0 else train).write(sentence + "\n")
    print(f"{len(sentences)} sentences, {sum(len(s.split()) for s in sentences)} words -> {args.out}")


if __name__ == "__main__":
    main()
