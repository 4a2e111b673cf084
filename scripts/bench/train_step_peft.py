#!/usr/bin/env python3
"""Tokens/s of one LoRA training step in PyTorch eager + transformers + PEFT (the Python side
of scripts/bench/train_step.sh), on the same config `qlora-train train` reads.

Reads the bench config (model, data, adapter, optimizer, micro-batch, seed) so both sides use
one set of settings. Batches: the alpaca examples of data.train tokenized as qlora-train
does (BOS + prompt + output + EOS, loss on the output only), shuffled with Python's
random.Random(seed) (NOT qlora-train's permutation, so the rows differ but have the same
kind of content), packed greedily into rows of at most data.max_seq_len tokens (an example
is never split), micro_batch_size rows per step, T = the longest row. Attention is causal
within each packed example: an explicit [B, 1, T, T] bool mask (what qlora-train builds),
positions restart at 0 per example.

Each step (timed with time.perf_counter): mask + forward (loss from `labels`) + backward +
clip_grad_norm_ + AdamW step + zero_grad. tokens = non-padding input tokens of the step.
Prints one JSON object: median tokens/s over the steps after the warm-up, and the per-step
figures.

  .venv-fixtures/bin/python scripts/bench/train_step_peft.py --config configs/tiny/bench.json \
      --threads 2 --quant none --steps 40 --warmup 5
"""
import argparse
import json
import os
import platform
import random
import statistics
import sys
import time

import sentencepiece as spm
import torch
import transformers
import peft
from peft import LoraConfig, get_peft_model
from transformers import LlamaForCausalLM

IGNORE = -100  # HF's ignore_index, qlora-train's kIgnoreIndex


def alpaca_prompt(instruction, input_text):
    # tatsu-lab/stanford_alpaca PROMPT_DICT, as src/data/templates.cpp.
    if input_text:
        return ("Below is an instruction that describes a task, paired with an input that "
                "provides further context. Write a response that appropriately completes the "
                "request.\n\n### Instruction:\n" + instruction + "\n\n### Input:\n" +
                input_text + "\n\n### Response:")
    return ("Below is an instruction that describes a task. Write a response that "
            "appropriately completes the request.\n\n### Instruction:\n" + instruction +
            "\n\n### Response:")


def encode_continuation(sp, text):
    # Tokens of `text` mid-string (no dummy prefix), as src/data/segments.cpp.
    prefix = sp.encode("\n")
    return sp.encode("\n" + text)[len(prefix):] if text else []


def read_examples(path, sp, max_seq_len):
    examples = []  # (ids, labels)
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            prompt = sp.encode(alpaca_prompt(row["instruction"], row.get("input", "")))
            output = encode_continuation(sp, row["output"])
            ids = [sp.bos_id()] + prompt + output + [sp.eos_id()]
            labels = [IGNORE] * (1 + len(prompt)) + output + [sp.eos_id()]
            examples.append((ids[:max_seq_len], labels[:max_seq_len]))
    return examples


def packed_batches(examples, rows_per_batch, max_seq_len, seed, count, pad_id):
    """`count` batches of packed rows: dicts of input_ids, labels, position_ids, segment_ids
    [B, T] int64 and tokens (non-padding input tokens)."""
    rng = random.Random(seed)
    stream = []

    def next_example():
        if not stream:
            order = list(range(len(examples)))
            rng.shuffle(order)
            stream.extend(reversed(order))
        return examples[stream[-1]]

    batches = []
    for _ in range(count):
        rows = []
        for _ in range(rows_per_batch):
            row = []
            used = 0
            while used + len(next_example()[0]) <= max_seq_len:
                ex = examples[stream.pop()]
                row.append(ex)
                used += len(ex[0])
            rows.append(row)
        T = max(sum(len(ex[0]) for ex in row) for row in rows)
        B = len(rows)
        input_ids = torch.full((B, T), pad_id, dtype=torch.long)
        labels = torch.full((B, T), IGNORE, dtype=torch.long)
        positions = torch.zeros((B, T), dtype=torch.long)
        segments = torch.zeros((B, T), dtype=torch.long)
        for b, row in enumerate(rows):
            t = 0
            for s, (ids, labs) in enumerate(row, start=1):
                n = len(ids)
                input_ids[b, t:t + n] = torch.tensor(ids)
                labels[b, t:t + n] = torch.tensor([IGNORE] + labs[1:])
                positions[b, t:t + n] = torch.arange(n)
                segments[b, t:t + n] = s
                t += n
        batches.append(dict(input_ids=input_ids, labels=labels, position_ids=positions,
                            segment_ids=segments, tokens=int((segments != 0).sum())))
    return batches


