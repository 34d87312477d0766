#!/usr/bin/env python3
"""The CPU table of issue #24 in one run: flea against llama.cpp on the 1b synthetic models, every
raw sample in one JSON file plus a Markdown table.

    bench/cpu_table.py [--out cpu_table.json] [--md cpu_table.md] [--models-dir /work/models]
                       [--types Q4_K_M,Q8_0,Q4_0,Q6_K] [--threads 2] [--reps 3] [--rounds 3] [--quick]

Cases (each one bench/compare_llama_bench.py comparison, rounds alternating which engine goes first):
  every type:  pp64 and tg32 from an empty context; Q8_0 and Q4_0 also measure the DRAM read roof
               in the same rounds (membw_roof) and report both engines' tg32 as a fraction of it
  Q4_K_M:      pp512, pp2048, tg32 at depth 2048 (llama.cpp: llama-batched-bench), and tg32 with one
               core busy (a spinning process during both engines' runs), with each engine's fall
               factor against its unloaded tg32 (unloaded / loaded: 1.0 = no fall)
--quick: one round of one rep and the long cases shortened (pp128, pp256, depth 256), each labelled
with the size it ran: a smoke test of every mode, not a result. Models are
<models-dir>/1b-<TYPE>.gguf, made with `flea synth --shape 1b --type TYPE` when missing.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare_llama_bench as clb  # noqa: E402

ALL_TYPES = ("Q4_K_M", "Q8_0", "Q4_0", "Q6_K")
ROOF_TYPES = ("Q8_0", "Q4_0")
LOAD_TYPE = "Q4_K_M"  # the type the context-length and load cases run on


def plan_cases(types, quick, threads, reps, rounds):
    """The comparisons to run, in order: dicts with id, type, kind and compare() arguments."""
    long_pp = (128, 256) if quick else (512, 2048)
    depth = 256 if quick else 2048
    cases = []

    def add(type_, kind, **kw):
        args = {"threads": threads, "prompt": 0, "gen": 0, "depth": 0, "busy": 0, "roof": False,
                "reps": reps, "rounds": rounds}
        args.update(kw)
        cases.append({"id": f"{type_}:{kind}", "type": type_, "kind": kind, "args": args})

    for t in types:
        add(t, "base", prompt=64, gen=32, roof=t in ROOF_TYPES)
    if LOAD_TYPE in types:
        for p in long_pp:
            add(LOAD_TYPE, f"pp{p}", prompt=p)
        add(LOAD_TYPE, f"tg32_d{depth}", gen=32, depth=depth)
        add(LOAD_TYPE, "tg32_busy1", gen=32, busy=1)
    return cases


def median_of(doc, engine, key):
    """The median over rounds of an engine's per-round median (tok/s)."""
    vals = [r[engine].get(key) for r in doc["rounds"] if r[engine].get(key) is not None]
    return clb.statistics.median(vals) if vals else None


def row(type_, test, doc, ratio_key, rate_key, note=""):
    s = doc["summary"].get(ratio_key) or {}
    return {"type": type_, "test": test, "flea_tok_s": median_of(doc, "flea", rate_key),
            "llama_tok_s": median_of(doc, "llama", rate_key), "ratio": s.get("median"), "ratio_min": s.get("min"),
            "ratio_max": s.get("max"), "note": note}


