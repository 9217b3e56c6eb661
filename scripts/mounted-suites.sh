#!/usr/bin/env bash
# Mounts a fresh envelopefs store and runs the external POSIX suites against it:
# pjdfstest (scripts/pjdfstest.sh) and fsx (scripts/fsx.sh). Unmounts on exit, whatever
# happens. Needs root (pjdfstest switches users) and a built binary.
#
# Usage: scripts/mounted-suites.sh [--s3] [path/to/envelopefs]
#
# With --s3 the store lives in an object store: the script starts a three-node Garage
# cluster on loopback (scripts/garage.sh; Garage 2.5.0 must be installed, see
# docs/GARAGE.md), makes a store at s3://envelopefs-test/suites, mounts it with its staging
# directory (ENVELOPEFS_STAGING_DIR) in the work directory, runs the suites there against
# the object-store allow-list below, then unmounts and stops the cluster. Its environment:
#   S3_PJDFSTEST_ARGS  pjdfstest arguments (test-name patterns); default: the whole suite
#   S3_FSX_OPS         fsx operations per seed on the object store (default 5000: every
#                      close and fsync uploads the whole file, see docs/EXTERNAL-SUITES.md)
# Each suite's time is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
s3=0
if [ "${1:-}" = "--s3" ]; then
    s3=1
    shift
fi
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
garage_dir=""
cleanup() {
    if grep -q " $mnt " /proc/self/mounts; then
        "$bin" unmount "$mnt" || fusermount3 -uz "$mnt" || true
    fi
    if [ -n "$garage_dir" ]; then
        scripts/garage.sh stop "$garage_dir" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

head -c 32 /dev/urandom > "$work/key"
if [ "$s3" = 1 ]; then
    garage_dir="$work/garage"
    mkdir "$garage_dir"
    t0=$(date +%s)
    scripts/garage.sh start "$garage_dir" --nodes 3 >/dev/null
    # shellcheck disable=SC1091  # written by garage.sh start
    . "$garage_dir/env"
    unset AWS_PROFILE AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL_S3
    echo "mounted-suites: Garage cluster up in $(( $(date +%s) - t0 ))s"
    store="s3://$GARAGE_TEST_BUCKET/suites"
    export ENVELOPEFS_STAGING_DIR="$work/staging"
    mkdir "$ENVELOPEFS_STAGING_DIR"
    # pjdfstest failures the object-store mount is expected to have, each with its reason
    # (docs/EXTERNAL-SUITES.md, "On an object-store mount", says more).
    known="$work/known-failures-s3.txt"
    cat > "$known" <<'EOF'
# Hard links are refused on an object-store mount (EPERM): an S3 object has one name.
EOF
    export PJDFSTEST_KNOWN_FAILURES="$known"
    export FSX_OPS="${S3_FSX_OPS:-5000}"
    export PJDFSTEST_LOG="${TMPDIR:-/tmp}/envelopefs-pjdfstest-s3.log"
    export FSX_LOG="${TMPDIR:-/tmp}/envelopefs-fsx-s3.log"
    export FSX_ARTIFACTS="${TMPDIR:-/tmp}/envelopefs-fsx-s3-artifacts"
fi

"$bin" init "$store" --key-file "$work/key" >/dev/null
"$bin" mount "$store" "$mnt" --key-file "$work/key" --allow-other
if [ "$s3" = 1 ]; then
    # The bucket through the CLI (which goes through the mount).
    "$bin" --store "$store" --key-file "$work/key" bucket create --name suite >/dev/null
else
    mkdir "$mnt/suite"
fi
chmod 755 "$mnt/suite"

status=0
t0=$(date +%s)
if [ "$s3" = 1 ]; then
    # shellcheck disable=SC2086  # patterns, split on purpose
    scripts/pjdfstest.sh "$mnt/suite" ${S3_PJDFSTEST_ARGS:-} || status=1
else
    scripts/pjdfstest.sh "$mnt/suite" || status=1
fi
t1=$(date +%s)
scripts/fsx.sh "$mnt/suite" || status=1
t2=$(date +%s)
"$bin" unmount "$mnt"
where="a local store"
[ "$s3" = 0 ] || where="a store in Garage"
echo "mounted-suites ($where): pjdfstest $((t1 - t0))s, fsx $((t2 - t1))s"
exit "$status"
