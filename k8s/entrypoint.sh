#!/bin/sh
# The container's entrypoint: `entrypoint.sh router|worker|drain` builds the server's command line
# from RSD_* environment variables (the ConfigMap rsd-config) and execs it, so operators change
# flags in one place. `drain` is the worker's preStop hook: the router moves its sessions away.
#
# Transport security and keys (issue #13), off unless configured:
#   RSD_TLS_DIR  a mounted kubernetes.io/tls Secret (tls.crt, tls.key, and ca.crt for mutual TLS):
#                the router serves TLS and HTTPS (and requires workers' certificates with ca.crt),
#                a worker serves mutual TLS (ca.crt required; its certificate must name its pod)
#                to the router's and peer workers' certificates only: RSD_TLS_PEERS (default
#                rsd-router,*.rsd-worker.<namespace>.svc.cluster.local; empty: any the CA signed);
#                `drain` dials the router over TLS.
#   RSD_AUTH=true       the router requires API keys (first start writes <data-dir>/admin.key).
#   RSD_API_KEY         a worker's key (rsdctl keys create --worker), read by rsd-worker itself;
#   RSD_API_KEY_FILE    or a file holding it (a mounted Secret: overlays/secure).
#   RSD_ADMIN_API_KEY   the key `drain` uses (draining is an Admin call);
#   RSD_ADMIN_API_KEY_FILE  or a file holding it.
# Without TLS, pods listen in plaintext on the pod network (--insecure-listen; set
# RSD_INSECURE_LISTEN=false to refuse): the NetworkPolicies in base/policies.yaml limit who can
# reach the ports. A worker's /metrics port is plaintext either way.
set -eu
role="${1:-}"
tls_dir="${RSD_TLS_DIR:-}"
tls=false
if [ -n "$tls_dir" ] && [ -f "$tls_dir/tls.crt" ]; then tls=true; fi
case "$role" in
  router)
    set -- \
      --listen "${RSD_LISTEN:-0.0.0.0:50051}" \
      --http-listen "${RSD_HTTP_LISTEN:-0.0.0.0:8080}" \
      --insecure-listen="${RSD_INSECURE_LISTEN:-true}" \
      --data-dir "${RSD_DATA_DIR:-/data/router}" \
      --heartbeat-timeout "${RSD_HEARTBEAT_TIMEOUT:-5}"
    if [ "$tls" = true ]; then
      set -- "$@" --tls-cert "$tls_dir/tls.crt" --tls-key "$tls_dir/tls.key"
      if [ -f "$tls_dir/ca.crt" ]; then set -- "$@" --tls-ca "$tls_dir/ca.crt"; fi
    fi
    if [ "${RSD_AUTH:-false}" = true ]; then set -- "$@" --auth; fi
    exec rsd-router "$@"
    ;;
  worker)
    : "${POD_NAME:?POD_NAME (the worker id) is required}"
    set -- \
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
    if [ "$tls" = true ]; then
      set -- "$@" --tls-cert "$tls_dir/tls.crt" --tls-key "$tls_dir/tls.key" \
        --tls-ca "$tls_dir/ca.crt" \
        --tls-peers "${RSD_TLS_PEERS-rsd-router,*.rsd-worker.${POD_NAMESPACE:-residuum}.svc.cluster.local}"
    fi
    if [ -n "${RSD_API_KEY_FILE:-}" ]; then set -- "$@" --api-key-file "$RSD_API_KEY_FILE"; fi
    exec rsd-worker "$@"
    ;;
  drain)
    : "${POD_NAME:?POD_NAME (the worker id) is required}"
    set -- --router "${RSD_ROUTER:-rsd-router:50051}"
    if [ "$tls" = true ]; then
      set -- "$@" --tls-ca "$tls_dir/ca.crt" --tls-cert "$tls_dir/tls.crt" \
        --tls-key "$tls_dir/tls.key"
    fi
    if [ -n "${RSD_ADMIN_API_KEY_FILE:-}" ]; then
      set -- "$@" --api-key-file "$RSD_ADMIN_API_KEY_FILE"
    elif [ -n "${RSD_ADMIN_API_KEY:-}" ]; then
      export RSD_API_KEY="$RSD_ADMIN_API_KEY"
    fi
    exec rsdctl "$@" drain "$POD_NAME"
    ;;
  *)
    echo "usage: entrypoint.sh router|worker|drain (flags come from RSD_* variables)" >&2
    exit 2
    ;;
esac
