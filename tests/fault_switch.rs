//! Fault injection exists only in test builds: the cargo feature `fault-injection`
//! (src/fault.rs), which scripts/test.sh turns on and release builds, the package and
//! `cargo install` do not. This file runs in both kinds of build and checks that the binary
//! follows its build: with the feature, `ENVELOPEFS_FAULT_INJECTION` switches faults on (so
//! the checks below see them when they are there); without it (the build users install,
//! which scripts/test.sh tests by running this file once more without the feature) the same
//! environment changes nothing: a key version scheduled for deletion is not destroyed early,
//! and a rekey does not abort.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::*;
use serde_json::Value;

/// Whether this build (the library, the binary and this test) has the faults.
const FAULTS: bool = cfg!(feature = "fault-injection");

/// An offline store command with `ENVELOPEFS_FAULT_INJECTION=faults`, set directly (not
/// through `fault_env`, which refuses builds without faults: here both builds are tested).
fn cli_with_faults(m: &TestMount, faults: &str, args: &[&str]) -> CmdOut {
    m.cli_store_env(&[(FAULT_ENV, faults)], args)
}

/// The state of version `n` in `key get` output.
fn version_state(key: &Value, n: u64) -> String {
    key["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["version"] == n))
        .and_then(|v| v["state"].as_str())
        .unwrap_or_else(|| panic!("no version {n} in {key}"))
        .to_string()
}

#[test]
fn the_version_says_whether_faults_are_compiled_in() {
    let v = cli(&["--version"]).ok().stdout;
    assert_eq!(
        v.contains("fault injection"),
        FAULTS,
        "`envelopefs --version` should name fault injection exactly in a fault build: {v}"
    );
}

#[test]
fn deletion_clock_ahead_destroys_a_scheduled_version_only_in_a_fault_build() {
    let m = TestMount::init_only(None);
    m.cli_store(&["key", "create", "--alias", "k"]).ok();
    m.cli_store(&["key", "rotate", "k"]).ok();
    m.cli_store(&["key", "schedule-deletion", "k", "--version", "1"])
        .ok();
    let key = cli_with_faults(&m, "deletion-clock-ahead", &["key", "get", "k"])
        .ok()
        .json();
    let want = if FAULTS {
        "DESTROYED"
    } else {
        "PENDING_DELETION"
    };
    assert_eq!(version_state(&key, 1), want, "{key}");
    // And as persisted: a later command without the variable sees the same.
    let key = m.cli_store(&["key", "get", "k"]).ok().json();
    assert_eq!(version_state(&key, 1), want, "{key}");
    assert_eq!(version_state(&key, 2), "ENABLED", "{key}");
}

#[test]
fn a_rekey_crash_fault_aborts_only_in_a_fault_build() {
    let m = TestMount::init_only(None);
    m.cli_store(&["bucket", "create", "--name", "b"]).ok();
    m.put_object("b", "o", b"some data");
    let id0 = m
        .cli_store(&["object", "head", "--bucket-name", "b", "--name", "o"])
        .ok()
        .json()["object_id"]
        .clone();
    let args = [
        "object",
        "reencrypt",
        "--bucket-name",
        "b",
        "--name",
        "o",
        "--rekey",
    ];
    let out = cli_with_faults(&m, "rekey-crash-before-rename", &args);
    let id1 = m
        .cli_store(&["object", "head", "--bucket-name", "b", "--name", "o"])
        .ok()
        .json()["object_id"]
        .clone();
    if FAULTS {
        assert_eq!(out.code, -1, "the fault aborts the rekey: {out:?}");
        assert_eq!(id1, id0, "aborted before the new object was put in place");
    } else {
        assert_eq!(out.clone().ok().json()["result"], "REKEYED", "{out:?}");
        assert_ne!(id1, id0, "a new object id");
    }
    let (get, data) = m.get_object("b", "o");
    get.ok();
    assert_eq!(data, b"some data");
}
