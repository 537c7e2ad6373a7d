#!/usr/bin/env python3
"""The report of bench/run.sh --peers: issue 16's table, Socket.IO beside this project, from
the facts bench/peers/sides.sh took and the clients' summaries, as markdown and JSON.

    report.py OUT            writes OUT.md and OUT.json (environment: WORK, COMMIT, ARGS, ...)
    report.py --check WORK   the --quick check: prints each shape's figures and exits 1 unless
                             our side lost and duplicated nothing, Socket.IO delivered, and
                             every idle connection was held on both sides

Every figure is derived here, the same way for both sides, so that the sides differ only in
what was measured.
"""

import json
import os
import platform
import sys
from pathlib import Path

SIDES = ("socketio", "ours")
PEER = "Socket.IO 4.8 + redis-adapter"
# Issue 16's targets for this project.
TARGETS = {
    "deliveries_per_sec": 2_000_000,
    "server_cpu_per_million": 0.30,
    "client_cpu_per_million": 0.30,
    "latency_p50_ms": 0.30,
    "latency_p99_ms": 1.0,
    "idle_rss_kib_per_connection": 4.0,
}
HIGHER_IS_BETTER = {"deliveries_per_sec"}


def facts(work, label):
    """The "key value" lines sides.sh wrote for one side's shape."""
    out = {}
    path = work / f"{label}.facts"
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
    return out


def summary(work, label):
    """A client's summary: ws-client nests it under "summary", client.mjs writes it bare."""
    path = work / f"{label}.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return data.get("summary", data)


def delivery_secs(s):
    """From the first send to the last delivery: the seconds of sending and of the drain, less
    the quiet second that ends a complete drain. A server that acks before it delivers (as
    Socket.IO does) is still delivering after the senders stop; over the seconds of sending
    alone, as ws-client's own rate is, that backlog would count as speed."""
    if not s.get("duration_secs"):
        return 0
    quiet = 1.0 if s.get("drain_complete") else 0.0
    return s["duration_secs"] + max(0.0, s.get("drain_secs", 0) - quiet)


def per_million(seconds, deliveries):
    return seconds / deliveries * 1e6 if deliveries else None


def chart_entry(work, label, series=False):
    """A shape's figures as bench/charts.py reads them, with this report's deliveries/s; with
    `series`, also ws-client's summary and status lines, for the charts over time."""
    s = summary(work, label)
    secs = delivery_secs(s)
    entry = {"deliveries_per_sec": s.get("deliveries", 0) / secs if secs else 0,
             "latency_ms": s.get("latency_ms", {})}
    if series:
        entry.update(json.loads((work / f"{label}.json").read_text()))
    return entry


def side_figures(work, side):
    """Every figure of the table for one side, and the details behind them."""
    sat_f, sat = facts(work, f"{side}-saturation"), summary(work, f"{side}-saturation")
    lat_f, lat = facts(work, f"{side}-latency"), summary(work, f"{side}-latency")
    idle_f, idle = facts(work, f"{side}-idle"), summary(work, f"{side}-idle")

    def server_cpu(f):
        return sum(f.get(f"after_{k}", 0) - f.get(f"before_{k}", 0) for k in ("nodes_cpu", "redis_cpu"))

    deliveries = sat.get("deliveries", 0)
    held = idle_f.get("held_connections", 0)
    rss_delta = idle_f.get("held_nodes_rss_kib", 0) - idle_f.get("before_nodes_rss_kib", 0)
    latency = lat.get("latency_ms", {})
    return {
        "deliveries_per_sec": deliveries / delivery_secs(sat) if delivery_secs(sat) else None,
        "server_cpu_per_million": per_million(server_cpu(sat_f), deliveries),
        "client_cpu_per_million": per_million(sat_f.get("client_cpu", 0), deliveries),
        "latency_p50_ms": latency.get("p50"),
        "latency_p99_ms": latency.get("p99"),
        "idle_rss_kib_per_connection": rss_delta / held if held else None,
        "details": {
            "saturation": shape_details(sat_f, sat),
            "latency": shape_details(lat_f, lat),
            "idle": {
                "connections_held": held,
                "nodes_rss_before_kib": idle_f.get("before_nodes_rss_kib"),
                "nodes_rss_held_kib": idle_f.get("held_nodes_rss_kib"),
                "client_status": idle_f.get("status"),
            },
        },
    }


