#!/usr/bin/env python3
"""Writes tests/data/newline_merge_tokenizer.model (715 bytes): a tiny SentencePiece BPE model
with the user-defined piece "\\nA", so that a newline merges with the text after it. The
data tests use it to reach the error of qlt::data::encode_continuation.

Needs the sentencepiece Python package (.venv-fixtures has it):
  .venv-fixtures/bin/python tests/data/make_newline_merge_tokenizer.py
"""
import io
import os

import sentencepiece as spm

text = ["In the beginning God created the heaven and the earth.",
        "And the earth was without form, and void."] * 20
model = io.BytesIO()
spm.SentencePieceTrainer.train(
    sentence_iterator=iter(text), model_writer=model, model_type="bpe", vocab_size=60,
    user_defined_symbols=["\nA"], normalization_rule_name="identity", add_dummy_prefix=True,
    remove_extra_whitespaces=False, minloglevel=2)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "newline_merge_tokenizer.model")
with open(out, "wb") as f:
    f.write(model.getvalue())
sp = spm.SentencePieceProcessor(model_file=out)
assert sp.encode("\nAnd", out_type=str)[:2] == ["▁", "\nA"], sp.encode("\nAnd", out_type=str)
print(out, len(model.getvalue()), "bytes")
