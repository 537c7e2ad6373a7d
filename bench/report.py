"""Writes the benchmark's results as JSON and a markdown table.

Called by bench/run.sh with the run's working directory in $WORK: one ws-client summary
(<mode>.json, or <mode>.1.json … when several ws-client processes ran side by side) and one
file of process facts (<mode>.facts: CPU seconds and peak RSS of every node and of Redis,
ws-client's own CPU) per mode that ran. The argument is the output path without extension.
bench/charts.py imports it for its reading and merging of ws-client summaries, so the quick
run's charts and the full run's report add side-by-side processes up the same way.
"""

import json
import os
import platform
import sys

MODES = [
    "few-clients", "many-clients", "saturation", "latency", "http-ingest", "connections", "big-room",
]

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


def merge_latency(lats):
    samples = [lat["samples"] for lat in lats]
    latency = {"samples": sum(samples)}
    latency.update({k: max(lat[k] for lat in lats) for k in WORST})
    latency.update({k: weighted([lat[k] for lat in lats], samples) for k in WEIGHTED})
    return latency


def merge_counts(counts):
    """The processes' count checks as one: every room's clients agree when they agree within
    each process and, for one shared room, on the same count; the count settled when the
    last process's counts stopped changing, after the last membership change of any."""
    c = {k: sum(x[k] for x in counts) for k in ("joined", "rooms", "rooms_agreeing", "behind")}
    c["rooms_matching_joined"] = sum(x["rooms_matching_joined"] for x in counts)
    values = {x["count"] for x in counts}
    c["count"] = values.pop() if len(values) == 1 else None
    c["count_min"] = min((x["count_min"] for x in counts if x["count_min"] is not None), default=None)
    c["count_max"] = max((x["count_max"] for x in counts if x["count_max"] is not None), default=None)
    c["last_member_change_us"] = max(x["last_member_change_us"] for x in counts)
    c["last_count_change_us"] = max(x["last_count_change_us"] for x in counts)
    agree = all(x["settled_ms"] is not None for x in counts)
    c["settled_ms"] = (
        max(0, c["last_count_change_us"] - c["last_member_change_us"]) / 1000 if agree else None
    )
    return c


def merge_membership(parts):
    m = {k: sum(x[k] for x in parts) for k in (
        "clients_joined", "joined_at_end", "joined_cut", "presence_frames", "presence_frames_named",
    )}
    m["joined_names_max"] = max(x["joined_names_max"] for x in parts)
    m["join_latency_ms"] = merge_latency([x["join_latency_ms"] for x in parts])
    m["presence_per_client_per_sec"] = weighted(
        [x["presence_per_client_per_sec"] for x in parts], [x["joined_at_end"] for x in parts]
    )
    m["peak_presence_per_client_per_sec"] = max(x["peak_presence_per_client_per_sec"] for x in parts)
    m["counts"] = merge_counts([x["counts"] for x in parts])
    churns = [x["churn"] for x in parts if "churn" in x]
    if churns:
        churn = dict(churns[0])
        for k in ("per_sec", "asked", "skipped", "leaves"):
            churn[k] = sum(x[k] for x in churns)
        churn["complete"] = all(x["complete"] for x in churns)
        started = [x["started_us"] for x in churns if x["started_us"] is not None]
        stopped = [x["stopped_us"] for x in churns if x["stopped_us"] is not None]
        churn["started_us"] = min(started, default=None)
        churn["stopped_us"] = max(stopped, default=None)
        churn["rejoin_latency_ms"] = merge_latency([x["rejoin_latency_ms"] for x in churns])
        m["churn"] = churn
    return m


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
    s["membership"] = merge_membership([x["membership"] for x in sums])
    s["rooms"] = sum(x["rooms"] for x in sums)
    s["drain_secs"] = max(x["drain_secs"] for x in sums)
    s["drain_complete"] = all(x["drain_complete"] for x in sums)
    s["errors"] = add_counts(x["errors"] for x in sums)
    s["connection_failures"] = add_counts(x["connection_failures"] for x in sums)
    s["latency_ms"] = merge_latency([x["latency_ms"] for x in sums])
    s["processes"] = len(reports)
    series = []
    for rows in zip(*(r["series"] for r in reports)):
        row = {k: sum(r[k] for r in rows) for k in ("received", "sent", "connected", "joined",
                                                      "deliveries_per_sec", "sends_per_sec")}
        row["presence_per_client_per_sec"] = weighted(
            [r["presence_per_client_per_sec"] for r in rows], [r["joined"] for r in rows]
        )
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
    result.update(membership_result(s["membership"], p, nodes_cpu))
    return result


