#!/usr/bin/env python3
"""Builds the chat dataset data/wordnet-chat/{train,eval}.jsonl from WordNet 3.0.

A terse dictionary assistant, in the chat format of qlora-train (format "chat": one
{"messages": [{"role", "content"}, ...]} per line). Each record is one word:

  user:      What does "abroad" mean?            (one of DEF_QUESTIONS, picked by hash)
  assistant: abroad (adverb): to or in a foreign country.
  user:      Give an example of its use.         (when the gloss quotes an example holding the word)
  assistant: They had never travelled abroad.
  user:      Give me a synonym.                  (when the synset has other one-word lemmas)
  assistant: overseas
  user:      What is the opposite?               (when WordNet has a direct antonym, "!" pointer)
  assistant: ...

No system message: qlora-train's chatml template renders exactly the messages given (SmolLM2's
own template would insert its default system prompt; see data/wordnet-chat/README.md).

Selection, all deterministic (no random module):
  * lemmas of lowercase ASCII letters only, 3..14 letters, seen at least once in WordNet's
    sense-tagged corpora (tagsense_cnt >= 1 in index.<pos>);
  * per part of speech the lemma's FIRST sense (the most frequent in the tagged corpora), its
    gloss without the quoted examples, 10..80 characters; one part of speech per lemma: the one
    with the most tagged senses (ties: noun, verb, adjective, adverb), as make_wordnet.py;
  * example: the first quoted example of that gloss that holds the lemma (or lemma + s, es, d,
    ed, ing) as a word, 12..100 characters; first letter capitalized, a final period added;
  * synonyms: the synset's other lemmas of lowercase letters (underscores as spaces), at most
    three, in WordNet's order; antonym: the lemma's first direct antonym ("!" lexical pointer);
  * lemmas ordered by SHA-256 of "<seed>:<lemma>"; the first EVAL go to eval.jsonl, the next
    TRAIN to train.jsonl (no lemma in both); each file sorted by lemma.

Usage: python3 scripts/demo_data/make_wordnet_chat.py [--wordnet /usr/share/wordnet]
                                                      [--out data/wordnet-chat]
Standard library only; needs Debian's wordnet-base (apt-get install wordnet-base).
"""
import argparse
import hashlib
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_wordnet import definition_of, read_first_senses  # noqa: E402  (same folder)

POS_FILES = [("noun", "n", "noun"), ("verb", "v", "verb"), ("adj", "a", "adjective"),
             ("adv", "r", "adverb")]
SEED = 20250207
TRAIN, EVAL = 3000, 200
LEMMA_RE = re.compile(r"^[a-z]{3,14}$")
SYNONYM_RE = re.compile(r"^[a-z]+( [a-z]+)*$")
MIN_DEF, MAX_DEF = 10, 80
MIN_EXAMPLE, MAX_EXAMPLE = 12, 100
MAX_SYNONYMS = 3
DEF_QUESTIONS = ['What does "{w}" mean?', 'Define "{w}".', 'What is the meaning of "{w}"?',
                 'Explain the word "{w}".']
ASK_EXAMPLE = "Give an example of its use."
ASK_SYNONYM = "Give me a synonym."
ASK_ANTONYM = "What is the opposite?"


class Synset:
    """One line of a data.<pos> file (wndb(5)):
    offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt [ptr...] [frames] | gloss
    with w_cnt in hexadecimal and each ptr = symbol offset pos source/target (4 hex digits)."""

    def __init__(self, line):
        head, _, gloss = line.partition(" | ")
        fields = head.split()
        self.offset = fields[0]
        w_cnt = int(fields[3], 16)
        # Adjective lemmas may carry a syntactic marker: "galore(ip)", "ready_to_hand(p)".
        self.words = [re.sub(r"\([a-z]+\)$", "", fields[4 + 2 * i]) for i in range(w_cnt)]
        at = 4 + 2 * w_cnt
        p_cnt = int(fields[at])
        self.pointers = []  # (symbol, offset, pos, source word 1-based, target word 1-based)
        for i in range(p_cnt):
            symbol, offset, pos, st = fields[at + 1 + 4 * i:at + 5 + 4 * i]
            self.pointers.append((symbol, offset, pos, int(st[:2], 16), int(st[2:], 16)))
        self.gloss = gloss.strip()


def read_synsets(path):
    """offset -> Synset, from a data.<pos> file (license header lines start with spaces)."""
    with open(path, encoding="utf-8") as f:
        return {s.offset: s for s in (Synset(line) for line in f if not line.startswith("  "))}


def quoted_examples(gloss):
    """The quoted usage examples of a gloss: 'a b; "ex 1"; "ex 2"' -> ['ex 1', 'ex 2']."""
    return re.findall(r'"([^"]+)"', gloss)


