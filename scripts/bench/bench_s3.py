#!/usr/bin/env python3
"""Bucket re-encrypt in an object store: envelopefs against a plain S3 client, in one run.

Run by scripts/bench-s3.sh, which builds the binaries and starts the Garage cluster; see
docs/BENCHMARKS.md, "Object store: bucket re-encrypt". Environment (set by bench-s3.sh):
ENVELOPEFS_BIN, S3_REWRAP_BIN, GARAGE_DIR (the cluster's directory: its env file and node
logs), BENCH_S3_RESULTS (a directory for the raw results), and the knobs below.
"""
import json
import os
import re
import statistics
import subprocess
import sys
import time



def per_size_table(path):
    """The markdown table of the TSV lines per_size_only printed (one run per block size)."""
    rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
    sizes = sorted({int(r[1]) for r in rows})
    label = lambda s: f"{s >> 20} MiB" if s >= 1 << 20 else f"{s >> 10} KiB"
    blocks = list(dict.fromkeys(r[0] for r in rows))
    out = ["| block_size | " + " | ".join(label(s) for s in sizes) + " |",
           "|---|" + "---|" * len(sizes)]
    for b in blocks:
        cell = {int(r[1]): f"{r[3]} ({r[4]})" for r in rows if r[0] == b}
        out.append(f"| {b} | " + " | ".join(cell.get(s, "-") for s in sizes) + " |")
    return "\n".join(out)


# `bench_s3.py --table TSV` (bench-s3.sh, BENCH_S3_BLOCK_SIZES) needs no cluster.
if len(sys.argv) == 3 and sys.argv[1] == "--table":
    print(per_size_table(sys.argv[2]))
    sys.exit(0)

ENV = dict(os.environ)
EFS = ENV["ENVELOPEFS_BIN"]
TOOL = ENV["S3_REWRAP_BIN"]
GDIR = ENV["GARAGE_DIR"]
OUT = ENV["BENCH_S3_RESULTS"]
QUICK = ENV.get("BENCH_QUICK") == "1"


def knob(name, default, quick):
    return int(ENV.get(name, quick if QUICK else default))


ROUNDS = knob("BENCH_S3_ROUNDS", 3, 1)
SMALL = knob("BENCH_S3_SMALL", 10000, 200)
LARGE = knob("BENCH_S3_LARGE", 100, 4)
LARGE_MB = knob("BENCH_S3_LARGE_MB", 64, 16)
SIZES_COUNT = knob("BENCH_S3_SIZES_COUNT", 100, 10)
# The engine's own parallelism (src/ops/workreq.rs JOB_THREADS): the plain client's too.
CONC = knob("BENCH_S3_CONCURRENCY", 8, 8)
SWEEP = [int(x) for x in ENV.get("BENCH_S3_SWEEP", "1,8,16,32,64").split(",") if x]


def load_env():
    for line in open(os.path.join(GDIR, "env")):
        m = re.match(r"export (\w+)='(.*)'$", line.strip())
        if m:
            ENV[m.group(1)] = m.group(2)


load_env()
S3B = ENV["GARAGE_TEST_BUCKET"]
PREFIX = "bench"
STORE = f"s3://{S3B}/{PREFIX}"
KEY = os.path.join(GDIR, "store.key")
ENV["ENVELOPEFS_STORE"] = STORE
ENV["ENVELOPEFS_KEY_FILE"] = KEY
ENV.pop("AWS_PROFILE", None)
LOG = os.path.join(GDIR, "node1", "garage.log")
RAW = open(os.path.join(OUT, "raw.tsv"), "a")


def note(*a):
    print("bench-s3:", *a, file=sys.stderr, flush=True)