def membership_result(m, p, nodes_cpu):
    """Joins, presence and counts, and with a hold what the nodes spent on the joins (from
    the start to the hold, idle settling included) and after it (the churn, if any)."""
    out = {
        "membership": m,
        "redis_used_mib": round(p.get("redis_used_kib", 0) / 1024, 1),
    }
    if "node1_held_cpu" not in p:
        return out
    held_cpu = sum(p[f"node{i}_held_cpu"] for i in (1, 2, 3))
    joining = held_cpu - sum(p[f"node{i}_start_cpu"] for i in (1, 2, 3))
    joins = m["join_latency_ms"]["samples"]
    out["redis_held_used_mib"] = round(p["redis_held_used_kib"] / 1024, 1)
    out["node_cpu_secs_joining"] = round(joining, 2)
    out["node_cpu_us_per_join"] = round(joining * 1e6 / joins, 1) if joins else None
    out["node_cpu_secs_after_hold"] = round(nodes_cpu - held_cpu, 2)
    churn = m.get("churn")
    if churn and churn["leaves"]:
        out["node_cpu_us_per_churn"] = round((nodes_cpu - held_cpu) * 1e6 / churn["leaves"], 1)
    return out


def fmt_rate(value):
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    if value >= 1e3:
        return f"{value / 1e3:.1f} k"
    return f"{value:.0f}"


def dash(value):
    """A figure, or a dash where there is none (CPU per million deliveries of idle modes)."""
    return "–" if value is None else value


def header(results, m):
    modes = ", ".join(results)
    return [
        f"# Cluster benchmark, {os.environ['STAMP']}",
        "",
        f"Three chat-server nodes and Redis on loopback, ws-client on the same machine, "
        f"modes {modes}, a fresh cluster per mode, encryption on, node flags "
        f"`{m['node_flags']}`. "
        "Reproduce with `" + " ".join(["bench/run.sh"] + os.environ.get("ARGS", "").split()) + "`.",
        "",
        f"Machine: {m['cores']} cores, {m['cpu']}, {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"{m['rustc']}, {m['redis']}, commit {m['commit']}. "
        f"Load average before/after: {m['load_average_before']} / {m['load_average_after']} "
        f"(the machine may be shared with other work: read the figures as a floor).",
        "",
        "| mode | clients | seconds | deliveries/s | peak 3 s | sends/s | p50 ms | p99 ms | max ms "
        "| missing | dup. | node peak RSS MiB | Redis MiB | server CPU s / M | client CPU s / M |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ] + [
        f"| {mode} | {r['clients']} | {r['summary']['duration_secs']:.0f} "
        f"| {fmt_rate(r['deliveries_per_sec'])} "
        f"| {fmt_rate(r['peak_interval_deliveries_per_sec'])} "
        f"| {fmt_rate(r['sends_per_sec'])} | {r['latency_ms']['p50']:.2f} "
        f"| {r['latency_ms']['p99']:.2f} "
        f"| {r['latency_ms']['max']:.1f} | {r['missing']} | {r['duplicates']} "
        f"| {' / '.join(f'{x:.0f}' for x in r['node_peak_rss_mib'])} "
        f"| {r['redis_peak_rss_mib']:.0f} | {dash(r['server_cpu_secs_per_million'])} "
        f"| {dash(r['client_cpu_secs_per_million'])} |"
        for mode, r in results.items()
    ]


