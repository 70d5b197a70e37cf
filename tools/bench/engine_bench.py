#!/usr/bin/env python3
"""Engine benchmark: rsd-run against llama.cpp built natively, side by side, with ratios.

Both engines run the same GGUF with the same thread counts, interleaved in one run (build
machines are shared and noisy: ours, the peer, ours again, keeping our better run). Figures:
prefill of each --prompts length, decode of one sequence after the first prompt, and batched
decode (tokens/s of B sequences stepping together, and the time of one step) for each --batches,
and restoring a --restore-tokens sequence from host checkpoints against re-prefilling it (both
ours: there the llama_cpp column holds our re-prefill rate).

The peer is llama.cpp's own llama-bench and llama-batched-bench, built natively (GGML_NATIVE=ON,
what its users run) from the llama-cpp-python sdist's sources by build-llama-server.sh:

    python3 tools/bench/engine_bench.py --out tools/bench/results/engine

writes engine.csv (one row per figure) and, where matplotlib is importable, engine.png (step time
against rows for both engines). --no-peer prints ours alone.
"""
import argparse
import csv
import json
import os
import subprocess
import sys


def run_json(cmd):
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def ours(rsd_run, model, threads, prompt, decode, batches, repeats, restore=False):
    row = run_json([rsd_run, "bench", "--model", model, "--threads-list", str(threads),
                    "--bench-prompt-tokens", str(prompt), "--bench-decode-tokens", str(decode),
                    "--batch-list", ",".join(str(b) for b in batches),
                    "--bench-repeats", str(repeats), "--json"]
                   + (["--bench-restore"] if restore else []))[0]
    if restore:
        return row["prefill_tokens_per_second"], row["restore_tokens_per_second"]
    by_batch = {int(b): v for b, v in row.get("decode_batch_tokens_per_second", {}).items()}
    by_batch[1] = row["decode_tokens_per_second"]
    return row["prefill_tokens_per_second"], by_batch


def peer_single(bindir, model, threads, prompt, decode, repeats, repack):
    bench = [os.path.join(bindir, "llama-bench"), "-m", model, "-t", str(threads),
             "-r", str(repeats), "-o", "json", "--repack", "1" if repack else "0"]
    prefill = run_json(bench + ["-p", str(prompt), "-n", "0"])[0]["avg_ts"]
    # Decode after the prompt: llama-bench's generation test at a depth of `prompt` tokens.
    dec = run_json(bench + ["-p", "0", "-n", str(decode), "-d", str(prompt)])[0]["avg_ts"]
    return prefill, dec


