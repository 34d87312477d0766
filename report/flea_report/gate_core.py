"""Compare a current results file against a baseline, run point by run point.

Timing metrics (raw samples_ns.tg / samples_ns.pp), with effect = median(cur) / median(base) - 1 and
[lo, hi] its bootstrap confidence interval (level `confidence`):
  REGRESSION    p < alpha (two-sided Mann-Whitney U) and effect > +min_effect
  IMPROVED      p < alpha and effect < -min_effect (SUSPECT when below the physical floor)
  INCONCLUSIVE  otherwise, when no test can reach alpha with this few samples (< 5 per side at
                0.01; the bootstrap of so few values is too narrow to trust)
  PASS          otherwise, if hi < +min_effect: the data show it is not slower by min_effect
  INCONCLUSIVE  otherwise: too noisy to tell either way
Both p and effect are needed for an alarm: on a shared, noisy machine small but "significant"
shifts are common and not worth a red CI. Deterministic metrics are compared exactly or within a
stated tolerance.
"""
import numpy as np

from .fields import get, is_number, per_token_divisor, point_key, point_label, run_engine, \
    samples, varying_keys
from .stats import mann_whitney, median_ratio_ci, min_attainable_p


def med(values):
    return float(np.median(values))

PASS, REGRESSION, IMPROVED, MISSING, SUSPECT = "PASS", "REGRESSION", "IMPROVED", "MISSING", "SUSPECT"
INCONCLUSIVE = "INCONCLUSIVE"

DEFAULTS = {
    "min_effect": 0.05,     # relative change of the median timing
    "alpha": 0.01,          # two-sided Mann-Whitney significance
    "confidence": 0.90,     # bootstrap interval of the median ratio; PASS needs its upper end
                            # below +min_effect (a one-sided 5% test, as in equivalence testing)
    "mem_tolerance": 0.05,  # relative, for peak RSS / VRAM ...
    "mem_slack_mb": 1.0,    # ... but never tighter than this (allocator noise on tiny models)
    "bytes_tolerance": 0.0,  # read bytes per token are deterministic for a given plan
    "nmse_factor": 2.0,     # when the run states no NMSE tolerance: current <= factor * baseline
}


def _line(label, metric, verdict, base, cur, unit="", p=None, effect=None, note="", ci=None):
    """ci: (low, high) of the effect (relative change), or None."""
    return {"point": label, "metric": metric, "verdict": verdict, "base": base, "cur": cur,
            "unit": unit, "p": p, "effect": effect, "ci": ci, "note": note}


def match_runs(base_doc, cur_doc):
    """[(key, base_run | None, cur_run | None)] in baseline order, then current-only points.

    A key occurring twice in one file is matched by occurrence order.
    """
    def keyed(runs):
        seen, out = {}, []
        for run in runs:
            k = point_key(run)
            seen[k] = seen.get(k, 0) + 1
            out.append((f"{k}#{seen[k]}", run))
        return out

    base = keyed(base_doc["runs"])
    cur = dict(keyed(cur_doc["runs"]))
    pairs = [(k, b, cur.pop(k, None)) for k, b in base]
    pairs += [(k, None, c) for k, c in cur.items()]
    return pairs


def timing_line(label, kind, base_run, cur_run, opts):
    """One timing metric; None when neither run has samples of that kind."""
    b, c = samples(base_run, kind), samples(cur_run, kind)
    metric = f"{kind} time"
    if not b and not c:
        return None
    div = per_token_divisor(cur_run, kind) or per_token_divisor(base_run, kind)
    unit = "ms/tok" if div else "ms/sample"
    scale = 1e6 * (div or 1)
    if not b or not c:
        side = "baseline" if not b else "current"
        return _line(label, metric, MISSING, med(b) / scale if b else None,
                     med(c) / scale if c else None, unit, note=f"no {kind} samples in {side}")
    test = mann_whitney(b, c)
    effect = med(c) / med(b) - 1.0
    ratio_ci = median_ratio_ci(b, c, opts["confidence"])
    ci = None if ratio_ci is None else (ratio_ci[0] - 1.0, ratio_ci[1] - 1.0)
    verdict, why = timing_verdict(test["p"], effect, ci, len(b), len(c), opts)
    if verdict == IMPROVED and get(cur_run, "vs_floor.below_floor"):
        verdict = SUSPECT
    note = f"n={len(b)}/{len(c)}" + (f", {why}" if why else "")
    return _line(label, metric, verdict, med(b) / scale, med(c) / scale, unit, test["p"], effect,
                 note, ci)


