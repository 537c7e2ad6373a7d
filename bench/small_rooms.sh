#!/usr/bin/env bash
# The small-rooms run (`bench/run.sh --small-rooms`, and part of every full run): many rooms
# of two, like direct messages, sent to as fast as acks allow, once on a single Redis and once
# on a local Redis Cluster of three masters with a replica each (scripts/redis-cluster.sh), two
# chat nodes each. It measures what Redis spends per message, and on the cluster how evenly
# the shards share the work: each master's CPU time (INFO cpu) and the messages it stored (the
# XADD calls the publish script made, in INFO commandstats) over the run.
#
#   bench/small_rooms.sh [--quick] [--duration SECS] [--clients N]
#
# Defaults: 1,000 clients (500 rooms: enough rooms that their spread over three shards is
# even), 30 s each. Results go to bench/results/<time>-small-rooms.md and .json. --quick
# (in the test command) runs debug builds a few seconds each and checks only that nothing
# went missing or arrived twice. Everything it starts is stopped by PID when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
duration=30
clients=1000
while (($#)); do
  case "$1" in
    --small-rooms) ;;
    --quick) quick=1; duration=2; clients=20 ;;
    --duration) duration="$2"; shift ;;
    --clients) clients="$2"; shift ;;
    *) echo "usage: bench/run.sh --small-rooms [--quick] [--duration SECS] [--clients N]" >&2; exit 2 ;;
  esac
  shift
done
rooms=$((clients / 2))

# shellcheck source=bench/common.sh
source bench/common.sh
build_binaries "$quick"
open_work chat-small-rooms
cluster_dir=""
# The cluster is stopped by its own script, which knows its PIDs.
trap 'stop_all; if [ -n "$cluster_dir" ]; then scripts/redis-cluster.sh stop "$cluster_dir"; fi; rm -rf "$work"' EXIT

# redis_facts PORT: "cpu_seconds xadd_calls" of the Redis on PORT now.
redis_facts() {
  local cpu calls
  cpu=$(redis-cli -p "$1" info cpu | tr -d '\r' |
    awk -F: '$1 == "used_cpu_sys" || $1 == "used_cpu_user" { s += $2 } END { printf "%.4f", s }')
  calls=$(redis-cli -p "$1" info commandstats | tr -d '\r' |
    sed -n 's/^cmdstat_xadd:calls=\([0-9]*\),.*/\1/p')
  echo "$cpu ${calls:-0}"
}

# measure LABEL "PORTS": the saturation run against the nodes just started, with the facts
# of each Redis on PORTS before and after it, into $work/LABEL.*.
measure() {
  local label=$1 ports=$2 port url urls=()
  for url in "${node_urls[@]}"; do urls+=(--url "$url"); done
  for port in $ports; do redis_facts "$port" >"$work/$label.$port.before"; done
  "$bin/ws-client" "${urls[@]}" --mode saturation --clients "$clients" --rooms "$rooms" \
    --room-prefix "dm" --duration "$duration" --drain-secs 5 --json "$work/$label.json" \
    >"$work/$label.client" 2>&1 || { cat "$work/$label.client" >&2; exit 1; }
  for port in $ports; do redis_facts "$port" >"$work/$label.$port.after"; done
  grep -E 'deliveries|missing|duplicates' "$work/$label.client" | head -n3
}

echo "== small rooms: $clients clients in $rooms rooms of 2, saturation, ${duration}s, single Redis"
start_redis "$work/redis.log"
single=$redis_port
start_chat_nodes 2 single --redis-url "redis://127.0.0.1:$single/"
measure single "$single"
stop_all

echo "== small rooms: the same on a Redis Cluster of 3 masters and 3 replicas"
cluster_dir="$work/cluster"
seed=$(scripts/redis-cluster.sh start "$cluster_dir")
masters=""
for port in $(cat "$cluster_dir/ports"); do
  [ "$(redis-cli -p "$port" role | head -n1)" = master ] && masters="$masters $port"
