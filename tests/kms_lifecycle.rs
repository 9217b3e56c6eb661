//! Key version lifecycle: `key usage`, `key schedule-deletion` (refused while objects depend
//! on the version unless --force; never the current version), `key cancel-deletion`, and the
//! destruction of a version past its deletion date: its material is zeroed in the persisted
//! keystore, `key get` says DESTROYED, and its objects fail to open with ENOKEY.
//!
//! The deletion date is reached without waiting days through the test-only fault
//! `deletion-clock-ahead` (ENVELOPEFS_FAULT_INJECTION), which runs the deletion clock a year
//! ahead in the process it is given to.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use envelopefs::format::records::VersionState;
use envelopefs::format::unhex;
use envelopefs::keys::crypto::parse_key_file;
use envelopefs::keys::keystore::{parse_key_id, KeyStore, Secret};
use serde_json::Value;
use std::fs;
use std::time::Duration;

/// The fault that runs the deletion clock a year ahead.
const CLOCK_AHEAD: &str = "deletion-clock-ahead";

/// The CLI offline with the deletion clock a year ahead.
fn cli_clock_ahead(m: &TestMount, args: &[&str]) -> CmdOut {
    let (k, v) = fault_env(CLOCK_AHEAD);
    m.cli_store_env(&[(&k, &v)], args)
}

/// State and material of a key version as persisted in STORE/.envelopefs/keystore (read
/// with the store's key file; works while mounted, the file is replaced atomically).
fn persisted_version(m: &TestMount, key_id: &str, version: u32) -> (VersionState, [u8; 32]) {
    let cfg: Value =
        serde_json::from_slice(&fs::read(m.store.join(".envelopefs/config.json")).unwrap())
            .unwrap();
    let store_id = unhex::<16>(cfg["store_id"].as_str().unwrap()).expect("store id");
    let secret = Secret::KeyFile(parse_key_file(&fs::read(&m.key).unwrap()).unwrap());
    let bytes = fs::read(m.store.join(".envelopefs/keystore")).unwrap();
    let ks = KeyStore::unseal(&bytes, &store_id, &secret).expect("keystore opens");
    let k = ks
        .find(&parse_key_id(key_id).unwrap())
        .expect("key in keystore");
    let v = k
        .versions
        .iter()
        .find(|v| v.version == version)
        .expect("version");
    (v.state, v.material)
}

