#!/usr/bin/env bash
# The cluster benchmark: starts redis-server and three chat-server nodes on loopback, runs
# ws-client in each mode against them and writes the results, with the machine's facts, as
# markdown and JSON into bench/results/, and beside them each mode's charts over time as SVG
# (bench/charts.py, with matplotlib: Debian's python3-matplotlib).
#
#   bench/run.sh            few-clients and many-clients with their default schedules, a
#                           saturation run, latency at a tenth of saturation's rate, HTTP
#                           ingest, 60 s each, 50,000 idle connections held by several
#                           ws-client processes side by side, and the big room; release
#                           builds, fresh cluster per mode
#   bench/run.sh --big-room the big room alone: 20,000 clients from two ws-client processes
#                           join one room at 1,000 a second, then 5% of them leave and rejoin
#                           every second for 60 s
#   bench/run.sh --quick    a few seconds per mode on debug builds; checks only that nothing
#                           went missing, nothing arrived twice, and idle clients all joined
#                           and agree on their room's count (the test command runs it);
#                           draws the charts into its scratch directory when matplotlib is
#                           there, to prove they can be drawn, and keeps none
#   bench/run.sh --peers    a run of its own: saturation, 290 sends/s and 10,000 idle
#                           connections against two of our nodes and against two Socket.IO
#                           nodes with the Redis adapter, and the table of issue 16 with both
#                           sides and their ratio (bench/peers/run.sh says more; it takes
#                           --quick, --duration, --clients and --connections)
#   bench/run.sh --small-rooms
#                           a run of its own (bench/small_rooms.sh): 1,000 clients in rooms
#                           of two on a single Redis, then on a Redis Cluster of three
#                           masters: Redis CPU per message, and messages and CPU per shard;
#                           every full run ends with it, and --quick runs it briefly
#
# Options: --duration SECS (default 60), --saturation-clients N (default 100),
# --connections N (default 50000), --processes N (ws-client processes for them, default 4),
# --big-room-clients N (default 20000), --churn-secs SECS (the big room's churn, default 60).
# Everything it starts is stopped by PID when it ends, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

# Beside Socket.IO, and small rooms on a Redis Cluster, are runs with reports of their own.
for arg in "$@"; do
  if [ "$arg" = --peers ]; then exec bench/peers/run.sh "$@"; fi
  if [ "$arg" = --small-rooms ]; then exec bench/small_rooms.sh "$@"; fi
done

# The options as given, for the report to say how to reproduce it.
args=("$@")
quick=0
big_room_only=0
big_room_clients=20000
churn_secs=60
duration=60
saturation_clients=100
connections=50000
processes=4
while (($#)); do
  case "$1" in
    --quick) quick=1 ;;
    --big-room) big_room_only=1 ;;
    --big-room-clients) big_room_clients="$2"; shift ;;
    --churn-secs) churn_secs="$2"; shift ;;
    --duration) duration="$2"; shift ;;
    --saturation-clients) saturation_clients="$2"; shift ;;
    --connections) connections="$2"; shift ;;
    --processes) processes="$2"; shift ;;
    *) echo "usage: bench/run.sh [--quick | --big-room | --peers | --small-rooms] [--duration SECS] [--saturation-clients N]" \
         "[--connections N] [--processes N] [--big-room-clients N] [--churn-secs SECS]" >&2; exit 2 ;;
  esac
  shift
done

for tool in redis-server redis-cli openssl; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (scripts/test.sh installs it)" >&2; exit 2; }
done
if ((!quick)); then
  command -v python3 >/dev/null || { echo "bench: python3 is needed to write the report" >&2; exit 2; }
fi
# The python3 that draws the charts: the one on PATH, or Debian's, whose python3-matplotlib a
# python3 of its own (pyenv, a virtualenv) does not see. Without one the run goes on, since
# the figures are the results, and says so at the start and the end.
chart_python=""
for py in python3 /usr/bin/python3; do
  if command -v "$py" >/dev/null && "$py" -c 'import matplotlib' 2>/dev/null; then
    chart_python=$py
    break
  fi
done
charts_missing="bench: charts will not be drawn: matplotlib is missing (Debian: apt-get install python3-matplotlib)"
if [ -z "$chart_python" ] && ((!quick)); then echo "$charts_missing" >&2; fi
# draw_charts ARGS...: bench/charts.py with ARGS, printing what it drew; a chart that cannot
# be drawn is reported and never fails the run.
draw_charts() {
  if [ -z "$chart_python" ]; then
    echo "$charts_missing" >&2
    return 0
  fi
  local drawn
  if drawn=$("$chart_python" bench/charts.py "$@"); then
    echo "bench: drew charts: ${drawn//$'\n'/ }"
  else
    echo "bench: charts not drawn: bench/charts.py failed" >&2
  fi
}

