#!/usr/bin/env bash
# Builds the fuzz targets of fuzz/ with libFuzzer on the stable toolchain and runs them.
#
#   scripts/fuzz.sh build                 build every target
#   scripts/fuzz.sh run TARGET [SECONDS]  fuzz one target (default 600 s), growing its corpus
#   scripts/fuzz.sh all [SECONDS]         fuzz every target in turn
#
# Targets: header, bucket_record, keystore, config, ctl, headers_backup, kms_blob, journal.
# Their bodies are in src/fuzzing.rs; corpora are kept in fuzz/corpus/TARGET (merged after
# each run: only inputs that add coverage beyond the seeds stay) and replayed by plain
# `cargo test` (tests/fuzz_corpora.rs), so CI needs neither nightly nor libFuzzer.
# Needs a C++ compiler (g++) for libFuzzer itself. Crashes land in fuzz/artifacts/TARGET.
#
# The instrumentation is what `cargo fuzz` passes, minus AddressSanitizer (which needs a
# nightly compiler; the parsers are safe Rust, #![deny(unsafe_code)] outside the syscall
# modules): SanitizerCoverage with 8-bit counters and compare tracing, plus debug
# assertions and overflow checks.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export PATH="$HOME/.cargo/bin:$PATH"

TARGETS=(header bucket_record keystore config ctl headers_backup kms_blob journal)
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros (as cargo fuzz does).
HOST="$(rustc -vV | sed -n 's/^host: //p')"
BIN="$CARGO_TARGET_DIR/$HOST/release"

# libFuzzer is C++: install g++ when it is missing (Debian; root or password-less sudo).
need_cxx() {
    command -v g++ >/dev/null 2>&1 && return 0
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
    echo "fuzz.sh: installing g++ (libFuzzer needs a C++ compiler)" >&2
    "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq g++ >/dev/null
}

build() {
    need_cxx
    cargo build --release --bins --target "$HOST"
}

run() {
    local t="$1" secs="${2:-600}"
    mkdir -p "corpus/$t" "artifacts/$t"
    "$BIN/$t" -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$t/" "corpus/$t" "seeds/$t"
    merge "$t"
}

# Minimizes corpus/TARGET: the seeds are the initial corpus of the merge (so what they cover
# is not kept twice), then taken out again.
merge() {
    local t="$1" out="corpus/$t.merge"
    rm -rf "$out"
    mkdir -p "$out"
    cp seeds/"$t"/* "$out"/
    "$BIN/$t" -merge=1 -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$t/" "$out" "corpus/$t"
    for f in seeds/"$t"/*; do rm -f "$out/$(basename "$f")"; done
    rm -rf "corpus/$t"
    mv "$out" "corpus/$t"
}

case "${1:-}" in
build) build ;;
run)
    [ -n "${2:-}" ] || { echo "usage: $0 run TARGET [SECONDS]" >&2; exit 1; }
    build
    run "$2" "${3:-600}"
    ;;
all)
    build
    for t in "${TARGETS[@]}"; do run "$t" "${2:-600}"; done
    ;;
*)
    echo "usage: $0 build | run TARGET [SECONDS] | all [SECONDS]" >&2
    exit 1
    ;;
esac