def shape_details(f, s):
    latency = s.get("latency_ms", {})
    return {
        "sends_per_sec": s.get("sends_per_sec"),
        "deliveries": s.get("deliveries"),
        "missing": s.get("missing"),
        "duplicates": s.get("duplicates"),
        # Deliveries still coming in after sending stopped: a backlog the rate above includes.
        "drain_secs": s.get("drain_secs"),
        "drain_complete": s.get("drain_complete"),
        "latency_p50_ms": latency.get("p50"),
        "latency_p99_ms": latency.get("p99"),
        "nodes_cpu_s": f.get("after_nodes_cpu", 0) - f.get("before_nodes_cpu", 0),
        "redis_cpu_s": f.get("after_redis_cpu", 0) - f.get("before_redis_cpu", 0),
        "client_cpu_s": f.get("client_cpu"),
        "client_status": f.get("status"),
    }


DETAILS = [
    # column, key, format
    ("sends/s", "sends_per_sec", "{:,.0f}"),
    ("deliveries", "deliveries", "{:,.0f}"),
    ("missing", "missing", "{:,.0f}"),
    ("duplicates", "duplicates", "{:,.0f}"),
    ("drain s", "drain_secs", "{:.1f}"),
    ("p50 / p99 ms", None, None),
    ("nodes CPU-s", "nodes_cpu_s", "{:.2f}"),
    ("Redis CPU-s", "redis_cpu_s", "{:.2f}"),
    ("client CPU-s", "client_cpu_s", "{:.2f}"),
]


def detail_row(shape, side, d):
    cells = []
    for _, key, form in DETAILS:
        if key is None:
            cells.append(f"{d['latency_p50_ms'] or 0:.2f} / {d['latency_p99_ms'] or 0:.2f}")
        elif d.get(key) is None:
            cells.append("n/a")
        else:
            cells.append(form.format(d[key]) + ("" if key != "drain_secs" or d["drain_complete"]
                                                else " (cut)"))
    return f"| {shape}, {side} | " + " | ".join(cells) + " |"


def fmt(key, value):
    if value is None:
        return "n/a"
    if key == "deliveries_per_sec":
        return f"{value / 1000:,.0f}k"
    return f"{value:.2f}"


def ratio_text(key, theirs, ours):
    """How many times better ours is (or worse), in words that need no sign convention."""
    if not theirs or not ours:
        return "n/a"
    if key in HIGHER_IS_BETTER:
        better = ours / theirs
        return f"ours {better:.1f}× more" if better >= 1 else f"ours {1 / better:.1f}× less"
    better = theirs / ours
    return f"ours {better:.1f}× less" if better >= 1 else f"ours {1 / better:.1f}× more"


def met(key, ours):
    if ours is None:
        return "n/a"
    ok = ours >= TARGETS[key] if key in HIGHER_IS_BETTER else ours <= TARGETS[key]
    return "met" if ok else "**not met**"


ROWS = [
    ("deliveries_per_sec", "deliveries/s at saturation (window 8 per client)", "≥ 2M"),
    ("server_cpu_per_million", "server CPU-s per million deliveries (nodes + Redis)", "≤ 0.30"),
    ("client_cpu_per_million", "load-client CPU-s per million deliveries", "≤ 0.30"),
    ("latency_p50_ms", "latency p50 at 290 sends/s, ms", "≤ 0.30"),
    ("latency_p99_ms", "latency p99 at 290 sends/s, ms", "≤ 1.0"),
    ("idle_rss_kib_per_connection", "node RSS per idle connection, KiB", "≤ 4"),
]


