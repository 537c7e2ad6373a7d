# The two sides of bench/run.sh --peers, sourced by bench/peers/run.sh: how each starts (a
# Redis of its own, then two nodes on loopback), how its load client runs, and how the facts of
# a shape are taken, the same way for both, so that a difference in the report is the servers'.
#
# Expects bench/common.sh sourced, $bin (chat-server and ws-client), $peers (this folder),
# $work, and $calm (seconds the nodes are left alone after starting).

# The connections a node holds now: our nodes' chat_connections gauge, the Socket.IO nodes'
# GET /connections; 0 if unknown.
connections_of() {
  if [ "$1" = ours ]; then
    { node_get "$2" /metrics 2>/dev/null || true; } | awk '$1 == "chat_connections" { n = $2 } END { print n + 0 }'
  else
    { node_get "$2" /connections 2>/dev/null || true; } | tail -n1 | awk '{ print $1 + 0 }'
  fi
}

node_pids=()
node_addrs=()

# start_side SIDE LABEL: a fresh Redis and two nodes of SIDE (ours or socketio), each ready.
start_side() {
  local side=$1 label=$2 i
  start_redis "$work/redis-$side-$label.log"
  if [ "$side" = ours ]; then
    start_chat_nodes 2 "ours-$label" --redis-url "redis://127.0.0.1:$redis_port/"
  else
    node_pids=()
    node_addrs=()
    for i in 1 2; do
      local out="$work/$side-$label-node$i.out" log="$work/$side-$label-node$i.log" addr
      node "$peers/server.mjs" "redis://127.0.0.1:$redis_port/" 0 >"$out" 2>"$log" &
      pids+=("$!")
      node_pids+=("$!")
      addr=$(listening_address "$out" "$log" "$side node $i") || exit 1
      node_addrs+=("$addr")
    done
  fi
  # Both nodes idle before anything is taken.
  sleep "$calm"
}

# take LABEL PHASE: the nodes' and Redis's CPU seconds and the nodes' RSS now, as
# "PHASE_KEY value" lines appended to $work/LABEL.facts.
take() {
  local pid cpu=0 rss=0 held=0 addr
  for pid in "${node_pids[@]}"; do
    cpu=$(awk -v a="$cpu" -v b="$(cpu_secs "$pid")" 'BEGIN { print a + b }')
    rss=$((rss + $(mem_kib "$pid" VmRSS)))
  done
  for addr in "${node_addrs[@]}"; do
    held=$((held + $(connections_of "${1%%-*}" "$addr")))
  done
  {
    echo "$2_nodes_cpu $cpu"
    echo "$2_redis_cpu $(cpu_secs "$redis_pid")"
    echo "$2_nodes_rss_kib $rss"
    echo "$2_connections $held"
  } >>"$work/$1.facts"
}

# hold SIDE N SECS: waits until the nodes hold N connections, at most SECS.
hold() {
  local started=$SECONDS total addr
  while ((SECONDS - started < $3)); do
    total=0
    for addr in "${node_addrs[@]}"; do
      total=$((total + $(connections_of "$1" "$addr")))
    done
    ((total >= $2)) && return 0
    sleep 1
  done
  echo "bench --peers: $1 nodes hold $total of $2 connections after $3 s" >&2
}

# run_client SIDE NAME ARGS...: SIDE's load client with ARGS (ws-client's flag names; mode
# `rate` is ws-client's few-clients schedule at --ramp 100), its summary in $work/SIDE-NAME.json
# and its user+system CPU seconds appended to the facts.
run_client() {
  local side=$1 name=$2 out="$work/$1-$2" cmd=() addr status=0
  shift 2
  if [ "$side" = ours ]; then
    cmd=("$bin/ws-client")
    for addr in "${node_addrs[@]}"; do cmd+=(--url "ws://$addr/ws"); done
    case "$name" in
      latency) cmd+=(--ramp 100) ;;
      idle) cmd+=(--drain-secs 2) ;;
    esac
    cmd+=("${@/#rate/few-clients}")
  else
    cmd=(node "$peers/client.mjs")
    for addr in "${node_addrs[@]}"; do cmd+=(--url "ws://$addr"); done
    [ "$name" = idle ] && cmd+=(--source-addresses 8)
    cmd+=("$@")
  fi
  { TIMEFORMAT="%U %S"; time "${cmd[@]}" --json "$out.json" >"$out.out" 2>"$out.err"; } 2>"$out.time" ||
    status=$?
  cat "$out.err" >&2
  grep -h '^verdict' "$out.out" >&2 || true
  echo "client_cpu $(awk '{ print $1 + $2 }' "$out.time")" >>"$out.facts"
  return "$status"
}
