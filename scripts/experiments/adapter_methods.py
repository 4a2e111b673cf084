#!/usr/bin/env python3
"""Helper of scripts/experiments/adapter_methods.sh (standard library only).

The one table of methods (METHODS below), the parameter-budget matching, the per-method
result record and the tables: `adapter_methods.sh` runs the binary; this file decides what to
run and writes what came out.

  adapter_methods.py methods                        the method ids, in run order
  adapter_methods.py sets --config C --model-dir D --method M
                                                    the --set arguments of method M, one a line
  adapter_methods.py merge --method M               the --merge format of its deployable form, or ""
  adapter_methods.py base-quants --model tiny|smollm2
  adapter_methods.py result --model-dir D --method M --config C   -> D/M/result.json
  adapter_methods.py table --root R --models tiny,smollm2 --meta F [--readme README.md]
  adapter_methods.py block --file F --begin B --end E [--anchor A] < text
                                                    set the block between markers B and E of F
"""
import argparse
import json
import math
import os
import re
import struct
import sys

# id, label, the frozen base while training, the adapter, the deployable form.
# rank "lora": adapter.rank of the config (r); "matched": the rank whose parameter count is
# closest to LoRA r's (qa_rank below). alpha is always scaling * rank, scaling = the config's
# alpha / rank, so every method trains with the same scaling.
METHODS = [
    dict(id="qlora", label="(1) QLoRA", adapter="lora", quant="nf4", merge="",
         base="NF4 (block 64, double quant)", form="NF4 base + LoRA (unmerged)"),
    dict(id="lora-int4", label="(2) LoRA on INT4", adapter="lora", quant="int4", merge="",
         base="INT4 g32", form="INT4 g32 base + LoRA (unmerged)"),
    dict(id="qblora", label="(3) Q-BLoRA λ=2", adapter="blora", quant="nf4", merge="",
         balance=2, base="NF4 (block 64, double quant)", form="NF4 base + BLoRA (unmerged)"),
    dict(id="qablora", label="(4) QA-BLoRA", adapter="qa-blora", quant="int4", merge="int4",
         balance=2, rank="matched", base="INT4 g32",
         form="INT4 g32, merged (folds into the group offsets; exact up to their fp16 rounding)"),
    dict(id="l4q", label="(5) L4Q 4-bit g32", adapter="l4q", quant="none", merge="int4",
         base="dense", form="INT4 g32, merged (exact: the learned codes)"),
    dict(id="lora-rtn", label="(6) LoRA on dense + RTN", adapter="lora", quant="none",
         merge="int4", base="dense",
         form="INT4 g32, merged then round-to-nearest (the baseline of (4) and (5))"),
]
BY_ID = {m["id"]: m for m in METHODS}
# The base models evaluated without an adapter (for reference), per model. SmolLM2's "none"
# is the same weights as its "int4" (the Q4_1 file dequantized), so it is not repeated.
BASE_QUANTS = {"tiny": ["none", "nf4", "int4"], "smollm2": ["int4", "nf4"]}
BASELINE = "lora-rtn"
# |merged loss - pre-merge loss| above this for an exact merge is a bug, not a result.
EXACT_MERGE_TOLERANCE = 1e-3


def die(msg, code=1):
    print(f"adapter_methods.py: {msg}", file=sys.stderr)
    sys.exit(code)


def load_json(path):
    with open(path) as f:
        return json.load(f)


def safetensors_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header


def numel(shape):
    return math.prod(shape) if shape else 1


def linear_shapes(lora_final):
    """(in, out) of every adapted linear, from a plain LoRA's PEFT file (A [r, in], B [out, r])."""
    header = safetensors_header(os.path.join(lora_final, "adapter_model.safetensors"))
    shapes = {}
    for name, t in header.items():
        m = re.match(r"(.*)\.lora_([AB])\.weight$", name)
        if not m:
            continue
        entry = shapes.setdefault(m.group(1), {})
        if m.group(2) == "A":
            entry["in"] = t["shape"][1]
        else:
            entry["out"] = t["shape"][0]
    if not shapes or any(len(v) != 2 for v in shapes.values()):
        die(f"{lora_final}: no complete lora_A / lora_B pairs")
    return [(v["in"], v["out"]) for v in shapes.values()]


