#!/usr/bin/env bash
# k8s/ validated offline: every overlay renders with kubectl's built-in kustomize, passes
# kubernetes-validate in strict mode for a current Kubernetes, and checkov's Kubernetes checks;
# the Dockerfile passes checkov's Dockerfile checks. Skipped checks and their reasons are in
# k8s/checkov-skips.txt; anything else failing fails this test.
# Usage: validate.sh SOURCE_DIR PYENV_DIR
set -euo pipefail
src="$1"
bin="$2/bin"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
skips="$(grep -v '^#' "$src/k8s/checkov-skips.txt" | awk 'NF {print $1}' | paste -sd, -)"
for overlay in cpu gpu secure; do
  "$bin/kubectl" kustomize "$src/k8s/overlays/$overlay" > "$out/$overlay.yaml"
  # Each overlay must carry what it is for.
  grep -q 'kind: PodDisruptionBudget' "$out/$overlay.yaml"
  grep -q 'kind: NetworkPolicy' "$out/$overlay.yaml"
  grep -q 'preStop' "$out/$overlay.yaml"
done
grep -q 'nvidia.com/gpu: "1"' "$out/gpu.yaml"
grep -q 'RSD_DEVICE: cuda' "$out/gpu.yaml"
grep -q 'storageClassName: rsd-local-nvme' "$out/gpu.yaml"
grep -q 'image: residuum:0.1.0-cuda' "$out/gpu.yaml"
if grep -q 'nvidia.com/gpu' "$out/cpu.yaml"; then echo "cpu overlay asks for a GPU" >&2; exit 1; fi
# secure: certificates from the CSI driver, keys from Secrets as files, no gRPC probe (plaintext).
grep -q 'driver: csi.cert-manager.io' "$out/secure.yaml"
grep -q 'RSD_TLS_DIR: /etc/rsd/tls' "$out/secure.yaml"
grep -q 'secretName: rsd-worker-key' "$out/secure.yaml"
grep -q 'scheme: HTTPS' "$out/secure.yaml"
if grep -q 'grpc:' "$out/secure.yaml"; then echo "secure overlay keeps a gRPC probe" >&2; exit 1; fi
"$bin/kubernetes-validate" --strict --quiet -k 1.34.0 "$out/cpu.yaml" "$out/gpu.yaml" \
  "$out/secure.yaml"
echo "kubernetes-validate (strict, 1.34): ok"
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false
"$bin/checkov" -d "$out" --framework kubernetes --compact --quiet --skip-check "$skips" \
  --skip-download
"$bin/checkov" -f "$src/k8s/Dockerfile" --framework dockerfile --compact --quiet \
  --skip-check "$skips" --skip-download
echo "checkov: ok"
