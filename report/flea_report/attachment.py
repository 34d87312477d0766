"""The benchmark block a pull request pastes: JSON summary plus a short markdown table."""
import json
import os

from .compare import context_differences
from .fields import fmt, get, is_number, point_key, run_engine, tg_ms_per_token, tok_s
from .gate_core import DEFAULTS, timing_line, verdict_text


class AttachmentError(Exception):
    """Bad input for the attachment (one line)."""


def pick_candidate_run(doc, run_id, name):
    ok = [r for r in doc["runs"] if r["status"] == "ok" and run_engine(r) == "flea"]
    if run_id is not None:
        run = next((r for r in doc["runs"] if r.get("id") == run_id), None)
        if run is None:
            raise AttachmentError(f"{name}: no run with id {run_id!r} "
                                  f"(runs: {', '.join(str(r.get('id')) for r in doc['runs'])})")
        if run["status"] != "ok":
            raise AttachmentError(f"{name}: run {run_id} {run['status']}: {run.get('error')}")
        return run
    if len(ok) == 1:
        return ok[0]
    if not ok:
        raise AttachmentError(f"{name}: no successful flea run to report")
    raise AttachmentError(f"{name}: {len(ok)} successful runs; choose one with --run "
                          f"({', '.join(str(r.get('id')) for r in ok)})")


def match_baseline_run(doc, cand_run, name):
    key = point_key(cand_run)
    run = next((r for r in doc["runs"] if point_key(r) == key), None)
    if run is None:
        raise AttachmentError(f"{name}: no run with the same point as candidate run "
                              f"{cand_run.get('id')} ({json.dumps(cand_run.get('point'), sort_keys=True)})")
    if run["status"] != "ok":
        raise AttachmentError(f"{name}: matching run {run.get('id')} {run['status']}: {run.get('error')}")
    return run


def gpu_text(doc):
    gpu = get(doc, "context.gpu")
    if not isinstance(gpu, dict):
        return "none (CPU only)"
    name = gpu.get("name") or "unknown GPU"
    vram = gpu.get("vram_mb")
    return f"{name} {vram / 1024:.0f} GB" if is_number(vram) else name


def nvme_text(doc):
    host = get(doc, "context.host") or {}
    device = host.get("storage_model") or host.get("storage_device") or "unknown"
    storage = get(doc, "context.profile.storage")
    emulated = storage.get("name") if isinstance(storage, dict) else storage
    if get(doc, "context.profile.mode") == "emulate" and emulated:
        return f"{device} (emulating {emulated})"
    return str(device)


def model_text(run):
    path = get(run, "model.path")
    name = os.path.basename(path) if path else get(run, "point.model") or "unknown"
    file_type = get(run, "model.file_type")
    return f"{name} ({file_type})" if file_type and file_type not in name else name


def reference_commit(doc, run):
    return (get(run, "correctness.reference_commit") or get(doc, "context.reference_commit")
            or "unknown")


def correctness_text(doc, run):
    passed = get(run, "correctness.passed")
    commit = reference_commit(doc, run)
    if passed is True:
        return f"validated vs llama.cpp {commit}"
    if passed is False:
        return (f"FAILED vs llama.cpp {commit} (NMSE {fmt(get(run, 'correctness.nmse'))}, "
                f"tolerance {fmt(get(run, 'correctness.tolerance.nmse'))})")
    return "not checked"


def attachment(base_doc, cand_doc, run_id=None, names=("baseline", "candidate")):
    """(json dict, markdown text, [warnings]) for the chosen candidate run and its baseline."""
    cand = pick_candidate_run(cand_doc, run_id, names[1])
    base = match_baseline_run(base_doc, cand, names[0])
    block = {
        "gpu": gpu_text(cand_doc),
        "nvme": nvme_text(cand_doc),
        "model": model_text(cand),
        "baseline_tokens_per_sec": _round(tok_s(base, "tg")),
        "optimized_tokens_per_sec": _round(tok_s(cand, "tg")),
        "vram_peak_mb": get(cand, "memory.peak_vram_mb"),
        "correctness": correctness_text(cand_doc, cand),
    }
    warnings = attachment_warnings(base_doc, cand_doc, base, cand)
    return block, markdown_table(base_doc, cand_doc, base, cand, warnings), warnings


