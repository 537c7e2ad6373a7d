"""Draws the benchmark's charts: what a table of averages hides, a run's shape over time.

For each mode, one SVG with two panels over the run's 3 s status intervals: deliveries/s and
latency p50/p99 for the modes that send, clients joined and `presence` frames per member per
second for the idle ones (they send nothing, so they have no latency to draw). When the
results hold figures from peer servers, one more SVG puts this server and each peer side by
side, mode by mode, as bars.

    charts.py RESULTS.json        draws next to it: RESULTS-<mode>.svg, RESULTS-peers.svg
    charts.py --work DIR PREFIX   draws from the ws-client summaries in a bench/run.sh working
                                  directory (the quick run, which writes no results file)

Peer figures, when a peers' benchmark writes them, sit at the top of the results JSON in the
shape of this server's own results, so one reader serves both:

    "peers": {"<server>": {"<mode>": {"deliveries_per_sec": N,
                                      "latency_ms": {"p50": MS, "p99": MS}}}}

SVG because it stays small and sharp in the README; text is kept as text (not paths) and the
file carries no date, so drawing the same results twice gives the same bytes. Exits 3, saying
so, when matplotlib is missing: bench/run.sh decides whether that matters.
"""

import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import MODES, load_reports  # noqa: E402

try:
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
except ImportError:
    print(f"charts: matplotlib is missing for {sys.executable} (Debian: apt-get install "
          "python3-matplotlib)", file=sys.stderr)
    sys.exit(3)

US = "this server"
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def style():
    matplotlib.rcParams.update({
        "svg.fonttype": "none",
        "svg.hashsalt": "chat-bench",
        "font.size": 9,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
    })


def compact(value):
    """Axis figures as the report writes rates, shorter: 800k, 1.5M."""
    for size, unit in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"


RATE = FuncFormatter(lambda v, _: compact(v))


def log_axis(ax):
    """A log y axis labelled 1, 2, 5, 10 … in plain figures: latency spans orders of
    magnitude between modes and within an overloaded one."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def column(series, key, positive=False):
    """One field over the run; with positive, intervals without samples (latency 0) become
    gaps rather than a false drop to zero."""
    values = [row[key] for row in series]
    return [v if v > 0 or not positive else math.nan for v in values]


def draw_messages(top, bottom, series):
    t = column(series, "t_secs")
    top.plot(t, column(series, "deliveries_per_sec"), color=COLOURS[0], marker=".")
    top.set_ylabel("deliveries/s")
    top.yaxis.set_major_formatter(RATE)
    top.set_ylim(bottom=0)
    p50 = column(series, "p50_ms", positive=True)
    p99 = column(series, "p99_ms", positive=True)
    bottom.plot(t, p50, color=COLOURS[2], marker=".", label="p50")
    bottom.plot(t, p99, color=COLOURS[3], marker=".", label="p99")
    bottom.set_ylabel("latency, ms")
    if any(v > 0 for v in p50 + p99 if not math.isnan(v)):
        log_axis(bottom)
    bottom.legend(loc="upper left", frameon=False)


def draw_idle(top, bottom, series):
    t = column(series, "t_secs")
    top.plot(t, column(series, "connected"), color=COLOURS[0], marker=".", label="connected")
    top.plot(t, column(series, "joined"), color=COLOURS[1], marker=".", label="joined")
    top.set_ylabel("clients")
    top.yaxis.set_major_formatter(RATE)
    top.set_ylim(bottom=0)
    top.legend(loc="lower right", frameon=False)
    bottom.plot(t, column(series, "presence_per_client_per_sec"), color=COLOURS[4], marker=".")
    bottom.set_ylabel("presence / member / s")
    bottom.set_ylim(bottom=0)


def draw_mode(path, title, summary, series):
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 4.2))
    if summary["mode"] == "idle":
        draw_idle(top, bottom, series)
    else:
        draw_messages(top, bottom, series)
    bottom.set_xlabel("seconds into the run (one point per 3 s status line)")
    bottom.set_xlim(left=0)
    top.set_title(title, loc="left")
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)


def peer_table(doc):
    """The modes some peer ran, the servers (this one first) and each one's figures by mode;
    None when no peer ran."""
    peers = doc.get("peers") or {}
    modes = [m for m in MODES if any(m in figures for figures in peers.values())]
    if not modes:
        return None
    servers = {US: doc["results"]}
    servers.update(peers)
    return modes, servers


def figure_of(servers, server, mode, pick):
    r = servers[server].get(mode)
    value = pick(r) if r else None
    return value if value else math.nan


def draw_peers(path, title, modes, servers):
    panels = [
        ("deliveries/s", lambda r: r.get("deliveries_per_sec"), False),
        ("p99 latency, ms", lambda r: (r.get("latency_ms") or {}).get("p99"), True),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 5))
    width = 0.8 / len(servers)
    for ax, (label, pick, log) in zip(axes, panels):
        for i, server in enumerate(servers):
            xs = [m + (i - (len(servers) - 1) / 2) * width for m in range(len(modes))]
            ys = [figure_of(servers, server, mode, pick) for mode in modes]
            ax.bar(xs, ys, width, label=server, color=COLOURS[i % len(COLOURS)])
        ax.set_xticks(range(len(modes)), modes)
        ax.set_ylabel(label)
        if log:
            log_axis(ax)
        else:
            ax.yaxis.set_major_formatter(RATE)
    axes[0].legend(frameon=False)
    axes[0].set_title(title, loc="left")
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)


def mode_title(mode, summary, origin):
    return f"{mode}: {summary['clients_started']:,} clients ({origin})"


def draw_results(results_path):
    """Every chart of a results file, next to it; returns the paths written."""
    with open(results_path) as f:
        doc = json.load(f)
    prefix = results_path[: -len(".json")] if results_path.endswith(".json") else results_path
    origin = os.path.basename(prefix)
    written = []
    for mode, r in doc["results"].items():
        path = f"{prefix}-{mode}.svg"
        draw_mode(path, mode_title(mode, r["summary"], origin), r["summary"], r["series"])
        written.append(path)
    table = peer_table(doc)
    if table:
        path = f"{prefix}-peers.svg"
        draw_peers(path, f"this server beside its peers ({origin})", *table)
        written.append(path)
    return written


def draw_work(work, prefix):
    """A chart per mode whose ws-client summaries are in a bench/run.sh working directory."""
    written = []
    for mode in MODES:
        if not any(name.startswith(mode + ".") and name.endswith(".json")
                   for name in os.listdir(work)):
            continue
        report = load_reports(work, mode)
        path = f"{prefix}-{mode}.svg"
        summary = report["summary"]
        draw_mode(path, mode_title(mode, summary, "quick run"), summary, report["series"])
        written.append(path)
    return written


def main(argv):
    style()
    if len(argv) == 2 and argv[1] != "--work":
        written = draw_results(argv[1])
    elif len(argv) == 4 and argv[1] == "--work":
        written = draw_work(argv[2], argv[3])
    else:
        print("usage: charts.py RESULTS.json | charts.py --work DIR PREFIX", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
