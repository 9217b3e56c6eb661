//! A bucket job walks its bucket a page of names at a time and saves, with its counts, the
//! last name they include (issue 17 item 10): its memory is bounded by a page, and a job
//! killed in its middle resumes after that name, each object counted once. On a local store
//! and on a real Garage cluster, with small pages (fault `job-page-N`) and the process killed
//! after its first page (fault `die-after-job-page`).
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine;
use common::s3::{field, S3Store};
use common::*;
use envelopefs::format::records::{ObjectHeader, Wrapping};
use serde_json::Value;
use std::path::PathBuf;

/// Names whose `Path` order (the local listing order) is not their byte order: `a-c` sorts
/// after `a/...` by components, before it by bytes.
const LOCAL_NAMES: [&str; 10] = [
    "a/x", "a/y/z", "a-c", "b", "c/d/e", "c/f", "d", "e/1", "e/2", "f",
];

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn version_of(header: &[u8]) -> u32 {
    match ObjectHeader::decode(header).unwrap().wrapping {
        Wrapping::Master { version, .. } => version,
        w => panic!("wrapped under {w:?}"),
    }
}

/// The one work request of bucket `b`, from `work-request list`.
fn only_request(list: &Value) -> Value {
    let all = list.as_array().unwrap();
    assert_eq!(all.len(), 1, "{list}");
    all[0].clone()
}

/// What a job killed after its first page of `page` names must have left: the process
/// killed, the request IN_PROGRESS with that page counted and its last name as the resume
/// point, and exactly that page under the new key version (`order` is the bucket's names in
/// the backend's listing order, `version` reads an object's key version).
#[track_caller]
fn killed_after_first_page(
    out: &CmdOut,
    wr: &Value,
    page: usize,
    order: &[&str],
    version: &dyn Fn(&str) -> u32,
    before: u32,
) {
    assert_eq!(
        out.code, -1,
        "the job should have been killed:\n{}\n{}",
        out.stdout, out.stderr
    );
    assert_eq!(field(wr, "status").as_str(), Some("IN_PROGRESS"), "{wr}");
    assert_eq!(
        field(wr, "objects_total").as_u64(),
        Some(order.len() as u64),
        "{wr}"
    );
    assert_eq!(
        field(wr, "objects_rewrapped").as_u64(),
        Some(page as u64),
        "{wr}"
    );
    assert_eq!(field(wr, "objects_skipped").as_u64(), Some(0), "{wr}");
    let last = order[page - 1];
    assert_eq!(
        field(wr, "resume_after").as_str(),
        Some(hex(last.as_bytes()).as_str()),
        "the resume point is the last name of the first page ({last}): {wr}"
    );
    // The saved counts are what is durable: the first page under the new version, the rest
    // not touched yet.
    for (i, n) in order.iter().enumerate() {
        let want = if i < page { before + 1 } else { before };
        assert_eq!(version(n), want, "{n}");
    }
}

#[track_caller]
fn resumed_to_the_end(wr: &Value, total: usize) {
    assert_eq!(field(wr, "status").as_str(), Some("SUCCEEDED"), "{wr}");
    // Each object counted once: the first page's from the saved record, the rest by the
    // resumed run (a run that started over would count the first page as skipped).
    assert_eq!(
        field(wr, "objects_rewrapped").as_u64(),
        Some(total as u64),
        "{wr}"
    );
    assert_eq!(field(wr, "objects_skipped").as_u64(), Some(0), "{wr}");
    assert_eq!(field(wr, "percent_complete").as_f64(), Some(100.0), "{wr}");
    assert!(wr.get("resume_after").is_none(), "{wr}");
}

