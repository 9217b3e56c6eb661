#!/usr/bin/env bash
# Run the Rust pjdfstest POSIX test suite in a fresh directory on a mounted
# file system (normally an envelopefs mount).
#
# Usage: scripts/pjdfstest.sh MOUNTPOINT [PJDFSTEST ARGS...]
#
# Extra arguments go to pjdfstest, e.g. test-name patterns (`chmod rename`),
# `-e` (match names exactly) or `-v`.
#
# Must run as root: many tests switch to the unprivileged users listed in
# the config ([dummy_auth]); missing users/groups are created.
#
# Exit status: 0 when every failing test is listed in the known-failures
# file, 1 when there are other failures (or pjdfstest crashed / timed out),
# 2 on usage or setup errors.
#
# Environment:
#   PJDFSTEST_LOG             full output (default: $TMPDIR/envelopefs-pjdfstest.log)
#   PJDFSTEST_CONFIG          config file (default: tests/pjdfstest/pjdfstest.toml)
#   PJDFSTEST_KNOWN_FAILURES  allow-list (default: tests/pjdfstest/known-failures.txt)
#   PJDFSTEST_SECONDARY_FS    directory on a different file system for the
#                             EXDEV tests; default: a temporary directory in
#                             $TMPDIR if that is on another file system than
#                             MOUNTPOINT; "none" skips those tests
#   PJDFSTEST_TIMEOUT         time limit for the whole run (default: 20m)
#   PJDFSTEST_KEEP=1          keep the work directory on the mount
#   PJDFSTEST_RETRY [1]       run each unexpected failure again on its own (twice at most);
#                             one that then passes is reported FLAKY and does not fail the run
#   PJDFSTEST_BIN             pjdfstest binary (default: from PATH or $HOME/.cargo/bin)
set -euo pipefail

prog="pjdfstest.sh"
die() {
    echo "$prog: error: $*" >&2
    exit 2
}
note() { echo "$prog: $*"; }

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
    exit 2
fi
mountpoint_arg="$1"
shift

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp_root="${TMPDIR:-/tmp}"
config="${PJDFSTEST_CONFIG:-$repo_root/tests/pjdfstest/pjdfstest.toml}"
known_file="${PJDFSTEST_KNOWN_FAILURES:-$repo_root/tests/pjdfstest/known-failures.txt}"
log="${PJDFSTEST_LOG:-$tmp_root/envelopefs-pjdfstest.log}"
timeout_limit="${PJDFSTEST_TIMEOUT:-20m}"

# --- tools ------------------------------------------------------------------
bin="${PJDFSTEST_BIN:-}"
if [ -z "$bin" ]; then
    for cand in "$(command -v pjdfstest 2>/dev/null || true)" \
        "${CARGO_INSTALL_ROOT:+$CARGO_INSTALL_ROOT/bin/pjdfstest}" \
        "${CARGO_HOME:-$HOME/.cargo}/bin/pjdfstest"; do
        if [ -n "$cand" ] && [ -x "$cand" ]; then bin="$cand"; break; fi
    done
    [ -n "$bin" ] || die "pjdfstest not found in PATH or \$HOME/.cargo/bin (run scripts/install-deps.sh)"
fi
[ -x "$bin" ] || die "pjdfstest binary '$bin' is not executable"
[ -r "$config" ] || die "config file '$config' not found"
[ "$(id -u)" -eq 0 ] || die "must run as root (the suite switches users, chowns files and creates device nodes)"

# --- mount point --------------------------------------------------------------
[ -d "$mountpoint_arg" ] || die "'$mountpoint_arg' is not a directory"
mnt="$(cd "$mountpoint_arg" && pwd -P)"
[ -w "$mnt" ] || die "'$mnt' is not writable"
if command -v mountpoint >/dev/null 2>&1 && ! mountpoint -q "$mnt"; then
    note "note: $mnt is not a mount point; testing the file system that contains it"
fi

# --- dummy users and groups ---------------------------------------------------
# pjdfstest refuses to start if a [dummy_auth] user or group is missing, or if
# the user's primary group is not the group named next to it.
ensure_user() {
    local user="$1" group="$2" want_gid have_gid
    if ! getent group "$group" >/dev/null; then
        groupadd --system "$group" || die "cannot create group '$group'"
        note "created group $group"
    fi
    want_gid="$(getent group "$group" | cut -d: -f3)"
    if ! getent passwd "$user" >/dev/null; then
        local shell=/usr/sbin/nologin
        [ -x "$shell" ] || shell=/bin/false
        useradd --system --no-create-home --home-dir / --shell "$shell" \
            --gid "$group" --comment "pjdfstest dummy user" "$user" ||
            die "cannot create user '$user'"
        note "created user $user (group $group)"
    fi
    have_gid="$(getent passwd "$user" | cut -d: -f4)"
    [ "$have_gid" = "$want_gid" ] ||
        die "user '$user' has primary gid $have_gid, but $config pairs it with group '$group' (gid $want_gid); fix the [dummy_auth] entries"
}

