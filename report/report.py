#!/usr/bin/python3
"""Turn results files into a markdown report with comparison tables and PNG plots.

    report/report.py results/runs/*.json --out out/report

Writes OUT/report.md and the PNG plots it references. Files named *.trace.json among the inputs are
skipped (they are read as the trace of the results file with the same run id). Exit 0 on success,
2 on bad input (each bad file gets one line: file name and what is wrong).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from flea_report.load import ResultsError, load_all  # noqa: E402
from flea_report.render import DEFAULT_NOISE_CV, build_report  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("results", nargs="+", help="results JSON files (several: side by side)")
    p.add_argument("--out", required=True, help="output directory (created if needed)")
    p.add_argument("--noise-cv", type=float, default=DEFAULT_NOISE_CV,
                   help="flag sample sets whose coefficient of variation exceeds this (default 0.10)")
    p.add_argument("--title", default="Flea-Flicker Lab report", help="report heading")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    paths = [p for p in args.results if not p.endswith(".trace.json")]
    if not paths:
        print("report: no results files given (only *.trace.json)", file=sys.stderr)
        return 2
    try:
        docs = load_all(paths)
    except ResultsError as err:
        for line in str(err).splitlines():
            print(f"report: {line}", file=sys.stderr)
        return 2
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as err:
        print(f"report: {args.out}: cannot create output directory: {err.strerror}", file=sys.stderr)
        return 2
    from flea_report.plots import make_plots  # matplotlib import is slow; only when needed
    plots = make_plots(docs, args.out)
    text = build_report(docs, plots, noise_cv=args.noise_cv, title=args.title)
    out_path = os.path.join(args.out, "report.md")
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(text)
    made = [p["file"] for p in plots if p.get("file")]
    print(f"report: wrote {out_path} and {len(made)} plot(s): {', '.join(made) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
