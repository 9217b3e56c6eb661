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
#   S3_FSX_SEEDS       fsx seeds on the object store (default "1 2": one run of each profile)
#   S3_FSX_OPS         fsx operations per seed there (default 5000). Every close and fsync
#                      uploads the whole file, so an fsx operation costs about ten times what
#                      it does on a local store (docs/EXTERNAL-SUITES.md)
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
# Hard links are refused (EPERM): an S3 object has one key, and a second name would be a
# second object with its own header (docs/SEMANTICS-OBJECT-STORE.md). These tests make one.
link::changed_ctime_success::block
link::changed_ctime_success::char
link::changed_ctime_success::fifo
link::changed_ctime_success::regular
link::changed_ctime_success::socket
link::remove_link::block
link::remove_link::char
link::remove_link::fifo
link::remove_link::regular
link::remove_link::socket
link::share_metadata::block
link::share_metadata::char
link::share_metadata::fifo
link::share_metadata::regular
link::share_metadata::socket
rename::preserve_metadata::block
rename::preserve_metadata::char
rename::preserve_metadata::fifo
rename::preserve_metadata::regular
rename::preserve_metadata::socket
rename::to_multiply_linked::block
rename::to_multiply_linked::char
rename::to_multiply_linked::fifo
rename::to_multiply_linked::regular
rename::to_multiply_linked::socket
unlink::unchanged_ctime_failed::block
unlink::unchanged_ctime_failed::char
unlink::unchanged_ctime_failed::fifo
unlink::unchanged_ctime_failed::regular
unlink::unchanged_ctime_failed::socket
unlink::update_ctime_success::block
unlink::update_ctime_success::char
unlink::update_ctime_success::fifo
unlink::update_ctime_success::regular
unlink::update_ctime_success::socket
# A path near PATH_MAX (4095 bytes) makes an S3 key longer than the 1,024 bytes S3 allows:
# the mount answers EIO (ENAMETOOLONG would be the right errno; the test wants success).
chmod::enametoolong_path
chown::enametoolong_path
chown::lchown::enametoolong_path
link::enametoolong_path
mkdir::enametoolong_path
mkfifo::enametoolong_path
mknod::enametoolong_path
mknod::privileged::enametoolong_path
open::enametoolong_path
rename::enametoolong_path
rmdir::enametoolong_path
symlink::enametoolong_path
truncate::enametoolong_path
unlink::enametoolong_path
# Creating or removing an entry does not update the parent directory's mtime and ctime (its
# marker object's attributes), nor, for mknod, the times pjdfstest expects of the new node.
mkdir::changed_time_fields_success
mkfifo::changed_time_fields_success
mknod::changed_time_fields_success
mknod::changed_times_success::block
mknod::changed_times_success::char
open::changed_time_fields_success
rmdir::changed_time_parent_success
symlink::changed_parent_time_success
unlink::update_mtime_ctime_success_folder::block
unlink::update_mtime_ctime_success_folder::char
unlink::update_mtime_ctime_success_folder::fifo
unlink::update_mtime_ctime_success_folder::regular
unlink::update_mtime_ctime_success_folder::socket
unlink::update_mtime_ctime_success_folder::symlink
# A directory's st_nlink does not count its subdirectories after one is moved in.
rename::updates_link_parent
EOF
    export PJDFSTEST_KNOWN_FAILURES="$known"
    export FSX_OPS="${S3_FSX_OPS:-5000}"
    export FSX_SEEDS="${S3_FSX_SEEDS:-1 2}"
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
