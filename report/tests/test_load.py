"""Malformed and partial results files: one clear line naming the file, exit code 2."""
import json
import os
import subprocess
import sys

import pytest

import gate
import pr_attachment
import report
from flea_report.load import ResultsError, is_partial, load_results, parse_results

from conftest import REPORT

BAD = {
    "bad_truncated.json": "ends early: truncated or partial write",
    "bad_empty.json": "empty file",
    "bad_not_object.json": "top level: expected object, got list",
    "bad_missing_runs.json": "missing top-level key 'runs'",
    "bad_wrong_type.json": "runs[2] (id 'r0003').samples_ns.tg: expected list of numbers",
    "bad_schema_version.json": "schema_version: 2 is not supported",
    "bad_failed_no_error.json": "a failed run needs an error string",
    "bad_run_no_point.json": "runs[1]: missing required key 'point'",
}


@pytest.mark.parametrize("name,expected", sorted(BAD.items()))
def test_load_names_file_and_problem(fixture_path, name, expected):
    with pytest.raises(ResultsError) as err:
        load_results(fixture_path(name))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(fixture_path(name) + ": ")
    assert expected in message


@pytest.mark.parametrize("name", sorted(BAD))
def test_every_tool_exits_2_on_bad_file(fixture_path, tmp_path, capsys, name):
    good = fixture_path("ci_base.json")
    bad = fixture_path(name)
    assert report.main([bad, "--out", str(tmp_path)]) == 2
    assert gate.main(["--baseline", good, "--current", bad]) == 2
    assert pr_attachment.main(["--baseline", bad, "--candidate", good]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(name in line and BAD[name] in line for line in err)
    assert not os.path.exists(tmp_path / "report.md")


def test_cli_process_exit_code_and_single_line(fixture_path, tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(REPORT, "gate.py"), "--baseline",
                           fixture_path("ci_base.json"), "--current",
                           fixture_path("bad_truncated.json")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "bad_truncated.json" in proc.stderr


def test_report_lists_every_bad_file(fixture_path, tmp_path, capsys):
    files = [fixture_path("bad_empty.json"), fixture_path("gpu_sweep_a.json"),
             fixture_path("bad_not_object.json")]
    assert report.main(files + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad_empty.json" in err and "bad_not_object.json" in err
    assert "gpu_sweep_a.json" not in err


def test_missing_file_is_bad_input(tmp_path, capsys):
    assert report.main([str(tmp_path / "nope.json"), "--out", str(tmp_path)]) == 2
    assert "nope.json: cannot read" in capsys.readouterr().err


def test_nulls_and_missing_optional_fields_are_tolerated(fixture_path):
    doc = load_results(fixture_path("minimal_nulls.json"))
    assert doc["ceilings"] is None and doc["runs"][0].get("summary") is None
    assert is_partial(doc)  # no status block: treated as incomplete


def test_partial_file_loads_and_is_marked(fixture_path):
    doc = load_results(fixture_path("gpu_sweep_b.json"))
    assert is_partial(doc)
    assert not is_partial(load_results(fixture_path("gpu_sweep_a.json")))


def test_wrong_nested_types_are_named():
    base = json.loads(open(os.path.join(os.path.dirname(__file__), "fixtures",
                                        "ci_base.json")).read())
    cases = [(("runs", 0, "memory"), 5, "runs[0] (id 'r0001').memory: expected object"),
             (("runs", 0, "vs_floor", "below_floor"), "yes", "vs_floor.below_floor: expected boolean"),
             (("runs", 1, "status"), "done", "status: 'done' is not one of ok, failed, skipped"),
             (("context", "warnings"), "debug", "context.warnings: expected list of strings"),
             (("ceilings", "fio", 0, "read_gb_s"), "2.0", "ceilings.fio[0].read_gb_s: expected number")]
    for path, value, expected in cases:
        doc = json.loads(json.dumps(base))
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(ResultsError, match=r"^x\.json: .*"):
            parse_results(json.dumps(doc), "x.json")
        try:
            parse_results(json.dumps(doc), "x.json")
        except ResultsError as err:
            assert expected in str(err), (expected, str(err))
