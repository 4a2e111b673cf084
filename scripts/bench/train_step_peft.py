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

The GPU mode of train_step.sh (scripts/bench/train_step_gpu.sh) also uses these, all off by
default (the CPU modes above run exactly as before):
- model.compute_dtype of the config is the dtype the model is loaded in (float32 in the CPU
  bench configs; bfloat16 in configs/bench/llama7b_qlora_gpu.json; with --quant nf4 it is
  bitsandbytes' compute dtype too). No prepare_model_for_kbit_training: norms, embeddings and
  lm_head stay in that dtype, as in qlora-train.
- --device cpu|cuda (default: training.device, auto = cuda when available). On CUDA the model
  is loaded onto the device (device_map), every step ends with torch.cuda.synchronize() before
  its time is taken, and peak_gpu_mb = torch.cuda.max_memory_allocated() / 1e6 (allocated
  since the process started, model load included: what qlora-train's "peak memory" reports).
- training.activation_checkpointing true: model.gradient_checkpointing_enable(use_reentrant
  False) before PEFT wraps the model (HF's gradient checkpointing per decoder layer).
- --random-tokens: instead of the data file, every row is data.max_seq_len random token ids
  (one example per row, loss on every token but the first): the shape of qlora-train's rows
  on the synthetic text data of the GPU mode, where every line is longer than max_seq_len and
  is cut to it. The work of a step does not depend on the ids; sentencepiece is not needed.
- --attn causal: no mask, positions 0..T-1 (SDPA's is_causal path, flash attention on a GPU)
  instead of the explicit [B, 1, T, T] mask (--attn mask, the default); only valid when every
  row is one example without padding (--random-tokens).
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


def random_token_batches(rows_per_batch, seq_len, vocab_size, seed, count):
    """`count` batches of rows_per_batch rows of seq_len random ids in [3, vocab_size): one
    example per row, labels = ids but the first (as packed_batches labels an example)."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(3, vocab_size, (rows_per_batch, seq_len), generator=gen)
        labels = ids.clone()
        labels[:, 0] = IGNORE
        batches.append(dict(input_ids=ids, labels=labels,
                            position_ids=torch.arange(seq_len).expand(rows_per_batch, -1),
                            segment_ids=torch.ones_like(ids), tokens=ids.numel()))
    return batches


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="qlora-train JSON config (the bench one)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--quant", choices=["none", "nf4"], default="none")
    ap.add_argument("--steps", type=int, default=35, help="timed steps after the warm-up")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--device", choices=["cpu", "cuda"],
                    help="default: training.device of the config (auto: cuda when available)")
    ap.add_argument("--random-tokens", action="store_true",
                    help="rows of data.max_seq_len random ids instead of the data file")
    ap.add_argument("--attn", choices=["mask", "causal"], default="mask",
                    help="explicit [B,1,T,T] mask (default) or SDPA's causal path (needs "
                         "--random-tokens)")
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
    if not gguf and fmt != "alpaca" and not args.random_tokens:
        sys.exit(f"{args.config}: with a model directory this script expects data.format alpaca "
                 f"(or --random-tokens)")
    if gguf and (args.quant != "none" or args.random_tokens):
        sys.exit(f"{args.config}: a GGUF model is loaded dequantized to fp32 by transformers; "
                 f"use --quant none, without --random-tokens")
    if args.attn == "causal" and not args.random_tokens:
        sys.exit("--attn causal needs --random-tokens (rows of one example, no padding)")
    if training.get("grad_accum", 1) != 1:
        sys.exit(f"{args.config}: this script times grad_accum 1 only")
    dtype_name = cfg["model"].get("compute_dtype", "float32")
    if dtype_name not in DTYPES:
        sys.exit(f"{args.config}: model.compute_dtype {dtype_name!r} is not one of {list(DTYPES)}")
    dtype = DTYPES[dtype_name]
    device = args.device
    if device is None:
        wanted = training.get("device", "auto")
        device = ("cuda" if torch.cuda.is_available() else "cpu") if wanted == "auto" else wanted
        device = "cuda" if device.startswith("cuda") else device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("device cuda: torch sees no CUDA device")
    cuda = device == "cuda"
    checkpointing = bool(training.get("activation_checkpointing", False))

    torch.set_num_threads(args.threads)
    torch.manual_seed(training.get("seed", 42))

    timings = {}
    t0 = time.perf_counter()
    dropped = 0
    examples = []
    total = args.warmup + args.steps
    if gguf:
        model_dir, gguf_file = os.path.split(model_path)
        tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf_file)
        timings["tokenizer_load_s"] = time.perf_counter() - t0
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        t0 = time.perf_counter()
        examples, dropped = read_chat_examples(data["train"], bpe_encoder(tok),
                                               data["max_seq_len"],
                                               data.get("train_on_inputs", False))
    elif not args.random_tokens:
        import sentencepiece as spm  # here: the GPU mode (--random-tokens) does not need it

        sp = spm.SentencePieceProcessor(model_file=os.path.join(model_path, "tokenizer.model"))
        timings["tokenizer_load_s"] = time.perf_counter() - t0
        pad_id = sp.pad_id() if sp.pad_id() >= 0 else sp.unk_id()
        t0 = time.perf_counter()
        examples = read_examples(data["train"], sp, data["max_seq_len"])
    if args.random_tokens:
        with open(os.path.join(model_path, "config.json"), encoding="utf-8") as f:
            vocab_size = json.load(f)["vocab_size"]
        timings["tokenizer_load_s"] = 0.0
        batches = random_token_batches(training["micro_batch_size"], data["max_seq_len"],
                                       vocab_size, training.get("seed", 42), total)
    else:
        timings["tokenize_s"] = time.perf_counter() - t0
        batches = packed_batches(examples, training["micro_batch_size"], data["max_seq_len"],
                                 training.get("seed", 42), total, pad_id)

    load = dict(dtype=dtype, attn_implementation="sdpa")
    if args.quant == "nf4":
        from transformers import BitsAndBytesConfig
        load["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        load["device_map"] = "cpu"
    if cuda:
        load["device_map"] = {"": torch.cuda.current_device()}
    t0 = time.perf_counter()
    if gguf:
        # transformers dequantizes every GGUF tensor to fp32 (gguf.quants) while loading.
        model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf_file, **load)
    else:
        model = LlamaForCausalLM.from_pretrained(model_path, **load)
    if cuda:
        torch.cuda.synchronize()
    timings["model_load_s"] = time.perf_counter() - t0
    rss_after_load_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model.config.use_cache = False
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
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
        inputs = dict(input_ids=batch["input_ids"].to(device),
                      position_ids=batch["position_ids"].to(device),
                      labels=batch["labels"].to(device))
        if args.attn == "mask":
            inputs["attention_mask"] = segment_attention_mask(batch["segment_ids"].to(device))
        out = model(**inputs, use_cache=False)
        out.loss.backward()
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        records.append(dict(step=step, loss=out.loss.item(), tokens=batch["tokens"],
                            rows_T=batch["input_ids"].shape[1], seconds=seconds,
                            tokens_per_s=batch["tokens"] / seconds))

    timed = records[args.warmup:]
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__, "peft": peft.__version__}
    if args.quant == "nf4":
        import bitsandbytes
        versions["bitsandbytes"] = bitsandbytes.__version__
    print(json.dumps({
        "side": "python",
        "quant": args.quant,
        "threads": torch.get_num_threads(),
        "device": device,
        "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "dtype": dtype_name,
        "gradient_checkpointing": checkpointing,
        "attn": args.attn,
        "random_tokens": args.random_tokens,
        "micro_batch_size": training["micro_batch_size"],
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
        # CUDA: bytes allocated by torch's caching allocator at most, since the process started.
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 1e6 if cuda else None,
        "versions": versions,
        "steps": records,
    }))


if __name__ == "__main__":
    main()
