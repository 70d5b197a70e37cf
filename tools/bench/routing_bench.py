#!/usr/bin/env python3
"""Cache-aware routing hit rate (issue #15; printed, not asserted).

A router and two workers on one model; 16 stateless OpenAI chat requests, one after another, each
starting with one of 4 system prompts (4 rounds, the prompts in another order each round). A
request is a hit when the worker it landed on started from blocks it already held for its prompt
(`usage.prompt_tokens_details.cached_tokens` > 0: the worker's own report). Every request after
the first of its prompt could be a hit. Run twice, each cluster fresh: with the router's
cache-aware placement (`--prefix-routing`, the default) and by load alone
(`--prefix-routing=false`). Printed: the hit rate and the time to first token (p50) of each.

    build/pyenv/bin/python tools/bench/routing_bench.py [--threads 1]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request

from bench_procs import stop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def system_prompt(p):
    rules = [f"Rule {p}.{i}: answer topic {(i * 7 + p) % 13} only after checking source "
             f"{(i * 11 + p) % 17}." for i in range(1, 25)]
    return f"You are assistant number {p}. House rules:\n" + "\n".join(rules)


def post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=300).read())


def run(args, tmp, prefix_routing):
    port = args.port
    procs, log = [], open(os.path.join(tmp, f"cluster-{prefix_routing}.log"), "w")
    try:
        procs.append(subprocess.Popen(
            [f"{args.build}/router/rsd-router", "--listen", f"127.0.0.1:{port}", "--http-listen",
             f"127.0.0.1:{port + 1}", "--data-dir", os.path.join(tmp, f"router-{prefix_routing}"),
             f"--prefix-routing={'true' if prefix_routing else 'false'}"], stdout=log, stderr=log))
        for i, w in enumerate(("w1", "w2")):
            procs.append(subprocess.Popen(
                [f"{args.build}/worker/rsd-worker", "--model", args.model, "--id", w,
                 "--listen", f"127.0.0.1:{port + 2 + i}", "--router", f"127.0.0.1:{port}",
                 "--threads", str(args.threads),
                 "--data-dir", os.path.join(tmp, f"{w}-{prefix_routing}")], stdout=log, stderr=log))
        model, deadline = "", time.time() + 120
        while time.time() < deadline and not model:
            try:
                models = json.loads(urllib.request.urlopen(
                    f"http://127.0.0.1:{port + 1}/v1/models", timeout=2).read())["data"]
                model = models[0]["id"] if models else ""
            except Exception:
                pass
            time.sleep(0.3)
        time.sleep(3)  # both workers registered and heartbeating
        seen, hits, chances, ttft = set(), 0, 0, []
        for rnd in range(4):
            for k in range(4):
                p = (k * (rnd + 1) + rnd) % 4
                body = {"model": model, "max_tokens": 1, "temperature": 0,
                        "messages": [{"role": "system", "content": system_prompt(p)},
                                     {"role": "user", "content": f"Round {rnd}: topic {k}?"}]}
                t0 = time.time()
                r = post(port + 1, body)
                ttft.append(time.time() - t0)
                cached = (r.get("usage", {}).get("prompt_tokens_details") or {}).get(
                    "cached_tokens", 0)
                if p in seen:
                    chances += 1
                    hits += cached > 0
                seen.add(p)
                time.sleep(1.2)  # a heartbeat carries the new prefix keys to the router
        return hits / chances, statistics.median(ttft)
    finally:
        stop(procs)
        log.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--port", type=int, default=52351)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="rsd-routing-bench-")
    try:
        on = run(args, tmp, True)
        off = run(args, tmp, False)
        print("16 stateless requests of 4 system prompts on 2 workers, one after another:")
        print(f"{'placement':28} {'hit rate':>9} {'TTFT p50':>9}")
        print(f"{'cache-aware (--prefix-routing)':28} {100 * on[0]:8.0f}% {on[1]:8.3f}s")
        print(f"{'by load alone':28} {100 * off[0]:8.0f}% {off[1]:8.3f}s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
