#!/usr/bin/env bash
# A/B of two rsd-router binaries on the serving path: the same current rsd-worker and
# rsd-serving-bench, N greedy sessions of 3 turns x 32 tokens, the two routers alternating
# (A B A B ...) so that the machine's noise falls on both. Prints each run's tokens/s and the
# medians' ratio B/A. Printed, not asserted. Build the A router from another commit first, e.g.
#   git worktree add /tmp/old <commit> && cmake -S /tmp/old -B /tmp/old/build -G Ninja \
#     -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRSD_BUILD_TESTS=OFF && ninja -C /tmp/old/build rsd-router
#
#   tools/bench/router_ab.sh A_ROUTER [B_ROUTER (default: this build's)]
#
# Environment: RSD_BUILD_DIR [build/], RSD_MODEL [tools/fetch-model.sh], RSD_BENCH_N [16],
# RSD_BENCH_REPS [3], RSD_BENCH_THREADS [2], RSD_BENCH_PORT [19080].
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${RSD_BUILD_DIR:-$root/build}"
a_router="$1"
b_router="${2:-$build/router/rsd-router}"
model="${RSD_MODEL:-$("$root/tools/fetch-model.sh")}"
n="${RSD_BENCH_N:-16}"
reps="${RSD_BENCH_REPS:-3}"
threads="${RSD_BENCH_THREADS:-2}"
port="${RSD_BENCH_PORT:-19080}"
bench="$build/tools/rsd-serving-bench"
work="$(mktemp -d "${TMPDIR:-/tmp}/rsd-router-ab.XXXXXX")"
# shellcheck source=processes.sh
source "$root/tools/bench/processes.sh"
declare -A rates=([A]="" [B]="")
for rep in $(seq "$reps"); do
  for which in A B; do
    router="$a_router"
    [ "$which" = B ] && router="$b_router"
    start "router-$which-$rep" "$router" --listen "127.0.0.1:$((port + 1))" \
      --data-dir "$work/router-$which-$rep"
    start "worker-$which-$rep" "$build/worker/rsd-worker" --model "$model" --id worker \
      --listen "127.0.0.1:$((port + 2))" --router "127.0.0.1:$((port + 1))" \
      --data-dir "$work/worker-$which-$rep" --threads "$threads" --hot-bytes $((512 << 20)) \
      --max-running 64 --max-queue 256
    "$bench" --system rsd --target "127.0.0.1:$((port + 1))" --concurrency "$n" --turns 3 \
      --max_tokens 32 --threads "$threads" --csv "$work/ab.csv" >"$work/out.txt" 2>&1
    rate="$(tail -n 1 "$work/out.txt" | cut -d, -f11)"
    echo "$which run $rep: $rate tok/s"
    rates[$which]="${rates[$which]} $rate"
    stop_all
  done
done
python3 - "${rates[A]}" "${rates[B]}" <<'PY'
import statistics, sys
a = [float(x) for x in sys.argv[1].split()]
b = [float(x) for x in sys.argv[2].split()]
print(f"median A {statistics.median(a):.1f} tok/s, B {statistics.median(b):.1f} tok/s, "
      f"B/A {statistics.median(b) / statistics.median(a):.3f}")
PY
