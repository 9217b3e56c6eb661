//! Bad input, as users meet it: each gets one clear message (CLI exit 1, or the errno and
//! reason of a control write), and nothing in the store is lost or changed.

mod common;

use common::snapshot::store_snapshot;
use common::*;
use envelopefs::store::xattr;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn one_line(o: &CmdOut) -> String {
    let s = o.stderr.trim().to_string();
    assert_eq!(s.lines().count(), 1, "one line of error: {s:?}");
    assert!(s.starts_with("envelopefs: "), "{s}");
    s
}

/// A store sealed with a passphrase: a wrong one is one clear line and changes nothing;
/// a damaged Argon2id parameter is refused at once instead of allocating without bound.
#[test]
fn wrong_passphrase_and_damaged_kdf_parameters() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("s");
    let pw = dir.path().join("pw");
    let bad = dir.path().join("bad");
    fs::write(&pw, "correct horse battery\n").expect("pw");
    fs::write(&bad, "correct horse batterx\n").expect("bad");
    let run = |pwf: &Path, args: &[&str]| {
        run_cmd(
            envelopefs_cmd()
                .arg("--store")
                .arg(&store)
                .arg("--password-file")
                .arg(pwf)
                .args(args),
            CMD_TIMEOUT,
        )
    };
    run_cmd(
        envelopefs_cmd()
            .arg("init")
            .arg(&store)
            .arg("--password-file")
            .arg(&pw),
        CMD_TIMEOUT,
    )
    .ok();
    run(&pw, &["bucket", "create", "--name", "b"]).ok();
    let before = store_snapshot(&store);
    let o = run(&bad, &["key", "list"]).fails();
    assert!(one_line(&o).contains("wrong passphrase"), "{}", o.stderr);
    assert!(
        store_snapshot(&store) == before,
        "a wrong passphrase changed the store"
    );

    // m_cost_kib is at byte 26 of the keystore (magic 4, version 2, store id 16, kdf tag 4).
    let ks = store.join(".envelopefs/keystore");
    let good = fs::read(&ks).expect("keystore");
    let mut flipped = good.clone();
    flipped[29] ^= 0x80; // the top bit of m_cost: 2 TiB of memory
    fs::write(&ks, &flipped).expect("flip");
    let t = Instant::now();
    let o = run(&pw, &["key", "list"]).fails();
    assert!(t.elapsed() < Duration::from_secs(20), "refused at once");
    assert!(one_line(&o).contains("out of range"), "{}", o.stderr);
    fs::write(&ks, &good).expect("restore");
    run(&pw, &["bucket", "get", "--name", "b"]).ok();
}

