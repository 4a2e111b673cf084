#!/usr/bin/env python3
"""Helpers of the GPU mode of scripts/bench/train_step.sh (scripts/bench/train_step_gpu.sh):

  data OUT --lines N --tokens T [--seed S]   synthetic {"text": ...} JSONL: N lines of random
                                             lowercase words, each longer than T tokens
  peak --device cuda|cpu --json F [--size 8192]  the bf16 matmul peak of this machine
  launch --stdout F --log F --json F [--mark NAME=TEXT ...] -- CMD ...
                                             runs CMD, timestamps its stderr lines (JSON: exit
                                             status, wall s, first time of each mark, peak RSS)
  cpp METRICS LOG PROC WARMUP                one JSON object from a qlora-train run
  pyside OUT PROC NAME                       the same from a train_step_peft.py run
  report CONFIG PEAK SIDE.json ...           the table: tokens/s, peak memory, TFLOP/s, MFU,
                                             ratios C++ / each Python side

FLOPs per trained token (the MFU convention: what the model needs, not what is executed;
activation checkpointing's recomputation is NOT counted), LLaMA with L layers, hidden h,
intermediate i, kv width h_kv, vocab V, LoRA rank r, T tokens per row:

  F = 4 * N_frozen + 6 * N_lora + 12 * L * h * T
  N_frozen = L * (2 h^2 + 2 h h_kv + 3 h i) + V h       (decoder linears + lm_head)
  N_lora   = sum over adapted linears of r * (d_in + d_out)

- frozen weights: forward 2 N, backward the input gradient 2 N; no weight gradient (4 N, not
  the 6 N of full training);
- LoRA adapters: forward 2, input gradient 2, weight gradient 2 per parameter (6 N_lora);
- attention scores and values: forward 2 matmuls of 2 h T per token and layer (4 L h T, the
  whole T x T square, not halved for causality: the PaLM convention), backward twice that;
- norms, activations, softmax, rotary, the loss and the optimizer are not counted.

MFU = tokens/s * F / (measured bf16 matmul peak of the same machine, FLOP/s).
"""

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time


