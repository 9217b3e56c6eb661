#!/usr/bin/env bash
# Mounted object stores side by side: envelopefs `mount s3://...` against rclone mount with a
# crypt remote and s3fs, all three on one three-node Garage cluster on loopback, in one run
# (docs/BENCHMARKS.md, "Mounted object store: envelopefs, rclone crypt, s3fs").
#
#   scripts/bench-s3-mount.sh                 full run: 1 GiB files, 5,000 small files (about
#                                             40 min on 2 shared cores; FILES=2000: 18 min)
#   SIZE=16M FILES=200 scripts/bench-s3-mount.sh     a check at reduced sizes (about 3 min)
#
# Cases, per system, each in a fresh directory of its own Garage bucket:
#   write    dd bs=1M conv=fsync of SIZE random bytes (from a tmpfs) into the mount
#   read     the same file read back with dd, after an unmount, drop_caches and a remount
#   untar    tar -xf of a generated tarball of FILES small files (0.5-8 KiB, 50 directories)
#   ls -lR   of that tree, after an unmount, drop_caches and a remount
#   rm -rf   of that tree
# For write, untar and rm -rf two times are taken: "returned" when the command exits, and
# "stored" when every byte is in the object store. rclone's VFS uploads files after they are
# closed (here at once: --vfs-write-back 0s); its upload queue is watched through its remote
# control API until empty. s3fs and envelopefs have uploaded when the command returns.
#
# Rotation: changing the key of SIZE of mixed files (1/2 of the bytes in 4 large files, 1/4
# in 1 MiB files, 1/4 in 64 KiB files):
#   envelopefs  `key rotate` (untimed), then `bucket reencrypt --wait-for-state SUCCEEDED`
#               (every object's header rewrapped by a server-side copy onto itself)
#   rclone      a crypt remote's key cannot be changed: `rclone copy` of everything into a new
#               crypt remote with another password (download, decrypt, encrypt, upload)
# and their ratio.
#
# The envelopefs store under test is filled through its S3 mount; the rotation store is
# filled through a local mount and moved into Garage with `envelopefs store copy`.
#
# Environment:
#   SIZE       bytes of the large file and of the mixed set, with K, M or G [1G]
#   FILES      small files in the tarball [5000]
#   SYSTEMS    which mounts to measure, comma-separated; empty: none [rclone,s3fs,envelopefs]
#   ROTATION   1: measure the rotation too; 0: skip it [1]
#   ENVELOPEFS_BIN  the binary (default: cargo build --release, target/release/envelopefs)
#   GARAGE_BIN      as for scripts/garage.sh
#   BENCH_RESULTS   where the table and the log go [target/bench-results/s3-mount-DATE]
# rclone and s3fs are installed with apt-get when missing. Needs root (FUSE, drop_caches).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

die() { echo "bench-s3-mount: error: $*" >&2; exit 1; }
note() { echo "bench-s3-mount: $*" >&2; }

bytes_of() {
    [[ "$1" =~ ^([1-9][0-9]*)([KMG]?)$ ]] || die "not a size: $1 (bytes, or a number with K, M or G)"
    local n="${BASH_REMATCH[1]}"
    case "${BASH_REMATCH[2]}" in
        K) n=$((n << 10)) ;;
        M) n=$((n << 20)) ;;
        G) n=$((n << 30)) ;;
    esac
    echo "$n"
}
SIZE="${SIZE:-1G}"
size="$(bytes_of "$SIZE")"
[ $((size % (1 << 20))) = 0 ] && [ "$size" -ge $((8 << 20)) ] ||
    die "SIZE must be a whole number of MiB, at least 8M"
size_mb=$((size >> 20))
FILES="${FILES:-5000}"
[[ "$FILES" =~ ^[1-9][0-9]*$ ]] || die "FILES must be a positive number"
SYSTEMS="${SYSTEMS-rclone,s3fs,envelopefs}"
IFS=, read -r -a systems <<<"$SYSTEMS"
for s in "${systems[@]}"; do
    case "$s" in rclone | s3fs | envelopefs) ;; *) die "unknown system in SYSTEMS: $s" ;; esac
done
ROTATION="${ROTATION:-1}"
want() { [[ ",$SYSTEMS," == *",$1,"* ]]; }

[ "$(id -u)" = 0 ] || die "run as root (FUSE mounts, /proc/sys/vm/drop_caches)"

