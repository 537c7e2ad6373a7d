"""Writes the benchmark's results as JSON and a markdown table.

Called by bench/run.sh with the run's working directory in $WORK: one ws-client summary
(<mode>.json, or <mode>.1.json … when several ws-client processes ran side by side) and one
file of process facts (<mode>.facts: CPU seconds and peak RSS of every node and of Redis,
ws-client's own CPU) per mode. The argument is the output path without extension.
"""

import json
import os
import platform
import sys

MODES = ["few-clients", "many-clients", "saturation", "latency", "http-ingest", "connections"]

# Latency fields of a summary, and how side-by-side processes combine them: the worst tail,
# and the median and mean weighted by each process's samples (an approximation: the exact
# median of the union would need the histograms themselves).
WORST = ["p90", "p99", "p999", "max"]
WEIGHTED = ["avg", "p50"]


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "rustc": os.environ["RUSTC"],
        "redis": os.environ["REDIS"],
        "commit": os.environ["COMMIT"],
        "node_flags": os.environ["NODE_FLAGS"],
        "load_average_before": os.environ["LOAD_BEFORE"],
        "load_average_after": os.environ["LOAD_AFTER"],
    }


def facts(path):
    out = {}
    with open(path) as f:
        for line in f:
            key, value = line.split()
            out[key] = float(value)
    return out


def add_counts(parts):
    total = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total


def weighted(values, weights):
    total = sum(weights)
    return sum(v * w for v, w in zip(values, weights)) / total if total else 0.0


def merge(reports):
    """One report from those of processes run side by side: counts and rates summed, latency
    as WORST and WEIGHTED say, the series summed interval by interval."""
    if len(reports) == 1:
        return reports[0]
    sums = [s["summary"] for s in reports]
    s = dict(sums[0])
    for key, value in s.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in (
            "rooms", "message_size", "duration_secs", "drain_secs", "open_file_limit"
        ):
            s[key] = sum(x[key] for x in sums)
    s["rooms"] = sum(x["rooms"] for x in sums)
    s["drain_secs"] = max(x["drain_secs"] for x in sums)
    s["drain_complete"] = all(x["drain_complete"] for x in sums)
    s["errors"] = add_counts(x["errors"] for x in sums)
    s["connection_failures"] = add_counts(x["connection_failures"] for x in sums)
    lats = [x["latency_ms"] for x in sums]
    samples = [lat["samples"] for lat in lats]
    latency = {"samples": sum(samples)}
    latency.update({k: max(lat[k] for lat in lats) for k in WORST})
    latency.update({k: weighted([lat[k] for lat in lats], samples) for k in WEIGHTED})
    s["latency_ms"] = latency
    s["processes"] = len(reports)
    series = []
    for rows in zip(*(r["series"] for r in reports)):
        row = {k: sum(r[k] for r in rows) for k in ("received", "sent", "connected",
                                                      "deliveries_per_sec", "sends_per_sec")}
        row["t_secs"] = rows[0]["t_secs"]
        row["p99_ms"] = max(r["p99_ms"] for r in rows)
        row["p50_ms"] = weighted([r["p50_ms"] for r in rows], [r["deliveries_per_sec"] for r in rows])
        series.append(row)
    return {"summary": s, "series": series}


def load_reports(work, mode):
    single = os.path.join(work, mode + ".json")
    if os.path.exists(single):
        paths = [single]
    else:
        paths = []
        while os.path.exists(os.path.join(work, f"{mode}.{len(paths) + 1}.json")):
            paths.append(os.path.join(work, f"{mode}.{len(paths) + 1}.json"))
    reports = []
    for path in paths:
        with open(path) as f:
            reports.append(json.load(f))
    return merge(reports)


