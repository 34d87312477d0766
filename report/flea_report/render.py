"""report.md: GitHub-flavoured markdown tables, warnings and plot references from loaded results."""
import os

from .compare import CONTEXT_KEYS, context_differences, context_value
from .experts import BASELINE_ENGINE, BYTES_RATIO_BAND, any_experts, bytes_ratio, entry_order, expert_entries, \
    expert_setting, off_plan, predicted_bytes_per_token, routing_skew
from .fields import fmt, fmt_bytes, fmt_pct, get, is_number, point_key, point_label, \
    run_engine, samples, sort_value, tg_ms_per_token, tok_s, varying_keys
from .gate_core import DEFAULTS as GATE_DEFAULTS, timing_line, verdict_text
from .load import is_partial
from .serving import is_serving, serving_section
from .stats import cv

DEFAULT_NOISE_CV = 0.10
RELEASE_BUILDS = ("release", "relwithdebinfo", "minsizerel")


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(headers, rows):
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def file_labels(docs):
    return [f"#{i + 1}" for i in range(len(docs))]


def fio_ceiling(doc, io):
    for entry in get(doc, "ceilings.fio") or []:
        if entry.get("io") == io and is_number(entry.get("read_gb_s")):
            return float(entry["read_gb_s"])
    return None


def fraction_of_fio(doc, run):
    value = get(run, "io.fraction_of_fio")
    if is_number(value):
        return value
    achieved, ceiling = get(run, "io.read_gb_s"), fio_ceiling(doc, get(run, "point.io"))
    return achieved / ceiling if is_number(achieved) and ceiling else None


def noisy_kinds(run, noise_cv):
    """[(kind, cv)] for sample sets whose coefficient of variation exceeds noise_cv."""
    out = []
    for kind in ("tg", "pp"):
        value = cv(samples(run, kind))
        if value is not None and value > noise_cv:
            out.append((kind, value))
    return out


def context_warnings(doc):
    """The file's own warnings, plus ones derived from its context and ceilings if not stated."""
    stated = list(get(doc, "context.warnings") or [])
    text = " ".join(stated).lower()
    derived = []
    build_type = get(doc, "context.build.build_type")
    if isinstance(build_type, str) and build_type.lower() not in RELEASE_BUILDS \
            and "debug" not in text:
        derived.append(f"{build_type} build: timings are not representative")
    for entry in get(doc, "ceilings.fio") or []:
        if entry.get("cache_dropped") is False and "page cache" not in text:
            derived.append(f"page cache not dropped for the fio ceiling on {entry.get('path')}")
    if not get(doc, "ceilings.fio"):
        derived.append("no fio ceiling measured: fraction of ceiling unavailable")
    governor = get(doc, "context.host.cpu_governor")
    if governor not in (None, "unknown", "performance") and "governor" not in text:
        derived.append(f"CPU frequency governor is '{governor}', not 'performance'")
    if get(doc, "context.build.git_dirty") is True and "dirty" not in text:
        derived.append("built from a dirty work tree (uncommitted changes)")
    if not isinstance(doc.get("status"), dict):
        derived.append("no status block: the file may be incomplete (harness interrupted?)")
    elif is_partial(doc):
        status = doc["status"]
        planned = status.get("n_planned")
        of = f" of {planned} planned" if is_number(planned) else ""
        derived.append(f"partial results: {len(doc['runs'])} runs{of} recorded "
                       "(interrupted or incomplete sweep)")
    return stated + derived


