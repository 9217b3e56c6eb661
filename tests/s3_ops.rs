//! The offline store operations that read or rewrite every object, on a store in a real
//! three-node Garage cluster, through the CLI: `fsck` (and `fsck --read-data`, by ranged
//! GETs with bounded memory) finding each kind of damage that applies to an object store,
//! `headers export` / `headers import` putting back a lost bucket record and a lost header,
//! and `object reencrypt --rekey` / `bucket reencrypt --rekey` giving objects new data keys
//! by publishing re-encrypted objects over their names.
//!
//! One test function runs the cases in turn on one cluster. Garage missing is a failure that
//! says so (common::garage), never a skip.
#![allow(clippy::unwrap_used)]

mod common;

use common::s3::{field, pattern, S3Store};
use common::CmdOut;
use envelopefs::store::s3::client::S3Client;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::process::Stdio;

const CHUNK: usize = 4096;
/// A large object: a multipart upload, and big enough that reading it whole into memory
/// would show in the peak RSS of `fsck --read-data`.
const LARGE: usize = (48 << 20) + 17;

fn objects() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("small", pattern(10_000, 1)),
        ("dir/empty", Vec::new()),
        ("dir/exact", pattern(2 * CHUNK, 3)),
        ("large", pattern(LARGE, 4)),
    ]
}

/// Chunks of an object of `len` bytes: full ones and a final one (empty when `len` is a
/// multiple of the chunk size).
fn chunks_of(len: usize) -> u64 {
    (len / CHUNK + 1) as u64
}

#[test]
fn fsck_headers_and_rekey_on_a_store_in_garage() {
    let s = S3Store::new("vault");
    s.cli(&["bucket", "create", "--name", "b", "--kms-key-id", "default"])
        .ok();
    for (name, data) in objects() {
        s.put("b", name, &data);
    }
    fsck_of_a_clean_store(&s);
    let backup = s.path("headers.json");
    let exported = s
        .cli(&["headers", "export", "--out", &backup.display().to_string()])
        .ok()
        .json();
    assert_eq!(field(&exported, "buckets").as_u64(), Some(1), "{exported}");
    assert_eq!(field(&exported, "objects").as_u64(), Some(4), "{exported}");
    assert_eq!(field(&exported, "skipped"), &Value::Array(vec![]));
    fsck_finds_each_kind_of_damage(&s);
    headers_import_puts_back_what_was_lost(&s, &backup);
    rekey_of_one_object_and_of_a_bucket(&s);
}

/// Problems of a report as `(object, kind)`.
fn problems(report: &Value) -> BTreeSet<(String, String)> {
    field(report, "problems")
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert!(
                !field(p, "detail").as_str().unwrap().is_empty(),
                "a problem without detail: {p}"
            );
            (
                field(p, "object").as_str().unwrap().to_string(),
                field(p, "kind").as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Runs `envelopefs ARGS` and returns its output and its peak RSS in bytes (from wait4).
fn with_rss(s: &S3Store, args: &[&str]) -> (CmdOut, u64) {
    let out = s.path("fsck.out");
    let err = s.path("fsck.err");
    let mut c = s.cmd();
    c.args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap());
    // Reaped by the wait4 below, which also gives its resource usage.
    #[allow(clippy::zombie_processes)]
    let child = c.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    #[allow(unsafe_code)]
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, filling the two out-parameters.
    #[allow(unsafe_code)]
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    let o = CmdOut {
        what: format!("envelopefs {}", args.join(" ")),
        code: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        },
        stdout: fs::read_to_string(&out).unwrap(),
        stderr: fs::read_to_string(&err).unwrap(),
    };
    (o, ru.ru_maxrss as u64 * 1024)
}

fn fsck_of_a_clean_store(s: &S3Store) {
    let (o, base_rss) = with_rss(s, &["fsck"]);
    let r = o.ok().json();
    assert_eq!(field(&r, "ok"), &Value::Bool(true), "{r}");
    assert_eq!(field(&r, "read_data"), &Value::Bool(false), "{r}");
    assert_eq!(field(&r, "buckets").as_u64(), Some(1), "{r}");
    assert_eq!(field(&r, "objects").as_u64(), Some(4), "{r}");
    assert_eq!(field(&r, "chunks").as_u64(), Some(0), "{r}");

    // Every chunk of every object authenticated, and the 48 MiB object never held in memory
    // whole: the body is read by ranged GETs of at most 4 MiB.
    let (o, rss) = with_rss(s, &["fsck", "--read-data"]);
    let r = o.ok().json();
    assert_eq!(field(&r, "ok"), &Value::Bool(true), "{r}");
    let want: u64 = objects().iter().map(|(_, d)| chunks_of(d.len())).sum();
    assert_eq!(field(&r, "chunks").as_u64(), Some(want), "{r}");
    eprintln!(
        "peak RSS: fsck {} MiB, fsck --read-data {} MiB",
        base_rss >> 20,
        rss >> 20
    );
    // The same process without --read-data is the baseline (the binary's own pages).
    assert!(
        rss < base_rss + LARGE as u64 / 2,
        "fsck --read-data peaked at {} MiB for a {} MiB object: it reads it whole",
        rss >> 20,
        LARGE >> 20
    );
}

