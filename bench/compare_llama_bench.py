#!/usr/bin/env python3
"""Run llama.cpp and `flea bench` alternately on the same GGUF file and print the throughput ratios
(ours / llama.cpp) with their spread.

    bench/compare_llama_bench.py MODEL [--threads 2] [--prompt 64] [--gen 32] [--depth 0]
                                 [--busy-cores 0] [--roof] [--reps 3] [--rounds 3] [--json OUT]
                                 [--llama-bench PATH] [--llama-batched-bench PATH] [--flea PATH]
                                 [--membw-roof PATH]

Each round runs both engines once (llama.cpp first in odd rounds, flea first in even rounds, so
neither always gets the warmer machine). Both do full residency on the CPU. The ratio per round
uses that round's medians; the summary is the median ratio with its min..max over rounds. Raw
samples of every round are kept in --json.

--prompt P, --gen G: pp of P tokens and tg of G tokens from an empty context (0 skips one). llama-bench
sizes its context to P + G itself, flea bench to what its samples need, so 512 and 2048 work.

--depth D: tg of G tokens after D tokens are already in the KV cache. llama-bench at the baseline
commit (c392e50, build 4748) has no depth option (-d came later), so llama.cpp's side is
llama-batched-bench from the same build: `-npp D -ntg G -npl 1 -c D+G --output-format jsonl`, whose
S_TG (speed_tg) is exactly that: it clears the cache, fills D positions (timed separately as
S_PP), then times G single-token decodes. D is listed reps+1 times and the first row dropped as
warmup (llama-batched-bench's own warmup is 16 tokens). flea runs `bench --depth D`, which also
times pp of P tokens at depth D; llama.cpp has nothing that measures pp at depth at this commit, so
that figure is flea's alone (no pp ratio at depth).

--busy-cores N: N processes that spin on the CPU (pure Python `while True: pass`, no memory
traffic) run while both engines measure, started before each round's engines and stopped after
them; they die with this script (SIGINT, SIGTERM, an error, or even SIGKILL: PR_SET_PDEATHSIG).
The CPU seconds each burned are recorded, so a run can show that the load was there.

--roof: the DRAM read roof measured in the same run: each round, before the engines (and outside
the busy window: the roof is the unloaded machine's), membw_roof (bench/membw_roof.cpp, the STREAM-
style probe of run_lab_harness) measures the read bandwidth with --threads threads, and
roof_tok_s = read bytes/s / weight bytes per token (flea bench's weight_bytes_per_token: every
tensor but token_embd, of which a token reads one row). Both engines' tg is reported as a fraction
of that roof. Build llama-bench and llama-batched-bench with scripts/build_baselines.sh.
"""
import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BASELINE_BIN = os.path.expanduser("~/.cache/flea-baselines/llama.cpp-c392e5094dea/build/bin")


class BenchError(Exception):
    """A tool failed or printed something this script cannot read: one line for the user."""


def run_tool(cmd):
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    return res


# ---- llama.cpp -------------------------------------------------------------------------------


def parse_llama_bench(stdout):
    """llama-bench -o json: a list with one row per test; returns the first row's samples."""
    try:
        rows = json.loads(stdout)
        row = rows[0]
        return {"samples_ts": [float(x) for x in row["samples_ts"]], "build_commit": row.get("build_commit"),
                "build_number": row.get("build_number"), "cpu_info": row.get("cpu_info")}
    except (ValueError, LookupError, TypeError) as e:
        raise BenchError(f"cannot read llama-bench's JSON ({e}): {stdout[:200]!r}")


def parse_batched_bench(stdout, depth, gen):
    """llama-batched-bench --output-format jsonl: one JSON line per (pp, tg, pl); other lines are
    ignored. Returns the rows for pp=depth, tg=gen, pl=1 in order."""
    rows = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise BenchError(f"cannot read llama-batched-bench's line ({e}): {line[:200]!r}")
        if row.get("pp") == depth and row.get("tg") == gen and row.get("pl") == 1:
            rows.append(row)
    return rows