def run_warnings(run, noise_cv):
    out = []
    rid = run.get("id")
    if run["status"] == "failed":
        out.append(f"{rid} failed: {run.get('error')}")
    elif run["status"] == "skipped":
        out.append(f"{rid} skipped: {run.get('error') or 'no reason given'}")
    if get(run, "vs_floor.below_floor"):
        out.append(f"**SUSPECT** {rid}: {fmt(tg_ms_per_token(run, 'median'))} ms/token is below the "
                   f"physical floor of {fmt(get(run, 'predicted.floor_ms_per_token'))} ms/token "
                   f"(ratio {fmt(get(run, 'vs_floor.ratio'))}): a measurement error, not a win")
    for kind, value in noisy_kinds(run, noise_cv):
        out.append(f"{rid}: noisy {kind} samples (CV {value:.0%} > {noise_cv:.0%})")
    stated = run.get("warnings")  # the harness's own, e.g. a pread run above fio (page cache)
    out += [f"{rid}: {w}" for w in stated if isinstance(w, str)] if isinstance(stated, list) else []
    if get(run, "correctness.passed") is False:
        out.append(f"{rid}: correctness check FAILED (NMSE {fmt(get(run, 'correctness.nmse'))}, "
                   f"tolerance {fmt(get(run, 'correctness.tolerance.nmse'))})")
    return out


def warnings_section(docs, noise_cv):
    labels = file_labels(docs)
    items = []
    for label, doc in zip(labels, docs):
        prefix = f"{label} " if len(docs) > 1 else ""
        items += [f"- {prefix}{w}" for w in context_warnings(doc)]
        for run in doc["runs"]:
            items += [f"- {prefix}{w}" for w in run_warnings(run, noise_cv)]
    return "## Warnings\n\n" + ("\n".join(items) if items else "None.")


def files_section(docs):
    rows = []
    for label, doc in zip(file_labels(docs), docs):
        ctx = doc["context"]
        rev = get(ctx, "build.git_rev") or "—"
        if get(ctx, "build.git_dirty"):
            rev += " (dirty)"
        profile = get(ctx, "profile.name") or "—"
        if get(ctx, "profile.mode"):
            profile += f" ({get(ctx, 'profile.mode')})"
        state = "partial" if is_partial(doc) else "complete"
        n_ok = sum(1 for r in doc["runs"] if r["status"] == "ok")
        rows.append([label, os.path.basename(doc.get("_path", "?")), ctx.get("run_id") or "—",
                     get(ctx, "scenario.name") or "—", ctx.get("time") or "—",
                     get(ctx, "host.hostname") or "—", context_value(doc, "gpu.name") or "—",
                     rev, get(ctx, "build.build_type") or "—", profile,
                     f"{state}, {n_ok} ok / {len(doc['runs'])} runs"])
    headers = ["", "file", "run id", "scenario", "time", "host", "GPU", "git rev", "build",
               "profile", "status"]
    return "## Results files\n\n" + md_table(headers, rows)


def context_section(docs):
    if len(docs) < 2:
        return None
    diffs = context_differences(docs)
    if not diffs:
        return ("## Context differences\n\nAll files share the same host, git revision, build "
                "type and profile.")
    key_labels = [label for label, _ in CONTEXT_KEYS[:4]]
    called = [label for label, _ in diffs if label in key_labels]
    intro = ("**Comparisons across these files mix " + ", ".join(called) + ".**"
             if called else "Host, git revision, build type and profile are the same.")
    rows = [[label] + ["—" if v is None else str(v) for v in values] for label, values in diffs]
    return ("## Context differences\n\n" + intro + "\n\n"
            + md_table(["differs"] + file_labels(docs), rows))


def ceilings_section(docs):
    rows = []
    for label, doc in zip(file_labels(docs), docs):
        for entry in get(doc, "ceilings.fio") or []:
            dropped = entry.get("cache_dropped")

            def fio_row(name, value):
                return [label, name, os.path.basename(str(entry.get("path"))), value,
                        fmt_bytes(entry.get("block_bytes")) + f" × qd {entry.get('iodepth', '—')}",
                        "—" if dropped is None else ("yes" if dropped else "**no**")]

            rows.append(fio_row("fio " + str(entry.get("io")), fmt(entry.get("read_gb_s"), " GB/s")))
            # The same fio on hugetlb buffers, when the harness measured it (ceilings.fio_mem both).
            huge = entry.get("hugetlb")
            if isinstance(huge, dict):
                value = (fmt(huge.get("read_gb_s"), " GB/s") if is_number(huge.get("read_gb_s"))
                         else "— (" + str(huge.get("error") or "not measured") + ")")
                rows.append(fio_row("fio " + str(entry.get("io")) + ", hugetlb buffer", value))
        for key, value in (get(doc, "ceilings.h2d") or {}).items():
            rows.append([label, f"H2D {key.replace('_gb_s', '')}", "—", fmt(value, " GB/s"), "—", "—"])
        mem = get(doc, "ceilings.memory_bw_gb_s")
        if is_number(mem):
            rows.append([label, "memory bandwidth", "—", fmt(mem, " GB/s"), "—", "—"])
    if not rows:
        return "## Ceilings (same run)\n\nNo ceilings recorded."
    headers = ["", "ceiling", "file", "read", "block", "page cache dropped"]
    if len(docs) < 2:
        headers, rows = headers[1:], [r[1:] for r in rows]
    return "## Ceilings (same run)\n\n" + md_table(headers, rows)


