#!/usr/bin/env python3
"""Writes two tiny SentencePiece BPE models into tests/data/ for the data tests:
  newline_merge_tokenizer.model  the user-defined piece "\\nA" merges a newline with the text
                                 after it (reaches the error of encode_continuation)
  no_bos_tokenizer.model         bos_id = -1: a model without a BOS token
Deterministic (same bytes on every run). Needs the sentencepiece Python package:
  .venv-fixtures/bin/python tests/data/make_test_tokenizers.py
"""
import io
import os

import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
TEXT = ["In the beginning God created the heaven and the earth.",
        "And the earth was without form, and void."] * 20


def train(name, **extra):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT), model_writer=model, model_type="bpe", vocab_size=60,
        normalization_rule_name="identity", add_dummy_prefix=True,
        remove_extra_whitespaces=False, minloglevel=2, **extra)
    path = os.path.join(HERE, name)
    with open(path, "wb") as f:
        f.write(model.getvalue())
    print(path, len(model.getvalue()), "bytes")
    return spm.SentencePieceProcessor(model_file=path)


sp = train("newline_merge_tokenizer.model", user_defined_symbols=["\nA"])
assert sp.encode("\nAnd", out_type=str)[:2] == ["▁", "\nA"], sp.encode("\nAnd", out_type=str)
sp = train("no_bos_tokenizer.model", bos_id=-1, eos_id=1, unk_id=0)
assert sp.bos_id() == -1 and sp.eos_id() == 1
