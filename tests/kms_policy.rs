//! Key policy (`key update --allowed-operations`), authorized twice: a re-encrypt (object,
//! bucket, kms blob) needs re-encrypt-from on the source key and re-encrypt-to on the
//! destination. A refusal names the missing permission (EPERM through the mount, exit 1
//! offline) and changes nothing.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::Value;
use std::fs;

fn allowed(v: &Value) -> Vec<String> {
    v["allowed_operations"]
        .as_array()
        .unwrap_or_else(|| panic!("no allowed_operations: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn header_bytes(m: &TestMount, bucket: &str, name: &str) -> Vec<u8> {
    xattr_get(&m.backing_path(bucket, name), "user.envelopefs.header").expect("header xattr")
}

#[test]
fn key_update_sets_the_policy_persistently_and_rejects_bad_names() {
    let m = TestMount::init_only(None);
    m.cli_store(&["key", "create", "--alias", "k"]).ok();
    let all = m.cli_store(&["key", "get", "k"]).ok().json();
    assert_eq!(
        allowed(&all),
        ["encrypt", "decrypt", "re-encrypt-from", "re-encrypt-to"],
        "everything is allowed by default"
    );
    let v = m
        .cli_store(&[
            "key",
            "update",
            "k",
            "--allowed-operations",
            "re-encrypt-from,decrypt",
        ])
        .ok()
        .json();
    assert_eq!(allowed(&v), ["decrypt", "re-encrypt-from"]);
    // Persisted: a new process sees it.
    assert_eq!(
        allowed(&m.cli_store(&["key", "get", "k"]).ok().json()),
        ["decrypt", "re-encrypt-from"]
    );
    let none = m
        .cli_store(&["key", "update", "k", "--allowed-operations", "none"])
        .ok()
        .json();
    assert!(allowed(&none).is_empty());
    fails_with(
        m.cli_store(&[
            "key",
            "update",
            "k",
            "--allowed-operations",
            "encrypt,delete",
        ]),
        "unknown operation \"delete\"",
    );
    // The failed update changed nothing.
    assert!(allowed(&m.cli_store(&["key", "get", "k"]).ok().json()).is_empty());
    let back = m
        .cli_store(&["key", "update", "k", "--allowed-operations", "all"])
        .ok()
        .json();
    assert_eq!(allowed(&back).len(), 4);
}

#[test]
fn offline_reencrypts_are_refused_naming_the_permission_and_change_nothing() {
    let m = TestMount::init_only(None);
    m.cli_store(&["key", "create", "--alias", "src"]).ok();
    m.cli_store(&["key", "create", "--alias", "dst"]).ok();
    m.cli_store(&["bucket", "create", "--name", "b", "--kms-key-id", "src"])
        .ok();
    let data = pattern(1, 10_000);
    let f = m.scratch.join("in");
    fs::write(&f, &data).unwrap();
    let fs_ = f.display().to_string();
    m.cli_store(&[
        "object",
        "put",
        "--bucket-name",
        "b",
        "--name",
        "o",
        "--file",
        &fs_,
    ])
    .ok();
    let before = header_bytes(&m, "b", "o");

    // The destination lacks re-encrypt-to: object, bucket and kms re-encrypts are refused.
    m.cli_store(&[
        "key",
        "update",
        "dst",
        "--allowed-operations",
        "encrypt,decrypt,re-encrypt-from",
    ])
    .ok();
    fails_with(
        m.cli_store(&[
            "object",
            "reencrypt",
            "--bucket-name",
            "b",
            "--name",
            "o",
            "--kms-key-id",
            "dst",
        ]),
        "does not allow re-encrypt-to",
    );
    fails_with(
        m.cli_store(&[
            "bucket",
            "reencrypt",
            "--bucket-name",
            "b",
            "--kms-key-id",
            "dst",
        ]),
        "does not allow re-encrypt-to",
    );
    let blob = m
        .cli_store(&[
            "kms",
            "encrypt",
            "--key-id",
            "src",
            "--plaintext",
            "c2VjcmV0",
        ])
        .ok()
        .json()["CiphertextBlob"]
        .as_str()
        .unwrap()
        .to_string();
    fails_with(
        m.cli_store(&[
            "kms",
            "re-encrypt",
            "--ciphertext-blob",
            &blob,
            "--destination-key-id",
            "dst",
        ]),
        "does not allow re-encrypt-to",
    );
    // Nothing changed: the header bytes, the bucket's key, no work request.
    assert_eq!(header_bytes(&m, "b", "o"), before);
    let bucket = m.cli_store(&["bucket", "get", "--name", "b"]).ok().json();
    assert_eq!(
        bucket["kms_key_id"],
        m.cli_store(&["key", "get", "src"]).ok().json()["id"]
    );
    assert_eq!(
        m.cli_store(&["work-request", "list"]).ok().json(),
        Value::Array(vec![])
    );

    // The source lacks re-encrypt-from (destination allows everything again).
    m.cli_store(&["key", "update", "dst", "--allowed-operations", "all"])
        .ok();
    m.cli_store(&[
        "key",
        "update",
        "src",
        "--allowed-operations",
        "encrypt,decrypt,re-encrypt-to",
    ])
    .ok();
    fails_with(
        m.cli_store(&[
            "object",
            "reencrypt",
            "--bucket-name",
            "b",
            "--name",
            "o",
            "--kms-key-id",
            "dst",
        ]),
        "does not allow re-encrypt-from",
    );
    fails_with(
        m.cli_store(&[
            "kms",
            "re-encrypt",
            "--ciphertext-blob",
            &blob,
            "--destination-key-id",
            "dst",
        ]),
        "does not allow re-encrypt-from",
    );
    // A bucket re-encrypt checks the source per object: the request ends FAILED with the
    // permission named for the object, and the header is untouched.
    m.cli_store(&["key", "rotate", "src"]).ok();
    let out = m.cli_store(&[
        "bucket",
        "reencrypt",
        "--bucket-name",
        "b",
        "--wait-for-state",
        "SUCCEEDED",
    ]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let wr = out.json();
    assert_eq!(wr["status"], "FAILED", "{wr}");
    assert_eq!(wr["objects_failed"], 1);
    assert!(
        wr["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("does not allow re-encrypt-from"),
        "{wr}"
    );
    assert_eq!(header_bytes(&m, "b", "o"), before);

    // A rewrap needs re-encrypt-from, not decrypt: with decrypt denied the object cannot be
    // read, but it can still be moved to another key, and then read under that key.
    m.cli_store(&[
        "key",
        "update",
        "src",
        "--allowed-operations",
        "re-encrypt-from",
    ])
    .ok();
    let out_f = m.scratch.join("out").display().to_string();
    fails_with(
        m.cli_store(&[
            "object",
            "get",
            "--bucket-name",
            "b",
            "--name",
            "o",
            "--file",
            &out_f,
        ]),
        "does not allow decrypt",
    );
    let moved = m
        .cli_store(&[
            "object",
            "reencrypt",
            "--bucket-name",
            "b",
            "--name",
            "o",
            "--kms-key-id",
            "dst",
        ])
        .ok()
        .json();
    assert_eq!(
        moved["key_id"],
        m.cli_store(&["key", "get", "dst"]).ok().json()["id"]
    );
    m.cli_store(&[
        "object",
        "get",
        "--bucket-name",
        "b",
        "--name",
        "o",
        "--file",
        &out_f,
    ])
    .ok();
    assert_bytes_eq(&fs::read(&out_f).unwrap(), &data, "object read back");
}

#[test]
fn mounted_policy_denials_are_eperm_and_change_nothing() {
    let m = TestMount::new();
    m.ctl("key create --alias src").ok();
    m.ctl("key create --alias dst").ok();
    m.ctl("bucket create --name b --kms-key-id src").ok();
    let data = write_pattern(&m.p("b/o"), 2, 5000);
    let before = header_bytes(&m, "b", "o");
    let blob = m.ctl("kms encrypt --key-id src --plaintext c2VjcmV0").ok()["CiphertextBlob"]
        .as_str()
        .unwrap()
        .to_string();

    m.ctl("key update dst --allowed-operations encrypt,decrypt,re-encrypt-from")
        .ok();
    for line in [
        "object reencrypt --bucket-name b --name o --kms-key-id dst".to_string(),
        "bucket reencrypt --bucket-name b --kms-key-id dst".to_string(),
        format!("kms re-encrypt --ciphertext-blob {blob} --destination-key-id dst"),
    ] {
        let msg = m.ctl(&line).err(libc::EPERM);
        assert!(msg.contains("re-encrypt-to"), "{line}: {msg}");
    }
    // The one-object xattr and the bucket control file refuse the same way.
    assert_errno(
        xattr_set(
            &m.p("b/o"),
            "user.envelopefs.reencrypt",
            m.key_id("dst").as_bytes(),
            0,
        ),
        libc::EPERM,
        "setxattr reencrypt to a key without re-encrypt-to",
    );
    assert_errno(
        fs::write(m.p(".envelopefs/buckets/b/reencrypt"), "dst"),
        libc::EPERM,
        "bucket reencrypt control file",
    );
    m.ctl("key update dst --allowed-operations all").ok();
    m.ctl("key update src --allowed-operations encrypt,decrypt,re-encrypt-to")
        .ok();
    for line in [
        "object reencrypt --bucket-name b --name o --kms-key-id dst".to_string(),
        format!("kms re-encrypt --ciphertext-blob {blob} --destination-key-id dst"),
    ] {
        let msg = m.ctl(&line).err(libc::EPERM);
        assert!(msg.contains("re-encrypt-from"), "{line}: {msg}");
    }
    assert_errno(
        xattr_set(
            &m.p("b/o"),
            "user.envelopefs.reencrypt",
            m.key_id("dst").as_bytes(),
            0,
        ),
        libc::EPERM,
        "setxattr reencrypt from a key without re-encrypt-from",
    );
    assert_eq!(
        header_bytes(&m, "b", "o"),
        before,
        "a refusal changed the header"
    );
    assert_eq!(
        xattr_str(&m.p("b/o"), "user.envelopefs.key-id"),
        m.key_id("src")
    );
    let b: Value = m.ctl("bucket get --name b").ok();
    assert_eq!(b["kms_key_id"], Value::String(m.key_id("src")));
    assert_eq!(m.ctl("work-request list").ok(), Value::Array(vec![]));

    // Decrypt and encrypt denials in the file system: open and create are EPERM.
    m.ctl("key update src --allowed-operations encrypt,re-encrypt-from,re-encrypt-to")
        .ok();
    assert_errno(
        fs::File::open(m.p("b/o")),
        libc::EPERM,
        "open without decrypt",
    );
    let msg = m
        .ctl(&format!("kms decrypt --ciphertext-blob {blob}"))
        .err(libc::EPERM);
    assert!(msg.contains("does not allow decrypt"), "{msg}");
    m.ctl("key update src --allowed-operations decrypt").ok();
    assert_errno(
        fs::write(m.p("b/new"), b"x"),
        libc::EPERM,
        "create without encrypt",
    );
    assert_eq!(read(&m.p("b/o")), data, "readable again with decrypt");
}
