//! Unmount, then use the store at once: after `fusermount3 -u` a command that finds the
//! store's lock held by a daemon whose mount is gone waits for it (saying so once on stderr,
//! at most 60 s) instead of failing with "store is mounted at"; a daemon that is really still
//! mounted is refused at once. The rule is in docs/DECISIONS.md.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[track_caller]
fn fusermount_u(mnt: &Path) {
    run_cmd(
        std::process::Command::new("fusermount3").arg("-u").arg(mnt),
        Duration::from_secs(60),
    )
    .ok();
}

/// Waits until process `pid` (not a child of the test) has exited.
#[track_caller]
fn wait_gone(pid: i32) {
    poll(Duration::from_secs(60), "the daemon to exit", || {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
            .then_some(())
    });
}

/// A daemon stopped with SIGSTOP for the test; continued (SIGCONT) when dropped, even when
/// the test panics.
struct Stopped(i32);

impl Stopped {
    fn new(pid: i32) -> Self {
        // SAFETY: kill on the daemon this test's mount started.
        assert_eq!(
            unsafe { libc::kill(pid, libc::SIGSTOP) },
            0,
            "SIGSTOP {pid}"
        );
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[test]
fn mount_right_after_fusermount3_u_of_a_large_write() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let data = pattern(11, 50 << 20);
    for i in 0..20 {
        fs::write(m.p("b/big"), &data).unwrap();
        fusermount_u(&m.mnt);
        m.mark_unmounted();
        // No pause: the old daemon is still syncing and holds the store.
        let out = m.mount_args(&[]);
        assert_eq!(
            out.code, 0,
            "loop {i}: mount right after fusermount3 -u: {}",
            out.stderr
        );
        m.adopt_mount();
    }
    assert_bytes_eq(&read(&m.p("b/big")), &data, "after 20 unmounts and mounts");
}

#[test]
fn fsck_right_after_fusermount3_u_of_a_large_write() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let data = pattern(12, 50 << 20);
    for i in 0..5 {
        fs::write(m.p("b/big"), &data).unwrap();
        fusermount_u(&m.mnt);
        m.mark_unmounted();
        let out = m.cli_store(&["fsck"]);
        assert_eq!(
            out.code, 0,
            "loop {i}: fsck right after fusermount3 -u: {}",
            out.stderr
        );
        assert_eq!(out.json()["ok"], true, "loop {i}: {}", out.stdout);
        m.mount();
    }
    assert_bytes_eq(&read(&m.p("b/big")), &data, "after the fscks");
}

#[test]
fn a_live_mount_is_refused_at_once_and_a_gone_one_is_waited_for() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let data = write_pattern(&m.p("b/f"), 3, 300_000);
    let pid = m.daemon_pid().expect("the daemon's pid");
    // A stopped daemon neither serves nor exits: what commands see depends only on whether
    // its mountpoint is still mounted.
    let stopped = Stopped::new(pid);
    let mnt2 = m.scratch.join("m2");
    fs::create_dir(&mnt2).unwrap();
    let second = cli(&[
        "mount",
        &m.store.display().to_string(),
        &mnt2.display().to_string(),
        "--key-file",
        &m.key.display().to_string(),
    ]);
    assert!(!is_mounted(&mnt2), "a second mount was made");
    fails_with(second, &format!("store is mounted at {}", m.mnt.display()));

    fusermount_u(&m.mnt);
    m.mark_unmounted();
    let mut fsck = envelopefs_cmd()
        .arg("--store")
        .arg(&m.store)
        .arg("--key-file")
        .arg(&m.key)
        .arg("fsck")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(fsck.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(
        first.contains(&format!("waiting for its daemon (pid {pid})"))
            && first.contains(&*m.mnt.to_string_lossy()),
        "the command says what it waits for: {first:?}"
    );
    assert!(
        fsck.try_wait().unwrap().is_none(),
        "fsck did not wait for the daemon"
    );
    drop(stopped);
    let deadline = Instant::now() + CMD_TIMEOUT;
    let status = loop {
        if let Some(st) = fsck.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "fsck did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let mut out = String::new();
    fsck.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "fsck after the wait: {rest}");
    assert!(
        !rest.contains("waiting for"),
        "the wait is announced once: {rest}"
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], true, "{out}");
    wait_gone(pid);
    m.mount();
    assert_bytes_eq(&read(&m.p("b/f")), &data, "after the wait");
}

#[test]
fn the_wait_for_a_daemon_that_does_not_exit_is_bounded() {
    let mut m = TestMount::new();
    let pid = m.daemon_pid().expect("the daemon's pid");
    let stopped = Stopped::new(pid);
    fusermount_u(&m.mnt);
    m.mark_unmounted();
    let out = m.cli_store(&["bucket", "list"]);
    drop(stopped);
    assert_eq!(out.code, 2, "a wait that runs out exits 2: {out:?}");
    assert!(
        out.stderr.contains(&format!(
            "daemon (pid {pid}) of the unmounted {}",
            m.mnt.display()
        )) && out.stderr.contains("still holds the store after 60 s"),
        "{}",
        out.stderr
    );
    wait_gone(pid);
    m.cli_store(&["bucket", "list"]).ok();
}