/// Rewrites the body of `key`, keeping its metadata.
fn rewrite_body(s3: &S3Client, key: &str, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let (mut body, head) = s3.get(key).unwrap().unwrap();
    let old = body.clone();
    f(&mut body);
    let meta: Vec<(String, String)> = head.metadata.into_iter().collect();
    s3.put(key, body, &meta).unwrap();
    old
}

fn metadata(s3: &S3Client, key: &str) -> Vec<(String, String)> {
    s3.head(key)
        .unwrap()
        .unwrap()
        .metadata
        .into_iter()
        .collect()
}

fn fsck_finds_each_kind_of_damage(s: &S3Store) {
    let s3 = s.s3();
    let k = |rel: &str| s.key_of(rel);
    // One flipped byte in the middle of the large object: only --read-data sees it.
    let large_body = rewrite_body(&s3, &k("b/large"), |b| b[LARGE / 2] ^= 0x40);
    // A header lost (a copy by a tool that drops metadata).
    s3.copy(&k("b/small"), &k("b/small"), &[], None).unwrap();
    // Another object's header.
    let empty_meta = metadata(&s3, &k("b/dir/empty"));
    let exact_meta = metadata(&s3, &k("b/dir/exact"));
    s3.copy(&k("b/dir/empty"), &k("b/dir/empty"), &exact_meta, None)
        .unwrap();
    // Things that are no envelopefs object, bucket or record.
    s3.put(&k("b/junk"), b"hello".to_vec(), &[]).unwrap();
    s3.put(&k("stray"), b"x".to_vec(), &[]).unwrap();
    s3.put(&k("orphan/x"), b"y".to_vec(), &[]).unwrap();
    s3.put(&k(".envelopefs/buckets/zz"), b"garbage".to_vec(), &[])
        .unwrap();
    let wr = ".envelopefs/work-requests/wr-00000000000000000000000000000000.json";
    s3.put(&k(wr), b"{".to_vec(), &[]).unwrap();

    let mut want: BTreeSet<(String, String)> = [
        ("b/small", "header-missing"),
        ("b/dir/empty", "object-id-mismatch"),
        ("b/junk", "header-missing"),
        ("b/junk", "preamble"),
        ("b/junk", "size"),
        ("stray", "stray-entry"),
        ("orphan", "bucket-record-missing"),
        ("orphan/x", "header-missing"),
        ("orphan/x", "preamble"),
        ("orphan/x", "size"),
        ("zz", "bucket-record"),
        (wr, "work-request"),
    ]
    .into_iter()
    .map(|(o, k)| (o.to_string(), k.to_string()))
    .collect();
    let o = s.cli(&["fsck"]);
    assert_eq!(o.code, 1, "fsck of a damaged store exits 1: {}", o.stderr);
    assert!(o.stderr.contains("fsck found 12 problems"), "{}", o.stderr);
    let r = o.json();
    assert_eq!(field(&r, "ok"), &Value::Bool(false));
    assert_eq!(problems(&r), want, "{r}");

    want.insert(("b/large".into(), "chunk".into()));
    let r = s.cli(&["fsck", "--read-data"]).fails().json();
    assert_eq!(problems(&r), want, "{r}");
    let detail = field(&r, "problems")
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "chunk")
        .map(|p| p["detail"].as_str().unwrap().to_string())
        .unwrap();
    // Body: a 24-byte preamble, then chunks of nonce (12), ciphertext and tag (16).
    let bad_chunk = (LARGE / 2 - 24) / (CHUNK + 28);
    assert!(
        detail.contains(&format!("chunk {bad_chunk} failed authentication")),
        "{detail}"
    );

    // fsck changed nothing: the damage is as it was made.
    assert!(s3.head(&k("b/small")).unwrap().unwrap().metadata.is_empty());

    // Undo all but the lost header (which headers import puts back) and the lost bucket
    // record (removed now, for the same).
    s3.put(&k("b/large"), large_body, &metadata(&s3, &k("b/large")))
        .unwrap();
    s3.copy(&k("b/dir/empty"), &k("b/dir/empty"), &empty_meta, None)
        .unwrap();
    for rel in ["b/junk", "stray", "orphan/x", ".envelopefs/buckets/zz", wr] {
        s3.delete(&k(rel)).unwrap();
    }
    s3.delete(&k(".envelopefs/buckets/b")).unwrap();
}

