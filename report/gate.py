#!/usr/bin/python3
"""Performance regression gate: compare a current results file against a committed baseline.

    report/gate.py --baseline results/baselines/ci-cpu.json --current out/ci_gate-*.json

Prints the timing rule, then one line per metric and run point, then a summary:
    VERDICT  RUN [POINT]  METRIC: base X  cur Y  p=P  effect=E [LO, HI]  (notes)
    gate: OUTCOME: N points, M checks: ...
Timing (raw samples): effect = median(current)/median(baseline) - 1, [LO, HI] its seeded bootstrap
interval (--confidence, 90%), p the two-sided Mann-Whitney U test.
    REGRESSION    p < alpha and effect > +min-effect
    IMPROVED      p < alpha and effect < -min-effect (SUSPECT: faster than the physical floor)
    INCONCLUSIVE  otherwise, with too few samples for any test to reach alpha (fewer than 5 per
                  side at 0.01; a bootstrap of so few values is too narrow to trust either)
    PASS          otherwise, when HI < +min-effect: the data show it is not slower by min-effect
    INCONCLUSIVE  otherwise: too much noise to tell; the note says so
OUTCOME is FAIL when the exit status is 1, else INCONCLUSIVE when any line is, else PASS.
Exit 0: no regression (INCONCLUSIVE lines included); 1: at least one REGRESSION (or MISSING with
--fail-on-missing, or INCONCLUSIVE with --fail-on-inconclusive); 2: bad input (unreadable/malformed
file, no run point in common).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from flea_report.compare import context_differences  # noqa: E402
from flea_report.gate_core import (DEFAULTS, advisory_timing, exit_code, format_line, gate,  # noqa: E402
                                   rule_line, summary_line)
from flea_report.load import ResultsError, load_results  # noqa: E402
from flea_report.fields import point_key  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--baseline", required=True, help="baseline results JSON")
    p.add_argument("--current", required=True, help="current results JSON")
    p.add_argument("--min-effect", type=float, default=DEFAULTS["min_effect"],
                   help="smallest relative change of the median timing that counts (default 0.05)")
    p.add_argument("--alpha", type=float, default=DEFAULTS["alpha"],
                   help="Mann-Whitney U two-sided significance level (default 0.01)")
    p.add_argument("--confidence", type=float, default=DEFAULTS["confidence"],
                   help="level of the bootstrap interval of the median ratio; PASS needs its upper end "
                        "below +min-effect (default 0.90: a one-sided 5%% test)")
    p.add_argument("--mem-tolerance", type=float, default=DEFAULTS["mem_tolerance"],
                   help="relative tolerance on peak RSS/VRAM (default 0.05, never below 1 MB)")
    p.add_argument("--bytes-tolerance", type=float, default=DEFAULTS["bytes_tolerance"],
                   help="relative tolerance on read bytes per token (default 0: exact)")
    p.add_argument("--advisory-timing", action="store_true",
                   help="report timing regressions as ADVISORY without failing (for CI machines that are "
                        "not the baseline's machine); deterministic metrics still fail")
    p.add_argument("--fail-on-missing", action="store_true",
                   help="exit 1 when a baseline point is missing from the current file")
    p.add_argument("--fail-on-inconclusive", action="store_true",
                   help="exit 1 when a timing verdict is INCONCLUSIVE (for a gate on a quiet machine "
                        "that must show every point is within min-effect)")
    return p.parse_args(argv)


def check_options(args):
    if not 0 < args.alpha < 1:
        return f"--alpha must be in (0, 1), got {args.alpha:g}"
    if not 0 < args.confidence < 1:
        return f"--confidence must be in (0, 1), got {args.confidence:g}"
    for name in ("min_effect", "mem_tolerance", "bytes_tolerance"):
        if getattr(args, name) < 0:
            return f"--{name.replace('_', '-')} must be >= 0"
    return None


def main(argv=None):
    args = parse_args(argv)
    problem = check_options(args)
    if problem:
        print(f"gate: {problem}", file=sys.stderr)
        return 2
    try:
        base = load_results(args.baseline)
        cur = load_results(args.current)
    except ResultsError as err:
        print(f"gate: {err}", file=sys.stderr)
        return 2
    base_keys = {point_key(r) for r in base["runs"]}
    if base["runs"] and not base_keys & {point_key(r) for r in cur["runs"]}:
        print(f"gate: {args.current}: no run point in common with {args.baseline} "
              "(wrong baseline or scenario?)", file=sys.stderr)
        return 2
    for label, values in context_differences([base, cur]):
        print(f"NOTE        context differs: {label}: baseline {values[0]!s}, current {values[1]!s}")
    opts = {"min_effect": args.min_effect, "alpha": args.alpha, "confidence": args.confidence,
            "mem_tolerance": args.mem_tolerance, "bytes_tolerance": args.bytes_tolerance}
    lines = gate(base, cur, opts)
    if args.advisory_timing:
        lines = [advisory_timing(line) for line in lines]
    print(f"NOTE        {rule_line(opts)}")
    for line in lines:
        print(format_line(line))
    print(summary_line(lines, args.fail_on_missing, args.fail_on_inconclusive))
    return exit_code(lines, args.fail_on_missing, args.fail_on_inconclusive)


if __name__ == "__main__":
    sys.exit(main())