def batched_bench_build(stderr):
    """'build: 4748 (c392e5094) with ...' -> ('c392e5094', 4748)."""
    for line in stderr.splitlines():
        if line.startswith("build: "):
            parts = line.split()
            try:
                return parts[2].strip("()"), int(parts[1])
            except (IndexError, ValueError):
                break
    return None, None


def run_llama(tools, model, threads, prompt, gen, depth, reps):
    out = {"tool": "llama-bench" if depth == 0 else "llama-batched-bench"}
    if depth == 0:
        for test, args, n in (("pp", ["-p", str(prompt), "-n", "0"], prompt), ("tg", ["-p", "0", "-n", str(gen)], gen)):
            if n == 0:
                continue
            cmd = [tools["llama_bench"], "-m", model, "-t", str(threads), "-r", str(reps), "-o", "json", *args]
            r = parse_llama_bench(run_tool(cmd).stdout)
            out[test + "_samples_ts"] = r["samples_ts"]
            out[test + "_tok_s"] = statistics.median(r["samples_ts"])
            out.update({k: r[k] for k in ("build_commit", "build_number", "cpu_info")})
        return out
    if gen == 0:
        raise BenchError("--depth needs --gen > 0 (it measures tg at depth)")
    cmd = [tools["llama_batched_bench"], "-m", model, "-t", str(threads), "-tb", str(threads),
           "-c", str(depth + gen), "-npp", ",".join([str(depth)] * (reps + 1)), "-ntg", str(gen), "-npl", "1",
           "--output-format", "jsonl"]
    res = run_tool(cmd)
    rows = parse_batched_bench(res.stdout, depth, gen)
    if len(rows) != reps + 1:
        raise BenchError(f"llama-batched-bench printed {len(rows)} rows for pp={depth} tg={gen}, expected {reps + 1} "
                         f"(a context it finds too small is skipped silently): {' '.join(cmd)}")
    timed = rows[1:]  # the first is warmup
    out["tg_samples_ts"] = [float(r["speed_tg"]) for r in timed]
    out["tg_tok_s"] = statistics.median(out["tg_samples_ts"])
    out["fill_samples_ts"] = [float(r["speed_pp"]) for r in timed]  # pp of the D depth tokens from empty
    out["warmup_row"] = rows[0]
    out["build_commit"], out["build_number"] = batched_bench_build(res.stderr)
    return out


# ---- flea ------------------------------------------------------------------------------------


def parse_flea(stdout, prompt, gen):
    try:
        j = json.loads(stdout)
        pp = [prompt / (ns / 1e9) for ns in j["pp_samples_ns"]]
        tg = [gen / (ns / 1e9) for ns in j["tg_samples_ns"]]
    except (ValueError, LookupError, TypeError, ZeroDivisionError) as e:
        raise BenchError(f"cannot read flea bench's JSON ({e}): {stdout[:200]!r}")
    out = {"pp_samples_ts": pp, "tg_samples_ts": tg, "simd": j.get("simd"), "depth": j.get("depth", 0),
           "weight_bytes_per_token": j.get("weight_bytes_per_token"), "build": j.get("build"),
           "threads": j.get("threads"), "warnings": j.get("warnings", [])}
    if pp:
        out["pp_tok_s"] = statistics.median(pp)
    if tg:
        out["tg_tok_s"] = statistics.median(tg)
    if "depth_fill" in j:
        out["depth_fill"] = j["depth_fill"]
    return out


def run_flea(path, model, threads, prompt, gen, depth, reps):
    cmd = [path, "bench", "-m", model, "--threads", str(threads), "--prompt", str(prompt),
           "--gen", str(gen), "--reps", str(reps), "--warmup", "1", "--depth", str(depth)]
    return parse_flea(run_tool(cmd).stdout, prompt, gen)


# ---- the DRAM read roof ----------------------------------------------------------------------


