#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Faults on purpose, through the test-only switch `ENVELOPEFS_FAULT_INJECTION`
//! (src/fault.rs): a panicking handler, a mount killed with SIGKILL in the middle of a
//! bucket re-encrypt, and files kept open and written while their bucket is rewrapped.
//! Every test of this binary sets the same switch, so they can run in parallel.

mod common;

use common::*;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::workreq::populate;

fn faults_on() {
    let (k, v) = fault_env("panic-on-lookup,slow-work-requests");
    std::env::set_var(k, v);
}

#[test]
fn a_panicking_handler_answers_eio_and_the_mount_keeps_serving() {
    faults_on();
    let t = TestMount::new();
    fs::create_dir(t.p("b")).unwrap();
    fs::write(t.p("b/ok.txt"), b"still here").unwrap();
    // More panics than worker threads: a panic that killed a worker would hang the mount.
    for _ in 0..12 {
        let r = fs::metadata(t.p("b/envelopefs-fault-panic"));
        assert_errno(r, libc::EIO, "lookup that panics inside the daemon");
    }
    assert_eq!(fs::read(t.p("b/ok.txt")).unwrap(), b"still here");
    fs::write(t.p("b/new.txt"), b"after the panics").unwrap();
    assert_eq!(fs::read(t.p("b/new.txt")).unwrap(), b"after the panics");
    assert!(
        t.log().contains("panic caught"),
        "the caught panic should be logged:\n{}",
        t.log()
    );
}

#[test]
fn a_work_request_interrupted_by_kill_9_resumes_at_the_next_mount() {
    faults_on();
    const N: usize = 3000; // 2 ms each with slow-work-requests: about 6 s in all
    let mut t = TestMount::init_only(None);
    populate(&t, "photos", N);
    t.mount();
    t.ctl("key rotate k").ok();
    fs::write(t.p(".envelopefs/buckets/photos/reencrypt"), "latest").unwrap();
    let id = t
        .read_ctl_file(".envelopefs/buckets/photos/reencrypt")
        .trim()
        .to_string();
    // Wait until it has persisted some progress, then kill the daemon outright.
    poll(Duration::from_secs(60), "progress to be persisted", || {
        let p = t.store.join(format!(".envelopefs/work-requests/{id}.json"));
        let v: serde_json::Value = serde_json::from_slice(&fs::read(p).ok()?).ok()?;
        (v["status"] == "IN_PROGRESS" && v["objects_rewrapped"].as_u64()? > 0).then_some(())
    });
    let pid = t.daemon_pid().expect("daemon pid");
    // SAFETY: sending SIGKILL to the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    poll(Duration::from_secs(30), "the daemon to die", || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    let out = std::process::Command::new("fusermount3")
        .arg("-uz")
        .arg(&t.mnt)
        .output()
        .unwrap();
    assert!(out.status.success(), "fusermount3 -uz: {out:?}");
    t.mark_unmounted();

    let p = t.store.join(format!(".envelopefs/work-requests/{id}.json"));
    let mid: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    assert_eq!(
        mid["status"], "IN_PROGRESS",
        "state left by the crash: {mid}"
    );
    let done_before = mid["objects_rewrapped"].as_u64().unwrap();
    assert!(
        done_before < N as u64,
        "the kill came too late to test a resume: {mid}"
    );

    // The next mount resumes it, and it ends SUCCEEDED with every object readable.
    t.mount();
    let wr = t.wait_work_request(&id, Duration::from_secs(120));
    assert_eq!(wr["status"], "SUCCEEDED", "{wr}");
    assert_eq!(wr["objects_failed"], 0, "{wr}");
    assert_eq!(
        wr["objects_rewrapped"].as_u64().unwrap() + wr["objects_skipped"].as_u64().unwrap(),
        N as u64,
        "{wr}"
    );
    for i in (0..N).step_by(101) {
        let f = t.p(&format!("photos/d{}/o{i}", i / 1000));
        assert_eq!(fs::read_to_string(&f).unwrap(), format!("object {i}\n"));
        assert_eq!(
            xattr_str(&f, "user.envelopefs.key-version"),
            "2",
            "{}",
            f.display()
        );
    }
    // After the crash, no object lacks its header and no temporary is left visible.
    assert_eq!(
        fs::read_dir(t.store.join(".envelopefs/tmp"))
            .unwrap()
            .count(),
        0,
        "temporaries survived the restart"
    );
}

