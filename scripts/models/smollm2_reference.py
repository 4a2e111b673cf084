#!/usr/bin/env python3
"""Reference token ids, logits and perplexity of SmolLM2-135M-Instruct (Q4_1 GGUF) for the tests.

Run from the repository root (about 3 minutes on 2 CPU cores; most of it is transformers
dequantizing the GGUF in Python):
    scripts/models/smollm2.sh                  # the model, into models/smollm2/
    scripts/fixtures/venv.sh                   # transformers 4.57.6, gguf 0.19.0, llama-cpp-python 0.3.36
    .venv-fixtures/bin/python scripts/models/smollm2_reference.py

Writes tests/fixtures/smollm2/ (format: tests/fixtures/smollm2/README.md):
  reference.json         texts, token ids (llama.cpp's tokenizer: the reference; transformers'
                         GGUF conversion too), logit positions, held-out perplexities, greedy
                         continuation, fp32-vs-fp64 noise, versions, timings
  reference.safetensors  fp32 logits at a few positions, per-token NLL at every position,
                         per-position argmax and top-1/top-2 margin (transformers, fp32)
  heldout.jsonl          the held-out text as one {"text": ...} record (configs/smollm2/eval.json)

Token ids come from llama.cpp's tokenizer (llama-cpp-python, vocab_only, add_bos=False,
special=True so typed "<|im_start|>" is the special token): the file says
tokenizer.ggml.add_bos_token = false, and our tokenizer follows the file. transformers'
GGUF tokenizer conversion prepends BOS (<|im_start|>, id 1) anyway; its ids are recorded
beside ours, but every logit here is computed on llama.cpp's ids.

The model side: transformers loads the GGUF with from_pretrained(dir, gguf_file=...),
dequantizing every tensor to fp32 (Q4_1 -> d*q + m, Q8_0 -> d*q) and undoing llama.cpp's q/k
row permutation; it runs in fp32 with eager attention. The same forward in fp64 (the same
dequantized weights, cast) measures fp32 rounding noise. llama.cpp (fp32 CPU, F32 KV cache,
logits_all) scores the held-out text on the same ids; it multiplies Q4_1 weights with
activations quantized to Q8_1, so it is close, not equal.
"""

