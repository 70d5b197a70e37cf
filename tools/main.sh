#!/usr/bin/env bash
# The README's main job: installs dependencies, fetches the default model (SmolLM2-135M-Instruct,
# Q4_1), builds, and runs a local generation with it. (The local cluster arrives with the serving
# layer; until then the main job is the engine in one process.)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/tools/install-deps.sh"
model="$("$root/tools/fetch-model.sh")"
RSD_BUILD_DIR="$root/build" "$root/tools/build.sh" -DCMAKE_BUILD_TYPE=RelWithDebInfo
run="$root/build/tools/rsd-run"
echo "== rsd-run info =="
"$run" info --model "$model"
echo "== rsd-run generate --message 'What is the capital of France?' =="
"$run" generate --model "$model" --threads 2 --max-tokens 48 \
  --message "What is the capital of France?"
echo "== rsd-run generate --prompt 'def fibonacci(n):' =="
"$run" generate --model "$model" --threads 2 --max-tokens 48 --prompt "def fibonacci(n):"
