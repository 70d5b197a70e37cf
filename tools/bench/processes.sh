# Sourced by the serving benchmarks: servers started in the background and stopped together.
# Needs $work (a scratch dir, for the logs); stops everything and removes $work on exit.
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT
start() {  # log name, then the command
  local name="$1"
  shift
  setsid "$@" >"$work/$name.log" 2>&1 </dev/null &
  pids+=($!)
}
