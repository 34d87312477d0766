#!/usr/bin/python3
"""Regenerate the frozen fixtures in report/tests/fixtures/ (they are committed; rerun only when
FORMAT.md changes, then refresh the golden report with FLEA_UPDATE_GOLDEN=1).

    /usr/bin/python3 report/tests/make_fixtures.py
"""
import json
import os

import numpy as np

import synth

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
MODELS = {  # name -> (file_bytes, n_layer)
    "synth:3b:Q4_K_M": (1_929_379_840, 26),
    "synth:7b:Q4_K_M": (4_081_004_224, 32),
    "synth:13b:Q4_K_M": (7_865_956_544, 40),
}
GPU = {"name": "NVIDIA GeForce RTX 4060", "vram_mb": 8188, "driver": "550.54.14",
       "pcie": "gen4 x8"}
PROFILE = {"name": "rtx4060-990pro", "mode": "emulate", "vram_mb": 8192,
           "storage": {"name": "Samsung 990 Pro", "read_gb_s": 7.0}, "pcie_gen": 4}
FIO = {"pread": 6.8, "odirect": 6.9, "io_uring": 7.0, "mmap": 5.1}


def gpu_point(model, vram_mb, prefetch, io="pread"):
    return {"model": model, "residency": "auto", "io": io, "prefetch": prefetch,
            "vram_budget_mb": vram_mb, "ram_budget_mb": 16384, "threads": 8, "prompt": 64,
            "gen": 16, "kv": "resident", "batch": 1, "backend": "cuda"}


def ideal_ms(model, vram_mb, prefetch, io_gb_s):
    """Predicted ms/token: streamed bytes over the disk, overlapped with compute by prefetch."""
    file_bytes, _ = MODELS[model]
    resident = min(file_bytes, max(0, vram_mb - 1200) * 1048576)
    streamed = file_bytes - resident
    io_ms = streamed / (io_gb_s * 1e9) * 1e3
    compute_ms = file_bytes / 272e9 * 1e3 * 1.6  # RTX 4060: 272 GB/s VRAM
    if prefetch == 0:
        return io_ms + compute_ms, streamed, io_ms, compute_ms
    return max(io_ms, compute_ms) + 2.0 / prefetch, streamed, io_ms, compute_ms


def layer_rows(n_layer, streamed, io_ms, compute_ms, prefetch):
    per_load = io_ms / n_layer * 1e6
    per_compute = compute_ms / n_layer * 1e6
    stall = max(0.0, per_load - per_compute) if prefetch else per_load
    return [{"layer": i, "load_ns": int(per_load * (1 + 0.03 * np.sin(i))),
             "compute_ns": int(per_compute * (1 + 0.02 * np.cos(i))), "stall_ns": int(stall),
             "bytes": int(streamed / n_layer)} for i in range(n_layer)]


def gpu_run(rng, run_id, point, slowness=1.12, cv=0.02, engine="flea", below_floor=False,
            nmse=1.3e-5):
    model = point["model"]
    file_bytes, n_layer = MODELS[model]
    fio = FIO[point["io"]]
    pred, streamed, io_ms, compute_ms = ideal_ms(model, point["vram_budget_mb"],
                                                 point["prefetch"], fio)
    floor = max(streamed / (fio * 1e9) * 1e3, file_bytes / 272e9 * 1e3)
    measured = floor * 0.8 if below_floor else pred * slowness
    run = synth.make_run(run_id, point, rng, measured, cv=cv, reps=5, file_bytes=file_bytes,
                         read_bytes_per_token=streamed, peak_rss_mb=round(1800 + streamed / 4e6, 1),
                         nmse=nmse)
    run["engine"] = engine
    run["model"] = {"path": f"/data/models/{model.replace(':', '-')}.gguf",
                    "file_bytes": file_bytes, "file_type": "Q4_K_M", "n_layer": n_layer}
    read_gb_s = streamed / (measured * 1e6) if measured else None
    run["io"] = {"read_bytes": streamed * 16 * 5, "read_bytes_per_token": streamed,
                 "read_gb_s": round(read_gb_s, 3), "fraction_of_fio": round(read_gb_s / fio, 3),
                 "stall_ns": int(max(0.0, io_ms - compute_ms) * 1e6 * 80),
                 "stall_fraction": round(max(0.0, io_ms - compute_ms) / measured, 3),
                 "prefetch_hits": 80 * n_layer if point["prefetch"] else 0,
                 "prefetch_misses": 0 if point["prefetch"] else 80 * n_layer}
    run["memory"] = {"peak_rss_mb": run["memory"]["peak_rss_mb"],
                     "peak_vram_mb": float(min(point["vram_budget_mb"], 1200 + file_bytes / 1048576))}
    run["layers"] = layer_rows(n_layer, streamed, io_ms, compute_ms, point["prefetch"])
    run["predicted"] = {"ms_per_token": round(pred, 3), "floor_ms_per_token": round(floor, 3),
                        "bound": "io" if io_ms > compute_ms else "compute"}
    ratio = measured / floor
    run["vs_floor"] = {"ratio": round(ratio, 3), "below_floor": ratio < 1.0}
    if nmse > 2e-3:
        run["correctness"]["passed"] = False
    if engine != "flea":
        for key in ("io", "layers", "predicted", "vs_floor", "correctness"):
            run[key] = None
        run["memory"]["peak_vram_mb"] = float(point["vram_budget_mb"] - 150)
    return run


