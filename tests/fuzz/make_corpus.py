#!/usr/bin/env python3
"""Writes the seed corpora of the fuzzers, tests/fuzz/corpus/<harness>/ (Python 3, stdlib only).

Seeds are small real files: the shipped configs, a few lines of data/wordnet and of the KJV
eval set in every line format, the fixtures' safetensors files and quant states, and what a
short real run writes (adapter_config.json, trainer_state.json, manifest.json, config.json):

  build/qlora-train train --config configs/tiny/qlora.json --set training.max_steps=2 \\
      --set checkpoint.every_steps=1 --set checkpoint.output_dir=/tmp/fz-run
  tests/fuzz/make_corpus.py --run /tmp/fz-run

Without --run the run-derived seeds already in the corpus are kept. Rerun after a format
changes; the fuzzers never write into these folders (scripts/fuzz.sh fuzzes into a scratch
copy).
"""
import argparse
import hashlib
import json
import os
import pathlib
import shutil
import struct

REPO = pathlib.Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests/fuzz/corpus"


def put(harness, name, data):
    d = CORPUS / harness
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))


# ---- safetensors ---------------------------------------------------------------------------


def read_safetensors(path):
    raw = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    meta = header.pop("__metadata__", None)
    tensors = {k: (v["dtype"], v["shape"], data[v["data_offsets"][0] : v["data_offsets"][1]])
               for k, v in header.items()}
    return tensors, meta


def safetensors_bytes(tensors, meta=None, pad=True):
    """tensors: [(name, dtype, shape, bytes)] in file order."""
    header, data = {}, b""
    if meta is not None:
        header["__metadata__"] = meta
    for name, dtype, shape, blob in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:  # as the Python writer does: the data buffer starts 8-byte aligned
        text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds():
    h = "safetensors_header"
    for rel in ["tests/fixtures/llama_gqa/batch.safetensors",
                "tests/fixtures/lora_llama_gqa/adapter_rslora/adapter_model.safetensors",
                "tests/fixtures/lora_llama_gqa/kaiming_init.safetensors"]:
        put(h, rel.split("/")[-2] + "-" + rel.split("/")[-1], (REPO / rel).read_bytes())
    # One bnb 4-bit weight with its companions (small k_proj), as transformers writes them.
    tensors, meta = read_safetensors(REPO / "tests/fixtures/bnb_llama_gqa/model.safetensors")
    w = "model.layers.0.self_attn.k_proj.weight"
    group = [(k, *tensors[k]) for k in tensors if k.startswith(w)]
    put(h, "bnb-k_proj.safetensors", safetensors_bytes(group, meta))
    # Every dtype once, with metadata; a scalar and a zero-size tensor; an empty header.
    sizes = {"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "U32": 4, "I32": 4, "U64": 8,
             "I64": 8, "F16": 2, "BF16": 2, "F32": 4, "F64": 8, "C64": 8, "F8_E4M3": 1,
             "F8_E5M2": 1, "F8_E8M0": 1}
    every = []
    for i, (dt, size) in enumerate(sizes.items()):
        blob = bytes([1 if dt == "BOOL" else (i * 7 + j) % 256 for j in range(2 * size)])
        every.append((dt.lower(), dt, [2], blob))
    put(h, "every-dtype.safetensors", safetensors_bytes(every, {"format": "pt", "note": "x"}))
    put(h, "scalar-and-empty.safetensors", safetensors_bytes(
        [("empty", "F32", [0, 3], b""), ("scalar", "F64", [], struct.pack("<d", 1.5)),
         ("zero", "I64", [1, 0], b"")]))
    put(h, "unaligned.safetensors", safetensors_bytes(
        [("a", "U8", [3], b"abc"), ("b", "F32", [2], struct.pack("<2f", 1, 2))], pad=False))
    put(h, "empty-header.safetensors", safetensors_bytes([], pad=False))
    put(h, "metadata-only.safetensors", safetensors_bytes([], {"format": "pt"}))


# ---- GGUF ----------------------------------------------------------------------------------


def gguf_value(vtype, value):
    """GGUF encoding of one value (type ids of docs/gguf.md; arrays as (element type, items))."""
    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
              10: "<Q", 11: "<q", 12: "<d"}
    if vtype in scalar:
        return struct.pack(scalar[vtype], value)
    if vtype == 8:
        raw = value.encode() if isinstance(value, str) else value
        return struct.pack("<Q", len(raw)) + raw
    etype, items = value
    return struct.pack("<IQ", etype, len(items)) + b"".join(gguf_value(etype, v) for v in items)


