#!/usr/bin/env python3
"""Deduplicated migration (issue #15; printed, not asserted).

A router and two workers on one model. A session whose first message starts with a shared document
(about --doc-tokens tokens) runs two turns on w1; another session of the same tenant that read the
same document runs on w2. The session then moves w1 -> w2 (w2 holds the document's chunks: only the
rest travels) and back w2 -> w1 (w1 holds nothing of it now: everything travels), in the same form,
with the same history. Printed per move: the payload and wire bytes, the tokens the target already
held, and the time, as `rsdctl migrate -o json` reports them; then the ratio.

    build/pyenv/bin/python tools/bench/dedup_migration_bench.py [--form residual] [--doc-tokens 1000]
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

from bench_procs import stop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def document(tokens):
    lines, i = [], 1
    while sum(len(x) for x in lines) < tokens * 2.6:  # about 2.6 characters a token here
        lines.append(f"Clause {i}: the tenant may store item {i * 7 % 13} only in room "
                     f"{i * 11 % 17}.")
        i += 1
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--form", default="residual", help="residual, kv or auto")
    ap.add_argument("--doc-tokens", type=int, default=1000)
    ap.add_argument("--port", type=int, default=52251)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="rsd-dedup-migration-bench-")
    router = f"127.0.0.1:{args.port}"
    procs = []

    def ctl(*argv):
        out = subprocess.run([f"{args.build}/tools/rsdctl", "--router", router, "-o", "json",
                              *argv], check=True, capture_output=True, text=True).stdout
        return json.loads(out) if out.strip() else None

    try:
        log = open(os.path.join(tmp, "cluster.log"), "w")
        procs.append(subprocess.Popen([f"{args.build}/router/rsd-router", "--listen", router,
                                       "--data-dir", os.path.join(tmp, "router")],
                                      stdout=log, stderr=log))
        for i, w in enumerate(("w1", "w2")):
            procs.append(subprocess.Popen(
                [f"{args.build}/worker/rsd-worker", "--model", args.model, "--id", w, "--listen",
                 f"127.0.0.1:{args.port + 1 + i}", "--router", router, "--threads", "1",
                 "--data-dir", os.path.join(tmp, w)], stdout=log, stderr=log))
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if sum(w["state"] == "ready" for w in ctl("workers")["workers"]) == 2:
                    break
            except (subprocess.CalledProcessError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.3)
        doc = document(args.doc_tokens)

        def session_on(worker, other, messages):
            ctl("cordon", other)
            sid = ctl("create")["session"]
            ctl("uncordon", other)
            for m in messages:
                ctl("chat", "--session", sid, "--message", m, "--max-tokens", "8")
            return sid

        session_on("w2", "w1", [doc + "\nQuestion: which room holds item 3?"])
        sid = session_on("w1", "w2", [doc + "\nQuestion: which room holds item 5?", "Why?"])
        moves = {}
        for name, to in (("to a worker holding the document", "w2"),
                         ("to a worker holding nothing", "w1")):
            moves[name] = ctl("migrate", sid, "--to", to, "--form", args.form)
        history = ctl("describe", sid)["token_count"]
        print(f"migrating one session of {history} tokens ({args.form}) whose first message starts "
              f"with a document another session on w2 read:")
        print(f"{'move':34} {'payload':>12} {'wire':>12} {'held tokens':>12} {'seconds':>8}")
        for name, m in moves.items():
            print(f"{name:34} {m['bytes']['payload']:>12} {m['bytes']['wire']:>12} "
                  f"{m['shared_tokens']:>12} {m['seconds']:8.3f}")
        a, b = moves.values()
        if a["bytes"]["wire"] > 0:
            print(f"wire bytes, whole / deduplicated: {b['bytes']['wire'] / a['bytes']['wire']:.1f}x")
    finally:
        stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