def sweep_a():
    rng = np.random.default_rng(11)
    runs, n = [], 0

    def add(run):
        runs.append(run)

    def next_id():
        nonlocal n
        n += 1
        return f"r{n:04d}"

    model = "synth:7b:Q4_K_M"
    for vram in (2048, 4096, 6144):
        for prefetch in (0, 1, 2):
            point = gpu_point(model, vram, prefetch)
            add(gpu_run(rng, next_id(), point,
                        cv=0.15 if (vram, prefetch) == (2048, 1) else 0.02,
                        nmse=3.1e-3 if (vram, prefetch) == (6144, 0) else 1.3e-5))
    add(gpu_run(rng, next_id(), gpu_point(model, 4096, 2, "odirect")))
    add(gpu_run(rng, next_id(), gpu_point(model, 4096, 2, "io_uring"), below_floor=True))
    failed = {"id": next_id(), "point": gpu_point(model, 4096, 2, "mmap"), "status": "failed",
              "error": "mmap: mlock of 4.1 GB failed: RLIMIT_MEMLOCK is 8 MB", "engine": "flea",
              "model": None, "samples_ns": None, "summary": None, "io": None, "memory": None,
              "layers": None, "predicted": None, "vs_floor": None, "baseline": None,
              "correctness": None}
    add(failed)
    lb = gpu_run(rng, next_id(), gpu_point(model, 4096, 0), slowness=1.35,
                 engine="llama-bench")
    add(lb)
    for run in runs:
        if run["status"] == "ok" and run["engine"] == "flea" and \
                run["point"]["vram_budget_mb"] == 4096:
            tok_s = run["summary"]["tg_tok_s"]
            run["baseline"] = {"engine": "llama-bench", "tg_tok_s": lb["summary"]["tg_tok_s"],
                               "ratio": round(tok_s / lb["summary"]["tg_tok_s"], 3)}
    ctx = synth.make_context(
        "residency_sweep-20261123T101500Z-a1b2",
        host={"hostname": "lab-a", "kernel": "Linux 6.8.0 x86_64", "cpu_model": "AMD Ryzen 9 7950X",
              "cpu_cores": 16, "cpu_flags": ["avx2", "avx512f"], "ram_bytes": 68719476736,
              "cpu_governor": "performance", "storage_device": "nvme0n1", "numa_nodes": 1},
        gpu=GPU, profile=PROFILE, reference_commit=synth.REFERENCE_COMMIT,
        scenario={"name": "residency_sweep", "path": "scenarios/residency_sweep.yaml",
                  "sha256": "1" * 64},
        build={"git_rev": "3f2a9c1", "git_dirty": False, "build_type": "Release", "cuda": True,
               "io_uring": True, "compiler": "GNU 12.2.0", "flags": "-O3 -march=native"})
    ceilings = synth.make_ceilings(fio=[(io, gbs) for io, gbs in FIO.items()],
                                   h2d={"pinned_gb_s": 12.1, "pageable_gb_s": 6.3},
                                   memory_bw_gb_s=61.5)
    for entry in ceilings["fio"]:
        entry["path"] = "/data/models/synth-7b-Q4_K_M.gguf"
    return synth.make_doc(ctx, ceilings, runs)


