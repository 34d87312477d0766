"""PNG plots. Each plot function returns {"title", "file" (or None when skipped), "note"}."""
import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .experts import any_experts, expert_setting, n_expert, routing_skew  # noqa: E402
from .fields import fmt, get, is_number, run_engine, sort_value, tg_ms_per_token, varying_keys  # noqa: E402
from .load import trace_path  # noqa: E402
from .serving import plot_throughput  # noqa: E402

CAT_COLORS = {"io": "#1f77b4", "copy": "#ff7f0e", "compute": "#2ca02c", "stall": "#d62728"}
MAX_TRACE_SPANS = 600
DPI = 110


def _ok_runs(docs):
    """[(file index, doc, run)] for successful runs."""
    return [(i, d, r) for i, d in enumerate(docs) for r in d["runs"] if r["status"] == "ok"]


def _save(fig, out_dir, name):
    fig.savefig(os.path.join(out_dir, name), dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return name


def _group_label(run, keys, file_index, multi):
    point = run.get("point") or {}
    parts = [f"{k}={point[k]}" for k in keys if k in point]
    label = ", ".join(parts) if parts else "all runs"
    if run_engine(run) != "flea":
        label = f"{run_engine(run)}: {label}"
    return label + (f" (#{file_index + 1})" if multi else "")


def _groups(entries, exclude, multi):
    """{label: [(file index, doc, run)]} grouping runs that differ only in the excluded keys."""
    keys = [k for k in varying_keys([r for _, _, r in entries]) if k not in exclude]
    if "prefetch" in keys:  # the legend leads with the prefetch depth
        keys = ["prefetch"] + [k for k in keys if k != "prefetch"]
    groups = {}
    for entry in entries:
        groups.setdefault(_group_label(entry[2], keys, entry[0], multi), []).append(entry)
    return groups


def time_unit(peak_ns):
    """(unit, ns per unit) so that the largest value reads between 1 and 1000ish."""
    if peak_ns >= 1e9:
        return "s", 1e9
    if peak_ns >= 1e6:
        return "ms", 1e6
    return "µs", 1e3


def _legend(ax, n_entries):
    if n_entries > 6:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    else:
        ax.legend(fontsize=8)


def _budget_axis(entries):
    for key in ("vram_budget_mb", "ram_budget_mb"):
        values = {get(r, f"point.{key}") for _, _, r in entries}
        if len({v for v in values if is_number(v)}) > 1:
            return key
    return None


def _models_with_sweeps(entries, x_key):
    """Models (in natural order) that have runs at two or more budgets."""
    by_model = {}
    for _, _, r in entries:
        by_model.setdefault(get(r, "point.model"), set()).add(get(r, f"point.{x_key}"))
    swept = [m for m, xs in by_model.items() if len(xs) > 1]
    return sorted(swept, key=sort_value), sorted((m for m in by_model if m not in swept),
                                                 key=sort_value)


def _draw_budget_panel(ax, entries, x_key, multi):
    """One line per group of runs that differ only in the budget; returns the legend size."""
    exclude = {x_key, "model", "ram_budget_mb" if x_key == "vram_budget_mb" else ""}
    groups = _groups(entries, exclude, multi)
    suspect_labelled = False
    for label, members in sorted(groups.items()):
        members = sorted(members, key=lambda e: get(e[2], f"point.{x_key}"))
        xs = [get(r, f"point.{x_key}") for _, _, r in members]
        meds = [tg_ms_per_token(r, "median") for _, _, r in members]
        p95s = [tg_ms_per_token(r, "p95") for _, _, r in members]
        upper = [max(0.0, (p or m) - m) for m, p in zip(meds, p95s)]
        style = "--" if members[0][0] > 0 else "-"
        ax.errorbar(xs, meds, yerr=[[0.0] * len(meds), upper], marker="o", capsize=3, label=label,
                    linestyle=style if len(xs) > 1 else "none")
        for (_, _, r), x, m in zip(members, xs, meds):
            if get(r, "vs_floor.below_floor"):
                ax.plot([x], [m], marker="X", color="red", markersize=12, linestyle="none",
                        label=None if suspect_labelled else "SUSPECT: below physical floor")
                suspect_labelled = True
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    return len(groups) + int(suspect_labelled)


def plot_ms_vs_budget(docs, out_dir):
    title = "ms/token vs memory budget, per prefetch depth"
    entries = [e for e in _ok_runs(docs) if is_number(tg_ms_per_token(e[2], "median"))]
    x_key = _budget_axis(entries)
    models, single = _models_with_sweeps(entries, x_key) if x_key else ([], [])
    if not models:
        return {"title": title, "file": None,
                "note": "no model has successful runs at two or more VRAM (or RAM) budgets"}
    axis = "VRAM budget (MB)" if x_key == "vram_budget_mb" else "host RAM budget (MB)"
    fig, axes = plt.subplots(len(models), 1, figsize=(9, 0.5 + 4.2 * len(models)), squeeze=False)
    for ax, model in zip(axes[:, 0], models):
        members = [e for e in entries if get(e[2], "point.model") == model
                   and is_number(get(e[2], f"point.{x_key}"))]
        n_legend = _draw_budget_panel(ax, members, x_key, len(docs) > 1)
        ax.set_title(f"{model}: generation latency vs {axis.split(' (')[0]}", fontsize=10)
        ax.set_xlabel(axis)
        ax.set_ylabel("ms/token (median, bar to p95)")
        _legend(ax, n_legend)
    note = "One panel per model; dashed lines: files after the first."
    if single:
        note += " Not shown (a single budget each): " + ", ".join(str(m) for m in single) + "."
    return {"title": title, "file": _save(fig, out_dir, "ms_per_token_vs_budget.png"),
            "note": note}


def _bandwidth_bars(docs):
    """[(x label, ceiling GB/s | None, [achieved GB/s per run])] per file and I/O backend."""
    bars = []
    for i, doc in enumerate(docs):
        ceilings = {e.get("io"): e.get("read_gb_s") for e in get(doc, "ceilings.fio") or []
                    if is_number(e.get("read_gb_s"))}
        achieved, suspect = {}, {}
        for run in doc["runs"]:
            value, io = get(run, "io.read_gb_s"), get(run, "point.io")
            # A run that read nothing (fully resident) says nothing about the I/O path.
            if run["status"] != "ok" or not is_number(value) or value <= 0 or not io:
                continue
            target = suspect if get(run, "vs_floor.below_floor") else achieved
            target.setdefault(io, []).append(value)
        for io in sorted(set(ceilings) | set(achieved) | set(suspect), key=sort_value):
            label = io + (f"\n#{i + 1}" if len(docs) > 1 else "")
            bars.append((label, ceilings.get(io), achieved.get(io, []), suspect.get(io, [])))
    return bars


def plot_bandwidth(docs, out_dir):
    title = "Achieved read bandwidth vs fio ceiling, per I/O backend"
    bars = _bandwidth_bars(docs)
    if not any(c is not None or a or sus for _, c, a, sus in bars):
        return {"title": title, "file": None, "note": "no fio ceiling and no achieved read bandwidth"}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(bars) + 2), 4.8))
    width = 0.38
    for x, (label, ceiling, achieved, suspect) in enumerate(bars):
        if suspect:
            ax.plot([x + width / 2] * len(suspect), suspect, "X", color="red", markersize=10)
        if ceiling is not None:
            ax.bar(x - width / 2, ceiling, width, color="#c7c7c7", edgecolor="#555555",
                   hatch="//", label="fio ceiling (same run)" if x == 0 else None)
        if achieved:
            best = max(achieved)
            ax.bar(x + width / 2, best, width, color="#1f77b4",
                   label="achieved (best run)" if x == 0 else None)
            ax.plot([x + width / 2] * len(achieved), achieved, "k.", markersize=5,
                    label="each run" if x == 0 else None)
            if ceiling:
                ax.annotate(f"{best / ceiling:.0%}", (x + width / 2, best), ha="center",
                            va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    # Legend entries are attached to the first bar only; make sure each kind is listed once.
    handles, labels = _legend_handles(ax, bars)
    ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              frameon=False)
    ax.set_xticks(range(len(bars)))
    ax.set_xticklabels([b[0] for b in bars])
    top = max([c or 0 for _, c, _, _ in bars] + [max(a + s) for _, _, a, s in bars if a + s])
    ax.set_xlabel("I/O backend")
    ax.set_ylabel("read bandwidth (GB/s)")
    ax.set_title("Achieved read bandwidth vs same-run fio ceiling\n(% = best run / ceiling)")
    ax.set_ylim(0, top * 1.15)
    ax.grid(True, axis="y", alpha=0.3)
    return {"title": title, "file": _save(fig, out_dir, "bandwidth_vs_ceiling.png"), "note": ""}