def _round(x, digits=3):
    return None if not is_number(x) else round(float(x), digits)


def attachment_warnings(base_doc, cand_doc, base, cand):
    out = [f"context differs: {label}: baseline {values[0]}, candidate {values[1]}"
           for label, values in context_differences([base_doc, cand_doc])
           if label in ("host", "build type", "profile", "GPU", "CPU")]
    for label, run in (("baseline", base), ("candidate", cand)):
        if get(run, "vs_floor.below_floor"):
            out.append(f"{label} run {run.get('id')} is SUSPECT: faster than the physical floor")
    for label, doc in (("baseline", base_doc), ("candidate", cand_doc)):
        build_type = get(doc, "context.build.build_type")
        if isinstance(build_type, str) and build_type.lower() == "debug":
            out.append(f"{label} is a Debug build")
    return out


def _change(base, cand, higher_is_better):
    if not (is_number(base) and is_number(cand)) or base == 0:
        return "—"
    rel = cand / base - 1.0
    word = "better" if (rel > 0) == higher_is_better and rel != 0 else "worse" if rel else "same"
    return f"{rel:+.1%} ({word})"


def markdown_table(base_doc, cand_doc, base, cand, warnings):
    def rev(doc):
        r = get(doc, "context.build.git_rev") or "—"
        return r + (" (dirty)" if get(doc, "context.build.git_dirty") else "")

    rows = [
        ("tokens/s (generation)", tok_s(base, "tg"), tok_s(cand, "tg"), True),
        ("ms/token median", tg_ms_per_token(base, "median"), tg_ms_per_token(cand, "median"), False),
        ("ms/token p95", tg_ms_per_token(base, "p95"), tg_ms_per_token(cand, "p95"), False),
        ("peak VRAM (MB)", get(base, "memory.peak_vram_mb"), get(cand, "memory.peak_vram_mb"), False),
        ("peak RAM (MB)", get(base, "memory.peak_rss_mb"), get(cand, "memory.peak_rss_mb"), False),
        ("read bytes/token", get(base, "io.read_bytes_per_token"),
         get(cand, "io.read_bytes_per_token"), False),
    ]
    lines = ["| | baseline | candidate | change |", "|---|---|---|---|"]
    lines += [f"| {name} | {fmt(b)} | {fmt(c)} | {_change(b, c, hib)} |" for name, b, c, hib in rows]
    lines += gate_rows(base, cand)
    lines.append(f"| correctness | {correctness_text(base_doc, base)} | "
                 f"{correctness_text(cand_doc, cand)} | |")
    lines.append(f"| git rev | {rev(base_doc)} | {rev(cand_doc)} | |")
    lines.append(f"| run | {base.get('id')} | {cand.get('id')} | |")
    text = "\n".join(lines)
    if warnings:
        text += "\n\n" + "\n".join(f"- **Warning:** {w}" for w in warnings)
    return text


def gate_rows(base, cand):
    """The perf gate's timing verdicts for this pair (report/gate.py's rule and defaults), as rows."""
    rows = []
    for kind in ("tg", "pp"):
        line = timing_line("", kind, base, cand, DEFAULTS)
        if line is None or line["p"] is None:
            continue
        detail = f"p={line['p']:.2g}, {line['note']}"
        rows.append(f"| gate: {kind} time ({line['unit']}) | {fmt(line['base'])} | {fmt(line['cur'])} | "
                    f"**{verdict_text(line)}** ({detail}) |")
    return rows


def render(block, table):
    return "```json\n" + json.dumps(block, indent=2) + "\n```\n\n" + table + "\n"