def peer_batched(bindir, model, threads, prompt, decode, batches, repack):
    ctx = max(batches) * (prompt + decode) + 256
    out = subprocess.run([os.path.join(bindir, "llama-batched-bench"), "-m", model,
                          "-t", str(threads), "-tb", str(threads), "-c", str(ctx),
                          "-b", "2048", "-ub", "512", "-npp", str(prompt), "-ntg", str(decode),
                          "-npl", ",".join(str(b) for b in batches), "--output-format", "jsonl"]
                         + ([] if repack else ["--no-repack"]),
                         check=True, capture_output=True, text=True).stdout
    res = {}
    for line in out.splitlines():
        if line.startswith("{") and '"speed_tg"' in line:
            r = json.loads(line)
            res[int(r["pl"])] = r["speed_tg"]
    return res


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rsd-run", default=os.path.join(root, "build", "tools", "rsd-run"))
    ap.add_argument("--model", default=os.path.join(root, "models",
                                                    "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--prompts", default="128,512", help="prefill lengths (the first also "
                    "precedes decode)")
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--batches", default="1,2,4,8,16,32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--restore-tokens", type=int, default=2000,
                    help="also restore a sequence this long from host checkpoints (kv: copied, "
                    "residual: K/V rebuilt) and compare with re-prefilling it; 0: skip")
    ap.add_argument("--out", default="", help="path prefix for .csv and .png")
    ap.add_argument("--append", action="store_true", help="add to an existing CSV")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--peer-no-repack", action="store_true",
                    help="run llama.cpp without its repacked weight layouts (--repack 0 / "
                    "--no-repack), which also turns off its AMX kernels: on a CPU with AMX, "
                    "llama.cpp 0.3.36's AMX matmul crashes on SmolLM2 Q4_1 (SIGSEGV in "
                    "ggml_backend_amx_mul_mat, llama.cpp issue 20824)")
    args = ap.parse_args()

    def counts(flag, text):
        try:
            out = [int(x) for x in text.split(",")]
        except ValueError:
            out = []
        if not out or min(out) < 1:
            ap.error(f"{flag}: expected a comma-separated list of whole numbers >= 1, got {text!r}")
        return out

    prompts = counts("--prompts", args.prompts)
    batches = counts("--batches", args.batches)
    threads = counts("--threads", args.threads)
    if not os.path.exists(args.model):
        ap.error(f"--model: no such file {args.model!r}")
    bindir = None
    if not args.no_peer:
        server = subprocess.run([os.path.join(root, "tools", "bench", "build-llama-server.sh")],
                                check=True, capture_output=True, text=True).stdout.split()[-1]
        bindir = os.path.dirname(server)
    print(f"model {os.path.basename(args.model)}; decode {args.decode_tokens} tokens after "
          f"{prompts[0]}; best of {args.repeats}; peer: "
          f"{'llama.cpp (native build) ' + bindir if bindir else 'none'}")
    rows = []
    fields = ["threads", "figure", "x", "context", "unit", "rsd", "llama_cpp", "ratio"]
    if args.out and not (args.append and os.path.exists(args.out + ".csv")):
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out + ".csv", "w", newline="") as f:
            csv.DictWriter(f, fieldnames=fields).writeheader()

    def emit(threads, figure, x, ours_v, peer_v, unit="tok/s", context=0):
        ratio = ours_v / peer_v if peer_v else None
        rows.append({"threads": threads, "figure": figure, "x": x, "context": context,
                     "unit": unit, "rsd": round(ours_v, 2),
                     "llama_cpp": round(peer_v, 2) if peer_v else "",
                     "ratio": round(ratio, 3) if ratio else ""})
        if args.out:  # row by row, so an interrupted run keeps what it measured
            with open(args.out + ".csv", "a", newline="") as f:
                csv.DictWriter(f, fieldnames=fields).writerow(rows[-1])
        print(f"  t={threads} {figure:<16} {x:>6}  rsd {ours_v:>9.1f}  llama.cpp "
              f"{peer_v if peer_v else float('nan'):>9.1f}  ratio "
              f"{ratio if ratio else float('nan'):.2f}")

    for t in threads:
        for i, p in enumerate(prompts):
            bl = batches if i == 0 else [1]
            p1, b1 = ours(args.rsd_run, args.model, t, p, args.decode_tokens, bl, args.repeats)
            lp = ld = None
            lb = {}
            if bindir:
                repack = not args.peer_no_repack
                lp, ld = peer_single(bindir, args.model, t, p, args.decode_tokens, args.repeats,
                                     repack)
                if i == 0 and len(bl) > 1:
                    lb = peer_batched(bindir, args.model, t, p, args.decode_tokens, bl, repack)
            p2, b2 = ours(args.rsd_run, args.model, t, p, args.decode_tokens, bl, args.repeats)
            emit(t, "prefill", p, max(p1, p2), lp)
            if i != 0:
                continue
            best = {b: max(b1[b], b2[b]) for b in bl}
            emit(t, "decode", 1, best[1], ld, context=p)
            for b in bl:
                if b == 1:
                    continue
                emit(t, "batched_decode", b, best[b], lb.get(b), context=p)
            for b in bl:  # one step's time in ms: rows / (tokens/s)
                peer_ms = 1000.0 * b / lb[b] if b in lb else (1000.0 / ld if b == 1 and ld
                                                              else None)
                emit(t, "step_ms", b, 1000.0 * b / best[b], peer_ms, "ms", context=p)
        if args.restore_tokens:
            n = args.restore_tokens
            prefill, restore = ours(args.rsd_run, args.model, t, n, 1, [1], 1, restore=True)
            for form in ("kv", "residual"):
                # Both sides are ours: the peer column holds re-prefilling the same tokens.
                emit(t, f"restore_{form}", n, restore[form], prefill)
    if args.out:
        with open(args.out + ".csv", newline="") as f:
            plot(list(csv.DictReader(f)), args.out + ".png")


def plot(rows, path):
    try:
        import matplotlib  # noqa: PLC0415
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("(matplotlib not importable: no plot)", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for t in sorted({r["threads"] for r in rows}):
        pts = [r for r in rows if r["threads"] == t and r["figure"] == "step_ms"
               and int(r["x"]) > 0]
        pts = [r for r in pts if r["context"] == pts[0]["context"]] if pts else []
        if not pts:
            continue
        xs = [int(r["x"]) for r in pts]
        ax.plot(xs, [float(r["rsd"]) for r in pts], "o-", label=f"rsd, {t} threads")
        peer = [r for r in pts if r["llama_cpp"] != ""]
        if peer:
            ax.plot([int(r["x"]) for r in peer], [float(r["llama_cpp"]) for r in peer], "s--",
                    label=f"llama.cpp, {t} threads")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rows in one decode step (sequences)")
    ax.set_ylabel("step time, ms")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
