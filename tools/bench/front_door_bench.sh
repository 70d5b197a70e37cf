#!/usr/bin/env bash
# What the OpenAI HTTP front door costs against gRPC: one rsd-router (with --http-listen) and one
# rsd-worker, and rsd-serving-bench driving N sessions of T turns of M greedy tokens through each
# door in turn (gRPC, HTTP, gRPC, HTTP: pairs, so drift shows). Over HTTP each session is a
# server-side session (x-rsd-session): only the new message travels. Prints the table; writes
# the CSV. Printed, not asserted.
#
#   tools/bench/front_door_bench.sh
#
# Environment: RSD_BUILD_DIR [build/], RSD_BENCH_THREADS [2], RSD_BENCH_NS ["1 4 16"],
# RSD_BENCH_TURNS [3], RSD_BENCH_MAX_TOKENS [32], RSD_BENCH_PAIRS [2],
# RSD_BENCH_CSV [tools/bench/results/front_door.csv], RSD_BENCH_PORT [19051], RSD_MODEL.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${RSD_BUILD_DIR:-$root/build}"
threads="${RSD_BENCH_THREADS:-2}"
ns="${RSD_BENCH_NS:-1 4 16}"
turns="${RSD_BENCH_TURNS:-3}"
max_tokens="${RSD_BENCH_MAX_TOKENS:-32}"
pairs="${RSD_BENCH_PAIRS:-2}"
csv="${RSD_BENCH_CSV:-$root/tools/bench/results/front_door.csv}"
port="${RSD_BENCH_PORT:-19051}"
model="${RSD_MODEL:-$("$root/tools/fetch-model.sh")}"
source "$root/tools/bench/processes.sh"
cmake --build "$build" --target rsd-router rsd-worker rsd-serving-bench -j2 > /dev/null
work="$(mktemp -d)"
rm -f "$csv"
mkdir -p "$(dirname "$csv")"
start router "$build/router/rsd-router" --listen "127.0.0.1:$port" \
  --http-listen "127.0.0.1:$((port + 1))" --data-dir "$work/router"
start worker "$build/worker/rsd-worker" --model "$model" --id w1 \
  --listen "127.0.0.1:$((port + 2))" --router "127.0.0.1:$port" --data-dir "$work/w1" \
  --threads "$threads" --hot-bytes $((2 << 30))
for n in $ns; do
  for _ in $(seq "$pairs"); do
    "$build/tools/rsd-serving-bench" --system rsd --target "127.0.0.1:$port" --concurrency "$n" \
      --turns "$turns" --max_tokens "$max_tokens" --threads "$threads" --csv "$csv" > /dev/null
    "$build/tools/rsd-serving-bench" --system rsd-http --target "127.0.0.1:$((port + 1))" \
      --concurrency "$n" --turns "$turns" --max_tokens "$max_tokens" --threads "$threads" \
      --csv "$csv" > /dev/null
  done
done
echo "== every run (pairs in order) =="
cat "$csv"
echo "== the last pair side by side =="
"$build/tools/rsd-serving-bench" --report "$csv"