def shards_section(docs):
    """Merged fleet files: one row per shard (its node, build, status and fio ceiling), missing and
    unfinished shards named with the command that reruns them."""
    parts = []
    for label, doc in zip(file_labels(docs), docs):
        shards = get(doc, "context.shards")
        if not isinstance(shards, list):
            continue
        rows = []
        for sh in shards:
            if not isinstance(sh, dict):
                continue
            st = sh.get("status") if isinstance(sh.get("status"), dict) else {}
            fio = [f for f in (get(sh, "ceilings.fio") or []) if isinstance(f, dict)]
            fio_cell = ", ".join(f"{f.get('io')} {fmt(f.get('read_gb_s'), ' GB/s')}" for f in fio) or "—"
            rows.append([str(sh.get("index", "—")), str(sh.get("hostname", "—")), str(sh.get("git_rev", "—"))[:10],
                         str(sh.get("build_type", "—")),
                         f"{st.get('n_ok', '—')} ok / {st.get('n_failed', '—')} failed"
                         + ("" if st.get("complete", True) else " (**incomplete**)"), fio_cell])
        merged = get(doc, "context.merged") or {}
        text = md_table(["shard", "host", "git rev", "build", "runs", "fio (that node)"], rows)
        missing, incomplete = merged.get("missing") or [], merged.get("incomplete") or []
        if missing or incomplete:
            text += ("\n\n**Not complete:** missing shards " + (", ".join(map(str, missing)) or "none")
                     + "; unfinished shards " + (", ".join(map(str, incomplete)) or "none")
                     + (f". Rerun: `{merged['rerun']}`" if merged.get("rerun") else "") + ".")
        for kind in ("hardware", "builds"):
            if merged.get("mixed_" + kind):
                text += f"\n\nThe shards ran on mixed {kind}: compare their runs with care."
        parts.append((f"### {label}\n\n" if len(docs) > 1 else "") + text)
    return "## Shards (fleet run)\n\n" + "\n\n".join(parts) if parts else ""


def correctness_cell(run):
    corr = run.get("correctness")
    if not isinstance(corr, dict):
        return "—"
    nmse = fmt(corr.get("nmse"))
    if corr.get("passed") is True:
        return f"pass (NMSE {nmse})"
    if corr.get("passed") is False:
        return f"**FAIL** (NMSE {nmse} > {fmt(get(corr, 'tolerance.nmse'))})"
    return f"NMSE {nmse}"


def flags_cell(run, noise_cv):
    flags = []
    if run["status"] != "ok":
        flags.append(f"**{run['status']}**: {run.get('error') or ''}".rstrip(": "))
    if get(run, "vs_floor.below_floor"):
        flags.append(f"**SUSPECT** (below floor, ×{fmt(get(run, 'vs_floor.ratio'))})")
    flags += [f"noisy {kind} (CV {value:.0%})" for kind, value in noisy_kinds(run, noise_cv)]
    return "; ".join(flags)


def ratio_cell(numerator, denominator):
    if not (is_number(numerator) and is_number(denominator)) or denominator == 0:
        return "—"
    return f"{numerator / denominator:.2f}×"


