"""report.py: golden report.md, every plot produced as a valid PNG, notes for skipped plots.

Regenerate the golden file after an intended change (then review the diff):
    FLEA_UPDATE_GOLDEN=1 /usr/bin/python3 -m pytest -q report/tests/test_report.py
"""
import os
import re
import struct

import pytest

import report
from conftest import TESTS

GOLDEN = os.path.join(TESTS, "golden", "report.md")
SWEEP_FILES = ("gpu_sweep_a.json", "gpu_sweep_b.json")
EXPECTED_PLOTS = ("ms_per_token_vs_budget.png", "bandwidth_vs_ceiling.png", "timeline_1.png",
                  "timeline_2.png", "model_size_scaling.png")


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    files = [os.path.join(TESTS, "fixtures", n) for n in SWEEP_FILES]
    # The trace file among the inputs (as a shell glob would pass it) must be skipped, not parsed.
    files.append(os.path.join(TESTS, "fixtures", "residency_sweep-20261123T101500Z-a1b2.trace.json"))
    assert report.main(files + ["--out", str(out)]) == 0
    with open(out / "report.md", encoding="utf-8") as f:
        return out, f.read()


def test_golden_report(sweep_report):
    _, text = sweep_report
    if os.environ.get("FLEA_UPDATE_GOLDEN") == "1":
        os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
        with open(GOLDEN, "w", encoding="utf-8") as f:
            f.write(text)
        pytest.skip("golden report.md rewritten; review the diff")
    with open(GOLDEN, encoding="utf-8") as f:
        golden = f.read()
    assert text == golden, ("report.md differs from tests/golden/report.md; if intended, rerun "
                            "with FLEA_UPDATE_GOLDEN=1 and review the diff")


