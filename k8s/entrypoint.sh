#!/bin/sh
# The container's entrypoint: `entrypoint.sh router|worker|drain` builds the server's command line
# from RSD_* environment variables (the ConfigMap rsd-config) and execs it, so operators change
# flags in one place. `drain` is the worker's preStop hook: the router moves its sessions away.
# The servers have no TLS yet (issue #13), so pods listen in plaintext on the pod network
# (--insecure-listen, RSD_INSECURE_LISTEN=false to refuse): the NetworkPolicies in
# base/policies.yaml limit who can reach the ports.
set -eu
role="${1:-}"
case "$role" in
  router)
    exec rsd-router \
      --listen "${RSD_LISTEN:-0.0.0.0:50051}" \
      --http-listen "${RSD_HTTP_LISTEN:-0.0.0.0:8080}" \
      --insecure-listen="${RSD_INSECURE_LISTEN:-true}" \
      --data-dir "${RSD_DATA_DIR:-/data/router}" \
      --heartbeat-timeout "${RSD_HEARTBEAT_TIMEOUT:-5}"
    ;;
  worker)
    : "${POD_NAME:?POD_NAME (the worker id) is required}"
    exec rsd-worker \
      --model "${RSD_MODEL:-/opt/residuum/models/SmolLM2-135M-Instruct.Q4_1.gguf}" \
      --id "$POD_NAME" \
      --listen "${RSD_LISTEN:-0.0.0.0:50061}" \
      --http-listen "${RSD_HTTP_LISTEN:-0.0.0.0:9090}" \
      --insecure-listen="${RSD_INSECURE_LISTEN:-true}" \
      --advertise "${RSD_ADVERTISE:-$POD_NAME.rsd-worker.${POD_NAMESPACE:-residuum}.svc.cluster.local:50061}" \
      --router "${RSD_ROUTER:-rsd-router:50051}" \
      --data-dir "${RSD_DATA_DIR:-/data/worker}" \
      --device "${RSD_DEVICE:-cpu}" \
      --threads "${RSD_THREADS:-0}" \
      --hot-bytes "${RSD_HOT_BYTES:-1073741824}" \
      --warm-bytes "${RSD_WARM_BYTES:-1073741824}"
    ;;
  drain)
    : "${POD_NAME:?POD_NAME (the worker id) is required}"
    exec rsdctl --router "${RSD_ROUTER:-rsd-router:50051}" drain "$POD_NAME"
    ;;
  *)
    echo "usage: entrypoint.sh router|worker|drain (flags come from RSD_* variables)" >&2
    exit 2
    ;;
esac
