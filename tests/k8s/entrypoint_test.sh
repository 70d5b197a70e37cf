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
# TLS from a mounted kubernetes.io/tls Secret and API keys, as an operator turns them on: the
# router serves TLS and requires keys, the worker registers over mutual TLS with its worker key,
# HTTPS answers a tenant's key, and the preStop drain uses the admin key.
# Each pod has its own certificate (the router's names rsd-router); the worker answers only the
# router's and its peers' (RSD_TLS_PEERS' default), which a chat through the router checks.
"$src/tests/support/make_certs.sh" "$dir/ca" rsd-worker-1 rsd-router
mkdir -p "$dir/secret" "$dir/router-secret"
cp "$dir/ca/rsd-worker-1.pem" "$dir/secret/tls.crt"
cp "$dir/ca/rsd-worker-1.key" "$dir/secret/tls.key"
cp "$dir/ca/ca.pem" "$dir/secret/ca.crt"
cp "$dir/ca/rsd-router.pem" "$dir/router-secret/tls.crt"
cp "$dir/ca/rsd-router.key" "$dir/router-secret/tls.key"
cp "$dir/ca/ca.pem" "$dir/router-secret/ca.crt"
grpc2=$(port); http2=$(port); wgrpc2=$(port); whttp2=$(port)
export RSD_TLS_DIR="$dir/secret"
RSD_TLS_DIR="$dir/router-secret" RSD_AUTH=true RSD_LISTEN="127.0.0.1:$grpc2" \
  RSD_HTTP_LISTEN="127.0.0.1:$http2" RSD_DATA_DIR="$dir/data/router2" \
  "$src/k8s/entrypoint.sh" router > "$dir/router2.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$dir/data/router2/admin.key" ] && break; sleep 0.1; done
tls=(--router "127.0.0.1:$grpc2" --tls-ca "$dir/secret/ca.crt")
admin=(--api-key-file "$dir/data/router2/admin.key")
worker_key="$(rsdctl "${tls[@]}" "${admin[@]}" -o json keys create --worker |
  "$pyenv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["key"])')"
tenant_key="$(rsdctl "${tls[@]}" "${admin[@]}" -o json keys create --tenant acme |
  "$pyenv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["key"])')"
# The keys as overlays/secure mounts them: files from Secrets.
mkdir -p "$dir/keys"
printf '%s' "$worker_key" > "$dir/keys/worker"
cp "$dir/data/router2/admin.key" "$dir/keys/admin"
RSD_ROUTER="127.0.0.1:$grpc2" RSD_API_KEY_FILE="$dir/keys/worker" POD_NAME=rsd-worker-1 \
  RSD_LISTEN="127.0.0.1:$wgrpc2" RSD_ADVERTISE="127.0.0.1:$wgrpc2" \
  RSD_HTTP_LISTEN="127.0.0.1:$whttp2" RSD_DATA_DIR="$dir/data/worker2" \
  "$src/k8s/entrypoint.sh" worker > "$dir/worker2.log" 2>&1 &
pids+=($!)
workers=""
for _ in $(seq 1 300); do
  workers="$(rsdctl "${tls[@]}" "${admin[@]}" -o json workers || true)"
  if [[ "$workers" == *rsd-worker-1* ]]; then break; fi
  sleep 0.2
done
[[ "$workers" == *'"ready"'* ]]
models="$(curl -sf --cacert "$dir/secret/ca.crt" -H "Authorization: Bearer $tenant_key" \
  "https://127.0.0.1:$http2/v1/models")"
[[ "$models" == *SmolLM2* ]]
rc=0; curl -sf --cacert "$dir/secret/ca.crt" "https://127.0.0.1:$http2/v1/models" || rc=$?
[ "$rc" -ne 0 ]  # no key: 401
reply="$(curl -sf --cacert "$dir/secret/ca.crt" -H "Authorization: Bearer $tenant_key" \
  -H 'Content-Type: application/json' "https://127.0.0.1:$http2/v1/chat/completions" \
  -d '{"model": "", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}')"
[[ "$reply" == *'"choices"'* ]]
grep -q "answers only certificates naming" "$dir/worker2.log"
# What overlays/secure's probes ask: the router's /health over HTTPS without a key (kubelet does
# not verify the certificate: -k), a worker's on its plaintext metrics port.
curl -sfk "https://127.0.0.1:$http2/health" > /dev/null
curl -sf "http://127.0.0.1:$whttp2/health" > /dev/null
RSD_ROUTER="127.0.0.1:$grpc2" RSD_ADMIN_API_KEY_FILE="$dir/keys/admin" \
  POD_NAME=rsd-worker-1 "$src/k8s/entrypoint.sh" drain
workers="$(rsdctl "${tls[@]}" "${admin[@]}" -o json workers)"
[[ "$workers" == *'"draining"'* ]]
unset RSD_TLS_DIR
# Without POD_NAME a worker refuses to start; an unknown role is a usage error.
rc=0; env -u POD_NAME "$src/k8s/entrypoint.sh" worker 2>/dev/null || rc=$?
[ "$rc" -ne 0 ]
rc=0; "$src/k8s/entrypoint.sh" nonsense 2>/dev/null || rc=$?
[ "$rc" -eq 2 ]
echo "entrypoint: ok"
