//! The control tree `.envelopefs/` of a mount (issue 4): ls/cat/echo on its files, the ctl
//! transaction file, bucket re-encrypt work requests started with one `echo`, and the CLI
//! carried out by the mount.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const KEY_ID: &str = "user.envelopefs.key-id";
const KEY_VERSION: &str = "user.envelopefs.key-version";
const WR_TIMEOUT: Duration = Duration::from_secs(180);

fn words(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.split_whitespace().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn ls_cat_and_echo_on_the_control_files() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    assert_eq!(
        words(&m.sh("ls \"$M/.envelopefs\"").ok().stdout),
        ["buckets", "ctl", "keys", "work-requests"]
    );
    assert_eq!(
        words(&m.sh("ls \"$M/.envelopefs/buckets\"").ok().stdout),
        ["b"]
    );
    assert_eq!(
        words(&m.sh("ls \"$M/.envelopefs/buckets/b\"").ok().stdout),
        ["kms-key-id", "reencrypt"]
    );
    assert_eq!(m.sh("ls \"$M/.envelopefs/work-requests\"").ok().stdout, "");
    m.sh("ls -la \"$M/.envelopefs\" \"$M/.envelopefs/buckets/b\"")
        .ok();
    // keys/: by id, and by alias with cat; metadata only.
    let default = m.key_id("default");
    assert!(default.starts_with("key-"), "{default}");
    assert_eq!(
        words(&m.sh("ls \"$M/.envelopefs/keys\"").ok().stdout),
        std::slice::from_ref(&default)
    );
    let k: Value = serde_json::from_str(
        &m.sh(&format!("cat \"$M/.envelopefs/keys/{default}\""))
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(k["id"], default.as_str());
    assert_eq!(k["alias"], "default");
    let text = k.to_string().to_lowercase();
    for banned in ["material", "secret", "wrapped", "plaintext"] {
        assert!(
            !text.contains(banned),
            "key metadata must not carry key material ({banned}): {k}"
        );
    }
    // kms-key-id: empty for the default key; echo assigns; `none` removes.
    assert_eq!(
        m.sh("cat \"$M/.envelopefs/buckets/b/kms-key-id\"")
            .ok()
            .stdout,
        ""
    );
    m.sh("echo 'key create --alias k2' > \"$M/.envelopefs/ctl\"")
        .ok();
    let k2 = m.key_id("k2");
    m.sh("echo k2 > \"$M/.envelopefs/buckets/b/kms-key-id\"")
        .ok();
    assert_eq!(
        m.sh("cat \"$M/.envelopefs/buckets/b/kms-key-id\"")
            .ok()
            .stdout
            .trim(),
        k2
    );
    fs::write(m.p("b/f"), b"new object").unwrap();
    assert_eq!(
        xattr_str(&m.p("b/f"), KEY_ID),
        k2,
        "new objects use the assigned key"
    );
    m.sh("echo none > \"$M/.envelopefs/buckets/b/kms-key-id\"")
        .ok();
    assert_eq!(
        m.sh("cat \"$M/.envelopefs/buckets/b/kms-key-id\"")
            .ok()
            .stdout
            .trim(),
        ""
    );
    fs::write(m.p("b/g"), b"default again").unwrap();
    assert_eq!(xattr_str(&m.p("b/g"), KEY_ID), default);
    // A missing key is refused (dash's echo says "I/O error" for any write error; the errno
    // itself is checked with a direct write).
    m.sh("echo no-such-key > \"$M/.envelopefs/buckets/b/kms-key-id\"")
        .fails();
    let mut f = OpenOptions::new()
        .write(true)
        .open(m.p(".envelopefs/buckets/b/kms-key-id"))
        .unwrap();
    assert_errno(
        f.write(b"no-such-key\n"),
        libc::ENOKEY,
        "assigning a missing key",
    );
    drop(f);
    // Nothing yet to show in reencrypt.
    assert_eq!(
        m.sh("cat \"$M/.envelopefs/buckets/b/reencrypt\"")
            .ok()
            .stdout
            .trim(),
        ""
    );
    // A bucket made through ctl appears at the root.
    m.sh("echo 'bucket create --name viactl --kms-key-id k2' > \"$M/.envelopefs/ctl\"")
        .ok();
    assert!(
        fs::metadata(m.p("viactl")).unwrap().is_dir(),
        "bucket created through ctl is visible"
    );
    assert_eq!(
        words(&m.sh("ls \"$M/.envelopefs/buckets\"").ok().stdout),
        ["b", "viactl"]
    );
    assert_eq!(
        m.sh("cat \"$M/.envelopefs/buckets/viactl/kms-key-id\"")
            .ok()
            .stdout
            .trim(),
        k2
    );
    // Read-only control files refuse writes.
    let e = errno_of(
        OpenOptions::new()
            .write(true)
            .open(m.p(&format!(".envelopefs/keys/{default}"))),
        "open keys/ID for writing",
    );
    assert!(
        [libc::EPERM, libc::EACCES].contains(&e),
        "{}",
        errno_name(e)
    );
    // No files can be created in the control tree.
    let e = errno_of(
        File::create(m.p(".envelopefs/new")),
        "create in .envelopefs",
    );
    assert!(
        [libc::EPERM, libc::EACCES, libc::ENOENT].contains(&e),
        "{}",
        errno_name(e)
    );
    assert_errno(
        fs::create_dir(m.p(".envelopefs/buckets/zz")),
        libc::EPERM,
        "mkdir in the control tree",
    );
}

#[test]
fn empty_writes_to_control_files_are_einval_and_change_nothing() {
    // `echo "$KEY" > .../kms-key-id` with KEY unset must not move the bucket off its key,
    // nor an empty line to reencrypt start a job; the reason says what to write.
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    m.ctl("key create --alias k2").ok();
    let k2 = m.key_id("k2");
    m.sh("echo k2 > \"$M/.envelopefs/buckets/b/kms-key-id\"")
        .ok();
    fs::write(m.p("b/f"), b"object").unwrap();
    assert_eq!(xattr_str(&m.p("b/f"), KEY_VERSION), "1");
    m.ctl("key rotate k2").ok();
    for blank in ["\n", " \n", "\t \n\n"] {
        let msg = m
            .write_ctl_file("buckets/b/kms-key-id", blank)
            .err(libc::EINVAL);
        assert!(
            msg.contains("give a key id or alias, or \"none\" to remove the bucket's key"),
            "{blank:?}: {msg}"
        );
        let msg = m
            .write_ctl_file("buckets/b/reencrypt", blank)
            .err(libc::EINVAL);
        assert!(
            msg.contains("give a key id or alias, or \"latest\" for the newest version"),
            "{blank:?}: {msg}"
        );
        assert_errno(
            xattr_set(
                &m.p("b/f"),
                "user.envelopefs.reencrypt",
                blank.as_bytes(),
                0,
            ),
            libc::EINVAL,
            "an empty user.envelopefs.reencrypt",
        );
    }
    // The shell sees the write fail.
    m.sh("echo > \"$M/.envelopefs/buckets/b/kms-key-id\"")
        .fails();
    m.sh("echo \"$UNSET_KEY\" > \"$M/.envelopefs/buckets/b/reencrypt\"")
        .fails();
    // A command sent as JSON (the CLI's form) obeys the same rules: an update with neither a
    // key nor --remove-kms-key removes nothing.
    let update = |key: Option<&str>, remove: bool| {
        let cmd =
            envelopefs::command::StoreCommand::Bucket(envelopefs::command::BucketCmd::Update {
                name: "b".into(),
                kms_key_id: key.map(str::to_string),
                remove_kms_key: remove,
            });
        serde_json::json!({ "command": cmd }).to_string()
    };
    for line in [update(None, false), update(Some("k2"), true)] {
        let msg = m.ctl(&line).err(libc::EINVAL);
        assert!(msg.contains("exactly one of"), "{line}: {msg}");
    }
    // Nothing changed: the key is still assigned, no work request started, no rewrap.
    assert_eq!(m.read_ctl_file("buckets/b/kms-key-id").trim(), k2);
    assert_eq!(m.read_ctl_file("buckets/b/reencrypt"), "");
    assert_eq!(m.sh("ls \"$M/.envelopefs/work-requests\"").ok().stdout, "");
    assert_eq!(xattr_str(&m.p("b/f"), KEY_VERSION), "1");
    // The words do what they say.
    let wr = m.write_ctl_file("buckets/b/reencrypt", "latest\n").ok();
    let wr = m.wait_work_request(wr["id"].as_str().unwrap(), WR_TIMEOUT);
    assert_eq!(wr["status"], "SUCCEEDED", "{wr}");
    assert_eq!(xattr_str(&m.p("b/f"), KEY_VERSION), "2");
    m.write_ctl_file("buckets/b/kms-key-id", "none\n").ok();
    assert_eq!(m.read_ctl_file("buckets/b/kms-key-id"), "");
}

#[test]
fn ctl_is_a_transaction_file() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    // Success: the JSON result on the same fd.
    let keys = m.ctl("key list").ok();
    let arr = keys.as_array().expect("key list is an array");
    assert_eq!(arr.len(), 1);
    assert_eq!(arr[0]["alias"], "default");
    let b = m.ctl("bucket get --name b").ok();
    assert_eq!(b["name"], "b");
    // Errors: the write fails with the errno, the reason is readable on the same fd.
    let msg = m.ctl("frobnicate --now").err(libc::EINVAL);
    assert!(!msg.is_empty());
    m.ctl("bucket create").err(libc::EINVAL);
    m.ctl("key 'unterminated").err(libc::EINVAL);
    let msg = m.ctl("bucket get --name nope").err(libc::ENOENT);
    assert!(msg.contains("nope"), "the reason names the bucket: {msg}");
    m.ctl("bucket reencrypt --bucket-name nope")
        .err(libc::ENOENT);
    let msg = m.ctl("key get no-such-key").err(libc::ENOKEY);
    assert!(msg.contains("no-such-key"), "{msg}");
    m.ctl("bucket create --name x --kms-key-id no-such-key")
        .err(libc::ENOKEY);
    assert!(!m.p("x").exists(), "no bucket from a failed create");
    m.ctl("bucket create --name b").err(libc::EEXIST);
    m.ctl("object head --bucket-name b --name missing")
        .err(libc::ENOENT);
    // Several commands on one fd: each read shows the latest result.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p(".envelopefs/ctl"))
        .unwrap();
    f.write_all(b"key create --alias k2\n").unwrap();
    let r1: Value = serde_json::from_slice(&pread_all(&f).unwrap()).unwrap();
    assert_eq!(r1["ok"], true);
    assert_eq!(r1["result"]["alias"], "k2");
    let e = f.write(b"key get nope\n");
    assert_eq!(e.err().and_then(|e| e.raw_os_error()), Some(libc::ENOKEY));
    let r2: Value = serde_json::from_slice(&pread_all(&f).unwrap()).unwrap();
    assert_eq!(r2["ok"], false, "{r2}");
    f.write_all(b"key rotate k2\n").unwrap();
    let r3: Value = serde_json::from_slice(&pread_all(&f).unwrap()).unwrap();
    assert_eq!(r3["result"]["current_version"], 2, "{r3}");
    drop(f);
    // A fresh fd has no result.
    let mut s = String::new();
    File::open(m.p(".envelopefs/ctl"))
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, "", "a fresh ctl fd reads nothing");
    // Object commands work through ctl (files by absolute path).
    let src = m.scratch.join("in.txt");
    fs::write(&src, b"put through ctl").unwrap();
    let r = m
        .ctl(&format!(
            "object put --bucket-name b --name sub/o --file {}",
            src.display()
        ))
        .ok();
    assert_eq!(r["size"], 15, "{r}");
    assert_eq!(read(&m.p("b/sub/o")), b"put through ctl");
}