done
start_chat_nodes 2 cluster --redis-cluster "$seed"
measure cluster "$masters"
stop_all
scripts/redis-cluster.sh stop "$cluster_dir"
cluster_dir=""

mkdir -p bench/results
out="bench/results/$(date -u +%Y-%m-%dT%H%MZ)-small-rooms"

QUICK=$quick WORK="$work" MASTERS="$masters" SINGLE="$single" CLIENTS="$clients" ROOMS="$rooms" \
  DURATION="$duration" LOAD="$(cut -d' ' -f1-3 /proc/loadavg)" REDIS="$(redis-server --version)" \
  python3 - "$out" <<'EOF'
import json, os, sys

work, out = os.environ["WORK"], sys.argv[1]

def summary(label):
    with open(f"{work}/{label}.json") as f:
        return json.load(f)["summary"]

def shard(label, port):
    def read(when):
        with open(f"{work}/{label}.{port}.{when}") as f:
            cpu, calls = f.read().split()
            return float(cpu), int(calls)
    (cpu0, n0), (cpu1, n1) = read("before"), read("after")
    messages = n1 - n0
    return {"port": int(port), "messages": messages, "cpu_s": round(cpu1 - cpu0, 3),
            "cpu_us_per_message": round((cpu1 - cpu0) * 1e6 / messages, 2) if messages else None}

runs = {}
for label, ports in [("single", [os.environ["SINGLE"]]), ("cluster", os.environ["MASTERS"].split())]:
    s = summary(label)
    shards = [shard(label, p) for p in ports]
    messages = sum(x["messages"] for x in shards)
    cpu = sum(x["cpu_s"] for x in shards)
    counts = [x["messages"] for x in shards]
    runs[label] = {
        "messages_per_sec": round(s["acked"] / s["duration_secs"]),
        "deliveries_per_sec": round(s["deliveries_per_sec"]),
        "missing": s["missing"], "duplicates": s["duplicates"],
        "redis_cpu_us_per_message": round(cpu * 1e6 / messages, 2) if messages else None,
        "busiest_over_least": round(max(counts) / min(counts), 2) if min(counts) else None,
        "shards": shards,
    }

bad = [l for l, r in runs.items() if r["missing"] or r["duplicates"]]
if os.environ["QUICK"] == "1":
    # Nothing is kept from a quick run.
    if bad:
        sys.exit(f"bench: small rooms lost or repeated messages on {bad}")
    print("bench: small rooms delivered everything exactly once on one Redis and on a cluster")
    sys.exit(0)

facts = {"clients": int(os.environ["CLIENTS"]), "rooms": int(os.environ["ROOMS"]),
         "duration_secs": int(os.environ["DURATION"]), "load_before": os.environ["LOAD"],
         "redis": os.environ["REDIS"], "runs": runs}
with open(out + ".json", "w") as f:
    json.dump(facts, f, indent=2)
lines = [f"# Small rooms: {facts['clients']} clients in {facts['rooms']} rooms of 2",
         "", f"Saturation (8 in flight per client), {facts['duration_secs']} s, two nodes; "
         f"load average before: {facts['load_before']}; {facts['redis']}.", "",
         "| backplane | messages/s | Redis CPU per message | busiest shard / least | missing | duplicates |",
         "|---|---|---|---|---|---|"]
for label, r in runs.items():
    lines.append(f"| {label} | {r['messages_per_sec']:,} | {r['redis_cpu_us_per_message']} µs | "
                 f"{r['busiest_over_least']} | {r['missing']} | {r['duplicates']} |")
lines += ["", "| shard (master port) | messages | CPU s | CPU per message |", "|---|---|---|---|"]
for x in runs["cluster"]["shards"]:
    lines.append(f"| {x['port']} | {x['messages']:,} | {x['cpu_s']} | {x['cpu_us_per_message']} µs |")
with open(out + ".md", "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
print(f"bench: wrote {out}.md and {out}.json")
if bad:
    sys.exit(f"bench: small rooms lost or repeated messages on {bad}")
EOF
