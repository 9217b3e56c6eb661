//! Header backup: `headers export` on a mounted store, a copy with `cp -r` (which drops
//! every xattr, so every header and bucket record), `headers import` into the copy, then
//! the copy mounts and every object reads back.

mod common;

use common::*;
use envelopefs::store::xattr;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A second mount of another store, unmounted on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = envelopefs_cmd().arg("unmount").arg(&self.0).status();
        }
        if is_mounted(&self.0) {
            let _ = Command::new("fusermount3").arg("-uz").arg(&self.0).status();
        }
    }
}

fn walk_files(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(root.join(rel)).expect("readdir") {
        let e = e.expect("entry");
        let child = rel.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            walk_files(root, &child, out);
        } else {
            out.push(child);
        }
    }
}

#[test]
fn headers_export_cp_r_import_makes_the_copy_readable() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).expect("bucket b");
    fs::create_dir(m.p("c")).expect("bucket c");
    m.ctl("key create --alias ck").ok();
    m.ctl("bucket update --name c --kms-key-id ck").ok();
    fs::create_dir_all(m.p("b/deep/er")).expect("prefix");
    let mut want: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, name) in [
        "b/one",
        "b/deep/two",
        "b/deep/er/three",
        "c/four",
        "c/empty",
    ]
    .iter()
    .enumerate()
    {
        let len = if name.ends_with("empty") {
            0
        } else {
            1000 + i * 7000
        };
        want.push((name.to_string(), write_pattern(&m.p(name), i as u64, len)));
    }
    let backup = m.scratch.join("headers.json");
    // Mounted: the export goes through the mount (no key file given).
    let out = run_cmd(
        envelopefs_cmd()
            .arg("--store")
            .arg(&m.store)
            .args(["headers", "export", "--out"])
            .arg(&backup),
        CMD_TIMEOUT,
    )
    .ok();
    let v = out.json();
    assert_eq!(v["buckets"], 2, "{v}");
    assert_eq!(v["objects"], 5, "{v}");
    let text = fs::read_to_string(&backup).expect("backup file");
    assert!(text.contains("envelopefs-headers"), "{text}");
    m.unmount();

    // cp -r keeps no xattrs: the copy has neither headers nor bucket records.
    let copy = m.scratch.join("copy");
    let ok = Command::new("cp")
        .arg("-r")
        .arg(&m.store)
        .arg(&copy)
        .status()
        .expect("cp");
    assert!(ok.success());
    assert_eq!(
        xattr::get(&copy.join("b/one"), xattr::HEADER.as_bytes()).expect("getxattr"),
        None,
        "cp -r dropped the header"
    );
    let fsck_copy = |extra: &[&str]| {
        run_cmd(
            envelopefs_cmd()
                .arg("fsck")
                .arg(&copy)
                .arg("--key-file")
                .arg(&m.key)
                .args(extra),
            CMD_TIMEOUT,
        )
    };
    let broken = fsck_copy(&[]).fails();
    assert!(
        broken.stdout.contains("header-missing"),
        "{}",
        broken.stdout
    );
    assert!(
        broken.stdout.contains("bucket-record-missing"),
        "{}",
        broken.stdout
    );

    let import = |store: &Path| {
        run_cmd(
            envelopefs_cmd()
                .arg("--store")
                .arg(store)
                .arg("--key-file")
                .arg(&m.key)
                .args(["headers", "import"])
                .arg(&backup),
            CMD_TIMEOUT,
        )
    };
    let v = import(&copy).ok().json();
    assert_eq!(v["buckets_restored"], 2, "{v}");
    assert_eq!(v["headers_restored"], 5, "{v}");
    assert_eq!(v["refused"], Value::Array(vec![]), "{v}");
    // Again: everything is there now, nothing is replaced.
    let v = import(&copy).ok().json();
    assert_eq!(v["headers_present"], 5, "{v}");
    assert_eq!(v["headers_restored"], 0, "{v}");
    fsck_copy(&["--read-data"]).ok();

    // The copy mounts and every object reads back.
    let mnt2 = m.scratch.join("m2");
    fs::create_dir(&mnt2).expect("mountpoint");
    run_cmd(
        envelopefs_cmd()
            .arg("mount")
            .arg(&copy)
            .arg(&mnt2)
            .arg("--key-file")
            .arg(&m.key),
        CMD_TIMEOUT,
    )
    .ok();
    let guard = Mounted(mnt2.clone());
    let mut files = Vec::new();
    walk_files(&copy, Path::new("b"), &mut files);
    walk_files(&copy, Path::new("c"), &mut files);
    assert_eq!(files.len(), want.len(), "{files:?}");
    for (name, data) in &want {
        assert_bytes_eq(&read(&mnt2.join(name)), data, name);
    }
    drop(guard);
    assert!(!is_mounted(&mnt2));
}

#[test]
fn headers_import_refuses_another_stores_backup_and_a_header_of_another_object() {
    let a = TestMount::init_only(None);
    let b = TestMount::init_only(None);
    for m in [&a, &b] {
        m.cli_store(&["bucket", "create", "--name", "b"]).ok();
        for n in ["x", "y"] {
            let f = m.scratch.join(n);
            fs::write(&f, pattern(1, 100)).expect("input");
            m.cli_store(&[
                "object",
                "put",
                "--bucket-name",
                "b",
                "--name",
                n,
                "--file",
                &f.display().to_string(),
            ])
            .ok();
        }
    }
    let backup = a.scratch.join("h.json");
    a.cli_store(&["headers", "export", "--out", &backup.display().to_string()])
        .ok();
    let out = b
        .cli_store(&["headers", "import", &backup.display().to_string()])
        .fails();
    assert!(out.stderr.contains("not of this store"), "{}", out.stderr);

    // In store a: swap the backup's entries for x and y, drop x's header: import refuses
    // to put y's header on x.
    let mut v: Value = serde_json::from_slice(&fs::read(&backup).expect("read")).expect("json");
    let objs = v["objects"].as_array_mut().expect("objects");
    let hx = objs[0]["header"].clone();
    objs[0]["header"] = objs[1]["header"].clone();
    objs[1]["header"] = hx;
    fs::write(&backup, serde_json::to_vec(&v).expect("encode")).expect("write");
    xattr::remove(&a.backing_path("b", "x"), xattr::HEADER.as_bytes()).expect("removexattr");
    let r = a
        .cli_store(&["headers", "import", &backup.display().to_string()])
        .ok()
        .json();
    assert_eq!(r["headers_restored"], 0, "{r}");
    assert!(r["refused"].to_string().contains("another object"), "{r}");
    // Garbage is refused with a clear message.
    fs::write(&backup, b"not json").expect("write");
    let out = a
        .cli_store(&["headers", "import", &backup.display().to_string()])
        .fails();
    assert!(out.stderr.contains("does not parse"), "{}", out.stderr);
}