def qa_rank(lora_final, r, group, balance):
    """R minimizing |R * sum(in/g + out/λ) - r * sum(in + out)| (ties: the smaller R)."""
    shapes = linear_shapes(lora_final)
    lora = r * sum(i + o for i, o in shapes)
    per_rank = sum(i // group + o // balance for i, o in shapes)
    lo = max(1, lora // per_rank)
    best = min((lo, lo + 1), key=lambda R: (abs(R * per_rank - lora), R))
    return best, lora, per_rank


def config_sets(config, model_dir, method):
    m = BY_ID[method]
    cfg = load_json(config)
    a = cfg.get("adapter", {})
    r = a.get("rank", 64)
    alpha = a.get("alpha", 16.0)
    scaling = alpha / r
    rank = r
    if m.get("rank") == "matched":
        group = cfg.get("quantization", {}).get("group_size", 32)
        # The layer shapes come from a plain LoRA of the same model trained before (any base).
        finals = [os.path.join(model_dir, i, "run", "final") for i in ("qlora", "lora-int4")]
        finals = [f for f in finals if os.path.isfile(os.path.join(f, "DONE"))]
        if not finals:
            die(f"no trained plain LoRA under {model_dir} (qlora, lora-int4) to read the layer "
                f"shapes from: those methods run first")
        rank, _, _ = qa_rank(finals[0], r, group, m["balance"])
    sets = [f"adapter.type={m['adapter']}", f"quantization.type={m['quant']}",
            f"adapter.rank={rank}", f"adapter.alpha={scaling * rank:g}"]
    if "balance" in m:
        sets.append(f"adapter.balance={m['balance']}")
    return sets


def count_parameters(final):
    """(adapter, quantizer) parameter counts of a final/ folder, from the native tensors."""
    native = os.path.join(final, "qlora_adapter.safetensors")
    path = native if os.path.isfile(native) else os.path.join(final, "adapter_model.safetensors")
    adapter = quantizer = 0
    for name, t in safetensors_header(path).items():
        if name.endswith(("l4q_scale", "l4q_offset")):
            quantizer += numel(t["shape"])
        else:
            adapter += numel(t["shape"])
    return adapter, quantizer


def read_timings(path):
    out = {}
    if os.path.isfile(path):
        for line in open(path):
            if line.strip():
                phase, seconds = line.split("\t")
                out[phase] = out.get(phase, 0.0) + float(seconds)
    return out


def cmd_result(args):
    m = BY_ID[args.method]
    d = os.path.join(args.model_dir, args.method)
    final = os.path.join(d, "run", "final")
    run_cfg = load_json(os.path.join(d, "run", "config.json"))
    adapter_params, quantizer_params = count_parameters(final)
    deploy = load_json(os.path.join(d, "eval-deployable.json"))
    pre = load_json(os.path.join(d, "eval-unmerged.json")) if m["merge"] else None
    train = [json.loads(l) for l in open(os.path.join(d, "run", "metrics.jsonl")) if l.strip()]
    train = [r for r in train if r.get("type") == "train"]
    res = dict(
        method=m["id"], label=m["label"], base=m["base"], form=m["form"], merge=m["merge"],
        adapter=run_cfg["adapter"], quantization=run_cfg["quantization"],
        steps=run_cfg["training"]["max_steps"],
        train_tokens=sum(r["tokens"] for r in train),
        last_train_loss=train[-1]["loss"] if train else None,
        adapter_parameters=adapter_params, quantizer_parameters=quantizer_params,
        eval_adapter_parameters=(pre or deploy)["adapter_parameters"],
        deployable=deploy, pre_merge=pre, timings=read_timings(os.path.join(d, "timings.tsv")))
    problems = []
    if res["eval_adapter_parameters"] != adapter_params + quantizer_params:
        problems.append(f"eval counts {res['eval_adapter_parameters']} adapter parameters, "
                        f"the checkpoint holds {adapter_params + quantizer_params}")
    if m["merge"] and m["id"] != BASELINE:
        diff = abs(deploy["loss"] - pre["loss"])
        if deploy["merged_exactly"] != deploy["merged_linears"] or deploy["merged_linears"] == 0:
            problems.append(f"merge not exact: {deploy['merged_exactly']} of "
                            f"{deploy['merged_linears']} linears merged exactly")
        if diff > EXACT_MERGE_TOLERANCE:
            problems.append(f"the exact merge moved the held-out loss by {diff:.6f} "
                            f"({pre['loss']:.6f} -> {deploy['loss']:.6f}; tolerance "
                            f"{EXACT_MERGE_TOLERANCE})")
    res["problems"] = problems
    with open(os.path.join(d, "result.json"), "w") as f:
        json.dump(res, f, indent=1)
    if problems:
        die(f"{args.method}: looks like a bug, not a result: " + "; ".join(problems) +
            f" (files in {d}; result.json written, --force reruns it)", 3)


# ---------------------------------------------------------------------------------- tables
MODEL_TITLES = {
    "smollm2": "SmolLM2-135M-Instruct (`models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`), "
               "WordNet dictionary chat (`data/wordnet-chat`)",
    "tiny": "the bundled tiny model (`data/tiny-llama`, 1.3 M parameters), WordNet "
            "definitions (`data/wordnet`, alpaca)",
}


def mb(nbytes):
    return f"{nbytes / 1e6:.2f}"


def fmt_params(res):
    s = f"{res['adapter_parameters']:,}"
    if res["quantizer_parameters"]:
        s += f" + {res['quantizer_parameters']:,} quantizer"
    return s


def rank_text(res):
    a = res["adapter"]
    t = a["type"]
    if t == "blora":
        return f"r {a['rank']} (inner {a['rank'] * a['balance']}), pool/repeat {a['balance']}"
    if t == "qa-blora":
        return f"R {a['rank']}, pool {res['quantization']['group_size']}, repeat {a['balance']}"
    if t == "l4q":
        return f"r {a['rank']}, {a['l4q_bits']}-bit g{a['l4q_group_size']}"
    return f"r {a['rank']}"


def failure_text(path):
    f = load_json(path)
    last = [l for l in f["log_tail"].splitlines() if l.strip()]
    msg = last[-1] if last else ""
    return f"**failed** (exit {f['exit']}): `{msg.replace('|', '/')}`"


def failure_file(method_dir):
    """The record of a method's failed command, or None."""
    if not os.path.isdir(method_dir):
        return None
    for name in sorted(os.listdir(method_dir)):
        if name.endswith(".failed.json"):
            return os.path.join(method_dir, name)
    return None


def failure(method_dir):
    """The failure of a method's last command, as table text, or None."""
    f = failure_file(method_dir)
    return failure_text(f) if f else None


def model_table(root, model, meta):
    d = os.path.join(root, model)
    results = {}
    for m in METHODS:
        p = os.path.join(d, m["id"], "result.json")
        if os.path.isfile(p):
            results[m["id"]] = load_json(p)
    if not results:
        return f"_No results for {model} (run the script with --models {model})._\n"
    any_res = next(iter(results.values()))
    # The run's effective config (data.eval is emptied for training: evals run separately).
    cfg = load_json(os.path.join(d, any_res["method"], "run", "config.json"))
    held_out = load_json(os.path.join(d, "methods.json"))
    base = results.get(BASELINE)
    lora_budget = results.get("qlora", {}).get("adapter_parameters")
    lines = []
    tr, da, op, sc = (cfg.get(k, {}) for k in ("training", "data", "optimizer", "schedule"))
    ev = held_out.get("eval", {})
    lines.append(
        f"**{MODEL_TITLES.get(model, model)}** — config `configs/{model}/methods.json`: "
        f"{any_res['steps']} steps of {tr.get('micro_batch_size')} packed row(s) of <= "
        f"{da.get('max_seq_len')} tokens (seed {tr.get('seed')}, same data order for every "
        f"method), AdamW lr {op.get('lr')} {sc.get('type')} with {sc.get('warmup_steps')} "
        f"warm-up steps, clip {op.get('max_grad_norm')}, dropout 0, scaling alpha/rank = "
        f"{any_res['adapter']['alpha'] / any_res['adapter']['rank']:g} for every method. "
        f"Held-out: `{held_out['data']['eval']}`"
        + (f", first {ev.get('max_batches') * ev.get('batch_size')} records"
           if ev.get("max_batches") else ", all records")
        + f" ({any_res['deployable']['predicted_tokens']} predicted tokens, answers only).\n")
    lines.append("| method | trained on | adapter | trainable params | deployable form | "
                 "held-out loss | perplexity | vs (6) | pre-merge loss | decoder-linear MB "
                 "(+ adapter MB, fp32) | train s |")
    lines.append("|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
    suspects = []
    for key in BASE_QUANTS.get(model, []):
        p = os.path.join(d, f"base-{key}.json")
        name = {"none": "dense", "nf4": "NF4", "int4": "INT4 g32"}[key]
        if os.path.isfile(p + ".failed.json"):
            lines.append(f"| base model, no fine-tuning | — | none | 0 | {name}: "
                         f"{failure_text(p + '.failed.json')} | | | | | | |")
        elif os.path.isfile(p):
            e = load_json(p)
            if model == "smollm2" and key == "int4":
                name = "INT4 g32 = the Q4_1 as stored (= dense)"
            lines.append(f"| base model, no fine-tuning | — | none | 0 | {name} | "
                         f"{e['loss']:.4f} | {e['perplexity']:.2f} | | | "
                         f"{mb(e['decoder_linear_bytes'])} | |")
    for m in METHODS:
        res = results.get(m["id"])
        if not res:
            why = failure(os.path.join(d, m["id"])) or "not run"
            lines.append(f"| {m['label']} | {m['base']} | | | {why} | | | | | | |")
            continue
        dep, pre = res["deployable"], res["pre_merge"]
        params = fmt_params(res)
        if lora_budget and m["id"] != "qlora":
            rel = res["adapter_parameters"] / lora_budget - 1
            if abs(rel) > 5e-4:
                params += f" ({rel:+.1%})"
        size = mb(dep["decoder_linear_bytes"])
        if not m["merge"]:
            size += f" + {mb(4 * (res['adapter_parameters'] + res['quantizer_parameters']))}"
        vs = ""
        if base and m["id"] != BASELINE:
            vs = f"{dep['loss'] - base['deployable']['loss']:+.4f}"
        pre_txt = ""
        if pre:
            pre_txt = f"{pre['loss']:.4f} ({dep['loss'] - pre['loss']:+.4f})"
        train_s = res["timings"].get("train")
        flag = ""
        if res.get("problems"):
            flag = " ⚠"
            suspects.append(f"⚠ {m['label']}: " + "; ".join(res["problems"]))
        lines.append(
            f"| {m['label']}{flag} | {m['base']} | {m['adapter'] if m['adapter'] != 'lora' else 'LoRA'}"
            f" {rank_text(res)} | {params} | {m['form']} | {dep['loss']:.4f} | "
            f"{dep['perplexity']:.2f} | {vs} | {pre_txt} | {size} | "
            f"{'' if train_s is None else f'{train_s:.0f}'} |")
    if suspects:
        lines.append("")
        lines += [s + " — a suspected bug, reported rather than worked around." for s in suspects]
    lines.append("")
    lines += [f"- {s}" for s in summary(results)]
    for m in METHODS:
        if m["id"] in results:
            continue
        f = failure_file(os.path.join(d, m["id"]))
        if f:
            lines.append(f"- {m['label']} failed: `{load_json(f)['command']}` (its log: "
                         f"`{f}`).")
    for key in BASE_QUANTS.get(model, []):
        f = os.path.join(d, f"base-{key}.json.failed.json")
        if os.path.isfile(f):
            lines.append(f"- The {key} base model failed: `{load_json(f)['command']}`.")
    return "\n".join(lines) + "\n"


def summary(results):
    """What the table says, computed (so that a rerun cannot leave stale prose behind)."""
    out = []
    base = results.get(BASELINE)
    if base:
        pre, dep = base["pre_merge"]["loss"], base["deployable"]["loss"]
        out.append(f"(6)'s round-to-nearest INT4 merge costs {dep - pre:+.4f} "
                   f"({pre:.4f} -> {dep:.4f}).")
        for mid in ("qablora", "l4q"):
            r = results.get(mid)
            if not r:
                continue
            diff = r["deployable"]["loss"] - dep
            verdict = "beats" if diff < 0 else "does NOT beat"
            out.append(f"{r['label']} {verdict} (6): {r['deployable']['loss']:.4f} vs {dep:.4f} "
                       f"({diff:+.4f}); its merge changed the loss by "
                       f"{r['deployable']['loss'] - r['pre_merge']['loss']:+.4f}.")
    unmerged = [r for r in results.values() if not r["merge"]]
    merged = [r for r in results.values() if r["merge"]]
    if unmerged:
        b = min(unmerged, key=lambda r: r["deployable"]["loss"])
        out.append(f"Lowest loss with the adapter kept unmerged: {b['label']} "
                   f"({b['deployable']['loss']:.4f}).")
    if merged:
        b = min(merged, key=lambda r: r["deployable"]["loss"])
        text = (f"Lowest loss as a plain INT4 g32 model (no adapter at run time): {b['label']} "
                f"({b['deployable']['loss']:.4f})")
        if unmerged:
            u = min(unmerged, key=lambda r: r["deployable"]["loss"])
            text += f", {b['deployable']['loss'] - u['deployable']['loss']:+.4f} from the lowest unmerged"
        out.append(text + ".")
    return out


def replace_block(text, begin, end, body, anchor=None):
    """text with the block begin..end (markers kept) set to body; inserted before `anchor`."""
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        i, j = text.index(begin), text.index(end) + len(end)
        return text[:i] + block + text[j:]
    if anchor is None or anchor not in text:
        die(f"markers {begin} / {end} not found and no place to insert them")
    i = text.index(anchor)
    return text[:i] + block + "\n\n" + text[i:]


def model_seconds(root, model):
    """Seconds of every command of a model: base evals + each method's train and evals."""
    d = os.path.join(root, model)
    total = sum(read_timings(os.path.join(d, "timings.tsv")).values())
    for m in METHODS:
        total += sum(read_timings(os.path.join(d, m["id"], "timings.tsv")).values())
    return total


def cmd_table(args):
    meta = load_json(args.meta)
    models = [m for m in args.models.split(",") if m]
    parts = []
    for model in models:
        parts.append(f"### {'SmolLM2-135M' if model == 'smollm2' else 'Tiny model'}\n")
        parts.append(model_table(args.root, model, meta))
    tables = "\n".join(parts)
    when = meta.get("finished_utc", "")
    seconds = {m: model_seconds(args.root, m) for m in models}
    total = sum(seconds.values())
    per_model = ", ".join(f"{m} {seconds[m] / 60:.1f} min" for m in models)
    header = (
        f"Made by `{meta['command']}` on {when} (UTC): {meta['machine']}, "
        f"`training.threads` {meta['threads']}, load average {meta['load_start']} at the start "
        f"and {meta['load_end']} at the end (the machine is shared); {total / 60:.1f} min of "
        f"commands ({per_model}: every train and eval, a result that was already there counted "
        f"with the time it took then), this invocation {meta['wall_s'] / 60:.1f} min wall. Binary: "
        f"`{meta['binary']}`, commit {meta['commit']}. Raw records: `{args.root}/<model>/<method>/` (git-ignored), "
        f"the tables alone: `{args.root}/results.md`.\n")
    notes = (
        "Columns: *trainable params* counts the adapter's fp32 tensors (A, B; for L4Q also "
        "its learned scale and offset, one pair per group of 32 inputs, listed separately; "
        "(+x%) is the difference from LoRA r's count); *vs (6)* is the deployable held-out "
        "loss minus that of (6), the baseline a quantization-aware method must beat "
        "(negative = better); *pre-merge loss* is the trained model before `eval --merge int4` "
        "(for (4) the INT4 base + adapter, for (5) L4Q's fake-quantized forward, for (6) the "
        "dense base + LoRA) and, in brackets, what the merge changed; *decoder-linear MB* is "
        "`decoder_linear_bytes` of `eval --json` (the 7 linears of every layer as stored: "
        "embeddings, norms and lm_head are the same for every row and not counted), plus, for "
        "unmerged forms, the adapter as trained (fp32 parameters x 4 bytes; a runtime also "
        "needs it). Held-out loss: mean cross-entropy of the answer tokens. "
        "INT4 g32 = groups of 32 inputs, `w = d*q + m` with fp16 d, m (GGUF Q4_1). "
        "For SmolLM2 the \"dense\" base of (5) and (6) is the GGUF's Q4_1 weights dequantized "
        "to fp32 (the only weights there are): (2) and the pre-merge (6) train on the very same "
        "weights, and its NF4 base is a re-quantization of those Q4_1 weights. QA-BLoRA's "
        "update is constant over each group of 32 inputs, so its effective rank is at most "
        "in/32 (SmolLM2: 18, 48 for down_proj; tiny: 4, 12 for down_proj): R is raised to "
        "match LoRA r's parameter count as asked, but only min(R, in/32) of it can be used.\n")
    body = ("## Adapter methods, measured here\n\n"
            "Generated by `scripts/experiments/adapter_methods.sh` (see "
            "`scripts/experiments/README.md`): every method of `adapter.type` fine-tuned on "
            "the same data, steps, seed and schedule at the same trainable-parameter budget, "
            "then evaluated in its deployable form.\n\n" + header + "\n" + tables + "\n" + notes)
    with open(os.path.join(args.root, "results.md"), "w") as f:
        f.write(body)
    print(body)
    if args.readme:
        text = open(args.readme).read()
        keep_b, keep_e = "<!-- adapter-step-memory:begin -->", "<!-- adapter-step-memory:end -->"
        kept = ""
        if keep_b in text and keep_e in text:
            kept = text[text.index(keep_b):text.index(keep_e) + len(keep_e)]
        full = body + ("\n" + kept if kept else "")
        text = replace_block(text, "<!-- adapter-methods:begin -->",
                             "<!-- adapter-methods:end -->", full, anchor="## Development")
        with open(args.readme, "w") as f:
            f.write(text)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("methods")
    s = sub.add_parser("sets")
    s.add_argument("--config", required=True)
    s.add_argument("--model-dir", required=True)
    s.add_argument("--method", required=True, choices=list(BY_ID))
    s = sub.add_parser("merge")
    s.add_argument("--method", required=True, choices=list(BY_ID))
    s = sub.add_parser("base-quants")
    s.add_argument("--model", required=True, choices=list(BASE_QUANTS))
    s = sub.add_parser("result")
    s.add_argument("--model-dir", required=True)
    s.add_argument("--method", required=True, choices=list(BY_ID))
    s = sub.add_parser("table")
    s.add_argument("--root", required=True)
    s.add_argument("--models", required=True)
    s.add_argument("--meta", required=True)
    s.add_argument("--readme")
    s = sub.add_parser("block")  # replace one marked block of a file with stdin
    s.add_argument("--file", required=True)
    s.add_argument("--begin", required=True)
    s.add_argument("--end", required=True)
    s.add_argument("--anchor")
    args = p.parse_args()
    if args.cmd == "methods":
        print(" ".join(m["id"] for m in METHODS))
    elif args.cmd == "sets":
        print("\n".join(config_sets(args.config, args.model_dir, args.method)))
    elif args.cmd == "base-quants":
        print(" ".join(BASE_QUANTS[args.model]))
    elif args.cmd == "merge":
        print(BY_ID[args.method]["merge"])
    elif args.cmd == "result":
        cmd_result(args)
    elif args.cmd == "table":
        cmd_table(args)
    elif args.cmd == "block":
        text = open(args.file).read()
        text = replace_block(text, args.begin, args.end, sys.stdin.read(), args.anchor)
        with open(args.file, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
