#!/usr/bin/env bash
# Bucket re-encrypt in an object store: envelopefs against a plain S3 client issuing the same
# copies, in one run, on a three-node Garage cluster on loopback (issue 17, items 3 and 9;
# docs/BENCHMARKS.md, "Object store: bucket re-encrypt").
#
#   scripts/bench-s3.sh                 full run: 3 rounds; ~20 GiB of disk (100 x 64 MiB,
#                                       replication 3), about 30 min on 2 shared cores
#   BENCH_QUICK=1 scripts/bench-s3.sh   smoke test: tiny sizes, 1 round
#
# What it does:
#   1. builds the release binary and the plain client (`cargo build --release --bin
#      envelopefs --example s3_rewrap`; CARGO_TARGET_DIR is honoured; ENVELOPEFS_BIN and
#      S3_REWRAP_BIN skip the build);
#   2. starts a three-node Garage cluster with scripts/garage.sh in a temp directory (stopped
#      by pid on exit, also on error or Ctrl-C);
#   3. runs scripts/bench/bench_s3.py: makes a store at s3://BUCKET/bench with one bucket per
#      data set (10,000 x 4 KiB; 100 x 64 MiB; 100 each of 4 KiB, 1 MiB, 16 MiB; an empty
#      one), each with its own key, then per round and set: `key rotate`, the timed
#      `envelopefs bucket reencrypt --bucket-name B --wait-for-state SUCCEEDED`, and the plain
#      client (examples/s3_rewrap.rs) copying every object onto itself (metadata REPLACE,
#      copy-source-if-match) at the same concurrency, without and with a HEAD per object;
#      then the plain copy at other concurrencies and one at a time per object size;
#   4. prints markdown tables; raw results in target/bench-results/s3-<date>/.
#
# Environment (defaults in brackets; BENCH_QUICK=1 shrinks them):
#   BENCH_S3_ROUNDS [3] BENCH_S3_SMALL [10000] BENCH_S3_LARGE [100] BENCH_S3_LARGE_MB [64]
#   BENCH_S3_SIZES_COUNT [100] BENCH_S3_CONCURRENCY [8] BENCH_S3_SWEEP [1,8,16,32,64]
#   BENCH_S3_KEEP [0]   1: leave the cluster running and its directory in place
#
#   BENCH_S3_BLOCK_SIZES=default,16M,64M scripts/bench-s3.sh
#       only the per-object copy time by size (4 KiB, 1 MiB, 16 MiB, 64 MiB; BENCH_S3_SIZES_COUNT
#       objects each, copied one at a time), on one fresh cluster per Garage block_size
#       (GARAGE_BLOCK_SIZE of scripts/garage.sh; "default" for Garage's own, 1 MiB); prints
#       a table block size x object size -> p50 ms (p90).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

die() { echo "bench-s3: error: $*" >&2; exit 1; }
note() { echo "bench-s3: $*" >&2; }

if [ -n "${ENVELOPEFS_BIN:-}" ] && [ -n "${S3_REWRAP_BIN:-}" ]; then
    :
else
    note "building envelopefs and examples/s3_rewrap (release)"
    cargo build --release --quiet --bin envelopefs --example s3_rewrap
    tdir="${CARGO_TARGET_DIR:-$repo/target}"
    case "$tdir" in /*) ;; *) tdir="$repo/$tdir" ;; esac
    ENVELOPEFS_BIN="${ENVELOPEFS_BIN:-$tdir/release/envelopefs}"
    S3_REWRAP_BIN="${S3_REWRAP_BIN:-$tdir/release/examples/s3_rewrap}"
fi
ENVELOPEFS_BIN="$(realpath "$ENVELOPEFS_BIN")"
S3_REWRAP_BIN="$(realpath "$S3_REWRAP_BIN")"
[ -x "$ENVELOPEFS_BIN" ] || die "no binary at $ENVELOPEFS_BIN"
[ -x "$S3_REWRAP_BIN" ] || die "no binary at $S3_REWRAP_BIN"
export ENVELOPEFS_BIN S3_REWRAP_BIN

scripts/garage.sh path >/dev/null || die "no garage (scripts/garage.sh install)"
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3

if [ -n "${BENCH_S3_BLOCK_SIZES:-}" ]; then
    export BENCH_S3_RESULTS="${BENCH_S3_RESULTS:-$repo/target/bench-results/s3-block-$(date -u +%Y%m%d-%H%M%S)}"
    mkdir -p "$BENCH_S3_RESULTS"
    GARAGE_DIR=""
    stop_one() {
        if [ -n "$GARAGE_DIR" ]; then
            scripts/garage.sh stop "$GARAGE_DIR" || true
            rm -rf "$GARAGE_DIR"
        fi
        GARAGE_DIR=""
    }
    trap stop_one EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    tsv="$BENCH_S3_RESULTS/per-size.tsv"
    : >"$tsv"
    IFS=, read -r -a blocks <<<"$BENCH_S3_BLOCK_SIZES"
    for bs in "${blocks[@]}"; do
        GARAGE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/bench-s3.XXXXXX")"
        export GARAGE_DIR
        if [ "$bs" = default ]; then
            unset GARAGE_BLOCK_SIZE
        else
            export GARAGE_BLOCK_SIZE="$bs"
        fi
        scripts/garage.sh start "$GARAGE_DIR" --nodes 3
        grep -h '^block_size' "$GARAGE_DIR/node1/garage.toml" >&2 || note "block_size: Garage's default"
        export ENVELOPEFS_STAGING_DIR="$GARAGE_DIR/staging"
        BENCH_S3_PER_SIZE=1 "$py" scripts/bench/bench_s3.py | tee -a "$tsv"
        stop_one
    done
    {
        echo "Per-object copy onto itself (metadata REPLACE), one at a time, p50 ms (p90), $(date -u '+%Y-%m-%d %H:%M UTC'):"
        echo
        "$py" scripts/bench/bench_s3.py --table "$tsv"
    } | tee "$BENCH_S3_RESULTS/report.md"
    note "raw results in $BENCH_S3_RESULTS"
    exit 0
fi
GARAGE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/bench-s3.XXXXXX")"
export GARAGE_DIR
stop() {
    if [ "${BENCH_S3_KEEP:-0}" = 1 ]; then
        note "cluster left running in $GARAGE_DIR (scripts/garage.sh stop $GARAGE_DIR)"
        return
    fi
    scripts/garage.sh stop "$GARAGE_DIR" || true
    rm -rf "$GARAGE_DIR"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
scripts/garage.sh start "$GARAGE_DIR" --nodes 3

export BENCH_S3_RESULTS="${BENCH_S3_RESULTS:-$repo/target/bench-results/s3-$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$BENCH_S3_RESULTS"
# Staged objects (ciphertext only) go to the real disk, not a tmpfs /tmp.
export ENVELOPEFS_STAGING_DIR="$GARAGE_DIR/staging"
"$py" scripts/bench/bench_s3.py | tee "$BENCH_S3_RESULTS/report.md"
note "raw results in $BENCH_S3_RESULTS"