import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "models" / "smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
OUT = REPO / "tests" / "fixtures" / "smollm2"
KJV_EVAL = REPO / "data" / "kjv" / "eval.jsonl"
HELDOUT_LINE = 1  # 0-based line of data/kjv/eval.jsonl: Genesis 26 (chapter 25 % 25 == 0)
EOS_ID = 2  # tokenizer.ggml.eos_token_id, <|im_end|>
GREEDY_NEW_TOKENS = 40

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SEQUENCES = [
    # name, text, positions of full logits ("last" = len - 1, "mid" = len // 2)
    ("plain",
     "The capital of France is Paris. Water boils at 100 degrees Celsius at sea level, "
     "and the Earth goes around the Sun once every 365.25 days.",
     ["last"]),
    # SmolLM2's own chat template rendering of [user] with add_generation_prompt: it inserts
    # its default system prompt.
    ("chatml",
     f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
     "What is the capital of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n",
     [0, "mid", "last"]),
    ("mixed",
     "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\n"
     "# 12345 + 678 = 13023 \u2014 caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \U0001F600\t tabs\tand   spaces\n",
     ["last"]),
]


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve(positions, n):
    return [n - 1 if p == "last" else n // 2 if p == "mid" else p for p in positions]


def log_softmax64(logits):
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def next_token_nll(logits, ids):
    """NLL of ids[t + 1] under logits[t], t = 0 .. n - 2 (float64 log-softmax)."""
    lp = log_softmax64(logits[:-1])
    return -lp[np.arange(len(ids) - 1), np.asarray(ids[1:])]


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def write_f32_copy(gguf, src, dst):
    """src with every tensor dequantized to F32 by gguf-py (metadata copied, file_type 0)."""
    reader = gguf.GGUFReader(str(src))
    writer = gguf.GGUFWriter(str(dst), arch="llama")
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        value = 0 if field.name == gguf.Keys.General.FILE_TYPE else field.contents()
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, vtype, sub_type=sub)
    for t in reader.tensors:
        writer.add_tensor(t.name, np.ascontiguousarray(
            gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main():
    gguf_path = MODEL_DIR / GGUF_NAME
    if not gguf_path.is_file():
        sys.exit(f"{gguf_path} is missing: run scripts/models/smollm2.sh first")
    if sha256_of(gguf_path) != GGUF_SHA256:
        sys.exit(f"{gguf_path} has the wrong sha256: run scripts/models/smollm2.sh again")

    import gguf
    import llama_cpp
    import safetensors.numpy
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    timings = {}

    # --- token ids: llama.cpp's tokenizer (the reference) ------------------------------
    vocab = llama_cpp.Llama(str(gguf_path), vocab_only=True, verbose=False)

    def tokenize(text):
        return vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    heldout_text = json.loads(KJV_EVAL.read_text(encoding="utf-8").splitlines()[HELDOUT_LINE])["text"]
    seqs = [{"name": name, "text": text, "ids": tokenize(text)} for name, text, _ in SEQUENCES]
    for s, (_, _, positions) in zip(seqs, SEQUENCES):
        s["logit_positions"] = resolve(positions, len(s["ids"]))
    heldout_ids = tokenize(heldout_text)
    # Scored as `qlora-train eval` scores a text record when the model adds no BOS:
    # text then EOS; the per-token NLL covers the text's tokens 1.. and the EOS.
    heldout_scored = heldout_ids + [EOS_ID]

    # --- transformers' own GGUF tokenizer conversion (recorded, not used) -------------
    t0 = time.perf_counter()
    hf_tok = AutoTokenizer.from_pretrained(str(MODEL_DIR), gguf_file=GGUF_NAME)
    timings["transformers_tokenizer_load_s"] = round(time.perf_counter() - t0, 1)
    for s in seqs:
        s["ids_transformers"] = hf_tok(s["text"])["input_ids"]
    hf_heldout_ids = hf_tok(heldout_text)["input_ids"]

    # --- transformers model, fp32 ------------------------------------------------------
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        str(MODEL_DIR), gguf_file=GGUF_NAME, torch_dtype=torch.float32,
        attn_implementation="eager")
    timings["transformers_model_load_s"] = round(time.perf_counter() - t0, 1)
    model.eval()

    def forward(ids):
        with torch.no_grad():
            x = torch.tensor([ids], dtype=torch.long)
            return model(input_ids=x).logits[0].numpy()

    tensors = {}
    t0 = time.perf_counter()
    all_logits = {}
    for s in seqs:
        logits = forward(s["ids"])
        all_logits[s["name"]] = logits
        n = s["name"]
        tensors[f"{n}.logits"] = np.ascontiguousarray(logits[s["logit_positions"]], dtype=np.float32)
        tensors[f"{n}.nll"] = next_token_nll(logits, s["ids"]).astype(np.float32)
        top2 = np.sort(logits, axis=-1)[:, -2:]
        tensors[f"{n}.argmax"] = logits.argmax(axis=-1).astype(np.int32)
        tensors[f"{n}.margin"] = (top2[:, 1] - top2[:, 0]).astype(np.float32)
        s["mean_nll"] = float(tensors[f"{n}.nll"].astype(np.float64).mean())
    heldout_logits = forward(heldout_scored)
    timings["transformers_forward_all_s"] = round(time.perf_counter() - t0, 1)
    heldout_nll = next_token_nll(heldout_logits, heldout_scored)
    tensors["heldout.nll"] = heldout_nll.astype(np.float32)

    # --- fp32 rounding noise: the same forward in float64 ------------------------------
    model.to(torch.float64)
    noise = {}
    for s in seqs:
        with torch.no_grad():
            l64 = model(input_ids=torch.tensor([s["ids"]])).logits[0].numpy()
        noise[s["name"]] = float(np.abs(all_logits[s["name"]].astype(np.float64) - l64).max())
    with torch.no_grad():
        l64 = model(input_ids=torch.tensor([heldout_scored])).logits[0].numpy()
    heldout_nll64 = next_token_nll(l64, heldout_scored)
    noise["heldout"] = float(np.abs(heldout_logits.astype(np.float64) - l64).max())
    noise_nll = float(np.abs(heldout_nll - heldout_nll64).max())
    model.to(torch.float32)

    # --- greedy continuation of the chat prompt (transformers, fp32) -------------------
    chat = next(s for s in seqs if s["name"] == "chatml")
    with torch.no_grad():
        out = model.generate(torch.tensor([chat["ids"]]), attention_mask=torch.ones(1, len(chat["ids"]), dtype=torch.long),
                             max_new_tokens=GREEDY_NEW_TOKENS, do_sample=False, eos_token_id=EOS_ID,
                             pad_token_id=EOS_ID)
    greedy_ids = out[0, len(chat["ids"]):].tolist()
    chat["greedy"] = {"max_new_tokens": GREEDY_NEW_TOKENS, "ids": greedy_ids,
                      "text": vocab.detokenize(greedy_ids, special=True).decode("utf-8", "replace")}
    del model

    # --- llama.cpp on the same ids (fp32 CPU, F32 KV cache) ----------------------------
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(str(gguf_path), n_ctx=2048, n_batch=2048, n_ubatch=2048, logits_all=True,
                          n_threads=os.cpu_count(), type_k=0, type_v=0, flash_attn=False,
                          n_gpu_layers=0, verbose=False)  # type 0 = GGML_TYPE_F32
    timings["llama_cpp_load_s"] = round(time.perf_counter() - t0, 1)

    def llama_logits(ids):
        llm.reset()
        llm.eval(ids)
        return np.array(llm.scores[:len(ids)], dtype=np.float32)

    llama_vs_hf = {}
    for s in seqs:
        ll = llama_logits(s["ids"])
        d = np.abs(ll.astype(np.float64) - all_logits[s["name"]]).max()
        llama_vs_hf[s["name"]] = {
            "max_abs_logit_diff": float(d),
            "argmax_agree": int((ll.argmax(-1) == all_logits[s["name"]].argmax(-1)).sum()),
            "positions": len(s["ids"]),
            "mean_nll": float(next_token_nll(ll, s["ids"]).mean())}
    t0 = time.perf_counter()
    ll = llama_logits(heldout_scored)
    timings["llama_cpp_heldout_forward_s"] = round(time.perf_counter() - t0, 1)
    llama_nll = next_token_nll(ll, heldout_scored)
    tensors["heldout.nll_llama_cpp"] = llama_nll.astype(np.float32)

    # The same on an fp32 copy of the file (every tensor dequantized by gguf-py): llama.cpp
    # then multiplies in fp32 too, which separates its Q8_1 activation rounding from any
    # difference of the model code.
    del llm
    with tempfile.TemporaryDirectory() as tmp:
        f32_path = Path(tmp) / "f32.gguf"
        t0 = time.perf_counter()
        write_f32_copy(gguf, gguf_path, f32_path)
        timings["f32_copy_write_s"] = round(time.perf_counter() - t0, 1)
        llm = llama_cpp.Llama(str(f32_path), n_ctx=2048, n_batch=2048, n_ubatch=2048, logits_all=True,
                              n_threads=os.cpu_count(), type_k=0, type_v=0, flash_attn=False,
                              n_gpu_layers=0, verbose=False)
        ll32 = llama_logits(heldout_scored)
        llama_f32_short = {s["name"]: float(np.abs(llama_logits(s["ids"]).astype(np.float64)
                                                   - all_logits[s["name"]]).max()) for s in seqs}
        del llm
    llama_f32_nll = next_token_nll(ll32, heldout_scored)

    def ppl_block(nll):
        text_only = nll[:-1]  # without the final EOS prediction
        return {"mean_nll": float(text_only.mean()), "perplexity": float(np.exp(text_only.mean())),
                "mean_nll_with_eos": float(nll.mean()), "perplexity_with_eos": float(np.exp(nll.mean()))}

    heldout = {
        "source": "King James Version (1769), public domain: Genesis 26, line 2 of data/kjv/eval.jsonl",
        "text": heldout_text,
        "ids": heldout_ids,
        "ids_transformers_head": hf_heldout_ids[:8],
        "ids_transformers_equal_after_bos": hf_heldout_ids[1:] == heldout_ids,
        "scored_ids": "ids + [2] (EOS), as qlora-train eval scores a text record",
        "n_predicted_text": len(heldout_ids) - 1,
        "transformers_fp32": ppl_block(heldout_nll),
        "transformers_fp64": ppl_block(heldout_nll64),
        "llama_cpp": ppl_block(llama_nll),
        "llama_cpp_vs_transformers": {
            "max_abs_nll_diff": float(np.abs(llama_nll - heldout_nll).max()),
            "mean_abs_nll_diff": float(np.abs(llama_nll - heldout_nll).mean()),
            "max_abs_logit_diff": float(np.abs(ll.astype(np.float64) - heldout_logits).max()),
            "argmax_agree": int((ll.argmax(-1) == heldout_logits.argmax(-1)).sum()),
            "positions": len(heldout_scored)},
        "llama_cpp_f32_copy": ppl_block(llama_f32_nll),
        "llama_cpp_f32_copy_vs_transformers": {
            "max_abs_nll_diff": float(np.abs(llama_f32_nll - heldout_nll).max()),
            "max_abs_logit_diff": float(np.abs(ll32.astype(np.float64) - heldout_logits).max()),
            "argmax_agree": int((ll32.argmax(-1) == heldout_logits.argmax(-1)).sum())},
    }

    versions = {
        "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "gguf": gguf.__version__ if hasattr(gguf, "__version__") else "0.19.0",
        "llama_cpp_python": llama_cpp.__version__, "numpy": np.__version__,
        "safetensors": safetensors.__version__ if hasattr(safetensors, "__version__") else "",
        "torch_threads": torch.get_num_threads(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
    }
    llama_vs_hf["f32_copy_max_abs_logit_diff"] = llama_f32_short
    reference = {
        "model": {"file": GGUF_NAME, "sha256": GGUF_SHA256, "fetch": "scripts/models/smollm2.sh",
                  "vocab_size": 49152, "add_bos_token": False, "bos_id": 1, "eos_id": EOS_ID},
        "made_by": "scripts/models/smollm2_reference.py",
        "sequences": seqs,
        "heldout": heldout,
        "fp32_noise_max_abs_logit_diff_vs_fp64": noise,
        "fp32_noise_max_abs_nll_diff_vs_fp64_heldout": noise_nll,
        "llama_cpp_vs_transformers": llama_vs_hf,
        "versions": versions,
        "timings": timings,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    safetensors.numpy.save_file(tensors, str(OUT / "reference.safetensors"),
                                metadata={"made_by": "scripts/models/smollm2_reference.py"})
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False) + "\n",
                                        encoding="utf-8")
    (OUT / "heldout.jsonl").write_text(json.dumps({"text": heldout_text}, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    print(json.dumps({k: reference[k] for k in ("timings", "fp32_noise_max_abs_logit_diff_vs_fp64",
                                                "llama_cpp_vs_transformers")}, indent=1))
    print(json.dumps({k: heldout[k] for k in ("transformers_fp32", "transformers_fp64", "llama_cpp",
                                              "llama_cpp_vs_transformers", "llama_cpp_f32_copy",
                                              "llama_cpp_f32_copy_vs_transformers")}, indent=1))
    print("greedy:", repr(chat["greedy"]["text"]))


if __name__ == "__main__":
    main()