#[test]
fn ctl_transaction_from_the_shell_reads_the_whole_result() {
    let m = TestMount::new();
    // exec 3<> ctl; write; read on the same fd, as a shell user does (the read continues at
    // the fd's position, after the command written).
    let out = m
        .sh("exec 3<>\"$M/.envelopefs/ctl\" && printf 'key list\\n' >&3 && cat <&3")
        .ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the result read on the same fd after the write is not whole JSON ({e}): {:?}",
            out.stdout
        )
    });
    assert_eq!(v["ok"], true, "{v}");
    // The same with Rust's std: write, then read without seeking.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p(".envelopefs/ctl"))
        .unwrap();
    f.write_all(b"key get default\n").unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    let v: Value = serde_json::from_str(&s).unwrap_or_else(|e| {
        panic!("read after write without a seek is not whole JSON ({e}): {s:?}")
    });
    assert_eq!(v["result"]["alias"], "default");
}

/// close(2) of a descriptor, returning its result (std's drop ignores close errors).
fn close_checked(f: File) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = f.into_raw_fd();
    // SAFETY: fd is an open descriptor this function owns.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn writing_control_files_like_a_shell_redirect_closes_cleanly() {
    // `echo CMD > FILE` and Python's open(FILE, "w") open with O_WRONLY|O_CREAT|O_TRUNC and
    // check close(2): a successful command must not make close fail.
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    for (file, line) in [
        ("ctl", "key create --alias k2\n"),
        ("buckets/b/kms-key-id", "k2\n"),
        ("buckets/b/reencrypt", "latest\n"),
        ("ctl", "key list\n"),
    ] {
        let p = m.p(&format!(".envelopefs/{file}"));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap_or_else(|e| panic!("open {file} with O_CREAT|O_TRUNC: {e}"));
        f.write_all(line.as_bytes())
            .unwrap_or_else(|e| panic!("write {line:?} to {file}: {e}"));
        if let Err(e) = close_checked(f) {
            panic!(
                "close(2) of {file} after a successful `{}` failed with {} ({e})",
                line.trim(),
                errno_name(e.raw_os_error().unwrap_or(0))
            );
        }
    }
    let py = m.sh("command -v python3 >/dev/null || exit 0; python3 -c \"open('$M/.envelopefs/ctl', 'w').write('key list\\n')\"");
    assert_eq!(
        py.code, 0,
        "python3 open(ctl, 'w').write(...) fails at close: {}",
        py.stderr
    );
}

