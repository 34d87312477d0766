#!/usr/bin/python3
"""Print the benchmark block CONTRIBUTING asks a pull request for, ready to paste.

    report/pr_attachment.py --baseline main.json --candidate pr.json [--run r0001]

Both files come from the pr_benchmark scenario (baseline: main branch, candidate: the PR, same
machine). --run picks the candidate run when the file holds several; the baseline run is the one
with the same point. Prints a ```json block (gpu, nvme, model, baseline_tokens_per_sec,
optimized_tokens_per_sec, vram_peak_mb, correctness) and a markdown table. Exit 0 on success,
2 on bad input.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from flea_report.attachment import AttachmentError, attachment, render  # noqa: E402
from flea_report.load import ResultsError, load_results  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--baseline", required=True, help="results JSON of the baseline (e.g. main)")
    p.add_argument("--candidate", required=True, help="results JSON of the candidate (the PR)")
    p.add_argument("--run", help="candidate run id (needed when the file has several runs)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        base = load_results(args.baseline)
        cand = load_results(args.candidate)
        block, table, warnings = attachment(base, cand, args.run,
                                            names=(args.baseline, args.candidate))
    except (ResultsError, AttachmentError) as err:
        print(f"pr_attachment: {err}", file=sys.stderr)
        return 2
    for w in warnings:
        print(f"pr_attachment: warning: {w}", file=sys.stderr)
    sys.stdout.write(render(block, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
