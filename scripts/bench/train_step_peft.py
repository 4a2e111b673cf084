#!/usr/bin/env python3
"""Tokens/s of one LoRA training step in PyTorch eager + transformers + PEFT (the Python side
of scripts/bench/train_step.sh), on the same config `qlora-train train` reads.

Reads the bench config (model, data, adapter, optimizer, micro-batch, seed) so both sides use
one set of settings. Two kinds of config:

- data.format "alpaca", model.path a Hugging Face directory with tokenizer.model (the tiny
  model, configs/tiny/bench.json): examples tokenized with sentencepiece as qlora-train does
  (BOS + prompt + output + EOS, loss on the output only); LlamaForCausalLM.from_pretrained.
- data.format "chat" with data.chat_template "chatml", model.path a GGUF file (SmolLM2,
  configs/smollm2/bench.json): the chat rendered as src/data/templates.cpp renders ChatML
  (per message "<|im_start|>{role}\n", then content + "<|im_end|>", then "\n"; loss on the
  assistant content + "<|im_end|>", or on everything with train_on_inputs), adjacent pieces
  with the same loss choice joined and tokenized one after another as src/data/segments.cpp
  does, with the GGUF's own tokenizer as transformers converts it (AutoTokenizer gguf_file)
  but without the BOS that conversion prepends (the file says add_bos_token = false;
  tests/fixtures/smollm2/README.md). The model: AutoModelForCausalLM.from_pretrained(dir,
  gguf_file=..., torch_dtype=float32), which dequantizes every tensor to fp32 (qlora-train
  keeps the Q4_1 linears as stored and dequantizes them in each forward).

Examples longer than data.max_seq_len are cut to it, and those left with no trained token are
dropped (as qlora-train does). They are shuffled with Python's random.Random(seed) (NOT
qlora-train's permutation, so the rows differ but have the same kind of content), packed
greedily into rows of at most data.max_seq_len tokens (an example is never split),
micro_batch_size rows per step, T = the longest row. Attention is causal within each packed
example: an explicit [B, 1, T, T] bool mask (what qlora-train builds), positions restart at 0
per example.

Each step (timed with time.perf_counter): mask + forward (loss from `labels`) + backward +
clip_grad_norm_ + AdamW step + zero_grad. tokens = non-padding input tokens of the step.
Prints one JSON object: median tokens/s over the steps after the warm-up, the per-step
figures, the seconds spent loading the tokenizer and the model (from_pretrained), the seconds
from the start of the script to the first step, and the process's peak RSS (ru_maxrss).

  .venv-fixtures/bin/python scripts/bench/train_step_peft.py --config configs/tiny/bench.json \
      --threads 2 --quant none --steps 40 --warmup 5
"""
import time

SCRIPT_START = time.perf_counter()  # before the heavy imports: setup_s counts them

import argparse
import json
import os
import platform
import random
import resource
import statistics
import sys

import sentencepiece as spm
import torch
import transformers
import peft
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

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


def chatml_pieces(messages, train_on_inputs):
    """(text, trained) pieces of a chat as src/data/templates.cpp's render_chatml gives them
    (data.chat_template "chatml": no default system message, no EOS after the last turn),
    adjacent pieces with the same `trained` joined as src/data/segments.cpp joins them."""
    pieces = []
    for m in messages:
        assistant = m["role"] == "assistant"
        pieces += [("<|im_start|>" + m["role"] + "\n", train_on_inputs),
                   (m["content"] + "<|im_end|>", assistant or train_on_inputs),
                   ("\n", train_on_inputs)]
    joined = []
    for text, trained in pieces:
        if joined and joined[-1][1] == trained:
            joined[-1] = (joined[-1][0] + text, trained)
        else:
            joined.append((text, trained))
    return joined


