//! `envelopefs fsck`: a clean store passes; each kind of damage is reported as its own
//! problem (object, kind, detail) with exit code 1; nothing in the store changes; on a
//! mounted store it runs through the mount without stopping it.

mod common;

use common::snapshot::store_snapshot;
use common::*;
use envelopefs::store::xattr;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

fn put(m: &TestMount, bucket: &str, name: &str, seed: u64, len: usize) -> Vec<u8> {
    let data = pattern(seed, len);
    m.put_object(bucket, name, &data);
    data
}

fn fsck(m: &TestMount, extra: &[&str]) -> CmdOut {
    let mut args = vec!["fsck".to_string(), m.store.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--key-file".into());
    args.push(m.key.display().to_string());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    cli(&argv)
}

fn problems(out: &CmdOut) -> Vec<(String, String)> {
    let v = out.json();
    let mut p: Vec<(String, String)> = v["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems array: {v}"))
        .iter()
        .map(|p| {
            assert!(
                !p["detail"].as_str().unwrap_or_default().is_empty(),
                "every problem has a detail: {p}"
            );
            (
                p["object"].as_str().unwrap_or_default().to_string(),
                p["kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    p.sort();
    p
}

fn flip(path: &Path, at: u64) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).expect("read");
    b[0] ^= 0x10;
    f.write_all_at(&b, at).expect("write");
}

fn raw_header(path: &Path) -> Vec<u8> {
    xattr::get(path, xattr::HEADER.as_bytes())
        .expect("getxattr")
        .expect("a header")
}

fn set_raw_header(path: &Path, v: &[u8]) {
    xattr::set(path, xattr::HEADER.as_bytes(), v, 0).expect("setxattr");
}

#[test]
fn fsck_passes_a_clean_store_and_reports_each_damage_without_changing_anything() {
    let m = TestMount::init_only(None);
    for b in ["b", "c", "d"] {
        m.cli_store(&["bucket", "create", "--name", b]).ok();
    }
    let names = [
        "chunk", "nohdr", "shorthdr", "verhdr", "idswap", "cut", "good", "moved",
    ];
    for (i, n) in names.iter().enumerate() {
        put(&m, "b", &format!("dir/{n}"), i as u64, 3 * 4096 + 100 + i);
    }
    put(&m, "d", "x", 99, 10);
    let clean = fsck(&m, &["--read-data"]).ok();
    let v = clean.json();
    assert_eq!(v["ok"], Value::Bool(true), "{v}");
    assert_eq!(v["objects"], 9, "{v}");
    assert_eq!(v["buckets"], 3, "{v}");
    assert!(v["chunks"].as_u64().unwrap_or(0) >= 8 * 4, "{v}");

    let p = |n: &str| m.backing_path("b", &format!("dir/{n}"));
    flip(&p("chunk"), 24 + 4096 + 28 + 100); // inside chunk 1's ciphertext
    xattr::remove(&p("nohdr"), xattr::HEADER.as_bytes()).expect("removexattr");
    let h = raw_header(&p("shorthdr"));
    set_raw_header(&p("shorthdr"), &h[..h.len() - 5]);
    let mut h = raw_header(&p("verhdr"));
    h[4] = 9; // format version 9
    set_raw_header(&p("verhdr"), &h);
    let other = raw_header(&p("good"));
    set_raw_header(&p("idswap"), &other);
    let f = fs::OpenOptions::new()
        .write(true)
        .open(p("cut"))
        .expect("open");
    f.set_len(24 + 4096 + 28).expect("truncate");
    // A whole object moved to another bucket: its header is bound to bucket b.
    fs::rename(p("moved"), m.backing_path("c", "moved")).expect("move object");
    // Bucket d's record damaged; a stray file at the top of the store.
    let mut rec = xattr::get(&m.store.join("d"), xattr::BUCKET.as_bytes())
        .expect("getxattr")
        .expect("record");
    rec.truncate(rec.len() - 1);
    xattr::set(&m.store.join("d"), xattr::BUCKET.as_bytes(), &rec, 0).expect("setxattr");
    fs::write(m.store.join("stray"), b"x").expect("stray file");

    let before = store_snapshot(&m.store);
    let meta_only = fsck(&m, &[]).fails();
    assert_eq!(meta_only.code, 1);
    let found = problems(&meta_only);
    let want: Vec<(String, String)> = [
        ("b/dir/cut", "size"),
        ("b/dir/idswap", "object-id-mismatch"),
        ("b/dir/nohdr", "header-missing"),
        ("b/dir/shorthdr", "header-corrupt"),
        ("b/dir/verhdr", "header-version"),
        ("c/moved", "header-unwrap"),
        ("d", "bucket-record"),
        ("stray", "stray-entry"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(found, want, "{}", meta_only.stdout);
    assert!(
        meta_only.stderr.contains("fsck found 8 problems"),
        "{}",
        meta_only.stderr
    );

    let full = fsck(&m, &["--read-data"]).fails();
    let mut want_full = want.clone();
    want_full.push(("b/dir/chunk".into(), "chunk".into()));
    want_full.sort();
    assert_eq!(problems(&full), want_full, "{}", full.stdout);
    assert!(full.stdout.contains("chunk 1 failed authentication"));

    assert!(
        store_snapshot(&m.store) == before,
        "fsck changed something in the store"
    );
}

#[test]
fn fsck_reports_a_damaged_config_or_keystore_clearly() {
    let m = TestMount::init_only(None);
    m.cli_store(&["bucket", "create", "--name", "b"]).ok();
    put(&m, "b", "x", 1, 5000);
    let cfg = m.store.join(".envelopefs/config.json");
    let good = fs::read(&cfg).expect("config");
    let text = String::from_utf8(good.clone()).expect("utf8");
    fs::write(
        &cfg,
        text.replace("\"chunk_size\": 4096", "\"chunk_size\": 8192"),
    )
    .expect("edit");
    let out = fsck(&m, &[]).fails();
    assert_eq!(
        problems(&out),
        vec![(".envelopefs/config.json".to_string(), "config".to_string())]
    );
    assert!(out.stdout.contains("config was altered"), "{}", out.stdout);
    fs::write(&cfg, b"{ not json").expect("garbage");
    let out = fsck(&m, &["--read-data"]).fails();
    assert_eq!(
        problems(&out),
        vec![(".envelopefs/config.json".to_string(), "config".to_string())],
        "the objects are still checked with the keystore's chunk size: {}",
        out.stdout
    );
    fs::write(&cfg, &good).expect("restore");

    let ks = m.store.join(".envelopefs/keystore");
    let kgood = fs::read(&ks).expect("keystore");
    fs::write(&ks, &kgood[..20]).expect("truncate keystore");
    let out = fsck(&m, &[]).fails();
    assert_eq!(
        problems(&out),
        vec![(".envelopefs/keystore".to_string(), "keystore".to_string())],
        "{}",
        out.stdout
    );
    fs::write(&ks, &kgood).expect("restore keystore");
    fsck(&m, &["--read-data"]).ok();
}

#[test]
fn fsck_on_a_mounted_store_goes_through_the_mount_and_keeps_it_running() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).expect("mkdir bucket");
    let a = write_pattern(&m.p("b/a"), 1, 200_000);
    let _ = write_pattern(&m.p("b/z"), 2, 5000);
    // No key file: the mount does the work.
    let out = cli(&["fsck", &m.store.display().to_string(), "--read-data"]).ok();
    let v = out.json();
    assert_eq!(v["ok"], Value::Bool(true), "{v}");
    assert_eq!(v["objects"], 2, "{v}");
    assert!(m.is_mounted() && is_mounted(&m.mnt));
    assert_bytes_eq(&read(&m.p("b/a")), &a, "b/a after fsck");

    // Damage a chunk behind the mount's back: fsck through the mount finds it.
    flip(&m.backing_path("b", "z"), 24 + 30);
    let out = cli(&["fsck", &m.store.display().to_string(), "--read-data"]).fails();
    assert_eq!(
        problems(&out),
        vec![("b/z".to_string(), "chunk".to_string())],
        "{}",
        out.stdout
    );
    // The same through ctl by hand.
    let r = m.ctl("fsck").ok();
    assert_eq!(
        r["ok"],
        Value::Bool(true),
        "without --read-data chunks are not read: {r}"
    );
    let r = m.ctl("fsck --read-data").ok();
    assert_eq!(r["ok"], Value::Bool(false), "{r}");
    assert!(is_mounted(&m.mnt), "the mount is still up");
    assert_bytes_eq(&read(&m.p("b/a")), &a, "b/a after fsck");
}

#[test]
fn fsck_shows_a_progress_bar_on_a_terminal_only() {
    let m = TestMount::init_only(None);
    m.cli_store(&["bucket", "create", "--name", "b"]).ok();
    for i in 0..3 {
        put(&m, "b", &format!("o{i}"), i, 9000);
    }
    let plain = fsck(&m, &["--read-data"]).ok();
    assert!(
        !plain.stderr.contains("objects"),
        "no bar without a terminal: {}",
        plain.stderr
    );
    require("script");
    // `script` gives the command a pseudo-terminal (stdout and stderr both go to it).
    let line = format!(
        "{BIN} fsck {} --read-data --key-file {}",
        m.store.display(),
        m.key.display()
    );
    let out = run_cmd(
        std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env_remove("ENVELOPEFS_STORE"),
        CMD_TIMEOUT,
    )
    .ok();
    assert!(
        out.stdout.contains("fsck ["),
        "a bar is drawn: {:?}",
        out.stdout
    );
    assert!(out.stdout.contains("/3 objects"), "{:?}", out.stdout);
    assert!(out.stdout.contains("\"ok\": true"), "{:?}", out.stdout);
}
