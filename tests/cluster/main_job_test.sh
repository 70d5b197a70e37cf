#!/usr/bin/env bash
# The README's main job end to end (tools/main.sh --once) on the binaries already built: a router
# and two workers start, a three-turn chat runs through the router, the script says where the
# cluster is and how to stop it, and every process it started is gone afterwards.
set -euo pipefail
root="$1"
build="$2"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
base=$(( 20000 + RANDOM % 30000 ))
out="$dir/out.txt"
RSD_SKIP_SETUP=1 RSD_BUILD_DIR="$build" RSD_CLUSTER_DIR="$dir/cluster" RSD_PORT_BASE="$base" \
  "$root/tools/main.sh" --once > "$out" 2>&1 || { cat "$out"; echo "main.sh failed"; exit 1; }
cat "$out"
fail() { echo "FAIL: $*"; exit 1; }
for n in 1 2 3; do
  grep -q "\[turn $n on worker[12]: " "$out" || fail "no committed turn $n"
done
grep -q "turns         3" "$out" || fail "describe does not show 3 turns"
grep -q "== the cluster is running ==" "$out" || fail "no cluster summary"
grep -q "rsdctl --router 127.0.0.1:$base chat --session [0-9a-f]\{32\}" "$out" || fail "no how-to-talk line"
grep -q "main.sh stop" "$out" || fail "no how-to-stop line"
grep -q '"object":"chat.completion"' "$out" || fail "no OpenAI-style answer over HTTP"
grep -q "curl http://127.0.0.1:$((base + 29))/v1/chat/completions -H 'x-rsd-session: [0-9a-f]\{32\}'" \
  "$out" || fail "no how-to-use-HTTP line"
[ ! -f "$dir/cluster/pids" ] || fail "the cluster was not stopped"
if pgrep -f "$dir/cluster" > /dev/null; then fail "processes of the cluster are still running"; fi
echo "main job OK"
