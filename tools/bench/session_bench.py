#!/usr/bin/env python3
"""The 20-turn session experiment on SmolLM2 (issue: session state), printed, not asserted.

Runs `rsd-run chat` over one 20-turn script in several configurations, all in one run:
  - unbounded, never spilled (the reference);
  - hot budget B tokens within turns, exact, residual and kv forms, spilled between turns and
    restored from warm and from cold (RocksDB);
  - tokens form between turns (re-prefill from the token log);
  - the lossy baselines (window, streaming, h2o, tova, snapkv) at the same budget.
Writes a CSV (one row per configuration and turn: hot bytes, RSS, restore/prefill/decode time,
token match against the unbounded run) and, if matplotlib is importable, a plot of hot memory
and RSS per turn. Prints restore throughput (restored tokens/s) per form and tier next to
re-prefill from tokens, and llama.cpp's prefill of the same length when llama-cpp-python is
importable.

    python3 tools/bench/session_bench.py [--rsd-run build/tools/rsd-run] [--budget 64]
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

TURNS = [
    "Hi! Who are you?", "What is the capital of France?", "Tell me about its history.",
    "What is the Eiffel Tower?", "How tall is it?", "Write a haiku about Paris.",
    "Now one about the sea.", "What is 12 times 7?", "Explain photosynthesis briefly.",
    "What do plants need to grow?", "Name three planets.", "Which one is the largest?",
    "Write a short poem about the moon.", "What is a computer?", "How does a CPU work?",
    "What is memory in a computer?", "Give me a tip for learning to code.",
    "What is Python?", "Summarize our conversation.", "Thank you, goodbye!",
]


def run_chat(rsd_run, model, script, extra, threads, max_tokens):
    with tempfile.TemporaryDirectory() as data:
        cmd = [rsd_run, "chat", "--model", model, "--script", script, "--data-dir",
               os.path.join(data, "db"), "--session", "bench", "--threads", str(threads),
               "--max-tokens", str(max_tokens), "--compare-unbounded"] + extra
        t0 = time.time()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()], time.time() - t0


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rsd-run", default=os.path.join(root, "build", "tools", "rsd-run"))
    ap.add_argument("--model", default=os.path.join(root, "models",
                                                    "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--budget", type=int, default=64, help="hot budget in tokens")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--out", default="session_bench.csv")
    args = ap.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for t in TURNS:
            f.write(json.dumps({"role": "user", "content": t}) + "\n")
        script = f.name
    b = str(args.budget)
    configs = [
        ("unbounded", ["--spill-form", "none", "--spill-between-turns=false"]),
        ("exact-residual-warm", ["--hot-budget-tokens", b, "--spill-form", "residual"]),
        ("exact-residual-cold", ["--hot-budget-tokens", b, "--spill-form", "residual",
                                 "--restore-from", "cold"]),
        ("exact-kv-warm", ["--hot-budget-tokens", b, "--spill-form", "kv"]),
        ("exact-kv-cold", ["--hot-budget-tokens", b, "--spill-form", "kv",
                           "--restore-from", "cold"]),
        ("exact-tokens", ["--hot-budget-tokens", b, "--spill-form", "tokens"]),
        ("window", ["--hot-budget-tokens", b, "--evict", "window", "--spill-form", "none",
                    "--spill-between-turns=false"]),
        ("streaming", ["--hot-budget-tokens", b, "--evict", "streaming", "--spill-form", "none",
                       "--spill-between-turns=false"]),
        ("h2o", ["--hot-budget-tokens", b, "--evict", "h2o", "--spill-form", "none",
                 "--spill-between-turns=false"]),
        ("tova", ["--hot-budget-tokens", b, "--evict", "tova", "--spill-form", "none",
                  "--spill-between-turns=false"]),
        ("snapkv", ["--hot-budget-tokens", b, "--evict", "snapkv", "--spill-form", "none",
                    "--spill-between-turns=false"]),
    ]
    rows, results = [], {}
    for name, extra in configs:
        turns, wall = run_chat(args.rsd_run, args.model, script, extra, args.threads,
                               args.max_tokens)
        results[name] = turns
        for t in turns:
            rows.append({"config": name, **{k: t.get(k) for k in (
                "turn", "token_count", "hot_bytes", "warm_bytes", "cold_bytes", "rss_bytes",
                "restored_from", "restore_seconds", "prefill_seconds", "decode_seconds",
                "token_match")}})
        match = sum(t["token_match"] for t in turns) / len(turns)
        print(f"{name:22s} mean token match {100 * match:6.1f}%  max hot "
              f"{max(t['hot_bytes'] for t in turns) / 2**20:7.2f} MiB  max RSS "
              f"{max(t['rss_bytes'] for t in turns) / 2**20:7.1f} MiB  wall {wall:6.1f}s")
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {args.out}")
    print("\nrestore throughput (tokens restored per second, turns 2-20, median):")
    for name in ("exact-residual-warm", "exact-residual-cold", "exact-kv-warm", "exact-kv-cold",
                 "exact-tokens"):
        rates = sorted(results[name][i - 1]["token_count"] / max(results[name][i]["restore_seconds"], 1e-9)
                       for i in range(1, len(results[name])))
        print(f"  {name:22s} {rates[len(rates) // 2]:12.0f} tok/s")
    try:
        import llama_cpp  # noqa: PLC0415
        n = results["unbounded"][-1]["token_count"]
        llm = llama_cpp.Llama(args.model, n_ctx=n + 16, n_batch=512, n_threads=args.threads,
                              verbose=False)
        toks = [100 + (i * 7919) % 49000 for i in range(n)]
        t0 = time.perf_counter()
        llm.eval(toks)
        print(f"  {'llama.cpp prefill':22s} {n / (time.perf_counter() - t0):12.0f} tok/s "
              f"({n} tokens)")
    except ImportError:
        print("  (llama-cpp-python not importable: no llama.cpp prefill figure)")
    try:
        import matplotlib  # noqa: PLC0415
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        for name, turns in results.items():
            ax[0].plot([t["turn"] for t in turns], [t["hot_bytes"] / 2**20 for t in turns],
                       label=name)
            ax[1].plot([t["turn"] for t in turns], [t["rss_bytes"] / 2**20 for t in turns],
                       label=name)
        ax[0].set_title("hot K/V at turn end (MiB)")
        ax[1].set_title("process RSS (MiB)")
        ax[0].set_xlabel("turn")
        ax[1].set_xlabel("turn")
        ax[1].legend(fontsize=7)
        png = os.path.splitext(args.out)[0] + ".png"
        fig.savefig(png, dpi=100, bbox_inches="tight")
        print(f"wrote {png}")
    except ImportError:
        print("(matplotlib not importable: no plot)", file=sys.stderr)


if __name__ == "__main__":
    main()
