#!/usr/bin/env bash
# bench/run.sh --peers: the three shapes of issue 16's table (saturation, a fixed rate of 290
# sends/s, 10,000 idle connections) against two chat-server nodes and against two Socket.IO
# 4.8 nodes with @socket.io/redis-adapter, each pair with a Redis of its own started the same
# way, in one run, one shape after the other on both sides so that both see the same machine.
# Ratios within one run hold where absolute figures drift with the machine's other load.
#
# Our side is driven by ws-client, theirs by bench/peers/client.mjs, which speaks Socket.IO's
# wire protocol over a bare WebSocket and counts as ws-client does. On both sides the server
# CPU is the nodes' and Redis's user+system time from /proc/PID/stat over the shape, the
# client's is its own from `time`, and idle memory is the nodes' VmRSS with every connection
# held minus before any.
#
#   bench/run.sh --peers [--duration SECS] [--clients N] [--connections N] [--quick]
#
# --duration: seconds of sending in the saturation and rate shapes (default 30); --clients:
# clients in the one room (default 100); --connections: idle connections (default 10,000).
# --quick: debug builds, 2 s, 10 clients, 200 connections; checks only that our side lost and
# duplicated nothing and that Socket.IO delivered (the test command runs it), writes no report.
set -euo pipefail
cd "$(dirname "$0")/../.."

quick=0
duration=30
clients=100
connections=10000
while (($#)); do
  case "$1" in
    --peers) ;;
    --quick) quick=1 ;;
    --duration) duration="$2"; shift ;;
    --clients) clients="$2"; shift ;;
    --connections) connections="$2"; shift ;;
    *) echo "usage: bench/run.sh --peers [--quick] [--duration SECS] [--clients N] [--connections N]" >&2; exit 2 ;;
  esac
  shift
done
# The issue's fixed rate: 290 sends/s in all, 29,000 deliveries/s in a room of 100.
rate=290
# Idle connections open at 500 a second, as bench/run.sh's connections mode opens ours; the
# hold waits up to $slack s past the ramp, then $settle s of quiet before RSS is taken, and
# the clients stay $tail s after. Fresh nodes are left alone $calm s before anything is taken.
ramp=500
slack=15
settle=5
tail=5
calm=1
if ((quick)); then
  duration=2
  clients=10
  connections=200
  slack=2
  settle=1
  tail=1
  calm=0.2
fi

for tool in redis-server redis-cli openssl node npm python3; do
  command -v "$tool" >/dev/null || { echo "bench --peers: $tool is missing (scripts/test.sh installs it)" >&2; exit 2; }
done
peers=bench/peers
if [ ! -e "$peers/node_modules/.package-lock.json" ] ||
  [ "$peers/package-lock.json" -nt "$peers/node_modules/.package-lock.json" ]; then
  (cd "$peers" && npm ci --no-audit --no-fund)
fi
# shellcheck source=bench/common.sh
source bench/common.sh
build_binaries "$quick"
open_work chat-peers
# shellcheck source=bench/peers/sides.sh
source "$peers/sides.sh"

failures=0
# shape SIDE NAME CLIENT-ARGS...: a fresh Redis and two nodes of SIDE, the client with ARGS,
# and the facts of it in $work/SIDE-NAME.facts (see sides.sh).
shape() {
  local side=$1 name=$2
  shift 2
  start_side "$side" "$name"
  take "$side-$name" before
  local status=0
  run_client "$side" "$name" "$@" || status=$?
  if ((status != 0)); then
    echo "bench --peers: $side $name: the client exited with $status" >&2
    failures=$((failures + 1))
  fi
  take "$side-$name" after
  echo "status $status" >>"$work/$side-$name.facts"
  stop_all
}

# idle_shape SIDE CLIENT-ARGS...: like shape, with the nodes' RSS taken once they hold every
# connection (or the ramp is $slack s late) and have been idle $settle s.
idle_shape() {
  local side=$1
  shift
  local hold_secs=$((connections / ramp + slack))
  start_side "$side" idle
  take "$side-idle" before
  local status=0
  run_client "$side" idle "$@" --duration "$((hold_secs + settle + tail))" &
  local client=$!
  pids+=("$client")
  hold "$side" "$connections" "$hold_secs"
  sleep "$settle"
  take "$side-idle" held
  wait "$client" || status=$?
  if ((status != 0)); then
    echo "bench --peers: $side idle: the client exited with $status" >&2
    failures=$((failures + 1))
  fi
  echo "status $status" >>"$work/$side-idle.facts"
  stop_all
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
interval_ms=$(awk -v c="$clients" -v r="$rate" 'BEGIN { printf "%d", c * 1000 / r + 0.5 }')
rooms=$(((connections + 49) / 50))
for side in ours socketio; do
  shape "$side" saturation --mode saturation --clients "$clients" --in-flight 8 --duration "$duration"
done
for side in ours socketio; do
  shape "$side" latency --mode rate --clients "$clients" --interval-ms "$interval_ms" --duration "$duration"
done
for side in ours socketio; do
  idle_shape "$side" --mode idle --clients "$connections" --rooms "$rooms" --ramp "$ramp"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

if ((quick)); then
  python3 "$peers/report.py" --check "$work"
  ((failures == 0)) || { echo "bench --peers --quick: $failures shape(s) failed" >&2; exit 1; }
  echo "bench --peers --quick: our side delivered everything exactly once, Socket.IO delivered, idle clients all joined"
  exit 0
fi

mkdir -p bench/results
stamp=$(date -u +%Y-%m-%dT%H%MZ)-peers
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit+changes"
WORK="$work" COMMIT="$commit" LOAD_BEFORE="$load_before" LOAD_AFTER="$load_after" \
  ARGS="--duration $duration --clients $clients --connections $connections" RATE="$rate" \
  INTERVAL_MS="$interval_ms" RUSTC="$(rustc --version)" REDIS="$(redis-server --version)" \
  NODE="$(node --version)" python3 "$peers/report.py" "bench/results/$stamp"
echo "bench --peers: wrote bench/results/$stamp.md and bench/results/$stamp.json"
# Our shapes over time and both sides as bars, with Debian's matplotlib when it is there; the
# tables are the results, so a chart that cannot be drawn never fails the run.
for py in python3 /usr/bin/python3; do
  if "$py" -c 'import matplotlib' 2>/dev/null; then
    "$py" bench/charts.py "bench/results/$stamp.json" || echo "bench --peers: charts not drawn" >&2
    break
  fi
done
((failures == 0)) || { echo "bench --peers: $failures shape(s) failed (see above)" >&2; exit 1; }