# The nodes' HTTP API key; ws-client's http-ingest mode reads it from the environment too.
CHAT_API_KEY=$(openssl rand -base64 32)
export CHAT_API_KEY

# shellcheck source=bench/common.sh
source bench/common.sh
build_binaries "$quick"
open_work chat-bench

# What Redis holds in memory now (its used_memory), in KiB.
redis_used_kib() {
  redis-cli -p "$redis_port" info memory 2>/dev/null | tr -d '\r' |
    awk -F: '$1 == "used_memory" { printf "%d", $2 / 1024 }'
}

# The WebSocket connections a node holds now (its chat_connections gauge), 0 if unknown.
node_connections() {
  { node_get "$1" /metrics 2>/dev/null || true; } |
    awk '$1 == "chat_connections" { n = $2 } END { print n + 0 }'
}

redis_pid=""
redis_port=""
node_pids=()
node_urls=()
node_addrs=()
start_cluster() {
  start_redis "$work/redis-$1.log"
  start_chat_nodes 3 "node-$1" --redis-url "redis://127.0.0.1:$redis_port/"
}

# How run_mode runs, set around its calls (see run_mode): modes that failed their check so
# far, the hold, and how side-by-side processes share addresses and rooms.
failures=0
hold=0
hold_secs=0
sources_per_process=8
shared_room=0
settle=5
((quick)) && settle=1

# The nodes' RSS and CPU time before a mode's clients start, for write_facts.
before_rss=()
before_cpu=()
take_baseline() {
  local pid
  before_rss=()
  before_cpu=()
  for pid in "${node_pids[@]}"; do
    before_rss+=("$(mem_kib "$pid" VmRSS)")
    before_cpu+=("$(cpu_secs "$pid")")
  done
}

# take_hold LABEL: waits (until $hold_secs) for $hold connections on the nodes, lets them go
# idle, then takes each node's connections, RSS and CPU time, and Redis's memory.
held=()
held_rss=()
held_cpu=()
held_redis=""
take_hold() {
  local started=$SECONDS total url p pid
  while :; do
    held=()
    for url in "${node_addrs[@]}"; do
      held+=("$(node_connections "$url")")
    done
    total=0
    for p in "${held[@]}"; do total=$((total + ${p:-0})); done
    ((total >= hold || SECONDS - started >= hold_secs)) && break
    sleep 1
  done
  # A few seconds on, the joins have been announced and the nodes are idle.
  sleep "$settle"
  held=()
  held_rss=()
  held_cpu=()
  for url in "${node_addrs[@]}"; do
    held+=("$(node_connections "$url")")
  done
  for pid in "${node_pids[@]}"; do
    held_rss+=("$(mem_kib "$pid" VmRSS)")
    held_cpu+=("$(cpu_secs "$pid")")
  done
  held_redis=$(redis_used_kib)
  echo "== $1: nodes hold ${held[*]} connections, RSS ${held_rss[*]} KiB (before: ${before_rss[*]} KiB)," \
    "CPU ${held_cpu[*]} s; Redis uses ${held_redis:-?} KiB"
}

# write_facts FILE STATUS PROCESSES CLIENT-CPU: the facts of a run for report.py, one
# "key value" a line, from the baseline, the hold (if any) and the processes now.
write_facts() {
  local i=1 pid
  {
    echo "status $2"
    echo "processes $3"
    echo "client_cpu $4"
    echo "idle_rss_kib $((before_rss[0] + before_rss[1] + before_rss[2]))"
    for pid in "${node_pids[@]}"; do
      echo "node${i}_idle_rss_kib ${before_rss[$((i - 1))]}"
      echo "node${i}_peak_rss_kib $(mem_kib "$pid" VmHWM)"
      echo "node${i}_cpu $(cpu_secs "$pid")"
      echo "node${i}_start_cpu ${before_cpu[$((i - 1))]}"
      if ((hold)); then
        echo "node${i}_held_connections ${held[$((i - 1))]:-0}"
        echo "node${i}_held_rss_kib ${held_rss[$((i - 1))]}"
        echo "node${i}_held_cpu ${held_cpu[$((i - 1))]}"
      fi
      i=$((i + 1))
    done
    echo "redis_peak_rss_kib $(mem_kib "$redis_pid" VmHWM)"
    echo "redis_used_kib $(redis_used_kib)"
    if ((hold)); then echo "redis_held_used_kib ${held_redis:-0}"; fi
    echo "redis_cpu $(cpu_secs "$redis_pid")"
  } >"$1"
}

