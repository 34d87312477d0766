"""bench/cpu_table.py: the cases it plans, the table it assembles from finished comparisons (fake
documents: ratios, roof fractions, the fall factor under load) and one end-to-end run on the fake
engines (bench/tests/fakes.py) that writes the JSON with every raw sample and the Markdown."""
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakes  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "bench", "cpu_table.py")
sys.path.insert(0, os.path.join(ROOT, "bench"))
import compare_llama_bench as clb  # noqa: E402
import cpu_table  # noqa: E402


def test_plan_covers_the_issue_table():
    cases = cpu_table.plan_cases(list(cpu_table.ALL_TYPES), quick=False, threads=2, reps=3, rounds=3)
    ids = [c["id"] for c in cases]
    assert ids == ["Q4_K_M:base", "Q8_0:base", "Q4_0:base", "Q6_K:base", "Q4_K_M:pp512", "Q4_K_M:pp2048",
                   "Q4_K_M:tg32_d2048", "Q4_K_M:tg32_busy1"]
    by = {c["id"]: c["args"] for c in cases}
    assert [t for t in cpu_table.ALL_TYPES if by[f"{t}:base"]["roof"]] == ["Q8_0", "Q4_0"]
    assert by["Q6_K:base"]["prompt"] == 64 and by["Q6_K:base"]["gen"] == 32
    assert by["Q4_K_M:pp2048"]["prompt"] == 2048 and by["Q4_K_M:pp2048"]["gen"] == 0
    assert by["Q4_K_M:tg32_d2048"]["depth"] == 2048 and by["Q4_K_M:tg32_d2048"]["gen"] == 32
    assert by["Q4_K_M:tg32_busy1"]["busy"] == 1
    assert all(a["reps"] == 3 and a["rounds"] == 3 for a in by.values())


def test_quick_plan_shortens_the_long_cases_and_names_them_so():
    ids = [c["id"] for c in cpu_table.plan_cases(["Q4_K_M"], quick=True, threads=2, reps=1, rounds=1)]
    assert ids == ["Q4_K_M:base", "Q4_K_M:pp128", "Q4_K_M:pp256", "Q4_K_M:tg32_d256", "Q4_K_M:tg32_busy1"]
    # Without Q4_K_M there are no context/load cases.
    assert [c["kind"] for c in cpu_table.plan_cases(["Q8_0"], quick=False, threads=2, reps=3, rounds=3)] == ["base"]


def fake_doc(rounds, roof=None):
    """compare()'s document from per-round (flea, llama) tok/s pairs for pp and tg."""
    out = []
    for (fpp, lpp, ftg, ltg) in rounds:
        r = {"flea": {"pp_tok_s": fpp, "tg_tok_s": ftg}, "llama": {"pp_tok_s": lpp, "tg_tok_s": ltg},
             "pp_ratio": clb.ratio(fpp, lpp), "tg_ratio": clb.ratio(ftg, ltg)}
        if roof:
            r["roof"] = clb.roof_fractions(roof, 1e9, ftg, ltg)
        out.append(r)
    summary = {k: clb.spread([r[k] for r in out]) for k in ("pp_ratio", "tg_ratio")}
    if roof:
        for k in ("roof_tok_s", "flea_fraction", "llama_fraction"):
            summary[k] = clb.spread([r["roof"][k] for r in out])
    return {"rounds": out, "summary": summary}


def test_table_rows_from_fake_documents():
    cases = cpu_table.plan_cases(["Q4_K_M", "Q8_0"], quick=False, threads=2, reps=3, rounds=3)
    docs = {
        "Q4_K_M:base": fake_doc([(100, 80, 10, 8), (90, 80, 9, 10), (110, 100, 11, 10)]),
        "Q8_0:base": fake_doc([(50, 50, 4, 5), (60, 50, 5, 5), (55, 50, 4.5, 5)], roof=10.0),
        "Q4_K_M:pp512": fake_doc([(70, 70, None, None)] * 3),
        "Q4_K_M:pp2048": fake_doc([(40, 50, None, None)] * 3),
        "Q4_K_M:tg32_d2048": fake_doc([(None, None, 6, 8)] * 3),
        "Q4_K_M:tg32_busy1": fake_doc([(None, None, 5, 2)] * 3),
    }
    for c in cases:
        c["doc"] = docs[c["id"]]
    rows = {(r["type"], r["test"]): r for r in cpu_table.assemble_table(cases)}
    tg = rows[("Q4_K_M", "tg32")]
    assert tg["flea_tok_s"] == 10 and tg["llama_tok_s"] == 10  # medians of the per-round medians
    assert tg["ratio"] == pytest.approx(1.1) and tg["ratio_min"] == pytest.approx(0.9) and tg["ratio_max"] == pytest.approx(1.25)
    assert rows[("Q4_K_M", "pp64")]["ratio"] == pytest.approx(1.125)
    assert rows[("Q4_K_M", "pp2048")]["ratio"] == pytest.approx(0.8)
    assert rows[("Q4_K_M", "tg32 @ depth 2048")]["ratio"] == pytest.approx(0.75)
    busy = rows[("Q4_K_M", "tg32, 1 core(s) busy")]
    assert busy["ratio"] == pytest.approx(2.5)
    # Fall factor: unloaded tg (flea 10, llama.cpp 10) over loaded (5, 2).
    assert busy["fall_flea"] == pytest.approx(2.0) and busy["fall_llama"] == pytest.approx(5.0)
    roof = rows[("Q8_0", "tg32 / DRAM roof")]
    # 10 GB/s over 1e9 bytes per token: a 10 tok/s roof; flea tg 4, 5, 4.5 -> fractions, median 0.45.
    assert roof["roof_tok_s"] == pytest.approx(10)
    assert roof["flea_tok_s"] == pytest.approx(0.45) and roof["llama_tok_s"] == pytest.approx(0.5)
    assert ("Q4_K_M", "tg32 / DRAM roof") not in rows
    md = cpu_table.markdown(list(rows.values()), {"cpu_model": "Fake CPU", "threads": 2, "reps": 3, "rounds": 3,
                                                  "quick": False, "flea_rev": "abc", "llama_commit": "c392e5094",
                                                  "llama_build": 4748})
    assert "| 1b-Q8_0 | tg32 / DRAM roof | 45% | 50% |" in md
    assert "| 1b-Q4_K_M | tg32 | 10.00 | 10.00 | 1.10 (0.90-1.25) |" in md
    assert "fall vs unloaded: flea x2.00, llama.cpp x5.00" in md
    assert "QUICK" not in md and "Fake CPU" in md


