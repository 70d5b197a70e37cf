#!/usr/bin/env bash
# The container's entrypoint (k8s/entrypoint.sh) with the flags the manifests give it, run here
# without Docker: router and worker start from RSD_* variables as the ConfigMap sets them, the
# worker registers and serves, the preStop drain succeeds, and a wrong role is refused.
# Also: rsdctl -o yaml is YAML a parser reads.
# Usage: entrypoint_test.sh SOURCE_DIR BUILD_DIR MODEL PYENV_DIR
set -euo pipefail
src="$1"; build="$2"; model="$3"; pyenv="$4"
export PATH="$build/router:$build/worker:$build/tools:$PATH"
dir="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait; rm -rf "$dir"; }
trap cleanup EXIT
trap 'echo "entrypoint_test: failed at line $LINENO" >&2; tail -n 5 "$dir"/*.log >&2' ERR
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
grpc=$(port); http=$(port); wgrpc=$(port); whttp=$(port)
export RSD_ROUTER="127.0.0.1:$grpc" RSD_HEARTBEAT_TIMEOUT=5 RSD_MODEL="$model" RSD_DEVICE=cpu \
  RSD_THREADS=1 RSD_HOT_BYTES=67108864 RSD_WARM_BYTES=67108864
RSD_LISTEN="127.0.0.1:$grpc" RSD_HTTP_LISTEN="127.0.0.1:$http" RSD_DATA_DIR="$dir/data/router" \
  "$src/k8s/entrypoint.sh" router > "$dir/router.log" 2>&1 &
pids+=($!)
POD_NAME=rsd-worker-0 RSD_LISTEN="127.0.0.1:$wgrpc" RSD_ADVERTISE="127.0.0.1:$wgrpc" \
  RSD_HTTP_LISTEN="127.0.0.1:$whttp" RSD_DATA_DIR="$dir/data/worker" \
  "$src/k8s/entrypoint.sh" worker > "$dir/worker.log" 2>&1 &
pids+=($!)
# (Whole responses into variables: `curl | grep -q` fails under pipefail when grep stops early.)
models=""
for _ in $(seq 1 300); do
  models="$(curl -sf "http://127.0.0.1:$http/v1/models" || true)"
  if [[ "$models" == *SmolLM2* ]]; then break; fi
  sleep 0.2
done
[[ "$models" == *SmolLM2* ]]
health="$(curl -sf "http://127.0.0.1:$whttp/health")"
[[ "$health" == *ok* ]]
metrics="$(curl -sf "http://127.0.0.1:$whttp/metrics")"
grep -q '^rsd_worker_sessions' <<< "$metrics"
# The preStop hook: drain through the router (moving sessions is the cluster tests' business).
POD_NAME=rsd-worker-0 "$src/k8s/entrypoint.sh" drain
workers="$(rsdctl --router "127.0.0.1:$grpc" -o json workers)"
[[ "$workers" == *'"draining"'* ]]
rsdctl --router "127.0.0.1:$grpc" -o yaml workers > "$dir/workers.yaml"
"$pyenv/bin/python" - "$dir/workers.yaml" <<'PY'
import json, sys, yaml
w = yaml.safe_load(open(sys.argv[1]))["workers"][0]
assert w["id"] == "rsd-worker-0" and w["state"] == "draining", w
assert isinstance(w["load"]["hot_bytes_total"], int), w
PY
# Without POD_NAME a worker refuses to start; an unknown role is a usage error.
rc=0; env -u POD_NAME "$src/k8s/entrypoint.sh" worker 2>/dev/null || rc=$?
[ "$rc" -ne 0 ]
rc=0; "$src/k8s/entrypoint.sh" nonsense 2>/dev/null || rc=$?
[ "$rc" -eq 2 ]
echo "entrypoint: ok"
