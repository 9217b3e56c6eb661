#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Work requests inside a live mount (issue 4): a bucket of 20,000 objects is re-encrypted
//! while the filesystem keeps serving reads and writes, and every object ends under the new
//! key version with its data bytes untouched.

mod common;

use common::workreq::populate;
use common::*;
use serde_json::Value;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn wr_json(t: &TestMount, id: &str) -> Value {
    let p = t.mnt.join(".envelopefs/work-requests").join(id);
    serde_json::from_slice(&fs::read(&p).unwrap()).unwrap()
}

fn backing_digest(dir: &Path) -> Vec<(PathBuf, Vec<u8>, i64, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((
                    e.path(),
                    fs::read(e.path()).unwrap(),
                    m.mtime(),
                    m.mtime_nsec(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn twenty_thousand_objects_reencrypt_while_the_mount_serves() {
    const N: usize = 20_000;
    let mut t = TestMount::init_only(None);
    populate(&t, "big", N);
    let before = backing_digest(&t.store.join("big"));
    t.mount();
    fs::create_dir(t.mnt.join("work")).unwrap();
    let busy = t.mnt.join("work/busy.dat");

    let v = t.ctl("key rotate k").ok();
    assert_eq!(v["current_version"], 2, "{v}");
    fs::write(t.mnt.join(".envelopefs/buckets/big/reencrypt"), "latest\n").unwrap();
    let id = fs::read_to_string(t.mnt.join(".envelopefs/buckets/big/reencrypt"))
        .unwrap()
        .trim()
        .to_string();
    assert!(id.starts_with("wr-"), "no work request id: {id:?}");

    // Work in another bucket while the request runs; every operation must answer quickly.
    let mut latencies = Vec::new();
    let mut during = 0usize;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut model = Vec::new();
    let state = loop {
        let wr = wr_json(&t, &id);
        let status = wr["status"].as_str().unwrap_or("").to_string();
        if status == "SUCCEEDED" || status == "FAILED" {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "work request still {status} after 300 s"
        );
        let start = Instant::now();
        let chunk = pattern(latencies.len() as u64, 4096);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&busy)
            .unwrap();
        f.write_all(&chunk).unwrap();
        drop(f);
        model.extend_from_slice(&chunk);
        let got = fs::read(&busy).unwrap();
        assert_bytes_eq(&got, &model, "file written during the re-encrypt");
        fs::metadata(t.mnt.join("big/d3/o3000")).unwrap();
        latencies.push(start.elapsed());
        if status == "IN_PROGRESS" {
            during += 1;
        }
    };
    assert_eq!(state, "SUCCEEDED", "{}", wr_json(&t, &id));
    let wr = wr_json(&t, &id);
    assert_eq!(wr["objects_total"], N as u64, "{wr}");
    assert_eq!(wr["objects_rewrapped"], N as u64, "{wr}");
    assert_eq!(wr["objects_failed"], 0, "{wr}");
    assert_eq!(wr["percent_complete"], 100.0, "{wr}");
    latencies.sort();
    let max = latencies.last().copied().unwrap_or_default();
    let median = latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or_default();
    eprintln!(
        "{} rounds of append+read+stat during the request ({during} while IN_PROGRESS): median {median:?}, max {max:?}",
        latencies.len()
    );
    assert!(
        max < Duration::from_secs(3),
        "an operation took {max:?} while the work request ran: the mount is not responsive"
    );

    // Every header is current, and no data byte or mtime changed.
    for i in (0..N).step_by(997) {
        let p = t.mnt.join(format!("big/d{}/o{i}", i / 1000));
        assert_eq!(
            xattr_str(&p, "user.envelopefs.key-version"),
            "2",
            "{}",
            p.display()
        );
        assert_eq!(fs::read_to_string(&p).unwrap(), format!("object {i}\n"));
    }
    t.unmount();
    let after = backing_digest(&t.store.join("big"));
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(after.iter()) {
        assert!(b == a, "backing data or mtime of {} changed", b.0.display());
    }
}

#[test]
fn waits_return_as_soon_as_a_small_job_is_done_with_the_default_interval() {
    // The first look comes at once and the next ones after short, growing pauses: waiting
    // for a job that takes milliseconds must not sleep a whole --wait-interval-seconds (30 s
    // by default). The bound is far above the job's time and far below one interval.
    const BOUND: Duration = Duration::from_secs(5);
    let mut t = TestMount::init_only(None);
    populate(&t, "small", 100);
    t.mount();
    t.ctl("key rotate k").ok();
    let started = Instant::now();
    let out = t
        .cli_store(&[
            "bucket",
            "reencrypt",
            "--bucket-name",
            "small",
            "--wait-for-state",
            "SUCCEEDED",
        ])
        .ok();
    let took = started.elapsed();
    let wr = out.json();
    assert_eq!(wr["status"], "SUCCEEDED", "{wr}");
    assert_eq!(wr["objects_rewrapped"], 100, "{wr}");
    assert!(
        took < BOUND,
        "bucket reencrypt --wait-for-state took {took:?}"
    );

    // work-request wait on a job started through the control file.
    t.ctl("key rotate k").ok();
    fs::write(
        t.mnt.join(".envelopefs/buckets/small/reencrypt"),
        "latest\n",
    )
    .unwrap();
    let id = fs::read_to_string(t.mnt.join(".envelopefs/buckets/small/reencrypt")).unwrap();
    let started = Instant::now();
    let out = t
        .cli_store(&[
            "work-request",
            "wait",
            id.trim(),
            "--wait-for-state",
            "SUCCEEDED",
        ])
        .ok();
    let took = started.elapsed();
    assert_eq!(out.json()["status"], "SUCCEEDED", "{}", out.stdout);
    assert!(took < BOUND, "work-request wait took {took:?}");
    assert_eq!(wr_json(&t, id.trim())["target_key_version"], 3);
}
