//! Customer-provided keys (SSE-C), issue 7 items 1 and 2: `object reencrypt` between master
//! and customer keys, offline and through a mount (key files by path, never key bytes in
//! replies, logs or errors), refused commands that change nothing, and the mount's key ring
//! (`sse-c add/list/remove`): ENOKEY without the key, reads and writes with it, bucket
//! re-encrypts that skip SSE-C objects with the reason.
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine;
use common::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

const SSE_SKIP: &str = "wrapped under a customer-provided key";

/// A customer key file (base64, as users write them); returns (path, raw key bytes).
fn customer_key(dir: &Path, name: &str, seed: u8) -> (PathBuf, [u8; 32]) {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = seed.wrapping_mul(31).wrapping_add(i as u8 * 7) ^ 0x5a;
    }
    let p = dir.join(name);
    fs::write(
        &p,
        format!("{}\n", base64::engine::general_purpose::STANDARD.encode(k)),
    )
    .unwrap();
    (p, k)
}

/// The raw header xattr of a backing file (to prove a refused command changed nothing).
fn header_bytes(m: &TestMount, bucket: &str, name: &str) -> Vec<u8> {
    xattr_get(&m.backing_path(bucket, name), "user.envelopefs.header").unwrap()
}

/// Asserts that none of the keys appear in `text`, as base64, hex (either case) or raw bytes.
#[track_caller]
fn assert_no_key_material(text: &str, keys: &[[u8; 32]], what: &str) {
    for k in keys {
        let b64 = base64::engine::general_purpose::STANDARD.encode(k);
        let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            !text.contains(&b64),
            "{what}: a key's base64 is in the text"
        );
        assert!(
            !text.to_ascii_lowercase().contains(&hex),
            "{what}: a key's hex is in the text"
        );
        assert!(
            !text.contains(&*String::from_utf8_lossy(k)),
            "{what}: raw key bytes in the text"
        );
    }
}

fn data_of(path: &Path) -> Vec<u8> {
    // The backing file's bytes: data preamble and chunks (the header is an xattr).
    read(path)
}