def sweep_b():
    rng = np.random.default_rng(22)
    runs = []
    points = [gpu_point("synth:7b:Q4_K_M", v, 2) for v in (2048, 4096, 6144)]
    points += [gpu_point("synth:3b:Q4_K_M", 4096, 2), gpu_point("synth:13b:Q4_K_M", 4096, 2)]
    for i, point in enumerate(points):
        runs.append(gpu_run(rng, f"r{i + 1:04d}", point, slowness=1.25, cv=0.03))
    ctx = synth.make_context(
        "residency_sweep-20261124T090000Z-c3d4", time="2026-11-24T09:00:00Z",
        host={"hostname": "lab-b", "kernel": "Linux 6.1.0 x86_64", "cpu_model": "Intel Core i7-13700",
              "cpu_cores": 16, "cpu_flags": ["avx2"], "ram_bytes": 34359738368,
              "cpu_governor": "powersave", "storage_device": "nvme1n1", "numa_nodes": 1},
        gpu=GPU, profile=PROFILE, reference_commit=synth.REFERENCE_COMMIT,
        scenario={"name": "residency_sweep", "path": "scenarios/residency_sweep.yaml",
                  "sha256": "1" * 64},
        build={"git_rev": "9e0d4b7", "git_dirty": True, "build_type": "Debug", "cuda": True,
               "io_uring": True, "compiler": "GNU 12.2.0", "flags": "-O0 -g"},
        warnings=["debug build",
                  "page cache not dropped for /data/models/synth-7b-Q4_K_M.gguf (fadvise failed)"])
    ceilings = synth.make_ceilings(fio=[("pread", 6.1)], cache_dropped=False,
                                   h2d={"pinned_gb_s": 11.8, "pageable_gb_s": 6.0})
    ceilings["fio"][0]["path"] = "/data/models/synth-7b-Q4_K_M.gguf"
    doc = synth.make_doc(ctx, ceilings, runs, partial=True)
    doc["status"]["n_planned"] = 6
    return doc


def trace_a(doc):
    """Chrome trace for one token of run r0006 (vram 4096, prefetch 2): I/O, copy, compute lanes."""
    run = next(r for r in doc["runs"] if r["id"] == "r0006")
    events = [{"ph": "M", "name": "thread_name", "pid": 1, "tid": tid, "args": {"name": name}}
              for tid, name in ((1, "compute"), (2, "io"), (3, "h2d copy"))]
    t_io = t_copy = t_compute = 1000.0
    for layer in run["layers"]:
        load_us = layer["load_ns"] / 1e3
        copy_us = layer["bytes"] / 12.1e3  # 12.1 GB/s pinned H2D
        t_io = max(t_io, t_copy - 2 * load_us)  # prefetch 2: I/O runs up to two layers ahead
        io_start = t_io
        t_io = io_start + load_us
        copy_start = max(t_io, t_copy)
        t_copy = copy_start + copy_us
        compute_start = max(t_copy, t_compute)
        t_compute = compute_start + layer["compute_ns"] / 1e3
        for cat, tid, ts, dur in (("io", 2, io_start, load_us), ("copy", 3, copy_start, copy_us),
                                  ("compute", 1, compute_start, layer["compute_ns"] / 1e3)):
            events.append({"ph": "X", "name": f"layer {layer['layer']} {cat}", "cat": cat,
                           "pid": 1, "tid": tid, "ts": round(ts, 1), "dur": round(dur, 1),
                           "args": {"run": run["id"], "layer": layer["layer"], "token": 0}})
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def minimal_nulls():
    ctx = synth.make_context("minimal-20261123T120000Z-0000")
    for key in ("scenario", "requested", "effective", "warnings"):
        del ctx[key]
    ctx["host"] = {"hostname": "tiny"}
    ctx["build"] = {"git_rev": None, "build_type": None}
    ctx["profile"] = None
    run = {"id": "r0001", "point": {"model": "synth:tiny:Q4_K_M", "prefetch": 1, "gen": 8},
           "status": "ok", "error": None, "samples_ns": {"pp": None, "tg": [8.0e7, 8.2e7, 8.1e7]},
           "memory": {"peak_rss_mb": None, "peak_vram_mb": None}, "correctness": None}
    skipped = {"id": "r0002", "point": {"model": "synth:tiny:Q4_K_M", "prefetch": 2, "gen": 8},
               "status": "skipped", "error": "baseline llama-bench not found (optional)"}
    return {"context": ctx, "ceilings": None, "runs": [run, skipped], "status": None}


