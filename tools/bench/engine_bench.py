#!/usr/bin/env python3
"""Engine benchmark: prefill and decode tokens/s of rsd-run against llama.cpp, side by side.

Both engines run the same GGUF file with the same thread counts, prompt length and number of
decoded tokens, interleaved in one run (build machines are shared and noisy), and the ratios are
printed. llama.cpp comes from the PyPI package llama-cpp-python (it builds llama.cpp from source):

    python3 -m venv /tmp/llref && /tmp/llref/bin/pip install llama-cpp-python numpy
    /tmp/llref/bin/python tools/bench/engine_bench.py --rsd-run build/tools/rsd-run

Without llama-cpp-python it prints our figures alone and says so.
"""
import argparse
import json
import os
import subprocess
import sys
import time


def bench_ours(rsd_run, model, threads, n_prompt, n_decode, repeats):
    out = subprocess.run(
        [rsd_run, "bench", "--model", model, "--threads-list", str(threads),
         "--bench-prompt-tokens", str(n_prompt), "--bench-decode-tokens", str(n_decode),
         "--bench-repeats", str(repeats), "--json"],
        check=True, capture_output=True, text=True).stdout
    row = json.loads(out)[0]
    return row["prefill_tokens_per_second"], row["decode_tokens_per_second"]


def bench_llama(llama_cpp, model, threads, n_prompt, n_decode, repeats):
    llm = llama_cpp.Llama(model_path=model, n_ctx=max(512, n_prompt + n_decode + 8),
                          n_threads=threads, n_threads_batch=threads, n_batch=512,
                          verbose=False)
    vocab = llm.n_vocab()
    prompt = [100 + (i * 7919) % (vocab - 200) for i in range(n_prompt)]
    best_p, best_d = 1e30, 1e30
    for _ in range(repeats):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        t1 = time.perf_counter()
        tok = int(llm.scores[llm.n_tokens - 1].argmax())
        t2 = time.perf_counter()
        for _ in range(n_decode):
            llm.eval([tok])
            tok = int(llm.scores[llm.n_tokens - 1].argmax())
        t3 = time.perf_counter()
        best_p = min(best_p, t1 - t0)
        best_d = min(best_d, t3 - t2)
    return n_prompt / best_p, n_decode / best_d


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rsd-run", default=os.path.join(root, "build", "tools", "rsd-run"))
    ap.add_argument("--model", default=os.path.join(root, "models",
                                                    "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    try:
        import llama_cpp  # noqa: PLC0415
        version = getattr(llama_cpp, "__version__", "?")
    except ImportError:
        llama_cpp, version = None, None
        print("note: llama-cpp-python is not installed; printing rsd-run alone", file=sys.stderr)
    print(f"model {os.path.basename(args.model)}  prompt {args.prompt_tokens} tokens, "
          f"decode {args.decode_tokens} tokens, best of {args.repeats}; "
          f"peer: llama.cpp via llama-cpp-python {version}")
    print(f"{'threads':>7} {'rsd prefill':>12} {'llama prefill':>14} {'ratio':>6} "
          f"{'rsd decode':>11} {'llama decode':>13} {'ratio':>6}")
    for t in [int(x) for x in args.threads.split(",")]:
        # Interleave: ours, peer, ours again; keep our best, so neither side gets the quiet moment.
        p1, d1 = bench_ours(args.rsd_run, args.model, t, args.prompt_tokens, args.decode_tokens,
                            args.repeats)
        if llama_cpp is not None:
            lp, ld = bench_llama(llama_cpp, args.model, t, args.prompt_tokens,
                                 args.decode_tokens, args.repeats)
        p2, d2 = bench_ours(args.rsd_run, args.model, t, args.prompt_tokens, args.decode_tokens,
                            args.repeats)
        p, d = max(p1, p2), max(d1, d2)
        if llama_cpp is None:
            print(f"{t:>7} {p:>12.1f} {'-':>14} {'-':>6} {d:>11.1f} {'-':>13} {'-':>6}")
        else:
            print(f"{t:>7} {p:>12.1f} {lp:>14.1f} {p / lp:>6.2f} {d:>11.1f} {ld:>13.1f} "
                  f"{d / ld:>6.2f}")


if __name__ == "__main__":
    main()
