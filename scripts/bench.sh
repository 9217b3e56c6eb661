#!/usr/bin/env bash
# envelopefs against its peers, in one run, on one backing disk (issue 5, docs/BENCHMARKS.md).
#
#   scripts/bench.sh                 full run: 3 rounds, ~13 min on a 2-vCPU VM, needs root
#   BENCH_QUICK=1 scripts/bench.sh   smoke test: tiny sizes, 1 round, ~2 min
#
# What it does:
#   1. builds a release binary (cargo build --release; CARGO_TARGET_DIR is honoured,
#      ENVELOPEFS_BIN=path skips the build);
#   2. installs the peers with apt-get if missing: gocryptfs, securefs, bindfs, fio;
#   3. runs scripts/bench/bench.py pinned to one vCPU (taskset -c 0, for the benchmark
#      process, every tool it starts and every FUSE daemon; BENCH_PIN=0 to disable).
#      It measures envelopefs, gocryptfs, securefs, bindfs (-o big_writes) and the raw
#      backing directory on the same workloads, alternating the systems, round after round,
#      then the bucket re-encrypt (rewrap) benchmark and, beside it, the gocryptfs way of
#      changing the data key (copy everything into a fresh filesystem);
#   4. prints markdown tables (medians, and envelopefs's ratio to each peer) and writes raw
#      TSV files under target/bench-results/<date>/.
# Nothing stays mounted: mounts are made under $BENCH_DIR only, and everything mounted
# there is unmounted on exit, also on error or Ctrl-C.
#
# Environment (defaults in brackets; BENCH_QUICK=1 changes the sizes, see bench.py):
#   BENCH_ROUNDS [3]           rounds of the filesystem workloads (and of the rewrap runs)
#   BENCH_PIN [1]              1: taskset -c $BENCH_CPU for the whole run; 0: unpinned
#   BENCH_CPU [0]              the vCPU to pin to
#   BENCH_DIR [target/bench-data]  backing directory: must be on the real disk, not tmpfs
#   BENCH_RESULTS [target/bench-results]
#   BENCH_SYSTEMS [envelopefs,gocryptfs,securefs,bindfs-bw,raw]; may add envelopefs-base
#   BENCH_BASE_BIN             with envelopefs-base: the envelopefs binary to compare with
#                              (say the previous commit's release build), in the same run
#   BENCH_PARTS [fs,rewrap]    which parts to run
#   BENCH_PRETOUCH_MB [3072]   memory written and freed before each sequential step
#   BENCH_SEQ_MB [1024] BENCH_FIO_MB [256] BENCH_FIO_SECS [10] BENCH_FILES [10000]
#   BENCH_DIRS [100] BENCH_UNTAR_FILES [5000]
#   BENCH_REWRAP_SMALL [10000] BENCH_REWRAP_MEDIUM [1000] BENCH_REWRAP_LARGE [100]
#   BENCH_REWRAP_LARGE_MB [64] BENCH_REKEY_ROUNDS [1]
#   BENCH_KEEP [0]             1: keep the backing data after the run
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

die() { echo "bench: error: $*" >&2; exit 1; }
note() { echo "bench: $*" >&2; }

[ "$(id -u)" = 0 ] || die "needs root (drop_caches, FUSE mounts of several filesystems)"

export BENCH_DIR="${BENCH_DIR:-$repo/target/bench-data}"
export BENCH_RESULTS="${BENCH_RESULTS:-$repo/target/bench-results}"
mkdir -p "$BENCH_DIR" "$BENCH_RESULTS"
BENCH_DIR="$(realpath "$BENCH_DIR")"
BENCH_RESULTS="$(realpath "$BENCH_RESULTS")"
fstype="$(stat -f -c %T "$BENCH_DIR")"
case "$fstype" in
    tmpfs|ramfs|overlayfs) die "BENCH_DIR=$BENCH_DIR is on $fstype; put it on the real disk" ;;
esac

# Unmounts everything mounted under $BENCH_DIR (only this script mounts there), deepest first.
cleanup_mounts() {
    local m left
    for _ in 1 2 3; do
        left=0
        while read -r m; do
            [ -n "$m" ] || continue
            left=1
            note "unmounting leftover $m"
            umount "$m" 2>/dev/null || fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done < <(awk -v d="$BENCH_DIR/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r)
        [ $left = 0 ] && return 0
        sleep 1
    done
}
trap cleanup_mounts EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cleanup_mounts

# 1. Release binary.
if [ -n "${ENVELOPEFS_BIN:-}" ]; then
    bin="$(realpath "$ENVELOPEFS_BIN")"
else
    note "building envelopefs (release)"
    cargo build --release --quiet
    bin="${CARGO_TARGET_DIR:-$repo/target}/release/envelopefs"
    case "$bin" in /*) ;; *) bin="$repo/$bin" ;; esac
fi
[ -x "$bin" ] || die "no binary at $bin"
export ENVELOPEFS_BIN="$bin"

# 2. Peers and tools, from Debian packages.
need=()
for pair in gocryptfs:gocryptfs securefs:securefs bindfs:bindfs fio:fio fusermount3:fuse3 \
            fusermount:fuse3 taskset:util-linux tar:tar; do
    cmd="${pair%%:*}" pkg="${pair#*:}"
    command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    note "installing ${need[*]}"
    # grep reads all of apt-cache's output (no -q): under pipefail, a grep that quits at the
    # first match makes apt-cache die of SIGPIPE and the test fail at random.
    candidate() { apt-cache policy "$1" 2>/dev/null | grep 'Candidate: [0-9]' >/dev/null; }
    updated=0
    for pkg in "${need[@]}"; do
        if ! candidate "$pkg"; then
            [ $updated = 1 ] || { apt-get update -qq; updated=1; }
        fi
        candidate "$pkg" || die "no Debian package $pkg"
    done
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# 3. The measurements, pinned.
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3
if [ "${BENCH_PIN:-1}" = 1 ]; then
    export BENCH_PINNED="taskset -c ${BENCH_CPU:-0}"
    taskset -c "${BENCH_CPU:-0}" "$py" scripts/bench/bench.py
else
    export BENCH_PINNED="unpinned"
    "$py" scripts/bench/bench.py
fi