def mode_result(work, mode):
    report = load_reports(work, mode)
    s = report["summary"]
    p = facts(os.path.join(work, mode + ".facts"))
    nodes_cpu = sum(p[f"node{i}_cpu"] for i in (1, 2, 3))
    per_million = s["deliveries"] / 1e6
    result = {
        "exit_status": int(p["status"]),
        "clients": s["clients_started"],
        "peak_connected": s["peak_connected"],
        "deliveries_per_sec": round(s["deliveries_per_sec"]),
        "peak_interval_deliveries_per_sec": round(s["peak_deliveries_per_sec"]),
        "sends_per_sec": round(s["sends_per_sec"]),
        "latency_ms": s["latency_ms"],
        "expected": s["expected"],
        "missing": s["missing"],
        "duplicates": s["duplicates"],
        "refused": s["refused"],
        "skipped_sends": s["skipped_sends"],
        "reconnects": s["reconnects"],
        "connection_failures": s["connection_failures"],
        "errors": s["errors"],
        "node_peak_rss_mib": [round(p[f"node{i}_peak_rss_kib"] / 1024, 1) for i in (1, 2, 3)],
        "redis_peak_rss_mib": round(p["redis_peak_rss_kib"] / 1024, 1),
        "server_cpu_secs": round(nodes_cpu + p["redis_cpu"], 2),
        "client_cpu_secs": round(p["client_cpu"], 2),
        "server_cpu_secs_per_million": round((nodes_cpu + p["redis_cpu"]) / per_million, 3)
        if per_million
        else None,
        "client_cpu_secs_per_million": round(p["client_cpu"] / per_million, 3)
        if per_million
        else None,
        "summary": s,
        "series": report["series"],
    }
    if mode == "many-clients" and s["peak_connected"]:
        peak = sum(p[f"node{i}_peak_rss_kib"] for i in (1, 2, 3))
        result["node_rss_kib_per_connection"] = round(
            (peak - p["idle_rss_kib"]) / s["peak_connected"], 1
        )
    if "node1_held_connections" in p:
        held = [int(p[f"node{i}_held_connections"]) for i in (1, 2, 3)]
        grown = [p[f"node{i}_held_rss_kib"] - p[f"node{i}_idle_rss_kib"] for i in (1, 2, 3)]
        result["processes"] = int(p["processes"])
        result["held_connections"] = held
        result["held_rss_mib"] = [round(p[f"node{i}_held_rss_kib"] / 1024, 1) for i in (1, 2, 3)]
        result["idle_rss_kib_per_connection"] = [
            round(g / c, 2) if c else None for g, c in zip(grown, held)
        ]
        result["idle_rss_kib_per_connection_all"] = (
            round(sum(grown) / sum(held), 2) if sum(held) else None
        )
    if mode == "latency":
        with open(os.path.join(work, "latency.interval")) as f:
            result["interval_ms"] = int(f.read())
    return result


def fmt_rate(value):
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    if value >= 1e3:
        return f"{value / 1e3:.1f} k"
    return f"{value:.0f}"