fn version_json(key: &Value, n: u64) -> Value {
    key["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == n)
        .unwrap_or_else(|| panic!("no version {n} in {key}"))
        .clone()
}

fn put(m: &TestMount, bucket: &str, name: &str, seed: u64) -> Vec<u8> {
    let data = pattern(seed, 3000 + seed as usize);
    m.put_object(bucket, name, &data);
    data
}

#[test]
fn offline_usage_schedule_refusal_force_and_cancel() {
    let m = TestMount::init_only(None);
    let k = m.cli_store(&["key", "create", "--alias", "k"]).ok().json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    m.cli_store(&["bucket", "create", "--name", "b", "--kms-key-id", "k"])
        .ok();
    m.cli_store(&["bucket", "create", "--name", "c", "--kms-key-id", "k"])
        .ok();
    m.cli_store(&["bucket", "create", "--name", "other"]).ok();
    put(&m, "b", "one", 1);
    put(&m, "b", "dir/two", 2);
    let three = put(&m, "c", "three", 3);
    put(&m, "other", "x", 4);
    m.cli_store(&["key", "rotate", "k"]).ok();
    put(&m, "c", "new", 5);

    // usage: per version, the objects and their buckets.
    let u = m.cli_store(&["key", "usage", "k"]).ok().json();
    assert_eq!(u["key_id"], Value::String(k.clone()));
    assert_eq!(u["objects_total"], 4);
    let v1 = version_json(&u, 1);
    assert_eq!(v1["objects"], 3, "{u}");
    assert_eq!(
        v1["buckets"],
        serde_json::json!([{"name": "b", "objects": 2}, {"name": "c", "objects": 1}])
    );
    assert_eq!(v1["state"], "ENABLED");
    let v2 = version_json(&u, 2);
    assert_eq!(v2["objects"], 1);
    assert_eq!(
        v2["buckets"],
        serde_json::json!([{"name": "c", "objects": 1}])
    );
    assert_eq!(
        version_json(&m.cli_store(&["key", "usage", "default"]).ok().json(), 1)["objects"],
        1
    );

    // The current version can never be scheduled; the days are bounded.
    fails_with(
        m.cli_store(&["key", "schedule-deletion", "k", "--version", "2", "--force"]),
        "current version",
    );
    fails_with(
        m.cli_store(&[
            "key",
            "schedule-deletion",
            "k",
            "--version",
            "1",
            "--days",
            "3",
        ]),
        "7 to 30 days",
    );
    fails_with(
        m.cli_store(&["key", "schedule-deletion", "k", "--version", "9"]),
        "no version 9",
    );
    // Dependents: refused, naming the count and buckets, and nothing changes.
    let msg = fails_with(
        m.cli_store(&[
            "key",
            "schedule-deletion",
            "k",
            "--version",
            "1",
            "--days",
            "7",
        ]),
        "3 object(s)",
    );
    assert!(msg.contains("b (2)") && msg.contains("c (1)"), "{msg}");
    assert!(msg.contains("--force"), "{msg}");
    let key = m.cli_store(&["key", "get", "k"]).ok().json();
    assert_eq!(version_json(&key, 1)["state"], "ENABLED");
    assert_eq!(version_json(&key, 1)["deletion_time"], Value::Null);

    // --force: PENDING_DELETION with a date 7 days out; its objects stop opening (ENOKEY).
    let t0 = envelopefs::keys::keystore::now_s();
    let s = m
        .cli_store(&[
            "key",
            "schedule-deletion",
            "k",
            "--version",
            "1",
            "--days",
            "7",
            "--force",
        ])
        .ok()
        .json();
    assert_eq!(s["dependent_objects"], 3);
    let at = s["deletion_time"].as_u64().unwrap();
    assert!(at >= t0 + 7 * 86_400 && at <= t0 + 7 * 86_400 + 120, "{s}");
    let key = m.cli_store(&["key", "get", "k"]).ok().json();
    assert_eq!(version_json(&key, 1)["state"], "PENDING_DELETION");
    assert_eq!(version_json(&key, 1)["deletion_time"], at);
    fails_with(m.get_object("c", "three").0, "pending deletion");
    m.get_object("c", "new").0.ok();
    // Pending: not scheduled twice, neither enabled nor disabled until cancelled.
    fails_with(
        m.cli_store(&["key", "schedule-deletion", "k", "--version", "1", "--force"]),
        "already pending deletion",
    );
    fails_with(
        m.cli_store(&["key", "enable", "k", "--version", "1"]),
        "cancel the deletion first",
    );
    fails_with(
        m.cli_store(&["key", "disable", "k", "--version", "1"]),
        "cancel the deletion first",
    );
    // Not yet due: the material is still there.
    let (st, mat) = persisted_version(&m, &k, 1);
    assert_eq!(st, VersionState::PendingDeletion);
    assert_ne!(mat, [0u8; 32]);

    // cancel: DISABLED, no date; enabled again, the objects open again.
    let c = m
        .cli_store(&["key", "cancel-deletion", "k", "--version", "1"])
        .ok()
        .json();
    assert_eq!(version_json(&c, 1)["state"], "DISABLED");
    assert_eq!(version_json(&c, 1)["deletion_time"], Value::Null);
    fails_with(
        m.cli_store(&["key", "cancel-deletion", "k", "--version", "1"]),
        "not pending deletion",
    );
    m.cli_store(&["key", "enable", "k", "--version", "1"]).ok();
    let (o, got) = m.get_object("c", "three");
    o.ok();
    assert_bytes_eq(&got, &three, "c/three");
}

#[test]
fn offline_destruction_erases_the_material_and_objects_fail_with_enokey() {
    let m = TestMount::init_only(None);
    let k = m.cli_store(&["key", "create", "--alias", "k"]).ok().json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    m.cli_store(&["bucket", "create", "--name", "b", "--kms-key-id", "k"])
        .ok();
    put(&m, "b", "kept", 1);
    put(&m, "b", "lost", 2);
    m.cli_store(&["key", "rotate", "k"]).ok();
    // Move one object to version 2: version 1 then has one dependent.
    m.cli_store(&[
        "object",
        "reencrypt",
        "--bucket-name",
        "b",
        "--name",
        "kept",
    ])
    .ok();
    let u = m.cli_store(&["key", "usage", "k"]).ok().json();
    assert_eq!(version_json(&u, 1)["objects"], 1);
    assert_eq!(version_json(&u, 2)["objects"], 1);
    m.cli_store(&["key", "schedule-deletion", "k", "--version", "1", "--force"])
        .ok();

    // Any command in a process whose deletion clock is past the date destroys the version.
    let key = cli_clock_ahead(&m, &["key", "get", "k"]).ok().json();
    assert_eq!(version_json(&key, 1)["state"], "DESTROYED");
    let (st, mat) = persisted_version(&m, &k, 1);
    assert_eq!(st, VersionState::Destroyed);
    assert_eq!(mat, [0u8; 32], "destroyed material must be zeroed on disk");
    // Version 2 is untouched.
    let (st2, mat2) = persisted_version(&m, &k, 2);
    assert_eq!(st2, VersionState::Enabled);
    assert_ne!(mat2, [0u8; 32]);

    // With the normal clock: still destroyed, and final.
    assert_eq!(
        version_json(&m.cli_store(&["key", "get", "k"]).ok().json(), 1)["state"],
        "DESTROYED"
    );
    fails_with(m.get_object("b", "lost").0, "destroyed");
    m.get_object("b", "kept").0.ok();
    fails_with(
        m.cli_store(&["key", "cancel-deletion", "k", "--version", "1"]),
        "destroyed",
    );
    fails_with(
        m.cli_store(&["key", "enable", "k", "--version", "1"]),
        "destroyed",
    );
    fails_with(
        m.cli_store(&[
            "object",
            "reencrypt",
            "--bucket-name",
            "b",
            "--name",
            "lost",
        ]),
        "destroyed",
    );
    // usage still shows the object that depends on the destroyed version.
    let u = m.cli_store(&["key", "usage", "k"]).ok().json();
    assert_eq!(version_json(&u, 1)["state"], "DESTROYED");
    assert_eq!(version_json(&u, 1)["objects"], 1);
}

#[test]
fn offline_schedule_without_force_once_reencrypted() {
    let m = TestMount::init_only(None);
    m.cli_store(&["key", "create", "--alias", "k"]).ok();
    m.cli_store(&["bucket", "create", "--name", "b", "--kms-key-id", "k"])
        .ok();
    let data = put(&m, "b", "o", 1);
    m.cli_store(&["key", "rotate", "k"]).ok();
    fails_with(
        m.cli_store(&["key", "schedule-deletion", "k", "--version", "1"]),
        "1 object(s)",
    );
    m.cli_store(&[
        "bucket",
        "reencrypt",
        "--bucket-name",
        "b",
        "--wait-for-state",
        "SUCCEEDED",
    ])
    .ok();
    assert_eq!(
        version_json(&m.cli_store(&["key", "usage", "k"]).ok().json(), 1)["objects"],
        0
    );
    let s = m
        .cli_store(&["key", "schedule-deletion", "k", "--version", "1"])
        .ok()
        .json();
    assert_eq!(s["dependent_objects"], 0);
    let at = s["deletion_time"].as_u64().unwrap();
    assert!(
        at >= envelopefs::keys::keystore::now_s() + 29 * 86_400,
        "30 days by default: {s}"
    );
    cli_clock_ahead(&m, &["key", "list"]).ok();
    let (o, got) = m.get_object("b", "o");
    o.ok();
    assert_bytes_eq(&got, &data, "b/o");
}

#[test]
fn mounted_lifecycle_through_ctl_and_destruction_while_mounted() {
    let mut m = TestMount::new();
    m.ctl("key create --alias k").ok();
    m.ctl("bucket create --name b --kms-key-id k").ok();
    let data = write_pattern(&m.p("b/o"), 1, 9000);
    m.ctl("key rotate k").ok();
    let k = m.key_id("k");

    let u = m.ctl("key usage k").ok();
    assert_eq!(version_json(&u, 1)["objects"], 1);
    assert_eq!(
        version_json(&u, 1)["buckets"],
        serde_json::json!([{"name": "b", "objects": 1}])
    );
    let msg = m
        .ctl("key schedule-deletion k --version 1")
        .err(libc::EBUSY);
    assert!(
        msg.contains("1 object(s)") && msg.contains("b (1)"),
        "{msg}"
    );
    let msg = m
        .ctl("key schedule-deletion k --version 2 --force")
        .err(libc::EBUSY);
    assert!(msg.contains("current version"), "{msg}");
    m.ctl("key schedule-deletion k --version 1 --days 3")
        .err(libc::EINVAL);
    m.ctl("key schedule-deletion k --version 1 --force").ok();
    assert_errno(
        fs::File::open(m.p("b/o")),
        libc::ENOKEY,
        "open, pending deletion",
    );
    let c = m.ctl("key cancel-deletion k --version 1").ok();
    assert_eq!(version_json(&c, 1)["state"], "DISABLED");
    assert_errno(fs::File::open(m.p("b/o")), libc::ENOKEY, "open, disabled");
    m.ctl("key enable k --version 1").ok();
    assert_eq!(read(&m.p("b/o")), data);
    m.unmount();

    // Mounted with the deletion clock a year ahead: a version scheduled now is destroyed by
    // the mount's periodic sweep, with no further command.
    m.mount_env.push(fault_env(CLOCK_AHEAD));
    m.mount();
    m.ctl("key schedule-deletion k --version 1 --force").ok();
    poll(
        Duration::from_secs(30),
        "the mount to destroy version 1",
        || {
            let (st, mat) = persisted_version(&m, &k, 1);
            (st == VersionState::Destroyed && mat == [0u8; 32]).then_some(())
        },
    );
    let key: Value = serde_json::from_str(&m.read_ctl_file("keys/k")).unwrap();
    assert_eq!(version_json(&key, 1)["state"], "DESTROYED");
    let msg = m.ctl("key cancel-deletion k --version 1").err(libc::ENOKEY);
    assert!(msg.contains("destroyed"), "{msg}");
    assert_errno(fs::File::open(m.p("b/o")), libc::ENOKEY, "open, destroyed");
    // Metadata still readable; the data is not.
    assert_eq!(xattr_str(&m.p("b/o"), "user.envelopefs.key-version"), "1");
    m.ctl("key enable k --version 1").err(libc::ENOKEY);
    m.unmount();

    // And after a remount (without the fault) it stays destroyed.
    m.mount_env.clear();
    m.mount();
    assert_errno(
        fs::File::open(m.p("b/o")),
        libc::ENOKEY,
        "open after remount",
    );
    assert_eq!(persisted_version(&m, &k, 1).1, [0u8; 32]);
    m.unmount();
}