def ingest_text(results):
    ingest = results["http-ingest"]
    return [
        f"HTTP ingest: {fmt_rate(ingest['sends_per_sec'])} messages/s accepted through "
        "`POST /api/publish/batch` on node 1 (its sends/s: ws-client's defaults, batches of "
        "20,000 and 2 requests in flight, the 2 feeders counted among its clients), "
        f"{fmt_rate(ingest['deliveries_per_sec'])} deliveries/s to the WebSocket members on "
        "the three nodes; latency runs from stamping a message into its batch to its arrival.",
    ]


def many_text(results):
    many = results["many-clients"]
    if "node_rss_kib_per_connection" not in many:
        return []
    return [
        f"Many-clients: {many['peak_connected']} connections at peak, node RSS "
        f"{many['node_rss_kib_per_connection']} KiB per connection "
        "(peak RSS of the three nodes less their idle RSS, over the peak connections).",
    ]


def latency_text(results):
    sat = results["saturation"]
    lat = results["latency"]
    return [
        f"Latency at a tenth of saturation: {lat['clients']} clients in one room over the three "
        f"nodes, each sending every {lat['interval_ms']} ms, chosen from saturation's "
        f"{fmt_rate(sat['deliveries_per_sec'])} deliveries/s: "
        f"{fmt_rate(lat['deliveries_per_sec'])} deliveries/s, latency from sender to every "
        f"recipient p50 {lat['latency_ms']['p50']:.2f} ms, p99 {lat['latency_ms']['p99']:.2f} ms, "
        f"max {lat['latency_ms']['max']:.1f} ms (targets: p50 below 0.5 ms, p99 below 2 ms).",
    ]


def joins_text(r):
    """Joins and what the clients saw, for the modes whose clients hold idle."""
    m = r["membership"]
    j = m["join_latency_ms"]
    return (
        f"{m['clients_joined']} clients joined, {m['joined_at_end']} in their room at the end, "
        f"{r['reconnects']} reconnects; join latency (join sent to joined received) "
        f"p50 {j['p50']:.1f} ms, p99 {j['p99']:.1f} ms, max {j['max']:.1f} ms over "
        f"{j['samples']} joins; {m['presence_per_client_per_sec']:.2f} presence frames per "
        f"member per second joined ({m['peak_presence_per_client_per_sec']:.2f} in the busiest "
        f"3 s). "
    )


def connections_text(results):
    conn = results["connections"]
    if "held_connections" not in conn:
        return []
    return [
        f"Connections: {conn['processes']} ws-client processes side by side, "
        f"{conn['clients']} idle clients in all, {conn['summary']['rooms']} rooms. "
        + joins_text(conn)
        + "Once all had joined and the nodes were idle, the nodes held "
        f"{' / '.join(str(c) for c in conn['held_connections'])} connections "
        f"({sum(conn['held_connections'])} in all) at "
        f"{' / '.join(f'{x:.0f}' for x in conn['held_rss_mib'])} MiB of RSS: "
        f"{' / '.join(str(x) for x in conn['idle_rss_kib_per_connection'])} KiB per "
        f"connection (RSS then less RSS before any connection, over the node's connections; "
        f"{conn['idle_rss_kib_per_connection_all']} KiB over all three; target at most 6 KiB).",
    ]


def settled_text(m):
    c = m["counts"]
    if c["settled_ms"] is None:
        return (
            f"the counts members saw did not agree ({c['behind']} members behind their room's "
            f"highest, counts {c['count_min']} to {c['count_max']})"
        )
    truth = "the number of clients joined" if c["count"] == c["joined"] else (
        f"not the {c['joined']} clients joined"
    )
    return (
        f"every member saw count {c['count']} ({truth}), settled {c['settled_ms']:.0f} ms after "
        "the last join or leave of any process"
    )


