#!/usr/bin/env python3
"""Writes a random LLaMA checkpoint folder of a chosen shape, for memory benchmarks: config.json,
model.safetensors (bf16, N(0, 0.02) weights, norms 1) and data/tiny-llama's tokenizer files (its
vocabulary is smaller than the model's; the extra rows are never used). One tensor is made and
written at a time (safetensors' serialize_file on a lazily-filled dict would not do that), so a
7B-shaped folder is made in about one tensor's memory.

    .venv-fixtures/bin/python scripts/bench/make_random_llama.py OUT --layers 4 \
        [--shape 7b|tiny] [--seed 0]

--shape 7b: LLaMA-2-7B's widths (hidden 4096, intermediate 11008, 32 heads, vocab 32000).
"""

import argparse
import json
import shutil
import struct
from pathlib import Path

import torch

SHAPES = {
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32000),
    "tiny": dict(hidden_size=256, intermediate_size=688, num_attention_heads=8,
                 num_key_value_heads=8, vocab_size=32000),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--shape", choices=SHAPES, default="7b")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    s = SHAPES[args.shape]
    h, i, v = s["hidden_size"], s["intermediate_size"], s["vocab_size"]
    kv = h // s["num_attention_heads"] * s["num_key_value_heads"]
    tensors = [("model.embed_tokens.weight", [v, h])]
    for l in range(args.layers):
        p = f"model.layers.{l}."
        tensors += [(p + "input_layernorm.weight", [h]), (p + "self_attn.q_proj.weight", [h, h]),
                    (p + "self_attn.k_proj.weight", [kv, h]), (p + "self_attn.v_proj.weight", [kv, h]),
                    (p + "self_attn.o_proj.weight", [h, h]),
                    (p + "post_attention_layernorm.weight", [h]),
                    (p + "mlp.gate_proj.weight", [i, h]), (p + "mlp.up_proj.weight", [i, h]),
                    (p + "mlp.down_proj.weight", [h, i])]
    tensors += [("model.norm.weight", [h]), ("lm_head.weight", [v, h])]

    # safetensors by hand: header (offsets from the shapes), then each tensor as it is made.
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        n = 2 * torch.Size(shape).numel()
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    args.out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(args.seed)
    with open(args.out / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name, shape in tensors:
            t = (torch.ones(shape) if "norm" in name else torch.randn(shape, generator=gen) * 0.02)
            f.write(t.to(torch.bfloat16).view(torch.int16).numpy().tobytes())
    config = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
                  num_hidden_layers=args.layers, max_position_embeddings=4096, rms_norm_eps=1e-5,
                  rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                  torch_dtype="bfloat16", **s)
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tiny = Path(__file__).resolve().parents[2] / "data/tiny-llama"
    for f in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tiny / f, args.out / f)
    print(f"{args.out}: {args.layers} layers of {args.shape} widths, {offset / 1e9:.2f} GB bf16")


if __name__ == "__main__":
    main()
