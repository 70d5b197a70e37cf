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
# rsdctl: version, per-command help, output formats.
[[ "$("$build/tools/rsdctl" version)" == "rsdctl "*" (protocol rsd.v1)" ]] || fail "version"
[[ "$("$build/tools/rsdctl" -o json version)" == *'"protocol":"rsd.v1"'* ]] || fail "version json"
chat="$("$build/tools/rsdctl" chat --help)"
[[ "$chat" == *"chat --session ID"* && "$chat" != *"create ["* ]] || fail "chat --help: $chat"
out="$("$build/tools/rsdctl" -o xml workers 2>&1)" && fail "-o xml accepted"
[[ "$out" == *"is not table, wide, json or yaml"* ]] || fail "-o xml: $out"
echo "cli: ok"
