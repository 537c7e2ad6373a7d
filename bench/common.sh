# What bench/run.sh and bench/peers/run.sh (its --peers run) share, sourced by both: how the
# binaries are built, how every process is started, measured and stopped, so that the two runs
# take their figures the same way.

# build_binaries QUICK: chat-server and ws-client, debug builds when QUICK is 1 (the quick runs
# prove correctness, never speed) and release otherwise; sets $bin to where they are.
build_binaries() {
  local profile=release
  if (($1)); then
    profile=debug
    cargo build --locked -q -p chat-server -p ws-client
  else
    cargo build --locked --release -q -p chat-server -p ws-client
  fi
  local target_dir
  target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  bin="$target_dir/$profile"
}

# open_work NAME: the scratch directory $work, and $pids, what the run started; when the run
# ends, also on failure or Ctrl-C, everything in $pids is stopped by PID and $work removed.
open_work() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  pids=()
  trap 'stop_all; rm -rf "$work"' EXIT
  trap 'exit 130' INT TERM
}
stop_all() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}

# Sum of user and system CPU seconds of a process so far.
cpu_secs() {
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat"
}
# A field of /proc/PID/status in KiB (VmRSS now, VmHWM peak).
mem_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

# node_get HOST:PORT PATH: the body and headers of a plain HTTP GET to a node.
node_get() {
  exec 3<>"/dev/tcp/${1%:*}/${1##*:}" || return 1
  printf 'GET %s HTTP/1.0\r\n\r\n' "$2" >&3
  cat <&3
  exec 3<&-
}

# start_redis LOG: a redis-server of the run's own on a random free loopback port, nothing
# saved; sets $redis_pid and $redis_port once it answers.
start_redis() {
  local port
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    port=$((20000 + RANDOM % 30000))
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >"$1" 2>&1 &
    redis_pid=$!
    for _ in $(seq 50); do
      if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
        pids+=("$redis_pid")
        redis_port=$port
        return 0
      fi
      kill -0 "$redis_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  done
  echo "bench: redis-server did not start" >&2
  exit 1
}

# listening_address OUT LOG WHAT: the HOST:PORT a node printed as `listening on HOST:PORT` on
# OUT, waiting up to 10 s; otherwise says WHAT did not start, shows LOG and exits.
listening_address() {
  local addr=""
  for _ in $(seq 100); do
    addr=$(sed -n 's/^listening on //p' "$1" | head -n1)
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "bench: $3 did not start" >&2; cat "$2" >&2; exit 1; }
  echo "$addr"
}

# wait_ready HOST:PORT: waits up to 10 s for a chat-server node's /readyz to answer 200.
wait_ready() {
  for _ in $(seq 100); do
    node_get "$1" /readyz 2>/dev/null | head -n1 | grep -q ' 200 ' && return 0
    sleep 0.1
  done
}

# The nodes' flags. The schedules send faster than one person may (the default --send-rate is 10/s), and the
# benchmark measures delivery capacity: flood control and the debounce are off. The
# connections mode puts a third of 50,000 on each node, more than the default
# --max-connections; the open-file limit (20,000 here) stays the real bound. Every client
# connects from 127.0.0.1, so the per-address cap on pending handshakes is off too.
node_flags=(--send-rate 0 --name-send-rate 0 --duplicate-window-ms 0 --flood-close-after 0
  --max-connections 19000 --max-pending-handshakes-per-address 0)

# start_chat_nodes COUNT NAME FLAGS...: COUNT chat-server nodes named NAME-1, NAME-2, … that
# share one fresh key, started with FLAGS (their backplane) and $node_flags; waits until each
# is ready, and sets $node_pids, $node_addrs (HOST:PORT) and $node_urls (their WebSocket URLs).
start_chat_nodes() {
  local count=$1 name=$2 i key out log addr
  shift 2
  key=$(openssl rand -base64 32)
  node_pids=()
  node_addrs=()
  node_urls=()
  for ((i = 1; i <= count; i++)); do
    out="$work/$name-$i.out"
    log="$work/$name-$i.log"
    CHAT_KEY="$key" RUST_LOG=warn "$bin/chat-server" --listen 127.0.0.1:0 --node-id "$name-$i" \
      "$@" "${node_flags[@]}" >"$out" 2>"$log" &
    pids+=("$!")
    node_pids+=("$!")
    addr=$(listening_address "$out" "$log" "node $name-$i") || exit 1
    wait_ready "$addr"
    node_addrs+=("$addr")
    node_urls+=("ws://$addr/ws")
  done
}