# Extract ["user", "group"] pairs from the [dummy_auth] section.
auth_pairs="$(awk '
    /^[[:space:]]*\[/ { in_auth = ($0 ~ /^[[:space:]]*\[dummy_auth\]/) }
    in_auth {
        sub(/#.*/, "")
        line = $0
        while (match(line, /\[[[:space:]]*"[^"]*"[[:space:]]*,[[:space:]]*"[^"]*"[[:space:]]*\]/)) {
            pair = substr(line, RSTART, RLENGTH)
            line = substr(line, RSTART + RLENGTH)
            gsub(/[][",]/, " ", pair)
            split(pair, f, " ")
            print f[1], f[2]
        }
    }' "$config")"
if [ -z "$auth_pairs" ]; then
    # pjdfstest defaults to users "nobody" and "tests" with their primary groups.
    getent passwd nobody >/dev/null || die "user 'nobody' is missing"
    getent passwd tests >/dev/null || auth_pairs="tests tests"
fi
while read -r u g; do
    if [ -n "$u" ]; then ensure_user "$u" "$g"; fi
done <<<"$auth_pairs"

# --- work directories ---------------------------------------------------------
mkdir -p "$(dirname "$log")"
secondary=""
secondary_tmp=""
workdir="$(mktemp -d "$mnt/pjdfstest.XXXXXX")" || die "cannot create a directory in $mnt"
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    if [ "${PJDFSTEST_KEEP:-0}" = 1 ]; then
        note "work directory kept: $workdir"
    else
        rm -rf -- "$workdir" 2>/dev/null || note "warning: could not remove $workdir"
    fi
    [ -z "$secondary_tmp" ] || rm -rf -- "$secondary_tmp"
}
trap cleanup EXIT

# The tests run partly as unprivileged users, who must be able to traverse
# the test directory and every directory above it.
chmod 0755 "$workdir"
d="$workdir"
while :; do
    perms="$(stat -c %a "$d")"
    if [ $(( 8#$perms & 8#001 )) -eq 0 ]; then
        note "warning: $d (mode $perms) is not searchable by other users; tests run as non-root users will fail"
    fi
    [ "$d" != / ] || break
    d="$(dirname "$d")"
done

case "${PJDFSTEST_SECONDARY_FS:-auto}" in
    none) ;;
    auto)
        secondary_tmp="$(mktemp -d "$tmp_root/pjdfstest-secondary.XXXXXX")"
        if [ "$(stat -c %d "$secondary_tmp")" != "$(stat -c %d "$workdir")" ]; then
            secondary="$secondary_tmp"
        else
            note "note: $tmp_root is on the same file system as $mnt; EXDEV tests are skipped (set PJDFSTEST_SECONDARY_FS)"
        fi
        ;;
    *)
        secondary="$PJDFSTEST_SECONDARY_FS"
        [ -d "$secondary" ] || die "PJDFSTEST_SECONDARY_FS='$secondary' is not a directory"
        ;;
esac

# --- run ------------------------------------------------------------------------
cmd=("$bin" -c "$config" -p "$workdir")
[ -z "$secondary" ] || cmd+=(-s "$secondary")
base_cmd=("${cmd[@]}")
cmd+=("$@")

{
    echo "# pjdfstest run: $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
    echo "# version: $("$bin" --version 2>&1)"
    echo "# command: ${cmd[*]}"
    echo "# kernel: $(uname -sr)"
    echo "# file system: $(stat -f -c %T "$workdir") ($(findmnt -n -o SOURCE,FSTYPE,OPTIONS --target "$workdir" 2>/dev/null || true))"
    echo
} >"$log"

note "running pjdfstest in $workdir (log: $log)"
start=$(date +%s)
rc=0
NO_COLOR=1 RUST_BACKTRACE=0 timeout --kill-after=30s "$timeout_limit" \
    "${cmd[@]}" >>"$log" 2>&1 </dev/null || rc=$?
elapsed=$(( $(date +%s) - start ))

# --- evaluate -------------------------------------------------------------------
# Result lines look like "<name><spaces><status>"; failure details follow on
# lines starting with a tab.
results="$(sed -e 's/\x1b\[[0-9;]*m//g' "$log" | awk '
    /^[^[:space:]#]+[[:space:]]+(ok|FAILED|skipped|PASSED UNEXPECTEDLY|failed as expected)[[:space:]]*$/ {
        name = $1
        status = $0
        sub(/^[^[:space:]]+[[:space:]]+/, "", status)
        sub(/[[:space:]]+$/, "", status)
        print status "\t" name
    }')"

count() { grep -c "^$1	" <<<"$results" || true; }
n_ok=$(count ok)
n_failed=$(count FAILED)
n_skipped=$(count skipped)
n_xfail=$(count "failed as expected")
n_xpass=$(count "PASSED UNEXPECTEDLY")

# Known failures: first field of each non-comment line.
known="$(if [ -r "$known_file" ]; then sed -e 's/#.*//' "$known_file" | awk 'NF { print $1 }' | sort -u; fi)"
is_known() { grep -qxF -- "$1" <<<"$known"; }

failed_names="$(awk -F'\t' '$1 == "FAILED" { print $2 }' <<<"$results" | sort -u)"
unexpected=()
expected=()
while read -r t; do
    [ -n "$t" ] || continue
    if is_known "$t"; then expected+=("$t"); else unexpected+=("$t"); fi
done <<<"$failed_names"
# Failures already marked expected by the config's settings.expected_failures.
while read -r t; do
    if [ -n "$t" ]; then expected+=("$t"); fi
done <<<"$(awk -F'\t' '$1 == "failed as expected" { print $2 }' <<<"$results" | sort -u)"

# A failure that does not repeat is reported as flaky, not as a pass: each unexpected
# failure is run again on its own, twice at most. Only failures that repeat fail the run.
# (docs/EXTERNAL-SUITES.md lists the flaky ones seen and why.)
flaky=()
retry_log="${log%.log}-retries.log"
if [ "${#unexpected[@]}" -gt 0 ] && [ "${PJDFSTEST_RETRY:-1}" = 1 ]; then
    : >"$retry_log"
    still=()
    for t in "${unexpected[@]}"; do
        passed=0
        for attempt in 1 2; do
            out="$(NO_COLOR=1 RUST_BACKTRACE=0 timeout --kill-after=10s 120s \
                "${base_cmd[@]}" "$t" 2>&1 </dev/null || true)"
            {
                echo "# retry $attempt of $t"
                printf '%s\n' "$out"
            } >>"$retry_log"
            if grep -qE "^$t[[:space:]]+ok[[:space:]]*$" <<<"$(sed -e 's/\x1b\[[0-9;]*m//g' <<<"$out")"; then
                passed=1
                break
            fi
        done
        if [ "$passed" = 1 ]; then flaky+=("$t"); else still+=("$t"); fi
    done
    unexpected=("${still[@]+"${still[@]}"}")
fi

now_passing=()
while read -r t; do
    [ -n "$t" ] || continue
    if grep -qxF -- "ok	$t" <<<"$results"; then now_passing+=("$t"); fi
done <<<"$known"

echo
echo "pjdfstest summary: ${n_ok} passed, $((n_failed + n_xfail)) failed (${#expected[@]} known), ${n_skipped} skipped in ${elapsed}s"
[ "$n_xpass" -eq 0 ] || echo "  ($n_xpass passed unexpectedly according to the config's expected_failures)"
summary_line="$(grep -a '^Summary:' "$log" | sed -e 's/\x1b\[[0-9;]*m//g' | tail -n 1 || true)"
[ -z "$summary_line" ] || echo "  pjdfstest: ${summary_line#Summary: }"

if [ "${#expected[@]}" -gt 0 ]; then
    echo "Known failures (${known_file#"$repo_root"/}):"
    printf '  %s\n' "${expected[@]}"
fi
if [ "${#now_passing[@]}" -gt 0 ]; then
    echo "Note: these known failures now pass; remove them from the known-failures list:"
    printf '  %s\n' "${now_passing[@]}"
fi
if [ "${#flaky[@]}" -gt 0 ]; then
    echo "FLAKY (failed in the full run, passed when run again on its own; retries in $retry_log):"
    printf '  %s\n' "${flaky[@]}"
fi
if [ "${#unexpected[@]}" -gt 0 ]; then
    echo "UNEXPECTED FAILURES (${#unexpected[@]}):"
    # Each name followed by the first lines of its panic message (the
    # tab-indented lines after the result line).
    printf '%s\n' "${unexpected[@]}" | awk '
        NR == FNR { want[$1] = 1; next }
        /^[\t ]/ { if (cur != "" && shown < 4) { sub(/^\t/, ""); print "      " $0; shown++ } ; next }
        { cur = "" }
        $NF == "FAILED" && ($1 in want) && !($1 in seen) { seen[$1] = 1; print "  " $1; cur = $1; shown = 0 }
    ' - <(sed -e 's/\x1b\[[0-9;]*m//g' "$log")
fi

status=0
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    last="$(awk -F'\t' 'END { print $2 }' <<<"$results")"
    echo "ERROR: pjdfstest did not finish within $timeout_limit (last completed test: ${last:-none})"
    status=1
elif [ -z "$summary_line" ]; then
    echo "ERROR: pjdfstest exited with status $rc without printing a summary; see $log"
    tail -n 20 "$log" | sed 's/^/  | /'
    status=1
elif [ "${#unexpected[@]}" -gt 0 ]; then
    status=1
elif [ "$rc" -ne 0 ] && [ $((n_failed + n_xfail + n_xpass)) -eq 0 ]; then
    echo "ERROR: pjdfstest exited with status $rc although no test failed; see $log"
    status=1
fi
[ "$n_ok" -gt 0 ] || { echo "ERROR: no test passed (wrong test pattern?)"; status=1; }

if [ "$status" -eq 0 ]; then
    echo "pjdfstest: PASS (log: $log)"
else
    echo "pjdfstest: FAIL (log: $log)"
fi
exit "$status"
