"""Small accessors over results dicts: dotted lookups, run labels, per-token timings, formatting."""
import json
import math
import re


def get(obj, dotted, default=None):
    """obj['a']['b']['c'] for 'a.b.c'; default when any step is missing, null or not a dict."""
    cur = obj
    for key in dotted.split("."):
        if not isinstance(cur, dict) or cur.get(key) is None:
            return default
        cur = cur[key]
    return cur


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def run_engine(run):
    return run.get("engine") or "flea"


def point_key(run):
    """Identity of a run point across files: engine + the point dict (order-independent)."""
    return run_engine(run) + "|" + json.dumps(run.get("point") or {}, sort_keys=True)


def varying_keys(runs):
    """Point keys whose value differs between runs (or is absent in some), in first-seen order."""
    order, values = [], {}
    for run in runs:
        for key, value in (run.get("point") or {}).items():
            if key not in values:
                order.append(key)
                values[key] = set()
            values[key].add(json.dumps(value, sort_keys=True))
    n_runs = len(runs)
    varying = []
    for key in order:
        present = sum(1 for r in runs if key in (r.get("point") or {}))
        if len(values[key]) > 1 or present != n_runs:
            varying.append(key)
    return varying


def natural_key(text):
    """'synth:13b' sorts after 'synth:3b': digit runs compare as numbers."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.split(r"(\d+)", text) if part)


def sort_value(value):
    """Sort key that orders numbers numerically and puts them before strings and nulls."""
    if is_number(value):
        return (0, float(value), ())
    if value is None:
        return (2, 0.0, ())
    return (1, 0.0, natural_key(str(value)))


def point_label(run, keys):
    point = run.get("point") or {}
    parts = [f"{k}={point[k]}" for k in keys if k in point]
    engine = run_engine(run)
    if engine != "flea":
        parts.insert(0, engine)
    return " ".join(parts) if parts else str(run.get("id", "?"))


def per_token_divisor(run, kind):
    """Tokens per raw sample: samples_ns.tg time n_gen tokens, samples_ns.pp the n_prompt prompt."""
    n = get(run, "point.gen" if kind == "tg" else "point.prompt")
    return n if is_number(n) and n > 0 else None


def samples(run, kind):
    """Raw samples in ns as a list of floats (empty when absent)."""
    values = get(run, f"samples_ns.{kind}") or []
    return [float(v) for v in values if is_number(v)]


def tg_ms_per_token(run, stat):
    """Median/p95 ms per generated token: the summary, else computed from raw tg samples."""
    value = get(run, f"summary.tg_ms_per_token.{stat}")
    if is_number(value):
        return float(value)
    raw = samples(run, "tg")
    n_gen = per_token_divisor(run, "tg")
    if not raw or n_gen is None:
        return None
    q = {"median": 50.0, "p95": 95.0, "p99": 99.0}.get(stat)
    if q is None:
        return None
    values = sorted(raw)
    return percentile(values, q) / n_gen / 1e6


def tok_s(run, kind):
    value = get(run, f"summary.{kind}_tok_s")
    if is_number(value):
        return float(value)
    raw = samples(run, kind)
    n = per_token_divisor(run, kind)
    if not raw or n is None:
        return None
    med = percentile(sorted(raw), 50.0)
    return n / (med / 1e9) if med > 0 else None


def percentile(sorted_values, q):
    """Linear-interpolated percentile of an already sorted list (numpy's default method)."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def fmt(x, unit=""):
    """3 significant figures without exponent for ordinary magnitudes; an em dash for null."""
    if not is_number(x):
        return "—"
    a = abs(x)
    if a == 0:
        s = "0"
    elif a >= 100:
        s = f"{x:,.0f}"
    elif a >= 10:
        s = f"{x:.1f}"
    elif a >= 1:
        s = f"{x:.2f}"
    elif a >= 0.001:
        s = f"{x:.3f}"
    else:
        s = f"{x:.2e}"
    return s + unit


def fmt_pct(fraction):
    return "—" if not is_number(fraction) else f"{100.0 * fraction:.0f}%"


def fmt_bytes(n):
    if not is_number(n):
        return "—"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"