def assemble_table(cases):
    """Rows of the table from the finished cases (each with 'doc', compare()'s document)."""
    rows = []
    by_id = {c["id"]: c for c in cases}
    for c in cases:
        doc, t, kind = c["doc"], c["type"], c["kind"]
        a = c["args"]
        if kind == "base":
            rows.append(row(t, f"pp{a['prompt']}", doc, "pp_ratio", "pp_tok_s"))
            rows.append(row(t, f"tg{a['gen']}", doc, "tg_ratio", "tg_tok_s"))
            if a["roof"]:
                s = doc["summary"]
                ff, lf, rt = (s.get(k) or {} for k in ("flea_fraction", "llama_fraction", "roof_tok_s"))
                rows.append({"type": t, "test": f"tg{a['gen']} / DRAM roof", "flea_tok_s": ff.get("median"),
                             "llama_tok_s": lf.get("median"), "ratio": None, "ratio_min": None, "ratio_max": None,
                             "roof_tok_s": rt.get("median"), "unit": "fraction",
                             "note": f"roof {fmt(rt.get('median'), '.2f')} tok/s (read GB/s / weight bytes per token)"
                                     + ("; ABOVE 100%: the roof measurement was low (busy machine?)"
                                        if max(ff.get("max") or 0, lf.get("max") or 0) > 1 else "")})
        elif kind.startswith("pp"):
            rows.append(row(t, kind, doc, "pp_ratio", "pp_tok_s"))
        elif "_d" in kind:
            rows.append(row(t, f"tg{a['gen']} @ depth {a['depth']}", doc, "tg_ratio", "tg_tok_s",
                            note="llama.cpp: llama-batched-bench"))
        elif kind.startswith("tg32_busy"):
            r = row(t, f"tg{a['gen']}, {a['busy']} core(s) busy", doc, "tg_ratio", "tg_tok_s")
            base = by_id.get(f"{t}:base")
            if base is not None:
                fall = {e: fall_factor(median_of(base["doc"], e, "tg_tok_s"), r[f"{e}_tok_s"]) for e in ("flea", "llama")}
                r["fall_flea"], r["fall_llama"] = fall["flea"], fall["llama"]
                r["note"] = f"fall vs unloaded: flea x{fmt(fall['flea'], '.2f')}, llama.cpp x{fmt(fall['llama'], '.2f')}"
            rows.append(r)
    return rows


def fall_factor(unloaded, loaded):
    return unloaded / loaded if unloaded is not None and loaded else None


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def busiest_load(cases):
    """The highest 1-minute load average any round started with (None if none was read)."""
    loads = [r["loadavg"][0] for c in cases for r in c["doc"]["rounds"] if r.get("loadavg")]
    return max(loads) if loads else None


