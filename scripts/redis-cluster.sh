#!/usr/bin/env bash
# A local Redis Cluster for tests and benchmarks: 3 masters and 3 replicas from Debian's
# redis-server, on loopback only, no Docker.
#
#   scripts/redis-cluster.sh start DIR   start it; files and logs go in DIR (created), which
#                                        then holds `ports` (the six ports, masters first),
#                                        `pids` and `seed` (redis://127.0.0.1:<first port>)
#   scripts/redis-cluster.sh stop DIR    stop exactly the processes `start` wrote to DIR/pids
#
# `start` prints the seed URL once the cluster is healthy: every slot served
# (cluster_state:ok) and every replica linked to its master. Ports are picked at random in
# 20000-49999 (the cluster bus takes port + 10000) and checked free; a failed start stops
# whatever it started. Nothing here touches port 6379 or any Redis it did not start.
set -euo pipefail

NODES=6
# Short enough that a killed master is replaced within seconds in tests.
NODE_TIMEOUT_MS=2000
WAIT_SECS=30

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pick_ports() {
  local ports=() port
  while ((${#ports[@]} < NODES)); do
    port=$((20000 + RANDOM % 30000))
    if port_free "$port" && port_free $((port + 10000)) && [[ " ${ports[*]} " != *" $port "* ]]; then
      ports+=("$port")
    fi
  done
  echo "${ports[@]}"
}

stop() {
  local dir=$1
  [ -f "$dir/pids" ] || return 0
  local pids
  pids=$(cat "$dir/pids")
  # shellcheck disable=SC2086
  kill $pids 2>/dev/null || true
  for _ in $(seq 50); do
    # shellcheck disable=SC2086
    kill -0 $pids 2>/dev/null || break
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -9 $pids 2>/dev/null || true
  rm -f "$dir/pids"
}

healthy() {
  local first=$1
  shift
  redis-cli -p "$first" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
  for port in "$@"; do
    local role
    role=$(redis-cli -p "$port" role 2>/dev/null | head -1)
    if [ "$role" = slave ]; then
      redis-cli -p "$port" info replication 2>/dev/null | grep -q '^master_link_status:up' || return 1
    fi
  done
}

start() {
  local dir=$1
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ ! -s "$dir/pids" ] || { echo "a cluster is already running from $dir" >&2; exit 1; }
  trap 'stop "$dir"' ERR
  read -r -a ports <<<"$(pick_ports)"
  : >"$dir/pids"
  # The servers' standard streams go nowhere (they log to files), so that the caller may
  # read the seed with seed=$(scripts/redis-cluster.sh start DIR): a server holding the
  # pipe open would keep that from ever returning.
  for port in "${ports[@]}"; do
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "$dir/$port/nodes.conf" --cluster-node-timeout "$NODE_TIMEOUT_MS" \
      --dir "$dir/$port" --save '' --appendonly no --daemonize no \
      --logfile "$dir/$port/redis.log" </dev/null >/dev/null 2>&1 &
    echo $! >>"$dir/pids"
  done
  for port in "${ports[@]}"; do
    for _ in $(seq 100); do
      redis-cli -p "$port" ping >/dev/null 2>&1 && break
      sleep 0.05
    done
  done
  local addresses=()
  for port in "${ports[@]}"; do addresses+=("127.0.0.1:$port"); done
  redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1
  local deadline=$((SECONDS + WAIT_SECS))
  until healthy "${ports[@]}"; do
    if ((SECONDS > deadline)); then
      echo "the cluster in $dir did not become healthy within ${WAIT_SECS}s" >&2
      false
    fi
    sleep 0.1
  done
  trap - ERR
  echo "${ports[@]}" >"$dir/ports"
  echo "redis://127.0.0.1:${ports[0]}" >"$dir/seed"
  cat "$dir/seed"
}

[ $# -eq 2 ] || usage
case $1 in
  start) start "$2" ;;
  stop) stop "$2" ;;
  *) usage ;;
esac
