#!/usr/bin/env bash
# What an operator types first: every server's --help lists its flags in the dashed spelling the
# README uses, --flagfile takes that spelling, rsdctl has a version and per-command help.
# Usage: cli_test.sh BUILD_DIR
set -euo pipefail
build="$1"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
for bin in router/rsd-router worker/rsd-worker; do
  help="$("$build/$bin" --help)"
  for flag in --data-dir --http-listen --log-format --log-level --listen --flagfile; do
    [[ "$help" == *"  $flag"$'\n'* ]] || fail "$bin --help does not list $flag"
  done
  [[ "$help" != *"--data_dir"* ]] || fail "$bin --help uses the underscore spelling"
  [[ "$help" != *"No flags matched"* ]] || fail "$bin --help matched no flags"
done
help="$("$build/worker/rsd-worker" --help)"
[[ "$help" == *"--hot-budget-tokens"* && "$help" == *"--max-context"* ]] || fail "worker flags"
# A flag file in the dashed spelling: a bad value in it is refused naming the flag.
printf -- '# comment\n--log-format=yaml\n' > "$dir/flags"
out="$("$build/router/rsd-router" --flagfile "$dir/flags" --data-dir "$dir/j" 2>&1)" && \
  fail "a bad --log-format from a flag file was accepted"
[[ "$out" == *"--log-format must be text or json"* ]] || fail "flag file: $out"
out="$("$build/router/rsd-router" --flagfile "$dir/missing" 2>&1)" && fail "missing flag file"
[[ "$out" == *"cannot read --flagfile $dir/missing"* ]] || fail "missing flag file: $out"
# Without TLS the servers listen on loopback only; --insecure-listen allows other addresses.
for args in "--listen 0.0.0.0:0" "--listen 127.0.0.1:0 --http-listen :0" "--listen [::]:0"; do
  # shellcheck disable=SC2086
  out="$("$build/router/rsd-router" $args --data-dir "$dir/r" 2>&1)" && fail "router $args served"
  [[ "$out" == *"is not a loopback address"*"--insecure-listen"* ]] || fail "router $args: $out"
done
out="$("$build/worker/rsd-worker" --model m.gguf --data-dir "$dir/w" --listen 10.1.2.3:7001 2>&1)" \
  && fail "worker on 10.1.2.3 served"
[[ "$out" == *"--listen 10.1.2.3:7001 is not a loopback address"* ]] || fail "worker: $out"
"$build/router/rsd-router" --listen 0.0.0.0:0 --insecure-listen --data-dir "$dir/r2" \
  > "$dir/router.log" 2>&1 &
router=$!
for _ in $(seq 1 100); do
  grep -q "listening on" "$dir/router.log" && break
  sleep 0.1
done
kill "$router"; wait "$router" || true
grep -q "rsd-router listening on 0.0.0.0:" "$dir/router.log" || fail "router: $(cat "$dir/router.log")"
grep -q "non-loopback" "$dir/router.log" || fail "no warning: $(cat "$dir/router.log")"
# rsdctl: version, per-command help, output formats.
[[ "$("$build/tools/rsdctl" version)" == "rsdctl "*" (protocol rsd.v1)" ]] || fail "version"
[[ "$("$build/tools/rsdctl" -o json version)" == *'"protocol":"rsd.v1"'* ]] || fail "version json"
chat="$("$build/tools/rsdctl" chat --help)"
[[ "$chat" == *"chat --session ID"* && "$chat" != *"create ["* ]] || fail "chat --help: $chat"
out="$("$build/tools/rsdctl" -o xml workers 2>&1)" && fail "-o xml accepted"
[[ "$out" == *"is not table, wide, json or yaml"* ]] || fail "-o xml: $out"
echo "cli: ok"