def timing_verdict(p, effect, ci, n_base, n_cur, opts):
    """(verdict, reason or "") for one timing metric; see the module docstring for the rule."""
    alpha, min_effect = opts["alpha"], opts["min_effect"]
    if p < alpha and effect > min_effect:
        return REGRESSION, ""
    if p < alpha and effect < -min_effect:
        return IMPROVED, ""
    if min_attainable_p(n_base, n_cur) >= alpha:
        # No test can reach alpha; a bootstrap of 3 values per side is too narrow to trust either.
        return INCONCLUSIVE, (f"too few samples to reach alpha={alpha:g}: need >= "
                              f"{min_samples_for_alpha(alpha)} per side")
    if ci is not None and ci[1] < min_effect:
        return PASS, ""
    if ci is None:
        return INCONCLUSIVE, "no interval (zero baseline median)"
    return INCONCLUSIVE, (f"interval reaches {ci[1]:+.1%}, not below +{min_effect:.1%}, and no "
                          f"significant shift beyond it: more samples or a quieter machine")


def min_samples_for_alpha(alpha):
    """Smallest n per side (equal sides) whose exact two-sided test can give p < alpha."""
    n = 1
    while min_attainable_p(n, n) >= alpha:
        n += 1
    return n


def _relative(base, cur):
    return None if not (is_number(base) and is_number(cur)) or base == 0 else cur / base - 1.0


def lower_is_better_line(label, metric, base, cur, tolerance_abs, unit=""):
    """Deterministic 'lower is better' metric with an absolute tolerance."""
    if base is None and cur is None:
        return None
    effect = _relative(base, cur)
    if not is_number(base) or not is_number(cur):
        return _line(label, metric, MISSING, base, cur, unit, note="null on one side")
    if cur > base + tolerance_abs:
        verdict = REGRESSION
    elif cur < base - tolerance_abs:
        verdict = IMPROVED
    else:
        verdict = PASS
    note = f"tolerance ±{tolerance_abs:g}{(' ' + unit) if unit else ''}" if tolerance_abs else "exact"
    return _line(label, metric, verdict, base, cur, unit, effect=effect, note=note)


def memory_lines(label, base_run, cur_run, opts):
    lines = []
    for name in ("peak_rss_mb", "peak_vram_mb"):
        b, c = get(base_run, f"memory.{name}"), get(cur_run, f"memory.{name}")
        tol = max(opts["mem_tolerance"] * b, opts["mem_slack_mb"]) if is_number(b) else 0.0
        line = lower_is_better_line(label, f"memory.{name}", b, c, tol, "MB")
        if line:
            line["note"] = f"tolerance {opts['mem_tolerance']:.0%} or {opts['mem_slack_mb']:g} MB"
            lines.append(line)
    return lines


def io_lines(label, base_run, cur_run, opts):
    b = get(base_run, "io.read_bytes_per_token")
    c = get(cur_run, "io.read_bytes_per_token")
    tol = opts["bytes_tolerance"] * b if is_number(b) else 0.0
    line = lower_is_better_line(label, "io.read_bytes_per_token", b, c, tol, "B")
    return [line] if line else []


# What the machine had when the plan was made (MemAvailable, the memory cgroup's room, the margin
# taken from it, and the sentence saying so): context, not a decision. The plan's decisions
# (placement, budgets, bytes) are compared; these differ from machine to machine and run to run.
PLAN_MACHINE_FIELDS = frozenset({"host_available_bytes", "host_reserved_bytes", "host_margin_bytes",
                                 "vram_budget_source"})


