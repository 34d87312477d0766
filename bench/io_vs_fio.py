#!/usr/bin/python3
"""The streaming I/O path against fio on the same file, paired round by round.

On a shared or virtualised disk the bandwidth drifts by several times between runs, so one fio
ceiling measured at the start of a sweep cannot judge "the engine reaches 90% of fio". This script
alternates the two, round after round, on the same file with the same request size, direct I/O and
queue depth, dropping the file from the page cache before each, and judges the median of the
per-round ratios (each ratio is taken a few seconds apart, so slow drift cancels):

  engine  `flea bench --compute none --residency transient --ram-budget-mb 0` (every layer streams,
          nothing is cached): effective GB/s = bytes read per token / wall time per token
          (`read_ns`: the whole per-token read loop, waits included).
  fio     `--rw=read --direct=1` over the same byte range (first layer to end of the last one),
          --ioengine=psync (odirect) or io_uring with --iodepth=Q (io_uring), --bs=B.

Buffers: fio reads into its default malloc buffer (4 KiB pages), which is the comparison the
target is defined on. --fio-mem hugetlb reads into hugetlb pages instead (--mem=mmaphuge; as root the
script reserves the few pool pages it needs and gives them back at exit). On a host-cached virtual
disk that changes fio by 2-4x: its small, reused buffer stays in the CPU cache, a speed no streaming
engine, which must land every layer in its own DRAM, can match. See README, "The I/O path against fio".

The order inside a round alternates (engine first on odd rounds) so neither side always reads
right after the other warmed the device. Writes every raw sample to --out as JSON.

  /usr/bin/python3 bench/io_vs_fio.py MODEL.gguf [--io odirect|io_uring] [--block-kb 1024]
      [--queue-depth 4] [--rounds 5] [--gen 1] [--huge-pages on|off] [--fio-mem malloc|hugetlb]
      [--flea build/bin/flea] [--fio fio] [--out FILE]

Exit 0 when the median ratio is >= --target (default 0.90), 1 below it, 2 on bad input.
"""
import argparse
import fcntl
import json
import os
import shutil
import statistics
import subprocess
import sys
import time


def drop_cache(path):
    """posix_fadvise(DONTNEED) on the whole file; returns (ok, why)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        except OSError:
            pass  # read-only file systems refuse fsync; the advice still applies to clean pages
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        return True, ""
    except OSError as e:
        return False, str(e)


NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"


def meminfo(key):
    """A /proc/meminfo field as an int (kB for sizes), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name == key:
                    return int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return None