#[test]
fn object_reencrypt_moves_between_master_and_customer_keys_offline() {
    let m = TestMount::init_only(None);
    let (c1, k1) = customer_key(&m.scratch, "c1.key", 1);
    let (c2, k2) = customer_key(&m.scratch, "c2.key", 2);
    let c1s = c1.display().to_string();
    let c2s = c2.display().to_string();
    m.cli_store(&["key", "create", "--alias", "other"]).ok();
    m.cli_store(&["bucket", "create", "--name", "b"]).ok();
    let src = m.scratch.join("src");
    let data = pattern(7, 50_000);
    fs::write(&src, &data).unwrap();
    let put = m
        .cli_store(&[
            "object",
            "put",
            "--bucket-name",
            "b",
            "--name",
            "o",
            "--file",
            &src.display().to_string(),
        ])
        .ok()
        .json();
    let default_key = put["key_id"].as_str().unwrap().to_string();
    let backing = m.backing_path("b", "o");
    let chunks = data_of(&backing);
    let obj = ["--bucket-name", "b", "--name", "o"];
    let reenc = |extra: &[&str]| {
        let mut a = vec!["object", "reencrypt"];
        a.extend_from_slice(&obj);
        a.extend_from_slice(extra);
        m.cli_store(&a)
    };
    let mut outputs = String::new();
    let not_a_key = m.scratch.join("not-a-key");
    fs::write(&not_a_key, "this is not a key\n").unwrap();
    let not_a_key = not_a_key.display().to_string();

    // master -> customer key 1.
    let out = reenc(&["--encryption-key-file", &c1s]).ok();
    outputs += &out.stdout;
    outputs += &out.stderr;
    let v = out.json();
    assert_eq!(v["encryption"], "sse-c", "{v}");
    assert_eq!(v["result"], "REWRAPPED");
    let fp1 = v["customer_key_fingerprint"].as_str().unwrap().to_string();
    assert_eq!(fp1.len(), 64);
    assert!(v.get("key_id").is_none(), "{v}");
    assert_eq!(data_of(&backing), chunks, "a rewrap never touches the data");
    // Offline there is no ring: the object needs its key.
    let out = m
        .cli_store(&[
            "object",
            "get",
            "--bucket-name",
            "b",
            "--name",
            "o",
            "--file",
            "/dev/null",
        ])
        .fails();
    assert!(
        out.stderr.contains("customer-provided key"),
        "{}",
        out.stderr
    );

    // Refused commands change nothing (the header bytes are identical).
    let before = header_bytes(&m, "b", "o");
    for (extra, needle) in [
        // No source key.
        (
            vec!["--encryption-key-file", c2s.as_str()],
            "--source-encryption-key-file",
        ),
        (
            vec!["--kms-key-id", "other"],
            "--source-encryption-key-file",
        ),
        (vec![], "--source-encryption-key-file"),
        // The wrong source key.
        (
            vec![
                "--source-encryption-key-file",
                c2s.as_str(),
                "--kms-key-id",
                "other",
            ],
            "is not the one",
        ),
        (
            vec!["--source-encryption-key-file", c2s.as_str()],
            "is not the one",
        ),
        // Conflicting destinations.
        (
            vec![
                "--source-encryption-key-file",
                c1s.as_str(),
                "--kms-key-id",
                "other",
                "--encryption-key-file",
                c2s.as_str(),
            ],
            "exclude each other",
        ),
        // A key file that is not a key.
        (
            vec!["--source-encryption-key-file", not_a_key.as_str()],
            "key file",
        ),
    ] {
        let out = reenc(&extra).fails();
        assert_eq!(out.code, 1, "{extra:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(needle),
            "{extra:?}: the message should say why ({needle}): {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{extra:?}: {}", out.stdout);
        assert_eq!(
            header_bytes(&m, "b", "o"),
            before,
            "{extra:?} changed the header"
        );
        outputs += &out.stderr;
    }

    // customer key 1 -> customer key 2 (both flags).
    let out = reenc(&[
        "--source-encryption-key-file",
        &c1s,
        "--encryption-key-file",
        &c2s,
    ])
    .ok();
    outputs += &out.stdout;
    let v = out.json();
    assert_eq!(v["encryption"], "sse-c");
    let fp2 = v["customer_key_fingerprint"].as_str().unwrap().to_string();
    assert_ne!(fp2, fp1);
    assert_eq!(data_of(&backing), chunks);
    // The old key no longer opens it.
    let before = header_bytes(&m, "b", "o");
    let out = reenc(&["--source-encryption-key-file", &c1s]).fails();
    assert!(out.stderr.contains("is not the one"), "{}", out.stderr);
    assert_eq!(header_bytes(&m, "b", "o"), before);

    // customer key 2 -> another master key.
    let v = reenc(&[
        "--source-encryption-key-file",
        &c2s,
        "--kms-key-id",
        "other",
    ])
    .ok()
    .json();
    assert_eq!(v["encryption"], "master");
    let other = v["key_id"].as_str().unwrap().to_string();
    assert_ne!(other, default_key);
    // A source key for an object under a master key is refused, changing nothing.
    let before = header_bytes(&m, "b", "o");
    let out = reenc(&["--source-encryption-key-file", &c2s]).fails();
    assert!(
        out.stderr
            .contains("not wrapped under a customer-provided key"),
        "{}",
        out.stderr
    );
    assert_eq!(header_bytes(&m, "b", "o"), before);
    // And back to the bucket's key (no flags).
    let v = reenc(&[]).ok().json();
    assert_eq!(v["encryption"], "master");
    assert_eq!(v["key_id"], default_key.as_str());
    assert_eq!(data_of(&backing), chunks);
    let out = m.scratch.join("out");
    m.cli_store(&[
        "object",
        "get",
        "--bucket-name",
        "b",
        "--name",
        "o",
        "--file",
        &out.display().to_string(),
    ])
    .ok();
    assert_bytes_eq(&read(&out), &data, "the object after the round trip");
    assert_no_key_material(&outputs, &[k1, k2], "CLI output");
    // Offline, the ring has no meaning: exit 1 with the reason.
    let out = m.cli_store(&["sse-c", "list"]).fails();
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("lives in a mount"), "{}", out.stderr);
}