def run(*args, check=True):
    p = subprocess.run(args, env=ENV, capture_output=True, text=True)
    if check and p.returncode != 0:
        sys.exit(f"bench-s3: {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p


def efs(*args):
    return run(EFS, *args)


def log_offset():
    try:
        return os.path.getsize(LOG)
    except OSError:
        return 0


# Garage logs every S3 request at INFO:
# "generic_server: ADDR (key ACCESS_KEY_ID) METHOD /bucket/key?query".
REQ = re.compile(r"generic_server: \S+ (?:\(key \S+\) )?(GET|HEAD|PUT|POST|DELETE) (\S+)")


def requests_since(off):
    """S3 requests node 1 logged since byte `off` (every request goes to node 1), by kind:
    LIST, HEAD, GET, PUT (a copy is a PUT with a copy source), DELETE, POST; those on the
    store's own records (.envelopefs/: config, keystore, lease, work requests) as meta-*."""
    counts = {}
    # How far the HEADs ran ahead of the copies (in arrival order): at most the number of
    # workers when each worker does HEAD then copy, more when the HEADs are a stage of their own.
    ahead = 0
    with open(LOG, "rb") as f:
        f.seek(off)
        for line in f.read().decode("utf-8", "replace").splitlines():
            m = REQ.search(line)
            if not m:
                continue
            method, uri = m.group(1), m.group(2)
            kind = "LIST" if method == "GET" and "list-type" in uri else method
            if "/.envelopefs/" in uri or "%2F.envelopefs%2F" in uri or "prefix=bench%2F.envelopefs" in uri:
                kind = "meta-" + kind
            counts[kind] = counts.get(kind, 0) + 1
            ahead = max(ahead, counts.get("HEAD", 0) - counts.get("PUT", 0))
    if counts.get("HEAD"):
        counts["heads_ahead_max"] = ahead
    return counts


def raw(*fields):
    RAW.write("\t".join(str(x) for x in fields) + "\n")
    RAW.flush()


def etags(bucket):
    """Key -> ETag of every object of an envelopefs bucket (through the plain lister)."""
    p = run(TOOL, "etags", S3B, f"{PREFIX}/{bucket}/")
    out = {}
    for line in p.stdout.splitlines():
        k, e = line.split("\t")
        out[k] = e
    return out


def envelopefs_reencrypt(bucket, count):
    efs("key", "rotate", f"k-{bucket}")
    off = log_offset()
    t = time.monotonic()
    p = efs("bucket", "reencrypt", "--bucket-name", bucket, "--wait-for-state", "SUCCEEDED")
    secs = time.monotonic() - t
    wr = json.loads(p.stdout)
    if wr["status"] != "SUCCEEDED" or wr["objects_rewrapped"] != count:
        sys.exit(f"bench-s3: {bucket}: {wr['status']}, {wr['objects_rewrapped']} of {count} rewrapped")
    reqs = requests_since(off)
    raw("envelopefs", bucket, count, CONC, f"{secs:.3f}", json.dumps(reqs))
    return secs, reqs


FIELD = re.compile(r"(\w+)=(\S+)")


def plain(bucket, conc, mode, count):
    off = log_offset()
    p = run(TOOL, "plain", S3B, f"{PREFIX}/{bucket}/", str(conc), mode)
    reqs = requests_since(off)
    # The untimed HEAD of every object before the clock starts is not part of the run.
    reqs["HEAD"] = reqs.get("HEAD", 0) - count
    reqs["LIST"] = reqs.get("LIST", 0) - max(1, -(-count // 1000))
    reqs.pop("heads_ahead_max", None)
    reqs = {k: v for k, v in reqs.items() if v}
    line = [l for l in p.stdout.splitlines() if l.startswith("plain ")][-1]
    f = dict(FIELD.findall(line))
    if int(f["objects"]) != count:
        sys.exit(f"bench-s3: plain {bucket}: {f['objects']} objects, not {count}")
    raw("plain-" + mode, bucket, count, conc, f["secs"], json.dumps(reqs), line)
    f["reqs"] = reqs
    return f


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    t0 = time.monotonic()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with open(KEY, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(KEY, 0o600)
    run(EFS, "init", STORE, "--key-file", KEY)
    sets = [
        ("small", SMALL, 4096),
        ("large", LARGE, LARGE_MB << 20),
        ("s4k", SIZES_COUNT, 4096),
        ("s1m", SIZES_COUNT, 1 << 20),
        ("s16m", SIZES_COUNT, 16 << 20),
        ("empty", 0, 0),
    ]
    if LARGE != SIZES_COUNT or LARGE_MB != 64:
        sets.insert(5, ("s64m", SIZES_COUNT, 64 << 20))
    for b, n, size in sets:
        efs("key", "create", "--alias", f"k-{b}")
        efs("bucket", "create", "--name", b, "--kms-key-id", f"k-{b}")
        if n:
            t = time.monotonic()
            off = log_offset()
            run(TOOL, "populate", STORE, KEY, b, str(n), str(size), "8")
            note(f"populated {b}: {n} x {size} B in {time.monotonic() - t:.1f} s "
                 f"(requests {requests_since(off)})")
    per_size = {"s4k": "4 KiB", "s1m": "1 MiB", "s16m": "16 MiB",
                "s64m" if any(s[0] == "s64m" for s in sets) else "large": f"{LARGE_MB} MiB"}
    # Multipart uploads carry no checksums: their `-N` ETags must survive every rewrap.
    before = {b: etags(b) for b in ("large", "s16m")}
    multipart = {b: sum(1 for e in v.values() if re.search(r"-\d+\"?$", e)) for b, v in before.items()}

    res = {}  # (set, who) -> list of objects/s (or seconds for empty)
    reqs = {}
    lat = {}
    for r in range(ROUNDS):
        for b, n, _ in sets:
            order = ["envelopefs", "copy", "head-copy"]
            if r % 2:
                order.reverse()
            for who in order:
                if n == 0 and who != "envelopefs":
                    continue
                if who == "envelopefs":
                    secs, rq = envelopefs_reencrypt(b, n)
                    res.setdefault((b, who), []).append(n / secs if n else secs)
                    reqs[(b, who)] = rq
                    note(f"round {r} {b} envelopefs: {secs:.2f} s ({n / secs if n else 0:.1f}/s) {rq}")
                else:
                    f = plain(b, CONC, who, n)
                    res.setdefault((b, who), []).append(float(f["objects_per_s"]))
                    reqs[(b, who)] = f["reqs"]
                    lat.setdefault((b, who), []).append(f)
                    note(f"round {r} {b} plain {who}: {f['secs']} s ({f['objects_per_s']}/s) "
                         f"p50 {f['p50_ms']} ms {f['reqs']}")
    after = {b: etags(b) for b in ("large", "s16m")}
    etag_kept = {b: sum(1 for k, e in before[b].items() if after[b].get(k) == e) for b in before}

    # What parallelism does to the stall: the plain copy at other concurrencies.
    sweep = []
    for c in SWEEP:
        b, n = ("s4k", SIZES_COUNT) if c == 1 else ("small", SMALL)
        f = plain(b, c, "copy", n)
        sweep.append((c, b, n, f))
        note(f"sweep c={c} {b}: {f['objects_per_s']}/s p50 {f['p50_ms']} ms p90 {f['p90_ms']} ms")
    # Per-object time by size, one at a time (concurrency 1): the copy moves no data.
    seq = {}
    for b, label in per_size.items():
        n = SIZES_COUNT if b != "large" else LARGE
        seq[b] = plain(b, 1, "copy", n)
        note(f"sequential {b}: p50 {seq[b]['p50_ms']} ms")

    minutes = (time.monotonic() - t0) / 60
    print(report(started, minutes, sets, res, reqs, lat, sweep, seq, per_size, multipart, etag_kept, before))


def per_size_only():
    """BENCH_S3_PER_SIZE=1: only the per-object copy time by size, one at a time (c=1), on
    this cluster (bench-s3.sh runs it once per block size of BENCH_S3_BLOCK_SIZES). Prints
    one TSV line per size: block size, object size, objects, p50 ms, p90 ms."""
    with open(KEY, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(KEY, 0o600)
    run(EFS, "init", STORE, "--key-file", KEY)
    block = ENV.get("GARAGE_BLOCK_SIZE", "") or "default"
    sets = [("s4k", 4096), ("s1m", 1 << 20), ("s16m", 16 << 20), ("s64m", 64 << 20)]
    for b, size in sets:
        efs("key", "create", "--alias", f"k-{b}")
        efs("bucket", "create", "--name", b, "--kms-key-id", f"k-{b}")
        t = time.monotonic()
        run(TOOL, "populate", STORE, KEY, b, str(SIZES_COUNT), str(size), "8")
        note(f"block {block}: populated {b}: {SIZES_COUNT} x {size} B in {time.monotonic() - t:.1f} s")
    before = etags("s64m")
    for b, size in sets:
        f = plain(b, 1, "copy", SIZES_COUNT)
        raw("per-size", block, b, SIZES_COUNT, f["p50_ms"], f["p90_ms"])
        note(f"block {block}: {b} c=1 p50 {f['p50_ms']} ms p90 {f['p90_ms']} ms")
        print(f"{block}\t{size}\t{SIZES_COUNT}\t{f['p50_ms']}\t{f['p90_ms']}", flush=True)
    after = etags("s64m")
    kept = sum(1 for k, e in before.items() if after.get(k) == e)
    note(f"block {block}: s64m ETags unchanged by the copy: {kept} of {len(before)}")


def ratio(res, b, who):
    e, p = res.get((b, "envelopefs"), []), res.get((b, who), [])
    return med([x / y for x, y in zip(e, p)]) if e and p else float("nan")


def report(started, minutes, sets, res, reqs, lat, sweep, seq, per_size, multipart, etag_kept, before):
    L = []
    load = open("/proc/loadavg").read().split()[:3]
    L.append(f"Run {started}, {ROUNDS} round(s), {minutes:.1f} min; load average at the end "
             f"{' '.join(load)}. Three-node Garage on loopback (fsync off), replication 3; "
             f"envelopefs and the plain client at concurrency {CONC}.")
    L.append("")
    L.append("| set | objects x size | envelopefs objects/s | plain copy objects/s | plain HEAD+copy objects/s "
             "| envelopefs / plain copy | envelopefs / plain HEAD+copy | requests per run: envelopefs · plain copy |")
    L.append("|---|---|---|---|---|---|---|---|")
    for b, n, size in sets:
        if n == 0:
            continue
        sz = f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
        fmt = lambda k: " ".join(f"{x:.1f}" for x in res.get((b, k), []))
        rq = lambda k: ", ".join(f"{m} {c}" for m, c in sorted(reqs.get((b, k), {}).items()))
        L.append(f"| {b} | {n:,} x {sz} | {med(res[(b, 'envelopefs')]):.1f} ({fmt('envelopefs')}) "
                 f"| {med(res[(b, 'copy')]):.1f} ({fmt('copy')}) | {med(res[(b, 'head-copy')]):.1f} ({fmt('head-copy')}) "
                 f"| **{ratio(res, b, 'copy'):.2f}** | {ratio(res, b, 'head-copy'):.2f} "
                 f"| {rq('envelopefs')} · {rq('copy')} |")
    e = res.get(("empty", "envelopefs"), [])
    L.append("")
    L.append(f"Empty bucket, whole envelopefs command (fixed cost of a job): "
             f"{med(e):.3f} s ({' '.join(f'{x:.3f}' for x in e)}); requests {reqs.get(('empty', 'envelopefs'))}.")
    L.append("")
    L.append("Per object by size (100 objects each unless said): envelopefs job time / objects at "
             f"concurrency {CONC}, and the plain copy one at a time (p50, p90):")
    L.append("")
    L.append(f"| size | envelopefs ms/object (c={CONC}, whole command) | the same, empty job's time subtracted "
             f"| plain copy c={CONC} ms/object | plain copy c=1 p50 ms | c=1 p90 ms |")
    L.append("|---|---|---|---|---|---|")
    empty = med(res.get(("empty", "envelopefs"), [0.0]))
    for b, label in per_size.items():
        f = seq[b]
        n = LARGE if b == "large" else SIZES_COUNT
        whole = n / med(res[(b, 'envelopefs')])
        L.append(f"| {label} | {1e3 * whole / n:.2f} | {1e3 * (whole - empty) / n:.2f} "
                 f"| {1e3 / med(res[(b, 'copy')]):.2f} | {f['p50_ms']} | {f['p90_ms']} |")
    L.append("")
    L.append("Multipart ETags (uploaded in 8 MiB parts without checksums) kept through every rewrap: "
             + ", ".join(f"{b}: {multipart[b]} of {len(before[b])} multipart, {etag_kept[b]} unchanged after "
                         f"{ROUNDS * 3} rewraps" for b in before) + ".")
    L.append("")
    L.append("The plain copy at other concurrencies (the client's lever on the ~40 ms stall):")
    L.append("")
    L.append("| concurrency | set | objects/s | p50 ms | p90 ms | p99 ms |")
    L.append("|---|---|---|---|---|---|")
    for c, b, n, f in sweep:
        L.append(f"| {c} | {b} ({n:,}) | {f['objects_per_s']} | {f['p50_ms']} | {f['p90_ms']} | {f['p99_ms']} |")
    for (b, who), fs in sorted(lat.items()):
        if b in ("small", "large"):
            L.append(f"\nplain {who} {b} c={CONC} latency per round (p50/p90/p99 ms): "
                     + "; ".join(f"{f['p50_ms']}/{f['p90_ms']}/{f['p99_ms']}" for f in fs))
    return "\n".join(L)


if __name__ == "__main__":
    if ENV.get("BENCH_S3_PER_SIZE") == "1":
        per_size_only()
    else:
        main()
