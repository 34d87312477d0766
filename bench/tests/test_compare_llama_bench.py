"""bench/compare_llama_bench.py with fake llama-bench / llama-batched-bench / flea / membw_roof
(bench/tests/fakes.py): the arguments each engine gets, ratios and roof fractions from the fakes'
throughputs, the alternating order, the busy-core spinners (running during both engines, gone
afterwards, also after an error or Ctrl-C) and the argument checks."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakes  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "bench", "compare_llama_bench.py")
sys.path.insert(0, os.path.join(ROOT, "bench"))
import compare_llama_bench as clb  # noqa: E402


def run(tmp_path, *args, **env):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    out = tmp_path / "out.json"
    p = subprocess.run([sys.executable, SCRIPT, str(model), *fakes.make_tools(tmp_path), "--json", str(out), *args],
                       capture_output=True, text=True, env=fakes.env(tmp_path, **env))
    doc = json.loads(out.read_text()) if out.exists() else None
    return p, doc, fakes.calls(tmp_path)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_depth_zero_uses_llama_bench_and_alternates(tmp_path):
    p, doc, log = run(tmp_path, "--prompt", "512", "--gen", "16", "--reps", "2", "--rounds", "2")
    assert p.returncode == 0, p.stderr
    assert [r["order"] for r in doc["rounds"]] == [["llama", "flea"], ["flea", "llama"]]
    assert [c["tool"] for c in log] == ["llama-bench", "llama-bench", "flea", "flea", "llama-bench", "llama-bench"]
    pp_call, tg_call, flea_call = log[0]["args"], log[1]["args"], log[2]["args"]
    assert pp_call[pp_call.index("-p") + 1] == "512" and pp_call[pp_call.index("-n") + 1] == "0"
    assert tg_call[tg_call.index("-n") + 1] == "16" and tg_call[tg_call.index("-r") + 1] == "2"
    for flag, want in (("--prompt", "512"), ("--gen", "16"), ("--depth", "0"), ("--reps", "2"), ("--threads", "2")):
        assert flea_call[flea_call.index(flag) + 1] == want
    r = doc["rounds"][0]
    # The fakes: llama pp 100, 101 tok/s (median 100.5), tg 10, 10.1; flea pp 150, tg 8.
    assert r["llama"]["pp_samples_ts"] == pytest.approx([100, 101])
    assert r["pp_ratio"] == pytest.approx(150 / 100.5)
    assert r["tg_ratio"] == pytest.approx(8 / 10.05)
    assert doc["summary"]["tg_ratio"]["median"] == pytest.approx(8 / 10.05)
    assert doc["depth"] == 0 and doc["busy_cores"] == 0 and doc["llama_cpp_tool"] == "llama-bench"
    assert doc["llama_cpp_commit"] == "c392e5094" and doc["flea_build"]["git_rev"] == "fakerev"
    assert "pp512: flea / llama.cpp = 1.49" in p.stdout


def test_depth_uses_batched_bench_and_drops_its_warmup_row(tmp_path):
    p, doc, log = run(tmp_path, "--depth", "2048", "--gen", "32", "--prompt", "64", "--reps", "3", "--rounds", "1")
    assert p.returncode == 0, p.stderr
    tools = [c["tool"] for c in log]
    assert tools == ["llama-batched-bench", "flea"]
    bb = log[0]["args"]
    assert bb[bb.index("-npp") + 1] == "2048,2048,2048,2048"  # reps + 1 (warmup)
    assert bb[bb.index("-ntg") + 1] == "32" and bb[bb.index("-npl") + 1] == "1"
    assert bb[bb.index("-c") + 1] == str(2048 + 32)
    assert bb[bb.index("--output-format") + 1] == "jsonl"
    assert log[1]["args"][log[1]["args"].index("--depth") + 1] == "2048"
    r = doc["rounds"][0]
    assert r["llama"]["tg_samples_ts"] == pytest.approx([10.1, 10.2, 10.3])  # not the warmup row's 1.0
    assert r["tg_ratio"] == pytest.approx(8 / 10.2)
    assert r["pp_ratio"] is None  # llama.cpp cannot time pp at depth at this commit
    assert r["flea"]["pp_tok_s"] == pytest.approx(150)
    assert doc["depth"] == 2048 and doc["llama_cpp_tool"] == "llama-batched-bench"
    assert doc["llama_cpp_commit"] == "c392e5094" and doc["llama_cpp_build_number"] == 4748
    assert "tg32@d2048" in p.stdout


def test_missing_batched_bench_rows_are_an_error_not_a_short_sample(tmp_path):
    # A fake whose rows never match (the -c check skips every one, as llama-batched-bench does).
    out = clb.parse_batched_bench('noise\n{"pp": 5, "tg": 2, "pl": 1, "speed_tg": 3}\n{"pp": 5, "tg": 2, "pl": 2}\n', 5, 2)
    assert len(out) == 1 and out[0]["speed_tg"] == 3
    assert clb.parse_batched_bench("no json here\n", 5, 2) == []
    with pytest.raises(clb.BenchError):
        clb.parse_batched_bench("{not json\n", 5, 2)
    assert clb.batched_bench_build("x\nbuild: 4748 (c392e5094) with cc\n") == ("c392e5094", 4748)


def test_roof_fractions(tmp_path):
    p, doc, log = run(tmp_path, "--roof", "--rounds", "2", "--reps", "1", FAKE_ROOF_GB_S="20")
    assert p.returncode == 0, p.stderr
    assert [c["tool"] for c in log].count("membw_roof") == 2
    m = next(c for c in log if c["tool"] == "membw_roof")["args"]
    assert m[m.index("--threads") + 1] == "2"
    ro = doc["rounds"][0]["roof"]
    # 20 GB/s over the fake's 1e9 weight bytes per token: 20 tok/s; flea tg 8, llama.cpp tg 10.
    assert ro["roof_tok_s"] == pytest.approx(20)
    assert ro["flea_fraction"] == pytest.approx(8 / 20) and ro["llama_fraction"] == pytest.approx(10 / 20)
    assert doc["summary"]["flea_fraction"]["median"] == pytest.approx(0.4)
    assert "flea 40%, llama.cpp 50%" in p.stdout


def test_roof_fraction_arithmetic():
    f = clb.roof_fractions(5.0, 500e6, 7.0, None)
    assert f["roof_tok_s"] == pytest.approx(10) and f["flea_fraction"] == pytest.approx(0.7) and f["llama_fraction"] is None
    assert clb.roof_fractions(None, 500e6, 7.0, 7.0) is None


def test_busy_cores_spin_during_both_engines_and_stop(tmp_path):
    p, doc, log = run(tmp_path, "--busy-cores", "2", "--rounds", "2", "--reps", "1", FAKE_SLEEP_FLEA="0.3")
    assert p.returncode == 0, p.stderr
    for c in log:  # every engine call saw two spinners of the script's
        assert len(c["spinners"]) == 2, c
    seen = {pid for c in log for pid in c["spinners"]}
    assert len(seen) == 4  # fresh ones each round
    assert not any(alive(pid) for pid in seen)
    for i, r in enumerate(doc["rounds"]):  # three engine calls per round (llama-bench pp and tg, flea)
        assert sorted(b["pid"] for b in r["busy"]) == sorted(log[3 * i]["spinners"]) == sorted(log[3 * i + 2]["spinners"])
    assert sum(b["cpu_s"] for r in doc["rounds"] for b in r["busy"]) > 0
    assert doc["busy_cores"] == 2


def test_no_spinners_without_busy_cores(tmp_path):
    p, _, log = run(tmp_path, "--rounds", "1", "--reps", "1")
    assert p.returncode == 0, p.stderr
    assert all(c["spinners"] == [] for c in log)


def test_spinners_stop_when_an_engine_fails(tmp_path):
    p, doc, log = run(tmp_path, "--busy-cores", "1", "--rounds", "1", FAKE_FAIL="flea")
    assert p.returncode == 1
    assert "flea" in p.stderr and "failed (3)" in p.stderr
    assert doc is None
    pids = [pid for c in log for pid in c["spinners"]]
    assert pids and not any(alive(pid) for pid in pids)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_spinners_stop_on_interrupt(tmp_path, sig):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    proc = subprocess.Popen([sys.executable, SCRIPT, str(model), *fakes.make_tools(tmp_path), "--busy-cores", "2",
                             "--rounds", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=fakes.env(tmp_path, FAKE_SLEEP_LLAMA_BENCH="30"))
    deadline = time.time() + 20
    while not fakes.calls(tmp_path) and time.time() < deadline:
        time.sleep(0.05)
    log = fakes.calls(tmp_path)
    assert log, "the fake llama-bench never started"
    pids = log[0]["spinners"]
    assert len(pids) == 2 and all(alive(pid) for pid in pids)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1 and "interrupted" in err
    time.sleep(0.2)
    assert not any(alive(pid) for pid in pids)


@pytest.mark.parametrize("args, message", [
    (["--depth", "64", "--gen", "0"], "needs --gen > 0"),
    (["--prompt", "0", "--gen", "0"], "nothing to measure"),
    (["--busy-cores", "-1"], "must be >= 0"),
    (["--reps", "0"], "must be >= 1"),
    (["--depth", "x"], "invalid"),
])
def test_bad_arguments_exit_two(tmp_path, args, message):
    p, doc, log = run(tmp_path, *args)
    assert p.returncode == 2 and message in p.stderr, p.stderr
    assert doc is None and log == []


def test_missing_model_and_tools(tmp_path):
    p = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "nope.gguf")], capture_output=True, text=True)
    assert p.returncode == 2 and "not found" in p.stderr
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    tools = fakes.make_tools(tmp_path)
    tools[tools.index("--llama-batched-bench") + 1] = str(tmp_path / "absent")
    p = subprocess.run([sys.executable, SCRIPT, str(model), *tools, "--depth", "16"], capture_output=True, text=True,
                       env=fakes.env(tmp_path))
    assert p.returncode == 1 and "llama-batched-bench not found" in p.stderr
    # Without --depth the batched bench is not needed.
    p = subprocess.run([sys.executable, SCRIPT, str(model), *tools, "--rounds", "1", "--reps", "1"],
                       capture_output=True, text=True, env=fakes.env(tmp_path))
    assert p.returncode == 0, p.stderr


def test_help():
    p = subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "--busy-cores" in p.stdout and "--depth" in p.stdout and "--roof" in p.stdout
