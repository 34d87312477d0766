"""bench/io_vs_fio.py: pairing, ratio arithmetic and exit codes, with the real engine and a fake fio
(a script that answers fio's JSON with a fixed bandwidth and records its arguments)."""
import json
import os
import stat
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "bench", "io_vs_fio.py")
FLEA = os.path.join(ROOT, os.environ.get("FLEA_BUILD_DIR", "build"), "bin", "flea")
MODEL = os.path.join(ROOT, "..", "shared", "reference", "pub-Q4_K_M.gguf")

FAKE_FIO = r'''#!/bin/sh
echo "$@" >> "$FAKE_FIO_LOG"
echo "note: fio prints this before its JSON"
cat <<JSON
{"jobs": [{"error": 0, "read": {"io_bytes": 1000, "bw_bytes": $FAKE_FIO_BW}}]}
JSON
'''

needs = pytest.mark.skipif(not (os.access(FLEA, os.X_OK) and os.path.isfile(MODEL)),
                           reason="needs build/bin/flea and ../shared/reference/pub-Q4_K_M.gguf")


def run(tmp_path, *extra, bw=2.5e9):
    fio = tmp_path / "fio"
    fio.write_text(FAKE_FIO)
    fio.chmod(fio.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, FAKE_FIO_BW=str(bw), FAKE_FIO_LOG=str(tmp_path / "fio.log"))
    out = tmp_path / "out.json"
    p = subprocess.run([sys.executable, SCRIPT, MODEL, "--flea", FLEA, "--fio", str(fio), "--out", str(out),
                        *extra], capture_output=True, text=True, env=env)
    doc = json.loads(out.read_text()) if out.exists() else None
    log = (tmp_path / "fio.log").read_text().splitlines() if (tmp_path / "fio.log").exists() else []
    return p, doc, log


@needs
def test_rounds_pair_the_engine_with_fio_on_the_same_byte_range(tmp_path):
    p, doc, log = run(tmp_path, "--rounds", "3", "--io", "io_uring", "--block-kb", "64", "--queue-depth", "8",
                      "--target", "0")
    assert p.returncode == 0, p.stderr
    rounds = doc["rounds"]
    assert [r["order"] for r in rounds] == [["engine", "fio"], ["fio", "engine"], ["engine", "fio"]]
    assert len(log) == 3
    for r, args in zip(rounds, log):
        e = r["engine"]
        assert r["fio"]["gb_s"] == 2.5
        assert r["ratio"] == pytest.approx(e["effective_gb_s"] / 2.5)
        assert e["effective_gb_s"] == pytest.approx(e["read_bytes_per_token"] / e["ns_per_token"])
        # fio reads what the engine streams: same start offset, the span rounded down to whole blocks.
        size = (e["last_end"] - e["first_offset"]) // 65536 * 65536
        for want in ("--offset=%d" % e["first_offset"], "--size=%d" % size, "--bs=65536", "--direct=1",
                     "--ioengine=io_uring", "--iodepth=8", "--rw=read"):
            assert want in args.split(), (want, args)
    s = doc["summary"]
    assert s["median_ratio"] == pytest.approx(sorted(s["ratios"])[1])
    assert s["meets_target"] is True


@needs
def test_below_target_exits_one_and_odirect_uses_psync_depth_one(tmp_path):
    p, doc, log = run(tmp_path, "--rounds", "1", "--target", "1e6")
    assert p.returncode == 1, p.stderr
    assert "BELOW" in p.stdout
    assert doc["summary"]["meets_target"] is False
    assert "--ioengine=psync" in log[0].split() and "--iodepth=1" in log[0].split()


@needs
def test_bad_input_exits_two_with_one_line(tmp_path):
    p, _, _ = run(tmp_path, "--block-kb", "6")
    assert p.returncode == 2 and "multiple of 4" in p.stderr
    p2 = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "missing.gguf")], capture_output=True, text=True)
    assert p2.returncode == 2 and "model file not found" in p2.stderr


def nr_hugepages():
    try:
        with open("/proc/sys/vm/nr_hugepages") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


@needs
def test_fio_buffers_are_fios_default_unless_hugetlb_is_asked_and_the_pool_is_given_back(tmp_path):
    before = nr_hugepages()
    p, doc, log = run(tmp_path, "--rounds", "1", "--target", "0")
    assert p.returncode == 0, p.stderr
    assert "--mem=malloc" in log[0].split() and doc["fio_buffer"] == "malloc"
    assert doc["rounds"][0]["fio"]["buffer"] == "malloc"
    eng = doc["rounds"][0]["engine"]["huge_pages"]
    assert doc["huge_pages"] == "on" and eng["setting"] == "on" and eng["buffer_bytes"] > 0
    p, doc, log = run(tmp_path, "--rounds", "1", "--target", "0", "--fio-mem", "hugetlb")
    assert nr_hugepages() == before  # whatever was reserved for fio was returned
    if p.returncode == 2:  # not root, no pool, or fragmented memory: one line naming why
        assert "--fio-mem hugetlb" in p.stderr and len(p.stderr.strip().splitlines()) == 1
        pytest.skip(p.stderr.strip())
    assert p.returncode == 0, p.stderr
    assert "--mem=mmaphuge" in log[-1].split() and doc["fio_buffer"] == "hugetlb"
