//! The store's own directories and files get fixed modes, whatever the umask of the daemon
//! or the CLI: `.envelopefs` and everything below it 0700 (directories) / 0600 (files); a
//! store directory `init` creates 0755; buckets, prefixes and objects that commands create
//! (`bucket create`, `object put`) 0755 / 0644. What callers create through the mount keeps
//! the mode they asked for. Every test here runs with umask 000.
//!
//! The daemon is tested as root: /dev/fuse is root-only on the test machines, so `nobody`
//! cannot mount; `nobody` runs the offline CLI on a store it owns, and is the other local
//! user who must not get into a root-owned store's metadata.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

const NOBODY: u32 = 65534;

fn umask_000() {
    // SAFETY: umask has no preconditions; every test of this file wants 000.
    unsafe { libc::umask(0) };
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// Every directory and file below `dir` (and `dir`).
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if fs::symlink_metadata(&out[i]).unwrap().is_dir() {
            let mut kids: Vec<PathBuf> = fs::read_dir(&out[i])
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            kids.sort();
            out.extend(kids);
        }
        i += 1;
    }
    out
}

/// Asserts 0700 directories and 0600 files below `STORE/.envelopefs`, owned by `uid`;
/// returns what it looked at (relative names). What is in `trash/` and `tmp/` are objects
/// on their way out or in, with their owners' modes: only those directories are checked.
#[track_caller]
fn assert_metadata_private(store: &Path, uid: u32) -> Vec<String> {
    let meta = store.join(".envelopefs");
    let mut seen = Vec::new();
    let mut wrong = Vec::new();
    let objects = [meta.join("trash"), meta.join("tmp")];
    for p in tree(&meta) {
        if p.parent().is_some_and(|d| objects.iter().any(|o| o == d)) {
            continue;
        }
        let md = fs::symlink_metadata(&p).unwrap();
        let want = if md.is_dir() { 0o700 } else { 0o600 };
        let rel = p.strip_prefix(store).unwrap().display().to_string();
        if md.mode() & 0o7777 != want || md.uid() != uid {
            wrong.push(format!("{rel}: {:o} uid {}", md.mode() & 0o7777, md.uid()));
        }
        seen.push(rel);
    }
    assert!(
        wrong.is_empty(),
        "store metadata not private ({uid}): {wrong:?}"
    );
    seen
}

#[track_caller]
fn assert_mode(p: &Path, want: u32) {
    assert_eq!(mode(p), want, "mode of {} ({:o})", p.display(), mode(p));
}