def machine():
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = next((l.split()[1] for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")), "0")
    return f"{os.cpu_count()} cores, {model}, {int(mem) / 1024 / 1024:.0f} GiB, {platform.system()} {platform.release()}"


def npm_version(name):
    path = Path(__file__).parent / "node_modules" / name / "package.json"
    return json.loads(path.read_text())["version"] if path.exists() else "unknown"


def markdown(env, figures):
    theirs, ours = figures["socketio"], figures["ours"]
    lines = [
        f"# Beside Socket.IO: {env['stamp']}",
        "",
        f"Commit {env['commit']}; `bench/run.sh --peers {env['args']}`; machine: {env['machine']}; "
        f"load average before {env['load_before']}, after {env['load_after']}.",
        f"Versions: {env['versions']}.",
        "",
        "Two nodes and one Redis on each side, 100 clients in one room (unless --clients says "
        "otherwise), 90-byte messages; the rate shape sends "
        f"{env['rate']} messages/s in all (one every {env['interval_ms']} ms per client).",
        "",
        f"| measure | {PEER} (lean client) | this project | ratio | target | target met |",
        "|---|---|---|---|---|---|",
    ]
    for key, label, target in ROWS:
        lines.append(
            f"| {label} | {fmt(key, theirs[key])} | {fmt(key, ours[key])} | "
            f"{ratio_text(key, theirs[key], ours[key])} | {target} | {met(key, ours[key])} |"
        )
    lines += ["", "Deliveries/s is every delivery over the time from the first send to the last "
              "delivery (the seconds of sending, and of the drain less its closing quiet second), "
              "the same for both sides; CPU is over the whole shape (connecting, sending, "
              "draining). A drain marked (cut) ended at its limit with deliveries still coming, "
              "which then count as missing.",
              "", "| shape, side | " + " | ".join(c for c, _, _ in DETAILS) + " |",
              "|---" * (len(DETAILS) + 1) + "|"]
    for shape in ("saturation", "latency"):
        for side in SIDES:
            lines.append(detail_row(shape, side, figures[side]["details"][shape]))
    for side in SIDES:
        d = figures[side]["details"]["idle"]
        lines.append(f"\nIdle, {side}: {d['connections_held']:,.0f} connections held; nodes' RSS "
                     f"{d['nodes_rss_before_kib']:,.0f} KiB before, {d['nodes_rss_held_kib']:,.0f} KiB held.")
    return "\n".join(lines) + "\n"


def check(work):
    """The --quick verdict: sanity, never speed."""
    problems = []
    for side in SIDES:
        fig = side_figures(work, side)
        for shape in ("saturation", "latency"):
            d = fig["details"][shape]
            print(f"peers --quick: {side} {shape}: {d['deliveries']} deliveries, "
                  f"{d['missing']} missing, {d['duplicates']} duplicates")
            if not d["deliveries"]:
                problems.append(f"{side} {shape}: nothing delivered")
            if side == "ours" and (d["missing"] or d["duplicates"]):
                problems.append(f"ours {shape}: {d['missing']} missing, {d['duplicates']} duplicates")
        held = fig["details"]["idle"]["connections_held"]
        print(f"peers --quick: {side} idle: {held:.0f} connections held")
        if not held:
            problems.append(f"{side} idle: no connection held")
    for problem in problems:
        print(f"peers --quick: FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main():
    if sys.argv[1:2] == ["--check"]:
        return check(Path(sys.argv[2]))
    out = Path(sys.argv[1])
    work = Path(os.environ["WORK"])
    figures = {side: side_figures(work, side) for side in SIDES}
    env = {
        "stamp": out.name,
        "commit": os.environ.get("COMMIT", "unknown"),
        "args": os.environ.get("ARGS", ""),
        "rate": os.environ.get("RATE", "290"),
        "interval_ms": os.environ.get("INTERVAL_MS", "?"),
        "machine": machine(),
        "load_before": os.environ.get("LOAD_BEFORE", "?"),
        "load_after": os.environ.get("LOAD_AFTER", "?"),
        "versions": ", ".join([
            f"node {os.environ.get('NODE', '?')}",
            f"socket.io {npm_version('socket.io')}",
            f"@socket.io/redis-adapter {npm_version('@socket.io/redis-adapter')}",
            f"redis (npm) {npm_version('redis')}",
            f"ws {npm_version('ws')}",
            os.environ.get("RUSTC", "rustc ?"),
            os.environ.get("REDIS", "redis-server ?"),
        ]),
    }
    out.with_suffix(".md").write_text(markdown(env, figures))
    rows = {key: {"socketio": figures["socketio"][key], "ours": figures["ours"][key],
                  "target": TARGETS[key], "ours_over_socketio":
                  figures["ours"][key] / figures["socketio"][key]
                  if figures["ours"][key] and figures["socketio"][key] else None}
            for key, _, _ in ROWS}
    # Our runs under "results" and Socket.IO's under "peers", in the shape bench/charts.py
    # reads, so that it draws our shapes over time and both sides as bars.
    report = {
        "env": env,
        "table": rows,
        "details": {s: figures[s]["details"] for s in SIDES},
        "results": {mode: chart_entry(work, f"ours-{shape}", series=True)
                    for mode, shape in (("saturation", "saturation"), ("latency", "latency"),
                                        ("connections", "idle"))
                    if (work / f"ours-{shape}.json").exists()},
        "peers": {PEER: {shape: chart_entry(work, f"socketio-{shape}")
                         for shape in ("saturation", "latency")}},
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