/// Truncated or bit-flipped keystore, config and bucket record; headers of the wrong
/// length or version: one clear line each, and with the original bytes back everything
/// reads again.
#[test]
fn damaged_records_are_clear_errors_and_lose_nothing() {
    let m = TestMount::init_only(None);
    m.cli_store(&["bucket", "create", "--name", "b"]).ok();
    let data = pattern(3, 10_000);
    m.put_object("b", "x", &data);
    m.put_object("b", "y", &data);
    let ks = m.store.join(".envelopefs/keystore");
    let cfg = m.store.join(".envelopefs/config.json");
    let good_ks = fs::read(&ks).expect("ks");
    let good_cfg = fs::read(&cfg).expect("cfg");

    let cases: Vec<(&str, PathBuf, Vec<u8>, &str)> = vec![
        (
            "truncated keystore",
            ks.clone(),
            good_ks[..good_ks.len() / 2].to_vec(),
            "wrong passphrase or key file",
        ),
        (
            "keystore cut in its prefix",
            ks.clone(),
            good_ks[..10].to_vec(),
            "keystore",
        ),
        ("empty keystore", ks.clone(), Vec::new(), "keystore"),
        (
            "bit-flipped keystore",
            ks.clone(),
            {
                let mut v = good_ks.clone();
                let n = v.len() - 20;
                v[n] ^= 4;
                v
            },
            "wrong passphrase or key file",
        ),
        (
            "truncated config",
            cfg.clone(),
            good_cfg[..good_cfg.len() / 2].to_vec(),
            "store config",
        ),
        (
            "bit-flipped config",
            cfg.clone(),
            {
                let mut v = good_cfg.clone();
                let i = v.iter().position(|b| *b == b'{').unwrap_or(0);
                v[i] ^= 1;
                v
            },
            "store config",
        ),
    ];
    for (what, path, bytes, want) in cases {
        let before = store_snapshot(&m.store);
        let orig = fs::read(&path).expect("orig");
        fs::write(&path, &bytes).expect("damage");
        let o = m.cli_store(&["bucket", "list"]).fails();
        let line = one_line(&o);
        assert!(line.contains(want), "{what}: {line}");
        fs::write(&path, &orig).expect("restore");
        assert!(
            store_snapshot(&m.store) == before,
            "{what}: the store changed"
        );
        let (o, bytes) = m.get_object("b", "x");
        o.ok();
        assert_bytes_eq(&bytes, &data, what);
    }

    // Bucket record truncated and bit-flipped.
    let bdir = m.store.join("b");
    let rec = xattr::get(&bdir, xattr::BUCKET.as_bytes())
        .expect("get")
        .expect("rec");
    for (what, bytes) in [
        ("truncated", rec[..rec.len() - 3].to_vec()),
        ("bit-flipped", {
            let mut v = rec.clone();
            v[0] ^= 1;
            v
        }),
    ] {
        xattr::set(&bdir, xattr::BUCKET.as_bytes(), &bytes, 0).expect("set");
        let o = m.cli_store(&["bucket", "get", "--name", "b"]).fails();
        assert!(
            one_line(&o).contains("bucket record"),
            "{what}: {}",
            o.stderr
        );
        let o = m.get_object("b", "x").0.fails();
        assert!(
            one_line(&o).contains("bucket record"),
            "{what}: {}",
            o.stderr
        );
        xattr::set(&bdir, xattr::BUCKET.as_bytes(), &rec, 0).expect("restore");
    }

    // Object headers of the wrong length and of an unknown version.
    let yp = m.backing_path("b", "y");
    let h = xattr::get(&yp, xattr::HEADER.as_bytes())
        .expect("get")
        .expect("h");
    let mut long = h.clone();
    long.extend_from_slice(&[0; 7]);
    let mut v2 = h.clone();
    v2[4] = 2;
    for (what, bytes, want) in [
        ("short", h[..h.len() - 1].to_vec(), "object header"),
        ("long", long, "trailing bytes"),
        ("version 2", v2, "format version 2 is not supported"),
    ] {
        xattr::set(&yp, xattr::HEADER.as_bytes(), &bytes, 0).expect("set");
        let o = m.get_object("b", "y").0.fails();
        assert!(one_line(&o).contains(want), "{what}: {}", o.stderr);
        xattr::set(&yp, xattr::HEADER.as_bytes(), &h, 0).expect("restore");
    }
    let (o, bytes) = m.get_object("b", "y");
    o.ok();
    assert_bytes_eq(&bytes, &data, "y");
    m.cli_store(&["fsck", "--read-data"]).ok();
}