def baseline_cell(run):
    ratio, engine = get(run, "baseline.ratio"), get(run, "baseline.engine")
    if not is_number(ratio):
        return "—"
    if get(run, "vs_floor.below_floor"):
        return "n/a (SUSPECT)"  # a below-floor measurement must never read as a speed-up
    return f"{ratio:.2f}× {engine or 'baseline'}"


def run_row(doc, run, keys, noise_cv):
    point = run.get("point") or {}
    med = tg_ms_per_token(run, "median")
    pred = get(run, "predicted.ms_per_token")
    med_cell = fmt(med) + (" (SUSPECT)" if get(run, "vs_floor.below_floor") else "")
    return [point.get(k, "—") for k in keys] + [
        med_cell, fmt(tg_ms_per_token(run, "p95")), fmt(tok_s(run, "tg")), fmt(tok_s(run, "pp")),
        fmt(get(run, "io.read_gb_s")), fmt_pct(fraction_of_fio(doc, run)),
        fmt(get(run, "memory.peak_rss_mb")), fmt(get(run, "memory.peak_vram_mb")), fmt(pred),
        ratio_cell(med, pred), baseline_cell(run), correctness_cell(run), flags_cell(run, noise_cv)]


RUN_HEADERS = ["ms/tok median", "ms/tok p95", "tg tok/s", "pp tok/s", "read GB/s", "of fio",
               "peak RAM MB", "peak VRAM MB", "predicted ms/tok", "measured/predicted",
               "vs baseline", "correctness", "flags"]


def ordered_entries(docs):
    """[(file index, doc, run)] sorted so that the same point from different files is adjacent."""
    all_runs = [r for d in docs for r in d["runs"]]
    keys = varying_keys(all_runs)
    entries = [(i, d, r) for i, d in enumerate(docs) for r in d["runs"]]

    def order(entry):
        i, _, run = entry
        point = run.get("point") or {}
        return ([sort_value(point.get(k)) for k in keys], run_engine(run), i, str(run.get("id")))

    return sorted(entries, key=order), keys


def runs_section(docs, noise_cv):
    entries, keys = ordered_entries(docs)
    # Serving points have their own table (serving.py).
    serving = any(is_serving(r) for _, _, r in entries)
    entries = [e for e in entries if not is_serving(e[2])]
    if serving and not entries:
        return None
    keys = varying_keys([r for _, _, r in entries]) if serving else keys
    multi = len(docs) > 1
    engines = {run_engine(r) for _, _, r in entries}
    rows = []
    for i, doc, run in entries:
        row = [run.get("id", "?")] + ([run_engine(run)] if len(engines) > 1 else [])
        row = ([f"#{i + 1}"] if multi else []) + row + run_row(doc, run, keys, noise_cv)
        rows.append(row)
    headers = (["file"] if multi else []) + ["run"] + (["engine"] if len(engines) > 1 else []) \
        + keys + RUN_HEADERS
    fixed = shared_point_values(entries, keys)
    text = "## Runs\n\n"
    if fixed:
        text += "Fixed for every run: " + ", ".join(f"`{k}={v}`" for k, v in fixed) + ".\n\n"
    return text + md_table(headers, rows) if rows else text + "No runs recorded."


def shared_point_values(entries, keys):
    if not entries:
        return []
    first = entries[0][2].get("point") or {}
    return [(k, v) for k, v in first.items() if k not in keys]


