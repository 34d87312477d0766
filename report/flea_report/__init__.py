"""Readers, statistics, tables, plots, gate and PR attachment for Flea-Flicker Lab results files.

Everything works on the plain dicts loaded from the results JSON (see results/FORMAT.md); there is no
global state. The command-line entry points are report/report.py, report/gate.py and
report/pr_attachment.py.
"""