/// Makes `n` objects in `bucket` (nested, varied sizes); returns name -> content.
fn make_objects(m: &TestMount, bucket: &str, n: usize) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for i in 0..n {
        let name = match i % 3 {
            0 => format!("o{i}"),
            1 => format!("d{}/o{i}", i % 5),
            _ => format!("d{}/e/o{i}", i % 4),
        };
        let p = m.p(&format!("{bucket}/{name}"));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let data = pattern(i as u64, (i * 1_237) % 40_000);
        fs::write(&p, &data).unwrap();
        out.insert(name, data);
    }
    out
}

fn backing_bytes(
    m: &TestMount,
    bucket: &str,
    objs: &BTreeMap<String, Vec<u8>>,
) -> BTreeMap<String, Vec<u8>> {
    objs.keys()
        .map(|n| (n.clone(), read(&m.backing_path(bucket, n))))
        .collect()
}

#[test]
fn echo_latest_to_reencrypt_runs_a_work_request_to_succeeded() {
    let mut m = TestMount::new();
    m.ctl("key create --alias k2").ok();
    m.ctl("bucket create --name kb --kms-key-id k2").ok();
    let k2 = m.key_id("k2");
    let objs = make_objects(&m, "kb", 60);
    for n in objs.keys() {
        assert_eq!(xattr_str(&m.p(&format!("kb/{n}")), KEY_VERSION), "1");
    }
    let before = backing_bytes(&m, "kb", &objs);
    m.ctl("key rotate k2").ok();
    let t = Instant::now();
    m.sh("echo latest > \"$M/.envelopefs/buckets/kb/reencrypt\"")
        .ok();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "echo returns at once"
    );
    let id = m
        .sh("cat \"$M/.envelopefs/buckets/kb/reencrypt\"")
        .ok()
        .stdout
        .trim()
        .to_string();
    assert!(
        id.starts_with("wr-") && id.len() == 35,
        "the reencrypt file shows the work request id: {id:?}"
    );
    assert!(words(&m.sh("ls \"$M/.envelopefs/work-requests\"").ok().stdout).contains(&id));
    let wr = m.wait_work_request(&id, WR_TIMEOUT);
    assert_eq!(wr["status"], "SUCCEEDED", "{wr}");
    assert_eq!(wr["bucket_name"], "kb");
    assert_eq!(wr["target_key_id"], k2.as_str());
    assert_eq!(wr["target_key_version"], 2);
    assert_eq!(wr["objects_rewrapped"], objs.len() as u64, "{wr}");
    assert_eq!(wr["objects_failed"], 0, "{wr}");
    assert_eq!(wr["percent_complete"].as_f64(), Some(100.0), "{wr}");
    for (n, data) in &objs {
        let p = m.p(&format!("kb/{n}"));
        assert_eq!(
            getfattr(&p, KEY_VERSION).ok().stdout,
            "2",
            "key-version of {n}"
        );
        assert_eq!(getfattr(&p, KEY_ID).ok().stdout, k2, "key-id of {n}");
        assert_bytes_eq(
            &read(&m.backing_path("kb", n)),
            &before[n],
            &format!("backing content bytes of {n}"),
        );
        assert_bytes_eq(&read(&p), data, &format!("content of {n}"));
    }
    // Again: nothing to do, every object skipped.
    m.sh("echo latest > \"$M/.envelopefs/buckets/kb/reencrypt\"")
        .ok();
    let id2 = m
        .sh("cat \"$M/.envelopefs/buckets/kb/reencrypt\"")
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_ne!(id2, id, "a second request gets a new id");
    let wr2 = m.wait_work_request(&id2, WR_TIMEOUT);
    assert_eq!(wr2["status"], "SUCCEEDED", "{wr2}");
    assert_eq!(wr2["objects_rewrapped"], 0, "{wr2}");
    assert_eq!(wr2["objects_skipped"], objs.len() as u64, "{wr2}");
    // Work requests persist across a remount.
    m.remount();
    let v: Value = serde_json::from_str(&m.read_ctl_file(&format!("work-requests/{id}"))).unwrap();
    assert_eq!(v["status"], "SUCCEEDED");
    assert_eq!(m.read_ctl_file("buckets/kb/reencrypt").trim(), id2);
    for (n, data) in &objs {
        assert_bytes_eq(
            &read(&m.p(&format!("kb/{n}"))),
            data,
            &format!("{n} after remount"),
        );
    }
}