# --- Tools.
missing=()
command -v fusermount3 >/dev/null || missing+=(fuse3)
command -v rclone >/dev/null || missing+=(rclone)
command -v s3fs >/dev/null || missing+=(s3fs)
command -v python3 >/dev/null || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
    note "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if want envelopefs || [ "$ROTATION" = 1 ]; then
    if [ -z "${ENVELOPEFS_BIN:-}" ]; then
        note "building envelopefs (release)"
        cargo build --release --quiet --bin envelopefs
        tdir="${CARGO_TARGET_DIR:-$repo/target}"
        case "$tdir" in /*) ;; *) tdir="$repo/$tdir" ;; esac
        ENVELOPEFS_BIN="$tdir/release/envelopefs"
    fi
    bin="$(realpath "$ENVELOPEFS_BIN")"
    [ -x "$bin" ] || die "no binary at $bin"
fi
scripts/garage.sh path >/dev/null || die "no garage 2.5.0 (scripts/garage.sh install)"

results="${BENCH_RESULTS:-$repo/target/bench-results/s3-mount-$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$results"
log="$results/log.txt"
: >"$log"

# --- The cluster, the mounts and their cleanup (by pid and mountpoint, also on failure).
work="$(mktemp -d "${TMPDIR:-/tmp}/bench-s3-mount.XXXXXX")"
shm="$(mktemp -d /dev/shm/bench-s3-mount.XXXXXX)"
cluster="$work/garage"
declare -A mnt_of=([rclone]="$work/mnt-rclone" [s3fs]="$work/mnt-s3fs" [envelopefs]="$work/mnt-envelopefs")
local_mnt="$work/mnt-local"
rclone_pid=""
cleanup() {
    local m
    for m in "${mnt_of[@]}" "$local_mnt"; do
        if mountpoint -q "$m" 2>/dev/null; then
            fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        fi
    done
    [ -z "$rclone_pid" ] || kill "$rclone_pid" 2>/dev/null || true
    scripts/garage.sh stop "$cluster" 2>/dev/null || true
    cp "$work"/*.log "$results/" 2>/dev/null || true
    rm -rf "$work" "$shm"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

note "starting a three-node Garage cluster in $cluster"
scripts/garage.sh start "$cluster" --bucket bench-rclone 2>>"$log"
scripts/garage.sh bucket "$cluster" bench-s3fs
scripts/garage.sh bucket "$cluster" bench-envelopefs
# shellcheck source=/dev/null
. "$cluster/env"

# --- Data: the large file, the tarball and the mixed set live in a tmpfs (not dropped).
note "making the data: $size_mb MiB file, $FILES small files, $size_mb MiB mixed set"
head -c "$size" /dev/urandom >"$shm/large"
python3 - "$shm" "$FILES" "$size" <<'EOF'
import io, os, sys, tarfile
shm, files, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = os.urandom
with tarfile.open(os.path.join(shm, "small.tar"), "w", format=tarfile.GNU_FORMAT) as t:
    dirs = max(1, min(50, files // 20))
    for d in range(dirs):
        ti = tarfile.TarInfo(f"tree/d{d:02}")
        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 1700000000
        t.addfile(ti)
    for i in range(files):
        n = 512 + int.from_bytes(rnd(2), "little") % 7681
        ti = tarfile.TarInfo(f"tree/d{i % dirs:02}/f{i:05}.bin")
        ti.size, ti.mode, ti.mtime = n, 0o644, 1700000000
        t.addfile(ti, io.BytesIO(rnd(n)))
mixed = os.path.join(shm, "mixed")
for sub, each in (("large", size // 8), ("medium", 1 << 20), ("small", 64 << 10)):
    os.makedirs(os.path.join(mixed, sub))
    count = 4 if sub == "large" else (size // 4) // each
    for i in range(count):
        with open(os.path.join(mixed, sub, f"{sub}-{i:05}.bin"), "wb") as f:
            left = each
            while left:
                k = min(left, 8 << 20)
                f.write(rnd(k))
                left -= k
EOF
mixed_files="$(find "$shm/mixed" -type f | wc -l)"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- rclone: an S3 remote (credentials from the environment) and two crypt remotes on it.
rclone_conf="$work/rclone.conf"
(
    umask 077
    cat >"$rclone_conf" <<EOF
[garage]
type = s3
provider = Other
env_auth = true
endpoint = $AWS_ENDPOINT_URL
region = $AWS_REGION
force_path_style = true

[crypt]
type = crypt
remote = garage:bench-rclone/crypt
password = $(rclone obscure "bench-s3-mount-$RANDOM$RANDOM")

[crypt-new]
type = crypt
remote = garage:bench-rclone/crypt-new
password = $(rclone obscure "bench-s3-mount-new-$RANDOM$RANDOM")
EOF
)
export RCLONE_CONFIG="$rclone_conf"
# The endpoint is plain http on loopback: a CA bundle named in the environment is not
# needed, and rclone's S3 SDK refuses to load one into its own HTTP transport.
rclone() { env -u AWS_CA_BUNDLE rclone "$@"; }
rclone_port="$(free_port)"
rclone_rc() { rclone rc --url "http://127.0.0.1:$rclone_port/" "$@"; }

# --- envelopefs: a store at s3://bench-envelopefs/store, a raw key file.
efs_key="$work/envelopefs.key"
(umask 077 && head -c 32 /dev/urandom >"$efs_key")

wait_mounted() {
    local m="$1" i
    for i in $(seq 1 300); do
        mountpoint -q "$m" && return 0
        sleep 0.1
    done
    die "nothing mounted at $m after 30 s"
}

mount_sys() {
    local s="$1" m="${mnt_of[$1]}"
    mkdir -p "$m"
    case "$s" in
        rclone)
            # The VFS cache holds nothing from an earlier mount: reads go to the store.
            rm -rf "$work/rclone-cache"
            env -u AWS_CA_BUNDLE rclone mount crypt: "$m" --vfs-cache-mode writes --vfs-write-back 0s \
                --cache-dir "$work/rclone-cache" --rc --rc-addr "127.0.0.1:$rclone_port" \
                --rc-no-auth --log-file "$work/rclone.log" </dev/null >/dev/null 2>&1 &
            rclone_pid=$!
            ;;
        s3fs)
            s3fs bench-s3fs "$m" -o url="$AWS_ENDPOINT_URL" -o endpoint="$AWS_REGION" \
                -o use_path_request_style -o logfile="$work/s3fs.log" 2>>"$log"
            ;;
        envelopefs)
            ENVELOPEFS_KEY_FILE="$efs_key" ENVELOPEFS_STAGING_DIR="$work/staging" \
                "$bin" mount "s3://bench-envelopefs/store" "$m" >>"$log" 2>&1 ||
                die "envelopefs mount s3://bench-envelopefs/store failed: $(tail -n 3 "$log")"
            ;;
    esac
    wait_mounted "$m"
}

unmount_sys() {
    local s="$1" m="${mnt_of[$1]}"
    case "$s" in
        envelopefs) "$bin" unmount "$m" >>"$log" 2>&1 ;;
        rclone)
            fusermount3 -u "$m"
            wait "$rclone_pid" || true
            rclone_pid=""
            ;;
        *) fusermount3 -u "$m" ;;
    esac
    ! mountpoint -q "$m" || die "$m is still mounted"
}

# Whether a mount's writes reach the object store after the command returns.
writes_back() { [ "$1" = rclone ]; }

# Returns when everything written through the mount is in the object store. rclone: once
# its VFS has no file queued or uploading, its remote (listed through rclone, not the
# mount) holds exactly $3 files below $2. (FUSE sends the release of a closed file after
# close() has returned: a file may reach the upload queue only after the writer exited.)
wait_stored() {
    case "$1" in
        rclone)
            local i out n
            for i in $(seq 1 36000); do
                out="$(rclone_rc vfs/stats 2>/dev/null | tr -d ' \t\n')"
                if [[ "$out" == *'"uploadsInProgress":0,'* ]] &&
                    [[ "$out" =~ \"uploadsQueued\":0[,}] ]]; then
                    n="$(rclone lsf -R --files-only "crypt:$2" 2>/dev/null | grep -c .)" || true
                    [ "$n" != "$3" ] || return 0
                fi
                sleep 0.05
            done
            die "rclone's uploads did not finish within 30 min"
            ;;
        *) ;;
    esac
}

# The root of the workload in a mount: the mount itself, or envelopefs's bucket.
root_of() {
    if [ "$1" = envelopefs ]; then
        echo "${mnt_of[envelopefs]}/bench"
    else
        echo "${mnt_of[$1]}"
    fi
}

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || note "cannot drop caches (not root?)"
}

now_ns() { date +%s%N; }
ms_since() { echo $((($(now_ns) - $1) / 1000000)); }

declare -A R
run_system() {
    local s="$1" root t0 n tries
    note "== $s"
    if [ "$s" = envelopefs ]; then
        # The store and its bucket (the workload's root) are made before the mount.
        ENVELOPEFS_KEY_FILE="$efs_key" "$bin" init "s3://bench-envelopefs/store" >>"$log" 2>&1
        ENVELOPEFS_KEY_FILE="$efs_key" ENVELOPEFS_STORE="s3://bench-envelopefs/store" \
            "$bin" bucket create --name bench >>"$log" 2>&1
    fi
    mount_sys "$s"
    root="$(root_of "$s")"

    note "$s: write $size_mb MiB"
    t0="$(now_ns)"
    dd if="$shm/large" of="$root/large" bs=1M conv=fsync status=none
    R[$s,write]="$(ms_since "$t0")"
    if writes_back "$s"; then
        wait_stored "$s" "" 1
        R[$s,write_stored]="$(ms_since "$t0")"
    fi

    unmount_sys "$s"
    drop_caches
    mount_sys "$s"
    note "$s: read $size_mb MiB (cold)"
    t0="$(now_ns)"
    dd if="$root/large" of=/dev/null bs=1M status=none
    R[$s,read]="$(ms_since "$t0")"
    cmp "$shm/large" "$root/large" || die "$s: the large file reads back different"
    rm -f "$root/large"

    note "$s: untar $FILES files"
    t0="$(now_ns)"
    tar -xf "$shm/small.tar" -C "$root" --no-same-owner
    R[$s,untar]="$(ms_since "$t0")"
    if writes_back "$s"; then
        wait_stored "$s" tree "$FILES"
        R[$s,untar_stored]="$(ms_since "$t0")"
    fi

    unmount_sys "$s"
    drop_caches
    mount_sys "$s"
    note "$s: ls -lR (cold)"
    t0="$(now_ns)"
    ls -lR "$root/tree" >"$work/ls.out"
    R[$s,ls]="$(ms_since "$t0")"
    n="$(grep -c '\.bin$' "$work/ls.out")" || true
    [ "$n" = "$FILES" ] || die "$s: ls -lR shows $n files, not $FILES"

    note "$s: rm -rf"
    # Garage may list a deleted key for a moment, so a directory may still look non-empty to
    # a mount that asks the object store (s3fs): rm -rf is run again until it succeeds, and
    # the retries are counted in the time and reported.
    tries=0
    t0="$(now_ns)"
    until rm -rf "$root/tree" 2>>"$log"; do
        tries=$((tries + 1))
        [ "$tries" -lt 50 ] || die "$s: rm -rf failed 50 times"
        sleep 0.2
    done
    R[$s,rm]="$(ms_since "$t0")"
    [ "$tries" = 0 ] || R[$s,rm_retries]="$tries"
    if writes_back "$s"; then
        wait_stored "$s" "" 0
        R[$s,rm_stored]="$(ms_since "$t0")"
    fi
    [ -z "$(ls -A "$root")" ] || die "$s: $root is not empty after rm -rf"
    unmount_sys "$s"
}

for s in "${systems[@]}"; do
    run_system "$s"
done

# --- Rotation.
if [ "$ROTATION" = 1 ]; then
    note "rotation: rclone, filling crypt: with $mixed_files files"
    rclone copy "$shm/mixed" crypt:mixed --transfers 8 --checkers 8 2>>"$log"
    drop_caches
    note "rotation: rclone copy crypt: -> crypt-new:"
    t0="$(now_ns)"
    rclone copy crypt:mixed crypt-new:mixed --transfers 8 --checkers 8 2>>"$log"
    R[rclone,rotate]="$(ms_since "$t0")"
    n="$(rclone size crypt-new:mixed --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')"
    [ "$n" = "$mixed_files" ] || die "rclone: crypt-new: holds $n files, not $mixed_files"

    note "rotation: envelopefs, filling a store with $mixed_files files (local mount, then store copy)"
    export ENVELOPEFS_KEY_FILE="$efs_key"
    "$bin" init "$work/local-store" >>"$log" 2>&1
    mkdir -p "$local_mnt"
    "$bin" mount "$work/local-store" "$local_mnt" >>"$log" 2>&1
    ENVELOPEFS_STORE="$work/local-store" "$bin" key create --alias rot-key >>"$log" 2>&1
    mkdir "$local_mnt/rot"
    echo rot-key >"$local_mnt/.envelopefs/buckets/rot/kms-key-id"
    cp -r "$shm/mixed/." "$local_mnt/rot/"
    "$bin" unmount "$local_mnt" >>"$log" 2>&1
    "$bin" store copy "$work/local-store" "s3://bench-envelopefs/rot" >>"$log" 2>/dev/null
    rm -rf "$work/local-store"
    export ENVELOPEFS_STORE="s3://bench-envelopefs/rot"
    "$bin" key rotate rot-key >>"$log" 2>&1
    drop_caches
    note "rotation: envelopefs bucket reencrypt"
    t0="$(now_ns)"
    "$bin" bucket reencrypt --bucket-name rot --wait-for-state SUCCEEDED >"$work/wr.json" 2>>"$log"
    R[envelopefs,rotate]="$(ms_since "$t0")"
    n="$(python3 -c 'import json,sys; w=json.load(open(sys.argv[1])); print(w["status"], w["objects_rewrapped"])' "$work/wr.json")"
    [ "$n" = "SUCCEEDED $mixed_files" ] || die "envelopefs: the re-encrypt ended as '$n', not 'SUCCEEDED $mixed_files'"
    unset ENVELOPEFS_STORE ENVELOPEFS_KEY_FILE
fi

# --- The table.
sec() { [ -n "${1:-}" ] && awk -v ms="$1" 'BEGIN { printf "%.2f s", ms / 1000 }' || echo "-"; }
rate() { [ -n "${1:-}" ] && awk -v ms="$1" -v mb="$size_mb" 'BEGIN { printf "%.2f s (%.0f MiB/s)", ms / 1000, mb * 1000 / ms }' || echo "-"; }
both() { # returned / stored, or one figure when they are the same measurement
    local a="${1:-}" b="${2:-}" f="$3"
    if [ -z "$a" ]; then echo "-"; elif [ "$1" = "$2" ] || [ -z "$b" ]; then "$f" "$a"; else echo "$("$f" "$a"), stored $("$f" "$b")"; fi
}
{
    echo "Mounted object stores on a three-node Garage on loopback, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "SIZE=$SIZE ($size_mb MiB), FILES=$FILES, mixed set $mixed_files files; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ "${#systems[@]}" -gt 0 ]; then
        echo
        printf '| case |'
        for s in "${systems[@]}"; do printf ' %s |' "$s"; done
        echo
        printf '| --- |'
        for _ in "${systems[@]}"; do printf ' --- |'; done
        echo
        for c in write read untar ls rm; do
            case "$c" in
                write) label="write $size_mb MiB (dd conv=fsync)" ;;
                read) label="read $size_mb MiB, cold" ;;
                untar) label="untar $FILES files" ;;
                ls) label="ls -lR, cold" ;;
                rm) label="rm -rf" ;;
            esac
            printf '| %s |' "$label"
            for s in "${systems[@]}"; do
                case "$c" in
                    write) v="$(both "${R[$s,write]:-}" "${R[$s,write_stored]:-}" rate)" ;;
                    read) v="$(rate "${R[$s,read]:-}")" ;;
                    untar) v="$(both "${R[$s,$c]:-}" "${R[$s,${c}_stored]:-}" sec)" ;;
                    rm)
                        v="$(both "${R[$s,$c]:-}" "${R[$s,${c}_stored]:-}" sec)"
                        [ -z "${R[$s,rm_retries]:-}" ] || v="$v (run again ${R[$s,rm_retries]} times)"
                        ;;
                    *) v="$(sec "${R[$s,$c]:-}")" ;;
                esac
                printf ' %s |' "$v"
            done
            echo
        done
    fi
    if [ "$ROTATION" = 1 ]; then
        echo
        echo "| key change of $size_mb MiB in $mixed_files files | time |"
        echo "| --- | --- |"
        echo "| envelopefs bucket reencrypt (rewrap every header) | $(sec "${R[envelopefs,rotate]}") |"
        echo "| rclone copy into a new crypt remote | $(sec "${R[rclone,rotate]}") |"
        echo "| ratio rclone / envelopefs | $(awk -v a="${R[rclone,rotate]}" -v b="${R[envelopefs,rotate]}" 'BEGIN { printf "%.1f", a / b }') |"
    fi
} | tee "$results/table.md"
note "table in $results/table.md, log in $log"
