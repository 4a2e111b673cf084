#!/usr/bin/env python3
"""Builds the KJV corpus used by the bundled tiny model (data/tiny-llama/).

Run (from the repository root):
    .venv-fixtures/bin/python scripts/tiny_model/make_corpus.py
(plain python3 works too: only the standard library is used.)

Source: the King James Version as shipped by the Debian package `bible-kjv`
(public domain), dumped with `bible -l0 'Gen1:1-Rev22:21'`. That dump has one
heading line per chapter ("Genesis 1", "1 Samuel 3", ...), blank lines, and one
line per verse ("  1 In the beginning God created ...").

Documents: one chapter = one document. The verse numbers are stripped and the
verses of a chapter are joined with a single space, so a document is one
paragraph of plain ASCII text (the chapter heading is not part of it).

Split (deterministic): chapters are numbered 0..1188 in canonical order
(Genesis 1 = 0, Revelation 22 = 1188). Chapter i is held out iff i % 25 == 0
(48 chapters); all other chapters (1141) are training text.

Outputs:
    data/kjv/eval.jsonl   the held-out chapters, {"text": ...} per line (committed)
    data/kjv/train.jsonl  the training chapters, same format (NOT committed;
                          data/kjv/.gitignore lists it)
    data/kjv/train_verses.txt  one training verse per line, input of the
                          SentencePiece trainer (NOT committed)
"""

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT_DIR = REPO / "data" / "kjv"
HOLDOUT_EVERY = 25  # chapter index i is held out iff i % HOLDOUT_EVERY == 0
EXPECTED_CHAPTERS = 1189  # chapters in the Protestant canon

VERSE_RE = re.compile(r"^ +(\d+) (\S.*)$")  # "  12 And God said, ..." (always indented)
HEADING_RE = re.compile(r"^(?:\d )?[A-Z][A-Za-z ]+ \d+$")  # "1 Samuel 3", "Song of Solomon 2"


def dump_bible() -> str:
    """Returns the whole KJV text as printed by the `bible` command."""
    result = subprocess.run(
        ["bible", "-l0", "Gen1:1-Rev22:21"], check=True, capture_output=True, text=True
    )
    return result.stdout


def parse_chapters(dump: str):
    """Returns a list of (heading, [verse texts]) in canonical order."""
    chapters = []
    for line in dump.splitlines():
        if not line.strip():
            continue
        verse = VERSE_RE.match(line)
        if verse:
            if not chapters:
                sys.exit(f"verse before the first chapter heading: {line!r}")
            chapters[-1][1].append(verse.group(2).strip())
        elif HEADING_RE.match(line):
            chapters.append((line.strip(), []))
        else:
            sys.exit(f"unexpected line in the bible dump: {line!r}")
    return chapters


def write_jsonl(path: Path, texts):
    with path.open("w", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")


def main():
    chapters = parse_chapters(dump_bible())
    if len(chapters) != EXPECTED_CHAPTERS:
        sys.exit(f"expected {EXPECTED_CHAPTERS} chapters, got {len(chapters)}")

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    train, held_out, train_verses = [], [], []
    for index, (heading, verses) in enumerate(chapters):
        document = " ".join(verses)
        if index % HOLDOUT_EVERY == 0:
            held_out.append((heading, document))
        else:
            train.append(document)
            train_verses.extend(verses)

    write_jsonl(OUT_DIR / "eval.jsonl", [doc for _, doc in held_out])
    write_jsonl(OUT_DIR / "train.jsonl", train)
    (OUT_DIR / "train_verses.txt").write_text("\n".join(train_verses) + "\n", encoding="utf-8")

    eval_bytes = (OUT_DIR / "eval.jsonl").stat().st_size
    print(f"chapters: {len(chapters)}  train: {len(train)}  held out: {len(held_out)}")
    print(f"train characters: {sum(len(t) for t in train)}  verses: {len(train_verses)}")
    print(f"eval.jsonl: {eval_bytes} bytes; held-out chapters: "
          + ", ".join(h for h, _ in held_out))


if __name__ == "__main__":
    main()