def run_roof(path, threads):
    res = run_tool([path, "--threads", str(threads)])
    try:
        j = json.loads(res.stdout)
        gb_s = float(j["read_gb_s"])
    except (ValueError, LookupError, TypeError) as e:
        raise BenchError(f"cannot read membw_roof's JSON ({e}): {res.stdout[:200]!r}")
    return {"read_gb_s": gb_s, "memory": j}


def roof_fractions(read_gb_s, weight_bytes_per_token, flea_tg, llama_tg):
    """roof_tok_s = bytes/s / bytes per token; each engine's tg as a fraction of it."""
    if not read_gb_s or not weight_bytes_per_token:
        return None
    roof = read_gb_s * 1e9 / weight_bytes_per_token
    return {"read_gb_s": read_gb_s, "weight_bytes_per_token": weight_bytes_per_token, "roof_tok_s": roof,
            "flea_fraction": flea_tg / roof if flea_tg is not None else None,
            "llama_fraction": llama_tg / roof if llama_tg is not None else None}


# ---- load ------------------------------------------------------------------------------------

# A spinner: asks the kernel to kill it when its parent dies (and exits at once if that already
# happened before the request), then burns one CPU without touching memory.
SPIN = ("import ctypes, os, signal, sys\n"
        "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)\n"
        "if os.getppid() != int(sys.argv[1]): sys.exit(0)\n"
        "while True: pass\n")


def cpu_seconds(pid):
    """utime + stime of a live child from /proc/<pid>/stat (None if unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


@contextlib.contextmanager
def busy_cores(n, record):
    """Runs n spinning processes for the body; appends {pid, cpu_s, wall_s} per spinner to record."""
    procs = []
    t0 = time.monotonic()
    try:
        for _ in range(n):
            # Own session: a Ctrl-C reaches this script (which stops them), not them directly.
            procs.append(subprocess.Popen([sys.executable, "-c", SPIN, str(os.getpid())], start_new_session=True,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
        yield procs
    finally:
        wall = time.monotonic() - t0
        for p in procs:
            cpu = cpu_seconds(p.pid)
            p.kill()
            p.wait()
            record.append({"pid": p.pid, "cpu_s": cpu, "wall_s": wall})


def raise_on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def loadavg():
    """/proc/loadavg's 1, 5 and 15 minute figures (None where unreadable): other work on the machine
    shows here, and llama.cpp's spinning thread pool falls far more under it than flea does."""
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except (OSError, ValueError):
        return None


# ---- one comparison --------------------------------------------------------------------------


def ratio(a, b):
    return a / b if a is not None and b else None