def big_room_text(results):
    big = results["big-room"]
    m = big["membership"]
    lines = [
        f"Big room: {big['processes']} ws-client processes side by side, one loopback source "
        f"address each, {big['clients']} clients joining one room over the three nodes. "
        + joins_text(big)
        + f"`joined` listed at most {m['joined_names_max']} names ({m['joined_cut']} said "
        f"`more_members`). Node CPU for the joins (start to the hold, idle settling included): "
        f"{big.get('node_cpu_secs_joining')} s, {big.get('node_cpu_us_per_join')} µs per join. "
        f"Held: {' / '.join(str(c) for c in big.get('held_connections', []))} connections at "
        f"{' / '.join(f'{x:.0f}' for x in big.get('held_rss_mib', []))} MiB of node RSS, "
        f"Redis using {big.get('redis_held_used_mib')} MiB (peak RSS {big['redis_peak_rss_mib']} "
        "MiB).",
    ]
    churn = m.get("churn")
    if churn:
        r = churn["rejoin_latency_ms"]
        lines += [
            "",
            f"Churn: {churn['percent']}% of the members ({churn['per_sec']} a second in all) "
            f"leaving and rejoining every second for {churn['secs']:.0f} s"
            + ("" if churn["complete"] else " (cut short by the end of the run)")
            + f": {churn['leaves']} leaves answered, {churn['skipped']} turns skipped; rejoin "
            f"latency p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms; node "
            f"CPU after the hold {big.get('node_cpu_secs_after_hold')} s "
            f"({big.get('node_cpu_us_per_churn')} µs per leave and rejoin). After it, "
            + settled_text(m)
            + ".",
        ]
    return lines


PARAGRAPHS = [
    (("http-ingest",), ingest_text),
    (("many-clients",), many_text),
    (("saturation", "latency"), latency_text),
    (("connections",), connections_text),
    (("big-room",), big_room_text),
]


def overload_lines(results):
    lines = ["Overload, per mode (what the nodes refused or closed, and what clients skipped):", ""]
    for mode, r in results.items():
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
    return lines


def status_lines(results):
    lines = ["Status lines (every 3 s), per mode:", ""]
    for mode, r in results.items():
        idle = r["summary"]["mode"] == "idle"
        lines += [f"{mode}:", "", "```"]
        for row in r["series"]:
            tuple_ = f"status: Status({row['received']}, {row['sent']}, {row['connected']})"
            if idle:
                lines.append(
                    f"{tuple_}  {row['joined']} joined  "
                    f"{row['presence_per_client_per_sec']:.2f} presence/client/s"
                )
            else:
                lines.append(
                    f"{tuple_}  {fmt_rate(row['deliveries_per_sec'])} deliveries/s  "
                    f"{fmt_rate(row['sends_per_sec'])} sends/s  "
                    f"p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms"
                )
        lines += ["```", ""]
    return lines


def markdown(results, m):
    lines = header(results, m)
    for needs, paragraph in PARAGRAPHS:
        if all(mode in results for mode in needs):
            lines += [""] + paragraph(results)
    lines += [""] + overload_lines(results)
    lines += [""] + status_lines(results)
    return "\n".join(lines)


def main():
    work = os.environ["WORK"]
    out = sys.argv[1]
    m = machine()
    ran = [mode for mode in MODES if os.path.exists(os.path.join(work, mode + ".facts"))]
    results = {mode: mode_result(work, mode) for mode in ran}
    with open(out + ".json", "w") as f:
        json.dump({"machine": m, "results": results}, f, indent=2)
        f.write("\n")
    with open(out + ".md", "w") as f:
        f.write(markdown(results, m))


if __name__ == "__main__":
    main()
