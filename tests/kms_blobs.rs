//! `kms encrypt | decrypt | generate-data-key | re-encrypt`: standalone envelope blobs, with
//! the real binary offline (exit codes, JSON on stdout, one message on stderr) and through a
//! mount (`.envelopefs/ctl` errnos, and the CLI forwarding to the mount).
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine;
use common::*;
use serde_json::Value;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .unwrap_or_else(|e| panic!("not base64 ({e}): {v}"))
}

fn key_id_of(m: &TestMount, alias: &str) -> String {
    m.cli_store(&["key", "get", alias]).ok().json()["id"]
        .as_str()
        .expect("id")
        .to_string()
}

#[test]
fn offline_blobs_round_trip_and_every_error_is_exit_1() {
    let m = TestMount::init_only(None);
    let def = key_id_of(&m, "default");
    let other = m
        .cli_store(&["key", "create", "--alias", "other"])
        .ok()
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret = b"the launch codes are 0000";

    // encrypt: JSON fields, the blob names the key and version.
    let enc = m
        .cli_store(&[
            "kms",
            "encrypt",
            "--key-id",
            "default",
            "--plaintext",
            &b64(secret),
            "--encryption-context",
            "app=web,env=prod",
        ])
        .ok()
        .json();
    assert_eq!(enc["KeyId"], Value::String(def.clone()));
    assert_eq!(enc["KeyVersionId"], 1);
    let blob = enc["CiphertextBlob"].as_str().unwrap().to_string();
    let raw = unb64(&enc["CiphertextBlob"]);
    assert_eq!(&raw[..4], b"EFKB");
    assert_eq!(raw.len(), 38 + secret.len() + 16);

    // decrypt: the context in another order and split over two flags is the same context.
    let dec = m
        .cli_store(&[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &blob,
            "--encryption-context",
            "env=prod",
            "--encryption-context",
            "app=web",
        ])
        .ok()
        .json();
    assert_eq!(unb64(&dec["Plaintext"]), secret);
    assert_eq!(dec["KeyId"], Value::String(def.clone()));
    assert_eq!(dec["KeyVersionId"], 1);

    // Wrong context (missing, changed, extra), garbage, a truncated blob, the wrong key.
    for ctx in [None, Some("app=web,env=dev"), Some("app=web,env=prod,x=1")] {
        let mut a = vec!["kms", "decrypt", "--ciphertext-blob", &blob];
        if let Some(c) = ctx {
            a.extend(["--encryption-context", c]);
        }
        fails_with(m.cli_store(&a), "with this encryption context");
    }
    fails_with(
        m.cli_store(&["kms", "decrypt", "--ciphertext-blob", "bm90IGEgYmxvYg=="]),
        "not an envelopefs ciphertext blob",
    );
    fails_with(
        m.cli_store(&["kms", "decrypt", "--ciphertext-blob", "%%%"]),
        "not valid base64",
    );
    fails_with(
        m.cli_store(&["kms", "decrypt", "--ciphertext-blob", &b64(&raw[..50])]),
        "truncated",
    );
    fails_with(
        m.cli_store(&[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &blob,
            "--encryption-context",
            "app=web,env=prod",
            "--key-id",
            "other",
        ]),
        "not key-",
    );
    let mut flipped = raw.clone();
    flipped[40] ^= 0x80;
    fails_with(
        m.cli_store(&[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &b64(&flipped),
            "--encryption-context",
            "app=web,env=prod",
        ]),
        "does not decrypt",
    );
    fails_with(
        m.cli_store(&[
            "kms",
            "encrypt",
            "--key-id",
            "default",
            "--plaintext",
            &b64(&[7u8; 4097]),
        ]),
        "4096",
    );
    fails_with(
        m.cli_store(&[
            "kms",
            "encrypt",
            "--key-id",
            "nosuch",
            "--plaintext",
            "YQ==",
        ]),
        "no master key",
    );

    // generate-data-key: 32 bytes by default, and its blob decrypts to the same bytes.
    let dk = m
        .cli_store(&[
            "kms",
            "generate-data-key",
            "--key-id",
            "other",
            "--encryption-context",
            "use=dk",
        ])
        .ok()
        .json();
    let plain = unb64(&dk["Plaintext"]);
    assert_eq!(plain.len(), 32);
    assert_eq!(dk["KeyId"], Value::String(other.clone()));
    let back = m
        .cli_store(&[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            dk["CiphertextBlob"].as_str().unwrap(),
            "--encryption-context",
            "use=dk",
        ])
        .ok()
        .json();
    assert_eq!(unb64(&back["Plaintext"]), plain);
    let dk16 = m
        .cli_store(&[
            "kms",
            "generate-data-key",
            "--key-id",
            "other",
            "--number-of-bytes",
            "16",
        ])
        .ok()
        .json();
    assert_eq!(unb64(&dk16["Plaintext"]).len(), 16);
    fails_with(
        m.cli_store(&[
            "kms",
            "generate-data-key",
            "--key-id",
            "other",
            "--number-of-bytes",
            "0",
        ]),
        "number-of-bytes",
    );

    // re-encrypt to another key with a new context: the plaintext is not in the output.
    let re = m
        .cli_store(&[
            "kms",
            "re-encrypt",
            "--ciphertext-blob",
            &blob,
            "--source-encryption-context",
            "app=web,env=prod",
            "--destination-key-id",
            "other",
            "--destination-encryption-context",
            "app=archive",
        ])
        .ok();
    assert!(
        !re.stdout.contains(&b64(secret)),
        "plaintext in re-encrypt output"
    );
    let rej = re.json();
    assert_eq!(rej["KeyId"], Value::String(other.clone()));
    assert_eq!(rej["KeyVersionId"], 1);
    assert_eq!(rej["SourceKeyId"], Value::String(def.clone()));
    assert_eq!(rej["SourceKeyVersionId"], 1);
    assert!(rej.get("Plaintext").is_none());
    let new_blob = rej["CiphertextBlob"].as_str().unwrap().to_string();
    assert_eq!(
        unb64(
            &m.cli_store(&[
                "kms",
                "decrypt",
                "--ciphertext-blob",
                &new_blob,
                "--encryption-context",
                "app=archive",
            ])
            .ok()
            .json()["Plaintext"]
        ),
        secret
    );
    fails_with(
        m.cli_store(&[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &new_blob,
            "--encryption-context",
            "app=web,env=prod",
        ]),
        "with this encryption context",
    );
    // A wrong source context is refused and no blob is printed.
    fails_with(
        m.cli_store(&[
            "kms",
            "re-encrypt",
            "--ciphertext-blob",
            &blob,
            "--destination-key-id",
            "other",
        ]),
        "with this encryption context",
    );
    // A wrong expected source key.
    fails_with(
        m.cli_store(&[
            "kms",
            "re-encrypt",
            "--ciphertext-blob",
            &blob,
            "--source-encryption-context",
            "app=web,env=prod",
            "--source-key-id",
            "other",
            "--destination-key-id",
            "other",
        ]),
        "not key-",
    );

    // Rotation: new blobs use version 2, old ones still decrypt while version 1 is enabled;
    // re-encrypt to the same key moves a blob to the newest version.
    m.cli_store(&["key", "rotate", "default"]).ok();
    let enc2 = m
        .cli_store(&[
            "kms",
            "encrypt",
            "--key-id",
            "default",
            "--plaintext",
            "YQ==",
        ])
        .ok()
        .json();
    assert_eq!(enc2["KeyVersionId"], 2);
    let up = m
        .cli_store(&[
            "kms",
            "re-encrypt",
            "--ciphertext-blob",
            &blob,
            "--source-encryption-context",
            "app=web,env=prod",
            "--destination-key-id",
            "default",
            "--destination-encryption-context",
            "app=web,env=prod",
        ])
        .ok()
        .json();
    assert_eq!(up["KeyVersionId"], 2);
    assert_eq!(up["SourceKeyVersionId"], 1);

    // A disabled version: decrypt and re-encrypt from it are refused (ENOKEY: exit 1).
    m.cli_store(&["key", "disable", "default", "--version", "1"])
        .ok();
    fails_with(
        m.cli_store(&[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &blob,
            "--encryption-context",
            "app=web,env=prod",
        ]),
        "disabled",
    );
    fails_with(
        m.cli_store(&[
            "kms",
            "re-encrypt",
            "--ciphertext-blob",
            &blob,
            "--source-encryption-context",
            "app=web,env=prod",
            "--destination-key-id",
            "other",
        ]),
        "disabled",
    );
    // The upgraded blob (version 2) still decrypts.
    assert_eq!(
        unb64(
            &m.cli_store(&[
                "kms",
                "decrypt",
                "--ciphertext-blob",
                up["CiphertextBlob"].as_str().unwrap(),
                "--encryption-context",
                "app=web,env=prod",
            ])
            .ok()
            .json()["Plaintext"]
        ),
        secret
    );
}