def gguf_bytes(kvs, tensors, version=3, alignment=32):
    """kvs: [(key, type, value)]; tensors: [(name, ggml type, dims ne[0] first, bytes)]."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, vtype, value in kvs:
        out += gguf_value(8, key) + struct.pack("<I", vtype) + gguf_value(vtype, value)
    offset, data = 0, b""
    for name, gtype, dims, blob in tensors:
        out += gguf_value(8, name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", gtype, offset)
        pad = b"\0" * (-len(blob) % alignment)
        data += blob + pad
        offset += len(blob) + len(pad)
    return out + b"\0" * (-len(out) % alignment) + data


def gguf_seeds():
    h = "gguf"
    fixtures = REPO / "tests/fixtures/gguf"
    for name in ["python_writer.gguf", "python_writer_align64.gguf"]:  # gguf package's writer
        put(h, name, (fixtures / name).read_bytes())
    v2 = bytearray((fixtures / "python_writer_align64.gguf").read_bytes())
    v2[4] = 2  # version 2 shares the layout of 3
    put(h, "version2.gguf", bytes(v2))
    # Every value type, nested arrays (mixed inner types, an empty one), a tokenizer-like vocab.
    kvs = [("general.architecture", 8, "llama"), ("u8", 0, 255), ("i8", 1, -1), ("u16", 2, 7),
           ("i16", 3, -300), ("u32", 4, 1 << 31), ("i32", 5, -5), ("f32", 6, 0.5), ("b", 7, True),
           ("u64", 10, 1 << 63), ("i64", 11, -(1 << 40)), ("f64", 12, -2.25),
           ("nested", 9, (9, [(5, [1, 2]), (8, ["a", ""]), (9, [(7, [False])]), (0, [])])),
           ("tokenizer.ggml.tokens", 9, (8, ["<unk>", "<s>", "\u2581a", "<0x0A>"])),
           ("tokenizer.ggml.scores", 9, (6, [0.0, -1.0, -2.0, -3.0])),
           ("general.alignment", 4, 16)]
    put(h, "every-value-type.gguf", gguf_bytes(kvs, [("w", 0, [4], bytes(range(16)))],
                                               alignment=16))
    # Quantized tensor infos: K-quants, Q8_0, Q4_1, BF16, a 4-dim tensor, at alignment 32.
    qt = [("blk.0.attn_q.weight", 12, [256, 1], bytes(144)),        # Q4_K
          ("blk.0.attn_k.weight", 14, [256, 1], bytes(range(210))),  # Q6_K
          ("blk.0.attn_v.weight", 13, [256, 1], bytes(176)),         # Q5_K
          ("token_embd.weight", 8, [32, 2], bytes(68)),              # Q8_0
          ("blk.0.ffn_up.weight", 3, [32, 1], bytes(20)),            # Q4_1
          ("blk.0.ffn_down.weight", 2, [32, 1], bytes(18)),          # Q4_0
          ("output_norm.weight", 30, [2, 1, 1, 2], bytes(8))]        # BF16, 4 dims
    put(h, "quantized-infos.gguf", gguf_bytes([("general.architecture", 8, "llama")], qt))
    put(h, "header-only.gguf", gguf_bytes([], []))
    put(h, "metadata-only-v2.gguf", gguf_bytes([("general.name", 8, "x")], [], version=2))


# ---- config --------------------------------------------------------------------------------


def config_seeds(run):
    h = "config"
    for p in sorted((REPO / "configs").glob("*/*.json")):
        put(h, f"{p.parent.name}-{p.name}", p.read_bytes())
    qlora = (REPO / "configs/tiny/qlora.json").read_bytes()
    put(h, "qlora-with-sets", qlora + b"\0training.max_steps=2\ncheckpoint.every_steps=1\n"
        b"data.format=chat\ndata.chat_template=chatml\nadapter.target_modules=q_proj,v_proj\n"
        b"optimizer.lr=1e-3\nmodel.path=\"123\"\n")
    put(h, "minimal-with-sets", b'{"model": {"path": "data/tiny-llama"}}\0'
        b"quantization.type=nf4\nquantization.block_size=128\ndata.max_seq_len=64.0\n"
        b"schedule.type=cosine\ntraining.device=cpu\n")
    put(h, "only-sets", b"{}\0model.path=data/tiny-llama\neval.batch_size=2\n")
    if run:
        put(h, "effective-config.json", (run / "config.json").read_bytes())


# ---- JSONL examples ------------------------------------------------------------------------

FORMATS = {"text": 0, "alpaca": 1, "chat-llama2": 2, "chat-chatml": 3}


def options_byte(fmt, train_on_inputs=False, packing=False, length_index=0):
    return bytes([FORMATS[fmt] | (4 if train_on_inputs else 0) | (8 if packing else 0)
                  | (length_index << 4)])


def jsonl(records):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def jsonl_seeds():
    h = "jsonl_examples"
    wordnet = [json.loads(l) for l in (REPO / "data/wordnet/train.jsonl").read_text().splitlines()[:4]]
    kjv_line = json.loads((REPO / "data/kjv/eval.jsonl").read_text().splitlines()[0])["text"]
    verses = [s.strip() + "." for s in kjv_line.split(".")[:4] if s.strip()]
    kjv_alpaca = [{"instruction": "Continue the verse.", "input": v[: len(v) // 2],
                   "output": v[len(v) // 2 :]} for v in verses]
    sources = {"wordnet": wordnet, "kjv": kjv_alpaca}
    variants = [(False, False, 0), (True, True, 0), (False, True, 2), (True, False, 3)]
    for i, (src, records) in enumerate(sources.items()):
        text = [{"text": r["instruction"] + " " + r["input"] + " " + r["output"]} for r in records]
        if src == "kjv":
            text = [{"text": v} for v in verses]
        chat = []
        for j, r in enumerate(records):
            msgs = [{"role": "user", "content": (r["instruction"] + "\n" + r["input"]).strip()},
                    {"role": "assistant", "content": r["output"]}]
            if j % 2 == 0:
                msgs.insert(0, {"role": "system", "content": "You answer briefly."})
            if j == 1:  # a two-turn chat
                msgs += [{"role": "user", "content": "Again."},
                         {"role": "assistant", "content": r["output"]}]
            chat.append({"messages": msgs})
        alpaca = [dict(r) for r in records]
        alpaca[-1].pop("input")  # "input" is optional
        for k, (fmt, recs) in enumerate([("text", text), ("alpaca", alpaca),
                                         ("chat-llama2", chat), ("chat-chatml", chat)]):
            tio, pack, length = variants[(i + k) % len(variants)]
            put(h, f"{fmt}-{src}", options_byte(fmt, tio, pack, length) + jsonl(recs))
    put(h, "text-blank-lines-crlf", options_byte("text", packing=True, length_index=1)
        + b'{"text": "a"}\r\n\n   \n{"text": "\\u00e9t\\u00e9 <s> </s> \\ud83d\\ude00"}\n')


# ---- PEFT adapter_config.json ----------------------------------------------------------------


def peft_seeds(run):
    h = "peft_adapter_config"
    base = REPO / "tests/fixtures/lora_llama_gqa"
    put(h, "peft-0.21.2", (base / "adapter/adapter_config.json").read_bytes())
    put(h, "peft-0.21.2-rslora", (base / "adapter_rslora/adapter_config.json").read_bytes())
    put(h, "minimal-all-linear", b'{"peft_type": "LORA", "task_type": null, "r": 4, '
        b'"lora_alpha": 8.5, "target_modules": "all-linear", "use_rslora": true}')
    if run:
        put(h, "qlora-train-final", (run / "final/adapter_config.json").read_bytes())


# ---- checkpoint manifest and trainer state ---------------------------------------------------

# The scratch checkpoint folder of fuzz_checkpoint_manifest.cpp (keep in step with it).
FOLDER = {"trainer_state.json": b'{"step": 1}\n', "adapter/adapter_config.json": b"{}\n"}


def manifest_seeds(run):
    h = "checkpoint_manifest"
    fmt = "qlora-train checkpoint 1"
    if run:
        real = json.loads((sorted(run.glob("checkpoint-*"))[-1] / "manifest.json").read_bytes())
        fmt = real.get("format", fmt)
        put(h, "real-run", (sorted(run.glob("checkpoint-*"))[-1] / "manifest.json").read_bytes())
    files = {k: {"bytes": len(v), "sha1": hashlib.sha1(v).hexdigest()} for k, v in FOLDER.items()}
    put(h, "intact", json.dumps({"format": fmt, "files": files}, indent=2) + "\n")
    broken = json.loads(json.dumps(files))
    broken["trainer_state.json"]["sha1"] = "0" * 40
    put(h, "wrong-sha1", json.dumps({"format": fmt, "files": broken}))
    put(h, "missing-entry", json.dumps({"format": fmt, "files": {"trainer_state.json":
                                                                  files["trainer_state.json"]}}))


def trainer_state_seeds(run):
    if not run:
        return
    h = "trainer_state"
    for ckpt in sorted(run.glob("checkpoint-*")):
        put(h, ckpt.name, (ckpt / "trainer_state.json").read_bytes())


# ---- bitsandbytes quant states ---------------------------------------------------------------


def bnb_seeds():
    h = "bnb_quant_state"
    tensors, _ = read_safetensors(REPO / "tests/fixtures/bnb_llama_gqa/model.safetensors")
    for name in ["model.layers.0.mlp.down_proj.weight", "model.layers.0.self_attn.q_proj.weight",
                 "model.layers.1.self_attn.k_proj.weight"]:
        put(h, name.replace("model.layers.", "").replace(".weight", ""),
            tensors[name + ".quant_state.bitsandbytes__nf4"][2])
    # The form without double quant (absmax then must be F32: refused for this weight).
    put(h, "no-double-quant", b'{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", '
        b'"shape": [64, 160]}')
    put(h, "compact-blocksize-128", b'{"quant_type":"nf4","blocksize":128,"dtype":"float16",'
        b'"shape":[64,160],"nested_blocksize":256,"nested_dtype":"float32","nested_offset":0.25}')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--run", type=pathlib.Path, help="run folder of a short real training run")
    args = ap.parse_args()
    run = args.run
    safetensors_seeds()
    gguf_seeds()
    config_seeds(run)
    jsonl_seeds()
    peft_seeds(run)
    manifest_seeds(run)
    trainer_state_seeds(run)
    bnb_seeds()
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    print(f"{sum(1 for f in CORPUS.rglob('*') if f.is_file())} seed files, {total} bytes in {CORPUS}")


if __name__ == "__main__":
    main()