#[test]
fn reencrypt_through_ctl_and_with_a_key_id() {
    let m = TestMount::new();
    fs::create_dir(m.p("plain")).unwrap();
    let objs = make_objects(&m, "plain", 12);
    let k3 = m.ctl("key create --alias k3").ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // `echo KEY > reencrypt`: assigns the key and re-encrypts to it.
    m.sh("echo k3 > \"$M/.envelopefs/buckets/plain/reencrypt\"")
        .ok();
    let id = m
        .read_ctl_file("buckets/plain/reencrypt")
        .trim()
        .to_string();
    let wr = m.wait_work_request(&id, WR_TIMEOUT);
    assert_eq!(wr["status"], "SUCCEEDED", "{wr}");
    assert_eq!(m.read_ctl_file("buckets/plain/kms-key-id").trim(), k3);
    for (n, data) in &objs {
        let p = m.p(&format!("plain/{n}"));
        assert_eq!(xattr_str(&p, KEY_ID), k3, "{n}");
        assert_bytes_eq(&read(&p), data, n);
    }
    // The ctl command with the JSON of the accepted request on the same fd.
    m.ctl("key rotate k3").ok();
    let r = m.ctl("bucket reencrypt --bucket-name plain").ok();
    let id = r["id"]
        .as_str()
        .expect("work request id in the result")
        .to_string();
    assert!(
        ["ACCEPTED", "IN_PROGRESS", "SUCCEEDED"]
            .contains(&r["status"].as_str().unwrap_or_default()),
        "{r}"
    );
    let wr = m.wait_work_request(&id, WR_TIMEOUT);
    assert_eq!(wr["status"], "SUCCEEDED", "{wr}");
    let got = m.ctl(&format!("work-request get {id}")).ok();
    assert_eq!(got["status"], "SUCCEEDED");
    for n in objs.keys() {
        assert_eq!(
            xattr_str(&m.p(&format!("plain/{n}")), KEY_VERSION),
            "2",
            "{n}"
        );
    }
    let list = m.ctl("work-request list --bucket-name plain").ok();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
}