/// Through a live mount: key files by (relative) path reach the mount, the ring controls
/// opens, refused commands change nothing, and no key bytes end up anywhere.
#[test]
fn customer_keys_through_the_mount_and_its_key_ring() {
    let m = TestMount::new();
    let (_, k1) = customer_key(&m.scratch, "c1.key", 11);
    let (_, k2) = customer_key(&m.scratch, "c2.key", 12);
    fs::create_dir(m.p("b")).unwrap();
    let data = write_pattern(&m.p("b/o"), 3, 20_000);
    let other = write_pattern(&m.p("b/plain"), 4, 5_000);
    let backing = m.backing_path("b", "o");
    let chunks = data_of(&backing);
    let mut outputs = String::new();
    // Relative key file paths, from the scratch dir: the CLI makes them absolute for ctl.
    let run = |args: &str| {
        let out = m.sh(&format!("\"$EFS\" --store \"$S\" {args}"));
        out
    };
    let out = run("object reencrypt --bucket-name b --name o --encryption-key-file c1.key").ok();
    outputs += &out.stdout;
    let v = out.json();
    assert_eq!(v["encryption"], "sse-c", "{v}");
    let fp1 = v["customer_key_fingerprint"].as_str().unwrap().to_string();
    assert_eq!(data_of(&backing), chunks);
    assert_eq!(
        getfattr(&m.p("b/o"), "user.envelopefs.encryption")
            .ok()
            .stdout,
        "sse-c"
    );
    assert_eq!(
        xattr_str(&m.p("b/o"), "user.envelopefs.key-id"),
        format!("sse-c:{fp1}")
    );
    // Not loaded: ENOKEY on open; other objects are unaffected.
    assert_errno(
        fs::File::open(m.p("b/o")),
        libc::ENOKEY,
        "open without the key",
    );
    assert_errno(
        fs::OpenOptions::new().write(true).open(m.p("b/o")),
        libc::ENOKEY,
        "open for writing without the key",
    );
    assert_bytes_eq(&read(&m.p("b/plain")), &other, "a master-key object");

    // Refused through the mount, changing nothing: wrong source key, missing source key.
    let before = header_bytes(&m, "b", "o");
    for (args, needle) in [
        (
            "object reencrypt --bucket-name b --name o --source-encryption-key-file c2.key",
            "is not the one",
        ),
        (
            "object reencrypt --bucket-name b --name o --encryption-key-file c2.key",
            "--source-encryption-key-file",
        ),
        (
            "object reencrypt --bucket-name b --name o --source-encryption-key-file missing.key",
            "missing.key",
        ),
    ] {
        let out = run(args).fails();
        assert_eq!(out.code, 1, "{args}");
        assert!(out.stderr.contains(needle), "{args}: {}", out.stderr);
        assert_eq!(
            header_bytes(&m, "b", "o"),
            before,
            "{args} changed the header"
        );
        outputs += &out.stderr;
    }
    // The same through ctl directly: errno and reason on the fd.
    let msg = m
        .ctl(&format!(
            "object reencrypt --bucket-name b --name o --source-encryption-key-file {}",
            m.scratch.join("c2.key").display()
        ))
        .err(libc::ENOKEY);
    outputs += &msg;
    assert_eq!(header_bytes(&m, "b", "o"), before);

    // Load the key: reads and writes work.
    let out = run("sse-c add --encryption-key-file c1.key").ok();
    outputs += &out.stdout;
    assert_eq!(out.json()["fingerprint"], fp1.as_str());
    assert_eq!(out.json()["added"], true);
    assert_bytes_eq(
        &read(&m.p("b/o")),
        &data,
        "SSE-C object with its key loaded",
    );
    let mut data2 = data.clone();
    data2.extend_from_slice(b"appended with the customer key");
    fs::write(m.p("b/o"), &data2).unwrap();
    assert_bytes_eq(&read(&m.p("b/o")), &data2, "written with the key loaded");
    assert_eq!(
        getfattr(&m.p("b/o"), "user.envelopefs.encryption")
            .ok()
            .stdout,
        "sse-c",
        "a write keeps the customer wrapping"
    );
    // Adding it again is harmless; a second key is listed too; list shows fingerprints only.
    assert_eq!(
        run("sse-c add --encryption-key-file c1.key").ok().json()["added"],
        false
    );
    let fp2 = run("sse-c add --encryption-key-file c2.key").ok().json()["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let list = run("sse-c list").ok();
    outputs += &list.stdout;
    let mut want = vec![fp1.clone(), fp2.clone()];
    want.sort();
    let got: Vec<String> = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["fingerprint"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, want);
    // With the key in the ring, a re-encrypt needs no source key file.
    let v = run("object reencrypt --bucket-name b --name o --encryption-key-file c2.key")
        .ok()
        .json();
    assert_eq!(v["customer_key_fingerprint"], fp2.as_str());

    // Remove by fingerprint prefix: an open fd keeps working, new opens are ENOKEY.
    let held = fs::File::open(m.p("b/o")).unwrap();
    let out = run(&format!("sse-c remove --fingerprint {}", &fp2[..12])).ok();
    assert_eq!(out.json()["removed"], true);
    assert_errno(
        fs::File::open(m.p("b/o")),
        libc::ENOKEY,
        "open after remove",
    );
    assert_bytes_eq(
        &pread_all(&held).unwrap(),
        &data2,
        "a file open before remove",
    );
    drop(held);
    assert_errno(fs::File::open(m.p("b/o")), libc::ENOKEY, "open after close");
    // Removing what is not there: ENOENT; a bad fingerprint: EINVAL.
    m.ctl(&format!("sse-c remove --fingerprint {fp2}"))
        .err(libc::ENOENT);
    m.ctl("sse-c remove --fingerprint zz").err(libc::EINVAL);
    m.ctl("sse-c remove").err(libc::EINVAL);
    m.ctl(&format!(
        "sse-c add --encryption-key-file {}",
        m.scratch.join("nope.key").display()
    ))
    .err(libc::ENOENT);
    fs::write(m.scratch.join("short.key"), "c2hvcnQ=\n").unwrap();
    m.ctl(&format!(
        "sse-c add --encryption-key-file {}",
        m.scratch.join("short.key").display()
    ))
    .err(libc::EINVAL);
    // Remove by key file: the ring is empty then.
    run("sse-c remove --encryption-key-file c1.key").ok();
    assert_eq!(run("sse-c list").ok().json(), serde_json::json!([]));

    // Back to a master key with the source key file; reads need no ring then.
    run("object reencrypt --bucket-name b --name o --source-encryption-key-file c2.key").ok();
    assert_bytes_eq(&read(&m.p("b/o")), &data2, "back under the bucket key");

    let log = m.log();
    assert!(
        log.contains("customer-provided key"),
        "the log names customer keys by fingerprint only: {log}"
    );
    assert_no_key_material(&outputs, &[k1, k2], "CLI output and ctl replies");
    assert_no_key_material(&log, &[k1, k2], "mount.log");
}

#[test]
fn ring_keys_are_gone_after_a_remount() {
    let mut m = TestMount::new();
    customer_key(&m.scratch, "c.key", 21);
    fs::create_dir(m.p("b")).unwrap();
    let data = write_pattern(&m.p("b/o"), 5, 9_000);
    m.sh("\"$EFS\" --store \"$S\" object reencrypt --bucket-name b --name o --encryption-key-file c.key")
        .ok();
    m.sh("\"$EFS\" --store \"$S\" sse-c add --encryption-key-file c.key")
        .ok();
    assert_bytes_eq(&read(&m.p("b/o")), &data, "with the key");
    m.unmount();
    m.mount();
    assert_eq!(m.ctl("sse-c list").ok(), serde_json::json!([]));
    assert_errno(fs::File::open(m.p("b/o")), libc::ENOKEY, "after a remount");
}

#[test]
fn bucket_reencrypt_skips_sse_c_objects_and_counts_the_reason() {
    let m = TestMount::new();
    customer_key(&m.scratch, "c.key", 31);
    m.ctl("key create --alias k").ok();
    m.ctl("bucket create --name b --kms-key-id k").ok();
    for i in 0..5 {
        fs::write(m.p(&format!("b/o{i}")), format!("object {i}")).unwrap();
    }
    m.sh("\"$EFS\" --store \"$S\" object reencrypt --bucket-name b --name o3 --encryption-key-file c.key")
        .ok();
    let before = header_bytes(&m, "b", "o3");
    m.ctl("key rotate k").ok();
    let wr = m.ctl("bucket reencrypt --bucket-name b").ok();
    let done = m.wait_work_request(
        wr["id"].as_str().unwrap(),
        std::time::Duration::from_secs(60),
    );
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["objects_rewrapped"], 4, "{done}");
    assert_eq!(done["objects_skipped"], 1, "{done}");
    assert_eq!(done["skipped_reasons"][SSE_SKIP], 1, "{done}");
    assert_eq!(
        header_bytes(&m, "b", "o3"),
        before,
        "the SSE-C header is untouched"
    );
    for i in [0, 1, 2, 4] {
        assert_eq!(
            xattr_str(&m.p(&format!("b/o{i}")), "user.envelopefs.key-version"),
            "2"
        );
    }
}