def example_for(lemma, gloss):
    forms = "|".join(re.escape(lemma + s) for s in ("", "s", "es", "d", "ed", "ing"))
    word = re.compile(r"\b(" + forms + r")\b", re.IGNORECASE)
    for ex in quoted_examples(gloss):
        ex = ex.strip()
        if MIN_EXAMPLE <= len(ex) <= MAX_EXAMPLE and word.search(ex):
            ex = ex[0].upper() + ex[1:]
            return ex if ex[-1] in ".?!" else ex + "."
    return None


def entries(wordnet_dir):
    """lemma -> dict(pos, definition, example, synonyms, antonym), one sense per lemma."""
    synsets = {pos: read_synsets(os.path.join(wordnet_dir, "data." + name))
               for name, pos, _ in POS_FILES}
    best = {}  # lemma -> (tagsense_cnt, -pos_rank, entry)
    for rank, (name, pos, pos_name) in enumerate(POS_FILES):
        for lemma, (offset, tagged) in read_first_senses(
                os.path.join(wordnet_dir, "index." + name)).items():
            if not LEMMA_RE.match(lemma) or tagged < 1:
                continue
            synset = synsets[pos][offset]
            definition = definition_of(synset.gloss)
            if not MIN_DEF <= len(definition) <= MAX_DEF:
                continue
            key = (tagged, -rank)
            if lemma in best and key <= best[lemma][:2]:
                continue
            lower = [w.lower() for w in synset.words]
            if lemma not in lower:
                continue  # index and data disagree on the spelling: leave the lemma out
            word_no = lower.index(lemma) + 1
            synonyms = [w.replace("_", " ") for w in synset.words if w.lower() != lemma]
            synonyms = [w for w in synonyms if SYNONYM_RE.match(w)][:MAX_SYNONYMS]
            antonym = None
            for symbol, target, target_pos, source, dest in synset.pointers:
                if symbol == "!" and source == word_no:
                    target_pos = "a" if target_pos == "s" else target_pos
                    candidate = synsets[target_pos][target].words[dest - 1].replace("_", " ")
                    if SYNONYM_RE.match(candidate):
                        antonym = candidate
                        break
            best[lemma] = (tagged, -rank, {
                "pos": pos_name, "definition": definition,
                "example": example_for(lemma, synset.gloss),
                "synonyms": synonyms, "antonym": antonym})
    return {lemma: v[2] for lemma, v in best.items()}


def digest(lemma):
    return hashlib.sha256(f"{SEED}:{lemma}".encode()).hexdigest()


def record(lemma, e):
    question = DEF_QUESTIONS[int(digest(lemma), 16) % len(DEF_QUESTIONS)]
    messages = [{"role": "user", "content": question.format(w=lemma)},
                {"role": "assistant", "content": f"{lemma} ({e['pos']}): {e['definition']}."}]
    if e["example"]:
        messages += [{"role": "user", "content": ASK_EXAMPLE},
                     {"role": "assistant", "content": e["example"]}]
    if e["synonyms"]:
        messages += [{"role": "user", "content": ASK_SYNONYM},
                     {"role": "assistant", "content": ", ".join(e["synonyms"])}]
    if e["antonym"]:
        messages += [{"role": "user", "content": ASK_ANTONYM},
                     {"role": "assistant", "content": e["antonym"]}]
    return {"messages": messages}


def write_jsonl(path, lemmas, table):
    with open(path, "w", encoding="utf-8") as f:
        for lemma in sorted(lemmas):
            f.write(json.dumps(record(lemma, table[lemma]), ensure_ascii=False) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wordnet", default="/usr/share/wordnet")
    parser.add_argument("--out", default="data/wordnet-chat")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.wordnet, "index.noun")):
        raise SystemExit(f"no WordNet database in {args.wordnet}: apt-get install wordnet-base")
    table = entries(args.wordnet)
    order = sorted(table, key=digest)
    if len(order) < EVAL + TRAIN:
        raise SystemExit(f"only {len(order)} candidate lemmas; need {EVAL + TRAIN}")
    os.makedirs(args.out, exist_ok=True)
    write_jsonl(os.path.join(args.out, "eval.jsonl"), order[:EVAL], table)
    write_jsonl(os.path.join(args.out, "train.jsonl"), order[EVAL:EVAL + TRAIN], table)
    chosen = [table[w] for w in order[:EVAL + TRAIN]]
    print(f"{len(table)} candidate lemmas -> {TRAIN} train, {EVAL} eval in {args.out}; "
          f"with example {sum(bool(e['example']) for e in chosen)}, "
          f"synonyms {sum(bool(e['synonyms']) for e in chosen)}, "
          f"antonym {sum(bool(e['antonym']) for e in chosen)}")


if __name__ == "__main__":
    main()