def _plan_decisions(plan):
    if not isinstance(plan, dict):
        return plan
    return {k: v for k, v in plan.items() if k not in PLAN_MACHINE_FIELDS}


def plan_lines(label, base_run, cur_run):
    if "plan" not in base_run and "plan" not in cur_run:
        return []
    same = _plan_decisions(base_run.get("plan")) == _plan_decisions(cur_run.get("plan"))
    return [_line(label, "plan", PASS if same else REGRESSION, "", "",
                  note="identical" if same else "residency plan changed")]


def correctness_lines(label, base_run, cur_run, opts):
    bc, cc = base_run.get("correctness"), cur_run.get("correctness")
    if not isinstance(bc, dict) and not isinstance(cc, dict):
        return []
    if not isinstance(cc, dict):
        return [_line(label, "correctness", MISSING, get(bc, "passed"), None,
                      note="no correctness check in current")]
    lines = []
    bp, cp = get(bc or {}, "passed"), cc.get("passed")
    if cp is not None or bp is not None:
        verdict = PASS
        if cp is False and bp is not False:
            verdict = REGRESSION
        elif cp is True and bp is False:
            verdict = IMPROVED
        elif cp is None:
            verdict = MISSING
        lines.append(_line(label, "correctness.passed", verdict, bp, cp, note="exact"))
    b_nmse, c_nmse = get(bc or {}, "nmse"), cc.get("nmse")
    if is_number(c_nmse):
        stated = get(cc, "tolerance.nmse")
        if is_number(stated):
            limit, note = stated, f"stated tolerance {stated:g}"
        elif is_number(b_nmse):
            limit = opts["nmse_factor"] * b_nmse
            note = f"no stated tolerance: <= {opts['nmse_factor']:g} x baseline"
        else:
            limit, note = None, "no tolerance and no baseline"
        verdict = PASS if limit is None or c_nmse <= limit else REGRESSION
        lines.append(_line(label, "correctness.nmse", verdict, b_nmse, c_nmse,
                           effect=_relative(b_nmse, c_nmse), note=note))
    elif is_number(b_nmse):
        lines.append(_line(label, "correctness.nmse", MISSING, b_nmse, None, note="null in current"))
    return lines


def point_lines(label, base_run, cur_run, opts):
    """Every metric line for one matched point."""
    if base_run is None:
        return [_line(label, "point", MISSING, None, cur_run.get("id"), note="not in baseline")]
    if cur_run is None:
        return [_line(label, "point", MISSING, base_run.get("id"), None,
                      note="in baseline, missing from current")]
    if base_run["status"] != "ok":
        return [_line(label, "status", MISSING, base_run["status"], cur_run["status"],
                      note="baseline run did not succeed; nothing to compare")]
    if cur_run["status"] != "ok":
        return [_line(label, "status", REGRESSION, "ok", cur_run["status"],
                      note=str(cur_run.get("error") or ""))]
    lines = [timing_line(label, kind, base_run, cur_run, opts) for kind in ("tg", "pp")]
    lines = [ln for ln in lines if ln]
    lines += io_lines(label, base_run, cur_run, opts)
    lines += memory_lines(label, base_run, cur_run, opts)
    lines += plan_lines(label, base_run, cur_run)
    lines += correctness_lines(label, base_run, cur_run, opts)
    if get(cur_run, "vs_floor.below_floor"):
        lines.append(_line(label, "vs_floor", SUSPECT, get(base_run, "vs_floor.ratio"),
                           get(cur_run, "vs_floor.ratio"),
                           note="current is faster than the physical floor: measurement suspect"))
    return lines