def _legend_handles(ax, bars):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    handles, labels = [], []
    if any(b[1] is not None for b in bars):
        handles.append(Patch(facecolor="#c7c7c7", edgecolor="#555555", hatch="//"))
        labels.append("fio ceiling (same run)")
    if any(b[2] for b in bars):
        handles.append(Patch(facecolor="#1f77b4"))
        labels.append("achieved (best run)")
        handles.append(Line2D([], [], color="k", marker=".", linestyle="none"))
        labels.append("each run")
    if any(b[3] for b in bars):
        handles.append(Line2D([], [], color="red", marker="X", markersize=9, linestyle="none"))
        labels.append("SUSPECT run (below floor, excluded)")
    return handles, labels


def read_trace(path):
    """(events, lane names) from a Chrome trace file, or (None, reason) when unusable."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as err:
        return None, f"{os.path.basename(path)} unreadable: {err}"
    events = doc.get("traceEvents") if isinstance(doc, dict) else doc
    if not isinstance(events, list):
        return None, f"{os.path.basename(path)} has no traceEvents list"
    names = {e.get("tid"): get(e, "args.name") for e in events
             if isinstance(e, dict) and e.get("ph") == "M" and e.get("name") == "thread_name"}
    spans = [e for e in events if isinstance(e, dict) and e.get("ph") == "X"
             and e.get("cat") in ("io", "copy", "compute")
             and is_number(e.get("ts")) and is_number(e.get("dur"))]
    if not spans:
        return None, f"{os.path.basename(path)} has no io/copy/compute spans"
    return spans, names


def _pick_trace_run(spans):
    runs = {}
    for e in spans:
        runs.setdefault(get(e, "args.run"), []).append(e)
    run_id = max(runs, key=lambda k: len(runs[k]))
    return run_id, sorted(runs[run_id], key=lambda e: e["ts"])


def _layer_of(event):
    layer = get(event, "args.layer")
    if is_number(layer):
        return int(layer)
    match = re.search(r"(\d+)", str(event.get("name", "")))
    return int(match.group(1)) if match else None


def _run_words(run_id, title_form, source_form):
    """Title and source text naming the plotted run, or ("", "") when its id is missing (spans
    without args.run, a run without "id"): no "run ?" in titles, no "None" in captions."""
    if run_id is None or run_id == "":
        return "", ""
    return title_form.format(run_id), source_form.format(run_id)


def _plot_trace(spans, names, title_suffix):
    run_id, events = _pick_trace_run(spans)
    total = len(events)
    events = events[:MAX_TRACE_SPANS]
    t0 = events[0]["ts"]
    unit, scale = time_unit((max(e["ts"] + e["dur"] for e in events) - t0) * 1e3)
    scale /= 1e3  # trace times are in µs
    end_ms = (max(e["ts"] + e["dur"] for e in events) - t0) / scale
    # Lanes top to bottom in pipeline order (I/O, copy, compute), by each lane's first span.
    first_cat = {}
    for e in events:
        first_cat.setdefault(e.get("tid"), e["cat"])
    rank = {"io": 0, "copy": 1, "compute": 2}
    lanes = sorted(first_cat, key=lambda t: (rank[first_cat[t]], sort_value(t)))
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.7 * len(lanes)))
    for e in events:
        y = lanes.index(e.get("tid"))
        start, width = (e["ts"] - t0) / scale, e["dur"] / scale
        ax.broken_barh([(start, width)], (y - 0.38, 0.76), facecolors=CAT_COLORS[e["cat"]],
                       edgecolor="white", linewidth=0.4)
        layer = _layer_of(e)
        if layer is not None and width > end_ms * 0.018:
            ax.text(start + width / 2, y, str(layer), ha="center", va="center", fontsize=6,
                    color="white")
    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels([names.get(t) or f"tid {t} ({first_cat[t]})" for t in lanes])
    ax.invert_yaxis()
    ax.set_xlim(0, end_ms * 1.01)
    ax.set_xlabel(f"time since first span ({unit})")
    shown = f", first {len(events)} of {total} spans" if total > len(events) else ""
    in_title, in_source = _run_words(run_id, ", run {}", "run {} in ")
    ax.set_title(f"Per-layer timeline{in_title} (numbers are layers{shown}){title_suffix}")
    from matplotlib.patches import Patch
    cats = [c for c in ("io", "copy", "compute") if any(e["cat"] == c for e in events)]
    ax.legend([Patch(facecolor=CAT_COLORS[c]) for c in cats],
              [{"io": "I/O (disk read)", "copy": "copy (host to device)", "compute": "compute"}[c]
               for c in cats], fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              frameon=False)
    ax.grid(True, axis="x", alpha=0.3)
    return fig, f"from {in_source}the Chrome trace"


def _plot_layers(run, title_suffix):
    layers = sorted(run["layers"], key=lambda r: sort_value(r.get("layer")))
    xs = list(range(len(layers)))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.28 * len(layers) + 3), 4.5))
    width = 0.27
    series = (("load_ns", "I/O load", "io"), ("copy_ns", "copy (host to device)", "copy"),
              ("compute_ns", "compute", "compute"), ("stall_ns", "stall (waiting for I/O)", "stall"))
    present = [s for s in series if any(is_number(r.get(s[0])) for r in layers)]
    peak_ns = max([r.get(s[0]) or 0 for r in layers for s in present] + [1])
    unit, scale = time_unit(peak_ns)
    for k, (key, label, cat) in enumerate(present):
        offset = (k - (len(present) - 1) / 2) * width * 3 / max(3, len(present))
        ax.bar([x + offset for x in xs], [(r.get(key) or 0) / scale for r in layers],
               width * 3 / max(3, len(present)), label=label, color=CAT_COLORS[cat])
    step = max(1, len(layers) // 16)
    ax.set_xticks(xs[::step])
    ax.set_xticklabels([str(layers[x].get("layer", x)) for x in xs[::step]])
    ax.set_xlabel("layer")
    ax.set_ylabel(f"time per layer ({unit})")
    in_title, in_source = _run_words(run.get("id"), ", run {}", " from run {}")
    ax.set_title(f"Per-layer time{in_title} (no trace: from runs[].layers){title_suffix}")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return fig, f"no trace file; per-layer totals{in_source}"


def plot_timeline(doc, index, n_docs, out_dir):
    suffix = f" — #{index + 1}" if n_docs > 1 else ""
    title = f"Per-layer timeline (I/O, copy, compute){suffix}"
    path = trace_path(doc)
    note = ""
    if path and os.path.exists(path):
        spans, names = read_trace(path)
        if spans:
            fig, source = _plot_trace(spans, names, "")
            return {"title": title, "file": _save(fig, out_dir, f"timeline_{index + 1}.png"),
                    "note": f"Source: {source} `{os.path.basename(path)}`."}
        note = f"trace {names}; "
    run = next((r for r in doc["runs"] if r["status"] == "ok" and r.get("layers")), None)
    if run is None:
        return {"title": title, "file": None,
                "note": note + "no trace file and no run with per-layer timings"}
    fig, source = _plot_layers(run, "")
    return {"title": title, "file": _save(fig, out_dir, f"timeline_{index + 1}.png"),
            "note": f"Source: {note}{source}."}


def plot_scaling(docs, out_dir):
    title = "Scaling with model size"
    entries = [e for e in _ok_runs(docs) if is_number(get(e[2], "model.file_bytes"))
               and is_number(tg_ms_per_token(e[2], "median"))]
    groups = _groups(entries, {"model"}, len(docs) > 1)
    groups = {k: v for k, v in groups.items()
              if len({get(r, "model.file_bytes") for _, _, r in v}) > 1}
    if not groups:
        return {"title": title, "file": None,
                "note": "no otherwise-identical runs at two or more model sizes"}
    fig, ax = plt.subplots(figsize=(8.5, 5))
    all_x, all_y = [], []
    for label, members in sorted(groups.items()):
        members = sorted(members, key=lambda e: get(e[2], "model.file_bytes"))
        xs = [get(r, "model.file_bytes") / 1e9 for _, _, r in members]
        ys = [tg_ms_per_token(r, "median") for _, _, r in members]
        line, = ax.plot(xs, ys, marker="o", label=f"measured: {label}")
        preds = [(x, get(r, "predicted.ms_per_token")) for x, (_, _, r) in zip(xs, members)
                 if is_number(get(r, "predicted.ms_per_token"))]
        if preds:
            ax.plot([p[0] for p in preds], [p[1] for p in preds], marker="o", fillstyle="none",
                    linestyle="--", color=line.get_color(), label=f"predicted: {label}")
        for (_, _, r), x, y in zip(members, xs, ys):
            ax.annotate(str(get(r, "point.model", "")).replace("synth:", ""), (x, y), fontsize=7,
                        xytext=(-6, 6), ha="right", textcoords="offset points")
        all_x += xs
        all_y += ys
    if max(all_x) / min(all_x) > 8:
        ax.set_xscale("log")
    if min(all_y) > 0 and max(all_y) / min(all_y) > 8:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.set_xlabel("model file size (GB)")
    ax.set_ylabel("generation time (ms/token, median)")
    ax.set_title("Generation latency vs model size (solid: measured, dashed: predicted)")
    ax.grid(True, alpha=0.3)
    _legend(ax, 2 * len(groups))
    return {"title": title, "file": _save(fig, out_dir, "model_size_scaling.png"), "note": ""}


def _hit_rate_groups(docs):
    """{(file index, model, skew, policy): [(cache per layer, measured hit rate, n_expert)]} over
    successful runs with a measured expert hit rate."""
    groups = {}
    for i, _, run in _ok_runs(docs):
        cache, rate = expert_setting(run, "cache_per_layer"), get(run, "experts.hit_rate")
        if not (is_number(cache) and is_number(rate)):
            continue
        key = (i if len(docs) > 1 else 0, get(run, "point.model"), routing_skew(run),
               expert_setting(run, "policy"))
        groups.setdefault(key, []).append((cache, rate, n_expert(run)))
    return groups


def _hit_rate_label(key, multi):
    i, model, skew, policy = key
    skew_text = fmt(skew) if is_number(skew) else "—"
    return f"{model}, skew {skew_text}, {policy or '?'}" + (f" (#{i + 1})" if multi else "")


def plot_expert_hit_rate(docs, out_dir):
    """None when no run has expert figures (the plot is then not mentioned at all)."""
    if not any_experts(docs):
        return None
    title = "Expert cache hit rate vs cache size"
    multi = len(docs) > 1
    groups = _hit_rate_groups(docs)
    swept = {k: v for k, v in groups.items() if len({c for c, _, _ in v}) > 1}
    if not swept:
        return {"title": title, "file": None,
                "note": "no (model, routing skew, policy) group has measured hit rates at two or "
                        "more cache sizes"}
    fig, ax = plt.subplots(figsize=(8.5, 5))
    order = sorted(swept, key=lambda k: [sort_value(x) for x in k])
    for key in order:
        members = swept[key]
        caches = sorted({c for c, _, _ in members})
        means = [sum(r for c2, r, _ in members if c2 == c) / sum(1 for c2, _, _ in members if c2 == c)
                 for c in caches]
        line, = ax.plot(caches, means, marker="o", linestyle="--" if key[0] > 0 else "-",
                        label=_hit_rate_label(key, multi))
        if len(members) > len(caches):  # several runs at one cache size: each one as a dot
            ax.plot([c for c, _, _ in members], [r for _, r, _ in members], ".",
                    color=line.get_color(), markersize=5)
    # The plan's prediction: uniform routing hits cache/n_expert of the time.
    top = max(c for v in swept.values() for c, _, _ in v)
    n_experts = sorted({n for v in swept.values() for _, _, n in v if is_number(n)})
    for n in n_experts:
        end = min(float(n), top)
        ax.plot([0.0, end], [0.0, end / n], color="black", linestyle=":", linewidth=1.4, zorder=3,
                label=f"uniform routing: cache / {n:.0f} experts")
    from matplotlib.ticker import PercentFormatter
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlim(left=0)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("experts cached per MoE layer")
    ax.set_ylabel("measured expert cache hit rate")
    ax.set_title("Expert cache hit rate vs cache size (dotted: the plan's uniform prediction)")
    ax.grid(True, alpha=0.3)
    _legend(ax, len(order) + len(n_experts))
    note = "One line per model, routing skew and eviction policy (skew — = not in the record)."
    single = [k for k in groups if k not in swept]
    if single:
        note += " Not shown (a single cache size): " + "; ".join(
            _hit_rate_label(k, multi) for k in sorted(single, key=lambda k: [sort_value(x) for x in k])) + "."
    return {"title": title, "file": _save(fig, out_dir, "expert_hit_rate_vs_cache.png"),
            "note": note}


def make_plots(docs, out_dir):
    """Every plot, in report order."""
    plots = [plot_ms_vs_budget(docs, out_dir), plot_bandwidth(docs, out_dir)]
    plots += [plot_timeline(doc, i, len(docs), out_dir) for i, doc in enumerate(docs)]
    plots.append(plot_scaling(docs, out_dir))
    plots.append(plot_expert_hit_rate(docs, out_dir))
    plots.append(plot_throughput(docs, out_dir, plt, _save))
    return [p for p in plots if p is not None]