def cmd_data(args):
    rng = random.Random(args.seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    # A word is at least one token, so T + 16 words are always more than T tokens.
    words_per_line = args.tokens + 16
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for _ in range(args.lines):
            words = ("".join(rng.choice(letters) for _ in range(rng.randint(3, 9)))
                     for _ in range(words_per_line))
            f.write(json.dumps({"text": " ".join(words)}) + "\n")
    os.replace(tmp, args.out)


def cmd_peak(args):
    import torch

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("peak: torch sees no CUDA device")
    dev = torch.device(args.device)
    n = args.size
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    c = torch.empty(n, n, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        torch.matmul(a, b, out=c)
    best = 0.0
    for _ in range(args.trials):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for _ in range(args.iters):
                torch.matmul(a, b, out=c)
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            for _ in range(args.iters):
                torch.matmul(a, b, out=c)
            seconds = time.perf_counter() - t0
        best = max(best, 2.0 * n ** 3 * args.iters / seconds)
    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    with open(args.json, "w") as f:
        json.dump({"device": args.device, "device_name": name, "size": n, "iters": args.iters,
                   "trials": args.trials, "peak_flops": best, "torch": torch.__version__,
                   "cuda": torch.version.cuda if cuda else None}, f)
    print(f"bf16 matmul peak: {best / 1e12:.4g} TFLOP/s on {name} ({n}^3, best of "
          f"{args.trials} x {args.iters})")


def cmd_launch(argv):
    # The launcher of both train_step scripts: stdin closed, stdout to a file, stderr lines
    # timestamped.
    marks, opts = {}, {}
    while argv[0] != "--":
        key, value = argv[0], argv[1]
        argv = argv[2:]
        if key == "--mark":
            name, text = value.split("=", 1)
            marks[name] = text
        else:
            opts[key] = value
    cmd = argv[1:]
    seen = {}
    start = time.monotonic()
    with open(opts["--stdout"], "w") as out, open(opts["--log"], "w") as log:
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.PIPE, text=True, errors="replace")
        for line in child.stderr:
            t = time.monotonic() - start
            log.write(f"[{t:9.3f}] {line}")
            log.flush()
            for name, text in marks.items():
                if name not in seen and text in line:
                    seen[name] = t
        status = child.wait()
    wall = time.monotonic() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(opts["--json"], "w") as f:
        json.dump({"status": status, "wall_s": wall, "marks": seen,
                   "peak_rss_mb": peak_kib / 1024}, f)
    sys.exit(status)


def cmd_cpp(args):
    rows = [json.loads(line) for line in open(args.metrics) if line.strip()]
    train = [r for r in rows if r.get("type") == "train" and r["step"] > args.warmup]
    if not train:
        sys.exit(f"{args.metrics}: no training records after step {args.warmup}")
    proc = json.load(open(args.proc))
    # "trained N steps in ... (N tokens); peak memory 1234 MB": CUDA max allocated / CPU VmHWM.
    peak = None
    for line in open(args.log, errors="replace"):
        if "; peak memory " in line:
            peak = float(line.split("; peak memory ", 1)[1].split()[0])
    print(json.dumps({
        "side": "C++ qlora-train",
        "tokens_per_s_median": statistics.median(r["tokens"] / r["seconds"] for r in train),
        "tokens_per_step_mean": statistics.mean(r["tokens"] for r in train),
        "seconds_per_step_median": statistics.median(r["seconds"] for r in train),
        "timed_steps": len(train),
        "step_memory_mb_max": max(r["memory_mb"] for r in train),
        "peak_memory_mb": peak,
        "setup_s": proc["marks"].get("first_step"),
        "model_loaded_s": proc["marks"].get("model_loaded"),
        "wall_s": proc["wall_s"],
        "peak_rss_mb": proc["peak_rss_mb"],
        "losses": [r["loss"] for r in train]}))


def cmd_pyside(args):
    py, proc = json.load(open(args.out)), json.load(open(args.proc))
    py.pop("steps")
    cuda = py["device"] == "cuda"
    py.update(side=args.side, model_loaded_s=py["timings"]["model_load_s"],
              setup_s=py["timings"]["setup_s"], wall_s=proc["wall_s"],
              peak_rss_mb=proc["peak_rss_mb"],
              peak_memory_mb=py["peak_gpu_mb"] if cuda else proc["peak_rss_mb"])
    print(json.dumps(py))


def flops_per_token(model_cfg, cfg, seq):
    L = model_cfg["num_hidden_layers"]
    h = model_cfg["hidden_size"]
    i = model_cfg["intermediate_size"]
    V = model_cfg["vocab_size"]
    kv = h // model_cfg["num_attention_heads"] * model_cfg.get(
        "num_key_value_heads", model_cfg["num_attention_heads"])
    shapes = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
              "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    n_frozen = L * sum(a * b for a, b in shapes.values()) + V * h
    adapter = cfg["adapter"]
    if adapter.get("type", "lora") != "lora":
        sys.exit(f"report: the FLOP formula is for adapter.type lora, not {adapter['type']}")
    r = adapter["rank"]
    n_lora = L * sum(r * sum(shapes[m]) for m in adapter["target_modules"])
    attention = 12 * L * h * seq
    return dict(total=4 * n_frozen + 6 * n_lora + attention, n_frozen=n_frozen, n_lora=n_lora,
                frozen=4 * n_frozen, lora=6 * n_lora, attention=attention, L=L, h=h, i=i, V=V,
                kv=kv, r=r, T=seq)