def side_by_side_section(docs):
    if len(docs) < 2:
        return None
    entries, keys = ordered_entries(docs)
    by_point = {}
    for i, _, run in entries:
        if run["status"] == "ok":
            by_point.setdefault(point_key(run), {})[i] = run
    labels = file_labels(docs)
    rows = []
    for runs in by_point.values():
        if len(runs) < 2:
            continue
        any_run = next(iter(runs.values()))
        meds = [tg_ms_per_token(runs[i], "median") if i in runs else None for i in range(len(docs))]
        ref = next((m for m in meds if is_number(m)), None)
        ratios = [ratio_cell(m, ref) for m in meds[1:]]
        first = min(runs)
        verdicts = [gate_cell(runs[first], runs[i]) if i in runs and i != first else "—"
                    for i in range(1, len(docs))]
        suspect = any(get(r, "vs_floor.below_floor") for r in runs.values())
        rows.append([point_label(any_run, keys)] + [fmt(m) for m in meds] + ratios + verdicts
                    + ["**SUSPECT**" if suspect else ""])
    title = ("## Side by side (ms/token median; ratio > 1 means slower than the first file)\n\n"
             "Gate: report/gate.py's verdict on the tg samples against the first file that has the "
             f"point, effect with its {GATE_DEFAULTS['confidence']:.0%} bootstrap interval "
             f"(REGRESSION: p < {GATE_DEFAULTS['alpha']:g} and slower by more than "
             f"{GATE_DEFAULTS['min_effect']:.0%}; PASS: interval below +{GATE_DEFAULTS['min_effect']:.0%}; "
             "else INCONCLUSIVE).\n\n")
    if not rows:
        return title + "No run point appears in more than one file."
    headers = ["point"] + [f"{lb} ms/tok" for lb in labels] \
        + [f"{lb} / {labels[0]}" for lb in labels[1:]] + [f"gate {lb}" for lb in labels[1:]] + ["note"]
    return title + md_table(headers, rows)


def gate_cell(base_run, cur_run):
    """The gate's tg verdict for one pair of runs, as report/gate.py would print it."""
    line = timing_line("", "tg", base_run, cur_run, GATE_DEFAULTS)
    if line is None or line["p"] is None:
        return "—"
    return verdict_text(line)


def count_cell(n):
    return f"{n:.0f}" if is_number(n) and float(n).is_integer() else fmt(n)


def rate_cell(rate):
    return "—" if not is_number(rate) else f"{100.0 * rate:.1f}%"


def residency_cell(run):
    residency, layers = expert_setting(run, "residency"), expert_setting(run, "layers")
    if residency is None:
        return "—"
    if residency == "expert" and is_number(layers):
        return f"expert ({layers:.0f} layers streamed)" if layers else "expert (none streamed)"
    return str(residency)


def experts_row(run, keys, noise_cv):
    point = run.get("point") or {}
    ratio = bytes_ratio(run)
    flags = flags_cell(run, noise_cv)
    if off_plan(ratio):
        lo, hi = BYTES_RATIO_BAND
        flag = f"**off plan**: reads {ratio:.2f}× the predicted bytes/token (outside {lo:.2f}–{hi:.2f})"
        flags = "; ".join(f for f in (flags, flag) if f)
    return [point.get(k, "—") for k in keys] + [
        residency_cell(run), expert_setting(run, "policy") or "—",
        count_cell(expert_setting(run, "cache_per_layer")), fmt(get(run, "experts.experts_read_per_token")),
        rate_cell(get(run, "experts.hit_rate")), rate_cell(expert_setting(run, "predicted_hit_rate")),
        fmt_bytes(get(run, "io.read_bytes_per_token")), fmt_bytes(predicted_bytes_per_token(run)),
        ratio_cell(get(run, "io.read_bytes_per_token"), predicted_bytes_per_token(run)),
        fmt(tok_s(run, "tg")), baseline_cell(run), fmt(routing_skew(run)),
        fmt(get(run, "memory.peak_rss_mb")), flags]


EXPERTS_HEADERS = ["expert residency", "policy", "cache/layer", "experts read/tok", "hit rate",
                   "uniform hit rate", "read/tok", "plan at measured hit rate",
                   "measured/predicted", "tg tok/s", "vs baseline", "routing skew", "peak RAM MB",
                   "flags"]