def spread(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def compare(tools, model, threads=2, prompt=64, gen=32, depth=0, busy=0, roof=False, reps=3, rounds=3,
            log=print):
    """Runs `rounds` rounds and returns the document --json writes (every raw sample inside)."""
    flea_prompt = prompt
    llama_prompt = prompt if depth == 0 else 0
    results = []
    for r in range(rounds):
        order = ("llama", "flea") if r % 2 == 0 else ("flea", "llama")
        res = {"order": list(order), "loadavg": loadavg()}
        if roof:
            res["roof"] = run_roof(tools["membw_roof"], threads)
        res["busy"] = []
        with busy_cores(busy, res["busy"]):
            for who in order:
                if who == "llama":
                    res["llama"] = run_llama(tools, model, threads, llama_prompt, gen, depth, reps)
                else:
                    res["flea"] = run_flea(tools["flea"], model, threads, flea_prompt, gen, depth, reps)
        res["pp_ratio"] = ratio(res["flea"].get("pp_tok_s"), res["llama"].get("pp_tok_s"))
        res["tg_ratio"] = ratio(res["flea"].get("tg_tok_s"), res["llama"].get("tg_tok_s"))
        if roof:
            res["roof"].update(roof_fractions(res["roof"]["read_gb_s"], res["flea"].get("weight_bytes_per_token"),
                                              res["flea"].get("tg_tok_s"), res["llama"].get("tg_tok_s")) or {})
        log(round_line(r, rounds, res, prompt, gen, depth))
        results.append(res)
    summary = {k: spread([x[k] for x in results]) for k in ("pp_ratio", "tg_ratio")}
    if depth:
        summary["flea_pp_at_depth_tok_s"] = spread([x["flea"].get("pp_tok_s") for x in results])
    if roof:
        for k in ("roof_tok_s", "flea_fraction", "llama_fraction"):
            summary[k] = spread([x["roof"].get(k) for x in results])
    first = results[0] if results else {}
    return {"model": model, "threads": threads, "prompt": prompt, "gen": gen, "depth": depth, "busy_cores": busy,
            "roof": roof, "reps": reps, "rounds": results, "summary": summary,
            "llama_cpp_tool": first.get("llama", {}).get("tool"),
            "llama_cpp_commit": first.get("llama", {}).get("build_commit"),
            "llama_cpp_build_number": first.get("llama", {}).get("build_number"),
            "flea_build": first.get("flea", {}).get("build")}


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def round_line(r, rounds, res, prompt, gen, depth):
    f, l = res["flea"], res["llama"]
    parts = []
    if res["pp_ratio"] is not None:
        parts.append(f"pp{prompt} flea {f['pp_tok_s']:.1f} vs llama.cpp {l['pp_tok_s']:.1f} tok/s (x{res['pp_ratio']:.2f})")
    elif depth and f.get("pp_tok_s") is not None:
        parts.append(f"pp{prompt}@d{depth} flea {f['pp_tok_s']:.1f} tok/s")
    if res["tg_ratio"] is not None:
        at = f"@d{depth}" if depth else ""
        parts.append(f"tg{gen}{at} flea {f['tg_tok_s']:.2f} vs {l['tg_tok_s']:.2f} tok/s (x{res['tg_ratio']:.2f})")
    if "roof" in res and res["roof"].get("roof_tok_s"):
        ro = res["roof"]
        parts.append(f"roof {ro['roof_tok_s']:.2f} tok/s ({ro['read_gb_s']:.1f} GB/s): flea "
                     f"{fmt(ro['flea_fraction'], '.0%')}, llama.cpp {fmt(ro['llama_fraction'], '.0%')}")
    if res["busy"]:
        parts.append(f"{len(res['busy'])} busy core(s)")
    return f"round {r + 1}/{rounds}: " + "; ".join(parts)


def find_tools(a, need_bench=True, need_batched=False, need_roof=False):
    """The executables, the needed ones checked; raises BenchError naming a missing one."""
    def pick(given, env, default):
        return given or os.environ.get(env) or default
    tools = {"llama_bench": pick(a.llama_bench, "LLAMA_BENCH", os.path.join(BASELINE_BIN, "llama-bench")),
             "llama_batched_bench": pick(a.llama_batched_bench, "LLAMA_BATCHED_BENCH",
                                         os.path.join(BASELINE_BIN, "llama-batched-bench")),
             "flea": a.flea, "membw_roof": a.membw_roof}
    needed = [("flea", True, "build first (cmake --build build --target flea)"),
              ("llama_bench", need_bench, "run scripts/build_baselines.sh or pass --llama-bench"),
              ("llama_batched_bench", need_batched, "run scripts/build_baselines.sh or pass --llama-batched-bench"),
              ("membw_roof", need_roof, "build it (cmake --build build --target membw_roof) or pass --membw-roof")]
    for key, need, hint in needed:
        if need and not os.access(tools[key], os.X_OK):
            raise BenchError(f"{key.replace('_', '-')} not found at '{tools[key]}'; {hint}")
    return tools


def add_tool_args(ap):
    ap.add_argument("--llama-bench", help="llama-bench binary (default: $LLAMA_BENCH or scripts/build_baselines.sh's output)")
    ap.add_argument("--llama-batched-bench",
                    help="llama-batched-bench binary, for --depth (default: $LLAMA_BATCHED_BENCH or beside llama-bench)")
    ap.add_argument("--flea", default=os.path.join(ROOT, "build", "bin", "flea"), help="flea binary (default: %(default)s)")
    ap.add_argument("--membw-roof", default=os.path.join(ROOT, "build", "bin", "membw_roof"),
                    help="membw_roof binary, for --roof (default: %(default)s)")


def nonneg(text):
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def positive(text):
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="See the module docstring (head of this file) for how each mode measures.")
    ap.add_argument("model")
    add_tool_args(ap)
    ap.add_argument("--threads", type=positive, default=2)
    ap.add_argument("--prompt", type=nonneg, default=64, help="pp tokens (0 = no pp; with --depth: flea's pp at depth)")
    ap.add_argument("--gen", type=nonneg, default=32, help="tg tokens (0 = no tg)")
    ap.add_argument("--depth", type=nonneg, default=0, help="tokens already in the KV cache when tg starts")
    ap.add_argument("--busy-cores", type=nonneg, default=0, help="CPU-spinning processes during the measurements")
    ap.add_argument("--roof", action="store_true", help="measure the DRAM read roof each round (membw_roof)")
    ap.add_argument("--reps", type=positive, default=3)
    ap.add_argument("--rounds", type=positive, default=3)
    ap.add_argument("--json", help="write every round's raw samples here")
    a = ap.parse_args(argv)
    if not os.path.isfile(a.model):
        ap.error(f"model '{a.model}' not found")
    if a.prompt == 0 and a.gen == 0:
        ap.error("--prompt 0 and --gen 0 leave nothing to measure")
    if a.depth and a.gen == 0:
        ap.error("--depth measures tg at depth: it needs --gen > 0")
    if a.busy_cores > (os.cpu_count() or 1) * 4:
        ap.error(f"--busy-cores {a.busy_cores} is more than 4 x the {os.cpu_count()} CPUs")
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    try:
        tools = find_tools(a, need_bench=a.depth == 0, need_batched=a.depth > 0, need_roof=a.roof)
        doc = compare(tools, a.model, a.threads, a.prompt, a.gen, a.depth, a.busy_cores, a.roof, a.reps, a.rounds)
    except BenchError as e:
        sys.exit(f"compare_llama_bench: {e}")
    except KeyboardInterrupt:
        sys.exit("compare_llama_bench: interrupted (busy-core spinners stopped)")
    print(summary_text(doc, a.model))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1)


