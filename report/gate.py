#!/usr/bin/python3
"""Performance regression gate: compare a current results file against a committed baseline.

    report/gate.py --baseline results/baselines/ci-cpu.json --current out/ci_gate-*.json

Prints one line per metric and run point:
    VERDICT  RUN [POINT]  METRIC: base X  cur Y  p=P  effect=E  (notes)
Exit 0: no regression; 1: at least one REGRESSION (or MISSING with --fail-on-missing);
2: bad input (unreadable/malformed file, no run point in common).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from flea_report.compare import context_differences  # noqa: E402
from flea_report.gate_core import (DEFAULTS, advisory_timing, exit_code, format_line, gate,  # noqa: E402
                                   summary_line)
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
    p.add_argument("--mem-tolerance", type=float, default=DEFAULTS["mem_tolerance"],
                   help="relative tolerance on peak RSS/VRAM (default 0.05, never below 1 MB)")
    p.add_argument("--bytes-tolerance", type=float, default=DEFAULTS["bytes_tolerance"],
                   help="relative tolerance on read bytes per token (default 0: exact)")
    p.add_argument("--advisory-timing", action="store_true",
                   help="report timing regressions as ADVISORY without failing (for CI machines that are "
                        "not the baseline's machine); deterministic metrics still fail")
    p.add_argument("--fail-on-missing", action="store_true",
                   help="exit 1 when a baseline point is missing from the current file")
    return p.parse_args(argv)


def check_options(args):
    if not 0 < args.alpha < 1:
        return f"--alpha must be in (0, 1), got {args.alpha:g}"
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
    opts = {"min_effect": args.min_effect, "alpha": args.alpha,
            "mem_tolerance": args.mem_tolerance, "bytes_tolerance": args.bytes_tolerance}
    lines = gate(base, cur, opts)
    if args.advisory_timing:
        lines = [advisory_timing(line) for line in lines]
    for line in lines:
        print(format_line(line))
    print(summary_line(lines))
    return exit_code(lines, args.fail_on_missing)


if __name__ == "__main__":
    sys.exit(main())