#[test]
fn mounted_blobs_through_ctl_and_the_forwarding_cli() {
    let mut m = TestMount::init_only(None);
    // A blob made offline decrypts through the mount later (blobs are not tied to a process).
    let offline = m
        .cli_store(&[
            "kms",
            "encrypt",
            "--key-id",
            "default",
            "--plaintext",
            &b64(b"offline"),
            "--encryption-context",
            "k=v",
        ])
        .ok()
        .json();
    m.mount();
    m.ctl("key create --alias second").ok();

    let got = m
        .ctl(&format!(
            "kms decrypt --ciphertext-blob {} --encryption-context k=v",
            offline["CiphertextBlob"].as_str().unwrap()
        ))
        .ok();
    assert_eq!(unb64(&got["Plaintext"]), b"offline");

    let enc = m
        .ctl(&format!(
            "kms encrypt --key-id second --plaintext {} --encryption-context a=1,b=2",
            b64(b"mounted secret")
        ))
        .ok();
    assert_eq!(enc["KeyId"], Value::String(m.key_id("second")));
    assert_eq!(enc["KeyVersionId"], 1);
    let blob = enc["CiphertextBlob"].as_str().unwrap().to_string();
    let dec = m
        .ctl(&format!(
            "kms decrypt --ciphertext-blob {blob} --encryption-context b=2,a=1"
        ))
        .ok();
    assert_eq!(unb64(&dec["Plaintext"]), b"mounted secret");

    // Errors through ctl: wrong context and garbage are EINVAL, an unknown key ENOKEY.
    let msg = m
        .ctl(&format!(
            "kms decrypt --ciphertext-blob {blob} --encryption-context a=1"
        ))
        .err(libc::EINVAL);
    assert!(msg.contains("encryption context"), "{msg}");
    let msg = m
        .ctl("kms decrypt --ciphertext-blob Z2FyYmFnZQ==")
        .err(libc::EINVAL);
    assert!(msg.contains("not an envelopefs ciphertext blob"), "{msg}");
    m.ctl("kms generate-data-key --key-id nosuch")
        .err(libc::ENOKEY);

    // generate-data-key through ctl.
    let dk = m.ctl("kms generate-data-key --key-id second").ok();
    assert_eq!(unb64(&dk["Plaintext"]).len(), 32);

    // re-encrypt through the CLI, which forwards to the mount (no secret needed).
    let mut c = envelopefs_cmd();
    c.arg("--store").arg(&m.store).args([
        "kms",
        "re-encrypt",
        "--ciphertext-blob",
        &blob,
        "--source-encryption-context",
        "a=1,b=2",
        "--destination-key-id",
        "default",
    ]);
    let re = run_cmd(&mut c, CMD_TIMEOUT).ok().json();
    assert_eq!(re["KeyId"], Value::String(m.key_id("default")));
    assert_eq!(re["SourceKeyId"], Value::String(m.key_id("second")));
    assert_eq!(re["SourceKeyVersionId"], 1);
    let back = m
        .ctl(&format!(
            "kms decrypt --ciphertext-blob {}",
            re["CiphertextBlob"].as_str().unwrap()
        ))
        .ok();
    assert_eq!(unb64(&back["Plaintext"]), b"mounted secret");

    // A disabled version is ENOKEY through ctl; enabled again, it works again.
    m.ctl("key rotate second").ok();
    m.ctl("key disable second --version 1").ok();
    let msg = m
        .ctl(&format!(
            "kms decrypt --ciphertext-blob {blob} --encryption-context a=1,b=2"
        ))
        .err(libc::ENOKEY);
    assert!(msg.contains("disabled"), "{msg}");
    m.ctl("key enable second --version 1").ok();
    m.ctl(&format!(
        "kms decrypt --ciphertext-blob {blob} --encryption-context a=1,b=2"
    ))
    .ok();
    m.unmount();
}

