#!/usr/bin/env python3
"""Trains the bundled tiny LLaMA (data/tiny-llama/) on the KJV training chapters.

Run (from the repository root, after make_corpus.py and train_tokenizer.py):
    .venv-fixtures/bin/python scripts/tiny_model/train_model.py [--steps N]
    .venv-fixtures/bin/python scripts/tiny_model/train_model.py --measure 5   # time 5 steps, save nothing

Model: LlamaForCausalLM, vocab 2048, hidden 128, 4 layers, 4 heads (head_dim 32),
2 KV heads (GQA), SwiGLU intermediate 384, RoPE theta 10000, RMSNorm eps 1e-5,
untied embeddings (about 1.3 M parameters).

Data: every training chapter (data/kjv/train.jsonl) is tokenized with
data/tiny-llama/tokenizer.model as [BOS] + ids + [EOS]; the sequences are
concatenated in file order and cut into 256-token blocks (the remainder is
dropped). Each epoch visits the blocks in a seeded random order.

Optimisation: AdamW (betas 0.9/0.95, weight decay 0.1 on matrices only), peak lr
3e-3, linear warmup then cosine decay to 10 % of the peak, batch 32 blocks,
gradient clipping at 1.0, fp32 on the CPU with a single thread (the machine's other
core is left to compiles). The weights are then saved in bfloat16.

Outputs in data/tiny-llama/: config.json, generation_config.json, model.safetensors
(bf16), the tokenizer files of a slow LlamaTokenizer (legacy=True, BOS added, EOS
not), training_summary.json; the full per-step log goes to stdout.
"""

import argparse
import json
import math
import random
import time
from pathlib import Path

import sentencepiece as spm
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

REPO = Path(__file__).resolve().parents[2]
TRAIN_JSONL = REPO / "data" / "kjv" / "train.jsonl"
OUT_DIR = REPO / "data" / "tiny-llama"
BLOCK = 256
BOS, EOS = 1, 2


def model_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=2048,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        hidden_act="silu",
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=None,
    )


def load_blocks(sp: spm.SentencePieceProcessor) -> torch.Tensor:
    """Returns the packed training stream as [num_blocks, BLOCK] int64."""
    stream = []
    with TRAIN_JSONL.open(encoding="utf-8") as f:
        for line in f:
            stream.extend([BOS] + sp.encode(json.loads(line)["text"]) + [EOS])
    num_blocks = len(stream) // BLOCK
    print(f"training tokens: {len(stream)} -> {num_blocks} blocks of {BLOCK}")
    return torch.tensor(stream[: num_blocks * BLOCK], dtype=torch.int64).view(num_blocks, BLOCK)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup for `warmup` steps, then cosine from `peak` to peak/10."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def batches(num_blocks: int, batch_size: int, seed: int):
    """Yields index lists forever: a fresh seeded permutation of the blocks per epoch."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(num_blocks, generator=generator)
        for start in range(0, num_blocks - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def add_legacy_torch_dtype(config_path: Path):
    """transformers >= 4.56 writes the weights' dtype as "dtype"; older readers (and
    most published LLaMA checkpoints) use "torch_dtype". Write both keys."""
    config = json.loads(config_path.read_text())
    config["torch_dtype"] = config["dtype"]
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--measure", type=int, default=0,
                        help="run this many steps, print the time per step, save nothing")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)

    sp = spm.SentencePieceProcessor(model_file=str(OUT_DIR / "tokenizer.model"))
    blocks = load_blocks(sp)

    model = LlamaForCausalLM._from_config(model_config(), attn_implementation="sdpa")
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params}")

    # Weight decay on the 2-D matrices (embeddings, projections), none on the norms.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
    )

    total_steps = args.measure if args.measure else args.steps
    batch_iter = batches(blocks.shape[0], args.batch_size, args.seed)
    recent_losses = []
    start = time.time()
    for step in range(total_steps):
        lr = lr_at(step, args.steps, args.lr, args.warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        input_ids = blocks[next(batch_iter)]
        loss = model(input_ids=input_ids, labels=input_ids).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

        recent_losses = (recent_losses + [loss.item()])[-10:]
        if step % 10 == 0 or step == total_steps - 1:
            elapsed = time.time() - start
            print(f"step {step + 1}/{total_steps} loss {loss.item():.4f} lr {lr:.2e} "
                  f"grad_norm {grad_norm.item():.3f} elapsed {elapsed:.1f}s "
                  f"({elapsed / (step + 1):.2f} s/step)", flush=True)
    elapsed = time.time() - start

    if args.measure:
        print(f"measured {elapsed / args.measure:.2f} s/step; nothing saved")
        return

    # Save in bfloat16 (config.json records the dtype).
    model = model.to(torch.bfloat16)
    model.config.torch_dtype = torch.bfloat16
    model.save_pretrained(OUT_DIR, safe_serialization=True)
    add_legacy_torch_dtype(OUT_DIR / "config.json")

    tokenizer = LlamaTokenizer(
        vocab_file=str(OUT_DIR / "tokenizer.model"),
        legacy=True,
        add_bos_token=True,
        add_eos_token=False,
    )
    tokenizer.save_pretrained(OUT_DIR)

    summary = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "block_size": BLOCK,
        "tokens_seen": args.steps * args.batch_size * BLOCK,
        "training_blocks": int(blocks.shape[0]),
        "peak_lr": args.lr,
        "warmup_steps": args.warmup,
        "seed": args.seed,
        "threads": args.threads,
        "parameters": n_params,
        "train_seconds": round(elapsed, 1),
        "final_train_loss_last10_mean": round(sum(recent_losses) / len(recent_losses), 4),
        "torch": torch.__version__,
    }
    (OUT_DIR / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
