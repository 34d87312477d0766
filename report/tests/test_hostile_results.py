"""Results files written by anyone: truncated or garbage JSON, wrong types in every field the gate
reads, huge and non-finite numbers, deep nesting, empty files, directories. gate.py and report.py
must exit 2 with one line naming the file and the problem, never a Python traceback.

Most cases call main() in-process (an escaping exception fails the test just like a traceback
would); a few run the scripts as subprocesses to check the real exit code and stderr.
"""
import copy
import json
import os
import subprocess
import sys

import pytest

import gate
import report

TESTS = os.path.dirname(os.path.abspath(__file__))
REPORT = os.path.dirname(TESTS)
GOOD = os.path.join(TESTS, "fixtures", "ci_base.json")


def good_doc():
    with open(GOOD, encoding="utf-8") as f:
        return json.load(f)


def set_path(doc, dotted, value):
    """doc['runs'][0]... for 'runs.0.a.b'; creates missing dicts on the way."""
    keys = dotted.split(".")
    cur = doc
    for key in keys[:-1]:
        cur = cur[int(key)] if isinstance(cur, list) else cur.setdefault(key, {})
    last = keys[-1]
    if isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value
    return doc


# Every run field the gate reads (gate_core.point_lines and what it calls), with values of the
# wrong type. A field the gate type-checks must make the file an input error.
GATE_RUN_FIELDS = [
    "id", "point", "status", "error", "engine",
    "samples_ns", "samples_ns.tg", "samples_ns.pp", "samples_ns.tg.0", "samples_ns.pp.3",
    "memory", "memory.peak_rss_mb", "memory.peak_vram_mb",
    "io", "io.read_bytes_per_token",
    "correctness", "correctness.passed", "correctness.nmse", "correctness.tolerance",
    "correctness.tolerance.nmse",
    "vs_floor", "vs_floor.ratio", "vs_floor.below_floor",
    "point.gen", "point.prompt",
]
WRONG_VALUES = ["text", [1, "x"], {"k": 1}, True, -7]
# point.gen / point.prompt are free-form in the point dict: a string there is a different point,
# not an error, so only non-finite/huge numbers are required to be rejected for them.
FREE_FORM = {"point.gen", "point.prompt"}