/// `--plaintext -` reads the base64 plaintext from standard input (so it is not in the
/// process list), offline and when the CLI forwards to a mount.
#[test]
fn encrypt_reads_the_plaintext_from_stdin() {
    let mut m = TestMount::init_only(None);
    let encrypt = |m: &TestMount, secret: &[u8]| -> Value {
        m.sh(&format!(
            "printf '%s\\n' {} | \"$EFS\" --store \"$S\" --key-file {} kms encrypt \
             --key-id default --plaintext - --encryption-context k=v",
            b64(secret),
            m.key.display()
        ))
        .ok()
        .json()
    };
    let decrypt = |m: &TestMount, blob: &Value| -> Vec<u8> {
        let v = m
            .cli_store(&[
                "kms",
                "decrypt",
                "--ciphertext-blob",
                blob["CiphertextBlob"].as_str().unwrap(),
                "--encryption-context",
                "k=v",
            ])
            .ok()
            .json();
        unb64(&v["Plaintext"])
    };
    let offline = encrypt(&m, b"from stdin, offline");
    assert_eq!(decrypt(&m, &offline), b"from stdin, offline");
    m.mount();
    let mounted = encrypt(&m, b"from stdin, through the mount");
    assert_eq!(decrypt(&m, &mounted), b"from stdin, through the mount");
    // Through ctl, `-` is not base64 and is refused like any other bad plaintext.
    m.ctl("kms encrypt --key-id default --plaintext -")
        .err(libc::EINVAL);
}
