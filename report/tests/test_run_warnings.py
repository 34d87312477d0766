"""report.md's Warnings section carries each run's own warnings (runs[].warnings) from the harness."""
import json

import report

NOTE = ("read GB/s is 436% of fio's pread figure: buffered reads served from the page cache (the file "
        "was not dropped between reps, or fits in RAM), while fio read it with the cache dropped; "
        "not a storage speed")


def _render(tmp_path, fixture_path, edit):
    doc = json.loads(open(fixture_path("gpu_sweep_a.json"), encoding="utf-8").read())
    edit({r["id"]: r for r in doc["runs"]})
    (tmp_path / "a.json").write_text(json.dumps(doc))
    out = tmp_path / "out"
    assert report.main([str(tmp_path / "a.json"), "--out", str(out)]) == 0
    text = (out / "report.md").read_text(encoding="utf-8")
    return text.split("## Warnings", 1)[1].split("\n## ", 1)[0]


def test_pread_above_fio_is_explained_in_the_warnings(tmp_path, fixture_path):
    def edit(runs):
        runs["r0001"]["io"]["fraction_of_fio"] = 4.36
        runs["r0001"]["warnings"] = [NOTE]
    assert f"- r0001: {NOTE}" in _render(tmp_path, fixture_path, edit)


def test_malformed_run_warnings_are_ignored(tmp_path, fixture_path):
    def edit(runs):
        runs["r0001"]["warnings"] = "not a list"
        runs["r0002"]["warnings"] = [3, None, "kept"]
    section = _render(tmp_path, fixture_path, edit)
    assert "- r0002: kept" in section
    assert "not a list" not in section and "r0002: 3" not in section