def expected_kind_ok(path, value):
    """True when `value` is actually a valid value for `path` (skip those combinations)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    kinds = {
        "id": isinstance(value, str), "error": isinstance(value, str), "engine": isinstance(value, str),
        "status": False,  # only ok/failed/skipped strings; "text" is not one
        "point": isinstance(value, dict),
        "samples_ns": isinstance(value, dict), "memory": isinstance(value, dict),
        "io": isinstance(value, dict), "correctness": isinstance(value, dict),
        "correctness.tolerance": isinstance(value, dict), "vs_floor": isinstance(value, dict),
        "correctness.passed": isinstance(value, bool), "vs_floor.below_floor": isinstance(value, bool),
    }
    if path in kinds:
        return kinds[path]
    return number  # every other listed field is a number (or a list element that is a number)


def hostile_docs():
    """(name, text) pairs: every one must be rejected with exit 2."""
    cases = []
    text = json.dumps(good_doc(), indent=1)
    cases.append(("truncated-half", text[: len(text) // 2]))
    cases.append(("truncated-last-byte", text.rstrip()[:-1]))
    cases.append(("empty", ""))
    cases.append(("whitespace", "   \n\t\n"))
    cases.append(("not-json", "this is not json\n"))
    cases.append(("binary", "\x00\x01GGUF\xff"))
    cases.append(("top-level-list", "[1, 2, 3]"))
    cases.append(("top-level-string", "\"results\""))
    cases.append(("top-level-null", "null"))
    cases.append(("deep-nesting", "[" * 200000 + "]" * 200000))
    cases.append(("deep-nesting-unclosed", "{\"a\": " * 100000))
    deep = good_doc()
    deep["runs"][0]["point"]["extra"] = json.loads("[" * 500 + "]" * 500)
    deep_text = json.dumps(deep).replace("\"extra\": " + "[" * 500, "\"extra\": " + "[" * 100000, 1)
    deep_text = deep_text.replace("]" * 500, "]" * 100000, 1)
    cases.append(("deep-nesting-inside-run", deep_text))
    for key, value in [("context", []), ("runs", {}), ("status", "done"), ("ceilings", 5),
                       ("context.schema_version", "1"), ("context.schema_version", 1e400),
                       ("context.warnings", "x"), ("ceilings.fio", {"a": 1})]:
        doc = good_doc()
        set_path(doc, key, value)
        cases.append((f"top-{key}-{type(value).__name__}", json.dumps(doc)))
    for path in GATE_RUN_FIELDS:
        for value in WRONG_VALUES:
            if path in FREE_FORM or expected_kind_ok(path, value):
                continue
            doc = good_doc()
            set_path(doc, "runs.0." + path, value)
            cases.append((f"run-{path}-{json.dumps(value)}", json.dumps(doc)))
    doc = good_doc()
    doc["runs"][1] = "not a run"
    cases.append(("run-not-object", json.dumps(doc)))
    # Huge numbers: beyond float range as integers (Python parses them exactly) and as floats.
    huge_int = "1" + "0" * 400
    for path in ["runs.0.samples_ns.tg.0", "runs.0.memory.peak_rss_mb", "runs.0.point.gen",
                 "runs.0.io.read_bytes_per_token", "runs.0.correctness.nmse", "context.schema_version"]:
        for literal in (huge_int, "1e999", "-1e999", "NaN", "Infinity", "-Infinity"):
            doc = good_doc()
            set_path(doc, path, "@@HOSTILE@@")
            cases.append((f"number-{path}-{literal[:8]}", json.dumps(doc).replace("\"@@HOSTILE@@\"", literal)))
    # A number with a gigantic exponent and a 100 000-digit integer (int() has a digit limit).
    doc = good_doc()
    set_path(doc, "runs.0.samples_ns.pp.0", "@@HOSTILE@@")
    cases.append(("number-100k-digits", json.dumps(doc).replace("\"@@HOSTILE@@\"", "9" * 100000)))
    cases.append(("number-exponent", json.dumps(doc).replace("\"@@HOSTILE@@\"", "1e99999999999999999999")))
    return cases


CASES = hostile_docs()


def check_one_line(err, path):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert path in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("name,text", CASES, ids=[c[0] for c in CASES])
def test_gate_and_report_reject_hostile_file(tmp_path, capsys, name, text):
    bad = os.path.join(tmp_path, "bad.json")
    with open(bad, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(text)
    for argv in (["--baseline", GOOD, "--current", bad], ["--baseline", bad, "--current", GOOD]):
        assert gate.main(argv) == 2, name
        line = check_one_line(capsys.readouterr().err, bad)
        assert line.startswith("gate: ")
    assert report.main([bad, "--out", os.path.join(tmp_path, "out")]) == 2
    line = check_one_line(capsys.readouterr().err, bad)
    assert line.startswith("report: ")


def test_directory_instead_of_file(tmp_path, capsys):
    d = os.path.join(tmp_path, "results.json")
    os.mkdir(d)
    assert gate.main(["--baseline", GOOD, "--current", d]) == 2
    line = check_one_line(capsys.readouterr().err, d)
    assert "directory" in line.lower()
    assert report.main([d, "--out", os.path.join(tmp_path, "out")]) == 2
    check_one_line(capsys.readouterr().err, d)


def test_missing_file(tmp_path, capsys):
    missing = os.path.join(tmp_path, "nope.json")
    assert gate.main(["--baseline", missing, "--current", GOOD]) == 2
    assert "No such file" in check_one_line(capsys.readouterr().err, missing)


def test_free_form_point_fields_of_any_type_are_not_a_crash(tmp_path, capsys):
    """point.gen / point.prompt are part of the point's identity; odd types are a different point."""
    for value in WRONG_VALUES:
        doc = good_doc()
        for run in doc["runs"]:
            run["point"]["gen"] = value
        cur = os.path.join(tmp_path, "cur.json")
        with open(cur, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        rc = gate.main(["--baseline", cur, "--current", cur])
        err = capsys.readouterr().err
        assert rc in (0, 1), (value, err)
        assert "Traceback" not in err


# Subprocess runs: the real scripts, real exit codes, nothing but one line on stderr.
@pytest.mark.parametrize("name", ["truncated-half", "deep-nesting", "number-runs.0.samples_ns.tg.0-NaN",
                                  "number-runs.0.memory.peak_rss_mb-10000000", "empty"])
def test_scripts_exit_2_without_traceback(tmp_path, name):
    text = dict(CASES)[name]
    bad = os.path.join(tmp_path, "bad.json")
    with open(bad, "w", encoding="utf-8") as f:
        f.write(text)
    for script, args in (("gate.py", ["--baseline", GOOD, "--current", bad]),
                         ("report.py", [bad, "--out", os.path.join(tmp_path, "out")])):
        p = subprocess.run([sys.executable, os.path.join(REPORT, script)] + args,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, (script, name, p.stderr)
        check_one_line(p.stderr, bad)