def bpe_encoder(tok):
    """encode(text, fresh) with the ids of src/data/segments.cpp for a byte-level BPE
    tokenizer that adds no BOS and no prefix space: the first piece as it is, a later one by
    the newline sentinel (the ids of "\n" + text after those of "\n"), or as it is when the
    sentinel merges with it. add_special_tokens=False: no BOS (the GGUF says
    add_bos_token = false); typed special tokens (<|im_start|>) are still matched."""
    def enc(text):
        return tok(text, add_special_tokens=False)["input_ids"]
    newline = enc("\n")

    def encode(text, fresh):
        if fresh or not text:
            return enc(text) if text else []
        ids = enc("\n" + text)
        if ids[:len(newline)] == newline:
            return ids[len(newline):]
        return enc(text)
    return encode


def read_chat_examples(path, encode, max_seq_len, train_on_inputs):
    examples = []  # (ids, labels)
    dropped = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            ids, labels = [], []
            for i, (text, trained) in enumerate(chatml_pieces(json.loads(line)["messages"],
                                                              train_on_inputs)):
                piece = encode(text, fresh=(i == 0))
                ids += piece
                labels += piece if trained else [IGNORE] * len(piece)
            ids, labels = ids[:max_seq_len], labels[:max_seq_len]
            labels[0] = IGNORE
            if all(x == IGNORE for x in labels):
                dropped += 1  # qlora-train drops an example with nothing to train on
                continue
            examples.append((ids, labels))
    return examples, dropped


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
    model_path = cfg["model"]["path"]
    data, adapter, opt, training = cfg["data"], cfg["adapter"], cfg["optimizer"], cfg["training"]
    gguf = model_path.endswith(".gguf")
    fmt = data.get("format")
    if not data.get("packing"):
        sys.exit(f"{args.config}: this script expects data.packing: true")
    if gguf and (fmt != "chat" or data.get("chat_template") != "chatml"):
        sys.exit(f"{args.config}: with a GGUF model this script expects data.format chat and "
                 f"data.chat_template chatml")
    if not gguf and fmt != "alpaca":
        sys.exit(f"{args.config}: with a model directory this script expects data.format alpaca")
    if gguf and args.quant != "none":
        sys.exit(f"{args.config}: a GGUF model is loaded dequantized to fp32 by transformers; "
                 f"use --quant none")
    if training.get("grad_accum", 1) != 1:
        sys.exit(f"{args.config}: this script times grad_accum 1 only")

    torch.set_num_threads(args.threads)
    torch.manual_seed(training.get("seed", 42))

    timings = {}
    t0 = time.perf_counter()
    dropped = 0
    if gguf:
        model_dir, gguf_file = os.path.split(model_path)
        tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf_file)
        timings["tokenizer_load_s"] = time.perf_counter() - t0
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        t0 = time.perf_counter()
        examples, dropped = read_chat_examples(data["train"], bpe_encoder(tok),
                                               data["max_seq_len"],
                                               data.get("train_on_inputs", False))
    else:
        sp = spm.SentencePieceProcessor(model_file=os.path.join(model_path, "tokenizer.model"))
        timings["tokenizer_load_s"] = time.perf_counter() - t0
        pad_id = sp.pad_id() if sp.pad_id() >= 0 else sp.unk_id()
        t0 = time.perf_counter()
        examples = read_examples(data["train"], sp, data["max_seq_len"])
    timings["tokenize_s"] = time.perf_counter() - t0
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
    t0 = time.perf_counter()
    if gguf:
        # transformers dequantizes every GGUF tensor to fp32 (gguf.quants) while loading.
        model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf_file, **load)
    else:
        model = LlamaForCausalLM.from_pretrained(model_path, **load)
    timings["model_load_s"] = time.perf_counter() - t0
    rss_after_load_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
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
    timings["setup_s"] = time.perf_counter() - SCRIPT_START  # script start -> first step
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
        "examples": len(examples),
        "examples_dropped": dropped,
        "example_tokens": sum(len(ids) for ids, _ in examples),
        "example_trained_tokens": sum(sum(x != IGNORE for x in labs) for _, labs in examples),
        "timings": timings,
        # ru_maxrss is in KiB on Linux: the process's peak resident set (VmHWM).
        "peak_rss_after_load_mb": rss_after_load_mb,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "peft": peft.__version__},
        "steps": records,
    }))


if __name__ == "__main__":
    main()
