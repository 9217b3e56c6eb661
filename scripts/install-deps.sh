#!/usr/bin/env bash
# Install the tools needed to run the external test suites against an
# envelopefs mount (see docs/EXTERNAL-SUITES.md):
#
#   * Debian packages: fuse3 (fusermount3, /etc/fuse.conf), attr
#     (getfattr/setfattr), fio, rsync, curl (signed S3 requests in
#     tests/garage_cluster.rs); when crates must be built also gcc and
#     libacl1-dev, and "mount" if mount(8) is missing
#   * Rust crates:     pjdfstest, fsx (installed with `cargo install --locked`)
#   * Garage 2.5.0, the object store of the S3 tests (scripts/garage.sh
#     install: `cargo install garage --locked`, about 24 minutes on 2 cores beside another build)
#
# Idempotent: nothing is installed when everything is already present, and
# then the script prints nothing.  `apt-get update` runs at most once, and
# only when a package is missing.  Package installation needs root (or
# password-less sudo); the cargo installs go to $CARGO_HOME (default
# $HOME/.cargo) of the invoking user.
#
# Environment:
#   PJDFSTEST_VERSION  crate version to install (default: 0.2.2)
#   FSX_VERSION        crate version to install (default: 0.3.2)
#   GARAGE_BIN         a garage 2.5.0 binary to use instead of looking for one
#   GARAGE_INSTALL_LOG when set and Garage must be built, the build runs in
#                      the background (output in this file) and the script
#                      does not wait for it: `scripts/garage.sh wait-install
#                      LOG` does (scripts/test.sh, to overlap it with the
#                      project's own build). Unset: built here, in the
#                      foreground.
#   CARGO_HOME, CARGO_INSTALL_ROOT  honoured as by cargo itself
#   INSTALL_DEPS_SKIP_APT=1    do not touch Debian packages
#   INSTALL_DEPS_SKIP_CARGO=1  do not install the Rust tools (Garage included)
#   INSTALL_DEPS_SKIP_GARAGE=1 do not install Garage
set -euo pipefail

PJDFSTEST_VERSION="${PJDFSTEST_VERSION:-0.2.2}"
FSX_VERSION="${FSX_VERSION:-0.3.2}"
CARGO_HOME_DIR="${CARGO_HOME:-$HOME/.cargo}"
# Where `cargo install` puts binaries (it honours CARGO_INSTALL_ROOT).
CARGO_BIN_DIR="${CARGO_INSTALL_ROOT:-$CARGO_HOME_DIR}/bin"

APT_PACKAGES=(fuse3 attr fio rsync curl)
GARAGE_SH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/garage.sh"

die() {
    echo "install-deps: error: $*" >&2
    exit 1
}

note() {
    echo "install-deps: $*" >&2
}

# Run a command quietly; on failure print its output and abort.
run_quiet() {
    local what="$1"
    shift
    local out
    out="$(mktemp "${TMPDIR:-/tmp}/install-deps.XXXXXX")"
    if ! "$@" >"$out" 2>&1; then
        echo "install-deps: error: $what failed: $*" >&2
        sed 's/^/    /' "$out" >&2
        rm -f "$out"
        exit 1
    fi
    rm -f "$out"
}

# Prefix for commands that need root (empty when already root).
root_prefix() {
    if [ "$(id -u)" -eq 0 ]; then
        ROOT=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        ROOT=(sudo -n)
    else
        die "root privileges are needed to install: $* (re-run as root or configure password-less sudo)"
    fi
}

pkg_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = "installed" ]
}

# Path of an installed binary (PATH or cargo's bin dir), empty if missing.
find_bin() {
    if command -v "$1" >/dev/null 2>&1; then
        command -v "$1"
    elif [ -x "$CARGO_BIN_DIR/$1" ]; then
        echo "$CARGO_BIN_DIR/$1"
    fi
}

find_cargo() {
    if command -v cargo >/dev/null 2>&1; then
        command -v cargo
    elif [ -x "$CARGO_HOME_DIR/bin/cargo" ]; then
        echo "$CARGO_HOME_DIR/bin/cargo"
    fi
}

# ---------------------------------------------------------------------------
# Work out what is missing.
# ---------------------------------------------------------------------------
crates=()
if [ "${INSTALL_DEPS_SKIP_CARGO:-0}" != 1 ]; then
    [ -n "$(find_bin pjdfstest)" ] || crates+=("pjdfstest@$PJDFSTEST_VERSION")
    [ -n "$(find_bin fsx)" ] || crates+=("fsx@$FSX_VERSION")
