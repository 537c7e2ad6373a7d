#!/usr/bin/env bash
# The cluster benchmark: starts redis-server and three chat-server nodes on loopback, runs
# ws-client in each mode against them and writes the results, with the machine's facts, as
# markdown and JSON into bench/results/.
#
#   bench/run.sh            few-clients and many-clients with their default schedules and a
#                           saturation run, 60 s each, release builds, fresh cluster per mode
#   bench/run.sh --quick    a few seconds per mode on debug builds; checks only that nothing
#                           went missing and nothing arrived twice (the test command runs it)
#
# Options: --duration SECS (default 60), --saturation-clients N (default 100).
# Everything it starts is stopped by PID when it ends, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
duration=60
saturation_clients=100
while (($#)); do
  case "$1" in
    --quick) quick=1 ;;
    --duration) duration="$2"; shift ;;
    --saturation-clients) saturation_clients="$2"; shift ;;
    *) echo "usage: bench/run.sh [--quick] [--duration SECS] [--saturation-clients N]" >&2; exit 2 ;;
  esac
  shift
done

for tool in redis-server redis-cli openssl; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (scripts/test.sh installs it)" >&2; exit 2; }
done
if ((!quick)); then
  command -v python3 >/dev/null || { echo "bench: python3 is needed to write the report" >&2; exit 2; }
fi

# The nodes' HTTP API key; ws-client's http-ingest mode reads it from the environment too.
CHAT_API_KEY=$(openssl rand -base64 32)
export CHAT_API_KEY

if ((quick)); then
  profile=debug
  cargo build --locked -q -p chat-server -p ws-client
else
  profile=release
  cargo build --locked --release -q -p chat-server -p ws-client
fi
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="$target_dir/$profile"

work=$(mktemp -d "${TMPDIR:-/tmp}/chat-bench.XXXXXX")
pids=()
stop_all() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# Sum of user and system CPU seconds of a process so far.
cpu_secs() {
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat"
}
# A field of /proc/PID/status in KiB (VmRSS now, VmHWM peak).
mem_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

# The schedules send faster than one person may (the default --send-rate is 10/s), and the
# benchmark measures delivery capacity: flood control and the debounce are off.
node_flags=(--send-rate 0 --name-send-rate 0 --duplicate-window-ms 0 --flood-close-after 0)

redis_pid=""
node_pids=()
node_urls=()
start_cluster() {
  local label=$1 port i
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    port=$((20000 + RANDOM % 30000))
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      >"$work/redis-$label.log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 50); do
      if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then break 2; fi
      kill -0 "$redis_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    redis_pid=""
  done
  [ -n "$redis_pid" ] || { echo "bench: redis-server did not start" >&2; exit 1; }
  pids+=("$redis_pid")

  local key
  key=$(openssl rand -base64 32)
  node_pids=()
  node_urls=()
  for i in 1 2 3; do
    local out="$work/node-$label-$i.out"
    CHAT_KEY="$key" RUST_LOG=warn "$bin/chat-server" --listen 127.0.0.1:0 \
      --redis-url "redis://127.0.0.1:$port/" --node-id "bench-$i" "${node_flags[@]}" \
      >"$out" 2>"$work/node-$label-$i.log" &
    local pid=$!
    pids+=("$pid")
    node_pids+=("$pid")
    local addr=""
    for _ in $(seq 100); do
      addr=$(sed -n 's/^listening on //p' "$out" | head -n1)
      [ -n "$addr" ] && break
      sleep 0.1
    done
    [ -n "$addr" ] || { echo "bench: node $i did not start" >&2; cat "$work/node-$label-$i.log" >&2; exit 1; }
    for _ in $(seq 100); do
      if exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}" 2>/dev/null; then
        printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3
        if head -n1 <&3 | grep -q ' 200 '; then exec 3<&-; break; fi
        exec 3<&-
      fi
      sleep 0.1
    done
    node_urls+=("ws://$addr/ws")
  done
}

# run_mode LABEL WS-CLIENT-ARGS...: one ws-client run, and its facts; a fresh cluster for
# each full run, so every mode's peak RSS and CPU time are its own.
failures=0
run_mode() {
  local label=$1
  shift
  ((quick)) || start_cluster "$label"
  local idle_rss=0 pid
  for pid in "${node_pids[@]}"; do idle_rss=$((idle_rss + $(mem_kib "$pid" VmRSS))); done
  local urls=() url
  for url in "${node_urls[@]}"; do urls+=(--url "$url"); done

  echo "== $label: ws-client $* (${#node_urls[@]} nodes, Redis)"
  local status=0 TIMEFORMAT="%U %S"
  { time "$bin/ws-client" "${urls[@]}" "$@" --json "$work/$label.json" 2>"$work/$label.err"; } \
    2>"$work/$label.time" || status=$?
  cat "$work/$label.err" >&2
  ((status == 0)) || { echo "bench: $label: ws-client exited with $status" >&2; failures=$((failures + 1)); }

  if ((!quick)); then
    local facts="$work/$label.facts"
    {
      echo "status $status"
      echo "client_cpu $(awk '{ print $1 + $2 }' "$work/$label.time")"
      echo "idle_rss_kib $idle_rss"
      local i=1
      for pid in "${node_pids[@]}"; do
        echo "node${i}_peak_rss_kib $(mem_kib "$pid" VmHWM)"
        echo "node${i}_cpu $(cpu_secs "$pid")"
        i=$((i + 1))
      done
      echo "redis_peak_rss_kib $(mem_kib "$redis_pid" VmHWM)"
      echo "redis_cpu $(cpu_secs "$redis_pid")"
    } >"$facts"
    stop_all
  fi
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
if ((quick)); then
  # Small loads on debug builds and one cluster: this proves correctness, never speed.
  start_cluster quick
  run_mode few-clients --mode few-clients --clients 10 --ramp 100 --duration 2
  run_mode many-clients --mode many-clients --clients 100 --ramp 1000 --interval-ms 2000 --duration 2
  run_mode saturation --mode saturation --clients 4 --in-flight 2 --duration 2
  run_mode http-ingest --mode http-ingest --clients 4 --batch 200 --duration 2
  if ((failures)); then
    echo "bench --quick: $failures mode(s) failed" >&2
    exit 1
  fi
  echo "bench --quick: every mode delivered everything exactly once"
  exit 0
fi

run_mode few-clients --mode few-clients --duration "$duration"
run_mode many-clients --mode many-clients --duration "$duration"
run_mode saturation --mode saturation --clients "$saturation_clients" --duration "$duration"
run_mode http-ingest --mode http-ingest --duration "$duration"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p bench/results
stamp=$(date -u +%Y-%m-%dT%H%MZ)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit+changes"
NODE_FLAGS="${node_flags[*]}" WORK="$work" STAMP="$stamp" COMMIT="$commit" LOAD_BEFORE="$load_before" LOAD_AFTER="$load_after" \
  RUSTC="$(rustc --version)" REDIS="$(redis-server --version)" \
  python3 bench/report.py "bench/results/$stamp"
echo "bench: wrote bench/results/$stamp.md and bench/results/$stamp.json"
((failures == 0)) || { echo "bench: $failures mode(s) reported missing or duplicate deliveries" >&2; exit 1; }
