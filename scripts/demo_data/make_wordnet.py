#!/usr/bin/env python3
"""Builds the demo instruction dataset data/wordnet/{train,eval}.jsonl from WordNet 3.0.

Reads Debian's wordnet-base files (/usr/share/wordnet, format in wndb(5)) and writes Alpaca-
format records {"instruction": "Define the word.", "input": <lemma>, "output": <definition>}.

Selection, all deterministic (no random module: its algorithms may change across Python
versions):
  * lemmas of lowercase ASCII letters only, 3..14 letters, seen at least once in WordNet's
    sense-tagged corpora (tagsense_cnt >= 1 in index.<pos>: leaves out the rarest words);
  * per part of speech, the lemma's FIRST sense in index.<pos> (the most frequent one in
    WordNet's tagged corpora); its gloss without the quoted usage examples;
  * the definition is 10..60 characters;
  * one record per lemma: the part of speech whose index entry has the most tagged senses
    (ties: noun, verb, adjective, adverb);
  * lemmas ordered by SHA-256 of "<seed>:<lemma>"; the first EVAL go to eval.jsonl, the next
    TRAIN to train.jsonl, so the two sets never share a lemma; each file sorted by lemma.

Usage: python3 scripts/demo_data/make_wordnet.py [--wordnet /usr/share/wordnet] [--out data/wordnet]
Standard library only.
"""
import argparse
import hashlib
import json
import os
import re

POS_FILES = [("noun", "n"), ("verb", "v"), ("adj", "a"), ("adv", "r")]
SEED = 20240601
TRAIN, EVAL = 3000, 200
LEMMA_RE = re.compile(r"^[a-z]{3,14}$")
MIN_DEF, MAX_DEF = 10, 60
INSTRUCTION = "Define the word."


def definition_of(gloss):
    """The gloss up to its first quoted example: 'a b; "ex 1"; "ex 2"' -> 'a b'."""
    parts = [p.strip() for p in gloss.split(";")]
    kept = []
    for p in parts:
        if p.startswith('"') or not p:
            break
        kept.append(p)
    return "; ".join(kept).strip()


def read_glosses(path):
    """synset offset -> gloss, from a data.<pos> file (license header lines start with spaces)."""
    glosses = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):
                continue
            head, _, gloss = line.partition(" | ")
            glosses[head.split(" ", 1)[0]] = gloss.strip()
    return glosses


def read_first_senses(path):
    """lemma -> (first synset offset, tagsense_cnt), from an index.<pos> file.

    wndb(5): lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt offset...
    """
    first = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):
                continue
            fields = line.split()
            lemma, synset_cnt, p_cnt = fields[0], int(fields[2]), int(fields[3])
            tagsense_cnt = int(fields[5 + p_cnt])
            offsets = fields[6 + p_cnt:]
            assert len(offsets) == synset_cnt, line
            first[lemma] = (offsets[0], tagsense_cnt)
    return first


def candidates(wordnet_dir):
    """lemma -> definition, one sense per lemma (see the module docstring)."""
    best = {}  # lemma -> (tagsense_cnt, -pos_rank, definition)
    for rank, (name, _) in enumerate(POS_FILES):
        glosses = read_glosses(os.path.join(wordnet_dir, "data." + name))
        for lemma, (offset, tagged) in read_first_senses(
                os.path.join(wordnet_dir, "index." + name)).items():
            if not LEMMA_RE.match(lemma) or tagged < 1:
                continue
            definition = definition_of(glosses[offset])
            if not MIN_DEF <= len(definition) <= MAX_DEF:
                continue
            key = (tagged, -rank)
            if lemma not in best or key > best[lemma][:2]:
                best[lemma] = (tagged, -rank, definition)
    return {lemma: v[2] for lemma, v in best.items()}


def write_jsonl(path, lemmas, definitions):
    with open(path, "w", encoding="utf-8") as f:
        for lemma in sorted(lemmas):
            record = {"instruction": INSTRUCTION, "input": lemma, "output": definitions[lemma]}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wordnet", default="/usr/share/wordnet")
    parser.add_argument("--out", default="data/wordnet")
    args = parser.parse_args()
    definitions = candidates(args.wordnet)
    order = sorted(definitions,
                   key=lambda w: hashlib.sha256(f"{SEED}:{w}".encode()).hexdigest())
    if len(order) < EVAL + TRAIN:
        raise SystemExit(f"only {len(order)} candidate lemmas; need {EVAL + TRAIN}")
    os.makedirs(args.out, exist_ok=True)
    write_jsonl(os.path.join(args.out, "eval.jsonl"), order[:EVAL], definitions)
    write_jsonl(os.path.join(args.out, "train.jsonl"), order[EVAL:EVAL + TRAIN], definitions)
    print(f"{len(definitions)} candidate lemmas -> {TRAIN} train, {EVAL} eval in {args.out}")


if __name__ == "__main__":
    main()
