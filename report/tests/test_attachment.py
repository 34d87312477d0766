import json

import pr_attachment
import synth
from flea_report.attachment import attachment


def run_cli(capsys, *args):
    code = pr_attachment.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def parse_block(out):
    assert out.startswith("```json\n")
    return json.loads(out.split("```json\n", 1)[1].split("\n```", 1)[0])


def test_block_fields_and_table(capsys, fixture_path):
    code, out, err = run_cli(capsys, "--baseline", fixture_path("ci_base.json"),
                             "--candidate", fixture_path("ci_candidate.json"), "--run", "r0002")
    assert code == 0
    block = parse_block(out)
    assert list(block) == ["gpu", "nvme", "model", "baseline_tokens_per_sec",
                           "optimized_tokens_per_sec", "vram_peak_mb", "correctness"]
    assert block["gpu"] == "none (CPU only)"
    assert block["nvme"] == "vda"
    assert block["model"].startswith("synth-tiny-Q4_K_M.gguf")
    assert block["vram_peak_mb"] is None
    assert block["correctness"] == f"validated vs llama.cpp {synth.REFERENCE_COMMIT}"
    assert block["optimized_tokens_per_sec"] > block["baseline_tokens_per_sec"]
    assert "| tokens/s (generation) |" in out and "(better)" in out
    assert "| git rev | abc1234 | def5678 | |" in out


def test_gpu_sweep_block(fixture_path):
    from flea_report.load import load_results
    doc = load_results(fixture_path("gpu_sweep_a.json"))
    block, table, warnings = attachment(doc, doc, "r0006")
    assert block["gpu"] == "NVIDIA GeForce RTX 4060 8 GB"
    assert block["nvme"] == "nvme0n1 (emulating Samsung 990 Pro)"
    assert block["vram_peak_mb"] == 4096.0
    assert block["baseline_tokens_per_sec"] == block["optimized_tokens_per_sec"]
    assert warnings == []
    _, _, warnings = attachment(doc, doc, "r0011")
    assert any("SUSPECT" in w for w in warnings)


def test_failed_correctness_and_unknown_commit(tmp_path, capsys):
    base = synth.ci_doc(seed=1)
    cand = synth.ci_doc(seed=2)
    cand["runs"] = cand["runs"][:1]
    cand["runs"][0]["correctness"]["passed"] = False
    cand["runs"][0]["correctness"]["nmse"] = 0.01
    del cand["runs"][0]["correctness"]["reference_commit"]
    b = synth.write_json(str(tmp_path / "b.json"), base)
    c = synth.write_json(str(tmp_path / "c.json"), cand)
    code, out, _ = run_cli(capsys, "--baseline", b, "--candidate", c)
    assert code == 0
    assert parse_block(out)["correctness"].startswith("FAILED vs llama.cpp unknown")
    cand["context"]["reference_commit"] = "abcdef0"
    cand["runs"][0]["correctness"]["passed"] = True
    synth.write_json(c, cand)
    code, out, _ = run_cli(capsys, "--baseline", b, "--candidate", c)
    assert parse_block(out)["correctness"] == "validated vs llama.cpp abcdef0"


def test_ambiguous_or_unmatched_run_is_bad_input(tmp_path, capsys, fixture_path):
    base, cand = fixture_path("ci_base.json"), fixture_path("ci_candidate.json")
    code, out, err = run_cli(capsys, "--baseline", base, "--candidate", cand)
    assert code == 2 and out == "" and "choose one with --run (r0001, r0002)" in err
    code, _, err = run_cli(capsys, "--baseline", base, "--candidate", cand, "--run", "r9")
    assert code == 2 and "no run with id 'r9'" in err
    other = synth.ci_doc(seed=3)
    for run in other["runs"]:
        run["point"]["threads"] = 8
    o = synth.write_json(str(tmp_path / "o.json"), other)
    code, _, err = run_cli(capsys, "--baseline", o, "--candidate", cand, "--run", "r0001")
    assert code == 2 and "no run with the same point" in err


def test_table_carries_the_gates_timing_verdicts():
    """The same verdict and interval report/gate.py prints, INCONCLUSIVE included."""
    from flea_report.gate_core import format_ci, gate as run_gate
    base = synth.ci_doc(seed=5, cv=0.02, reps=3)
    cand = synth.clone(base)
    for run in cand["runs"]:
        run["samples_ns"] = {k: [int(round(v * 1.3)) for v in vals] for k, vals in run["samples_ns"].items()}
    _, table, _ = attachment(base, cand, "r0001")
    gated = next(ln for ln in run_gate(base, cand) if ln["metric"] == "tg time")
    row = next(r for r in table.splitlines() if r.startswith("| gate: tg time (ms/tok) |"))
    assert f"**INCONCLUSIVE +30.0% {format_ci(gated['ci'])}** (p=0.1, n=3/3, too few samples" in row
    assert any(r.startswith("| gate: pp time") and "INCONCLUSIVE" in r for r in table.splitlines())
