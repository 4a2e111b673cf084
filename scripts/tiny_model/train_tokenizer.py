#!/usr/bin/env python3
"""Trains the SentencePiece tokenizer of the tiny model (data/tiny-llama/tokenizer.model).

Run (from the repository root, after make_corpus.py):
    .venv-fixtures/bin/python scripts/tiny_model/train_tokenizer.py

Input: data/kjv/train_verses.txt (one training verse per line; held-out chapters
are excluded). The trainer options follow LLaMA-2's tokenizer.model
(BPE, byte fallback, digits split, identity normalization, dummy prefix,
<unk>=0 <s>=1 </s>=2, no pad piece), only with a 2048-piece vocabulary:
ids 0..2 are the special pieces, 3..258 the byte pieces <0x00>..<0xFF>,
259..2047 the learned BPE pieces.

Determinism: one trainer thread, every input sentence used (no sampling, so
no shuffling seed is involved); the output is byte-identical between runs of
the same sentencepiece version.
"""

from pathlib import Path

import sentencepiece as spm

REPO = Path(__file__).resolve().parents[2]
INPUT = REPO / "data" / "kjv" / "train_verses.txt"
OUT_DIR = REPO / "data" / "tiny-llama"
VOCAB_SIZE = 2048


def main():
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        input=str(INPUT),
        model_prefix=str(OUT_DIR / "tokenizer"),  # writes tokenizer.model + tokenizer.vocab
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        # Special pieces exactly as LLaMA-2: <unk>=0, <s>=1, </s>=2, no <pad>.
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        # LLaMA-2 normalizer / pre-tokenizer conventions.
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        split_by_unicode_script=True,
        split_by_whitespace=True,
        split_by_number=True,
        max_sentencepiece_length=16,
        character_coverage=0.9999,
        # Reproducibility: single thread, the whole input (no sentence sampling).
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        max_sentence_length=4192,
        minloglevel=1,
    )
    # tokenizer.vocab is a human-readable listing; the C++ side only reads tokenizer.model.
    (OUT_DIR / "tokenizer.vocab").unlink()

    sp = spm.SentencePieceProcessor(model_file=str(OUT_DIR / "tokenizer.model"))
    assert sp.vocab_size() == VOCAB_SIZE
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (0, 1, 2, -1)
    assert sp.id_to_piece(3) == "<0x00>" and sp.id_to_piece(258) == "<0xFF>"
    sample = "In the beginning God created the heaven and the earth."
    print("vocab", sp.vocab_size(), "| first learned pieces:",
          [sp.id_to_piece(i) for i in range(259, 269)])
    print("sample:", sp.encode(sample, out_type=str))


if __name__ == "__main__":
    main()