fn headers_import_puts_back_what_was_lost(s: &S3Store, backup: &std::path::Path) {
    // Without its record the bucket is gone, and fsck says its objects lie there.
    let r = s.cli(&["fsck"]).fails().json();
    assert!(
        problems(&r).contains(&("b".to_string(), "bucket-record-missing".to_string())),
        "{r}"
    );
    let got = s
        .cli(&["headers", "import", &backup.display().to_string()])
        .ok()
        .json();
    assert_eq!(field(&got, "buckets_restored").as_u64(), Some(1), "{got}");
    assert_eq!(field(&got, "headers_restored").as_u64(), Some(1), "{got}");
    assert_eq!(field(&got, "headers_present").as_u64(), Some(3), "{got}");
    assert_eq!(field(&got, "refused"), &Value::Array(vec![]), "{got}");
    // A second import finds everything there.
    let again = s
        .cli(&["headers", "import", &backup.display().to_string()])
        .ok()
        .json();
    assert_eq!(
        field(&again, "buckets_present").as_u64(),
        Some(1),
        "{again}"
    );
    assert_eq!(
        field(&again, "headers_present").as_u64(),
        Some(4),
        "{again}"
    );

    let r = s.cli(&["fsck", "--read-data"]).ok().json();
    assert_eq!(field(&r, "ok"), &Value::Bool(true), "{r}");
    for (name, data) in objects() {
        assert!(s.get("b", name) == data, "b/{name} reads back differently");
    }
}

fn rekey_of_one_object_and_of_a_bucket(s: &S3Store) {
    let s3 = s.s3();
    let k = |rel: &str| s.key_of(rel);
    let before: Vec<(String, String)> = objects()
        .iter()
        .map(|(n, _)| {
            let h = s.head("b", n);
            (
                field(&h, "object_id").as_str().unwrap().to_string(),
                s3.head(&k(&format!("b/{n}"))).unwrap().unwrap().etag,
            )
        })
        .collect();

    // One object: a new object id, a new body (new ETag), the same content.
    let r = s
        .cli(&[
            "object",
            "reencrypt",
            "--bucket-name",
            "b",
            "--name",
            "small",
            "--rekey",
        ])
        .ok()
        .json();
    assert_eq!(field(&r, "result").as_str(), Some("REKEYED"), "{r}");
    assert_eq!(
        field(&r, "previous_object_id").as_str(),
        Some(&*before[0].0)
    );
    assert_ne!(field(&r, "object_id").as_str(), Some(&*before[0].0), "{r}");
    assert_ne!(
        s3.head(&k("b/small")).unwrap().unwrap().etag,
        before[0].1,
        "the body was not rewritten"
    );
    assert!(s.get("b", "small") == objects()[0].1);

    // The bucket: every object rekeyed (the one above again: it was made before the
    // request), each with a new object id and body, every object reading back the same.
    let mid = s.head("b", "small");
    let wr = s
        .cli(&[
            "bucket",
            "reencrypt",
            "--bucket-name",
            "b",
            "--rekey",
            "--wait-for-state",
            "SUCCEEDED",
        ])
        .ok()
        .json();
    assert_eq!(field(&wr, "status").as_str(), Some("SUCCEEDED"), "{wr}");
    assert_eq!(field(&wr, "objects_rekeyed").as_u64(), Some(4), "{wr}");
    assert_eq!(field(&wr, "objects_failed").as_u64(), Some(0), "{wr}");
    for (i, (name, data)) in objects().iter().enumerate() {
        let h = s.head("b", name);
        let id = field(&h, "object_id").as_str().unwrap();
        assert_ne!(id, before[i].0, "b/{name} kept its object id");
        if i == 0 {
            assert_ne!(Some(id), field(&mid, "object_id").as_str());
        }
        assert_ne!(
            s3.head(&k(&format!("b/{name}"))).unwrap().unwrap().etag,
            before[i].1,
            "b/{name}: the body was not rewritten"
        );
        assert!(s.get("b", name) == *data, "b/{name} reads back differently");
    }
    let r = s.cli(&["fsck", "--read-data"]).ok().json();
    assert_eq!(field(&r, "ok"), &Value::Bool(true), "{r}");
    // No upload was left unfinished.
    assert_eq!(s3.abort_uploads(&s.key_of("")).unwrap(), 0);
}