def markdown(results, m, duration):
    lines = [
        f"# Cluster benchmark, {os.environ['STAMP']}",
        "",
        f"Three chat-server nodes and Redis on loopback, ws-client on the same machine, "
        f"{duration} s per mode, a fresh cluster per mode, encryption on, node flags "
        f"`{m['node_flags']}`. "
        f"Reproduce with `bench/run.sh`.",
        "",
        f"Machine: {m['cores']} cores, {m['cpu']}, {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"{m['rustc']}, {m['redis']}, commit {m['commit']}. "
        f"Load average before/after: {m['load_average_before']} / {m['load_average_after']} "
        f"(the machine may be shared with other work: read the figures as a floor).",
        "",
        "| mode | clients | deliveries/s | peak 3 s | sends/s | p50 ms | p99 ms | max ms "
        "| missing | dup. | node peak RSS MiB | Redis MiB | server CPU s / M | client CPU s / M |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in MODES:
        r = results[mode]
        lat = r["latency_ms"]
        lines.append(
            f"| {mode} | {r['clients']} | {fmt_rate(r['deliveries_per_sec'])} "
            f"| {fmt_rate(r['peak_interval_deliveries_per_sec'])} "
            f"| {fmt_rate(r['sends_per_sec'])} | {lat['p50']:.2f} | {lat['p99']:.2f} "
            f"| {lat['max']:.1f} | {r['missing']} | {r['duplicates']} "
            f"| {' / '.join(f'{x:.0f}' for x in r['node_peak_rss_mib'])} "
            f"| {r['redis_peak_rss_mib']:.0f} | {r['server_cpu_secs_per_million']} "
            f"| {r['client_cpu_secs_per_million']} |"
        )
    ingest = results["http-ingest"]
    lines += [
        "",
        f"HTTP ingest: {fmt_rate(ingest['sends_per_sec'])} messages/s accepted through "
        "`POST /api/publish/batch` on node 1 (its sends/s: ws-client's defaults, batches of "
        "20,000 and 2 requests in flight, the 2 feeders counted among its clients), "
        f"{fmt_rate(ingest['deliveries_per_sec'])} deliveries/s to the WebSocket members on "
        "the three nodes; latency runs from stamping a message into its batch to its arrival.",
    ]
    many = results["many-clients"]
    if "node_rss_kib_per_connection" in many:
        lines += [
            "",
            f"Many-clients: {many['peak_connected']} connections at peak, node RSS "
            f"{many['node_rss_kib_per_connection']} KiB per connection "
            "(peak RSS of the three nodes less their idle RSS, over the peak connections).",
        ]
    sat = results["saturation"]
    lat = results["latency"]
    lines += [
        "",
        f"Latency at a tenth of saturation: {lat['clients']} clients in one room over the three "
        f"nodes, each sending every {lat['interval_ms']} ms, chosen from saturation's "
        f"{fmt_rate(sat['deliveries_per_sec'])} deliveries/s: "
        f"{fmt_rate(lat['deliveries_per_sec'])} deliveries/s, latency from sender to every "
        f"recipient p50 {lat['latency_ms']['p50']:.2f} ms, p99 {lat['latency_ms']['p99']:.2f} ms, "
        f"max {lat['latency_ms']['max']:.1f} ms (targets: p50 below 0.5 ms, p99 below 2 ms).",
    ]
    conn = results["connections"]
    if "held_connections" in conn:
        s = conn["summary"]
        lines += [
            "",
            f"Connections: {conn['processes']} ws-client processes side by side, "
            f"{conn['clients']} clients in all, {s['rooms']} rooms, each client sending once on "
            f"joining. Once all had joined and the nodes were idle, the nodes held "
            f"{' / '.join(str(c) for c in conn['held_connections'])} connections "
            f"({sum(conn['held_connections'])} in all) at "
            f"{' / '.join(f'{x:.0f}' for x in conn['held_rss_mib'])} MiB of RSS: "
            f"{' / '.join(str(x) for x in conn['idle_rss_kib_per_connection'])} KiB per "
            f"connection (RSS then less RSS before any connection, over the node's connections; "
            f"{conn['idle_rss_kib_per_connection_all']} KiB over all three; target at most 6 KiB). "
            f"Missing {conn['missing']} and duplicates {conn['duplicates']} of "
            f"{conn['expected']} owed, summed over the processes; their latency merged as the "
            "worst p99 and max and a sample-weighted p50.",
        ]
    lines += ["", "Overload, per mode (what the nodes refused or closed, and what clients skipped):", ""]
    for mode in MODES:
        r = results[mode]
        failures = ", ".join(f"{k}: {v}" for k, v in r["connection_failures"].items()) or "none"
        errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"
        lines.append(
            f"- {mode}: {r['expected']} deliveries owed; connection failures: {failures}; "
            f"error frames: {errors}; {r['reconnects']} reconnects; "
            f"{r['skipped_sends']} scheduled sends skipped (window full or asked to wait); "
            f"drain {r['summary']['drain_secs']:.1f} s"
            + ("" if r["summary"]["drain_complete"] else ", cut off with deliveries still arriving")
            + "."
        )
    lines += ["", "Status lines (every 3 s), per mode:", ""]
    for mode in MODES:
        lines += [f"{mode}:", "", "```"]
        for row in results[mode]["series"]:
            lines.append(
                f"status: Status({row['received']}, {row['sent']}, {row['connected']})  "
                f"{fmt_rate(row['deliveries_per_sec'])} deliveries/s  "
                f"{fmt_rate(row['sends_per_sec'])} sends/s  "
                f"p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms"
            )
        lines += ["```", ""]
    return "\n".join(lines)


def main():
    work = os.environ["WORK"]
    out = sys.argv[1]
    m = machine()
    results = {mode: mode_result(work, mode) for mode in MODES}
    duration = round(results["few-clients"]["summary"]["duration_secs"])
    with open(out + ".json", "w") as f:
        json.dump({"machine": m, "results": results}, f, indent=2)
        f.write("\n")
    with open(out + ".md", "w") as f:
        f.write(markdown(results, m, duration))


main()
