#!/usr/bin/env bash
# Mounts a fresh envelopefs store and runs the external POSIX suites against it:
# pjdfstest (scripts/pjdfstest.sh) and fsx (scripts/fsx.sh). Unmounts on exit, whatever
# happens. Needs root (pjdfstest switches users) and a built binary.
#
# Usage: scripts/mounted-suites.sh [path/to/envelopefs]
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/debug/envelopefs}"
[ -x "$bin" ] || { echo "mounted-suites: no binary at $bin (cargo build first)" >&2; exit 2; }
bin="$(realpath "$bin")"

# Short paths: pjdfstest builds paths near PATH_MAX below the mountpoint, and the backing
# path is the store path plus the same names, so the store path must not be longer.
work="$(mktemp -d /tmp/efs.XXXXXX)"
store="$work/s"
mnt="$work/m"
mkdir "$mnt"
chmod 755 "$work"
cleanup() {
    if grep -q " $mnt " /proc/self/mounts; then
        "$bin" unmount "$mnt" || fusermount3 -uz "$mnt" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

head -c 32 /dev/urandom > "$work/key"
"$bin" init "$store" --key-file "$work/key" >/dev/null
"$bin" mount "$store" "$mnt" --key-file "$work/key" --allow-other
mkdir "$mnt/suite"
chmod 755 "$mnt/suite"

status=0
scripts/pjdfstest.sh "$mnt/suite" || status=1
scripts/fsx.sh "$mnt/suite" || status=1
"$bin" unmount "$mnt"
exit "$status"