def segment_attention_mask(segment_ids):
    # [B, T] -> [B, 1, T, T] bool, true = may attend: causal and within one segment.
    T = segment_ids.shape[1]
    same = segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1)
    causal = torch.ones((T, T), dtype=torch.bool).tril()
    return (same & causal).unsqueeze(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="qlora-train JSON config (the bench one)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--quant", choices=["none", "nf4"], default="none")
    ap.add_argument("--steps", type=int, default=35, help="timed steps after the warm-up")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    args = ap.parse_args()

    with open(args.config, encoding="utf-8") as f:
        cfg = json.load(f)
    model_dir = cfg["model"]["path"]
    data, adapter, opt, training = cfg["data"], cfg["adapter"], cfg["optimizer"], cfg["training"]
    if data.get("format") != "alpaca" or not data.get("packing"):
        sys.exit(f"{args.config}: this script expects data.format alpaca with packing: true")
    if training.get("grad_accum", 1) != 1:
        sys.exit(f"{args.config}: this script times grad_accum 1 only")

    torch.set_num_threads(args.threads)
    torch.manual_seed(training.get("seed", 42))

    sp = spm.SentencePieceProcessor(model_file=os.path.join(model_dir, "tokenizer.model"))
    pad_id = sp.pad_id() if sp.pad_id() >= 0 else sp.unk_id()
    examples = read_examples(data["train"], sp, data["max_seq_len"])
    total = args.warmup + args.steps
    batches = packed_batches(examples, training["micro_batch_size"], data["max_seq_len"],
                             training.get("seed", 42), total, pad_id)

    load = dict(dtype=torch.float32, attn_implementation="sdpa")
    if args.quant == "nf4":
        from transformers import BitsAndBytesConfig
        load["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32)
        load["device_map"] = "cpu"
    model = LlamaForCausalLM.from_pretrained(model_dir, **load)
    model.config.use_cache = False
    lora = LoraConfig(r=adapter["rank"], lora_alpha=adapter["alpha"],
                      lora_dropout=adapter["dropout"], target_modules=adapter["target_modules"],
                      use_rslora=adapter.get("use_rslora", False), bias="none",
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opt["lr"], betas=(opt["beta1"], opt["beta2"]),
                                  eps=opt["eps"], weight_decay=opt["weight_decay"])
    max_grad_norm = opt["max_grad_norm"]

    records = []
    for step, batch in enumerate(batches, start=1):
        start = time.perf_counter()
        mask = segment_attention_mask(batch["segment_ids"])
        out = model(input_ids=batch["input_ids"], attention_mask=mask,
                    position_ids=batch["position_ids"], labels=batch["labels"], use_cache=False)
        out.loss.backward()
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
        records.append(dict(step=step, loss=out.loss.item(), tokens=batch["tokens"],
                            rows_T=batch["input_ids"].shape[1], seconds=seconds,
                            tokens_per_s=batch["tokens"] / seconds))

    timed = records[args.warmup:]
    print(json.dumps({
        "side": "python",
        "quant": args.quant,
        "threads": torch.get_num_threads(),
        "warmup_steps": args.warmup,
        "timed_steps": len(timed),
        "tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in timed),
        "tokens_per_step_mean": statistics.mean(r["tokens"] for r in timed),
        "seconds_per_step_median": statistics.median(r["seconds"] for r in timed),
        "trainable_params": sum(p.numel() for p in params),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "peft": peft.__version__},
        "steps": records,
    }))


if __name__ == "__main__":
    main()