MOE = {  # name -> (file_bytes, expert routing skew or None when the record does not state it)
    "synth:moe-8x2:Q4_K_M": (109_051_904, None),
    "synth:moe-8x2-skew:Q4_K_M": (109_051_904, 1.5),
}
MOE_LAYERS, MOE_N_EXPERT, MOE_K = 4, 8, 2
MOE_SLOT_BYTES = 2_359_296  # one expert's gate, up and down matrices
MOE_DENSE_LAYER_BYTES = 1_572_864  # attention and norms of one layer


def moe_point(model, cache=None, policy=None, residency=None, **extra):
    """A CPU point streaming every layer; expert_* keys only when not the default (as the harness)."""
    point = {"model": model, "residency": "transient", "io": "pread", "prefetch": 1,
             "vram_budget_mb": 0, "ram_budget_mb": 256, "threads": 2, "prompt": 16, "gen": 16,
             "kv": "resident", "batch": 1, "backend": "cpu"}
    for key, value in (("expert_cache", cache), ("expert_policy", policy),
                       ("expert_residency", residency)):
        if value is not None:
            point[key] = value
    point.update(extra)
    return point


def moe_plan(cache, policy, residency):
    """plan.experts and the plan's streamed bytes per token (flea's Plan::to_json)."""
    by_expert = residency == "expert"
    layers = MOE_LAYERS if by_expert else 0
    expert_layer_bytes = MOE_N_EXPERT * MOE_SLOT_BYTES
    dense = MOE_LAYERS * (MOE_DENSE_LAYER_BYTES + (0 if by_expert else expert_layer_bytes))
    expert_bytes = MOE_K * layers * MOE_SLOT_BYTES
    hit = cache / MOE_N_EXPERT if layers else 0.0
    scratch = MOE_K if layers else 0
    experts = {"residency": residency, "policy": policy, "n_expert": MOE_N_EXPERT,
               "n_expert_used": MOE_K, "layers": layers, "slot_bytes": MOE_SLOT_BYTES,
               "cache_per_layer": cache if layers else 0, "scratch_slots": scratch,
               "pool_bytes": (layers * cache + scratch) * MOE_SLOT_BYTES,
               "dense_bytes_per_token": dense, "expert_bytes_per_token": expert_bytes,
               "predicted_hit_rate": hit}
    return {"residency": "transient", "io": "pread", "prefetch": 1, "n_layer": MOE_LAYERS,
            "n_streamed": MOE_LAYERS, "streamed_bytes_per_token": dense + round((1 - hit) * expert_bytes),
            "experts": experts}


