#!/usr/bin/env bash
# Where time goes on the read and write paths of a mount: perf samples (cpu-clock, the
# machine's VMs have no hardware counters) of vCPU 0, system-wide, while one workload runs
# pinned there with the FUSE daemon. Writes a summary per workload: CPU share by process
# and by DSO (idle = waiting on the disk), the top symbols of the daemon, and the FUSE
# requests the kernel sent (fuse_request_send tracepoint) for the small-file workloads.
#
#   scripts/profile.sh                    # as root; results in target/profile-results/<date>/
#   ENVELOPEFS_BIN=path scripts/profile.sh
#
# Workloads: dd of 1 GiB with conv=fsync, cold dd read of it (after drop_caches), 2,000
# creates of 4 KiB files, rm -rf of them. Memory is pre-touched before each (see
# docs/BENCHMARKS.md: first-touch page faults of the VM otherwise dominate the profile).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
die() { echo "profile.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (perf system-wide, drop_caches)"
command -v perf >/dev/null || apt-get install -y linux-perf >/dev/null 2>&1 ||
    die "perf not found and linux-perf could not be installed"
if [ -z "${ENVELOPEFS_BIN:-}" ]; then
    cargo build --release --quiet
    ENVELOPEFS_BIN="${CARGO_TARGET_DIR:-$repo/target}/release/envelopefs"
fi
bin="$ENVELOPEFS_BIN"
work="$repo/target/profile-data"
out="$repo/target/profile-results/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
rm -rf "$work"
mkdir -p "$work/m"
head -c 32 /dev/urandom >"$work/key"
"$bin" init "$work/s" --key-file "$work/key" >/dev/null
taskset -c 0 "$bin" mount "$work/s" "$work/m" --key-file "$work/key"
cleanup() {
    echo 0 >/sys/kernel/tracing/events/fuse/fuse_request_send/enable 2>/dev/null || true
    "$bin" unmount "$work/m" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/m/bench"
conn="$(mountpoint -d "$work/m" | cut -d: -f2)"

pretouch() {
    dd if=/dev/zero of=/dev/shm/envelopefs-pretouch bs=1M count=3072 status=none
    rm -f /dev/shm/envelopefs-pretouch
}

# profile NAME SECONDS COMMAND...: perf of vCPU 0 while COMMAND runs pinned there.
profile() {
    local name="$1" secs="$2"
    shift 2
    sync
    perf record -q -e cpu-clock -F 4000 -C 0 -o "$out/$name.data" -- sleep "$secs" \
        >/dev/null 2>&1 &
    local perf_pid=$!
    sleep 0.2
    local t0 t1
    t0=$(date +%s.%N)
    taskset -c 0 "$@"
    t1=$(date +%s.%N)
    wait "$perf_pid" || true
    # head closes its pipe early: no pipefail for the summaries.
    set +o pipefail
    {
        echo "# $name: $*"
        echo "# wall time $(awk "BEGIN{printf \"%.2f\", $t1 - $t0}") s (perf window $secs s from 0.2 s before)"
        echo "## by process and DSO"
        perf report -i "$out/$name.data" --sort comm,dso --stdio 2>/dev/null |
            grep '%' | head -20
        echo "## top symbols of the daemon (fuser-* threads)"
        perf report -i "$out/$name.data" --comm fuser-0,fuser-1,fuser-2,fuser-3 \
            --sort dso,symbol --stdio 2>/dev/null | grep '%' | grep -v '^ *|' |
            grep -v -- '--' | head -25
    } >"$out/$name.txt"
    set -o pipefail
    echo "profile.sh: $name -> $out/$name.txt"
}

# trace_requests NAME COMMAND...: FUSE requests this mount received during COMMAND.
trace_requests() {
    local name="$1"
    shift
    local t=/sys/kernel/tracing
    [ -d "$t/events/fuse" ] || return 0
    echo >"$t/trace"
    echo 1 >"$t/events/fuse/fuse_request_send/enable"
    "$@"
    echo 0 >"$t/events/fuse/fuse_request_send/enable"
    grep "connection $conn " "$t/trace" | grep -o '(FUSE_[A-Z_]*)' | sort | uniq -c |
        sort -rn >"$out/$name.requests.txt" || true
}

cat >"$work/mkfiles.py" <<'EOF'
import os, sys
root = sys.argv[1]
data = os.urandom(4096)
for d in range(20):
    os.makedirs(f"{root}/d{d:02d}")
    for i in range(100):
        with open(f"{root}/d{d:02d}/f{i:03d}", "wb") as f:
            f.write(data)
EOF

pretouch
profile write 3 dd if=/dev/zero of="$work/m/bench/seq" bs=1M count=1024 conv=fsync status=none
sync
echo 3 >/proc/sys/vm/drop_caches
pretouch
profile read-cold 3 dd if="$work/m/bench/seq" of=/dev/null bs=1M status=none
rm -f "$work/m/bench/seq"
sync
sleep 2
profile create 3 python3 "$work/mkfiles.py" "$work/m/bench/small"
sync
profile rm 3 rm -rf "$work/m/bench/small"
sync
trace_requests create python3 "$work/mkfiles.py" "$work/m/bench/small2"
sync
sleep 2
trace_requests rm rm -rf "$work/m/bench/small2"
echo "profile.sh: summaries in $out"
