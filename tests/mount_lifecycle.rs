//! Mounting and unmounting (issue 3 item 1, issue 4 item 5): background and foreground
//! mounts, SIGTERM, fusermount3 -u, a second mount refused, a killed daemon not holding the
//! store, read-only mounts, bad secrets, and a work request resumed after kill -9.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::Value;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::time::{Duration, Instant};

/// Waits until an offline store command works (the daemon let go of the store lock).
#[track_caller]
fn wait_store_released(m: &TestMount) {
    poll(
        Duration::from_secs(30),
        "the daemon to release the store",
        || {
            let out = m.cli_store(&["bucket", "list"]);
            (out.code == 0).then_some(())
        },
    );
}

fn sig_mask(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// A SIGTERM or SIGINT sent at any moment must reach the code that unmounts cleanly: it is
/// either caught (a handler), or blocked in every thread but the one that waits for it
/// (otherwise the kernel may deliver it to a thread with the default action, which kills
/// the process and leaves a dead mount).
#[track_caller]
fn assert_signal_never_kills_a_thread(pid: i32) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let caught = sig_mask(&status, "SigCgt:");
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let bit = 1u64 << (sig - 1);
        if caught & bit != 0 {
            continue;
        }
        for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let task = task.unwrap();
            let tid: i32 = task.file_name().to_string_lossy().parse().unwrap();
            if tid == pid {
                continue; // the main thread waits for it (sigtimedwait unblocks it there)
            }
            let st = fs::read_to_string(task.path().join("status")).unwrap_or_default();
            let name = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            assert!(
                sig_mask(&st, "SigBlk:") & bit != 0,
                "thread {tid} ({}) of the mount does not block signal {sig} and there is no handler: \
                 a signal delivered to it kills the process without unmounting",
                name.trim()
            );
        }
    }
}

#[test]
fn foreground_mount_unmounts_cleanly_on_sigterm_and_sigint() {
    let m = TestMount::init_only(None);
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut fg = m.spawn_foreground(&[]);
        assert_signal_never_kills_a_thread(fg.child.id() as i32);
        fs::create_dir_all(m.p("b")).unwrap();
        let name = format!("b/f{sig}");
        let mut f = File::create(m.p(&name)).unwrap();
        f.write_all(&pattern(sig as u64, 100_000)).unwrap();
        drop(f);
        fg.signal(sig);
        let code = fg.wait(Duration::from_secs(60));
        assert_eq!(code, 0, "foreground mount exit code after signal {sig}");
        assert!(!is_mounted(&m.mnt), "unmounted after signal {sig}");
        assert!(
            !m.store.join(".envelopefs/mount.json").exists(),
            "the mount record is removed at unmount"
        );
        // The store is consistent and unlocked: the CLI reads the object offline.
        let out = m.scratch.join(format!("out{sig}"));
        m.cli_store(&[
            "object",
            "get",
            "--bucket-name",
            "b",
            "--name",
            &format!("f{sig}"),
            "--file",
            &out.display().to_string(),
        ])
        .ok();
        assert_bytes_eq(
            &read(&out),
            &pattern(sig as u64, 100_000),
            "object after the signal",
        );
    }
}

#[test]
fn fusermount3_u_unmounts_and_releases_the_store() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let data = write_pattern(&m.p("b/f"), 1, 200_000);
    run_cmd(
        std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(&m.mnt),
        Duration::from_secs(60),
    )
    .ok();
    m.mark_unmounted();
    assert!(!is_mounted(&m.mnt));
    wait_store_released(&m);
    m.mount();
    assert_bytes_eq(
        &read(&m.p("b/f")),
        &data,
        "after fusermount3 -u and a new mount",
    );
}

#[test]
fn a_second_mount_of_the_same_store_is_refused() {
    let m = TestMount::new();
    let mnt2 = m.scratch.join("m2");
    fs::create_dir(&mnt2).unwrap();
    let out = cli(&[
        "mount",
        &m.store.display().to_string(),
        &mnt2.display().to_string(),
        "--key-file",
        &m.key.display().to_string(),
    ]);
    let leaked = is_mounted(&mnt2);
    if leaked {
        let _ = std::process::Command::new("fusermount3")
            .arg("-uz")
            .arg(&mnt2)
            .status();
    }
    assert!(!leaked, "a second mount of the same store was made");
    assert_eq!(out.code, 1, "second mount: {out:?}");
    assert!(
        out.stderr.contains("mounted at") && out.stderr.contains(&*m.mnt.to_string_lossy()),
        "the refusal says where the store is mounted: {}",
        out.stderr
    );
    assert!(is_mounted(&m.mnt), "the first mount is unaffected");
}

