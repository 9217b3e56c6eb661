#!/usr/bin/env python3
"""The measuring side of scripts/bench.sh: envelopefs against gocryptfs, securefs, bindfs and
the raw backing directory, then the bucket re-encrypt (rewrap) benchmark.

Run it through scripts/bench.sh, which builds the binary, installs the peers and pins the run
(it sets ENVELOPEFS_BIN, BENCH_DIR, BENCH_RESULTS and BENCH_PINNED). Settings are environment
variables, listed in scripts/bench.sh. Results: target/bench-results/<date>/ (fs.tsv,
rewrap.tsv, rekey.tsv, load.tsv, summary.md, meta.txt, logs/).
"""

import datetime
import io
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time

QUICK = os.environ.get("BENCH_QUICK") == "1"


def env_int(name, full, quick):
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else (quick if QUICK else full)


ROUNDS = env_int("BENCH_ROUNDS", 3, 1)
PRETOUCH_MB = env_int("BENCH_PRETOUCH_MB", 3072, 256)
SEQ_MB = env_int("BENCH_SEQ_MB", 1024, 16)
FIO_MB = env_int("BENCH_FIO_MB", 256, 16)
FIO_SECS = env_int("BENCH_FIO_SECS", 10, 2)
FILES = env_int("BENCH_FILES", 10000, 200)
DIRS = env_int("BENCH_DIRS", 100, 10)
UNTAR_FILES = env_int("BENCH_UNTAR_FILES", 5000, 200)
RW_SMALL = env_int("BENCH_REWRAP_SMALL", 10000, 200)
RW_MEDIUM = env_int("BENCH_REWRAP_MEDIUM", 1000, 20)
RW_LARGE = env_int("BENCH_REWRAP_LARGE", 100, 3)
RW_LARGE_MB = env_int("BENCH_REWRAP_LARGE_MB", 64, 64)
RW_ROUNDS = env_int("BENCH_REWRAP_ROUNDS", ROUNDS, 1)
REKEY_ROUNDS = env_int("BENCH_REKEY_ROUNDS", 1, 1)
KEEP = os.environ.get("BENCH_KEEP") == "1"
DROP = os.environ.get("BENCH_DROP_CACHES", "1") == "1"

ALL_SYSTEMS = ["envelopefs", "gocryptfs", "securefs", "bindfs-bw", "raw"]
SYSTEMS = [s for s in os.environ.get("BENCH_SYSTEMS", ",".join(ALL_SYSTEMS)).split(",") if s]
PARTS = set(os.environ.get("BENCH_PARTS", "fs,rewrap").split(","))
PEERS = [s for s in SYSTEMS if s != "envelopefs"]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("ENVELOPEFS_BIN") or os.path.join(REPO, "target/release/envelopefs")
# BENCH_SYSTEMS may add "envelopefs-base": another envelopefs binary (BENCH_BASE_BIN, say the
# release binary of the previous commit), measured in the same run on the same workloads, so
# a change is compared with what it changed (the "env / envelopefs-base" column).
BASE_BIN = os.environ.get("BENCH_BASE_BIN", "")
ENVELOPEFS_KINDS = ("envelopefs", "envelopefs-base")


def bin_of(system):
    """The binary of an envelopefs system."""
    if system == "envelopefs-base":
        if not BASE_BIN:
            raise ValueError("envelopefs-base needs BENCH_BASE_BIN (the binary to compare with)")
        return BASE_BIN
    return BIN
DATA = os.path.abspath(os.environ.get("BENCH_DIR") or os.path.join(REPO, "target/bench-data"))
RESULTS_ROOT = os.path.abspath(os.environ.get("BENCH_RESULTS") or os.path.join(REPO, "target/bench-results"))
STAMP = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
OUT = os.path.join(RESULTS_ROOT, STAMP)
LOGS = os.path.join(OUT, "logs")
RUN = os.path.join(DATA, "run")  # everything of this run; removed at the start and the end
PRETOUCH_FILE = "/dev/shm/envelopefs-bench-pretouch"


def mib(n):
    return f"{n // 1024} GiB" if n >= 1024 and n % 1024 == 0 else f"{n} MiB"


def count(n):
    return f"{n:,}"


# (key, label, unit, higher is better, is a target row)
METRICS = [
    ("seq_write", f"seq write {mib(SEQ_MB)} + fsync", "MiB/s", True, True),
    ("seq_read_cold", "seq read cold (drop_caches)", "MiB/s", True, True),
    ("seq_read_warm", "seq read warm", "MiB/s", True, True),
    ("seq_read_warm_daemon", "seq read warm, mount's page cache dropped", "MiB/s", True, False),
    ("rand_read", f"rand read 4K ({mib(FIO_MB)}, psync, 1 job)", "IOPS", True, True),
    ("rand_write", f"rand write 4K ({mib(FIO_MB)}, psync, 1 job)", "IOPS", True, True),
    ("rand_write_fsync", "rand write 4K, counting the final fsync", "IOPS", True, False),
    ("create", f"create {count(FILES)} x 4 KiB in {DIRS} dirs", "files/s", True, True),
    ("ls_warm", "ls -lR warm", "s", False, True),
    ("ls_cold", "ls -lR cold (drop_caches)", "s", False, True),
    ("rm", f"rm -rf {count(FILES)} files", "s", False, True),
    ("untar", f"untar {count(UNTAR_FILES)} small files", "s", False, True),
    ("rm_untar", "rm -rf the untarred tree", "s", False, False),
]
SEQ_TARGETS = {"seq_write", "seq_read_cold", "seq_read_warm"}