def moe_experts(plan, hit_rate, tokens):
    """The engine's experts block for `tokens` timed tokens at the given hit rate."""
    pe = plan["experts"]
    lookups_per_layer = tokens * MOE_K if pe["layers"] else 0
    per_layer, hits = [], 0
    for layer in range(pe["layers"]):
        h = round(lookups_per_layer * hit_rate)
        per_layer.append({"layer": layer, "hits": h, "misses": lookups_per_layer - h,
                          "bytes": (lookups_per_layer - h) * MOE_SLOT_BYTES})
        hits += h
    misses = pe["layers"] * lookups_per_layer - hits
    read = misses * MOE_SLOT_BYTES
    return {"residency": pe["residency"], "policy": pe["policy"], "layers": pe["layers"],
            "cache_per_layer": pe["cache_per_layer"], "predicted_hit_rate": pe["predicted_hit_rate"],
            "hits": hits, "misses": misses,
            "hit_rate": hits / (hits + misses) if hits + misses else None,
            "expert_read_bytes": read, "experts_read_per_token": misses / tokens,
            "expert_bytes_per_token": read // tokens, "per_layer": per_layer}


def moe_run(rng, run_id, point, hit_rate, extra_read=1.0, experts=True):
    """A flea run of an MoE model: measured reads follow the plan at the measured hit rate
    (times extra_read, to model an engine that reads more than it plans)."""
    model = point["model"]
    file_bytes, skew = MOE[model]
    cache, policy = point.get("expert_cache", 4), point.get("expert_policy", "lru")
    plan = moe_plan(cache, policy, point.get("expert_residency", "expert"))
    tokens = 5 * (point["gen"] + 1)  # timed tokens: each rep's gen tokens and its prompt's one
    block = moe_experts(plan, hit_rate, tokens)
    read = int((plan["experts"]["dense_bytes_per_token"] + block["expert_bytes_per_token"]) * extra_read)
    ms = 4.0 + read / 2.0e6  # compute plus the reads at 2 GB/s
    run = synth.make_run(run_id, point, rng, ms, cv=0.03, reps=5, file_bytes=file_bytes,
                         read_bytes_per_token=read, peak_rss_mb=round(60 + 256 * 0.8, 1))
    run["model"] = {"path": f"cache/{model.replace(':', '-')}.gguf", "file_bytes": file_bytes,
                    "file_type": "Q4_K_M", "n_layer": MOE_LAYERS}
    if skew is not None:
        run["model"]["expert_skew"] = skew
    run["io"]["read_bytes"] = read * tokens
    run["io"]["read_gb_s"] = round(read / (ms * 1e6), 3)
    run["predicted"] = {"ms_per_token": round(4.0 + plan["streamed_bytes_per_token"] / 2.0e6, 3),
                        "floor_ms_per_token": round(read / 2.1e6, 3), "bound": "io"}
    run["vs_floor"] = {"ratio": round(ms / (read / 2.1e6), 3), "below_floor": False}
    run["plan"] = plan
    run["experts"] = block if experts else None
    return run


def moe_sweep():
    """Expert cache sweeps over two MoE models (uniform routing with no skew stated, and skew 1.5),
    LRU and LFU, one layer-residency run, one run reading more than its plan, one io-only run
    (plan but no experts block), a failed point and the llama-bench baseline."""
    rng = np.random.default_rng(33)
    uniform, skewed = "synth:moe-8x2:Q4_K_M", "synth:moe-8x2-skew:Q4_K_M"
    specs = [  # (point, measured hit rate, extra_read)
        (moe_point(uniform, cache=0), 0.0, 1.0),
        (moe_point(uniform, cache=2), 0.243, 1.0),
        (moe_point(uniform, cache=4), 0.507, 1.0),
        (moe_point(uniform, cache=6), 0.748, 1.3),
        (moe_point(uniform, cache=4, policy="lfu"), 0.49, 1.0),
        (moe_point(uniform, cache=4, residency="layer"), 0.0, 1.0),
        (moe_point(skewed, cache=2), 0.45, 1.0),
        (moe_point(skewed, cache=4), 0.71, 1.0),
        (moe_point(skewed, cache=2, policy="lfu"), 0.52, 1.0),
        (moe_point(skewed, cache=4, policy="lfu"), 0.78, 1.0),
    ]
    runs = [moe_run(rng, f"r{i + 1:04d}", point, hit, extra)
            for i, (point, hit, extra) in enumerate(specs)]
    io_only = moe_run(rng, "r0011", moe_point(uniform, cache=2, compute="none"), 0.0, experts=False)
    runs.append(io_only)
    runs.append({"id": "r0012", "point": moe_point(skewed, cache=6), "status": "failed",
                 "error": "flea exited 3: ram_budget_mb 256 leaves room for 5 experts per layer, not 6",
                 "engine": "flea", "model": None, "samples_ns": None, "summary": None, "io": None,
                 "memory": None, "layers": None, "predicted": None, "vs_floor": None,
                 "baseline": None, "correctness": None, "plan": None, "experts": None})
    lb_point = {k: moe_point(uniform)[k] for k in ("model", "backend", "prompt", "gen", "threads",
                                                    "vram_budget_mb")}
    lb = synth.make_run("r0013", lb_point, rng, 40.0, cv=0.03, reps=5,
                        file_bytes=MOE[uniform][0], peak_rss_mb=180.0)
    lb["engine"] = "llama-bench"
    lb["model"] = dict(runs[0]["model"])
    for key in ("io", "layers", "predicted", "vs_floor", "correctness"):
        lb[key] = None
    lb["plan"], lb["experts"] = None, None
    runs.append(lb)
    for run in runs:
        if run["status"] == "ok" and run["engine"] == "flea" and run["point"]["model"] == uniform:
            run["baseline"] = {"engine": "llama-bench", "run": lb["id"], "status": "ok",
                               "tg_tok_s": lb["summary"]["tg_tok_s"],
                               "ratio": round(run["summary"]["tg_tok_s"] / lb["summary"]["tg_tok_s"], 3)}
    ctx = synth.make_context("moe_sweep-20261208T090000Z-e5f6",
                             scenario={"name": "moe_sweep", "path": "scenarios/moe_sweep.yaml",
                                       "sha256": "2" * 64})
    return synth.make_doc(ctx, synth.make_ceilings(), runs)


def malformed(valid_text):
    cut = valid_text[: len(valid_text) * 3 // 5]
    not_obj = "[1, 2, 3]\n"
    a = json.loads(valid_text)
    missing_runs = {"context": a["context"], "ceilings": a["ceilings"]}
    wrong_type = json.loads(valid_text)
    wrong_type["runs"][2]["samples_ns"]["tg"] = "fast"
    version = json.loads(valid_text)
    version["context"]["schema_version"] = 2
    no_error = json.loads(valid_text)
    no_error["runs"][0]["status"] = "failed"
    no_point = json.loads(valid_text)
    del no_point["runs"][1]["point"]
    return {
        "bad_truncated.json": cut,
        "bad_empty.json": "",
        "bad_not_object.json": not_obj,
        "bad_missing_runs.json": json.dumps(missing_runs, indent=1),
        "bad_wrong_type.json": json.dumps(wrong_type, indent=1),
        "bad_schema_version.json": json.dumps(version, indent=1),
        "bad_failed_no_error.json": json.dumps(no_error, indent=1),
        "bad_run_no_point.json": json.dumps(no_point, indent=1),
    }


def ci_pair():
    base = synth.ci_doc(101, run_id="ci_gate-20261120T080000Z-base")
    cand = synth.ci_doc(202, slowdown=-0.2, run_id="ci_gate-20261123T080000Z-cand")
    cand["context"]["build"]["git_rev"] = "def5678"
    cand["context"]["time"] = "2026-11-23T08:00:00Z"
    for run in cand["runs"]:
        run["memory"]["peak_rss_mb"] = 96.0
    return base, cand


def main():
    os.makedirs(FIXTURES, exist_ok=True)
    a = sweep_a()
    path_a = synth.write_json(os.path.join(FIXTURES, "gpu_sweep_a.json"), a)
    synth.write_json(os.path.join(FIXTURES, a["context"]["run_id"] + ".trace.json"), trace_a(a))
    synth.write_json(os.path.join(FIXTURES, "gpu_sweep_b.json"), sweep_b())
    synth.write_json(os.path.join(FIXTURES, "minimal_nulls.json"), minimal_nulls())
    synth.write_json(os.path.join(FIXTURES, "moe_sweep.json"), moe_sweep())
    base, cand = ci_pair()
    synth.write_json(os.path.join(FIXTURES, "ci_base.json"), base)
    synth.write_json(os.path.join(FIXTURES, "ci_candidate.json"), cand)
    with open(path_a, encoding="utf-8") as f:
        valid_text = f.read()
    for name, text in malformed(valid_text).items():
        with open(os.path.join(FIXTURES, name), "w", encoding="utf-8") as f:
            f.write(text)
    print(f"wrote fixtures to {FIXTURES}")


if __name__ == "__main__":
    main()