#[test]
fn reencrypt_of_a_bucket_without_an_assigned_key_is_einval() {
    let m = TestMount::new();
    fs::create_dir(m.p("plain")).unwrap();
    fs::write(m.p("plain/f"), b"x").unwrap();
    let p = m.p(".envelopefs/buckets/plain/reencrypt");
    let mut f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let e = f.write(b"latest\n");
    assert_eq!(
        e.as_ref()
            .err()
            .and_then(|e| e.raw_os_error())
            .map(errno_name),
        Some(errno_name(libc::EINVAL)),
        "write of latest to the reencrypt file of a bucket without a key: {e:?}"
    );
    let reply: Value = serde_json::from_slice(&pread_all(&f).unwrap())
        .expect("the reason is readable on the same fd as JSON");
    let msg = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("no assigned key"), "a clear reason: {reply}");
    drop(f);
    // The shell's redirection fails too (dash reports any write error as "I/O error").
    m.sh("echo latest > \"$M/.envelopefs/buckets/plain/reencrypt\"")
        .fails();
    assert_eq!(
        m.read_ctl_file("buckets/plain/reencrypt").trim(),
        "",
        "no work request was made"
    );
    assert_eq!(m.sh("ls \"$M/.envelopefs/work-requests\"").ok().stdout, "");
    // Through ctl, too.
    let msg = m
        .ctl("bucket reencrypt --bucket-name plain")
        .err(libc::EINVAL);
    assert!(msg.contains("no assigned key"), "{msg}");
}

#[test]
fn open_files_keep_working_during_a_bucket_reencrypt() {
    let m = TestMount::new();
    m.ctl("key create --alias k2").ok();
    m.ctl("bucket create --name kb --kms-key-id k2").ok();
    let objs = make_objects(&m, "kb", 300);
    let before = backing_bytes(&m, "kb", &objs);
    let log_path: PathBuf = m.p("kb/appended");
    let mut model = b"start\n".to_vec();
    fs::write(&log_path, &model).unwrap();
    let mut app = OpenOptions::new().append(true).open(&log_path).unwrap();
    let reader = File::open(m.p("kb/o3")).unwrap();
    m.ctl("key rotate k2").ok();
    m.sh("echo latest > \"$M/.envelopefs/buckets/kb/reencrypt\"")
        .ok();
    let id = m.read_ctl_file("buckets/kb/reencrypt").trim().to_string();
    // A conflicting request while the first one runs is EBUSY (or the first one is done).
    let second = m.ctl("bucket reencrypt --bucket-name kb");
    if second.errno.is_some() {
        second.err(libc::EBUSY);
    } else {
        let st: Value =
            serde_json::from_str(&m.read_ctl_file(&format!("work-requests/{id}"))).unwrap();
        assert_eq!(
            st["status"], "SUCCEEDED",
            "a second request was accepted while the first was {st}"
        );
    }
    let names: Vec<&String> = objs.keys().collect();
    let deadline = Instant::now() + WR_TIMEOUT;
    let mut i = 0usize;
    let mut max_latency = Duration::ZERO;
    let wr = loop {
        let t = Instant::now();
        let line = format!("append {i} while re-encrypting\n");
        app.write_all(line.as_bytes())
            .unwrap_or_else(|e| panic!("append {i} during the rewrap: {e}"));
        model.extend_from_slice(line.as_bytes());
        let n = names[i % names.len()];
        assert_bytes_eq(
            &read(&m.p(&format!("kb/{n}"))),
            &objs[n],
            &format!("{n} read during the rewrap"),
        );
        let mut buf = vec![0u8; objs["o3"].len()];
        let got = reader.read_at(&mut buf, 0).unwrap();
        assert_bytes_eq(
            &buf[..got],
            &objs["o3"],
            "o3 on a descriptor opened before the rewrap",
        );
        max_latency = max_latency.max(t.elapsed());
        i += 1;
        let v: Value =
            serde_json::from_str(&m.read_ctl_file(&format!("work-requests/{id}"))).unwrap();
        if ["SUCCEEDED", "FAILED", "CANCELED"].contains(&v["status"].as_str().unwrap_or_default()) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "work request {id} did not finish: {v}"
        );
    };
    assert_eq!(wr["status"], "SUCCEEDED", "{wr}");
    assert!(
        max_latency < Duration::from_secs(2),
        "an append+read took {max_latency:?} during the rewrap"
    );
    app.write_all(b"end\n").unwrap();
    model.extend_from_slice(b"end\n");
    drop(app);
    drop(reader);
    assert_bytes_eq(
        &read(&log_path),
        &model,
        "the file appended to during the rewrap",
    );
    assert_eq!(
        xattr_str(&log_path, KEY_VERSION),
        "2",
        "the open file's header is current too"
    );
    for (n, data) in &objs {
        let p = m.p(&format!("kb/{n}"));
        assert_eq!(xattr_str(&p, KEY_VERSION), "2", "{n}");
        assert_bytes_eq(
            &read(&m.backing_path("kb", n)),
            &before[n],
            &format!("backing bytes of {n}"),
        );
        assert_bytes_eq(&read(&p), data, n);
    }
}