/// A work request persisted before `skipped_reasons` and `objects_rekeyed` existed still
/// loads (they default).
#[test]
fn old_work_requests_without_the_new_fields_still_load() {
    let m = TestMount::init_only(None);
    let id = "wr-0123456789abcdef0123456789abcdef";
    let old: Value = serde_json::json!({
        "id": id, "operation_type": "REENCRYPT_BUCKET", "status": "SUCCEEDED",
        "bucket_name": "b", "bucket_id": "00", "target_key_id": "key-00",
        "target_key_version": 1, "percent_complete": 100.0, "objects_total": 2,
        "objects_rewrapped": 1, "objects_skipped": 1, "objects_failed": 0,
        "time_accepted": 1, "time_started": 1, "time_finished": 2,
        "scope_created_before_ns": 5, "cancel_requested": false, "errors": []
    });
    fs::write(
        m.store.join(format!(".envelopefs/work-requests/{id}.json")),
        old.to_string(),
    )
    .unwrap();
    let v = m.cli_store(&["work-request", "get", id]).ok().json();
    assert_eq!(v["objects_rewrapped"], 1);
    assert_eq!(v["objects_rekeyed"], 0);
    assert_eq!(v["skipped_reasons"], serde_json::json!({}));
}

/// Moving an SSE-C object to another bucket keeps it under its customer key, and needs the
/// key loaded.
#[test]
fn an_sse_c_object_moves_between_buckets_under_its_customer_key() {
    let m = TestMount::new();
    customer_key(&m.scratch, "c.key", 41);
    fs::create_dir(m.p("a")).unwrap();
    fs::create_dir(m.p("z")).unwrap();
    let data = write_pattern(&m.p("a/o"), 6, 7_000);
    m.sh("\"$EFS\" --store \"$S\" object reencrypt --bucket-name a --name o --encryption-key-file c.key")
        .ok();
    let before = header_bytes(&m, "a", "o");
    assert_errno(
        fs::rename(m.p("a/o"), m.p("z/o")),
        libc::ENOKEY,
        "moving without the key",
    );
    assert_eq!(header_bytes(&m, "a", "o"), before);
    m.sh("\"$EFS\" --store \"$S\" sse-c add --encryption-key-file c.key")
        .ok();
    fs::rename(m.p("a/o"), m.p("z/o")).unwrap();
    assert_eq!(
        xattr_str(&m.p("z/o"), "user.envelopefs.encryption"),
        "sse-c"
    );
    assert_bytes_eq(&read(&m.p("z/o")), &data, "moved SSE-C object");
}
