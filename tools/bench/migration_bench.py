#!/usr/bin/env python3
"""Migration and failover benchmark (printed, not asserted).

Starts a router and two workers on loopback with the default model, builds sessions of about 1k,
4k and 8k tokens (one long user turn, then a one-token answer), and for each form (residual, kv,
auto, tokens) migrates the session to the other worker and back, measuring the bytes shipped
(payload, framing, token log, wire), the migration time, and the first turn on the target (its
restore plus one token). `kv` ships the full K/V cache: the other forms are compared with it.
Then it kills the owner of a session with kill -9 and measures failover recovery: from the kill to
the first token of a turn on the new worker (detection after --heartbeat-timeout, rebuild from the
journal's token log, re-prefill, one token).

    python3 tools/bench/migration_bench.py [--sizes 1000,4000,8000] [--threads 1]

Writes tools/bench/results/migration.csv.
"""
import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--sizes", default="1000,4000,8000")
    ap.add_argument("--forms", default="residual,kv,auto,tokens")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--port", type=int, default=51151)
    ap.add_argument("--heartbeat-timeout", type=float, default=2.0)
    ap.add_argument("--csv", default=os.path.join(ROOT, "tools", "bench", "results", "migration.csv"))
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="rsd-migration-bench-")
    router = f"127.0.0.1:{args.port}"
    procs = {}

    def start(name, argv):
        log = open(os.path.join(tmp, name + ".log"), "w")
        procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def start_worker(i):
        start(f"w{i}", [f"{args.build}/worker/rsd-worker", "--model", args.model, "--id", f"w{i}",
                        "--listen", f"127.0.0.1:{args.port + i}", "--router", router,
                        "--data-dir", os.path.join(tmp, f"w{i}"), "--threads", str(args.threads),
                        "--hot-bytes", str(2 << 30), "--warm-bytes", str(1 << 30)])

    def ctl(*a, check=True):
        r = subprocess.run([f"{args.build}/tools/rsdctl", "--router", router, "-o", "json", *a],
                           capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"rsdctl {' '.join(a[:3])}: {r.stderr.strip()}")
        return json.loads(r.stdout) if r.stdout.strip() else None

    def wait_workers(n):
        for _ in range(600):
            try:
                ws = ctl("workers", check=False) or {}
                ready = [w for w in ws.get("workers", ws if isinstance(ws, list) else []) if w.get("state") == "ready"]
                if len(ready) >= n:
                    return
            except Exception:
                pass
            time.sleep(0.1)
        raise RuntimeError("workers did not register")

    rows = []
    try:
        start("router", [f"{args.build}/router/rsd-router", "--listen", router, "--data-dir",
                         os.path.join(tmp, "router"), "--heartbeat-timeout", str(args.heartbeat_timeout)])
        start_worker(1)
        start_worker(2)
        wait_workers(2)
        print(f"{'tokens':>6} {'form':>8} {'payload':>12} {'framing':>9} {'token log':>9} "
              f"{'wire':>12} {'vs kv':>6} {'migrate s':>9} {'1st turn s':>10}")
        for size in [int(s) for s in args.sizes.split(",")]:
            sess = ctl("create")
            sid, owner = sess["session"], sess["worker"]
            # About `size` tokens of history: one long message (a word is about one token).
            words = " ".join(["apple", "river", "stone", "cloud", "green"] * (size // 5))
            ctl("chat", "--session", sid, "--message", words[: size * 6], "--max-tokens", "1")
            history = ctl("describe", sid)["token_count"]
            kv_wire = None
            for form in args.forms.split(","):
                target = "w2" if owner == "w1" else "w1"
                t0 = time.time()
                m = ctl("migrate", sid, "--to", target, "--form", form)
                wall = time.time() - t0
                owner = target
                t0 = time.time()
                ctl("chat", "--session", sid, "--message", "Hi", "--max-tokens", "1", "--seed", "1")
                first = time.time() - t0
                b = m["bytes"]
                if form == "kv":
                    kv_wire = b["wire"]
                row = dict(tokens=history, form=form, payload_bytes=b["payload"],
                           framing_bytes=b["framing"], token_bytes=b["tokens"],
                           wire_bytes=b["wire"], migrate_seconds=round(m.get("seconds", wall), 4),
                           first_turn_seconds=round(first, 3))
                rows.append(row)
                history = ctl("describe", sid)["token_count"]
            mine = rows[-len(args.forms.split(",")):]
            for row in mine:
                row["vs_kv"] = round(row["wire_bytes"] / kv_wire, 4) if kv_wire else 0
            for row in mine:
                print(f"{row['tokens']:>6} {row['form']:>8} {row['payload_bytes']:>12,} "
                      f"{row['framing_bytes']:>9,} {row['token_bytes']:>9,} {row['wire_bytes']:>12,} "
                      f"{row.get('vs_kv', 0):>6.3f} {row['migrate_seconds']:>9.3f} {row['first_turn_seconds']:>10.3f}")
        # Failover recovery: kill -9 the owner of a ~1k-token session.
        sess = ctl("create")
        sid, owner = sess["session"], sess["worker"]
        words = " ".join(["apple", "river", "stone", "cloud", "green"] * 200)
        ctl("chat", "--session", sid, "--message", words, "--max-tokens", "1")
        history = ctl("describe", sid)["token_count"]
        procs[owner].send_signal(signal.SIGKILL)
        procs[owner].wait()
        t0 = time.time()
        r = ctl("chat", "--session", sid, "--message", "Hi", "--max-tokens", "1", "--seed", "1")
        recovery = time.time() - t0
        inside = r.get("queue_seconds", 0) + r.get("prefill_seconds", 0)
        print(f"\nfailover: {history}-token session, kill -9 of {owner} -> first token on "
              f"{r['worker']} after {recovery:.2f} s: {recovery - inside:.2f} s to detect (heartbeat "
              f"timeout {args.heartbeat_timeout} s) and re-place, {inside:.2f} s in the new worker "
              f"(restored from {r.get('restored_from', '?')}: re-prefill of the token log, one token)")
        rows.append(dict(tokens=history, form="failover", first_turn_seconds=round(recovery, 3)))
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(args.csv), exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        keys = ["tokens", "form", "payload_bytes", "framing_bytes", "token_bytes", "wire_bytes",
                "vs_kv", "migrate_seconds", "first_turn_seconds"]
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for row in rows:
            w.writerow({k: row.get(k, "") for k in keys})
    print(f"CSV: {os.path.relpath(args.csv, ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