def markdown(rows, meta):
    out = [f"CPU: {meta['cpu_model']}, {meta['threads']} threads; flea {meta.get('flea_rev') or '?'}, "
           f"llama.cpp {meta.get('llama_commit') or '?'} (build {meta.get('llama_build') or '?'}); "
           f"{meta['rounds']} rounds x {meta['reps']} reps{' (QUICK: smoke test, not a result)' if meta['quick'] else ''}",
           ""]
    load, ncpu = meta.get("load_max"), meta.get("nproc") or 1
    # This run's own engines keep the load near --threads; more than that plus one is someone else.
    if load is not None and load > meta["threads"] + 1:
        out += [f"**WARNING: the machine was busy (load average up to {load:.1f} on {ncpu} CPUs at round starts): "
                "these figures compare the engines under contention, and the roof may be low.**", ""]
    out += ["| model | test | flea | llama.cpp | flea / llama.cpp (min-max) | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("unit") == "fraction":
            f, l, ratio = fmt(r["flea_tok_s"], ".0%"), fmt(r["llama_tok_s"], ".0%"), ""
        else:
            f, l = fmt(r["flea_tok_s"], ".2f"), fmt(r["llama_tok_s"], ".2f")
            ratio = (f"{r['ratio']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})" if r["ratio"] is not None else "n/a")
        out.append(f"| 1b-{r['type']} | {r['test']} | {f} | {l} | {ratio} | {r['note']} |")
    return "\n".join(out) + "\n"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_info(root):
    def git(*args):
        r = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
    return {"head": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def ensure_model(flea, models_dir, type_, log):
    path = os.path.join(models_dir, f"1b-{type_}.gguf")
    if not os.path.isfile(path):
        log(f"cpu_table: {path} missing; making it with flea synth")
        os.makedirs(models_dir, exist_ok=True)
        clb.run_tool([flea, "synth", "--shape", "1b", "--type", type_, "--out", path, "--quiet"])
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="See the head of this file for the cases and what --quick changes.")
    ap.add_argument("--out", default="cpu_table.json", help="the JSON with every raw sample (default: %(default)s)")
    ap.add_argument("--md", help="the Markdown table (default: --out with .md)")
    ap.add_argument("--models-dir", default="/work/models", help="where 1b-<TYPE>.gguf live (default: %(default)s)")
    ap.add_argument("--types", default=",".join(ALL_TYPES), help="comma-separated subset of " + ",".join(ALL_TYPES))
    ap.add_argument("--threads", type=clb.positive, default=2)
    ap.add_argument("--reps", type=clb.positive, help="timed repetitions per engine per round (default 3; --quick 1)")
    ap.add_argument("--rounds", type=clb.positive, help="rounds per case (default 3; --quick 1)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 rep, 1 round, long cases shortened")
    clb.add_tool_args(ap)
    a = ap.parse_args(argv)
    types = [t for t in a.types.split(",") if t]
    bad = [t for t in types if t not in ALL_TYPES]
    if bad or not types:
        ap.error(f"--types: unknown {','.join(bad) or '(none)'}; choose from {','.join(ALL_TYPES)}")
    reps = a.reps or (1 if a.quick else 3)
    rounds = a.rounds or (1 if a.quick else 3)
    md_path = a.md or os.path.splitext(a.out)[0] + ".md"
    cases = plan_cases(types, a.quick, a.threads, reps, rounds)
    clb.signal.signal(clb.signal.SIGTERM, clb.raise_on_sigterm)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    try:
        tools = clb.find_tools(a, need_bench=any(not c["args"]["depth"] for c in cases),
                               need_batched=any(c["args"]["depth"] for c in cases),
                               need_roof=any(c["args"]["roof"] for c in cases))
        models = {t: ensure_model(tools["flea"], a.models_dir, t, print) for t in types}
        for i, c in enumerate(cases):
            print(f"[{i + 1}/{len(cases)}] {c['id']}", flush=True)
            c["model"] = models[c["type"]]
            c["doc"] = clb.compare(tools, c["model"], **c["args"])
    except clb.BenchError as e:
        sys.exit(f"cpu_table: {e}")
    except KeyboardInterrupt:
        sys.exit("cpu_table: interrupted (busy-core spinners stopped); nothing written")
    rows = assemble_table(cases)
    first = cases[0]["doc"]
    llama = next((c["doc"] for c in cases if c["doc"].get("llama_cpp_tool") == "llama-bench"), first)
    meta = {"cpu_model": cpu_model(), "threads": a.threads, "reps": reps, "rounds": rounds, "quick": a.quick,
            "flea_rev": (first.get("flea_build") or {}).get("git_rev"),
            "llama_commit": llama.get("llama_cpp_commit"), "llama_build": llama.get("llama_cpp_build_number"),
            "load_max": busiest_load(cases), "nproc": os.cpu_count()}
    doc = {"started": started, "machine": {"cpu_model": meta["cpu_model"], "nproc": os.cpu_count(),
                                           "kernel": platform.release(), "load_max": meta["load_max"]},
           "engines": {"flea": {"build": first.get("flea_build"), "source": git_info(clb.ROOT), "binary": tools["flea"]},
                       "llama_cpp": {"commit": meta["llama_commit"], "build_number": meta["llama_build"],
                                     "llama_bench": tools["llama_bench"],
                                     "llama_batched_bench": tools["llama_batched_bench"]}},
           "config": {"types": types, "threads": a.threads, "reps": reps, "rounds": rounds, "quick": a.quick,
                      "models_dir": a.models_dir},
           "cases": cases, "table": rows}
    md = markdown(rows, meta)
    doc["markdown"] = md
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
    with open(md_path, "w") as f:
        f.write(md)
    print("\n" + md)
    print(f"cpu_table: wrote {a.out} and {md_path}")


if __name__ == "__main__":
    main()
