#!/usr/bin/env python3
"""Run llama.cpp's llama-bench and `flea bench` alternately on the same GGUF file and print the
throughput ratios (ours / llama.cpp) with their spread.

    bench/compare_llama_bench.py MODEL [--llama-bench PATH] [--flea PATH] [--threads 2]
                                 [--prompt 64] [--gen 32] [--reps 3] [--rounds 3] [--json OUT]

Each round runs both engines once (llama-bench first in odd rounds, flea first in even rounds, so
neither always gets the warmer machine). Both do full residency on the CPU. The ratio per round
uses that round's medians; the summary is the median ratio with its min..max over rounds. Raw
samples of every round are kept in --json. Build llama-bench with scripts/build_baselines.sh.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run_llama_bench(path, model, threads, prompt, gen, reps):
    out = {}
    for test, args in (("pp", ["-p", str(prompt), "-n", "0"]), ("tg", ["-p", "0", "-n", str(gen)])):
        cmd = [path, "-m", model, "-t", str(threads), "-r", str(reps), "-o", "json", *args]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"compare_llama_bench: {' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()[-500:]}")
        rows = json.loads(res.stdout)
        row = rows[0]
        out[test + "_tok_s"] = statistics.median(row["samples_ts"])
        out[test + "_samples_ts"] = row["samples_ts"]
        out["build_commit"] = row.get("build_commit")
    return out


def run_flea(path, model, threads, prompt, gen, reps):
    cmd = [path, "bench", "-m", model, "--threads", str(threads), "--prompt", str(prompt),
           "--gen", str(gen), "--reps", str(reps), "--warmup", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"compare_llama_bench: {' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    j = json.loads(res.stdout)
    pp = [prompt / (ns / 1e9) for ns in j["pp_samples_ns"]]
    tg = [gen / (ns / 1e9) for ns in j["tg_samples_ns"]]
    return {"pp_tok_s": statistics.median(pp), "tg_tok_s": statistics.median(tg),
            "pp_samples_ts": pp, "tg_samples_ts": tg, "simd": j.get("simd")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--llama-bench", default=os.environ.get("LLAMA_BENCH"),
                    help="llama-bench binary (default: $LLAMA_BENCH or scripts/build_baselines.sh's output)")
    ap.add_argument("--flea", default=os.path.join(ROOT, "build", "bin", "flea"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="write every round's raw samples here")
    a = ap.parse_args()
    if not os.path.isfile(a.model):
        sys.exit(f"compare_llama_bench: model '{a.model}' not found")
    lb = a.llama_bench
    if not lb:
        default = os.path.expanduser("~/.cache/flea-baselines/llama.cpp-c392e5094dea/build/bin/llama-bench")
        lb = default if os.path.exists(default) else None
    if not lb or not os.access(lb, os.X_OK):
        sys.exit(f"compare_llama_bench: llama-bench not found at '{lb}'; run scripts/build_baselines.sh or pass --llama-bench")
    if not os.access(a.flea, os.X_OK):
        sys.exit(f"compare_llama_bench: flea not found at '{a.flea}'; build first (scripts/setup.sh --build)")

    rounds = []
    for r in range(a.rounds):
        order = ("llama", "flea") if r % 2 == 0 else ("flea", "llama")
        res = {}
        for who in order:
            if who == "llama":
                res["llama"] = run_llama_bench(lb, a.model, a.threads, a.prompt, a.gen, a.reps)
            else:
                res["flea"] = run_flea(a.flea, a.model, a.threads, a.prompt, a.gen, a.reps)
        res["pp_ratio"] = res["flea"]["pp_tok_s"] / res["llama"]["pp_tok_s"]
        res["tg_ratio"] = res["flea"]["tg_tok_s"] / res["llama"]["tg_tok_s"]
        print(f"round {r + 1}/{a.rounds}: pp{a.prompt} flea {res['flea']['pp_tok_s']:.1f} vs llama.cpp "
              f"{res['llama']['pp_tok_s']:.1f} tok/s (x{res['pp_ratio']:.2f}); tg{a.gen} flea "
              f"{res['flea']['tg_tok_s']:.2f} vs {res['llama']['tg_tok_s']:.2f} tok/s (x{res['tg_ratio']:.2f})",
              flush=True)
        rounds.append(res)

    summary = {}
    for key in ("pp_ratio", "tg_ratio"):
        vals = [r[key] for r in rounds]
        summary[key] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
    print(f"\n{os.path.basename(a.model)}, {a.threads} threads, {a.rounds} rounds x {a.reps} reps:")
    for key, label in (("pp_ratio", f"pp{a.prompt}"), ("tg_ratio", f"tg{a.gen}")):
        s = summary[key]
        print(f"  {label}: flea / llama.cpp = {s['median']:.2f} (min {s['min']:.2f}, max {s['max']:.2f})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"model": a.model, "threads": a.threads, "rounds": rounds, "summary": summary,
                       "llama_cpp_commit": rounds[0]["llama"].get("build_commit")}, f, indent=1)


if __name__ == "__main__":
    main()