#[test]
fn cli_store_commands_are_carried_out_by_the_mount() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    // No key file: the mount does the work through ctl.
    let store = m.store.display().to_string();
    let keys = cli(&["--store", &store, "key", "list"]).ok().json();
    assert_eq!(keys.as_array().map(Vec::len), Some(1), "{keys}");
    let buckets = cli(&["--store", &store, "bucket", "list"]).ok().json();
    assert_eq!(buckets[0]["name"], "b", "{buckets}");
    cli(&["--store", &store, "key", "create", "--alias", "viacli"]).ok();
    assert!(
        m.key_id("viacli").starts_with("key-"),
        "the mount sees the key made by the CLI"
    );
    // Persisted in the keystore: visible offline after unmount.
    m.unmount();
    let keys = m.cli_store(&["key", "list"]).ok().json();
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .any(|k| k["alias"] == "viacli"),
        "key created while mounted is persisted: {keys}"
    );
}

#[test]
fn the_mount_stays_responsive_during_a_reencrypt_of_20000_objects() {
    let m = TestMount::new();
    m.ctl("key create --alias k2").ok();
    m.ctl("bucket create --name big --kms-key-id k2").ok();
    let n = 20_000usize;
    let threads = 4;
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let m = &m;
            s.spawn(move || {
                for d in (t..20).step_by(threads) {
                    fs::create_dir(m.p(&format!("big/d{d}"))).unwrap();
                    for i in 0..n / 20 {
                        fs::write(m.p(&format!("big/d{d}/o{i}")), format!("{d}/{i}"))
                            .unwrap_or_else(|e| panic!("create big/d{d}/o{i}: {e}"));
                    }
                }
            });
        }
    });
    eprintln!("created {n} objects in {:?}", t0.elapsed());
    fs::create_dir(m.p("other")).unwrap();
    let probe_data = pattern(1, 200_000);
    fs::write(m.p("other/read-me"), &probe_data).unwrap();
    m.ctl("key rotate k2").ok();
    let t1 = Instant::now();
    m.sh("echo latest > \"$M/.envelopefs/buckets/big/reencrypt\"")
        .ok();
    let id = m.read_ctl_file("buckets/big/reencrypt").trim().to_string();
    // Probe the mount while the request runs: create+write+close, read, stat, readdir.
    let mut lat = Vec::new();
    let mut seen_in_progress = false;
    let deadline = Instant::now() + Duration::from_secs(600);
    let wr = loop {
        let i = lat.len();
        let t = Instant::now();
        fs::write(m.p(&format!("big/probe{i}")), format!("probe {i}")).unwrap();
        assert_bytes_eq(&read(&m.p("other/read-me")), &probe_data, "probe read");
        assert_eq!(
            read(&m.p(&format!("big/d{}/o{}", i % 20, i % (n / 20)))),
            format!("{}/{}", i % 20, i % (n / 20)).as_bytes()
        );
        fs::metadata(m.p("big/d3")).unwrap();
        lat.push(t.elapsed());
        let v: Value =
            serde_json::from_str(&m.read_ctl_file(&format!("work-requests/{id}"))).unwrap();
        let st = v["status"].as_str().unwrap_or_default().to_string();
        if st == "IN_PROGRESS" {
            seen_in_progress = true;
        }
        if ["SUCCEEDED", "FAILED", "CANCELED"].contains(&st.as_str()) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "work request did not finish: {v}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "re-encrypt of {n} objects took {:?}; {} probes",
        t1.elapsed(),
        lat.len()
    );
    assert_eq!(wr["status"], "SUCCEEDED", "{wr}");
    assert_eq!(wr["objects_rewrapped"], n as u64, "{wr}");
    assert_eq!(wr["objects_failed"], 0, "{wr}");
    lat.sort();
    let p50 = lat[lat.len() / 2];
    let max = *lat.last().unwrap();
    eprintln!("probe latency p50 {p50:?} max {max:?} (seen IN_PROGRESS: {seen_in_progress})");
    assert!(
        p50 < Duration::from_millis(250),
        "median probe latency {p50:?} during the re-encrypt"
    );
    assert!(
        max < Duration::from_secs(3),
        "slowest probe {max:?} during the re-encrypt"
    );
    for d in 0..20 {
        for i in (0..n / 20).step_by(97) {
            assert_eq!(
                xattr_str(&m.p(&format!("big/d{d}/o{i}")), KEY_VERSION),
                "2",
                "big/d{d}/o{i}"
            );
        }
    }
}

