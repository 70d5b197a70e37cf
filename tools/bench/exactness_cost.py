#!/usr/bin/env python3
"""What exactness costs: the engine against itself built with its fixed reduction order relaxed.

The relaxed build (CMake option RSD_RELAXED_NUMERICS, a separate build tree used only here) fuses
the quantized matmuls' per-block multiply and add, lets the compiler contract a*b+c in scalar code,
and computes attention's softmax over batches of eight 16-key chunks (one maximum, one sum in any
order, one merge) instead of merging every chunk in key order: what an engine that does not
promise bit-identical output whatever the batch, tier or worker could do. Its numerics
fingerprint differs, so it never shares state with exact builds.

Both binaries run the same figures interleaved (exact, relaxed, exact, relaxed; best of each),
and the ratio relaxed / exact is what exactness costs (issue #12's goal: at most 1.05):

    python3 tools/bench/exactness_cost.py --rounds 3 --out tools/bench/results/exactness_cost_xeon

builds the relaxed tree (build-relaxed, rsd-run only) when it is missing or older than the
sources, and writes a CSV.
"""
import argparse
import csv
import json
import os
import subprocess


def build_relaxed(root, tree):
    if not os.path.exists(os.path.join(tree, "CMakeCache.txt")):
        subprocess.run(["cmake", "-S", root, "-B", tree, "-G", "Ninja",
                        "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DRSD_RELAXED_NUMERICS=ON",
                        "-DRSD_BUILD_TESTS=OFF", "-DRSD_BUILD_BENCH=OFF"], check=True)
    subprocess.run(["cmake", "--build", tree, "--target", "rsd-run", "-j2"], check=True)
    return os.path.join(tree, "tools", "rsd-run")


def bench(rsd_run, model, threads, prompt, decode, batches, repeats):
    out = subprocess.run([rsd_run, "bench", "--model", model, "--threads-list", str(threads),
                          "--bench-prompt-tokens", str(prompt), "--bench-decode-tokens",
                          str(decode), "--batch-list", ",".join(str(b) for b in batches),
                          "--bench-repeats", str(repeats), "--json"],
                         check=True, capture_output=True, text=True).stdout
    row = json.loads(out)[0]
    figures = {f"prefill {prompt}": row["prefill_tokens_per_second"],
               f"decode after {prompt}": row["decode_tokens_per_second"]}
    for b, v in row.get("decode_batch_tokens_per_second", {}).items():
        figures[f"decode {b} rows after {prompt}"] = v
    return figures


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rsd-run", default=os.path.join(root, "build", "tools", "rsd-run"))
    ap.add_argument("--relaxed-tree", default=os.path.join(root, "build-relaxed"))
    ap.add_argument("--model", default=os.path.join(root, "models",
                                                    "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--long-prompt", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=2, help="exact/relaxed alternations")
    ap.add_argument("--out", default="", help="path prefix for the .csv")
    args = ap.parse_args()
    try:
        thread_counts = [int(t) for t in args.threads.split(",")]
    except ValueError:
        thread_counts = []
    if not thread_counts or min(thread_counts) < 1:
        ap.error(f"--threads: expected a comma-separated list of whole numbers >= 1, "
                 f"got {args.threads!r}")
    for flag, v in (("--decode-tokens", args.decode_tokens), ("--long-prompt", args.long_prompt),
                    ("--rounds", args.rounds)):
        if v < 1:
            ap.error(f"{flag}: expected a whole number >= 1, got {v}")
    for flag, path in (("--model", args.model), ("--rsd-run", args.rsd_run)):
        if not os.path.exists(path):
            ap.error(f"{flag}: no such file {path!r}")
    relaxed = build_relaxed(root, args.relaxed_tree)
    # (prompt, decode, batches, repeats): short prompts for decode and batching, a long one where
    # attention's order matters most.
    configs = [(128, args.decode_tokens, [1, 16], 3), (512, args.decode_tokens, [1], 3),
               (args.long_prompt, args.decode_tokens, [1], 1)]
    best = {}
    for threads in thread_counts:
        for prompt, decode, batches, repeats in configs:
            for _ in range(args.rounds):
                for name, binary in (("exact", args.rsd_run), ("relaxed", relaxed)):
                    for fig, v in bench(binary, args.model, threads, prompt, decode, batches,
                                        repeats).items():
                        key = (threads, fig)
                        best.setdefault(key, {}).setdefault(name, 0.0)
                        best[key][name] = max(best[key][name], v)
    rows = []
    print("| figure | threads | exact tok/s | relaxed tok/s | relaxed / exact |")
    print("|---|---|---|---|---|")
    for (threads, fig), v in best.items():
        ratio = v["relaxed"] / v["exact"]
        rows.append({"figure": fig, "threads": threads, "exact": round(v["exact"], 1),
                     "relaxed": round(v["relaxed"], 1), "ratio": round(ratio, 3)})
        print(f"| {fig} | {threads} | {v['exact']:.1f} | {v['relaxed']:.1f} | {ratio:.3f} |")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
