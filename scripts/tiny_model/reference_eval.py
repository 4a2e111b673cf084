#!/usr/bin/env python3
"""Reference held-out evaluation of the tiny model -> data/tiny-llama/reference_eval.json.

Run (from the repository root, after train_model.py):
    .venv-fixtures/bin/python scripts/tiny_model/reference_eval.py

`qlora-train eval` implements the same protocol and an integration test compares
its loss with the one recorded here:

  * the saved bf16 weights are loaded and upcast to float32 (eager attention);
  * for each line of data/kjv/eval.jsonl:  ids = [1] + sp.encode(text) + [2]
    (sp = the plain SentencePiece processor of tokenizer.model);
  * ids are split into consecutive non-overlapping windows of max_seq_len = 256
    tokens; the last window may be shorter; a window of length 1 predicts nothing
    and is dropped; every window starts with fresh positions (0, 1, ...) and no
    cache, i.e. windows are independent sequences;
  * within a window the model predicts token t+1 from tokens <= t;
  * loss = sum of the cross-entropies of all predicted positions of all windows
    / number of predicted positions;  perplexity = exp(loss).

Per-token cross-entropies are computed from float32 logits (log_softmax in float32)
and summed in float64.
"""

import json
import math
from pathlib import Path

import sentencepiece as spm
import torch
from transformers import LlamaForCausalLM

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "data" / "tiny-llama"
EVAL_REL = "data/kjv/eval.jsonl"
MAX_SEQ_LEN = 256
BOS, EOS = 1, 2


def windows_of(ids, size):
    """Consecutive non-overlapping windows; windows of length < 2 predict nothing."""
    for start in range(0, len(ids), size):
        window = ids[start : start + size]
        if len(window) >= 2:
            yield window


def main():
    torch.set_num_threads(1)
    sp = spm.SentencePieceProcessor(model_file=str(MODEL_DIR / "tokenizer.model"))
    model = LlamaForCausalLM.from_pretrained(
        MODEL_DIR, dtype=torch.bfloat16, attn_implementation="eager"
    )
    assert next(model.parameters()).dtype == torch.bfloat16  # really the saved bf16 values
    model = model.float().eval()

    total_nll = 0.0  # float64 accumulator
    num_predicted = 0
    num_windows = 0
    with torch.no_grad(), (REPO / EVAL_REL).open(encoding="utf-8") as f:
        for line in f:
            ids = [BOS] + sp.encode(json.loads(line)["text"]) + [EOS]
            for window in windows_of(ids, MAX_SEQ_LEN):
                input_ids = torch.tensor([window], dtype=torch.int64)
                logits = model(input_ids=input_ids).logits[0].float()  # [T, vocab]
                log_probs = torch.log_softmax(logits[:-1], dim=-1)      # predicts t+1 from <= t
                targets = input_ids[0, 1:]
                nll = -log_probs.gather(1, targets[:, None]).squeeze(1)  # [T-1]
                total_nll += nll.double().sum().item()
                num_predicted += targets.numel()
                num_windows += 1

    loss = total_nll / num_predicted
    result = {
        "dataset": EVAL_REL,
        "max_seq_len": MAX_SEQ_LEN,
        "num_windows": num_windows,
        "num_predicted_tokens": num_predicted,
        "loss": loss,
        "perplexity": math.exp(loss),
        "dtype": "float32",
    }
    # json.dumps writes floats with repr(), i.e. the shortest string that round-trips
    # the double exactly.
    (MODEL_DIR / "reference_eval.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