def png_info(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR" and data[-8:-4] == b"IEND", f"{path} is truncated"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("name", EXPECTED_PLOTS)
def test_every_plot_is_a_valid_nonblank_png(sweep_report, name):
    import matplotlib.image
    out, text = sweep_report
    path = out / name
    assert path.exists() and path.stat().st_size > 5000
    width, height = png_info(path)
    assert width >= 400 and height >= 250
    pixels = matplotlib.image.imread(str(path))
    assert pixels[..., :3].std() > 0.05  # not a blank canvas
    assert f"]({name})" in text  # referenced from report.md


def test_no_unreferenced_or_missing_plots(sweep_report):
    out, text = sweep_report
    produced = sorted(p for p in os.listdir(out) if p.endswith(".png"))
    assert produced == sorted(EXPECTED_PLOTS)
    assert "_Skipped:" not in text


def test_sections_and_flags(sweep_report):
    _, text = sweep_report
    for heading in ("## Results files", "## Context differences", "## Warnings",
                    "## Ceilings (same run)", "## Runs", "## Side by side", "## Plots"):
        assert heading in text
    assert "**Comparisons across these files mix host, git rev, build type.**" in text
    assert "- #2 debug build" in text
    assert "- #2 page cache not dropped" in text
    assert "noisy pp samples (CV" in text
    assert "partial results: 5 runs of 6 planned" in text
    assert "r0012 failed: mmap: mlock" in text


def test_suspect_run_is_never_shown_as_a_win(sweep_report):
    _, text = sweep_report
    row = next(line for line in text.splitlines() if line.startswith("| #1 | r0011 |"))
    assert "(SUSPECT)" in row and "llama-bench" not in row  # no speed-up ratio shown
    assert "**SUSPECT** r0011" in text and "not a win" in text


def test_swept_columns_only(sweep_report):
    _, text = sweep_report
    header = next(line for line in text.splitlines() if line.startswith("| file | run |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[:7] == ["file", "run", "engine", "model", "io", "prefetch", "vram_budget_mb"]
    assert "threads" not in columns and "`threads=8`" in text


def test_single_file_with_nulls_skips_plots_with_notes(tmp_path, fixture_path):
    assert report.main([fixture_path("minimal_nulls.json"), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert len(re.findall(r"^_Skipped: .+\._$", text, flags=re.M)) == 4
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".png")]
    assert "| r0001 | 1 | 10.1 |" in text  # median computed from raw samples / gen
    assert "no status block" in text


def test_timeline_falls_back_to_layers_and_bad_trace(tmp_path, fixture_path):
    import shutil
    shutil.copy(fixture_path("gpu_sweep_a.json"), tmp_path / "a.json")
    (tmp_path / "residency_sweep-20261123T101500Z-a1b2.trace.json").write_text("{not json")
    out = tmp_path / "out"
    assert report.main([str(tmp_path / "a.json"), "--out", str(out)]) == 0
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "unreadable" in text and "per-layer totals from run r0001" in text
    png_info(out / "timeline_1.png")


def test_only_trace_files_is_bad_input(tmp_path, fixture_path, capsys):
    trace = fixture_path("residency_sweep-20261123T101500Z-a1b2.trace.json")
    assert report.main([trace, "--out", str(tmp_path)]) == 2
    assert "no results files" in capsys.readouterr().err


def test_merged_fleet_file_lists_its_shards_and_what_is_missing(tmp_path, fixture_path):
    import json
    with open(fixture_path("ci_base.json"), encoding="utf-8") as f:
        doc = json.load(f)
    doc["context"]["shards"] = [
        {"index": 1, "file": "shard-1-of-3.json", "hostname": "node-a", "git_rev": "0123456789abcdef",
         "build_type": "Release", "status": {"complete": True, "n_ok": 2, "n_failed": 0},
         "ceilings": {"fio": [{"io": "odirect", "read_gb_s": 6.5}]}},
        {"index": 3, "file": "shard-3-of-3.json", "hostname": "node-c", "git_rev": "0123456789abcdef",
         "build_type": "Release", "status": {"complete": False, "n_ok": 1, "n_failed": 1},
         "ceilings": {"fio": []}},
    ]
    doc["context"]["merged"] = {"n_shards": 3, "present": [1, 3], "missing": [2], "incomplete": [3],
                                "mixed_hardware": True, "mixed_builds": False,
                                "rerun": "scripts/slurm/submit.sh s.yaml --shards 3 --only 2,3"}
    path = tmp_path / "merged.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    out = tmp_path / "out"
    assert report.main([str(path), "--out", str(out)]) == 0
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "## Shards (fleet run)" in text
    assert "| 1 | node-a | 0123456789 | Release | 2 ok / 0 failed | odirect 6.5" in text
    assert "| 3 | node-c |" in text and "(**incomplete**)" in text
    assert "missing shards 2; unfinished shards 3" in text
    assert "`scripts/slurm/submit.sh s.yaml --shards 3 --only 2,3`" in text
    assert "mixed hardware" in text


def test_unsharded_file_has_no_shards_section(sweep_report):
    assert "## Shards" not in sweep_report[1]


def test_ceilings_show_the_hugetlb_fio_next_to_the_default_one():
    from flea_report import render
    import synth
    ceilings = synth.make_ceilings(fio=[("odirect", 1.8), ("io_uring", 1.9)])
    ceilings["fio"][0]["hugetlb"] = {"samples_gb_s": [6.0, 6.1], "read_gb_s": 6.1, "error": None}
    ceilings["fio"][1]["hugetlb"] = {"samples_gb_s": [], "read_gb_s": None, "error": "no hugetlb pages: not root"}
    text = render.ceilings_section([{"ceilings": ceilings}])
    assert "| fio odirect | model.gguf | 1.80 GB/s |" in text
    assert "| fio odirect, hugetlb buffer | model.gguf | 6.10 GB/s |" in text
    assert "| fio io_uring, hugetlb buffer | model.gguf | — (no hugetlb pages: not root) |" in text


def test_side_by_side_carries_the_gates_verdict_and_interval():
    import synth
    from flea_report.render import side_by_side_section
    base = synth.ci_doc(seed=5, cv=0.02, reps=3)
    cur = synth.clone(base)
    cur["context"]["run_id"] = "ci_gate-slower"
    for run in cur["runs"]:
        run["samples_ns"] = {k: [int(round(v * 1.3)) for v in vals] for k, vals in run["samples_ns"].items()}
    text = side_by_side_section([base, cur])
    assert "| gate #2 |" in text
    rows = [r for r in text.splitlines() if r.startswith("| prefetch=")]
    assert len(rows) == 2 and all("| INCONCLUSIVE +30.0% [+" in r for r in rows), rows
    quiet = synth.ci_doc(seed=5, cv=0.02, reps=10)
    same = side_by_side_section([quiet, synth.clone(quiet)])
    assert all("| PASS +0.0% [" in r for r in same.splitlines() if r.startswith("| prefetch="))
