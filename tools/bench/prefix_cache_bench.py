#!/usr/bin/env python3
"""Prefix caching against llama-server's prompt cache (issue #15; printed, not asserted).

16 stateless OpenAI chat requests, one after another, share a system prompt of about 1,100 tokens
and differ in the question; each asks for one token, so its latency is its time to first token.
The same requests go to three servers in turn, each fresh, on the same model and threads:

  rsd            rsd-router + one rsd-worker (prefix reuse: a closed request's prompt blocks stay
                 as a donor for the next, shared)
  rsd-no-reuse   the same with --prefix-reuse=false
  llama-server   llama.cpp's server built natively, --parallel 16, its default prompt cache (a
                 request goes to the slot whose cached prompt shares the most with it)

Printed per server: the first request's latency, the p50 of the other 15, the prompt tokens each
reports as cached, and the K/V memory: ours from the worker's /metrics (hot bytes in use, and what
sharing saves), llama-server's from its log (its cache is allocated whole at start).

    build/pyenv/bin/python tools/bench/prefix_cache_bench.py [--threads 2] [--llama-flags=--no-repack]
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


def system_prompt():
    lines = ["You are a careful assistant. Follow these rules."]
    i = 1
    while sum(len(x) for x in lines) < 4400:
        lines.append(f"Rule {i}: answer question {i * 7 % 13} only after checking fact "
                     f"{i * 11 % 17} twice.")
        i += 1
    return "\n".join(lines)


def post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=300).read())


def wait_http(port, path, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2).read()
            return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"nothing answers on port {port}{path}")


def run_requests(port, model, n):
    system = system_prompt()
    out = []
    for i in range(n):
        body = {"model": model, "max_tokens": 1, "temperature": 0,
                "messages": [{"role": "system", "content": system},
                             {"role": "user", "content": f"Which rule mentions fact {i}?"}]}
        t0 = time.time()
        r = post(port, body)
        took = time.time() - t0
        usage = r.get("usage", {})
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        if cached is None and "timings" in r:  # llama-server
            cached = r["timings"].get("cache_n", 0)
        out.append((took, usage.get("prompt_tokens", 0), cached or 0))
    return out


def metric(port, name, **labels):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            got = ",".join(sorted(line[len(name) + 1:line.index("}")].split(",")))
            if got == want:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--servers", default="rsd,rsd-no-reuse,llama-server")
    ap.add_argument("--port", type=int, default=52151)
    ap.add_argument("--llama-server", default=None, help="built by build-llama-server.sh if unset")
    ap.add_argument("--rsd-flags", default="", help="extra rsd-worker flags")
    ap.add_argument("--llama-flags", default=os.environ.get("RSD_LLAMA_FLAGS", ""),
                    help='extra llama-server flags (on a CPU with AMX: "--no-repack")')
    args = ap.parse_args()
    llama = args.llama_server or subprocess.run(
        [os.path.join(ROOT, "tools", "bench", "build-llama-server.sh")], check=True,
        capture_output=True, text=True).stdout.strip().splitlines()[-1]
    tmp = tempfile.mkdtemp(prefix="rsd-prefix-cache-bench-")
    results = {}
    try:
        for name in args.servers.split(","):
            procs = []
            log = open(os.path.join(tmp, name + ".log"), "w")
            port = args.port
            try:
                if name.startswith("rsd"):
                    procs.append(subprocess.Popen(
                        [f"{args.build}/router/rsd-router", "--listen", f"127.0.0.1:{port}",
                         "--http-listen", f"127.0.0.1:{port + 1}", "--data-dir",
                         os.path.join(tmp, name, "router")], stdout=log, stderr=log))
                    procs.append(subprocess.Popen(
                        [f"{args.build}/worker/rsd-worker", "--model", args.model, "--id", "w1",
                         "--listen", f"127.0.0.1:{port + 2}", "--router", f"127.0.0.1:{port}",
                         "--http-listen", f"127.0.0.1:{port + 3}", "--threads", str(args.threads),
                         "--data-dir", os.path.join(tmp, name, "w1"), "--hot-bytes", str(2 << 30),
                         f"--prefix-reuse={'false' if name == 'rsd-no-reuse' else 'true'}",
                         *args.rsd_flags.split()],
                        stdout=log, stderr=log))
                    http, model = port + 1, ""
                    deadline = time.time() + 120
                    while time.time() < deadline:
                        try:
                            models = json.loads(urllib.request.urlopen(
                                f"http://127.0.0.1:{http}/v1/models", timeout=2).read())["data"]
                            if models:
                                model = models[0]["id"]
                                break
                        except Exception:
                            pass
                        time.sleep(0.2)
                else:
                    procs.append(subprocess.Popen(
                        [llama, "-m", args.model, "--host", "127.0.0.1", "--port", str(port),
                         "--threads", str(args.threads), "--threads-batch", str(args.threads),
                         "--parallel", "16", "-c", str(16 * 2048), "--cont-batching", "--jinja",
                         "--no-webui", *args.llama_flags.split()], stdout=log, stderr=log))
                    http, model = port, "m"
                    wait_http(http, "/health")
                runs = run_requests(http, model, args.requests)
                row = {"first": runs[0][0], "rest_p50": statistics.median(r[0] for r in runs[1:]),
                       "prompt": runs[0][1], "cached": statistics.median(r[2] for r in runs[1:])}
                if name.startswith("rsd"):
                    row["kv_used"] = metric(port + 3, "rsd_worker_state_bytes", tier="hot",
                                            kind="used")
                    row["kv_saved"] = metric(port + 3, "rsd_worker_state_bytes", tier="hot",
                                             kind="saved")
                results[name] = row
            finally:
                stop(procs)
                log.close()
        # llama-server allocates its whole cache at start: -c tokens of F16 K/V, the same bytes a
        # token as our pool (rsd-run info).
        info = json.loads(subprocess.run([f"{args.build}/tools/rsd-run", "info", "--model",
                                          args.model], check=True, capture_output=True,
                                         text=True).stdout)
        if "llama-server" in results:
            results["llama-server"]["kv_used"] = 16 * 2048 * info["bytes_per_token"]["kv"]
        print(f"{args.requests} stateless chat requests, one after another, sharing a system "
              f"prompt ({results['rsd']['prompt']} prompt tokens each), 1 token each, "
              f"{args.threads} thread(s):")
        print(f"{'server':14} {'first':>8} {'others p50':>11} {'cached p50':>11} {'K/V memory':>24}")
        for name, r in results.items():
            mem = f"{r['kv_used'] / (1 << 20):.1f} MiB"
            if name == "llama-server":
                mem += " (allocated)"
            elif r.get("kv_saved"):
                mem += f" (saves {r['kv_saved'] / (1 << 20):.1f})"
            print(f"{name:14} {r['first']:7.3f}s {r['rest_p50']:10.3f}s {r['cached']:11.0f} "
                  f"{mem:>24}")
        base = results["rsd"]["rest_p50"] if "rsd" in results else 0
        for other in ("rsd-no-reuse", "llama-server"):
            if base > 0 and other in results:
                print(f"TTFT of the others, {other} / rsd: {results[other]['rest_p50'] / base:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