def summary_text(doc, model):
    lines = [f"\n{os.path.basename(model)}, {doc['threads']} threads, {len(doc['rounds'])} rounds x {doc['reps']} reps"
             + (f", depth {doc['depth']}" if doc["depth"] else "") + (f", {doc['busy_cores']} busy core(s)" if doc["busy_cores"] else "") + ":"]
    s = doc["summary"]
    at = f"@d{doc['depth']}" if doc["depth"] else ""
    for key, label in (("pp_ratio", f"pp{doc['prompt']}"), ("tg_ratio", f"tg{doc['gen']}{at}")):
        if s.get(key):
            lines.append(f"  {label}: flea / llama.cpp = {s[key]['median']:.2f} (min {s[key]['min']:.2f}, max {s[key]['max']:.2f})")
    if s.get("flea_pp_at_depth_tok_s"):
        lines.append(f"  pp{doc['prompt']}{at}: flea {s['flea_pp_at_depth_tok_s']['median']:.1f} tok/s (llama.cpp: not measurable at this commit)")
    if s.get("roof_tok_s"):
        lines.append(f"  roof {s['roof_tok_s']['median']:.2f} tok/s: flea {fmt((s.get('flea_fraction') or {}).get('median'), '.0%')}, "
                     f"llama.cpp {fmt((s.get('llama_fraction') or {}).get('median'), '.0%')} of it")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
