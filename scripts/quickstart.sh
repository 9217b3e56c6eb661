#!/usr/bin/env bash
# envelopefs in two minutes: build, create a store, mount it, copy files in, rotate the
# bucket's key, re-encrypt the bucket with one control-file write, and show that every
# object's header changed while its data did not. Unmounts at the end unless --keep.
#
# Usage: scripts/quickstart.sh [--s3] [--keep]
#   (default)  the store is a directory on local disk
#   --s3       the store is in an object store: a three-node Garage cluster on loopback,
#              started for the demo (scripts/garage.sh, in a new temporary directory) and
#              stopped at the end, also when a step fails. The store is s3://quickstart/vault;
#              headers are compared in the objects' metadata, data by their ETags.
#   --keep     leave the demo mounted. With --s3 it also leaves Garage running (only when
#              the demo succeeded) and prints the commands that stop both.
# Environment:
#   ENVELOPEFS_QUICKSTART_DIR  where the store and mountpoint go
#                              (default: ${XDG_DATA_HOME:-~/.local/share}/envelopefs-quickstart;
#                              with --s3: a new directory under ${TMPDIR:-/tmp})
#   ENVELOPEFS_BIN             use this binary instead of building a release one
#   GARAGE_BIN                 with --s3: the garage binary (else scripts/garage.sh finds or
#                              builds garage 2.5.0; a build takes about 20 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
s3=0
for arg in "$@"; do
    case "$arg" in
        --keep) keep=1 ;;
        --s3) s3=1 ;;
        *) echo "usage: scripts/quickstart.sh [--s3] [--keep]" >&2; exit 2 ;;
    esac
done

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

# fusermount3 and getfattr are needed; install them if this machine lacks them.
if ! command -v fusermount3 >/dev/null || ! command -v getfattr >/dev/null; then
    INSTALL_DEPS_SKIP_CARGO=1 scripts/install-deps.sh
fi

if [ -n "${ENVELOPEFS_BIN:-}" ]; then
    bin="$(realpath "$ENVELOPEFS_BIN")"
else
    say "Building envelopefs (release)"
    cargo build --release --quiet
    bin="$PWD/target/release/envelopefs"
fi
envelopefs() { printf '$ envelopefs %s\n' "$*"; "$bin" "$@"; }

# The steps both demos (a local store, --s3) show the same way, on $mnt with files from $dir.
demo_bucket_and_files() {
    say "3. A master key and a bucket that uses it (the CLI talks to the mount: no passphrase)"
    envelopefs key create --alias photos-key >/dev/null
    run mkdir "$mnt/photos"
    run sh -c "echo photos-key > '$mnt/.envelopefs/buckets/photos/kms-key-id'"
    run cat "$mnt/.envelopefs/buckets/photos/kms-key-id"

    say "4. Copy files in with cp"
    mkdir -p "$dir/src/album"
    head -c 3000000 /dev/urandom > "$dir/src/album/big.jpg"
    printf 'hello from envelopefs\n' > "$dir/src/hello.txt"
    head -c 40000 /dev/urandom > "$dir/src/album/small.png"
    run cp -r "$dir/src/." "$mnt/photos/"
    run ls -lR "$mnt/photos"
    run getfattr --absolute-names -n user.envelopefs.key-version "$mnt/photos/album/big.jpg"
}

demo_reencrypt() {
    say "5. Rotate the key, then re-encrypt the bucket with one control-file write"
    envelopefs key rotate photos-key | grep -E '"current_version"'
    run sh -c "echo latest > '$mnt/.envelopefs/buckets/photos/reencrypt'"
    wr="$(cat "$mnt/.envelopefs/buckets/photos/reencrypt")"
    echo "work request: $wr"
    state=""
    for _ in $(seq 1 300); do
        state="$(grep -o '"status": "[A-Z_]*"' "$mnt/.envelopefs/work-requests/$wr" | cut -d'"' -f4)"
        [ "$state" = SUCCEEDED ] || [ "$state" = FAILED ] && break
        sleep 0.1
    done
    run grep -E '"(status|objects_rewrapped|objects_skipped|target_key_version)"' "$mnt/.envelopefs/work-requests/$wr"
    [ "$state" = SUCCEEDED ] || { echo "quickstart: the re-encrypt did not succeed" >&2; exit 1; }
}

demo_disable_old_version() {
    say "7. Disable the old key version: everything still opens (it is all under version 2)"
    envelopefs key disable photos-key --version 1 | grep -B2 '"version": 1' | grep state
    run cat "$mnt/photos/hello.txt"
}

