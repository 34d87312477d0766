"""serving.py on a frozen flea-serve results file (fixtures/serving.json: the fake server, two server
configurations at concurrency 1, 2, 4)."""
import copy
import os

import pytest

from flea_report import serving
from flea_report.load import load_results
from flea_report.render import build_report

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "serving.json")


@pytest.fixture
def doc():
    return load_results(FIXTURE)


def test_one_row_per_point_grouped_by_server_then_concurrency(doc):
    rows = serving.serving_rows([doc])
    assert [r[0] for r in rows] == ["r0004", "r0005", "r0006", "r0001", "r0002", "r0003"]
    assert [r[2] for r in rows] == [1, 2, 4, 1, 2, 4]
    assert rows[0][1].startswith("1b:Q4_K_M") and rows[3][1].startswith("7b:Q4_K_M")


def test_speedup_is_over_the_same_servers_concurrency_one(doc):
    rows = {r[0]: r for r in serving.serving_rows([doc])}
    runs = {r["id"]: r for r in doc["runs"]}
    want = runs["r0003"]["serving"]["output_tok_s"] / runs["r0001"]["serving"]["output_tok_s"]
    assert rows["r0003"][6] == f"{want:.2f}×"
    assert rows["r0001"][6] == "1.00×"


def test_failed_point_shows_its_error_and_no_speedup(doc):
    broken = copy.deepcopy(doc)
    run = broken["runs"][0]
    run["status"], run["error"] = "failed", "flea serve: server not healthy within health_timeout_s 1.0"
    run["serving"] = None
    rows = {r[0]: r for r in serving.serving_rows([broken])}
    assert rows["r0001"][-1].startswith("failed: flea serve: server not healthy")
    assert rows["r0001"][5] == "—"
    assert rows["r0002"][6] == "—"  # its group's concurrency-1 point failed


def test_report_has_a_serving_table_and_no_empty_bench_table(doc):
    text = build_report([doc], [])
    assert "## Serving" in text
    assert "## Runs" not in text
    assert text.count("| r000") == 6


def test_throughput_plot_is_written(doc, tmp_path):
    from flea_report.plots import make_plots
    plots = make_plots([doc], str(tmp_path))
    made = [p for p in plots if p["title"] == "Serving throughput vs concurrency"]
    assert made and made[0]["file"] == "serving_throughput.png"
    assert (tmp_path / "serving_throughput.png").stat().st_size > 10000
    series = serving.throughput_series([doc])
    assert sorted(c for c, _ in series[next(iter(series))]) == [1, 2, 4]


def test_no_serving_runs_no_section_no_plot(tmp_path):
    bench = load_results(os.path.join(os.path.dirname(__file__), "fixtures", "ci_base.json"))
    assert serving.serving_section([bench], lambda h, r: "") is None
    assert serving.throughput_series([bench]) == {}