def gate(base_doc, cur_doc, opts=None):
    """All metric lines for two loaded results files."""
    opts = {**DEFAULTS, **(opts or {})}
    keys = varying_keys(base_doc["runs"] + cur_doc["runs"])
    lines = []
    for _, b, c in match_runs(base_doc, cur_doc):
        run = b if b is not None else c
        label = f"{run.get('id', '?')} [{point_label(run, keys)}]" if keys else str(run.get("id"))
        if run_engine(run) != "flea" and not keys:
            label += f" [{run_engine(run)}]"
        lines.extend(point_lines(label, b, c, opts))
    return lines


ADVISORY = "ADVISORY"
TIMING_UNITS = ("ms/tok", "ms/sample")


def advisory_timing(line):
    """A timing REGRESSION becomes ADVISORY (printed, not failing); other lines are unchanged."""
    if line["verdict"] == REGRESSION and line.get("unit") in TIMING_UNITS:
        note = (line.get("note") or "") + " (advisory: timing on a machine other than the baseline's)"
        return dict(line, verdict=ADVISORY, note=note.strip())
    return line


def exit_code(lines, fail_on_missing=False, fail_on_inconclusive=False):
    if any(ln["verdict"] == REGRESSION for ln in lines):
        return 1
    if fail_on_missing and any(ln["verdict"] == MISSING for ln in lines):
        return 1
    if fail_on_inconclusive and any(ln["verdict"] == INCONCLUSIVE for ln in lines):
        return 1
    return 0


def _num(x, unit):
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return "—" if x is None or x == "" else str(x).lower()
    if unit == "B":
        return f"{x:,.0f} B"
    if isinstance(x, float) and (abs(x) < 1e-3 and x != 0):
        return f"{x:.3g}{(' ' + unit) if unit else ''}"
    return f"{x:.4g}{(' ' + unit) if unit else ''}"


def format_line(line):
    p = "p=—" if line["p"] is None else f"p={line['p']:.2g}"
    effect = "effect=—" if line["effect"] is None else f"effect={line['effect']:+.1%}"
    if line.get("ci") is not None:
        effect += f" {format_ci(line['ci'])}"
    text = (f"{line['verdict']:<10}  {line['point']}  {line['metric']}: "
            f"base {_num(line['base'], line['unit'])}  cur {_num(line['cur'], line['unit'])}  "
            f"{p}  {effect}")
    return text + (f"  ({line['note']})" if line["note"] else "")


def format_ci(ci):
    """'[+12.0%, +48.0%]' for an interval of the relative change."""
    return f"[{ci[0]:+.1%}, {ci[1]:+.1%}]"


def verdict_text(line):
    """'INCONCLUSIVE +30.0% [+12.0%, +48.0%]': the verdict as the report and PR attachment show it."""
    if line["effect"] is None:
        return line["verdict"]
    text = f"{line['verdict']} {line['effect']:+.1%}"
    return text + (f" {format_ci(line['ci'])}" if line.get("ci") is not None else "")


def rule_line(opts):
    """The timing rule, printed once before the verdicts so a reader can check each line."""
    o = {**DEFAULTS, **(opts or {})}
    # Lower case: a grep for the verdict words must not hit this line.
    return (f"timing: effect = median(cur)/median(base) - 1 [{o['confidence']:.0%} bootstrap interval]; "
            f"slower: p < {o['alpha']:g} and effect > +{o['min_effect']:.1%}; "
            f"pass: interval below +{o['min_effect']:.1%}; else inconclusive")


def summary_line(lines, fail_on_missing=False, fail_on_inconclusive=False):
    counts = {v: sum(1 for ln in lines if ln["verdict"] == v)
              for v in (REGRESSION, ADVISORY, INCONCLUSIVE, IMPROVED, MISSING, SUSPECT, PASS)}
    n_points = len({ln["point"] for ln in lines})
    if exit_code(lines, fail_on_missing, fail_on_inconclusive):
        outcome = "FAIL"
    elif counts[INCONCLUSIVE]:
        outcome = "INCONCLUSIVE"
    else:
        outcome = "PASS"
    parts = ", ".join(f"{n} {v.lower()}" for v, n in counts.items())
    return f"gate: {outcome}: {n_points} points, {len(lines)} checks: {parts}"