#[test]
fn a_local_bucket_job_killed_after_a_page_resumes_after_its_last_name() {
    let m = TestMount::init_only(None);
    m.cli_store(&["key", "create", "--alias", "k"]).ok();
    m.cli_store(&["bucket", "create", "--name", "b", "--kms-key-id", "k"])
        .ok();
    for (i, n) in LOCAL_NAMES.iter().enumerate() {
        m.put_object("b", n, &pattern(i as u64, 100 + i));
    }
    m.cli_store(&["key", "rotate", "k"]).ok();
    let mut order: Vec<PathBuf> = LOCAL_NAMES.iter().map(PathBuf::from).collect();
    order.sort();
    let order: Vec<&str> = order.iter().map(|p| p.to_str().unwrap()).collect();
    let mut bytewise = LOCAL_NAMES.to_vec();
    bytewise.sort();
    assert_ne!(order, bytewise, "the names must tell the two orders apart");
    let version = |n: &str| {
        version_of(&xattr_get(&m.backing_path("b", n), "user.envelopefs.header").unwrap())
    };
    let before = version("b");

    let (k, v) = fault_env("job-page-3,die-after-job-page");
    let out = m.cli_store_env(&[(&k, &v)], &["bucket", "reencrypt", "--bucket-name", "b"]);
    let wr = only_request(
        &m.cli_store(&["work-request", "list", "--bucket-name", "b"])
            .ok()
            .json(),
    );
    killed_after_first_page(&out, &wr, 3, &order, &version, before);

    // Resumed in pages of 2 by another process.
    let id = field(&wr, "id").as_str().unwrap().to_string();
    let (k, v) = fault_env("job-page-2");
    let done = m
        .cli_store_env(
            &[(&k, &v)],
            &["work-request", "wait", &id, "--wait-for-state", "SUCCEEDED"],
        )
        .ok()
        .json();
    resumed_to_the_end(&done, LOCAL_NAMES.len());
    for (i, n) in LOCAL_NAMES.iter().enumerate() {
        assert_eq!(version(n), before + 1, "{n}");
        let (o, bytes) = m.get_object("b", n);
        o.ok();
        assert_eq!(bytes, pattern(i as u64, 100 + i), "{n}");
    }
}

#[test]
fn an_object_store_bucket_job_of_many_pages_killed_midway_resumes_after_its_last_name() {
    const OBJECTS: usize = 40;
    const PAGE: usize = 7;
    let s = S3Store::new("pages");
    s.cli(&["key", "create", "--alias", "k"]).ok();
    s.cli(&["bucket", "create", "--name", "b", "--kms-key-id", "k"])
        .ok();
    let names: Vec<String> = (0..OBJECTS)
        .map(|i| format!("d{}/o{i:02}", i % 3))
        .collect();
    for (i, n) in names.iter().enumerate() {
        s.put("b", n, &pattern(i as u64 + 50, 10 + i));
    }
    s.cli(&["key", "rotate", "k"]).ok();
    // Key byte order: the listing order of an object store.
    let mut order = names.clone();
    order.sort();
    let s3 = s.s3();
    let version = |n: &str| {
        let head = s3.head(&s.key_of(&format!("b/{n}"))).unwrap().unwrap();
        version_of(
            &base64::engine::general_purpose::STANDARD
                .decode(&head.metadata["envelopefs-header"])
                .unwrap(),
        )
    };
    let before = version(&order[0]);

    let (k, v) = fault_env(&format!("job-page-{PAGE},die-after-job-page"));
    let mut c = s.cmd();
    c.env(k, v)
        .args(["bucket", "reencrypt", "--bucket-name", "b"]);
    let out = run_cmd(&mut c, common::s3::TIMEOUT);
    let wr = only_request(
        &s.cli(&["work-request", "list", "--bucket-name", "b"])
            .ok()
            .json(),
    );
    let order: Vec<&str> = order.iter().map(String::as_str).collect();
    killed_after_first_page(&out, &wr, PAGE, &order, &version, before);

    let id = field(&wr, "id").as_str().unwrap().to_string();
    let (k, v) = fault_env(&format!("job-page-{PAGE}"));
    let mut c = s.cmd();
    c.env(k, v)
        .args(["work-request", "wait", &id, "--wait-for-state", "SUCCEEDED"]);
    let done = run_cmd(&mut c, common::s3::TIMEOUT).ok().json();
    resumed_to_the_end(&done, OBJECTS);
    for (i, n) in names.iter().enumerate() {
        assert_eq!(version(n), before + 1, "{n}");
        assert_eq!(s.get("b", n), pattern(i as u64 + 50, 10 + i), "{n}");
    }
}