EXPERTS_NOTES = [
    "point keys: those that vary between this engine's rows; the `expert_*` keys (what was asked) are "
    "replaced by the three columns after them (what the engine ran: `experts`, else `plan.experts`)",
    "**expert residency**: `expert` reads a streamed MoE layer's dense part ahead and then only the "
    "routed experts (how many layers stream so); `layer` reads every expert with its layer",
    "**policy**: which cached expert of a layer gives way when another is read (`lru` or `lfu`)",
    "**cache/layer**: experts kept per MoE layer (an explicit `expert_cache`, else as many as "
    "`ram_budget_mb` leaves room for)",
    "**experts read/tok**: experts read from storage (cache misses) per timed token",
    "**hit rate**: measured cache hits / (hits + misses) over the timed tokens; — when no expert "
    "was looked up",
    "**uniform hit rate**: the plan's prediction, cache/layer ÷ experts per layer, right for uniform "
    "routing; skewed routing should beat it",
    "**read/tok**: measured bytes read from storage per token (`io.read_bytes_per_token`)",
    "**plan at measured hit rate**: `plan.experts` dense_bytes_per_token + (1 − hit rate) × "
    "expert_bytes_per_token: the plan's bytes per token at the measured instead of the uniform hit "
    "rate, so that only the reads are compared, not the routing",
    "**measured/predicted**: read/tok ÷ plan at measured hit rate; outside "
    f"{BYTES_RATIO_BAND[0]:.2f}–{BYTES_RATIO_BAND[1]:.2f} it is flagged **off plan**",
    "**tg tok/s**, **vs baseline**: generation throughput, and its ratio to the baseline engine's "
    "run for the same point (the llama-bench rows of the same model are those baselines)",
    "**routing skew**: the synthetic model's `flea.synth.expert_skew` (`model.expert_skew`; 0 = "
    "uniform random routing); — when the record does not state it",
    "**peak RAM MB**: the engine process's peak resident memory",
]


def experts_section(docs, noise_cv):
    """Only when some run has expert figures: one row per such run and the baseline rows beside it."""
    if not any_experts(docs):
        return None
    entries = expert_entries(docs)
    # Keys that vary between our runs: a baseline point lacks the residency axes by design.
    ours = [r for _, _, r in entries if run_engine(r) != BASELINE_ENGINE] or [r for _, _, r in entries]
    keys = [k for k in varying_keys(ours) if not str(k).startswith("expert_")]
    entries.sort(key=lambda e: entry_order(e, keys))
    multi = len(docs) > 1
    engines = {run_engine(r) for _, _, r in entries}
    rows = []
    for i, _, run in entries:
        row = ([f"#{i + 1}"] if multi else []) + [run.get("id", "?")] \
            + ([run_engine(run)] if len(engines) > 1 else [])
        rows.append(row + experts_row(run, keys, noise_cv))
    headers = (["file"] if multi else []) + ["run"] + (["engine"] if len(engines) > 1 else []) \
        + keys + EXPERTS_HEADERS
    return ("## Experts (mixture-of-experts residency)\n\n" + md_table(headers, rows) + "\n\n"
            + "\n".join(f"- {note}" for note in EXPERTS_NOTES))


def plots_section(plots):
    parts = ["## Plots"]
    for plot in plots:
        if plot.get("file"):
            note = f"\n\n{plot['note']}" if plot.get("note") else ""
            parts.append(f"### {plot['title']}\n\n![{plot['title']}]({plot['file']}){note}")
        else:
            parts.append(f"### {plot['title']}\n\n_Skipped: {plot['note']}._")
    return "\n\n".join(parts)


def build_report(docs, plots, noise_cv=DEFAULT_NOISE_CV, title="Flea-Flicker Lab report"):
    n_runs = sum(len(d["runs"]) for d in docs)
    intro = (f"# {title}\n\n{len(docs)} results file(s), {n_runs} run(s). Timings are per generated "
             "token (median and p95 over repetitions); bandwidth is compared with the fio ceiling "
             "measured in the same invocation. Runs flagged **SUSPECT** measured faster than the "
             "machine's physical floor and are not results.")
    sections = [intro, files_section(docs), context_section(docs), warnings_section(docs, noise_cv),
                ceilings_section(docs), shards_section(docs), runs_section(docs, noise_cv),
                experts_section(docs, noise_cv), serving_section(docs, md_table), side_by_side_section(docs),
                plots_section(plots)]
    return "\n\n".join(s for s in sections if s) + "\n"