def test_end_to_end_on_fake_engines(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "1b-Q4_K_M.gguf").write_bytes(b"GGUF")  # Q8_0 is missing: made by (fake) flea synth
    out = tmp_path / "t.json"
    p = subprocess.run([sys.executable, SCRIPT, "--quick", "--types", "Q4_K_M,Q8_0", "--models-dir", str(models),
                        "--out", str(out), *fakes.make_tools(tmp_path)], capture_output=True, text=True,
                       env=fakes.env(tmp_path))
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    assert (models / "1b-Q8_0.gguf").exists()
    synth = [c["args"] for c in fakes.calls(tmp_path) if c["args"][:1] == ["synth"]]
    assert synth == [["synth", "--shape", "1b", "--type", "Q8_0", "--out", str(models / "1b-Q8_0.gguf"), "--quiet"]]
    assert doc["machine"]["cpu_model"] and doc["config"]["quick"] is True
    assert doc["engines"]["llama_cpp"]["commit"] == "c392e5094" and doc["engines"]["flea"]["build"]["git_rev"] == "fakerev"
    assert [c["id"] for c in doc["cases"]] == ["Q4_K_M:base", "Q8_0:base", "Q4_K_M:pp128", "Q4_K_M:pp256",
                                               "Q4_K_M:tg32_d256", "Q4_K_M:tg32_busy1"]
    for c in doc["cases"]:  # raw samples kept
        assert len(c["doc"]["rounds"]) == 1
        r = c["doc"]["rounds"][0]
        assert r["flea"]["tg_samples_ts"] or r["flea"]["pp_samples_ts"]
    assert all(len(c["doc"]["rounds"][0]["loadavg"]) == 3 for c in doc["cases"])
    assert doc["machine"]["load_max"] == max(c["doc"]["rounds"][0]["loadavg"][0] for c in doc["cases"])
    busy = next(c for c in doc["cases"] if c["kind"] == "tg32_busy1")["doc"]["rounds"][0]["busy"]
    assert len(busy) == 1
    md = (tmp_path / "t.md").read_text()
    assert md == doc["markdown"] and "QUICK" in md and "tg32 @ depth 256" in md and "tg32 / DRAM roof" in md


def test_bad_types_exit_two(tmp_path):
    p = subprocess.run([sys.executable, SCRIPT, "--types", "Q4_K_M,Q5_K"], capture_output=True, text=True)
    assert p.returncode == 2 and "unknown Q5_K" in p.stderr
    p = subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "--quick" in p.stdout


def test_busy_machine_and_impossible_roof_fractions_are_flagged():
    doc = fake_doc([(10, 10, 12, 5)], roof=10.0)  # flea's tg 12 above a 10 tok/s roof
    doc["rounds"][0]["loadavg"] = [5.5, 3.0, 1.0]
    cases = [{"id": "Q8_0:base", "type": "Q8_0", "kind": "base", "args": {"prompt": 64, "gen": 32, "roof": True},
              "doc": doc}]
    rows = cpu_table.assemble_table(cases)
    assert "ABOVE 100%" in rows[-1]["note"]
    assert cpu_table.busiest_load(cases) == 5.5
    meta = {"cpu_model": "X", "threads": 2, "reps": 1, "rounds": 1, "quick": False, "nproc": 2}
    assert "WARNING: the machine was busy (load average up to 5.5" in cpu_table.markdown(rows, dict(meta, load_max=5.5))
    assert "WARNING" not in cpu_table.markdown(rows, dict(meta, load_max=2.4))
    ok = fake_doc([(10, 10, 8, 5)], roof=10.0)
    assert "ABOVE" not in cpu_table.assemble_table([dict(cases[0], doc=ok)])[-1]["note"]
