#!/usr/bin/env bash
# The serving benchmark: for each concurrency N, llama.cpp's llama-server (--parallel N,
# continuous batching) and our rsd-router with one rsd-worker, same model, same threads, one
# system at a time; rsd-serving-bench drives N sessions of T turns of M greedy tokens against
# each and this script prints the side-by-side table (throughput, TTFT, ITL, ratio) and writes
# the CSV. Printed, not asserted.
#
#   tools/bench/serving_bench.sh
#
# Environment (defaults in brackets):
#   RSD_BUILD_DIR        our build dir [build/]; rsd-router, rsd-worker, rsd-serving-bench are
#                        built there if missing or stale
#   RSD_BENCH_THREADS    compute threads of both servers [2]
#   RSD_BENCH_NS         concurrencies ["1 4 16 64"]
#   RSD_BENCH_TURNS      turns per session [3]; RSD_BENCH_TURNS_LARGE for N >= 64 [same]
#   RSD_BENCH_MAX_TOKENS tokens per turn [32]
#   RSD_BENCH_TEMPERATURE sampling temperature of every turn [0: greedy]; with
#                        RSD_BENCH_TOP_P [1] (seeded; llama-server gets top_k 0 and min_p 0)
#   RSD_BENCH_CTX        context per session, llama-server gets -c N*CTX [512]
#   RSD_BENCH_HOT_BYTES  our worker's hot K/V pool [2 GiB: 64 sessions x 512 tokens at up to 64 KB a token]
#   RSD_BENCH_SPILL_FORM our worker's --spill-form [residual, the worker's default; kv captures no
#                        residuals, which 64 sessions otherwise write through to RocksDB]
#   RSD_BENCH_DIRECT     1: also drive a fresh worker's own gRPC service with no router in between
#                        (rows "residuum-worker": what the router hop costs) [0]
#   RSD_BENCH_CSV        output [tools/bench/results/serving.csv]
#   RSD_LLAMA_FLAGS      extra llama-server flags [none]; on a CPU with AMX, "--no-repack" keeps
#                        llama.cpp 0.3.36 off its AMX matmul, which crashes on SmolLM2 Q4_1
#                        (SIGSEGV in ggml_backend_amx_mul_mat, llama.cpp issue 20824)
#   RSD_BENCH_PORT       first port [18080]
#   RSD_MODEL            the GGUF [tools/fetch-model.sh]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${RSD_BUILD_DIR:-$root/build}"
threads="${RSD_BENCH_THREADS:-2}"
ns="${RSD_BENCH_NS:-1 4 16 64}"
turns="${RSD_BENCH_TURNS:-3}"
turns_large="${RSD_BENCH_TURNS_LARGE:-$turns}"
max_tokens="${RSD_BENCH_MAX_TOKENS:-32}"
temperature="${RSD_BENCH_TEMPERATURE:-0}"
top_p="${RSD_BENCH_TOP_P:-1}"
ctx="${RSD_BENCH_CTX:-512}"
hot_bytes="${RSD_BENCH_HOT_BYTES:-$((2 << 30))}"
spill_form="${RSD_BENCH_SPILL_FORM:-residual}"
csv="${RSD_BENCH_CSV:-$root/tools/bench/results/serving.csv}"
port="${RSD_BENCH_PORT:-18080}"
model="${RSD_MODEL:-$("$root/tools/fetch-model.sh")}"

echo "== building llama-server (once; cached outside the repository) =="
llama_server="$("$root/tools/bench/build-llama-server.sh" | tail -n 1)"
echo "$llama_server"
echo "== building rsd-router, rsd-worker, rsd-serving-bench in $build =="
[ -f "$build/CMakeCache.txt" ] || cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" --target rsd-router rsd-worker rsd-serving-bench -j "${RSD_JOBS:-2}" \
  | tail -n 1
bench="$build/tools/rsd-serving-bench"

work="$(mktemp -d "${TMPDIR:-/tmp}/rsd-serving-bench.XXXXXX")"
# shellcheck source=processes.sh
source "$root/tools/bench/processes.sh"
start_ours() {  # name suffix: a router and one worker, fresh data directories
  start "router-$1" "$build/router/rsd-router" --listen "127.0.0.1:$((port + 1))" \
    --data-dir "$work/router-$1"
  start "worker-$1" "$build/worker/rsd-worker" --model "$model" --id worker \
    --listen "127.0.0.1:$((port + 2))" --router "127.0.0.1:$((port + 1))" \
    --data-dir "$work/worker-$1" --threads "$threads" --hot-bytes "$hot_bytes" \
    --max-running 64 --max-queue 256 --spill-form "$spill_form"
}
run_bench() {  # system, target, N, turns, log name
  if ! "$bench" --system "$1" --target "$2" --concurrency "$3" --turns "$4" \
    --max_tokens "$max_tokens" --temperature "$temperature" --top_p "$top_p" \
    --threads "$threads" --csv "$csv" >"$work/$5.out" 2>&1; then
    echo "rsd-serving-bench $1 N=$3 failed:" >&2
    tail -n 20 "$work/$5.out" "$work"/*.log >&2
  fi
  tail -n 1 "$work/$5.out"
}

mkdir -p "$(dirname "$csv")"
rm -f "$csv"
echo "== model $(basename "$model"), $threads threads, N in ($ns), $turns turns" \
  "($turns_large at N >= 64) of $max_tokens tokens, temperature $temperature, top_p $top_p =="
for n in $ns; do
  t="$turns"
  [ "$n" -ge 64 ] && t="$turns_large"
  # llama-server: restarted per N, since --parallel is fixed at start.
  start "llama-$n" "$llama_server" -m "$model" --host 127.0.0.1 --port "$port" \
    --threads "$threads" --threads-batch "$threads" --parallel "$n" -c "$((n * ctx))" \
    --cont-batching --jinja --no-webui --cache-ram 0 ${RSD_LLAMA_FLAGS:-}
  run_bench llama "127.0.0.1:$port" "$n" "$t" "llama-$n"
  stop_all
  # Ours: a fresh router and one worker per N, the same threads.
  start_ours "$n"
  run_bench rsd "127.0.0.1:$((port + 1))" "$n" "$t" "rsd-$n"
  stop_all
  if [ "${RSD_BENCH_DIRECT:-0}" = 1 ]; then
    # Fresh ones again, the clients talking to the worker (the router only takes its registration).
    start_ours "direct-$n"
    run_bench rsd-worker "127.0.0.1:$((port + 2))" "$n" "$t" "rsd-direct-$n"
    stop_all
  fi
done
echo
"$bench" --report "$csv"
echo "CSV: $csv"