# run_mode LABEL PROCESSES WS-CLIENT-ARGS...: PROCESSES ws-client processes side by side (one
# process holds at most its open-file limit of connections, 20,000 here), and the facts of
# the run; a fresh cluster for each full run, so every mode's peak RSS and CPU time are its
# own. Side by side, each process gets its own client names and range of
# $sources_per_process loopback source addresses (8 from 127.0.0.2, 8 from 127.0.0.10, …),
# so the processes never compete for ephemeral ports, and its own rooms unless $shared_room
# is 1; report.py adds their summaries up.
#
# With $hold set to N, it also waits (until $hold_secs into the run) for N connections on
# the nodes, lets them go idle, and takes each node's RSS, CPU time and connection count, and
# Redis's memory, then.
run_mode() {
  local label=$1 procs=$2
  shift 2
  ((quick)) || start_cluster "$label"
  take_baseline
  local urls=() url
  for url in "${node_urls[@]}"; do urls+=(--url "$url"); done

  echo "== $label: $procs × ws-client $* (${#node_urls[@]} nodes, Redis)"
  local p out client_pids=() outs=()
  for ((p = 1; p <= procs; p++)); do
    local own=()
    out="$work/$label"
    if ((procs > 1)); then
      out="$work/$label.$p"
      local rooms="$label-$p"
      ((shared_room)) && rooms=$label
      own=(--name-prefix "$label-$p-" --room-prefix "$rooms" --source-addresses "$sources_per_process"
        --first-source-address "127.0.0.$((2 + sources_per_process * (p - 1)))")
    fi
    outs+=("$out")
    { TIMEFORMAT="%U %S"; time "$bin/ws-client" "${urls[@]}" "${own[@]}" "$@" --json "$out.json" \
      2>"$out.err"; } 2>"$out.time" &
    client_pids+=("$!")
  done
  if ((hold)); then take_hold "$label"; fi

  local status=0 worst=0
  for p in "${!client_pids[@]}"; do
    status=0
    wait "${client_pids[$p]}" || status=$?
    cat "${outs[$p]}.err" >&2
    if ((status != 0)); then
      echo "bench: $label: ws-client ${outs[$p]##*/} exited with $status" >&2
      worst=$status
    fi
  done
  ((worst == 0)) || failures=$((failures + 1))

  if ((!quick)); then
    write_facts "$work/$label.facts" "$worst" "$procs" \
      "$(cat "${outs[@]/%/.time}" | awk '{ s += $1 + $2 } END { print s }')"
    stop_all
  fi
}

# The saturation run's deliveries/s, from its summary.
saturation_rate() {
  sed -n 's/^ *"deliveries_per_sec": *\([0-9.e+]*\),*$/\1/p' "$work/saturation.json" | head -n1
}

# latency_run CLIENTS ARGS...: CLIENTS clients in one room, each sending at the interval that
# makes their deliveries (CLIENTS per message) a tenth of what saturation measured.
latency_run() {
  local clients=$1 rate interval
  shift
  rate=$(saturation_rate)
  interval=$(awk -v c="$clients" -v r="${rate:-0}" \
    'BEGIN { i = r > 0 ? c * c * 1000 * 10 / r : 1000; printf "%d", i < 1 ? 1 : i + 0.5 }')
  echo "$interval" >"$work/latency.interval"
  run_mode latency 1 --mode few-clients --clients "$clients" --ramp 100 --interval-ms "$interval" "$@"
}

# connections_run TOTAL PROCESSES ROOM-SIZE RAMP SLACK ARGS...: TOTAL idle connections from
# PROCESSES ws-client processes, ROOM-SIZE members per room, RAMP connections per second in
# all, none sending; held until every client has joined (or the ramp is SLACK seconds late)
# and the nodes are idle.
connections_run() {
  local total=$1 procs=$2 room=$3 ramp=$4 slack=$5 each
  shift 5
  each=$((total / procs))
  hold=$((each * procs))
  hold_secs=$((hold / ramp + slack))
  run_mode connections "$procs" --mode idle --clients "$each" --rooms $(((each + room - 1) / room)) \
    --ramp "$(per_process "$ramp" "$procs")" --duration "$((hold_secs + settle + 5))" "$@"
  hold=0
}