fi
need_garage=0
if [ "${INSTALL_DEPS_SKIP_CARGO:-0}" != 1 ] && [ "${INSTALL_DEPS_SKIP_GARAGE:-0}" != 1 ]; then
    "$GARAGE_SH" path >/dev/null 2>&1 || need_garage=1
fi

missing_pkgs=()
if [ "${INSTALL_DEPS_SKIP_APT:-0}" != 1 ]; then
    command -v dpkg-query >/dev/null 2>&1 ||
        die "dpkg-query not found: this script supports Debian/Ubuntu only (set INSTALL_DEPS_SKIP_APT=1 to skip packages)"
    wanted=("${APT_PACKAGES[@]}")
    # pjdfstest's rmdir EBUSY test runs mount/umount (package "mount" is
    # required-priority, but minimal container images may lack it).
    command -v mount >/dev/null 2>&1 || wanted+=(mount)
    if [ "${#crates[@]}" -gt 0 ]; then
        # Building the crates needs a C toolchain for linking (rustup does
        # not ship one), and pjdfstest documents libacl1-dev as a Linux
        # build requirement.
        command -v cc >/dev/null 2>&1 || wanted+=(gcc libc6-dev)
        wanted+=(libacl1-dev)
    elif [ "$need_garage" = 1 ]; then
        # Garage builds its bundled C libraries (LMDB, SQLite, zstd).
        command -v cc >/dev/null 2>&1 || wanted+=(gcc libc6-dev)
    fi
    for p in "${wanted[@]}"; do
        pkg_installed "$p" || missing_pkgs+=("$p")
    done
fi

# ---------------------------------------------------------------------------
# Debian packages.
# ---------------------------------------------------------------------------
if [ "${#missing_pkgs[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: ${missing_pkgs[*]}"
    root_prefix "${missing_pkgs[@]}"
    note "installing packages: ${missing_pkgs[*]}"
    run_quiet "apt-get update" "${ROOT[@]}" apt-get -qq update
    run_quiet "apt-get install" "${ROOT[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get -qq install -y --no-install-recommends "${missing_pkgs[@]}"
fi

# ---------------------------------------------------------------------------
# Garage (first: in the background it overlaps the builds below and the
# caller's).
# ---------------------------------------------------------------------------
if [ "$need_garage" = 1 ]; then
    [ -n "$(find_cargo)" ] || die "cargo not found in PATH or $CARGO_HOME_DIR/bin (install Rust with rustup first)"
    if [ -n "${GARAGE_INSTALL_LOG:-}" ]; then
        note "building garage 2.5.0 in the background (log: $GARAGE_INSTALL_LOG)"
        "$GARAGE_SH" install --background "$GARAGE_INSTALL_LOG"
    else
        note "building garage 2.5.0 with cargo install --locked (about 24 minutes on 2 cores beside another build)"
        run_quiet "scripts/garage.sh install" "$GARAGE_SH" install
    fi
fi

# ---------------------------------------------------------------------------
# Rust tools.
# ---------------------------------------------------------------------------
if [ "${#crates[@]}" -gt 0 ]; then
    cargo_bin="$(find_cargo)"
    [ -n "$cargo_bin" ] || die "cargo not found in PATH or $CARGO_HOME_DIR/bin (install Rust with rustup first)"
    for c in "${crates[@]}"; do
        note "building $c with cargo install --locked (takes a few minutes)"
        run_quiet "cargo install $c" "$cargo_bin" install --quiet --locked "$c"
    done
fi

# ---------------------------------------------------------------------------
# Final checks (silent when everything is fine).
# ---------------------------------------------------------------------------
if [ "${INSTALL_DEPS_SKIP_CARGO:-0}" != 1 ]; then
    for b in pjdfstest fsx; do
        [ -n "$(find_bin "$b")" ] || die "$b is still missing after installation"
    done
    command -v pjdfstest >/dev/null 2>&1 ||
        note "note: $CARGO_BIN_DIR is not in PATH (scripts/pjdfstest.sh and scripts/fsx.sh look there too)"
    if [ "${INSTALL_DEPS_SKIP_GARAGE:-0}" != 1 ] && [ -z "${GARAGE_INSTALL_LOG:-}" ]; then
        "$GARAGE_SH" path >/dev/null || die "garage 2.5.0 is still missing after installation"
    fi
fi
if [ "${INSTALL_DEPS_SKIP_APT:-0}" != 1 ]; then
    command -v fusermount3 >/dev/null 2>&1 || die "fusermount3 not found although fuse3 is installed"
fi
[ -e /dev/fuse ] || note "warning: /dev/fuse does not exist; FUSE mounts will fail (load the fuse module or pass --device /dev/fuse to the container)"
exit 0