/// Control commands that are garbage, huge, or name things that do not exist.
#[test]
fn bad_control_commands_fail_with_a_reason() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).expect("bucket");
    for line in [
        "",
        "frobnicate",
        "\u{1}\u{2}\u{3}",
        "key 'open",
        "bucket create --name",
    ] {
        let msg = m.ctl(line).err(libc::EINVAL);
        assert!(!msg.is_empty(), "{line:?}");
    }
    // Invalid UTF-8 bytes on the wire.
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p(".envelopefs/ctl"))
        .expect("open ctl");
    let r = f.write(b"key get \xff\xfe\n");
    assert!(r.is_err(), "garbage bytes are refused");
    // Huge writes are bounded: refused with EINVAL and a reason, the mount stays up.
    let huge = format!("key get {}\n", "a".repeat(1 << 20));
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p(".envelopefs/ctl"))
        .expect("open ctl");
    assert_errno(f.write(huge.as_bytes()), libc::EINVAL, "1 MiB command");
    let reply = pread_all(&f).expect("reply");
    assert!(
        String::from_utf8_lossy(&reply).contains("limited"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // Things that do not exist.
    m.ctl("bucket get --name nope").err(libc::ENOENT);
    m.ctl("key get nope").err(libc::ENOKEY);
    m.ctl("work-request get wr-00000000000000000000000000000000")
        .err(libc::ENOENT);
    m.ctl("object head --bucket-name b --name nope")
        .err(libc::ENOENT);
    m.ctl("bucket reencrypt --bucket-name nope")
        .err(libc::ENOENT);
    m.ctl("headers import /nonexistent/file").err(libc::ENOENT);
    assert!(is_mounted(&m.mnt));
    m.ctl("bucket list").ok();
}

/// Names with newlines, invalid UTF-8 and 255-byte components work end to end: written,
/// listed, read after a remount, re-encrypted, and fsck is clean. 256 bytes is refused.
#[test]
fn unusual_object_names_work_end_to_end() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).expect("bucket");
    let names: Vec<Vec<u8>> = vec![
        b"line\nbreak".to_vec(),
        b"bad\xff\xfeutf8".to_vec(),
        vec![b'n'; 255],
        b"dir\nwith\xc3(/in\xffner".to_vec(),
    ];
    fs::create_dir(m.p("b").join(OsStr::from_bytes(b"dir\nwith\xc3("))).expect("prefix dir");
    let mut want = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let p = m.p("b").join(OsStr::from_bytes(n));
        want.push((p.clone(), write_pattern(&p, i as u64, 3000 + i * 5000)));
    }
    let too_long = m.p("b").join(OsStr::from_bytes(&[b'n'; 256]));
    assert_errno(
        fs::write(&too_long, b"x"),
        libc::ENAMETOOLONG,
        "256-byte name",
    );
    m.ctl("key create --alias k").ok();
    m.ctl("bucket update --name b --kms-key-id k").ok();
    let wr = m.ctl("bucket reencrypt --bucket-name b").ok();
    let id = wr["id"].as_str().expect("id").to_string();
    let done = m.wait_work_request(&id, Duration::from_secs(60));
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["objects_rewrapped"], 4, "{done}");
    // A directory holding such names moves to another bucket (each object rewrapped).
    fs::create_dir(m.p("c")).expect("bucket c");
    let from = m.p("b").join(OsStr::from_bytes(b"dir\nwith\xc3("));
    let to = m.p("c").join(OsStr::from_bytes(b"dir\nwith\xc3("));
    fs::rename(&from, &to).expect("move a prefix to bucket c");
    let moved = to.join(OsStr::from_bytes(b"in\xffner"));
    let last = want.len() - 1;
    want[last].0 = moved;
    m.remount();
    for (p, d) in &want {
        assert_bytes_eq(&read(p), d, &p.display().to_string());
    }
    let out = cli(&["fsck", &m.store.display().to_string(), "--read-data"]).ok();
    assert_eq!(out.json()["objects"], 4, "{}", out.stdout);
}

struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A full disk: writes fail with ENOSPC; existing objects, the keystore and the config stay
/// intact; after freeing space everything works and fsck is clean.
#[test]
fn a_full_store_filesystem_fails_writes_with_enospc_and_keeps_the_rest() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "mounts a tmpfs: run as root");
    let top = tempfile::Builder::new()
        .prefix("efull")
        .tempdir_in("/tmp")
        .expect("tmp");
    let fsdir = top.path().join("fs");
    fs::create_dir(&fsdir).expect("fs dir");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs"])
        .arg(&fsdir)
        .status()
        .expect("mount tmpfs");
    assert!(ok.success(), "mounting a small tmpfs");
    let _fs = Tmpfs(fsdir.clone());
    let store = fsdir.join("s");
    let key = top.path().join("key");
    fs::write(&key, pattern(9, 32)).expect("key");
    let mnt = top.path().join("m");
    fs::create_dir(&mnt).expect("mnt");
    run_cmd(
        envelopefs_cmd()
            .arg("init")
            .arg(&store)
            .arg("--key-file")
            .arg(&key),
        CMD_TIMEOUT,
    )
    .ok();
    run_cmd(
        envelopefs_cmd()
            .arg("mount")
            .arg(&store)
            .arg(&mnt)
            .arg("--key-file")
            .arg(&key),
        CMD_TIMEOUT,
    )
    .ok();
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            if is_mounted(&self.0) {
                let _ = envelopefs_cmd().arg("unmount").arg(&self.0).status();
            }
            if is_mounted(&self.0) {
                let _ = Command::new("fusermount3").arg("-uz").arg(&self.0).status();
            }
        }
    }
    let guard = Unmount(mnt.clone());
    fs::create_dir(mnt.join("b")).expect("bucket");
    let keep = write_pattern(&mnt.join("b/keep"), 1, 1_000_000);
    let ks_before = fs::read(store.join(".envelopefs/keystore")).expect("ks");
    let cfg_before = fs::read(store.join(".envelopefs/config.json")).expect("cfg");

    // Fill it up.
    let mut f = fs::File::create(mnt.join("b/filler")).expect("filler");
    let chunk = pattern(2, 1 << 20);
    let mut err = None;
    for _ in 0..64 {
        if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_all()) {
            err = Some(e);
            break;
        }
    }
    let e = err.expect("an 8 MiB filesystem fills up before 64 MiB");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    drop(f);
    // New files fail too (ENOSPC at create or at the first write+fsync).
    let r = fs::File::create(mnt.join("b/new")).and_then(|mut g| {
        g.write_all(&chunk)?;
        g.sync_all()
    });
    assert_errno(r, libc::ENOSPC, "a new file on a full disk");
    // A keystore change fails cleanly, the keystore on disk is the old one.
    let o = run_cmd(
        envelopefs_cmd()
            .arg("--store")
            .arg(&store)
            .args(["key", "create", "--alias", "k"]),
        CMD_TIMEOUT,
    );
    if o.code != 0 {
        assert!(o.stderr.contains("No space left"), "{}", o.stderr);
        assert_eq!(
            fs::read(store.join(".envelopefs/keystore")).expect("ks"),
            ks_before
        );
    }
    assert_eq!(
        fs::read(store.join(".envelopefs/config.json")).expect("cfg"),
        cfg_before
    );
    drop_caches();
    assert_bytes_eq(&read(&mnt.join("b/keep")), &keep, "b/keep on a full disk");

    // Free space: everything works again and the store is consistent.
    fs::remove_file(mnt.join("b/filler")).expect("rm filler");
    let _ = fs::remove_file(mnt.join("b/new"));
    let again = write_pattern(&mnt.join("b/again"), 3, 100_000);
    drop(guard);
    assert!(!is_mounted(&mnt));
    let out = run_cmd(
        envelopefs_cmd()
            .arg("fsck")
            .arg(&store)
            .arg("--read-data")
            .arg("--key-file")
            .arg(&key),
        CMD_TIMEOUT,
    )
    .ok();
    assert_eq!(out.json()["ok"], true);
    let g = top.path().join("again.out");
    run_cmd(
        envelopefs_cmd()
            .arg("--store")
            .arg(&store)
            .arg("--key-file")
            .arg(&key)
            .args([
                "object",
                "get",
                "--bucket-name",
                "b",
                "--name",
                "again",
                "--file",
            ])
            .arg(&g),
        CMD_TIMEOUT,
    )
    .ok();
    assert_bytes_eq(&fs::read(&g).expect("again"), &again, "b/again");
}