# RATE / PROCESSES, for each process's --ramp.
per_process() { awk -v r="$1" -v p="$2" 'BEGIN { print r / p }'; }

# big_room_run TOTAL RAMP SLACK CHURN-SECS ARGS...: TOTAL clients in one room over the three
# nodes, from two ws-client processes with one loopback source address each (127.0.0.2 and
# 127.0.0.3), RAMP joins a second in all. Once the nodes hold every connection (or the ramp
# is SLACK seconds late) and have been idle $settle s, their RSS and CPU time are taken; each
# process's churn starts $settle + 5 s (+ 1 s in --quick) after all its clients joined, so
# that it comes after: 5% of its clients leave and rejoin every second for CHURN-SECS. The run holds 10 s
# (3 s in --quick) after it, for the counts to settle.
big_room_run() {
  local total=$1 ramp=$2 slack=$3 churn=$4 procs=2 each delay=$((settle + 5)) tail=10
  shift 4
  if ((quick)); then
    delay=$((settle + 1))
    tail=3
  fi
  each=$((total / procs))
  hold=$((each * procs))
  hold_secs=$(((hold + ramp - 1) / ramp + slack))
  sources_per_process=1
  shared_room=1
  run_mode big-room "$procs" --mode idle --clients "$each" --ramp "$(per_process "$ramp" "$procs")" \
    --churn-percent 5 --churn-secs "$churn" --churn-delay-secs "$delay" \
    --duration "$((hold_secs + delay + churn + tail))" --drain-secs 2 "$@"
  hold=0
  sources_per_process=8
  shared_room=0
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
if ((quick)); then
  # Small loads on debug builds and one cluster: this proves correctness, never speed.
  start_cluster quick
  run_mode few-clients 1 --mode few-clients --clients 10 --ramp 100 --duration 2
  run_mode many-clients 1 --mode many-clients --clients 100 --ramp 1000 --interval-ms 2000 --duration 2
  run_mode saturation 1 --mode saturation --clients 4 --in-flight 2 --duration 2
  latency_run 10 --duration 2
  run_mode http-ingest 1 --mode http-ingest --clients 4 --batch 200 --duration 2
  connections_run 100 2 10 200 2 --drain-secs 5
  big_room_run 200 400 2 2
  bench/small_rooms.sh --quick || failures=$((failures + 1))
  # Drawn only to prove the charts can be drawn from real summaries; the working directory,
  # charts and all, goes when the run ends.
  draw_charts --work "$work" "$work/quick"
  if ((failures)); then
    echo "bench --quick: $failures mode(s) failed" >&2
    exit 1
  fi
  echo "bench --quick: every mode delivered everything exactly once, idle clients all joined and agreed"
  exit 0
fi

if ((!big_room_only)); then
  run_mode few-clients 1 --mode few-clients --duration "$duration"
  run_mode many-clients 1 --mode many-clients --duration "$duration"
  run_mode saturation 1 --mode saturation --clients "$saturation_clients" --duration "$duration"
  latency_run 100 --duration "$duration"
  run_mode http-ingest 1 --mode http-ingest --duration "$duration"
  # 500 a second: at 2,000 a second the joins (presence to the room, history) outran two shared
  # cores, join replies took over 10 s and clients gave up and reconnected.
  connections_run "$connections" "$processes" 50 500 15
fi
# 1,000 joins a second into one room: the rate at which the many-clients schedule once failed.
big_room_run "$big_room_clients" 1000 15 "$churn_secs"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p bench/results
stamp=$(date -u +%Y-%m-%dT%H%MZ)
if ((big_room_only)); then stamp="$stamp-big-room"; fi
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit+changes"
ARGS="${args[*]}" NODE_FLAGS="${node_flags[*]}" WORK="$work" PROCESSES="$processes" STAMP="$stamp" COMMIT="$commit" LOAD_BEFORE="$load_before" LOAD_AFTER="$load_after" \
  RUSTC="$(rustc --version)" REDIS="$(redis-server --version)" \
  python3 bench/report.py "bench/results/$stamp"
echo "bench: wrote bench/results/$stamp.md and bench/results/$stamp.json"
draw_charts "bench/results/$stamp.json"
if ((!big_room_only)); then bench/small_rooms.sh || failures=$((failures + 1)); fi
((failures == 0)) || { echo "bench: $failures mode(s) failed their check (see their verdicts above)" >&2; exit 1; }