/// A root-owned store, used with umask 000 by the daemon and the CLI: its metadata is
/// private, another user can neither plant files in its trash nor link files into or out
/// of it, and the modes of what commands create do not follow the umask.
#[test]
fn a_root_store_used_with_umask_000_keeps_its_metadata_private() {
    umask_000();
    let mut m = TestMount::init_only(None);
    m.mount_env
        .push(("ENVELOPEFS_FAULT_INJECTION".into(), "slow-trash".into()));
    // Let another user reach the store and the scratch dir (the temp dir is 0700).
    fs::set_permissions(m.store.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
    m.mount();
    assert_mode(&m.store, 0o755);

    // Through the mount: what the caller asks for.
    fs::create_dir(m.p("b")).unwrap();
    assert_mode(&m.store.join("b"), 0o777);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(m.p("b/kept"))
        .unwrap();
    assert_mode(&m.backing_path("b", "kept"), 0o640);
    // Through the control file (the daemon's umask is 0): fixed modes.
    m.ctl("key create --alias k2").ok();
    m.ctl("bucket create --name cb --kms-key-id k2").ok();
    let input = m.scratch.join("in");
    fs::write(&input, b"object put").unwrap();
    m.ctl(&format!(
        "object put --bucket-name cb --name p/q/o --file {}",
        input.display()
    ))
    .ok();
    let wr = m.ctl("bucket reencrypt --bucket-name cb").ok();
    m.wait_work_request(wr["id"].as_str().unwrap(), Duration::from_secs(60));
    for d in ["cb", "cb/p", "cb/p/q"] {
        assert_mode(&m.store.join(d), 0o755);
    }
    assert_mode(&m.backing_path("cb", "p/q/o"), 0o644);

    // Objects deleted wait in the trash (slow-trash: 100 ms each).
    for i in 0..100 {
        fs::write(m.p(&format!("b/d{i}")), b"deleted").unwrap();
    }
    for i in 0..100 {
        fs::remove_file(m.p(&format!("b/d{i}"))).unwrap();
    }
    let trash = m.store.join(".envelopefs/trash");
    let mut waiting: Vec<String> = fs::read_dir(&trash)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    waiting.sort();
    let victim = waiting.pop().expect("deleted objects waiting in the trash");
    fs::write(m.scratch.join("mine"), b"planted").unwrap();
    fs::set_permissions(m.scratch.join("mine"), fs::Permissions::from_mode(0o666)).unwrap();
    let as_nobody = |script: &str| {
        m.sh(&format!(
            "setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups sh -c '{script}'"
        ))
    };
    for script in [
        "echo x > \"$S/.envelopefs/trash/planted\"",
        "ln \"$X/mine\" \"$S/.envelopefs/trash/linked\"",
        &format!("ln \"$S/.envelopefs/trash/{victim}\" \"$X/stolen\""),
        "echo x > \"$S/.envelopefs/tmp/planted\"",
        "echo x > \"$S/.envelopefs/work-requests/wr-00000000000000000000000000000000.json\"",
        "cat \"$S/.envelopefs/mount.json\"",
    ] {
        let out = as_nobody(script);
        assert_ne!(out.code, 0, "nobody could: {script}");
        assert!(
            out.stderr.contains("Permission denied"),
            "{script}: {}",
            out.stderr
        );
    }
    assert!(!m.scratch.join("stolen").exists());
    let seen = assert_metadata_private(&m.store, 0);
    for want in [
        ".envelopefs/mount.json",
        ".envelopefs/mount.log",
        ".envelopefs/trash",
        ".envelopefs/journal",
    ] {
        assert!(seen.iter().any(|s| s == want), "{want} not in {seen:?}");
    }
    m.unmount();

    // Offline, the CLI with umask 000.
    m.cli_store(&["bucket", "create", "--name", "ob", "--kms-key-id", "k2"])
        .ok();
    m.put_object("ob", "x/y/z", b"offline");
    m.cli_store(&["bucket", "reencrypt", "--bucket-name", "ob"])
        .ok();
    m.cli_store(&["fsck"]).ok();
    for d in ["ob", "ob/x", "ob/x/y"] {
        assert_mode(&m.store.join(d), 0o755);
    }
    assert_mode(&m.backing_path("ob", "x/y/z"), 0o644);
    let seen = assert_metadata_private(&m.store, 0);
    assert!(
        seen.iter()
            .filter(|s| s.starts_with(".envelopefs/work-requests/wr-"))
            .count()
            >= 2,
        "{seen:?}"
    );
    for want in [
        ".envelopefs/config.json",
        ".envelopefs/keystore",
        ".envelopefs/lock",
    ] {
        assert!(seen.iter().any(|s| s == want), "{want} not in {seen:?}");
    }
}

/// `nobody` with umask 000 creates and uses a store of its own offline: the same modes.
#[test]
fn nobody_with_umask_000_makes_a_private_store() {
    umask_000();
    let dir = tempfile::Builder::new().prefix("ef").tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("n");
    fs::create_dir(&home).unwrap();
    let key = home.join("key");
    fs::write(&key, pattern(1, 32)).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(home.join("in"), b"by nobody").unwrap();
    for p in [&home, &key, &home.join("in")] {
        std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let store = home.join("s");
    let script = "umask 000; set -e
        $EFS init \"$S\" --key-file \"$K\"
        efs() { $EFS --store \"$S\" --key-file \"$K\" \"$@\"; }
        efs key create --alias k2
        efs bucket create --name b --kms-key-id k2
        efs object put --bucket-name b --name p/o --file \"$H/in\"
        efs bucket reencrypt --bucket-name b
        efs fsck";
    let out = run_cmd(
        std::process::Command::new("setpriv")
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "sh",
                "-c",
                script,
            ])
            .env("EFS", BIN)
            .env("S", &store)
            .env("K", &key)
            .env("H", &home)
            .env("RUST_LOG", "warn")
            .env_remove("ENVELOPEFS_STORE")
            .env_remove("ENVELOPEFS_KEY_FILE")
            .env_remove("ENVELOPEFS_PASSWORD_FILE")
            .env_remove("ENVELOPEFS_OUTPUT"),
        CMD_TIMEOUT,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_mode(&store, 0o755);
    assert_eq!(fs::metadata(&store).unwrap().uid(), NOBODY);
    for d in ["b", "b/p"] {
        assert_mode(&store.join(d), 0o755);
    }
    assert_mode(&store.join("b/p/o"), 0o644);
    let seen = assert_metadata_private(&store, NOBODY);
    for want in [
        ".envelopefs/config.json",
        ".envelopefs/keystore",
        ".envelopefs/lock",
        ".envelopefs/journal",
        ".envelopefs/tmp",
        ".envelopefs/work-requests",
    ] {
        assert!(seen.iter().any(|s| s == want), "{want} not in {seen:?}");
    }
}

/// A store made by an older version (`.envelopefs/trash` 0777, `tmp` 0777) is put right
/// when it is next opened.
#[test]
fn opening_a_store_puts_old_open_modes_right() {
    umask_000();
    let mut m = TestMount::init_only(None);
    let meta = m.store.join(".envelopefs");
    fs::create_dir(meta.join("trash")).unwrap();
    for d in [meta.clone(), meta.join("trash"), meta.join("tmp")] {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
    }
    m.mount();
    m.unmount();
    for d in [meta.clone(), meta.join("trash"), meta.join("tmp")] {
        assert_mode(&d, 0o700);
    }
}