if [ "$s3" = 1 ]; then
    # --- The same walk-through on a store in an object store: a Garage cluster on loopback.
    if [ -n "${ENVELOPEFS_QUICKSTART_DIR:-}" ]; then
        dir="$ENVELOPEFS_QUICKSTART_DIR"
        # What an earlier --s3 --keep left there: its mount, then its cluster.
        if grep -q " $dir/mnt " /proc/self/mounts 2>/dev/null; then
            "$bin" unmount "$dir/mnt"
        fi
        scripts/garage.sh stop "$dir/garage" 2>/dev/null || true
        rm -rf "$dir"
        mkdir -p "$dir"
        made_dir=0
    else
        dir="$(mktemp -d "${TMPDIR:-/tmp}/envelopefs-quickstart-s3.XXXXXX")"
        made_dir=1
    fi
    dir="$(cd "$dir" && pwd -P)"
    mnt="$dir/mnt"
    cluster="$dir/garage"
    s3_bucket=quickstart
    store="s3://$s3_bucket/vault"
    mkdir -p "$mnt" "$dir/staging"

    # Unmount, then stop Garage (by the pids scripts/garage.sh recorded), on success and on
    # failure alike; with --keep only on failure.
    s3_cleanup() {
        local rc=$?
        if [ "$keep" = 1 ] && [ "$rc" = 0 ]; then
            return 0
        fi
        if grep -q " $mnt " /proc/self/mounts 2>/dev/null; then
            "$bin" unmount "$mnt" 2>/dev/null || fusermount3 -u "$mnt" 2>/dev/null || true
        fi
        scripts/garage.sh stop "$cluster" 2>/dev/null || true
        if [ "$rc" = 0 ]; then
            [ "$made_dir" = 0 ] || rm -rf "$dir"
        else
            echo "quickstart: failed (exit $rc); Garage stopped, its logs are in $cluster/node*/garage.log" >&2
        fi
    }
    trap s3_cleanup EXIT
    trap 'exit 130' INT TERM HUP

    if ! garage="$(scripts/garage.sh path 2>/dev/null)"; then
        say "Installing Garage 2.5.0 (scripts/garage.sh install builds it with cargo: about 20 minutes)"
        garage="$(scripts/garage.sh install)"
    fi
    say "0. Start a three-node Garage cluster on 127.0.0.1 (all its files in $cluster)"
    printf '$ scripts/garage.sh start %s --bucket %s\n' "$cluster" "$s3_bucket"
    GARAGE_BIN="$garage" scripts/garage.sh start "$cluster" --bucket "$s3_bucket"
    # The endpoint, region and the access key, as for any S3 tool (the file is mode 0600).
    # shellcheck source=/dev/null
    . "$cluster/env"
    echo "AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL AWS_REGION=$AWS_REGION (and the key, in $cluster/env)"

    # A demo passphrase kept beside the store: for this walk-through only.
    umask 077
    printf 'quickstart-demo-passphrase\n' > "$dir/passphrase"
    umask 022
    export ENVELOPEFS_STORE="$store" ENVELOPEFS_PASSWORD_FILE="$dir/passphrase"
    # Where the mount stages object bodies (ciphertext only) on their way to and from S3.
    export ENVELOPEFS_STAGING_DIR="$dir/staging"

    # A signed S3 request to the cluster with curl (no body: the payload hash is that of
    # nothing); the key goes to curl on a pipe, never on its command line.
    s3req() {
        curl -sS -f --aws-sigv4 "aws:amz:$AWS_REGION:s3" \
            -H 'x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' \
            -K <(printf 'user = "%s:%s"\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY") "$@"
    }
    # The S3 keys below PREFIX/ (one per line). The demo's names need no URL encoding (they
    # are ASCII), only the prefix's slashes.
    s3_keys() {
        s3req "$AWS_ENDPOINT_URL/$s3_bucket?list-type=2&prefix=${1//\//%2F}%2F" |
            grep -o '<Key>[^<]*</Key>' | sed 's/<Key>\(.*\)<\/Key>/\1/'
    }
    # "KEY ETAG HEADER-SHA256" for every object of bucket photos that has a header.
    s3_objects() {
        local k h etag hdr
        for k in $(s3_keys vault/photos); do
            h="$(s3req -I "$AWS_ENDPOINT_URL/$s3_bucket/$k" | tr -d '\r')"
            etag="$(sed -n 's/^[Ee][Tt][Aa][Gg]: *//p' <<<"$h")"
            hdr="$(sed -n 's/^x-amz-meta-envelopefs-header: *//Ip' <<<"$h")"
            [ -n "$hdr" ] || continue
            printf '%s %s %s\n' "$k" "$etag" "$(printf '%s' "$hdr" | sha256sum | cut -c1-16)"
        done
    }

    say "1. Create a store in the bucket $s3_bucket (the ciphertext lives in $store)"
    envelopefs init "$store"
    echo "S3 keys under vault/ now: $(s3_keys vault | tr '\n' ' ')"

    say "2. Mount it at $mnt"
    envelopefs mount "$store" "$mnt"

    demo_bucket_and_files
    # Every file is one S3 object (its name in the clear, as in a local store of format
    # version 1), its wrapped key in its metadata.
    objects_before=""
    for _ in $(seq 1 100); do
        objects_before="$(s3_objects)"
        [ "$(grep -c . <<<"$objects_before")" -ge 3 ] && break
        sleep 0.1
    done
    echo "S3 objects of bucket photos (key, ETag, sha256 of the header metadata):"
    printf '%s\n' "$objects_before" | sed 's/^/  /'
    [ "$(grep -c . <<<"$objects_before")" = 3 ] ||
        { echo "quickstart: expected 3 objects with a header in s3://$s3_bucket/vault/photos/" >&2; exit 1; }

    demo_reencrypt

    say "6. Headers changed, data did not"
    run getfattr --absolute-names -n user.envelopefs.key-version "$mnt/photos/album/big.jpg"
    objects_after="$(s3_objects)"
    echo "S3 objects of bucket photos after the re-encrypt:"
    printf '%s\n' "$objects_after" | sed 's/^/  /'
    # Same keys and ETags (a server-side copy onto itself), every header different.
    if [ "$(cut -d' ' -f1,2 <<<"$objects_before")" = "$(cut -d' ' -f1,2 <<<"$objects_after")" ]; then
        echo "ETags of every object: identical (no data rewritten or uploaded)"
    else
        echo "data: CHANGED (unexpected)"; exit 1
    fi
    changed="$(join <(cut -d' ' -f1,3 <<<"$objects_before" | sort) <(cut -d' ' -f1,3 <<<"$objects_after" | sort) |
        awk '$2 != $3' | grep -c .)" || true
    if [ "$changed" = 3 ]; then echo "headers (wrapped data keys) in the metadata: all 3 changed"; else echo "headers: $changed of 3 changed (unexpected)"; exit 1; fi
    run cmp "$dir/src/album/big.jpg" "$mnt/photos/album/big.jpg"
    echo "plaintext still reads back byte for byte"

    demo_disable_old_version

    if [ "$keep" = 1 ]; then
        say "Still mounted at $mnt (store: $store), Garage still running. Stop both with:"
        echo "  . $cluster/env       # the endpoint and key, for envelopefs as for any S3 tool"
        echo "  $bin unmount $mnt"
        echo "  scripts/garage.sh stop $cluster"
        [ "$made_dir" = 0 ] || echo "  rm -rf $dir"
    else
        say "8. Unmount and stop Garage"
        envelopefs unmount "$mnt"
        printf '$ scripts/garage.sh stop %s\n' "$cluster"
        scripts/garage.sh stop "$cluster"
    fi
    exit 0