class HugetlbPool:
    """Makes `need_bytes` of hugetlb pages free for fio --mem=mmaphuge, raising nr_hugepages when
    root, and gives back the pages it added on exit. Holds the flock the harness uses
    (/tmp/flea-hugetlb.lock) meanwhile, so concurrent users take turns. .ok / .why / .added."""

    LOCK = "/tmp/flea-hugetlb.lock"

    def __init__(self, need_bytes):
        self.need_bytes, self.ok, self.why, self.added, self.lock = need_bytes, False, "", 0, None

    def __enter__(self):
        if self.need_bytes <= 0:
            return self
        try:
            self.lock = open(self.LOCK, "a")
            fcntl.flock(self.lock, fcntl.LOCK_EX)
        except OSError:
            self.lock = None
        page_kb, free = meminfo("Hugepagesize"), meminfo("HugePages_Free")
        if not page_kb or free is None:
            self.why = "no hugetlb pool in /proc/meminfo"
            return self
        need = -(-self.need_bytes // (page_kb * 1024))
        if free >= need:
            self.ok = True
            return self
        if os.geteuid() != 0:
            self.why = "%d hugetlb pages free, %d needed, and only root may raise %s" % (free, need, NR_HUGEPAGES)
            return self
        try:
            nr = read_int(NR_HUGEPAGES)
            write_int(NR_HUGEPAGES, nr + need - free)
            self.added = max(0, read_int(NR_HUGEPAGES) - nr)  # the kernel may grant fewer
        except (OSError, ValueError) as e:
            self.why = "cannot raise %s: %s" % (NR_HUGEPAGES, e)
            return self
        if (meminfo("HugePages_Free") or 0) < need:
            self.why = "the kernel could not find %d free huge pages (memory fragmented)" % need
            return self
        self.ok = True
        return self

    def __exit__(self, *exc):
        if self.added:  # give back what we added, not "the old count": others may have changed it
            try:
                nr = read_int(NR_HUGEPAGES)
                if nr >= self.added:
                    write_int(NR_HUGEPAGES, nr - self.added)
            except (OSError, ValueError):
                pass
        if self.lock is not None:
            self.lock.close()
        return False


def read_int(path):
    with open(path) as f:
        return int(f.read())


def write_int(path, value):
    with open(path, "w") as f:
        f.write("%d\n" % value)


def run_engine(args):
    cmd = [args.flea, "bench", "-m", args.model, "--residency", "transient", "--io", args.io,
           "--compute", "none", "--ram-budget-mb", "0", "--prompt", "0", "--gen", str(args.gen),
           "--reps", "1", "--warmup", "0", "--io-block-kb", str(args.block_kb),
           "--queue-depth", str(args.queue_depth), "--prefetch", str(args.prefetch), "--threads", "1",
           "--huge-pages", args.huge_pages]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("flea bench exited %d: %s" % (p.returncode, p.stderr.strip()[-400:]))
    j = json.loads(p.stdout)
    per_token_ns = j["read_ns"] / j["tokens"]  # wall time of the whole read loop, per token
    spans = [s for layer in j["plan"]["layers"] for s in layer["spans"]]
    return {
        "read_bytes_per_token": j["read_bytes_per_token"],
        "ns_per_token": per_token_ns,
        "effective_gb_s": j["read_bytes_per_token"] / per_token_ns,
        "huge_pages": j.get("huge_pages"),
        "first_offset": min(s["file_offset"] for s in spans),
        "last_end": max(s["file_offset"] + s["length"] for s in spans),
    }


def run_fio(args, offset, size):
    engine = "io_uring" if args.io == "io_uring" else "psync"
    depth = args.queue_depth if args.io == "io_uring" else 1
    bs = args.block_kb * 1024
    size = size // bs * bs
    cmd = [args.fio, "--name=paired", "--filename=" + args.model, "--readonly", "--rw=read",
           "--bs=%d" % bs, "--offset=%d" % offset, "--size=%d" % size, "--ioengine=" + engine,
           "--direct=1", "--iodepth=%d" % depth, "--invalidate=1", "--output-format=json",
           "--mem=" + ("mmaphuge" if args.fio_buffer == "hugetlb" else "malloc")]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("fio exited %d: %s" % (p.returncode, p.stderr.strip()[-400:]))
    out = p.stdout[p.stdout.index("{"):]  # fio may print notes before the JSON object
    job = json.loads(out)["jobs"][0]
    if job.get("error", 0):
        raise RuntimeError("fio job error %d" % job["error"])
    return {"bytes": job["read"]["io_bytes"], "gb_s": job["read"]["bw_bytes"] / 1e9,
            "ioengine": engine, "iodepth": depth, "block_bytes": bs, "buffer": args.fio_buffer}


def paired_rounds(args, log=sys.stderr):
    rounds = []
    span = None
    for i in range(args.rounds):
        rec = {"round": i + 1}
        order = ("engine", "fio") if i % 2 == 0 else ("fio", "engine")
        for side in order:
            ok, why = drop_cache(args.model)
            rec.setdefault("cache_dropped", True)
            rec["cache_dropped"] = rec["cache_dropped"] and ok
            if not ok:
                rec["cache_drop_error"] = why
            if side == "engine":
                rec["engine"] = run_engine(args)
                span = (rec["engine"]["first_offset"], rec["engine"]["last_end"])
            else:  # round 1 runs the engine first, so the byte range is known here
                rec["fio"] = run_fio(args, span[0], span[1] - span[0])
        rec["order"] = list(order)
        rec["ratio"] = rec["engine"]["effective_gb_s"] / rec["fio"]["gb_s"]
        rounds.append(rec)
        print("round %d/%d: engine %.2f GB/s, fio %.2f GB/s, ratio %.3f" %
              (i + 1, args.rounds, rec["engine"]["effective_gb_s"], rec["fio"]["gb_s"], rec["ratio"]), file=log)
    return rounds


def summarize(rounds, target):
    ratios = [r["ratio"] for r in rounds]
    med = statistics.median(ratios)
    return {"ratios": ratios, "median_ratio": med, "min_ratio": min(ratios), "max_ratio": max(ratios),
            "engine_gb_s": [r["engine"]["effective_gb_s"] for r in rounds],
            "fio_gb_s": [r["fio"]["gb_s"] for r in rounds],
            "all_cache_dropped": all(r["cache_dropped"] for r in rounds),
            "target": target, "meets_target": med >= target}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("model")
    ap.add_argument("--io", choices=["odirect", "io_uring"], default="odirect")
    ap.add_argument("--block-kb", type=int, default=1024)
    ap.add_argument("--queue-depth", type=int, default=4)
    ap.add_argument("--prefetch", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--huge-pages", choices=["on", "off"], default="on", help="the engine's --huge-pages")
    ap.add_argument("--fio-mem", choices=["malloc", "hugetlb"], default="malloc",
                    help="fio's buffers: malloc (fio's default, 4 KiB pages) or hugetlb (--mem=mmaphuge)")
    ap.add_argument("--gen", type=int, default=1, help="tokens per engine sample (each streams every layer)")
    ap.add_argument("--flea", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "bin", "flea"))
    ap.add_argument("--fio", default="fio")
    ap.add_argument("--target", type=float, default=0.90)
    ap.add_argument("--out", help="write every raw sample and the summary as JSON here")
    args = ap.parse_args(argv)
    if not os.path.isfile(args.model):
        print("io_vs_fio: model file not found: %s" % args.model, file=sys.stderr)
        return 2
    if not (os.path.isfile(args.flea) and os.access(args.flea, os.X_OK)):
        print("io_vs_fio: flea binary not executable: %s (pass --flea)" % args.flea, file=sys.stderr)
        return 2
    fio = shutil.which(args.fio)
    if fio is None:
        print("io_vs_fio: fio not found: %s (apt-get install fio)" % args.fio, file=sys.stderr)
        return 2
    args.fio = fio
    if args.rounds < 1 or args.block_kb < 4 or args.block_kb % 4 or args.queue_depth < 1 or args.gen < 1:
        print("io_vs_fio: --rounds, --gen, --queue-depth must be >= 1 and --block-kb a multiple of 4", file=sys.stderr)
        return 2
    t0 = time.time()
    depth = args.queue_depth if args.io == "io_uring" else 1
    want_huge = args.fio_mem == "hugetlb"
    # fio's buffer is iodepth x bs; twice that plus slack, since fio rounds and aligns it.
    with HugetlbPool(2 * depth * args.block_kb * 1024 + (4 << 20) if want_huge else 0) as pool:
        args.fio_buffer = "hugetlb" if want_huge else "malloc"
        if want_huge and not pool.ok:
            print("io_vs_fio: --fio-mem hugetlb: %s" % pool.why, file=sys.stderr)
            return 2
        try:
            rounds = paired_rounds(args)
        except (RuntimeError, ValueError, KeyError) as e:
            print("io_vs_fio: %s" % e, file=sys.stderr)
            return 2
    summary = summarize(rounds, args.target)
    doc = {"model": os.path.abspath(args.model), "io": args.io, "block_kb": args.block_kb,
           "queue_depth": args.queue_depth, "prefetch": args.prefetch, "gen": args.gen,
           "huge_pages": args.huge_pages, "fio_buffer": args.fio_buffer,
           "hugetlb_pages_added": pool.added,
           "wall_s": time.time() - t0, "rounds": rounds, "summary": summary}
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        os.replace(tmp, args.out)
    print("median engine/fio ratio %.3f over %d rounds (min %.3f, max %.3f): %s the %.0f%% target%s" %
          (summary["median_ratio"], len(rounds), summary["min_ratio"], summary["max_ratio"],
           "meets" if summary["meets_target"] else "BELOW", 100 * args.target,
           "" if summary["all_cache_dropped"] else " (page cache drop failed in some round)"))
    return 0 if summary["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
