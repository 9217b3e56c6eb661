//! Faults of a store in a real three-node Garage cluster, each a case of one test function on
//! one cluster:
//! - the process running a bucket re-encrypt killed with SIGKILL in the middle: another
//!   process (`work-request wait`) takes over its lease and resumes the request, which ends
//!   SUCCEEDED with every object under the new key version; a lease of a holder elsewhere
//!   binds only until it expires;
//! - one of the three Garage nodes killed during a bucket re-encrypt: the job completes;
//! - two of three killed: the command fails with a clear error within a bounded time, the
//!   request stays IN_PROGRESS, and once the nodes are back it resumes and completes, every
//!   object still reading back to its content;
//! - an upload cut off (the process killed after two parts of a multipart upload, or a part
//!   failing): no partial object is visible under the name, the old content is intact;
//!   a killed one leaves an unfinished upload, which fsck reports (`unfinished-upload`) and
//!   the next command that takes the lease aborts;
//! - an upload under way by a live holder of the lease: another process is refused the
//!   lease and aborts nothing, and the upload completes;
//! - the clean-up's line: an upload begun before the lease was taken is aborted, one begun
//!   after it is not;
//! - an object written (by a writer that ignores the lease) while a rekey of it is under way:
//!   the rekey refuses to publish over it, and the write is kept.
//!
//! Needs a build with the cargo feature `fault-injection` (it says so otherwise).
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine;
use common::s3::{field, pattern, S3Store};
use common::{fails_with, fault_env, run_cmd};
use envelopefs::format::records::{ObjectHeader, Wrapping};
use envelopefs::store::s3::client::{S3Client, PART_SIZE};
use envelopefs::store::s3::lease::Lease;
use serde_json::Value;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Objects of the bucket the jobs run on.
const OBJECTS: usize = 40;

fn name(i: usize) -> String {
    format!("o/{i:03}")
}

fn content(i: usize) -> Vec<u8> {
    pattern(3000 + 97 * i, i as u8)
}

#[test]
fn faults_of_a_store_in_garage() {
    let s = S3Store::new("vault");
    s.cli(&["bucket", "create", "--name", "b", "--kms-key-id", "default"])
        .ok();
    for i in 0..OBJECTS {
        s.put("b", &name(i), &content(i));
    }
    a_killed_job_is_resumed_by_another_process(&s);
    a_lease_held_elsewhere_binds_until_it_expires(&s);
    one_node_of_three_killed_during_a_reencrypt(&s);
    two_nodes_of_three_killed_during_a_reencrypt(&s);
    an_upload_cut_off_leaves_no_partial_object(&s);
    an_upload_under_way_is_not_aborted(&s);
    a_rekey_does_not_publish_over_a_concurrent_write(&s);
    only_uploads_begun_before_the_lease_are_aborted(&s);
}

/// The key version every object's header is wrapped under (from the raw S3 metadata).
fn versions(s: &S3Store, s3: &S3Client) -> Vec<u32> {
    (0..OBJECTS)
        .map(|i| {
            let key = s.key_of(&format!("b/{}", name(i)));
            let head = s3.head(&key).unwrap().unwrap();
            let b64 = &head.metadata["envelopefs-header"];
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            match ObjectHeader::decode(&bytes).unwrap().wrapping {
                Wrapping::Master { version, .. } => version,
                w => panic!("{key}: wrapped under {w:?}"),
            }
        })
        .collect()
}

/// Every object reads back to its content.
#[track_caller]
fn all_content_intact(s: &S3Store) {
    for i in 0..OBJECTS {
        assert!(
            s.get("b", &name(i)) == content(i),
            "b/{} reads back differently",
            name(i)
        );
    }
}