#[test]
fn control_files_are_writable_only_by_root_and_the_mounting_user() {
    require("setpriv");
    let mut m = TestMount::init_only(None);
    // Let another user reach the mountpoint (the temp dir is 0700).
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(m.mnt.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
    m.mount_with(&["--allow-other"]);
    fs::create_dir(m.p("b")).unwrap();
    m.ctl("key create --alias k2").ok();
    let as_nobody = |script: &str| {
        m.sh(&format!(
            "setpriv --reuid=65534 --regid=65534 --clear-groups sh -c '{script}'"
        ))
    };
    // The other user can use the filesystem (allow_other) ...
    as_nobody("ls \"$M\" >/dev/null").ok();
    // ... but not drive it.
    as_nobody("echo \"key create --alias evil\" > \"$M/.envelopefs/ctl\"").fails();
    as_nobody("echo k2 > \"$M/.envelopefs/buckets/b/kms-key-id\"").fails();
    as_nobody("echo latest > \"$M/.envelopefs/buckets/b/reencrypt\"").fails();
    let keys = m.ctl("key list").ok();
    assert!(
        !keys
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["alias"] == "evil"),
        "another user created a key through ctl: {keys}"
    );
    assert_eq!(
        m.read_ctl_file("buckets/b/kms-key-id").trim(),
        "",
        "another user assigned a key"
    );
    assert_eq!(
        m.read_ctl_file("buckets/b/reencrypt").trim(),
        "",
        "another user started a work request"
    );
    // Root (the mounting user here) still can.
    m.sh("echo k2 > \"$M/.envelopefs/buckets/b/kms-key-id\"")
        .ok();
}

#[test]
fn cli_objects_and_waits_through_the_mount() {
    let mut m = TestMount::new();
    m.ctl("key create --alias k2").ok();
    m.ctl("bucket create --name kb --kms-key-id k2").ok();
    // No key file anywhere below: the CLI talks to the mount. Relative --file paths are the
    // CLI's own (cwd = the scratch dir).
    fs::write(m.scratch.join("in.bin"), pattern(3, 100_000)).unwrap();
    m.sh("\"$EFS\" --store \"$S\" object put --bucket-name kb --name dir/o1 --file in.bin")
        .ok();
    assert_bytes_eq(
        &read(&m.p("kb/dir/o1")),
        &pattern(3, 100_000),
        "object put --file (relative) while mounted",
    );
    m.sh("printf 'from stdin' | \"$EFS\" --store \"$S\" object put --bucket-name kb --name o2")
        .ok();
    assert_eq!(read(&m.p("kb/o2")), b"from stdin");
    let got = m
        .sh("\"$EFS\" --store \"$S\" object get --bucket-name kb --name o2")
        .ok();
    assert_eq!(
        got.stdout, "from stdin",
        "object get to stdout while mounted"
    );
    m.sh("\"$EFS\" --store \"$S\" object get --bucket-name kb --name dir/o1 --file out.bin")
        .ok();
    assert_bytes_eq(
        &read(&m.scratch.join("out.bin")),
        &pattern(3, 100_000),
        "object get --file (relative)",
    );
    let head = m
        .sh("\"$EFS\" --store \"$S\" object head --bucket-name kb --name dir/o1")
        .ok()
        .json();
    assert_eq!(head["size"], 100_000, "{head}");
    // Rotate and re-encrypt, waiting for SUCCEEDED.
    m.sh("\"$EFS\" --store \"$S\" key rotate k2").ok();
    let out = m
        .sh("\"$EFS\" --store \"$S\" bucket reencrypt --bucket-name kb --wait-for-state SUCCEEDED --wait-interval-seconds 1 --max-wait-seconds 120")
        .ok();
    let wr = out.json();
    assert_eq!(wr["status"], "SUCCEEDED", "{wr}");
    for n in ["dir/o1", "o2"] {
        assert_eq!(xattr_str(&m.p(&format!("kb/{n}")), KEY_VERSION), "2", "{n}");
    }
    let id = wr["id"].as_str().unwrap().to_string();
    // Waiting for a state a finished request will never reach is exit 1; a reached one is 0.
    let out = m.sh(&format!(
        "\"$EFS\" --store \"$S\" work-request wait {id} --wait-for-state CANCELED --max-wait-seconds 2 --wait-interval-seconds 1"
    ));
    assert_eq!(
        out.code, 1,
        "wait for a state a SUCCEEDED request cannot reach: {out:?}"
    );
    m.sh(&format!(
        "\"$EFS\" --store \"$S\" work-request wait {id} --wait-for-state SUCCEEDED"
    ))
    .ok();
    let list = m
        .sh("\"$EFS\" --store \"$S\" work-request list --bucket-name kb")
        .ok()
        .json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    // Errors carry the mount's errno as exit code 1 and a message.
    let out = m
        .sh("\"$EFS\" --store \"$S\" bucket get --name nope")
        .fails();
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("nope"), "{}", out.stderr);
    // The rotation made while mounted is in the keystore.
    m.unmount();
    let k = m.cli_store(&["key", "get", "k2"]).ok().json();
    assert_eq!(k["current_version"], 2, "{k}");
}

