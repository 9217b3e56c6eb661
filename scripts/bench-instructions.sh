#!/usr/bin/env bash
# The bench.sh workloads, counted in instructions instead of seconds: two envelopefs binaries
# (say the commit before a change and the change), each workload run against a mount whose
# daemon runs under valgrind's callgrind, and the daemon's total instructions (Ir, all
# threads) compared. Instruction counts hardly move with whatever else the machine runs,
# where wall-clock rounds on a shared 2-vCPU VM spread by up to 30 % (docs/BENCHMARKS.md).
#
#   scripts/bench-instructions.sh BEFORE_BIN AFTER_BIN      needs root, valgrind, fio
#
# Each workload gets a fresh daemon under callgrind (a fresh mount, so its own caches are
# cold); whatever a workload needs first (the file a read reads, the tree ls or rm walks) is
# made beforehand through a mount without valgrind, so the count is the workload's plus the
# daemon's start and stop. The `idle` row is that start and stop alone (mount, unmount), and
# the `net` ratio is the one without it. Each binary has its own store, made by itself, and
# gets the same operations in the same order.
#
# Prints a markdown table: workload, Ir before, Ir after, after/before, net after/before;
# the callgrind files stay in $IR_DIR/out for callgrind_annotate.
#
# Environment (defaults in brackets):
#   IR_DIR [target/bench-ir]   working directory (stores, mounts, outputs): on a real disk
#   IR_SEQ_MB [64]             sequential write/read size
#   IR_FIO_MB [16] IR_FIO_IOS [2000]   random 4 KiB read and write: file size, I/Os per run
#   IR_FILES [2000] IR_DIRS [20]       create / ls -lR / rm -rf: 4 KiB files in IR_DIRS dirs
#   IR_UNTAR_FILES [2000]      untar: files of 64 B to 16 KiB (fixed sizes and bytes)
#   IR_WORKLOADS [idle,seq_write,seq_read_cold,seq_read_warm,rand_read,rand_write,create,ls_lR_cold,ls_lR_warm,rm_rf,untar]
#   IR_KEEP [0]                1: keep the stores and callgrind files
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

die() { echo "bench-instructions: error: $*" >&2; exit 1; }
note() { echo "bench-instructions: $*" >&2; }

[ $# = 2 ] || die "usage: $0 BEFORE_BIN AFTER_BIN"
[ "$(id -u)" = 0 ] || die "needs root (FUSE mounts, drop_caches)"
command -v valgrind >/dev/null || die "needs valgrind"
command -v fio >/dev/null || die "needs fio"
before="$(realpath "$1")" after="$(realpath "$2")"
[ -x "$before" ] && [ -x "$after" ] || die "not executables: $1 $2"

IR_DIR="${IR_DIR:-$repo/target/bench-ir}"
SEQ_MB="${IR_SEQ_MB:-64}"
FIO_MB="${IR_FIO_MB:-16}"
FIO_IOS="${IR_FIO_IOS:-2000}"
FILES="${IR_FILES:-2000}"
DIRS="${IR_DIRS:-20}"
UNTAR_FILES="${IR_UNTAR_FILES:-2000}"
WORKLOADS="${IR_WORKLOADS:-idle,seq_write,seq_read_cold,seq_read_warm,rand_read,rand_write,create,ls_lR_cold,ls_lR_warm,rm_rf,untar}"
mkdir -p "$IR_DIR"
IR_DIR="$(realpath "$IR_DIR")"
case "$(stat -f -c %T "$IR_DIR")" in
    tmpfs|ramfs|overlayfs) die "IR_DIR=$IR_DIR is on tmpfs; put it on the real disk" ;;
esac
rm -rf "$IR_DIR/before" "$IR_DIR/after" "$IR_DIR/out"
mkdir -p "$IR_DIR/out"

is_mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/self/mounts; }

cleanup() {
    local m
    for m in "$IR_DIR/before/mnt" "$IR_DIR/after/mnt"; do
        if is_mounted "$m"; then
            note "unmounting leftover $m"
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        fi
    done
    if [ "${IR_KEEP:-0}" != 1 ]; then
        rm -rf "$IR_DIR/before" "$IR_DIR/after" "$IR_DIR/tree.tar"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

wait_mounted() { # MNT PID
    local i
    for i in $(seq 1 3000); do
        is_mounted "$1" && return 0
        kill -0 "$2" 2>/dev/null || die "the daemon for $1 exited before mounting"
        sleep 0.1
    done
    die "$1 did not come up"
}

# A tarball with fixed names, sizes and bytes (the same for both binaries, every run).
python3 - "$IR_DIR/tree.tar" "$UNTAR_FILES" <<'EOF'
import io, random, sys, tarfile
path, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(5000)
blob = random.Random(1).randbytes(16384)
ndirs = max(1, min(50, n // 20))
with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
    for d in range(ndirs):
        ti = tarfile.TarInfo(f"tree/d{d:02d}")
        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1700000000
        tar.addfile(ti)
    for i in range(n):
        size = int(round(64 * (256 ** rng.random())))
        start = rng.randrange(0, 16384 - size + 1)
        ti = tarfile.TarInfo(f"tree/d{i % ndirs:02d}/f{i:05d}.dat")
        ti.size, ti.mode, ti.mtime = size, 0o644, 1700000000
        tar.addfile(ti, io.BytesIO(blob[start:start + size]))
EOF

create_files() { # DIR
    python3 - "$1" "$FILES" "$DIRS" <<'EOF'
import os, sys
root, files, dirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
buf = bytes(range(256)) * 16
os.mkdir(root)
for d in range(dirs):
    dd = os.path.join(root, f"d{d:03d}")
    os.mkdir(dd)
    for i in range(files // dirs):
        with open(os.path.join(dd, f"f{i:04d}"), "wb") as f:
            f.write(buf)
EOF
}

fio_run() { # FILE RW
    fio --name=ir --filename="$1" --size="${FIO_MB}M" --bs=4k --rw="$2" --ioengine=psync \
        --numjobs=1 --number_ios="$FIO_IOS" --randrepeat=1 --invalidate=1 \
        --end_fsync="$([ "$2" = randwrite ] && echo 1 || echo 0)" >/dev/null
}

# What must exist before a workload (made through a plain mount).
prepare() { # WORKLOAD WORK
    case "$1" in
        seq_read_cold|seq_read_warm)
            [ -e "$2/seq.dat" ] ||
                dd if=/dev/zero of="$2/seq.dat" bs=1M count="$SEQ_MB" conv=fsync status=none ;;
        rand_read|rand_write)
            [ -e "$2/fio.dat" ] ||
                dd if=/dev/zero of="$2/fio.dat" bs=1M count="$FIO_MB" conv=fsync status=none ;;
        ls_lR_cold|ls_lR_warm|rm_rf) [ -e "$2/create" ] || create_files "$2/create" ;;
        create) rm -rf "$2/create" ;;
        untar) rm -rf "$2/untar" ;;
        seq_write) rm -f "$2/seq.dat" ;;
    esac
}