def cmd_report(args):
    cfg = json.load(open(args.config))
    model_cfg = json.load(open(os.path.join(cfg["model"]["path"], "config.json")))
    peak = json.load(open(args.peak))
    sides = [json.load(open(p)) for p in args.sides]
    seq = cfg["data"]["max_seq_len"]
    batch = cfg["training"]["micro_batch_size"]
    f = flops_per_token(model_cfg, cfg, seq)
    q = cfg["quantization"]
    quant = (f"NF4 block {q['block_size']}{' + double quant' if q['double_quant'] else ''}"
             if q["type"] == "nf4" else q["type"])
    ad = cfg["adapter"]
    print(f"train step, GPU mode of scripts/bench/train_step.sh: {cfg['model']['path']}, "
          f"random weights, {f['L']} layers, hidden {f['h']}, intermediate {f['i']}, "
          f"kv width {f['kv']}, vocab {f['V']}")
    print(f"workload: LoRA r {ad['rank']} alpha {ad['alpha']:g} dropout {ad['dropout']:g} on "
          f"{len(ad['target_modules'])} linears ({f['n_lora']:,} trainable), "
          f"{batch} rows x {seq} tokens per step, activation checkpointing "
          f"{'on' if cfg['training']['activation_checkpointing'] else 'off'}, "
          f"{cfg['model']['compute_dtype']} compute, AdamW; median of {args.steps} steps "
          f"after {args.warmup} warm-up")
    print(f"machine: {peak['device_name']}; {os.cpu_count()} cores; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"bf16 matmul peak measured here: {peak['peak_flops'] / 1e12:.4g} TFLOP/s "
          f"({peak['size']}^3 bf16 matmul, best of {peak['trials']} x {peak['iters']}, "
          f"torch {peak['torch']}{', CUDA ' + peak['cuda'] if peak['cuda'] else ''})")
    print(f"FLOPs per token (recomputation not counted): 4 N_frozen + 6 N_lora + 12 L h T = "
          f"{f['frozen'] / 1e9:.2f} + {f['lora'] / 1e9:.2f} + {f['attention'] / 1e9:.2f} = "
          f"{f['total'] / 1e9:.2f} GFLOP (N_frozen {f['n_frozen']:,} incl. lm_head, T {seq})")
    versions = {}
    for s in sides:
        versions.update(s.get("versions", {}))
    if versions:
        print("python side: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print("peak memory: CUDA = max allocated by the caching allocator since the process "
          "started (model load included); CPU = peak RSS. MB = 1e6 bytes")
    head = (f"{'side':34}{'tokens/s':>10}{'tokens/step':>12}{'s/step':>9}{'peak MB':>10}"
            f"{'TFLOP/s':>9}{'MFU':>8}{'load s':>8}{'setup s':>9}")
    print(head)
    fmt = lambda x, spec: "-" if x is None else format(x, spec)  # noqa: E731
    done = [s for s in sides if s.get("tokens_per_s_median")]
    for s in sides:
        if not s.get("tokens_per_s_median"):
            print(f"{s['side']:34}  skipped or failed: {s.get('reason', '?')}")
            continue
        achieved = s["tokens_per_s_median"] * f["total"]
        s["tflops"] = achieved / 1e12
        s["mfu"] = achieved / peak["peak_flops"]
        print(f"{s['side']:34}{s['tokens_per_s_median']:10.1f}{s['tokens_per_step_mean']:12.0f}"
              f"{s['seconds_per_step_median']:9.3f}{fmt(s.get('peak_memory_mb'), '10.0f'):>10}"
              f"{s['tflops']:9.4g}{s['mfu']:8.1%}{fmt(s.get('model_loaded_s'), '8.1f'):>8}"
              f"{fmt(s.get('setup_s'), '9.1f'):>9}")
        expected = batch * seq
        if abs(s["tokens_per_step_mean"] - expected) > 0.5:
            print(f"  note: {s['tokens_per_step_mean']:.0f} tokens/step, not {batch} x {seq}: "
                  f"rows are not full; the attention term above overstates this side")
    cpp = next((s for s in done if s["side"].startswith("C++")), None)
    for s in done:
        if s is cpp or cpp is None:
            continue
        mem = ("-" if not (cpp.get("peak_memory_mb") and s.get("peak_memory_mb"))
               else f"{cpp['peak_memory_mb'] / s['peak_memory_mb']:.2f}")
        print(f"ratio C++ / {s['side']}: tokens/s "
              f"{cpp['tokens_per_s_median'] / s['tokens_per_s_median']:.2f}, peak memory {mem}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"flops_per_token": f, "peak": peak, "sides": sides}, out, indent=1)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "launch":
        return cmd_launch(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("data")
    p.add_argument("out")
    p.add_argument("--lines", type=int, required=True)
    p.add_argument("--tokens", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("peak")
    p.add_argument("--device", choices=["cuda", "cpu"], required=True)
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--json", required=True, help="write the figures here")
    p = sub.add_parser("cpp")
    p.add_argument("metrics")
    p.add_argument("log")
    p.add_argument("proc")
    p.add_argument("warmup", type=int)
    p = sub.add_parser("pyside")
    p.add_argument("out", help="train_step_peft.py's stdout")
    p.add_argument("proc", help="the launcher's JSON")
    p.add_argument("side", help="name in the table")
    p = sub.add_parser("report")
    p.add_argument("config", help="the effective qlora-train config both sides ran")
    p.add_argument("peak")
    p.add_argument("sides", nargs="+")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--warmup", type=int, required=True)
    p.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    {"data": cmd_data, "peak": cmd_peak, "cpp": cmd_cpp, "pyside": cmd_pyside,
     "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
