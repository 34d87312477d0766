"""plots.py: titles and captions of the per-layer timeline when ids are missing."""
import json
import shutil

import pytest

from flea_report import plots
from flea_report.load import load_results

RUN_ID = "residency_sweep-20261123T101500Z-a1b2"


@pytest.fixture
def titles(monkeypatch):
    """Titles of the figures plots.py saves, in order (the PNG is still written)."""
    seen = []
    save = plots._save

    def recording_save(fig, out_dir, name):
        seen.append(fig.axes[0].get_title())
        return save(fig, out_dir, name)

    monkeypatch.setattr(plots, "_save", recording_save)
    return seen


def _trace(spans_have_run):
    events = [{"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": "compute"}}]
    for layer in range(3):
        args = {"layer": layer}
        if spans_have_run:
            args["run"] = "r0002"
        events.append({"ph": "X", "name": f"layer {layer}", "cat": "compute", "pid": 1, "tid": 1,
                       "ts": 100.0 * layer, "dur": 90.0, "args": args})
    return {"traceEvents": events}


def _doc_with_trace(tmp_path, fixture_path, trace):
    shutil.copy(fixture_path("gpu_sweep_a.json"), tmp_path / "a.json")
    (tmp_path / f"{RUN_ID}.trace.json").write_text(json.dumps(trace))
    doc = load_results(str(tmp_path / "a.json"))
    assert doc["context"]["run_id"] == RUN_ID
    return doc


def test_trace_without_run_ids_names_no_run(tmp_path, fixture_path, titles):
    doc = _doc_with_trace(tmp_path, fixture_path, _trace(spans_have_run=False))
    plot = plots.plot_timeline(doc, 0, 1, str(tmp_path))
    assert plot["note"] == f"Source: from the Chrome trace `{RUN_ID}.trace.json`."
    assert titles == ["Per-layer timeline (numbers are layers)"]


def test_trace_with_run_ids_names_the_run(tmp_path, fixture_path, titles):
    doc = _doc_with_trace(tmp_path, fixture_path, _trace(spans_have_run=True))
    plot = plots.plot_timeline(doc, 0, 1, str(tmp_path))
    assert plot["note"] == f"Source: from run r0002 in the Chrome trace `{RUN_ID}.trace.json`."
    assert titles == ["Per-layer timeline, run r0002 (numbers are layers)"]


def test_layers_fallback_without_run_id_names_no_run(tmp_path, fixture_path, titles):
    doc = load_results(fixture_path("gpu_sweep_a.json"))
    doc.pop("_path")  # no trace beside it
    run = next(r for r in doc["runs"] if r["status"] == "ok" and r.get("layers"))
    del run["id"]
    plot = plots.plot_timeline(doc, 0, 1, str(tmp_path))
    assert plot["note"] == "Source: no trace file; per-layer totals."
    assert titles == ["Per-layer time (no trace: from runs[].layers)"]
