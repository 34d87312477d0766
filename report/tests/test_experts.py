"""Mixture-of-experts residency: the Experts section of report.md, the hit-rate plot, loading,
the schema and the gate on records with `experts` and `plan.experts`.

Regenerate the golden MoE report after an intended change (then review the diff):
    FLEA_UPDATE_GOLDEN=1 /usr/bin/python3 -m pytest -q report/tests/test_experts.py
"""
import copy
import json
import os

import pytest

import gate
import report
import synth
from conftest import REPORT, TESTS
from flea_report import experts, render
from flea_report.load import ResultsError, parse_results

MOE = "moe_sweep.json"
GOLDEN = os.path.join(TESTS, "golden", "report_moe.md")
PLOT = "expert_hit_rate_vs_cache.png"


def load_fixture(fixture_path, name=MOE):
    with open(fixture_path(name), encoding="utf-8") as f:
        return json.load(f)


def run_report(paths, out):
    assert report.main([str(p) for p in paths] + ["--out", str(out)]) == 0
    return (out / "report.md").read_text(encoding="utf-8")


def experts_table(text):
    """{run id: {column: cell}} from the Experts section's table."""
    lines = text.split("## Experts", 1)[1].splitlines()
    table = [ln for ln in lines[2:] if ln.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    rows = {}
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        row = dict(zip(header, cells))
        rows[row["run"]] = row
    return header, rows


@pytest.fixture(scope="module")
def moe_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("moe")
    text = run_report([os.path.join(TESTS, "fixtures", MOE)], out)
    return out, text


def test_golden_moe_report(moe_report):
    _, text = moe_report
    if os.environ.get("FLEA_UPDATE_GOLDEN") == "1":
        with open(GOLDEN, "w", encoding="utf-8") as f:
            f.write(text)
        pytest.skip("golden report_moe.md rewritten; review the diff")
    with open(GOLDEN, encoding="utf-8") as f:
        assert text == f.read(), ("report.md differs from tests/golden/report_moe.md; if intended, "
                                  "rerun with FLEA_UPDATE_GOLDEN=1 and review the diff")


def test_bytes_predicted_at_the_measured_hit_rate():
    run = {"io": {"read_bytes_per_token": 5000},
           "experts": {"hit_rate": 0.25},
           "plan": {"experts": {"dense_bytes_per_token": 1000, "expert_bytes_per_token": 4000,
                                "predicted_hit_rate": 0.5}}}
    assert experts.predicted_bytes_per_token(run) == 1000 + 0.75 * 4000  # not the uniform 0.5
    assert experts.bytes_ratio(run) == pytest.approx(5000 / 4000)
    assert experts.off_plan(1.25) and experts.off_plan(0.89)
    assert not experts.off_plan(0.9) and not experts.off_plan(1.1) and not experts.off_plan(None)
    # Nothing left to stream per expert: the dense bytes, whatever the hit rate says.
    run["plan"]["experts"]["expert_bytes_per_token"] = 0
    run["experts"]["hit_rate"] = None
    assert experts.predicted_bytes_per_token(run) == 1000
    # Experts to stream but no measured hit rate, or no plan: no prediction.
    run["plan"]["experts"]["expert_bytes_per_token"] = 4000
    assert experts.predicted_bytes_per_token(run) is None and experts.bytes_ratio(run) is None
    assert experts.predicted_bytes_per_token({"experts": {"hit_rate": 0.5}}) is None


def test_section_rows_carry_the_right_numbers(moe_report, fixture_path):
    _, text = moe_report
    header, rows = experts_table(text)
    assert header[:3] == ["run", "engine", "model"] and "expert_cache" not in header
    doc = load_fixture(fixture_path)
    for run in doc["runs"]:
        if run["status"] != "ok" or run["engine"] != "flea" or run["experts"] is None:
            continue
        row, pe, x = rows[run["id"]], run["plan"]["experts"], run["experts"]
        measured = run["io"]["read_bytes_per_token"]
        predicted = pe["dense_bytes_per_token"] + (1 - (x["hit_rate"] or 0)) * pe["expert_bytes_per_token"]
        assert row["measured/predicted"] == f"{measured / predicted:.2f}×", run["id"]
        assert row["cache/layer"] == str(x["cache_per_layer"])
        assert row["policy"] == x["policy"]
        assert row["uniform hit rate"] == f"{100 * x['predicted_hit_rate']:.1f}%"
        assert row["tg tok/s"] == render.fmt(run["summary"]["tg_tok_s"])
    r3 = rows["r0003"]
    assert (r3["expert residency"], r3["cache/layer"], r3["hit rate"], r3["uniform hit rate"]) == \
        ("expert (4 layers streamed)", "4", "50.6%", "50.0%")
    assert r3["measured/predicted"] == "1.00×" and r3["flags"] == ""


def test_read_bytes_off_plan_is_flagged(moe_report):
    _, rows = experts_table(moe_report[1])
    assert rows["r0004"]["measured/predicted"] == "1.30×"
    assert rows["r0004"]["flags"].startswith("**off plan**: reads 1.30× the predicted bytes/token")
    assert [rid for rid, row in rows.items() if "off plan" in row["flags"]] == ["r0004"]


def test_layer_residency_nulls_and_failures(moe_report):
    _, rows = experts_table(moe_report[1])
    layer = rows["r0006"]  # every expert read with its layer: no lookups, dense bytes only
    assert (layer["expert residency"], layer["hit rate"], layer["measured/predicted"]) == ("layer", "—", "1.00×")
    assert layer["read/tok"] == layer["plan at measured hit rate"] == "81.79 MB"
    io_only = rows["r0011"]  # plan.experts but no experts block (flea bench --compute none)
    assert (io_only["hit rate"], io_only["plan at measured hit rate"], io_only["measured/predicted"],
            io_only["uniform hit rate"]) == ("—", "—", "—", "25.0%")
    assert rows["r0012"]["flags"].startswith("**failed**: flea exited 3")  # asked for experts, failed


def test_skew_baseline_and_peak_memory(moe_report, fixture_path):
    _, rows = experts_table(moe_report[1])
    assert rows["r0007"]["routing skew"] == "1.50" and rows["r0001"]["routing skew"] == "—"
    baseline = rows["r0013"]
    assert baseline["engine"] == "llama-bench" and baseline["tg tok/s"] == "25.3"
    assert baseline["expert residency"] == "—" and baseline["vs baseline"] == "—"
    assert rows["r0003"]["vs baseline"].endswith("× llama-bench")
    assert rows["r0007"]["vs baseline"] == "—"  # the skewed model had no baseline run
    assert rows["r0003"]["peak RAM MB"] == "265"


def test_every_column_is_explained(moe_report):
    text = moe_report[1]
    notes = text.split("## Experts", 1)[1].split("## Plots", 1)[0]
    explained = [ln for ln in notes.splitlines() if ln.startswith("- ")]
    for column in render.EXPERTS_HEADERS:
        if column != "flags":
            assert any(f"**{column}**" in ln for ln in explained), column


def test_hit_rate_plot_for_a_cache_sweep(moe_report):
    import matplotlib.image
    out, text = moe_report
    path = out / PLOT
    assert path.exists() and path.stat().st_size > 5000
    assert matplotlib.image.imread(str(path))[..., :3].std() > 0.05
    assert f"]({PLOT})" in text
    assert "Not shown (a single cache size): synth:moe-8x2:Q4_K_M, skew —, lfu." in text


def test_hit_rate_plot_skipped_without_two_cache_sizes(tmp_path, fixture_path):
    doc = load_fixture(fixture_path)
    doc["runs"] = [r for r in doc["runs"] if r["id"] in ("r0003", "r0005", "r0013")]
    path = synth.write_json(str(tmp_path / "one_cache.json"), doc)
    text = run_report([path], tmp_path / "out")
    assert "## Experts" in text
    assert "_Skipped: no (model, routing skew, policy) group has measured hit rates at two or more " \
           "cache sizes._" in text
    assert not (tmp_path / "out" / PLOT).exists()


@pytest.mark.parametrize("name", ["gpu_sweep_a.json", "minimal_nulls.json", "ci_base.json"])
def test_dense_files_have_no_experts_section_or_plot(tmp_path, fixture_path, name):
    text = run_report([fixture_path(name)], tmp_path)
    assert "## Experts" not in text and "Expert cache hit rate" not in text
    assert not (tmp_path / PLOT).exists()


def test_dense_and_moe_files_side_by_side(tmp_path, fixture_path):
    text = run_report([fixture_path("gpu_sweep_a.json"), fixture_path(MOE)], tmp_path)
    header, rows = experts_table(text)
    assert header[0] == "file" and {r["file"] for r in rows.values()} == {"#2"}
    assert (tmp_path / PLOT).exists()


def test_expert_block_of_nulls_renders_dashes():
    run = {"id": "r0001", "point": {"model": "m"}, "status": "ok",
           "experts": {"residency": "expert", "policy": None, "layers": None, "cache_per_layer": None,
                       "hit_rate": None, "per_layer": []},
           "plan": None, "io": None, "memory": None, "summary": None}
    doc = {"context": {}, "runs": [run]}
    text = render.experts_section([doc], 0.1)
    row = text.splitlines()[4]
    assert row.startswith("| r0001 | expert | — | — | — | — | — | — | — | — | — | — | — | — |")


def test_wrong_expert_types_are_bad_input(fixture_path):
    doc = load_fixture(fixture_path)
    doc["runs"][2]["experts"]["hit_rate"] = "high"
    with pytest.raises(ResultsError, match=r"runs\[2\] \(id 'r0003'\)\.experts\.hit_rate: expected number"):
        parse_results(json.dumps(doc), "moe.json")
    doc = load_fixture(fixture_path)
    doc["runs"][0]["plan"]["experts"] = [1, 2]
    with pytest.raises(ResultsError, match=r"plan\.experts: expected object, got list"):
        parse_results(json.dumps(doc), "moe.json")


def test_schema_types_the_expert_fields(fixture_path):
    jsonschema = pytest.importorskip("jsonschema")
    with open(os.path.join(os.path.dirname(REPORT), "results", "results.schema.json"), encoding="utf-8") as f:
        schema = json.load(f)
    validator = jsonschema.validators.validator_for(schema)(schema)
    doc = load_fixture(fixture_path)
    assert not list(validator.iter_errors(doc))
    bad = copy.deepcopy(doc)
    bad["runs"][0]["experts"]["policy"] = "fifo"
    bad["runs"][1]["plan"]["experts"]["n_expert"] = "8"
    bad["runs"][2]["point"]["expert_cache"] = -2
    paths = sorted("/".join(map(str, e.absolute_path)) for e in validator.iter_errors(bad))
    assert paths == ["runs/0/experts/policy", "runs/1/plan/experts/n_expert", "runs/2/point/expert_cache"]
    # A results file from before the fields existed: no experts, no plan.
    old = copy.deepcopy(doc)
    for run in old["runs"]:
        run.pop("experts", None)
        run.pop("plan", None)
    assert not list(validator.iter_errors(old))


def test_gate_reads_expert_records(tmp_path, fixture_path, capsys):
    doc = load_fixture(fixture_path)
    cur = copy.deepcopy(doc)
    cur["runs"][2]["experts"]["hit_rate"] = 0.9  # the gate judges timings, bytes and the plan, not this
    b = synth.write_json(str(tmp_path / "base.json"), doc)
    c = synth.write_json(str(tmp_path / "cur.json"), cur)
    assert gate.main(["--baseline", b, "--current", c]) == 0
    out = capsys.readouterr().out
    plan_line = next(ln for ln in out.splitlines() if ln.startswith("PASS") and " r0003 " in ln and "plan:" in ln)
    assert plan_line.endswith("(identical)") and "REGRESSION" not in out