/// Rotates the default key and starts `bucket reencrypt --wait-for-state SUCCEEDED` with the
/// `slower-work-requests` fault (50 ms per object), in the background.
fn start_slow_reencrypt(s: &S3Store) -> Child {
    s.cli(&["key", "rotate", "default"]).ok();
    let (k, v) = fault_env("slower-work-requests");
    let mut c = s.cmd();
    c.env(k, v)
        .args([
            "bucket",
            "reencrypt",
            "--bucket-name",
            "b",
            "--wait-for-state",
            "SUCCEEDED",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.spawn().unwrap()
}

/// The keys of the work-request records there are now.
fn records(s: &S3Store, s3: &S3Client) -> Vec<String> {
    let prefix = s.key_of(".envelopefs/work-requests/");
    let page = s3.list(&prefix, None, None, 1000).unwrap();
    assert!(page.next.is_none());
    page.objects.into_iter().map(|o| o.key).collect()
}

/// Waits until a work request not among `before` has rewrapped at least `n` objects (by
/// its record in the object store); returns it.
fn wait_for_progress(s: &S3Store, s3: &S3Client, before: &[String], n: u64) -> Value {
    let t0 = Instant::now();
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no work request made progress"
        );
        for key in records(s, s3) {
            if before.contains(&key) {
                continue;
            }
            let Some((bytes, _)) = s3.get(&key).unwrap() else {
                continue;
            };
            let wr: Value = serde_json::from_slice(&bytes).unwrap();
            let status = field(&wr, "status").as_str().unwrap();
            assert_ne!(
                status, "SUCCEEDED",
                "the job ended before the fault could land in its middle: {wr}"
            );
            if status == "IN_PROGRESS" && field(&wr, "objects_rewrapped").as_u64() >= Some(n) {
                return wr;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill9(child: &mut Child) {
    // SAFETY: kill(2) of our own child, not yet waited for.
    #[allow(unsafe_code)]
    let r = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    assert_eq!(r, 0);
    let st = child.wait().unwrap();
    assert!(!st.success(), "killed, not exited: {st:?}");
}

/// The output of a background command, once it ended (at most `limit` from now).
fn finish(mut child: Child, limit: Duration) -> (i32, String, String) {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                st.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the command did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn a_killed_job_is_resumed_by_another_process(s: &S3Store) {
    let s3 = s.s3();
    let before = records(s, &s3);
    let mut job = start_slow_reencrypt(s);
    let pid = job.id();
    let wr = wait_for_progress(s, &s3, &before, 3);
    kill9(&mut job);
    let id = field(&wr, "id").as_str().unwrap().to_string();
    let target = field(&wr, "target_key_version").as_u64().unwrap() as u32;

    // What the killed process left: its lease naming it, its request IN_PROGRESS, some
    // objects rewrapped and some not.
    let (lease, _) = s3
        .get(&s.key_of(".envelopefs/lease"))
        .unwrap()
        .expect("the killed process's lease is left behind");
    let lease: Value = serde_json::from_slice(&lease).unwrap();
    assert_eq!(
        field(&lease, "pid").as_u64(),
        Some(u64::from(pid)),
        "{lease}"
    );

    let got = s.cli(&["work-request", "get", &id]).ok().json();
    assert_eq!(field(&got, "status").as_str(), Some("IN_PROGRESS"), "{got}");
    let v = versions(s, &s3);
    let done = v.iter().filter(|&&x| x == target).count();
    assert!(
        done > 0 && done < OBJECTS,
        "the kill should land mid-job: {done} of {OBJECTS} rewrapped"
    );
    // Another process takes the lease over at once (its holder is a dead pid of this host)
    // and resumes the request to its end.
    let t0 = Instant::now();
    let wr = s.cli(&["work-request", "wait", &id]).ok().json();
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "the dead holder's lease held the next process back"
    );
    assert_eq!(field(&wr, "status").as_str(), Some("SUCCEEDED"), "{wr}");
    assert_eq!(field(&wr, "objects_failed").as_u64(), Some(0), "{wr}");
    assert_eq!(
        versions(s, &s3),
        vec![target; OBJECTS],
        "every object under the new key version"
    );
    let got = s.cli(&["work-request", "get", &id]).ok().json();
    assert_eq!(field(&got, "status").as_str(), Some("SUCCEEDED"), "{got}");
    // The lease was released by the process that finished.
    assert!(s3.head(&s.key_of(".envelopefs/lease")).unwrap().is_none());
}

fn a_lease_held_elsewhere_binds_until_it_expires(s: &S3Store) {
    let s3 = s.s3();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let lease = serde_json::json!({
        "host": "another-host.invalid",
        "pid": 4242,
        "what": "envelopefs bucket",
        "nonce": "00",
        "expires_s": now + 4,
    });
    s3.put(
        &s.key_of(".envelopefs/lease"),
        serde_json::to_vec(&lease).unwrap(),
        &[],
    )
    .unwrap();
    let msg = fails_with(s.cli(&["bucket", "list"]), "another-host.invalid");
    assert!(msg.contains("4242"), "{msg}");
    std::thread::sleep(Duration::from_secs(5));
    s.cli(&["bucket", "list"]).ok();
}

fn one_node_of_three_killed_during_a_reencrypt(s: &S3Store) {
    let s3 = s.s3();
    let before = records(s, &s3);
    let job = start_slow_reencrypt(s);
    let wr = wait_for_progress(s, &s3, &before, 3);
    // Node 1 is the endpoint; node 3 dies as in a crash.
    s.cluster.kill_node(3);
    let (code, out, err) = finish(job, Duration::from_secs(300));
    assert_eq!(code, 0, "the job should complete with one node down: {err}");
    let done: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(field(&done, "id"), field(&wr, "id"));
    assert_eq!(field(&done, "status").as_str(), Some("SUCCEEDED"), "{done}");
    assert_eq!(
        field(&done, "objects_rewrapped").as_u64(),
        Some(OBJECTS as u64),
        "{done}"
    );
    let target = field(&done, "target_key_version").as_u64().unwrap() as u32;
    assert_eq!(versions(s, &s3), vec![target; OBJECTS]);
    all_content_intact(s);
    s.cluster.start_node(3);
}

fn two_nodes_of_three_killed_during_a_reencrypt(s: &S3Store) {
    let s3 = s.s3();
    let before = records(s, &s3);
    let job = start_slow_reencrypt(s);
    let wr = wait_for_progress(s, &s3, &before, 3);
    let id = field(&wr, "id").as_str().unwrap().to_string();
    let target = field(&wr, "target_key_version").as_u64().unwrap() as u32;
    s.cluster.kill_node(2);
    s.cluster.kill_node(3);
    let t0 = Instant::now();
    // Bounded: the client's retries and timeouts (3 attempts, 150 s per operation at most).
    let (code, out, err) = finish(job, Duration::from_secs(400));
    eprintln!(
        "with two of three nodes down the job stopped after {:?}",
        t0.elapsed()
    );
    assert_eq!(code, 1, "a clear error, not success: {out} {err}");
    assert!(err.contains(&id), "the error names the request: {err}");
    assert!(err.contains("IN_PROGRESS"), "{err}");
    assert!(err.contains(&s.cluster.endpoint), "and the endpoint: {err}");
    assert!(
        !err.contains(&s.cluster.secret_key),
        "a secret was printed: {err}"
    );

    // Back up: the request resumes from another process and completes, nothing lost.
    s.cluster.start_node(2);
    s.cluster.start_node(3);
    let got = s.cli(&["work-request", "get", &id]).ok().json();
    assert_eq!(field(&got, "status").as_str(), Some("IN_PROGRESS"), "{got}");
    let wr = s.cli(&["work-request", "wait", &id]).ok().json();
    assert_eq!(field(&wr, "status").as_str(), Some("SUCCEEDED"), "{wr}");
    assert_eq!(field(&wr, "objects_failed").as_u64(), Some(0), "{wr}");
    assert_eq!(versions(s, &s3), vec![target; OBJECTS]);
    all_content_intact(s);
    let r = s.cli(&["fsck", "--read-data"]).ok().json();
    assert_eq!(field(&r, "ok"), &Value::Bool(true), "{r}");
}

fn an_upload_cut_off_leaves_no_partial_object(s: &S3Store) {
    let s3 = s.s3();
    let big = |seed| pattern(3 * PART_SIZE as usize + 1000, seed);
    let old = big(1);
    s.put("b", "big", &old);
    let key = s.key_of("b/big");
    let etag = s3.head(&key).unwrap().unwrap().etag;
    let newer = s.path("newer");
    std::fs::write(&newer, big(2)).unwrap();
    let newer = newer.display().to_string();

    for (fault, dies) in [("s3-die-mid-upload", true), ("s3-fail-mid-upload", false)] {
        for (obj, existed) in [("big", true), ("fresh", false)] {
            let (k, v) = fault_env(fault);
            let mut c = s.cmd();
            c.env(k, v).args([
                "object",
                "put",
                "--bucket-name",
                "b",
                "--name",
                obj,
                "--file",
                &newer,
            ]);
            let o = run_cmd(&mut c, common::s3::TIMEOUT);
            if dies {
                assert_eq!(o.code, -1, "{fault}: killed by its signal: {}", o.stderr);
            } else {
                assert_eq!(o.code, 1, "{fault}: {}", o.stderr);
                assert!(o.stderr.contains("connection was cut"), "{}", o.stderr);
            }
            let what = format!("{fault}, b/{obj}");
            // Looked at with a raw client first: an envelopefs command would take the lease.
            if existed {
                let h = s3.head(&key).unwrap().unwrap();
                assert_eq!(h.etag, etag, "{what}: the object changed");
            } else {
                assert!(
                    s3.head(&s.key_of("b/fresh")).unwrap().is_none(),
                    "{what}: a partial object is visible"
                );
            }
            // A killed process leaves its unfinished upload (invisible) and its lease; a
            // failed one aborts its own.
            let uploads = s3.list_uploads(&s.key_of("")).unwrap();
            if !dies {
                assert!(uploads.is_empty(), "{what}: unfinished uploads {uploads:?}");
            } else {
                let [u] = &uploads[..] else {
                    panic!("{what}: one unfinished upload: {uploads:?}")
                };
                assert_eq!(u.key, s.key_of(&format!("b/{obj}")), "{what}");
                assert!(
                    s3.head(&s.key_of(".envelopefs/lease")).unwrap().is_some(),
                    "{what}: the killed process's lease is left behind"
                );
                if existed {
                    // fsck (which takes over the dead holder's lease, and changes nothing)
                    // reports it, and leaves it there.
                    let o = s.cli(&["fsck"]);
                    let r = o.json();
                    assert_eq!(o.code, 1, "{what}: {r}");
                    let problems = field(&r, "problems").as_array().unwrap();
                    assert_eq!(problems.len(), 1, "{what}: {r}");
                    assert_eq!(
                        field(&problems[0], "kind").as_str(),
                        Some("unfinished-upload"),
                        "{what}: {r}"
                    );
                    assert_eq!(
                        field(&problems[0], "object").as_str(),
                        Some("b/big"),
                        "{what}: {r}"
                    );
                    assert_eq!(s3.list_uploads(&s.key_of("")).unwrap(), uploads, "{what}");
                }
            }
            // The next command takes the lease (the dead holder's, or after fsck a free one)
            // and aborts what earlier holders left.
            let o = if existed {
                s.cli(&["object", "head", "--bucket-name", "b", "--name", "big"])
                    .ok()
            } else {
                s.cli(&["object", "head", "--bucket-name", "b", "--name", "fresh"])
                    .fails()
            };
            if dies {
                assert!(
                    o.stderr.contains("aborted an unfinished upload"),
                    "{what}: {}",
                    o.stderr
                );
            }
            let left = s3.list_uploads(&s.key_of("")).unwrap();
            assert!(left.is_empty(), "{what}: unfinished uploads {left:?}");
            if existed {
                assert!(s.get("b", "big") == old, "{what}: the old content is gone");
            }
            let r = s.cli(&["fsck"]).ok().json();
            assert_eq!(field(&r, "ok"), &Value::Bool(true), "{what}: {r}");
        }
    }
    let r = s.cli(&["fsck", "--read-data"]).ok().json();
    assert_eq!(field(&r, "ok"), &Value::Bool(true), "{r}");
}

/// An upload under way by a live holder of the lease is never aborted: another process is
/// refused the lease meanwhile (and aborts nothing), and the upload completes.
fn an_upload_under_way_is_not_aborted(s: &S3Store) {
    let s3 = s.s3();
    let data = pattern(3 * PART_SIZE as usize + 1000, 7);
    let file = s.path("slow");
    std::fs::write(&file, &data).unwrap();
    let file = file.display().to_string();
    let (k, v) = fault_env("s3-slow-upload");
    let mut c = s.cmd();
    c.env(k, v)
        .args([
            "object",
            "put",
            "--bucket-name",
            "b",
            "--name",
            "slow",
            "--file",
            &file,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let put = c.spawn().unwrap();
    let t0 = Instant::now();
    let under_way = loop {
        let u = s3.list_uploads(&s.key_of("")).unwrap();
        if !u.is_empty() {
            break u;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no upload began");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(under_way.len(), 1, "{under_way:?}");
    assert_eq!(under_way[0].key, s.key_of("b/slow"));
    // Four parts, each 1 s late: the upload lasts seconds after its first part.
    let msg = fails_with(s.cli(&["bucket", "list"]), "is in use by");
    assert!(msg.contains("envelopefs object"), "{msg}");
    let msg = fails_with(s.cli(&["fsck"]), "is in use by");
    assert!(msg.contains("envelopefs object"), "{msg}");
    assert_eq!(
        s3.list_uploads(&s.key_of("")).unwrap(),
        under_way,
        "the upload under way was touched"
    );
    let (code, out, err) = finish(put, Duration::from_secs(120));
    assert_eq!(code, 0, "the upload must complete: {out} {err}");
    assert!(s3.list_uploads(&s.key_of("")).unwrap().is_empty());
    assert!(s.get("b", "slow") == data, "b/slow reads back differently");
    let r = s.cli(&["fsck"]).ok().json();
    assert_eq!(field(&r, "ok"), &Value::Bool(true), "{r}");
}

fn a_rekey_does_not_publish_over_a_concurrent_write(s: &S3Store) {
    let s3 = s.s3();
    let (x, other) = (name(0), name(1));
    let (xk, otherk) = (s.key_of(&format!("b/{x}")), s.key_of(&format!("b/{other}")));
    let (k, v) = fault_env("slow-rekey-publish");
    let mut c = s.cmd();
    c.env(k, v)
        .args([
            "object",
            "reencrypt",
            "--bucket-name",
            "b",
            "--name",
            &x,
            "--rekey",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let rekey = c.spawn().unwrap();
    // Once the rekey holds the lease it opens the object and stages it, then waits 5 s
    // before its last look: meanwhile a writer that ignores the lease (a raw S3 client)
    // puts another valid object under the name (the body and header of `other`).
    let lease = s.key_of(".envelopefs/lease");
    let t0 = Instant::now();
    while s3.head(&lease).unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(60), "no lease taken");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(2));
    let (body, head) = s3.get(&otherk).unwrap().unwrap();
    let meta: Vec<(String, String)> = head.metadata.into_iter().collect();
    let written = s3.put(&xk, body, &meta).unwrap();
    let (code, out, err) = finish(rekey, Duration::from_secs(120));
    assert_eq!(code, 1, "the rekey must refuse: {out} {err}");
    assert!(err.contains("changed while it was being rekeyed"), "{err}");
    assert_eq!(
        s3.head(&xk).unwrap().unwrap().etag,
        written,
        "the concurrent write was overwritten"
    );
    assert!(
        s.get("b", &x) == content(1),
        "the concurrent write is what reads back"
    );
}

/// A reader that yields nothing until it is told to go, then as many bytes as asked.
struct Gated(std::sync::mpsc::Receiver<()>, bool);

impl std::io::Read for Gated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.1 {
            let _ = self.0.recv();
            self.1 = true;
        }
        buf.fill(7);
        Ok(buf.len())
    }
}

/// The clean-up's line is the lease: of two uploads under way (each begun, then held back
/// before its first part), the one begun before the lease was taken is aborted (its
/// completion then fails and nothing becomes visible) and the one begun after it (as the
/// holder's own are) is left alone and completes.
fn only_uploads_begun_before_the_lease_are_aborted(s: &S3Store) {
    let s3 = s.s3();
    let start = |name: &str| {
        let (go, gate) = std::sync::mpsc::channel::<()>();
        let (s3, key) = (s3.clone(), s.key_of(name));
        let t = std::thread::spawn(move || {
            s3.put_reader(&key, &mut Gated(gate, false), 2 * PART_SIZE + 1, &[])
        });
        (go, t)
    };
    let wait_for = |n: usize| {
        let t0 = Instant::now();
        loop {
            let u = s3.list_uploads(&s.key_of("")).unwrap();
            if u.len() >= n {
                return u;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "uploads: {u:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (go_early, early) = start("b/early");
    wait_for(1);
    std::thread::sleep(Duration::from_millis(50));
    let lease = Lease::acquire(&s3, &s.key_of(".envelopefs/lease"), "test", "a test").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let (go_late, late) = start("b/late");
    assert_eq!(wait_for(2).len(), 2);
    let aborted: Vec<String> = lease
        .abort_stale_uploads(&s.key_of(""))
        .unwrap()
        .into_iter()
        .map(|u| u.key)
        .collect();
    assert_eq!(aborted, vec![s.key_of("b/early")]);
    let left: Vec<String> = s3
        .list_uploads(&s.key_of(""))
        .unwrap()
        .into_iter()
        .map(|u| u.key)
        .collect();
    assert_eq!(left, vec![s.key_of("b/late")]);
    go_early.send(()).unwrap();
    go_late.send(()).unwrap();
    assert!(
        early.join().unwrap().is_err(),
        "an aborted upload completed"
    );
    late.join().unwrap().unwrap();
    assert!(s3.head(&s.key_of("b/early")).unwrap().is_none());
    assert_eq!(
        s3.head(&s.key_of("b/late")).unwrap().unwrap().size,
        2 * PART_SIZE + 1
    );
    drop(lease);
    s3.delete(&s.key_of("b/late")).unwrap();
    assert!(s3.list_uploads(&s.key_of("")).unwrap().is_empty());
}