#[test]
fn open_files_keep_working_while_their_bucket_is_rewrapped() {
    faults_on();
    const N: usize = 1500; // 2 ms each: the request runs about 3 s
    let mut t = TestMount::init_only(None);
    populate(&t, "live", N);
    t.mount();
    let kept = t.p("live/d0/o7");
    let backing_other = t.backing_path("live", "d1/o1001");
    let other_bytes = fs::read(&backing_other).unwrap();
    let other_mtime = fs::metadata(&backing_other).unwrap().mtime_nsec();

    let mut appender = fs::OpenOptions::new().append(true).open(&kept).unwrap();
    let mut reader = fs::File::open(t.p("live/d0/o8")).unwrap();
    t.ctl("key rotate k").ok();
    fs::write(t.p(".envelopefs/buckets/live/reencrypt"), "latest").unwrap();
    let id = t
        .read_ctl_file(".envelopefs/buckets/live/reencrypt")
        .trim()
        .to_string();

    let mut model = b"object 7\n".to_vec();
    let mut rounds = 0;
    loop {
        let status = t.ctl(&format!("work-request get {id}")).ok()["status"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let line = format!("appended while rewrapping, round {rounds}\n");
        appender.write_all(line.as_bytes()).unwrap();
        appender.sync_data().unwrap();
        model.extend_from_slice(line.as_bytes());
        let mut s = String::new();
        reader.seek(SeekFrom::Start(0)).unwrap();
        reader.read_to_string(&mut s).unwrap();
        assert_eq!(s, "object 8\n");
        rounds += 1;
        if status == "SUCCEEDED" || status == "FAILED" {
            assert_eq!(status, "SUCCEEDED");
            break;
        }
        assert!(rounds < 10_000, "work request never finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        rounds > 3,
        "the request finished before the files were used ({rounds} rounds)"
    );
    drop(appender);
    drop(reader);
    assert_bytes_eq(&fs::read(&kept).unwrap(), &model, "appended file");
    assert_eq!(xattr_str(&kept, "user.envelopefs.key-version"), "2");
    // A file nobody wrote keeps its backing bytes and data mtime.
    assert_eq!(fs::read(&backing_other).unwrap(), other_bytes);
    assert_eq!(
        fs::metadata(&backing_other).unwrap().mtime_nsec(),
        other_mtime
    );
    // And after a remount (a fresh DEK unwrap under the new header) everything reads.
    t.remount();
    assert_bytes_eq(
        &fs::read(&kept).unwrap(),
        &model,
        "appended file after remount",
    );
}

#[test]
fn a_wait_that_runs_out_exits_2_and_a_stale_mount_record_is_detected() {
    faults_on();
    const N: usize = 2000; // 2 ms each: about 4 s, longer than the 1 s wait below
    let mut t = TestMount::init_only(None);
    populate(&t, "slow", N);
    t.mount();
    t.ctl("key rotate k").ok();
    let out = t.cli_store(&[
        "bucket",
        "reencrypt",
        "--bucket-name",
        "slow",
        "--wait-for-state",
        "SUCCEEDED",
        "--max-wait-seconds",
        "1",
        "--wait-interval-seconds",
        "1",
    ]);
    assert_eq!(out.code, 2, "a wait that times out must exit 2: {out:?}");
    let wr: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON on stdout");
    let id = wr["id"].as_str().expect("work request id").to_string();
    let done = t.wait_work_request(&id, Duration::from_secs(120));
    assert_eq!(done["status"], "SUCCEEDED", "{done}");

    // Kill the daemon: its mount record stays behind. The CLI must notice that no mount
    // serves the store any more and open it itself.
    let pid = t.daemon_pid().expect("daemon pid");
    // SAFETY: sending SIGKILL to the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    poll(Duration::from_secs(30), "the daemon to die", || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    let _ = std::process::Command::new("fusermount3")
        .arg("-uz")
        .arg(&t.mnt)
        .status();
    t.mark_unmounted();
    assert!(
        t.store.join(".envelopefs/mount.json").exists(),
        "the record is left by the crash"
    );
    let out = t.cli_store(&["bucket", "get", "--name", "slow"]);
    assert_eq!(out.code, 0, "offline command after a crash: {out:?}");
    assert!(
        out.stderr.contains("stale"),
        "the stale record is reported: {out:?}"
    );
    assert!(
        !t.store.join(".envelopefs/mount.json").exists(),
        "the stale record is removed"
    );
}
