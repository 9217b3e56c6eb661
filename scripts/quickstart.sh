#!/usr/bin/env bash
# envelopefs in two minutes: build, create a store, mount it, copy files in, rotate the
# bucket's key, re-encrypt the bucket with one control-file write, and show that every
# object's header changed while its data did not. Unmounts at the end unless --keep.
#
# Usage: scripts/quickstart.sh [--keep]
# Environment:
#   ENVELOPEFS_QUICKSTART_DIR  where the store and mountpoint go
#                              (default: ${XDG_DATA_HOME:-~/.local/share}/envelopefs-quickstart)
#   ENVELOPEFS_BIN             use this binary instead of building a release one
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
case "${1:-}" in
    --keep) keep=1 ;;
    "") ;;
    *) echo "usage: scripts/quickstart.sh [--keep]" >&2; exit 2 ;;
esac

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

say "5. Rotate the key, then re-encrypt the bucket with one control-file write"
envelopefs key rotate photos-key | grep -E '"current_version"'
run sh -c "echo latest > '$mnt/.envelopefs/buckets/photos/reencrypt'"
wr="$(cat "$mnt/.envelopefs/buckets/photos/reencrypt")"
echo "work request: $wr"
for _ in $(seq 1 100); do
    state="$(grep -o '"status": "[A-Z_]*"' "$mnt/.envelopefs/work-requests/$wr" | cut -d'"' -f4)"
    [ "$state" = SUCCEEDED ] || [ "$state" = FAILED ] && break
    sleep 0.1
done
run grep -E '"(status|objects_rewrapped|objects_skipped|target_key_version)"' "$mnt/.envelopefs/work-requests/$wr"
[ "$state" = SUCCEEDED ] || { echo "quickstart: the re-encrypt did not succeed" >&2; exit 1; }

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

say "7. Disable the old key version: everything still opens (it is all under version 2)"
envelopefs key disable photos-key --version 1 | grep -B2 '"version": 1' | grep state
run cat "$mnt/photos/hello.txt"

if [ "$keep" = 1 ]; then
    say "Still mounted at $mnt (store: $store). Unmount with: $bin unmount $mnt"
else
    say "8. Unmount"
    envelopefs unmount "$mnt"
    trap - EXIT
fi
