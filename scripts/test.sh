#!/usr/bin/env bash
# Runs every test of envelopefs: formatting, lints, unit and integration tests (which mount
# real filesystems), then pjdfstest and fsx against a mount, of a local store and of a store
# in Garage. Installs what it needs first.
# `.ci/run` calls exactly this. Needs root (FUSE mounts with allow_other, pjdfstest).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n== %s\n' "$*"; }
results="$(mktemp)"
# Garage (the object store of the S3 tests) takes about 24 minutes to build on 2 cores beside our own build: when it
# is missing, install-deps.sh starts its build in the background (output in this log) and
# the step before `cargo test` waits for it, so it overlaps fmt, clippy and the build.
mkdir -p target
export GARAGE_INSTALL_LOG="$PWD/target/garage-install.log"
rm -f "$GARAGE_INSTALL_LOG" "$GARAGE_INSTALL_LOG".*
trap 'rm -f "$results"; scripts/garage.sh cancel-install "$GARAGE_INSTALL_LOG"' EXIT

# Mounts of envelopefs that were there before (a user's own): not this run's to clean up.
mounts_before="$(grep -F envelopefs /proc/self/mounts | sort || true)"

step "dependencies"
scripts/install-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

# Fault injection (src/fault.rs) exists only in builds with the cargo feature
# `fault-injection`: the tests run with it; the build users get (no feature) is linted and
# checked to ignore ENVELOPEFS_FAULT_INJECTION below. Both builds share the dependencies.
step "cargo clippy --all-targets -- -D warnings (with and without fault-injection)"
cargo clippy --all-targets --features fault-injection -- -D warnings
cargo clippy --all-targets -- -D warnings

step "cargo test --features fault-injection (unit, property, CLI and mounted tests)"
cargo build --all-targets --features fault-injection
# The tests that start Garage clusters (tests/common/garage.rs) need it now; they find it
# through GARAGE_BIN. A failed build stops the run here, with its log's tail.
GARAGE_BIN="$(scripts/garage.sh wait-install "$GARAGE_INSTALL_LOG")"
export GARAGE_BIN
echo "garage: $GARAGE_BIN"
cargo test --all-targets --features fault-injection 2>&1 | tee "$results"

step "the build without faults ignores ENVELOPEFS_FAULT_INJECTION (tests/fault_switch.rs)"
cargo test --test fault_switch 2>&1 | tee -a "$results"
# That build left target/debug/envelopefs without faults: the binary of the steps below.
if target/debug/envelopefs --version | grep -q "fault injection"; then
    echo "test.sh: target/debug/envelopefs is a fault-injection build" >&2
    exit 1
fi

step "quickstart (README's first command), with the debug binary in a temporary place"
qs="$(mktemp -d)"
ENVELOPEFS_BIN=target/debug/envelopefs ENVELOPEFS_QUICKSTART_DIR="$qs/quickstart" scripts/quickstart.sh
rm -rf "$qs"

step "pjdfstest and fsx on a mount"
scripts/mounted-suites.sh target/debug/envelopefs

step "pjdfstest and fsx on a mount of a store in an object store (Garage)"
scripts/mounted-suites.sh --s3 target/debug/envelopefs

step "no mount left behind"
left="$(comm -13 <(printf '%s\n' "$mounts_before") <(grep -F envelopefs /proc/self/mounts | sort || true) | sed '/^$/d')"
if [ -n "$left" ]; then
    echo "test.sh: envelopefs mounts are left behind:" >&2
    printf '%s\n' "$left" >&2
    exit 1
fi
echo "none"

passed=$(grep -Eo 'test result: ok\. [0-9]+ passed' "$results" | awk '{s+=$4} END {print s+0}')
echo
echo "cargo tests: $passed passed, 0 failed"