#[test]
fn a_work_request_can_be_cancelled_and_run_again() {
    let m = TestMount::new();
    m.ctl("key create --alias k2").ok();
    m.ctl("bucket create --name kb --kms-key-id k2").ok();
    let n = 4000usize;
    std::thread::scope(|s| {
        for t in 0..4 {
            let m = &m;
            s.spawn(move || {
                fs::create_dir(m.p(&format!("kb/t{t}"))).unwrap();
                for i in (t..n).step_by(4) {
                    fs::write(m.p(&format!("kb/t{t}/o{i}")), format!("{i}")).unwrap();
                }
            });
        }
    });
    m.ctl("key rotate k2").ok();
    let id = m.ctl("bucket reencrypt --bucket-name kb").ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let c = m.ctl(&format!("work-request cancel {id}"));
    // A few thousand tiny objects take well under a second to rewrap: 20 s is plenty.
    let wr = m.wait_work_request(&id, Duration::from_secs(20));
    let st = wr["status"].as_str().unwrap_or_default().to_string();
    eprintln!("cancel reply: {}; final state {st}", c.json);
    assert!(
        c.errno.is_none() && c.json["ok"] == true,
        "`work-request cancel` must succeed (a finished request is left as it is): {}",
        c.json
    );
    match st.as_str() {
        "CANCELED" => {
            assert_eq!(wr["cancel_requested"], true, "{wr}");
            assert!(wr["time_finished"].is_u64(), "{wr}");
        }
        // The request may finish before the cancel arrives; then the cancel is refused or a no-op.
        "SUCCEEDED" => {}
        other => panic!("unexpected state {other} after a cancel: {wr}"),
    }
    // Every object still reads, under version 1 or 2.
    for t in 0..4 {
        for i in (t..n).step_by(4 * 13) {
            let p = m.p(&format!("kb/t{t}/o{i}"));
            assert_eq!(read(&p), format!("{i}").as_bytes());
            let v = xattr_str(&p, KEY_VERSION);
            assert!(v == "1" || v == "2", "o{i}: version {v}");
        }
    }
    // Run again: completes.
    let id2 = m.ctl("bucket reencrypt --bucket-name kb").ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let wr2 = m.wait_work_request(&id2, WR_TIMEOUT);
    assert_eq!(wr2["status"], "SUCCEEDED", "{wr2}");
    let done =
        wr2["objects_rewrapped"].as_u64().unwrap() + wr2["objects_skipped"].as_u64().unwrap();
    assert_eq!(done, n as u64, "{wr2}");
    for t in 0..4 {
        for i in (t..n).step_by(4 * 7) {
            assert_eq!(xattr_str(&m.p(&format!("kb/t{t}/o{i}")), KEY_VERSION), "2");
        }
    }
}

#[test]
fn objects_changed_through_ctl_are_seen_at_once_by_the_mount() {
    // DESIGN: store commands carried out by the mount keep its caches coherent. An object
    // replaced by `object put` (the CLI while mounted) must not read stale through the mount.
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    fs::write(m.p("b/o"), b"old content").unwrap();
    assert_eq!(read(&m.p("b/o")), b"old content"); // now in the kernel's caches
    let new = m.scratch.join("new");
    fs::write(&new, b"NEW CONTENT").unwrap(); // same size: no size change to notice
    m.ctl(&format!(
        "object put --bucket-name b --name o --file {}",
        new.display()
    ))
    .ok();
    assert_eq!(
        String::from_utf8_lossy(&read(&m.p("b/o"))),
        "NEW CONTENT",
        "content right after object put through ctl"
    );
    let short = m.scratch.join("short");
    fs::write(&short, b"x").unwrap();
    m.sh("\"$EFS\" --store \"$S\" object put --bucket-name b --name o --file short")
        .ok();
    assert_eq!(
        fs::metadata(m.p("b/o")).unwrap().len(),
        1,
        "size right after the CLI's object put"
    );
    assert_eq!(
        read(&m.p("b/o")),
        b"x",
        "content right after the CLI's object put"
    );
}
