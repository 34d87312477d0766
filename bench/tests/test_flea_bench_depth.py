"""flea bench --depth: the JSON records the depth and one sample per rep, the depth context is filled
once and cut back for every sample, a --ctx too small for the depth is a usage error, and
weight_bytes_per_token is the file's tensor bytes less all of token_embd but one row. Runs the real
binary on the tiny reference model."""
import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLEA = os.path.join(ROOT, os.environ.get("FLEA_BUILD_DIR", "build"), "bin", "flea")
MODEL = os.path.join(ROOT, "..", "shared", "reference", "pub-Q4_K_M.gguf")

pytestmark = pytest.mark.skipif(not (os.access(FLEA, os.X_OK) and os.path.isfile(MODEL)),
                                reason="needs build/bin/flea and ../shared/reference/pub-Q4_K_M.gguf")


def bench(*args):
    p = subprocess.run([FLEA, "bench", "-m", MODEL, "--threads", "1", *args], capture_output=True, text=True)
    return p, (json.loads(p.stdout) if p.returncode == 0 else None)


def test_depth_is_recorded_with_one_sample_per_rep_and_filled_once():
    p, j = bench("--depth", "40", "--prompt", "8", "--gen", "4", "--reps", "3", "--warmup", "1")
    assert p.returncode == 0, p.stderr
    assert j["depth"] == 40
    assert len(j["pp_samples_ns"]) == 3 and len(j["tg_samples_ns"]) == 3
    # The session holds the depth plus the longest sample (+2), and the CPU session truncates back
    # to the depth instead of refilling: one fill for warmup and timed reps together.
    assert j["n_ctx"] == 40 + 8 + 2
    assert j["depth_fill"]["restore"] == "truncate" and j["depth_fill"]["fills"] == 1
    assert j["depth_fill"]["fill_ns"] > 0


def test_without_depth_there_is_no_fill():
    p, j = bench("--prompt", "8", "--gen", "4", "--reps", "2")
    assert p.returncode == 0, p.stderr
    assert j["depth"] == 0 and "depth_fill" not in j and j["n_ctx"] == 8 + 2
    assert len(j["tg_samples_ns"]) == 2


def test_depth_beyond_the_context_is_a_usage_error():
    p, _ = bench("--depth", "100", "--gen", "4", "--prompt", "8", "--ctx", "64")
    assert p.returncode == 2
    assert "needs 110 positions, more than --ctx 64" in p.stderr
    # Exactly enough is fine.
    p2, j = bench("--depth", "100", "--gen", "4", "--prompt", "8", "--ctx", "110", "--reps", "1", "--warmup", "0")
    assert p2.returncode == 0, p2.stderr
    assert j["n_ctx"] == 110 and j["ctx_requested"] == 110


def test_depth_past_the_models_context_length_warns():
    p, j = bench("--depth", "2048", "--prompt", "0", "--gen", "2", "--reps", "1", "--warmup", "0")
    assert p.returncode == 0, p.stderr
    assert j["n_ctx_train"] == 2048
    assert any("context_length 2048" in w for w in j["warnings"])


@pytest.mark.parametrize("bad", [["--kv", "none"], ["--batch", "2"], ["--compute", "none"]])
def test_depth_with_a_mode_it_cannot_serve_is_a_usage_error(bad):
    p, _ = bench("--depth", "8", *bad)
    assert p.returncode == 2 and "--depth needs" in p.stderr


def test_weight_bytes_per_token_skips_token_embd_but_one_row():
    p, j = bench("--prompt", "0", "--gen", "1", "--reps", "1", "--warmup", "0")
    assert p.returncode == 0, p.stderr
    ins = json.loads(subprocess.run([FLEA, "inspect", "--json", MODEL], capture_output=True, text=True, check=True).stdout)
    tensors = {t["name"]: t for t in ins["tensors"]}
    assert "output.weight" in tensors  # untied: token_embd is only looked up
    embd = tensors["token_embd.weight"]
    row = embd["n_bytes"] // embd["shape"][1]
    assert j["weight_bytes_per_token"] == sum(t["n_bytes"] for t in ins["tensors"]) - embd["n_bytes"] + row


def test_weight_bytes_per_token_counts_a_tied_token_embd_whole(tmp_path):
    model = str(tmp_path / "tied.gguf")
    subprocess.run([FLEA, "synth", "--shape", "tiny", "--tied", "--type", "Q8_0", "--out", model, "--quiet"],
                   check=True, capture_output=True)
    ins = json.loads(subprocess.run([FLEA, "inspect", "--json", model], capture_output=True, text=True, check=True).stdout)
    names = {t["name"] for t in ins["tensors"]}
    assert "output.weight" not in names and "token_embd.weight" in names
    p = subprocess.run([FLEA, "bench", "-m", model, "--threads", "1", "--prompt", "0", "--gen", "1", "--reps", "1",
                        "--warmup", "0"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["weight_bytes_per_token"] == sum(t["n_bytes"] for t in ins["tensors"])


def test_the_matmul_path_and_cache_type_are_recorded():
    env = dict(os.environ, FLEA_AMX="0")
    p = subprocess.run([FLEA, "bench", "-m", MODEL, "--threads", "1", "--prompt", "8", "--gen", "2", "--reps", "1",
                        "--kv-type", "f32"], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert j["amx"]["enabled"] is False  # switched off by FLEA_AMX=0 whether or not the CPU has tiles
    assert j["amx"]["available"] == (j["amx"]["why"] == "granted")
    assert j["kv_type"] == "f32"
    _, d = bench("--prompt", "8", "--gen", "2", "--reps", "1")
    assert d["kv_type"] == "f16"
    assert d["amx"]["enabled"] == d["amx"]["available"]