#[test]
fn a_killed_daemon_does_not_hold_the_store() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let data = pattern(5, 70_000);
    let mut f = File::create(m.p("b/f")).unwrap();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let pid = m.daemon_pid().expect("the daemon's pid in mount.json");
    // SAFETY: kill on the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    poll(Duration::from_secs(30), "the daemon to die", || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()
            || fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true))
        .then_some(())
    });
    let _ = std::process::Command::new("fusermount3")
        .arg("-uz")
        .arg(&m.mnt)
        .status();
    m.mark_unmounted();
    // A stale mount.json may remain; it must not block a new mount.
    m.mount();
    assert_bytes_eq(&read(&m.p("b/f")), &data, "fsynced data after kill -9");
}

#[test]
fn read_only_mount_refuses_changes() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    fs::write(m.p("b/f"), b"read me").unwrap();
    m.unmount();
    m.mount_with(&["--read-only"]);
    assert_eq!(read(&m.p("b/f")), b"read me");
    assert_errno(
        File::create(m.p("b/g")),
        libc::EROFS,
        "create on a read-only mount",
    );
    assert_errno(
        OpenOptions::new().write(true).open(m.p("b/f")),
        libc::EROFS,
        "open for write",
    );
    assert_errno(fs::create_dir(m.p("c")), libc::EROFS, "mkdir of a bucket");
    assert_errno(fs::remove_file(m.p("b/f")), libc::EROFS, "unlink");
    assert_errno(
        xattr_set(&m.p("b/f"), "user.x", b"1", 0),
        libc::EROFS,
        "setxattr",
    );
    assert_eq!(xattr_str(&m.p("b/f"), "user.envelopefs.key-version"), "1");
    m.unmount();
    m.mount();
    fs::write(m.p("b/g"), b"writable again").unwrap();
}

#[test]
fn bad_secret_or_bad_store_is_a_clear_error_and_no_mount() {
    let m = TestMount::init_only(None);
    let other = m.scratch.join("otherkey");
    fs::write(&other, [7u8; 32]).unwrap();
    let out = cli(&[
        "mount",
        &m.store.display().to_string(),
        &m.mnt.display().to_string(),
        "--key-file",
        &other.display().to_string(),
    ]);
    let leaked = is_mounted(&m.mnt);
    if leaked {
        let _ = std::process::Command::new("fusermount3")
            .arg("-uz")
            .arg(&m.mnt)
            .status();
    }
    assert!(!leaked, "mounted with a wrong key");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(!out.stderr.trim().is_empty(), "an error message on stderr");
    let not_store = m.scratch.join("empty");
    fs::create_dir(&not_store).unwrap();
    let out = cli(&[
        "mount",
        &not_store.display().to_string(),
        &m.mnt.display().to_string(),
        "--key-file",
        &m.key.display().to_string(),
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("not an envelopefs store"),
        "{}",
        out.stderr
    );
    assert!(!is_mounted(&m.mnt));
    // The right key still mounts (nothing was left locked).
    let mut m = m;
    m.mount();
}

#[test]
fn a_work_request_interrupted_by_kill_9_resumes_on_the_next_mount() {
    let mut m = TestMount::new();
    m.ctl("key create --alias k2").ok();
    m.ctl("bucket create --name kb --kms-key-id k2").ok();
    let n = 1500usize;
    std::thread::scope(|s| {
        for t in 0..3 {
            let m = &m;
            s.spawn(move || {
                fs::create_dir_all(m.p(&format!("kb/t{t}"))).unwrap();
                for i in (t..n).step_by(3) {
                    fs::write(m.p(&format!("kb/t{t}/o{i}")), format!("object {i}")).unwrap();
                }
            });
        }
    });
    // Make the objects durable before the kill.
    File::open(m.p("kb")).unwrap().sync_all().unwrap();
    m.ctl("key rotate k2").ok();
    m.sh("echo latest > \"$M/.envelopefs/buckets/kb/reencrypt\"")
        .ok();
    let id = m.read_ctl_file("buckets/kb/reencrypt").trim().to_string();
    std::thread::sleep(Duration::from_millis(100));
    let st: Value = serde_json::from_str(&m.read_ctl_file(&format!("work-requests/{id}"))).unwrap();
    let pid = m.daemon_pid().expect("daemon pid");
    // SAFETY: kill on the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let t = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
        && fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| !c.is_empty())
            .unwrap_or(false)
        && t.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::process::Command::new("fusermount3")
        .arg("-uz")
        .arg(&m.mnt)
        .status();
    m.mark_unmounted();
    eprintln!("state at kill: {}", st["status"]);
    m.mount();
    let wr = m.wait_work_request(&id, Duration::from_secs(300));
    assert_eq!(wr["status"], "SUCCEEDED", "resumed work request: {wr}");
    assert_eq!(wr["objects_failed"], 0, "{wr}");
    for t in 0..3 {
        for i in (t..n).step_by(3) {
            let p = m.p(&format!("kb/t{t}/o{i}"));
            assert_eq!(xattr_str(&p, "user.envelopefs.key-version"), "2", "o{i}");
            assert_eq!(read(&p), format!("object {i}").as_bytes(), "o{i}");
        }
    }
}
