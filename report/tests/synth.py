"""Builders for synthetic results dicts following results/FORMAT.md (used by tests and fixtures)."""
import copy
import json

import numpy as np

REFERENCE_COMMIT = "c392e5094deaf2d1a7c18683214f007fad3fe42b"


def make_context(run_id="ci_gate-20261123T101500Z-0001", **overrides):
    ctx = {
        "schema_version": 1,
        "run_id": run_id,
        "time": "2026-11-23T10:15:00Z",
        "scenario": {"name": "ci_gate", "path": "scenarios/ci_gate.yaml", "sha256": "0" * 64},
        "host": {"hostname": "ci-runner-1", "kernel": "Linux 6.1.0 x86_64",
                 "cpu_model": "AMD EPYC 7B13", "cpu_cores": 2, "cpu_flags": ["avx2"],
                 "ram_bytes": 8589934592, "cpu_governor": "unknown", "storage_device": "vda",
                 "numa_nodes": 1},
        "gpu": None,
        "build": {"git_rev": "abc1234", "git_dirty": False, "build_type": "Release",
                  "cuda": False, "io_uring": True, "compiler": "GNU 12.2.0", "flags": "-O3"},
        "profile": {"name": "ci-cpu", "mode": "emulate"},
        "requested": {"reps": 10},
        "effective": {"reps": 10},
        "warnings": [],
    }
    for dotted, value in overrides.items():
        cur = ctx
        keys = dotted.split("__")
        for key in keys[:-1]:
            cur = cur.setdefault(key, {})
        cur[keys[-1]] = value
    return ctx


def make_ceilings(fio=(("pread", 2.0),), cache_dropped=True, h2d=None, memory_bw_gb_s=12.0):
    return {
        "fio": [{"path": "model.gguf", "io": io, "block_bytes": 1048576, "iodepth": 4,
                 "read_gb_s": gbs, "samples_gb_s": [round(gbs * f, 3) for f in (0.98, 1.0, 1.02)],
                 "cache_dropped": cache_dropped} for io, gbs in fio],
        "h2d": h2d,
        "memory_bw_gb_s": memory_bw_gb_s,
    }


def timing_samples(rng, ms_per_token, n_tokens, reps, cv):
    """Per-repetition totals in ns for n_tokens tokens, lognormal noise with the given CV."""
    sigma = np.sqrt(np.log(1.0 + cv * cv))
    noise = rng.lognormal(-sigma * sigma / 2.0, sigma, reps)
    return [int(round(ms_per_token * n_tokens * 1e6 * f)) for f in noise]


def summarize(run):
    """Fill summary from raw samples the way the harness does (median/p95/... per token)."""
    tg = np.asarray(run["samples_ns"]["tg"], dtype=float) / run["point"]["gen"] / 1e6
    pp = np.asarray(run["samples_ns"]["pp"], dtype=float)
    med = float(np.median(tg))
    run["summary"] = {
        "tg_ms_per_token": {"median": round(med, 4), "p95": round(float(np.percentile(tg, 95)), 4),
                            "p99": round(float(np.percentile(tg, 99)), 4),
                            "min": round(float(tg.min()), 4), "max": round(float(tg.max()), 4),
                            "mad": round(float(np.median(np.abs(tg - med))), 4)},
        "pp_tok_s": round(run["point"]["prompt"] / (float(np.median(pp)) / 1e9), 2) if pp.size else None,
        "tg_tok_s": round(1000.0 / med, 3),
    }
    return run


def make_run(run_id, point, rng, ms_per_token, cv=0.05, reps=10, file_bytes=1_000_000,
             read_bytes_per_token=500_000, peak_rss_mb=100.0, nmse=1e-5, **extra):
    run = {
        "id": run_id,
        "point": dict(point),
        "status": "ok",
        "error": None,
        "engine": "flea",
        "model": {"path": "cache/synth-tiny-Q4_K_M.gguf", "file_bytes": file_bytes,
                  "file_type": "Q4_K_M", "n_layer": 2},
        "samples_ns": {
            "pp": timing_samples(rng, ms_per_token * 0.4, point["prompt"], reps, cv),
            "tg": timing_samples(rng, ms_per_token, point["gen"], reps, cv),
        },
        "io": {"read_bytes": read_bytes_per_token * point["gen"] * reps,
               "read_bytes_per_token": read_bytes_per_token, "read_gb_s": 1.5,
               "fraction_of_fio": 0.75, "stall_ns": 1000, "stall_fraction": 0.1,
               "prefetch_hits": 10, "prefetch_misses": 1},
        "memory": {"peak_rss_mb": peak_rss_mb, "peak_vram_mb": None},
        "layers": [{"layer": i, "load_ns": 1000, "compute_ns": 2000, "stall_ns": 0, "bytes": 100}
                   for i in range(2)],
        "predicted": {"ms_per_token": ms_per_token * 0.9, "floor_ms_per_token": ms_per_token * 0.5,
                      "bound": "io"},
        "vs_floor": {"ratio": 2.0, "below_floor": False},
        "baseline": None,
        "correctness": {"reference": "../shared/reference/logits/pub-Q4_0-len16.f32",
                        "reference_commit": REFERENCE_COMMIT, "nmse": nmse, "max_abs": 0.01,
                        "top1_agreement": 1.0, "kl": 1e-6,
                        "tolerance": {"nmse": 2e-3, "top1": 0.97}, "passed": True},
    }
    run.update(extra)
    return summarize(run)


def make_doc(context, ceilings, runs, partial=False):
    n_ok = sum(1 for r in runs if r["status"] == "ok")
    n_failed = sum(1 for r in runs if r["status"] == "failed")
    return {"context": context, "ceilings": ceilings, "runs": runs,
            "status": {"complete": not partial, "partial": partial, "n_runs": len(runs),
                       "n_ok": n_ok, "n_failed": n_failed}}


CI_POINTS = [
    {"model": "synth:tiny:Q4_K_M", "residency": "transient", "io": "pread", "prefetch": p,
     "vram_budget_mb": 0, "ram_budget_mb": 512, "threads": 2, "prompt": 16, "gen": 8,
     "kv": "resident", "batch": 1, "backend": "cpu"} for p in (0, 1)
]


def ci_doc(seed, slowdown=0.0, cv=0.07, reps=10, run_id=None, **run_extra):
    """The CI gate scenario's file: two points, realistic noise; slowdown scales every timing."""
    rng = np.random.default_rng(seed)
    runs = []
    for i, point in enumerate(CI_POINTS):
        base_ms = 20.0 if point["prefetch"] == 0 else 14.0
        runs.append(make_run(f"r{i + 1:04d}", point, rng, base_ms * (1.0 + slowdown), cv=cv,
                             reps=reps, **run_extra))
    ctx = make_context(run_id or f"ci_gate-seed{seed}")
    return make_doc(ctx, make_ceilings(), runs)


def write_json(path, doc):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    return path


def clone(doc):
    return copy.deepcopy(doc)
