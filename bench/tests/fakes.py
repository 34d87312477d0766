"""Fake llama-bench, llama-batched-bench, flea and membw_roof for the comparison scripts' tests:
each answers in the real tool's output format with throughputs set by environment variables
(tok/s: FAKE_LLAMA_PP, FAKE_LLAMA_TG, FAKE_FLEA_PP, FAKE_FLEA_TG; FAKE_ROOF_GB_S) and appends its
arguments, one JSON line per call, to $FAKE_LOG."""
import os
import stat

HEADER = r'''#!/usr/bin/env python3
import json, os, sys, time
args = sys.argv[1:]
def opt(name, default=None):
    return args[args.index(name) + 1] if name in args else default
def spinners():
    # Processes spinning for the script that started this one (our parent).
    me = os.getppid()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline") as f:
                cmd = f.read()
        except OSError:
            continue
        if ppid == me and "while True: pass" in cmd:
            found.append(int(pid))
    return found
entry = {"tool": TOOL, "args": args, "spinners": spinners()}
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(entry) + "\n")
if os.environ.get("FAKE_FAIL") == TOOL:
    print("fake failure", file=sys.stderr)
    sys.exit(3)
time.sleep(float(os.environ.get("FAKE_SLEEP_" + TOOL.replace("-", "_").upper(), "0")))
'''

LLAMA_BENCH = '''
p, n, r = int(opt("-p")), int(opt("-n")), int(opt("-r"))
ts = float(os.environ["FAKE_LLAMA_PP"] if p else os.environ["FAKE_LLAMA_TG"])
print(json.dumps([{"build_commit": "c392e5094", "build_number": 4748, "cpu_info": "Fake CPU", "n_prompt": p,
                   "n_gen": n, "samples_ts": [ts * (1 + 0.01 * i) for i in range(r)]}]))
'''

BATCHED_BENCH = '''
print("build: 4748 (c392e5094) with cc for x86_64-linux-gnu", file=sys.stderr)
print("main: n_kv_max = ...")
c, tg = int(opt("-c")), int(opt("-ntg"))
for i, pp in enumerate(int(x) for x in opt("-npp").split(",")):
    if pp + tg > c:
        continue  # as llama-batched-bench: a context too small skips the row silently
    speed = 1.0 if i == 0 else float(os.environ["FAKE_LLAMA_TG"]) * (1 + 0.01 * i)  # warmup row: 1.0
    print(json.dumps({"pp": pp, "tg": tg, "pl": int(opt("-npl")), "speed_pp": 100.0, "speed_tg": speed,
                      "t_pp": pp / 100.0, "t_tg": tg / speed}))
print("")
'''

FLEA = '''
if args[0] == "synth":
    open(opt("--out"), "wb").write(b"GGUF")
    sys.exit(0)
p, g, r, d = int(opt("--prompt")), int(opt("--gen")), int(opt("--reps")), int(opt("--depth", "0"))
pp, tg = float(os.environ["FAKE_FLEA_PP"]), float(os.environ["FAKE_FLEA_TG"])
j = {"depth": d, "simd": "fake", "threads": int(opt("--threads")), "weight_bytes_per_token": 1e9,
     "build": {"git_rev": "fakerev", "build_type": "Release"}, "warnings": [],
     "pp_samples_ns": [p / pp * 1e9] * r if p else [], "tg_samples_ns": [g / tg * 1e9] * r if g else []}
if d:
    j["depth_fill"] = {"fills": 1, "restore": "truncate", "fill_ns": 5}
print(json.dumps(j))
'''

MEMBW = '''
print(json.dumps({"read_gb_s": float(os.environ["FAKE_ROOF_GB_S"]), "threads": int(opt("--threads")), "samples_gb_s": [[1.0]]}))
'''


def write(dir_path, name, tool, body):
    path = os.path.join(dir_path, name)
    with open(path, "w") as f:
        f.write(HEADER.replace("TOOL", repr(tool)) + body)
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return path


def make_tools(tmp_path):
    """Writes the four fakes; returns the command-line flags that point the scripts at them."""
    d = str(tmp_path)
    return ["--llama-bench", write(d, "llama-bench", "llama-bench", LLAMA_BENCH),
            "--llama-batched-bench", write(d, "llama-batched-bench", "llama-batched-bench", BATCHED_BENCH),
            "--flea", write(d, "flea", "flea", FLEA),
            "--membw-roof", write(d, "membw_roof", "membw_roof", MEMBW)]


def env(tmp_path, **kw):
    e = dict(os.environ, FAKE_LOG=str(tmp_path / "calls.jsonl"), FAKE_LLAMA_PP="100", FAKE_LLAMA_TG="10",
             FAKE_FLEA_PP="150", FAKE_FLEA_TG="8", FAKE_ROOF_GB_S="20")
    e.update({k: str(v) for k, v in kw.items()})
    return e


def calls(tmp_path):
    import json
    p = tmp_path / "calls.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []
