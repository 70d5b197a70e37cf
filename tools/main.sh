#!/usr/bin/env bash
# The README's main job: installs dependencies, fetches the default model (SmolLM2-135M-Instruct,
# Q4_1), builds, starts a local cluster on loopback (rsd-router and two rsd-worker processes),
# runs a short multi-turn chat through the router with rsdctl, and prints where the cluster is,
# how to talk to it and how to stop it. The cluster keeps running afterwards.
#
#   tools/main.sh          set up, start the cluster, chat, leave it running
#   tools/main.sh --once   the same, then stop the cluster (a test runs this)
#   tools/main.sh stop     stop a cluster this script started
#
# Environment: RSD_CLUSTER_DIR (data dirs, logs, pids; default .cluster/), RSD_PORT_BASE (router
# port; workers use the next two; the router's HTTP port is base + 29, the workers' metrics ports
# base + 41 and base + 42; default 50051, so HTTP on 50080), RSD_BUILD_DIR, RSD_SKIP_SETUP=1 (no install or
# build: use the binaries already in RSD_BUILD_DIR).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${RSD_BUILD_DIR:-$root/build}"
dir="${RSD_CLUSTER_DIR:-$root/.cluster}"
base="${RSD_PORT_BASE:-50051}"
router="127.0.0.1:$base"
http="127.0.0.1:$((base + 29))"

stop_cluster() {
  if [ -f "$dir/pids" ]; then
    # Workers first, then the router; SIGTERM lets each shut down cleanly.
    tac "$dir/pids" | while read -r pid; do kill "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do
      alive=0
      while read -r pid; do kill -0 "$pid" 2>/dev/null && alive=1; done < "$dir/pids"
      [ "$alive" = 0 ] && break
      sleep 0.1
    done
    while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done < "$dir/pids"
    rm -f "$dir/pids"
    echo "cluster in $dir stopped"
  fi
}

if [ "${1:-}" = "stop" ]; then
  stop_cluster
  exit 0
fi
once=0
[ "${1:-}" = "--once" ] && once=1

if [ -z "${RSD_SKIP_SETUP:-}" ]; then
  "$root/tools/install-deps.sh"
  RSD_BUILD_DIR="$build" "$root/tools/build.sh" -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
model="$("$root/tools/fetch-model.sh")"
ctl=("$build/tools/rsdctl" --router "$router")

stop_cluster  # a cluster left by an earlier run of this script
mkdir -p "$dir"
start() {  # name, then the command; output to $dir/name.log, pid to $dir/pids
  local name="$1"
  shift
  setsid "$@" >"$dir/$name.log" 2>&1 < /dev/null &
  echo $! >> "$dir/pids"
}
start router "$build/router/rsd-router" --listen "$router" --http-listen "$http" \
  --data-dir "$dir/router"
for i in 1 2; do
  start "worker$i" "$build/worker/rsd-worker" --model "$model" --id "worker$i" \
    --listen "127.0.0.1:$((base + i))" --http-listen "127.0.0.1:$((base + 40 + i))" \
    --router "$router" --data-dir "$dir/worker$i" --threads 1
done
trap '[ "$once" = 1 ] && stop_cluster' EXIT

echo "== waiting for the workers to register =="
for _ in $(seq 600); do
  ready="$("${ctl[@]}" -o json workers 2>/dev/null | grep -o '"state": *"ready"' | wc -l || true)"
  [ "$ready" = 2 ] && break
  sleep 0.1
done
if [ "$ready" != 2 ]; then
  echo "the workers did not register; logs in $dir" >&2
  tail -n 20 "$dir"/*.log >&2
  exit 1
fi
"${ctl[@]}" workers

echo "== a multi-turn chat through the router =="
session="$("${ctl[@]}" -o json create | sed -n 's/.*"session": *"\([0-9a-f]*\)".*/\1/p')"
echo "session $session"
for message in "Hi! What is your name?" "What is the capital of France?" "Thanks, bye!"; do
  echo "> $message"
  "${ctl[@]}" chat --session "$session" --message "$message" --max-tokens 48 --seed 1
  echo
done
"${ctl[@]}" describe "$session"

echo "== the OpenAI-compatible HTTP API =="
curl -sS "http://$http/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 16}'
echo

cat <<MSG

== the cluster is running ==
router   $router   (logs, data and pids in $dir)
workers  127.0.0.1:$((base + 1)) and 127.0.0.1:$((base + 2)), model $(basename "$model")
talk     $build/tools/rsdctl --router $router chat --session $session --message "Tell me more."
         $build/tools/rsdctl --router $router create | workers | sessions | describe ID
openai   curl http://$http/v1/chat/completions -H 'x-rsd-session: $session' \\
           -d '{"messages": [{"role": "user", "content": "Tell me more."}]}'
metrics  http://$http/metrics (router), http://127.0.0.1:$((base + 41))/metrics (worker1)
stop     $( [ "$dir" = "$root/.cluster" ] || printf 'RSD_CLUSTER_DIR=%s ' "$dir")tools/main.sh stop
MSG
