"""Serving points (engine flea-serve): the serving table and the throughput-vs-concurrency plot.

A serving run's figures are in run["serving"] (results/FORMAT.md): output_tok_s, request_throughput_rps,
ttft_ms / tpot_ms / itl_ms percentiles, errors and bytes_read_per_token.
"""
from .fields import fmt, fmt_bytes, get, is_number, run_engine, sort_value

SERVE_ENGINE = "flea-serve"
GROUP_KEYS = ("model", "backend", "residency", "io", "prefetch", "ram_budget_mb", "vram_budget_mb", "threads")


def is_serving(run):
    return run_engine(run) == SERVE_ENGINE


def group_label(run, file_index=None):
    """The server configuration a point ran on: every point key but concurrency."""
    point = run.get("point") or {}
    parts = [str(point.get("model", "?")).replace("synth:", "")]
    parts += [f"{k}={point[k]}" for k in GROUP_KEYS[1:] if k in point and point[k] not in (0, None)
              and k not in ("backend", "prefetch", "threads")]
    return ", ".join(parts) + (f" (#{file_index + 1})" if file_index is not None else "")


def serving_entries(docs):
    """[(file index, run)] of serving runs, grouped by configuration, then by concurrency."""
    multi = len(docs) > 1
    entries = [(i, r) for i, d in enumerate(docs) for r in d["runs"] if is_serving(r)]
    return sorted(entries, key=lambda e: (group_label(e[1], e[0] if multi else None),
                                          sort_value(get(e[1], "point.concurrency"))))


def speedups(entries, multi):
    """{run id: output tok/s over its group's concurrency-1 figure} (absent without one)."""
    base = {}
    for i, run in entries:
        if run["status"] == "ok" and get(run, "point.concurrency") == 1 and is_number(get(run, "serving.output_tok_s")):
            base[group_label(run, i if multi else None)] = get(run, "serving.output_tok_s")
    out = {}
    for i, run in entries:
        b = base.get(group_label(run, i if multi else None))
        rate = get(run, "serving.output_tok_s")
        if run["status"] == "ok" and b and is_number(rate):
            out[(i, run.get("id"))] = rate / b
    return out


def pct_cells(run, key):
    return [fmt(get(run, f"serving.{key}.{p}")) for p in ("p50", "p90", "p99")]


SERVING_HEADERS = ["concurrency", "requests", "errors", "out tok/s", "× c=1", "req/s",
                   "TTFT p50 ms", "p90", "p99", "TPOT p50 ms", "p90", "p99", "ITL p50 ms", "p90", "p99",
                   "bytes read/token", "status"]


def serving_rows(docs):
    multi = len(docs) > 1
    entries = serving_entries(docs)
    ups = speedups(entries, multi)
    rows = []
    for i, run in entries:
        s = run.get("serving") or {}
        up = ups.get((i, run.get("id")))
        status = run["status"] if run["status"] == "ok" else f"{run['status']}: {run.get('error') or ''}"[:120]
        rows.append([run.get("id", "?"), group_label(run, i if multi else None), get(run, "point.concurrency", "—"),
                     s.get("requests", "—"), s.get("errors", "—"), fmt(s.get("output_tok_s")),
                     f"{up:.2f}×" if up else "—", fmt(s.get("request_throughput_rps"))]
                    + pct_cells(run, "ttft_ms") + pct_cells(run, "tpot_ms") + pct_cells(run, "itl_ms")
                    + [fmt_bytes(s.get("bytes_read_per_token")), status])
    return rows


def serving_section(docs, md_table):
    """The serving table, or None when no run is a serving point."""
    rows = serving_rows(docs)
    if not rows:
        return None
    notes = [
        "**out tok/s**: output tokens of the successful requests over the point's wall time (first send to last "
        "response), all clients together; **× c=1**: over the same server configuration at concurrency 1",
        "**TTFT**: request sent to its first token chunk; **TPOT**: per request, (last token − first token) / "
        "(tokens − 1); **ITL**: every gap between consecutive token chunks; percentiles over successful requests",
        "**bytes read/token**: the server's flea_weight_bytes_read_total over the timed requests / their output tokens",
    ]
    return ("## Serving\n\n" + md_table(["run", "server"] + SERVING_HEADERS, rows) + "\n\n"
            + "\n".join(f"- {n}" for n in notes))


def throughput_series(docs):
    """{group label: [(concurrency, output tok/s)]} over ok serving runs, sorted by concurrency."""
    multi = len(docs) > 1
    series = {}
    for i, run in serving_entries(docs):
        rate, c = get(run, "serving.output_tok_s"), get(run, "point.concurrency")
        if run["status"] == "ok" and is_number(rate) and is_number(c):
            series.setdefault(group_label(run, i if multi else None), []).append((c, rate))
    return series


def plot_throughput(docs, out_dir, plt, save):
    title = "Serving throughput vs concurrency"
    series = throughput_series(docs)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(8.5, 5))
    all_c = sorted({c for pts in series.values() for c, _ in pts})
    for label, pts in sorted(series.items()):
        xs, ys = [c for c, _ in pts], [r for _, r in pts]
        line, = ax.plot(xs, ys, marker="o", label=label)
        one = [r for c, r in pts if c == 1]
        if one:  # perfect scaling from the concurrency-1 figure
            ax.plot(xs, [one[0] * c for c in xs], linestyle=":", color=line.get_color(), alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_xticks(all_c)
    ax.set_xticklabels([str(c) for c in all_c])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("output tokens/s (all clients)")
    ax.set_title("Output tok/s vs concurrency (dotted: linear scaling from concurrency 1)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return {"title": title, "file": save(fig, out_dir, "serving_throughput.png"),
            "note": "One line per server configuration (model, residency, budget)."}