# ---------------------------------------------------------------- helpers


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    """Runs cmd; raises with its output on failure."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    p = subprocess.run(cmd, **kw)
    if p.returncode != 0:
        out = (p.stdout or b"")[-2000:] + (p.stderr or b"")[-2000:]
        raise RuntimeError(f"{' '.join(map(str, cmd))}: exit {p.returncode}\n{out.decode(errors='replace')}")
    return p


def timed(cmd, **kw):
    kw.setdefault("stdout", subprocess.DEVNULL)
    t0 = time.monotonic()
    run(cmd, **kw)
    return time.monotonic() - t0


def sync():
    os.sync()


def drop_caches():
    os.sync()
    if DROP:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")


def pretouch():
    """perf-baseline note 2: guest memory freed for more than ~2 s goes back to the host and is
    slow to touch again. Write and free PRETOUCH_MB of tmpfs right before a sequential step."""
    if PRETOUCH_MB <= 0:
        return
    run(["dd", "if=/dev/zero", f"of={PRETOUCH_FILE}", "bs=1M", f"count={PRETOUCH_MB}"])
    os.unlink(PRETOUCH_FILE)


def fadvise_dontneed(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def fsync_path(path):
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cpu_times():
    """Per-CPU (busy, total) jiffies from /proc/stat."""
    res = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                v = list(map(int, parts[1:9]))
                idle = v[3] + v[4]
                res[parts[0]] = (sum(v) - idle, sum(v))
    return res


def other_load(before, after):
    """Busy fraction of the vCPUs we are not pinned to (other load on the machine)."""
    mine = os.sched_getaffinity(0)
    busy = total = 0
    for cpu, (b1, t1) in after.items():
        if int(cpu[3:]) in mine and len(mine) < len(after):
            continue
        b0, t0 = before.get(cpu, (b1, t1))
        busy += b1 - b0
        total += t1 - t0
    return busy / total if total else 0.0


def mounted(mnt):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if line.split(" ")[4] == mnt:
                return True
    return False


def rm_tree(path):
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=False)


def write_file(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)


def fmt(v, unit=""):
    if v is None:
        return "n/a"
    if unit == "s":
        return f"{v:.3f}" if v < 0.1 else f"{v:.2f}"
    a = abs(v)
    if a >= 100000:
        return f"{v / 1000:.0f}k"
    if a >= 10000:
        return f"{v / 1000:.1f}k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------- mounts


class Mounts:
    """Every mount this run makes, so that all of them are unmounted whatever happens."""

    def __init__(self):
        self.active = {}  # mountpoint -> (kind, Popen or None)

    def _wait_mounted(self, mnt, proc, logpath):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if mounted(mnt):
                return
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.02)
        tail = open(logpath, errors="replace").read()[-2000:] if os.path.exists(logpath) else ""
        raise RuntimeError(f"mount at {mnt} did not come up\n{tail}")

    def mount(self, system, backing, mnt, secret):
        os.makedirs(mnt, exist_ok=True)
        logpath = os.path.join(LOGS, f"{os.path.basename(os.path.dirname(mnt))}-{system}.log")
        logf = open(logpath, "ab")
        proc = None
        if system in ENVELOPEFS_KINDS:
            self.active[mnt] = (system, None)
            run([bin_of(system), "mount", backing, mnt, "--key-file", secret],
                stdout=logf, stderr=logf)
        elif system == "gocryptfs":
            proc = subprocess.Popen(
                ["gocryptfs", "-fg", "-q", "-nosyslog", "-passfile", secret, backing, mnt],
                stdout=logf, stderr=logf)
        elif system == "securefs":
            proc = subprocess.Popen(["securefs", "mount", "--keyfile", secret, backing, mnt],
                                    stdout=logf, stderr=logf)
        elif system == "bindfs-bw":
            proc = subprocess.Popen(["bindfs", "-f", "-o", "big_writes", backing, mnt],
                                    stdout=logf, stderr=logf)
        else:
            raise ValueError(system)
        if proc is not None:
            self.active[mnt] = (system, proc)
        self._wait_mounted(mnt, proc, logpath)

    def daemon_affinity(self, mnt):
        """Cpus_allowed_list of the processes whose command line names mnt (the daemon)."""
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
                if mnt.encode() not in cmd:
                    continue
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("Cpus_allowed_list"):
                        found.append(f"{pid}:{line.split()[1]}")
            except OSError:
                pass
        return ",".join(found) or "?"

    def unmount(self, mnt):
        kind, proc = self.active.get(mnt, (None, None))
        if mounted(mnt):
            if kind in ENVELOPEFS_KINDS:
                run([bin_of(kind), "unmount", mnt])
            else:
                for attempt in range(50):
                    p = subprocess.run(["umount", mnt], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE)
                    if p.returncode == 0 or not mounted(mnt):
                        break
                    time.sleep(0.2)
                else:
                    raise RuntimeError(f"cannot unmount {mnt}: {p.stderr.decode()}")
        if proc is not None:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait(timeout=10)
        self.active.pop(mnt, None)

    def cleanup(self):
        for mnt in sorted(self.active, reverse=True):
            try:
                self.unmount(mnt)
            except Exception as e:  # noqa: BLE001 - best effort, then lazy
                log(f"cleanup: {e}")
                subprocess.run(["umount", "-l", mnt], stderr=subprocess.DEVNULL)
                self.active.pop(mnt, None)


MOUNTS = Mounts()


def make_secret(dirpath, kind):
    """A key file for envelopefs/securefs (32 random bytes), a password file for gocryptfs."""
    path = os.path.join(dirpath, "secret")
    with open(path, "wb") as f:
        if kind == "gocryptfs":
            f.write(os.urandom(16).hex().encode() + b"\n")
        else:
            f.write(os.urandom(32))
    os.chmod(path, 0o600)
    return path


def setup_system(system, base):
    """Creates a fresh filesystem of `system` under base, mounts it; returns the work dir."""
    os.makedirs(base)
    if system == "raw":
        work = os.path.join(base, "plain", "bench")
        os.makedirs(work)
        return work
    secret = make_secret(base, system)
    backing = os.path.join(base, "backing")
    mnt = os.path.join(base, "mnt")
    os.makedirs(mnt)
    if system in ENVELOPEFS_KINDS:
        run([bin_of(system), "init", backing, "--key-file", secret])
    elif system == "gocryptfs":
        os.makedirs(backing)
        run(["gocryptfs", "-init", "-q", "-passfile", secret, backing])
    elif system == "securefs":
        os.makedirs(backing)
        run(["securefs", "create", "--format", "4", "--keyfile", secret, backing])
    elif system == "bindfs-bw":
        os.makedirs(backing)
    MOUNTS.mount(system, backing, mnt, secret)
    work = os.path.join(mnt, "bench")  # a bucket on envelopefs
    os.mkdir(work)
    return work


def teardown_system(system, base):
    mnt = os.path.join(base, "mnt")
    if system != "raw":
        MOUNTS.unmount(mnt)
    rm_tree(base)


# ---------------------------------------------------------------- the untar tarball


def build_tarball(path, nfiles):
    """nfiles files of 64 B to 16 KiB (log-uniform sizes, random bytes) in 50 directories."""
    rng = random.Random(5000)
    ndirs = max(1, min(50, nfiles // 20))
    blob = os.urandom(16384)
    total = 0
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for d in range(ndirs):
            ti = tarfile.TarInfo(f"tree/d{d:02d}")
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1700000000
            tar.addfile(ti)
        for i in range(nfiles):
            size = int(round(64 * (256 ** rng.random())))
            start = rng.randrange(0, 16384 - size + 1)
            ti = tarfile.TarInfo(f"tree/d{i % ndirs:02d}/f{i:05d}.dat")
            ti.size, ti.mode, ti.mtime = size, 0o644, 1700000000
            tar.addfile(ti, io.BytesIO(blob[start:start + size]))
            total += size
    return total


# ---------------------------------------------------------------- filesystem workloads


def fio(path, rw, invalidate):
    p = run(["fio", "--name=bench", f"--filename={path}", f"--size={FIO_MB}M", "--bs=4k",
             f"--rw={rw}", "--ioengine=psync", "--numjobs=1", "--time_based",
             f"--runtime={FIO_SECS}", f"--invalidate={invalidate}", "--output-format=json"])
    job = json.loads(p.stdout)["jobs"][0]
    side = job["read" if rw == "randread" else "write"]
    return side["iops"], side["total_ios"], side["runtime"] / 1000.0


def fs_round(system, work, tarball, res):
    fuse = system != "raw"
    buf4k = os.urandom(4096)

    # Small files first: on this ext4 (no journal) inodes freed in the last 60 s are skipped one
    # by one when allocating, so creates right after a mass delete are slow. Doing the small
    # files first leaves the sequential and fio steps (~40 s) between one system's rm -rf and
    # the next system's creates; untar runs before the rm -rf of the 10,000 files.
    cdir = os.path.join(work, "create")
    os.mkdir(cdir)
    per = FILES // DIRS
    sync()
    t0 = time.monotonic()
    for d in range(DIRS):
        dd = os.path.join(cdir, f"d{d:03d}")
        os.mkdir(dd)
        for i in range(per):
            write_file(os.path.join(dd, f"f{i:04d}"), buf4k)
    res["create"] = per * DIRS / (time.monotonic() - t0)
    res["ls_warm"] = timed(["ls", "-lR", cdir])
    drop_caches()
    res["ls_cold"] = timed(["ls", "-lR", cdir])
    udir = os.path.join(work, "untar")
    os.mkdir(udir)
    sync()
    res["untar"] = timed(["tar", "-xf", tarball, "-C", udir])
    sync()
    res["rm"] = timed(["rm", "-rf", cdir])
    sync()
    res["rm_untar"] = timed(["rm", "-rf", udir])

    # Sequential.
    seq = os.path.join(work, "seq.dat")
    sync()
    pretouch()
    t = timed(["dd", "if=/dev/zero", f"of={seq}", "bs=1M", f"count={SEQ_MB}", "conv=fsync"],
              stderr=subprocess.DEVNULL)
    res["seq_write"] = SEQ_MB / t
    drop_caches()
    pretouch()
    res["seq_read_cold"] = SEQ_MB / timed(["dd", f"if={seq}", "of=/dev/null", "bs=1M"])
    pretouch()
    res["seq_read_warm"] = SEQ_MB / timed(["dd", f"if={seq}", "of=/dev/null", "bs=1M"])
    if fuse:
        # Backing file still warm, the mount's own page cache of the file dropped: every byte
        # goes through the daemon (what "warm" means for a mount without FOPEN_KEEP_CACHE).
        fadvise_dontneed(seq)
        pretouch()
        res["seq_read_warm_daemon"] = SEQ_MB / timed(["dd", f"if={seq}", "of=/dev/null", "bs=1M"])
    os.unlink(seq)

    # Random 4 KiB: on FUSE mounts invalidate=1 makes fio drop the mount's page cache of the
    # file at the start and after each pass over its random map, so reads reach the daemon
    # (the backing file stays in RAM); on raw they are page-cache hits (the ceiling).
    rf = os.path.join(work, "fio.dat")
    run(["dd", "if=/dev/zero", f"of={rf}", "bs=1M", f"count={FIO_MB}", "conv=fsync"])
    sync()
    inv = 1 if fuse else 0
    res["rand_read"] = fio(rf, "randread", inv)[0]
    sync()
    iops, ios, secs = fio(rf, "randwrite", inv)
    t0 = time.monotonic()
    fsync_path(rf)
    res["rand_write"] = iops
    res["rand_write_fsync"] = ios / (secs + time.monotonic() - t0)
    os.unlink(rf)
    sync()


def run_fs(tarball, tsv, load_tsv, meta):
    n = len(SYSTEMS)
    results = {s: [] for s in SYSTEMS}  # system -> [dict per round]
    for r in range(ROUNDS):
        order = SYSTEMS[r % n:] + SYSTEMS[:r % n]
        for pos, system in enumerate(order):
            base = os.path.join(RUN, f"r{r + 1}-{system}")
            log(f"round {r + 1}/{ROUNDS}: {system}")
            c0, t0 = cpu_times(), time.monotonic()
            work = setup_system(system, base)
            if system != "raw" and r == 0:
                meta.append(f"daemon affinity {system}: "
                            f"{MOUNTS.daemon_affinity(os.path.join(base, 'mnt'))}")
            res = {}
            try:
                fs_round(system, work, tarball, res)
            finally:
                teardown_system(system, base)
            load = other_load(c0, cpu_times())
            elapsed = time.monotonic() - t0
            results[system].append(res)
            for key, _label, unit, _hb, _t in METRICS:
                if key in res:
                    tsv.write(f"{r + 1}\t{pos + 1}\t{system}\t{key}\t{res[key]:.6g}\t{unit}\n")
            load_tsv.write(f"{r + 1}\t{system}\t{elapsed:.1f}\t{load:.3f}\n")
            tsv.flush()
            load_tsv.flush()
            log(f"  {system}: " + ", ".join(f"{k}={fmt(v)}" for k, v in res.items())
                + f" ({elapsed:.0f} s, other load {load:.2f})")
    return results


def ratio(env, peer, higher_better):
    if env is None or peer is None or env == 0 or peer == 0:
        return None
    return env / peer if higher_better else peer / env


def fs_tables(results, loads):
    lines = []
    cols = SYSTEMS
    ratio_peers = [p for p in PEERS]
    have_both = "gocryptfs" in SYSTEMS and "securefs" in SYSTEMS and "envelopefs" in SYSTEMS
    head = ["workload", "unit"] + cols
    if "envelopefs" in SYSTEMS:
        head += [f"env / {p}" for p in ratio_peers]
    if have_both:
        head += ["env / faster of gocryptfs, securefs", "target", "met"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    verdicts = {}
    for key, label, unit, hb, is_target in METRICS:
        row = [label, unit]
        med = {s: median([rr.get(key) for rr in results[s]]) for s in cols}
        row += [fmt(med[s], unit) for s in cols]
        if "envelopefs" in SYSTEMS:
            env_r = [rr.get(key) for rr in results["envelopefs"]]
            for p in ratio_peers:
                per = [ratio(e, rr.get(key), hb) for e, rr in zip(env_r, results[p])]
                row.append(fmt(median(per)))
            if have_both:
                best = []
                for e, g, s in zip(env_r, results["gocryptfs"], results["securefs"]):
                    gv, sv = g.get(key), s.get(key)
                    if gv is None or sv is None:
                        best.append(None)
                        continue
                    b = max(gv, sv) if hb else min(gv, sv)
                    best.append(ratio(e, b, hb))
                m = median(best)
                target = 1.25 if key in SEQ_TARGETS else 1.0
                row.append(f"**{fmt(m)}**")
                if is_target:
                    row.append(f"≥ {target:g}")
                    ok = m is not None and m >= target
                    row.append("yes" if ok else "**no**")
                    verdicts[key] = (m, target, ok)
                else:
                    row += ["(info)", ""]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("Ratios are medians over rounds of the per-round ratio, envelopefs to the peer; "
                 "higher = envelopefs better (durations inverted).")
    lines.append("")
    # Every round.
    lines.append("Every round (values in round order):")
    lines.append("")
    head = ["workload"] + cols
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for key, label, unit, _hb, _t in METRICS:
        row = [f"{label} ({unit})"]
        for s in cols:
            row.append(" · ".join(fmt(rr.get(key), unit) for rr in results[s]))
        lines.append("| " + " | ".join(row) + " |")
    row = ["seconds per system (other load, cores)"]
    for s in cols:
        row.append(" · ".join(f"{e:.0f} ({ld:.2f})" for e, ld in loads.get(s, [])))
    lines.append("| " + " | ".join(row) + " |")
    return lines, verdicts


# ---------------------------------------------------------------- rewrap


def env_cli(store, secret, *args, **kw):
    return run([BIN, "--store", store, "--key-file", secret, *args], **kw)


def poll_wr(mnt, wr_id, t0, deadline=1200):
    path = os.path.join(mnt, ".envelopefs", "work-requests", wr_id)
    while True:
        with open(path) as f:
            wr = json.loads(f.read())
        st = wr.get("status")
        if st in ("SUCCEEDED", "FAILED", "CANCELED"):
            return time.monotonic() - t0, wr
        el = time.monotonic() - t0
        if el > deadline:
            raise RuntimeError(f"work request {wr_id} still {st} after {el:.0f} s")
        time.sleep(min(0.01, max(0.001, el / 50)))


def populate(root, classes, layout):
    """Writes the objects: layout(name) -> directory for a class."""
    for name, n, size in classes:
        d = layout(name)
        os.makedirs(d, exist_ok=True)
        data = os.urandom(size)
        t0 = time.monotonic()
        for i in range(n):
            write_file(os.path.join(d, f"o{i:05d}"), data)
        log(f"  wrote {n} x {size} B into {os.path.relpath(d, root)} "
            f"({time.monotonic() - t0:.1f} s)")


def run_rewrap(meta):
    """Bucket re-encrypt, offline and through the mount, of buckets of small, medium and large
    objects; then the gocryptfs way of changing the data key: copy into a fresh filesystem."""
    large = RW_LARGE_MB * 1024 * 1024
    classes = [("small", RW_SMALL, 4096), ("medium", RW_MEDIUM, 1 << 20), ("large", RW_LARGE, large)]
    buckets = classes + [("small100", RW_LARGE, 4096), ("empty", 0, 0)]
    base = os.path.join(RUN, "rewrap")
    os.makedirs(base)
    secret = make_secret(base, "envelopefs")
    store = os.path.join(base, "store")
    mnt = os.path.join(base, "mnt")
    os.makedirs(mnt)
    run([BIN, "init", store, "--key-file", secret])
    # One key per bucket, so that each bucket can be rotated and re-encrypted on its own.
    for b, _n, _s in buckets:
        env_cli(store, secret, "key", "create", "--alias", f"k-{b}")
        env_cli(store, secret, "bucket", "create", "--name", b, "--kms-key-id", f"k-{b}")
    log("rewrap: writing the objects through a mount")
    MOUNTS.mount("envelopefs", store, mnt, secret)
    populate(mnt, [c for c in buckets if c[1] > 0], lambda b: os.path.join(mnt, b))
    sync()
    MOUNTS.unmount(mnt)
    sync()

    rows = []  # (round, mode, bucket, objects, size, seconds, rewrapped)
    tsv = open(os.path.join(OUT, "rewrap.tsv"), "w")
    tsv.write("round\tmode\tbucket\tobjects\tobject_bytes\tseconds\tobjects_per_s\trewrapped\tskipped\n")

    def record(r, mode, b, n, size, secs, wr):
        rew = wr.get("objects_rewrapped")
        if wr.get("status") != "SUCCEEDED" or rew != n:
            raise RuntimeError(f"re-encrypt of {b} ({mode}): {json.dumps(wr)[:500]}")
        rows.append((r, mode, b, n, size, secs))
        ops = n / secs if secs else 0
        tsv.write(f"{r}\t{mode}\t{b}\t{n}\t{size}\t{secs:.6f}\t{ops:.1f}\t{rew}\t{wr.get('objects_skipped')}\n")
        tsv.flush()
        log(f"  {mode:13s} {b:9s} {n:6d} objects: {secs * 1000:8.1f} ms  {ops:9.0f} objects/s")

    def offline(r, mode):
        """Rotates each bucket's key and re-encrypts the bucket with the CLI, store not mounted.
        offline-cold: caches dropped before each bucket. warm-up: the same, untimed, to load
        the caches that offline-warm (and then the mount) finds warm: no drop after it."""
        for b, n, size in buckets:
            env_cli(store, secret, "key", "rotate", f"k-{b}")
            if mode == "offline-cold":
                drop_caches()
            else:
                sync()
            t0 = time.monotonic()
            p = env_cli(store, secret, "bucket", "reencrypt", "--bucket-name", b,
                        "--wait-for-state", "SUCCEEDED", "--wait-interval-seconds", "1")
            secs = time.monotonic() - t0
            wr = json.loads(p.stdout)
            if mode == "warm-up":
                if wr.get("status") != "SUCCEEDED":
                    raise RuntimeError(f"re-encrypt of {b} (warm-up): {json.dumps(wr)[:500]}")
            else:
                record(r, mode, b, n, size, secs, wr)

    for r in range(1, RW_ROUNDS + 1):
        log(f"rewrap round {r}/{RW_ROUNDS}")
        offline(r, "offline-cold")
        offline(r, "warm-up")
        offline(r, "offline-warm")
        # Through the mount: the one-line way, timed until the work request reads SUCCEEDED.
        MOUNTS.mount("envelopefs", store, mnt, secret)
        try:
            for b, n, size in buckets:
                env_cli(store, secret, "key", "rotate", f"k-{b}")  # carried out by the mount
                sync()
                ctl = os.path.join(mnt, ".envelopefs", "buckets", b, "reencrypt")
                t0 = time.monotonic()
                # The new work request's id is in the result read back on the same descriptor.
                # (Reading the file anew gives "the latest" request, but requests accepted in
                # the same second are ordered by their random id, so it can be an older one.)
                fd = os.open(ctl, os.O_RDWR)
                try:
                    os.write(fd, b"latest\n")
                    reply = json.loads(os.pread(fd, 1 << 20, 0))
                finally:
                    os.close(fd)
                wr_id = reply["result"]["id"]
                secs, wr = poll_wr(mnt, wr_id, t0)
                with open(ctl) as f:
                    listed = f.read().strip()
                if listed != wr_id:
                    log(f"  note: {ctl} reads {listed}, not the request just made ({wr_id})")
                    meta.append(f"odd: the reencrypt file of bucket {b} read back an older work "
                                f"request ({listed}) than the one just accepted ({wr_id})")
                record(r, "mounted", b, n, size, secs, wr)
        finally:
            MOUNTS.unmount(mnt)

    # gocryptfs: no re-key. Changing the key that protects the data = copying everything into
    # a freshly created gocryptfs filesystem (cp -a from one mount to the other, then sync).
    rekey = []
    if "gocryptfs" in SYSTEMS:
        gbase = os.path.join(base, "gocryptfs")
        os.makedirs(gbase)
        gsecret = make_secret(gbase, "gocryptfs")
        src_c, src_m = os.path.join(gbase, "src-cipher"), os.path.join(gbase, "src-mnt")
        os.makedirs(src_c)
        os.makedirs(src_m)
        run(["gocryptfs", "-init", "-q", "-passfile", gsecret, src_c])
        MOUNTS.mount("gocryptfs", src_c, src_m, gsecret)
        log("rekey: writing the same objects into a gocryptfs filesystem")
        populate(src_m, classes, lambda c: os.path.join(src_m, c))
        sync()
        rk = open(os.path.join(OUT, "rekey.tsv"), "w")
        rk.write("round\tclass\tobjects\tbytes\tseconds\tobjects_per_s\tMiB_per_s\n")
        try:
            for r in range(1, REKEY_ROUNDS + 1):
                for c, n, size in classes:
                    dst_c = os.path.join(gbase, f"dst-{r}-{c}-cipher")
                    dst_m = os.path.join(gbase, f"dst-{r}-{c}-mnt")
                    os.makedirs(dst_c)
                    os.makedirs(dst_m)
                    run(["gocryptfs", "-init", "-q", "-passfile", gsecret, dst_c])
                    MOUNTS.mount("gocryptfs", dst_c, dst_m, gsecret)
                    try:
                        sync()
                        t0 = time.monotonic()
                        run(["cp", "-a", os.path.join(src_m, c), dst_m + "/"])
                        sync()  # durable, like a SUCCEEDED re-encrypt
                        secs = time.monotonic() - t0
                    finally:
                        MOUNTS.unmount(dst_m)
                    rm_tree(dst_c)
                    rm_tree(dst_m)
                    rekey.append((r, c, n, size, secs))
                    rk.write(f"{r}\t{c}\t{n}\t{n * size}\t{secs:.3f}\t{n / secs:.1f}\t"
                             f"{n * size / secs / 1048576:.1f}\n")
                    rk.flush()
                    log(f"  gocryptfs copy {c:6s} {n:6d} objects: {secs:7.2f} s "
                        f"({n / secs:.0f} objects/s, {n * size / secs / 1048576:.0f} MiB/s)")
        finally:
            MOUNTS.unmount(src_m)
        rk.close()
    tsv.close()
    return rewrap_tables(rows, rekey, classes, buckets)


def rewrap_tables(rows, rekey, classes, buckets):
    lines = []
    modes = ["offline-cold", "offline-warm", "mounted"]
    med = {}
    for mode in modes:
        for b, n, _s in buckets:
            med[(mode, b)] = median([s for (_r, m, bb, _n, _sz, s) in rows if m == mode and bb == b])
    size_label = {4096: "4 KiB", 1 << 20: "1 MiB", RW_LARGE_MB << 20: f"{RW_LARGE_MB} MiB", 0: "-"}
    head = ["bucket", "objects x size"]
    for mode in modes:
        head += [f"{mode}: s", f"{mode}: objects/s", f"{mode}: µs/object"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for b, n, size in buckets:
        row = [b, f"{count(n)} x {size_label.get(size, size)}"]
        for mode in modes:
            s = med[(mode, b)]
            row += [fmt(s, "s"), fmt(n / s) if n and s else "-",
                    fmt(s / n * 1e6) if n and s else "-"]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(f"Medians of {RW_ROUNDS} round(s). Offline = the CLI with the store not mounted, "
                 "wall time of the whole command (process start, store open, run, syncfs); "
                 "cold = after drop_caches; warm = right after an untimed re-encrypt of every bucket "
                 "(inodes, xattr blocks and object preambles cached). Mounted = from the write of "
                 "`latest` to the bucket's reencrypt control file until the work request reads "
                 "SUCCEEDED (polled every 1-10 ms), caches warm. Each bucket has its own key, rotated "
                 "before each run; every object is rewrapped every time.")
    lines.append("")
    # Per object, large vs small.
    lines.append(f"Time per object, {RW_LARGE_MB} MiB bucket against 4 KiB bucket (target ≤ 1.2):")
    lines.append("")
    lines.append("| comparison | " + " | ".join(modes) + " |")
    lines.append("|---|" + "---|" * len(modes))

    def per_obj(mode, b, n, minus_empty=False):
        s = med[(mode, b)]
        if s is None or not n:
            return None
        if minus_empty:
            s = s - (med[(mode, "empty")] or 0)
        return s / n

    comps = [
        (f"{count(RW_LARGE)} x {RW_LARGE_MB} MiB vs {count(RW_SMALL)} x 4 KiB, whole command",
         "large", RW_LARGE, "small", RW_SMALL, False),
        (f"{count(RW_LARGE)} x {RW_LARGE_MB} MiB vs {count(RW_LARGE)} x 4 KiB (same count)",
         "large", RW_LARGE, "small100", RW_LARGE, False),
        (f"{count(RW_LARGE)} x {RW_LARGE_MB} MiB vs {count(RW_SMALL)} x 4 KiB, fixed cost "
         "(empty bucket) subtracted", "large", RW_LARGE, "small", RW_SMALL, True),
    ]
    verdict = {}
    for label, bl, nl, bs, ns, minus in comps:
        row = [label]
        for mode in modes:
            a, b = per_obj(mode, bl, nl, minus), per_obj(mode, bs, ns, minus)
            v = a / b if a and b and a > 0 and b > 0 else None
            row.append(fmt(v))
            verdict[(label, mode)] = v
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if rekey:
        lines.append("The gocryptfs way to change the data key: `cp -a` into a fresh gocryptfs "
                     "filesystem, then `sync` (medians):")
        lines.append("")
        lines.append("| data | gocryptfs copy: s | objects/s | MiB/s | envelopefs mounted re-encrypt: s "
                     "| envelopefs offline-warm: s | envelopefs faster by (mounted) |")
        lines.append("|---|---|---|---|---|---|---|")
        for c, n, size in classes:
            s = median([x[4] for x in rekey if x[1] == c])
            em, eo = med[("mounted", c)], med[("offline-warm", c)]
            lines.append(f"| {count(n)} x {size_label.get(size, size)} | {fmt(s, 's')} | {fmt(n / s)} | "
                         f"{fmt(n * size / s / 1048576)} | {fmt(em, 's')} | {fmt(eo, 's')} | "
                         f"{fmt(s / em) if em else 'n/a'}x |")
        lines.append("")
    return lines, med


# ---------------------------------------------------------------- main


def machine_facts():
    facts = []
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    facts.append(f"CPU: {model}, nproc {os.cpu_count()}, affinity of this run "
                 f"{sorted(os.sched_getaffinity(0))} ({os.environ.get('BENCH_PINNED', '?')})")
    facts.append(f"kernel: {platform.release()}")
    st = os.statvfs(DATA)
    dev = mnt_opts = "?"
    best = ""
    with open("/proc/self/mounts") as f:
        for line in f:
            p = line.split()
            if DATA.startswith(p[1].rstrip("/") + "/") and len(p[1]) >= len(best):
                best, dev, mnt_opts = p[1], p[0], f"{p[2]} {p[3]}"
    facts.append(f"backing: {DATA} on {dev} mounted at {best}: {mnt_opts}; "
                 f"{st.f_bavail * st.f_frsize / 2**30:.0f} GiB free")
    name = os.path.basename(dev)
    jt = f"/sys/fs/ext4/{name}/journal_task"
    if os.path.exists(jt):
        task = open(jt).read().strip()
        jbd = [d for d in os.listdir("/proc/fs/jbd2") if d.startswith(name + "-")] \
            if os.path.isdir("/proc/fs/jbd2") else []
        journal = "no journal" if task == "<none>" and not jbd else "journal"
        facts.append(f"ext4 {journal}: /sys/fs/ext4/{name}/journal_task {task}, "
                     f"/proc/fs/jbd2 entries for {name}: {jbd or 'none'}")
    sched = f"/sys/block/{name}/queue/scheduler"
    if os.path.exists(sched):
        facts.append(f"{name} I/O scheduler: {open(sched).read().strip()}")
    pkgs = []
    for pkg in ["gocryptfs", "securefs", "bindfs", "fio", "fuse3", "libfuse2"]:
        p = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        pkgs.append(f"{pkg} {p.stdout.decode().strip() or '?'}")
    facts.append("packages: " + ", ".join(pkgs))
    p = subprocess.run([BIN, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode().strip()
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode().split()
    dirty = [d for d in dirty if "/" in d or "." in d]
    facts.append(f"{p.stdout.decode(errors='replace').strip()} ({BIN}, git {rev or '?'}"
                 + (f", work tree changes in {' '.join(dirty)}" if dirty else "") + ")")
    return facts


def main():
    os.makedirs(LOGS, exist_ok=True)
    if os.path.exists(RUN):
        for line in open("/proc/self/mounts"):
            if line.split()[1].startswith(RUN + "/"):
                raise SystemExit(f"{line.split()[1]} is still mounted; unmount it first")
        rm_tree(RUN)
    os.makedirs(RUN)
    # Spread each system's fresh backing directory over the ext4 block groups (Orlov top dir),
    # so one system's deleted inodes do not sit in the next system's block group.
    subprocess.run(["chattr", "+T", RUN], stderr=subprocess.DEVNULL)
    start = time.monotonic()
    meta = machine_facts()
    meta.append(f"settings: rounds {ROUNDS}, seq {SEQ_MB} MiB, fio {FIO_MB} MiB x {FIO_SECS} s, "
                f"files {FILES} in {DIRS} dirs, untar {UNTAR_FILES}, pretouch {PRETOUCH_MB} MiB, "
                f"rewrap {RW_SMALL} x 4 KiB / {RW_MEDIUM} x 1 MiB / {RW_LARGE} x {RW_LARGE_MB} MiB, "
                f"rewrap rounds {RW_ROUNDS}, gocryptfs copy rounds {REKEY_ROUNDS}, quick {QUICK}")
    for line in meta:
        log(line)
    out = []
    verdicts = {}
    try:
        if "fs" in PARTS:
            tarball = os.path.join(RUN, "untar.tar")
            total = build_tarball(tarball, UNTAR_FILES)
            meta.append(f"untar tarball: {UNTAR_FILES} files, {total / 2**20:.1f} MiB of data")
            with open(os.path.join(OUT, "fs.tsv"), "w") as tsv, \
                    open(os.path.join(OUT, "load.tsv"), "w") as load_tsv:
                tsv.write("round\torder\tsystem\tmetric\tvalue\tunit\n")
                load_tsv.write("round\tsystem\tseconds\tother_load_cores\n")
                results = run_fs(tarball, tsv, load_tsv, meta)
            loads = {}
            for line in open(os.path.join(OUT, "load.tsv")).read().splitlines()[1:]:
                r, s, e, ld = line.split("\t")
                loads.setdefault(s, []).append((float(e), float(ld)))
            lines, verdicts = fs_tables(results, loads)
            out += ["## Filesystem workloads (medians)", ""] + lines + [""]
        if "rewrap" in PARTS and "envelopefs" in SYSTEMS:
            lines, _ = run_rewrap(meta)
            out += ["## Bucket re-encrypt (rewrap)", ""] + lines
    finally:
        MOUNTS.cleanup()
        if not KEEP:
            rm_tree(RUN)
    elapsed = time.monotonic() - start
    meta.append(f"run time: {elapsed / 60:.1f} min")
    text = "\n".join(["# envelopefs benchmark " + STAMP, ""] + [f"- {m}" for m in meta] + [""] + out)
    with open(os.path.join(OUT, "summary.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(OUT, "meta.txt"), "w") as f:
        f.write("\n".join(meta) + "\n")
    print(text)
    log(f"results in {OUT} ({elapsed / 60:.1f} min)")


def on_term(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_term)
    try:
        main()
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); mounts cleaned up")
        sys.exit(130)