fi

dir="${ENVELOPEFS_QUICKSTART_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/envelopefs-quickstart}"
store="$dir/store"
mnt="$dir/mnt"
if grep -q " $mnt " /proc/self/mounts 2>/dev/null; then
    "$bin" unmount "$mnt"
fi
rm -rf "$dir"
mkdir -p "$mnt"
# A demo passphrase kept beside the store: for this walk-through only.
umask 077
printf 'quickstart-demo-passphrase\n' > "$dir/passphrase"
umask 022
export ENVELOPEFS_STORE="$store" ENVELOPEFS_PASSWORD_FILE="$dir/passphrase"

say "1. Create a store (the ciphertext lives in $store)"
envelopefs init "$store"

say "2. Mount it at $mnt"
envelopefs mount "$store" "$mnt"
trap '[ $keep = 1 ] || "$bin" unmount "$mnt" 2>/dev/null || true' EXIT

demo_bucket_and_files

content_digest() { # sha256 of every backing file's bytes (data only; headers are xattrs)
    (cd "$store/photos" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
}
header_digest() {
    (cd "$store/photos" && find . -type f -print0 | sort -z |
        xargs -0 -n1 getfattr --only-values -n user.envelopefs.header | sha256sum)
}
data_before="$(content_digest)"
headers_before="$(header_digest)"
mtimes_before="$(cd "$store/photos" && find . -type f -printf '%p %T@\n' | sort)"

demo_reencrypt

say "6. Headers changed, data did not"
run getfattr --absolute-names -n user.envelopefs.key-version "$mnt/photos/album/big.jpg"
data_after="$(content_digest)"
headers_after="$(header_digest)"
mtimes_after="$(cd "$store/photos" && find . -type f -printf '%p %T@\n' | sort)"
if [ "$headers_before" != "$headers_after" ]; then echo "headers (wrapped data keys): changed"; else echo "headers: UNCHANGED (unexpected)"; exit 1; fi
if [ "$data_before" = "$data_after" ] && [ "$mtimes_before" = "$mtimes_after" ]; then
    echo "data bytes and mtimes of every backing file: identical (no data rewritten)"
else
    echo "data: CHANGED (unexpected)"; exit 1
fi
run cmp "$dir/src/album/big.jpg" "$mnt/photos/album/big.jpg"
echo "plaintext still reads back byte for byte"

demo_disable_old_version

if [ "$keep" = 1 ]; then
    say "Still mounted at $mnt (store: $store). Unmount with: $bin unmount $mnt"
else
    say "8. Unmount"
    envelopefs unmount "$mnt"
    trap - EXIT
fi