# The workload itself, against the daemon under callgrind.
workload() { # WORKLOAD WORK
    case "$1" in
        idle) stat "$2" >/dev/null ;;
        seq_write) dd if=/dev/zero of="$2/seq.dat" bs=1M count="$SEQ_MB" conv=fsync status=none ;;
        seq_read_cold|seq_read_warm) dd if="$2/seq.dat" of=/dev/null bs=1M status=none ;;
        rand_read) fio_run "$2/fio.dat" randread ;;
        rand_write) fio_run "$2/fio.dat" randwrite ;;
        create) create_files "$2/create"; sync ;;
        ls_lR_cold|ls_lR_warm) ls -lR "$2/create" >/dev/null ;;
        rm_rf) rm -rf "$2/create" ;;
        untar) mkdir "$2/untar"; tar -xf "$IR_DIR/tree.tar" -C "$2/untar"; sync ;;
        *) die "unknown workload $1" ;;
    esac
}

# Caches before a workload: the cold ones start from nothing, the others from a warm backing
# store (the daemon is new either way, so the kernel's caches of the mount are empty).
caches() { # WORKLOAD BACKING
    case "$1" in
        seq_read_cold|ls_lR_cold) drop_caches ;;
        ls_lR_warm) drop_caches; ls -lR "$2/bench/create" >/dev/null 2>&1 || true ;;
        seq_read_warm) drop_caches; cat "$2"/bench/* >/dev/null 2>&1 || true ;;
        *) sync ;;
    esac
}

run_one() { # LABEL BIN WORKLOAD
    local label="$1" bin="$2" w="$3" base="$IR_DIR/$1" out pid
    local store="$base/store" mnt="$base/mnt" key="$base/key"
    if [ ! -d "$store" ]; then
        mkdir -p "$mnt"
        head -c 32 /dev/urandom > "$key"
        chmod 600 "$key"
        "$bin" init "$store" --key-file "$key" >/dev/null
        "$bin" mount "$store" "$mnt" --key-file "$key"
        mkdir "$mnt/bench"
        "$bin" unmount "$mnt"
    fi
    "$bin" mount "$store" "$mnt" --key-file "$key"
    prepare "$w" "$mnt/bench"
    "$bin" unmount "$mnt"
    caches "$w" "$store"
    out="$IR_DIR/out/$w.$label.callgrind"
    valgrind --tool=callgrind --separate-threads=no --callgrind-out-file="$out" \
        --log-file="$IR_DIR/out/$w.$label.valgrind.log" \
        "$bin" mount "$store" "$mnt" --key-file "$key" --foreground \
        >"$IR_DIR/out/$w.$label.daemon.log" 2>&1 &
    pid=$!
    wait_mounted "$mnt" "$pid"
    workload "$w" "$mnt/bench"
    "$bin" unmount "$mnt"
    wait "$pid" || die "the daemon under callgrind failed ($w, $label): see $IR_DIR/out"
    awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

declare -A ir
IFS=, read -r -a wl <<< "$WORKLOADS"
for w in "${wl[@]}"; do
    for side in before after; do
        bin="$before"; [ $side = after ] && bin="$after"
        note "$w: $side"
        ir[$w.$side]="$(run_one $side "$bin" "$w")"
    done
done

ratio() { python3 -c "import sys; b, a = int(sys.argv[1]), int(sys.argv[2]); print(f'{a / b:.4f}' if b > 0 else '-')" "$1" "$2"; }

echo "| workload | Ir before | Ir after | after / before | net of idle: after / before |"
echo "|---|---:|---:|---:|---:|"
for w in "${wl[@]}"; do
    b="${ir[$w.before]}" a="${ir[$w.after]}" net="-"
    if [ "$w" != idle ] && [ -n "${ir[idle.before]:-}" ]; then
        net="$(ratio $((b - ir[idle.before])) $((a - ir[idle.after])))"
    fi
    echo "| $w | $b | $a | $(ratio "$b" "$a") | $net |"
done
echo
echo "before: $before ($("$before" --version 2>/dev/null || echo '?'))"
echo "after:  $after ($("$after" --version 2>/dev/null || echo '?'))"
echo "settings: seq $SEQ_MB MiB, fio $FIO_MB MiB x $FIO_IOS I/Os of 4 KiB, $FILES files in $DIRS dirs, untar $UNTAR_FILES files"
note "callgrind files are in $IR_DIR/out (callgrind_annotate FILE)"
