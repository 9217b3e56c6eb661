//! `envelopefs store copy`: a whole store moved between a local directory and a real
//! three-node Garage cluster, as it is stored (ciphertext and headers byte for byte), without
//! the store's secret, resumable after SIGKILL, refusing a destination that holds another
//! store.
//!
//! One test function runs the cases in turn on one cluster (starting one takes seconds).
//! Garage missing is a failure that says so (common::garage), never a skip.
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine;
use common::garage::Cluster;
use common::{envelopefs_cmd, fails_with, fault_env, run_cmd, xattr_get, CmdOut, TestMount};
use envelopefs::store::s3::client::{S3Client, S3Options, MULTIPART_THRESHOLD};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(300);
const HEADER: &str = "user.envelopefs.header";
const BUCKET: &str = "user.envelopefs.bucket";

/// What a store holds, as stored: `rel path -> (bytes, header or record bytes)`. Objects are
/// `B/NAME` (body, header); records are `.envelopefs/REL` (bytes, empty) and bucket records
/// `.envelopefs/buckets/B` (the record, empty).
type Tree = BTreeMap<String, (Vec<u8>, Vec<u8>)>;

struct Fixture {
    cluster: Cluster,
    /// The source store (local, not mounted).
    src: TestMount,
    /// The plaintext of every object: `bucket/name -> bytes`.
    plain: BTreeMap<String, Vec<u8>>,
}

impl Fixture {
    fn cmd(&self) -> Command {
        let mut c = envelopefs_cmd();
        self.cluster.apply_env(&mut c);
        c
    }

    /// `envelopefs ARGS` with the cluster's environment and no secret.
    #[track_caller]
    fn run(&self, args: &[&str]) -> CmdOut {
        let mut c = self.cmd();
        c.args(args);
        run_cmd(&mut c, TIMEOUT)
    }

    /// `envelopefs --store STORE --key-file KEY ARGS`.
    #[track_caller]
    fn with_key(&self, store: &str, args: &[&str]) -> CmdOut {
        let mut c = self.cmd();
        c.arg("--store")
            .arg(store)
            .arg("--key-file")
            .arg(&self.src.key)
            .args(args);
        run_cmd(&mut c, TIMEOUT)
    }

    /// `envelopefs store copy SRC DST` (no secret anywhere), asserting success: its reply.
    #[track_caller]
    fn copy(&self, src: &str, dst: &str) -> Value {
        self.run(&["store", "copy", src, dst]).ok().json()
    }

    fn s3(&self) -> S3Client {
        for (k, v) in self.cluster.env() {
            std::env::set_var(k, v);
        }
        S3Client::connect(&self.cluster.bucket, &S3Options::default()).unwrap()
    }

    fn s3_url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.cluster.bucket)
    }

    fn src_path(&self) -> String {
        self.src.store.display().to_string()
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn field<'a>(v: &'a Value, name: &str) -> &'a Value {
    v.get(name)
        .unwrap_or_else(|| panic!("no field {name:?} in {v}"))
}

fn num(v: &Value, name: &str) -> u64 {
    field(v, name)
        .as_u64()
        .unwrap_or_else(|| panic!("{name} is not a number in {v}"))
}

/// Every regular file below `dir`, as paths relative to it.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(dir.join(&rel)).unwrap() {
            let e = e.unwrap();
            let child = rel.join(e.file_name());
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(child);
            } else if t.is_file() {
                out.push(child);
            }
        }
    }
    out.sort();
    out
}

/// A local store's tree (what `store copy` copies; not its lock, journal, mount files).
fn local_tree(root: &Path) -> Tree {
    let mut t = local_objects(root);
    for rec in ["config.json", "keystore"] {
        let b = fs::read(root.join(".envelopefs").join(rec)).unwrap();
        t.insert(format!(".envelopefs/{rec}"), (b, Vec::new()));
    }
    let wr = root.join(".envelopefs/work-requests");
    for e in fs::read_dir(&wr).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !name.starts_with('.') {
            let b = fs::read(wr.join(&name)).unwrap();
            t.insert(format!(".envelopefs/work-requests/{name}"), (b, Vec::new()));
        }
    }
    t
}

/// The bucket records and objects of a local store (or of a copy in progress).
fn local_objects(root: &Path) -> Tree {
    let mut t = Tree::new();
    for e in fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let bucket = e.file_name().to_string_lossy().into_owned();
        if bucket == ".envelopefs" || !e.file_type().unwrap().is_dir() {
            continue;
        }
        let rec = xattr_get(&e.path(), BUCKET).unwrap();
        t.insert(format!(".envelopefs/buckets/{bucket}"), (rec, Vec::new()));
        for f in files_below(&e.path()) {
            let p = e.path().join(&f);
            let body = fs::read(&p).unwrap();
            let header = xattr_get(&p, HEADER).unwrap();
            t.insert(format!("{bucket}/{}", f.display()), (body, header));
        }
    }
    t
}

/// Every key below `prefix/` with its size and ETag.
fn s3_keys(s3: &S3Client, prefix: &str) -> BTreeMap<String, (u64, String)> {
    let mut out = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = s3
            .list(&format!("{prefix}/"), None, after.as_deref(), 1000)
            .unwrap();
        for o in page.objects {
            out.insert(o.key, (o.size, o.etag));
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

/// A store's tree in the object store at `prefix`, in the form of [`local_tree`].
fn s3_tree(s3: &S3Client, prefix: &str) -> Tree {
    let mut t = Tree::new();
    for key in s3_keys(s3, prefix).into_keys() {
        let rel = key.strip_prefix(&format!("{prefix}/")).unwrap().to_string();
        let (body, head) = s3.get(&key).unwrap().unwrap();
        if rel.starts_with(".envelopefs/") {
            assert!(
                !head.metadata.contains_key("envelopefs-header"),
                "{key}: a record with a header"
            );
            t.insert(rel, (body, Vec::new()));
        } else {
            let b64 = head
                .metadata
                .get("envelopefs-header")
                .unwrap_or_else(|| panic!("{key} has no header metadata"));
            let header = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            t.insert(rel, (body, header));
        }
    }
    t
}

/// Asserts two trees are the same, naming the first difference.
#[track_caller]
fn assert_same_tree(got: &Tree, want: &Tree, what: &str) {
    let gk: Vec<&String> = got.keys().collect();
    let wk: Vec<&String> = want.keys().collect();
    assert_eq!(gk, wk, "{what}: not the same names");
    for (k, (body, header)) in want {
        let (gb, gh) = &got[k];
        assert!(
            gb == body,
            "{what}: {k}: the bytes differ ({} vs {} bytes)",
            gb.len(),
            body.len()
        );
        assert!(gh == header, "{what}: {k}: the header differs");
    }
}

fn objects_in(t: &Tree) -> (u64, u64) {
    t.iter()
        .filter(|(k, _)| !k.starts_with(".envelopefs/"))
        .fold((0, 0), |(n, b), (_, (body, _))| {
            (n + 1, b + body.len() as u64)
        })
}

#[test]
fn copying_a_store_between_a_directory_and_garage() {
    let cluster = Cluster::start();
    let src = TestMount::init_only(None);
    let mut f = Fixture {
        cluster,
        src,
        plain: BTreeMap::new(),
    };
    make_source(&mut f);
    local_to_s3_and_back(&f);
    resume_after_sigkill(&f);
    refuses_another_store_and_a_mounted_source(&mut f);
}

/// A local store with several buckets, small, empty, nested and multipart-sized objects, a
/// key rotation and a bucket re-encrypt (so headers are under different key versions), and
/// a work request.
fn make_source(f: &mut Fixture) {
    let m = &f.src;
    for b in ["photos", "docs", "empty"] {
        m.cli_store(&["bucket", "create", "--name", b]).ok();
    }
    let large = pattern(MULTIPART_THRESHOLD as usize + 3 * 1024 * 1024 + 17, 7);
    let mut objs: Vec<(String, Vec<u8>)> = vec![
        ("photos/large".into(), large),
        ("photos/a/b/c/deep".into(), pattern(10_000, 1)),
        ("photos/zero".into(), Vec::new()),
        ("photos/one".into(), vec![42]),
        ("docs/x/y".into(), pattern(4096, 3)),
    ];
    for i in 0..6 {
        objs.push((
            format!("docs/many/{i:02}"),
            pattern(1000 + i * 777, i as u8),
        ));
    }
    for (what, data) in &objs {
        let (b, n) = what.split_once('/').unwrap();
        m.put_object(b, n, data);
    }
    m.cli_store(&[
        "bucket",
        "update",
        "--name",
        "photos",
        "--kms-key-id",
        "default",
    ])
    .ok();
    m.cli_store(&["key", "rotate", "default"]).ok();
    let wr = m
        .cli_store(&[
            "bucket",
            "reencrypt",
            "--bucket-name",
            "photos",
            "--wait-for-state",
            "SUCCEEDED",
        ])
        .ok()
        .json();
    assert_eq!(num(&wr, "objects_rewrapped"), 4, "{wr}");
    // One more object after the rotation: docs now has headers under versions 1 and 2.
    let late = pattern(5000, 9);
    m.put_object("docs", "late", &late);
    objs.push(("docs/late".into(), late));
    let v = |n: &str| {
        let h = m
            .cli_store(&["object", "head", "--bucket-name", "docs", "--name", n])
            .ok()
            .json();
        num(&h, "key_version")
    };
    assert_ne!(v("x/y"), v("late"), "headers under one key version only");
    f.plain = objs.into_iter().collect();
}

/// `object get` of every object through `store`, compared with the plaintext.
fn assert_plaintext(f: &Fixture, store: &str) {
    for (what, data) in &f.plain {
        let (b, n) = what.split_once('/').unwrap();
        let out = f.src.scratch.join("got");
        let _ = fs::remove_file(&out);
        let out_p = out.display().to_string();
        f.with_key(
            store,
            &[
                "object",
                "get",
                "--bucket-name",
                b,
                "--name",
                n,
                "--file",
                &out_p,
            ],
        )
        .ok();
        assert!(
            fs::read(&out).unwrap() == *data,
            "{store}: {what} reads back different"
        );
    }
}

/// `fsck --read-data` of `store` (a directory or an object store) is clean.
#[track_caller]
fn assert_fsck_clean(f: &Fixture, store: &str) {
    let r = f.with_key(store, &["fsck", "--read-data"]).ok().json();
    assert_eq!(field(&r, "ok"), &Value::Bool(true), "fsck of {store}: {r}");
}

fn local_to_s3_and_back(f: &Fixture) {
    let s3 = f.s3();
    let want = local_tree(&f.src.store);
    let (objects, bytes) = objects_in(&want);
    assert_eq!(objects as usize, f.plain.len());

    // Local -> S3, without a secret.
    let url = f.s3_url("copy1");
    let r = f.copy(&f.src_path(), &url);
    assert_eq!(num(&r, "objects_total"), objects, "{r}");
    assert_eq!(num(&r, "objects_copied"), objects, "{r}");
    assert_eq!(num(&r, "objects_skipped"), 0, "{r}");
    assert_eq!(num(&r, "bytes_copied"), bytes, "{r}");
    assert_eq!(num(&r, "buckets_copied"), 3, "{r}");
    assert_eq!(num(&r, "work_requests_copied"), 1, "{r}");
    assert_eq!(field(&r, "resumed"), &Value::Bool(false), "{r}");
    let cfg: Value =
        serde_json::from_slice(&fs::read(f.src.store.join(".envelopefs/config.json")).unwrap())
            .unwrap();
    assert_eq!(field(&r, "store_id"), field(&cfg, "store_id"), "{r}");

    // Byte for byte: bodies, headers, records; nothing else (no lease, lock, journal).
    let got = s3_tree(&s3, "copy1");
    assert_same_tree(&got, &want, "local -> S3");
    let keys = s3_keys(&s3, "copy1");
    let (size, etag) = &keys["copy1/photos/large"];
    assert!(*size > MULTIPART_THRESHOLD, "large is {size} bytes");
    assert!(
        etag.contains('-'),
        "large was not a multipart upload: {etag}"
    );

    // The copy is a store: fsck --read-data clean, every object reads back.
    assert_fsck_clean(f, &url);
    assert_plaintext(f, &url);

    // S3 -> local, into a directory that the mount helper then mounts.
    let mut back = TestMount::init_only(None);
    fs::remove_dir_all(&back.store).unwrap();
    fs::write(&back.key, fs::read(&f.src.key).unwrap()).unwrap();
    let back_p = back.store.display().to_string();
    let r = f.copy(&url, &back_p);
    assert_eq!(num(&r, "objects_copied"), objects, "{r}");
    assert_eq!(num(&r, "bytes_copied"), bytes, "{r}");
    assert_same_tree(&local_tree(&back.store), &want, "S3 -> local");
    assert_fsck_clean(f, &back_p);
    back.mount();
    for (what, data) in &f.plain {
        let p = back.mnt.join(what);
        assert!(fs::read(&p).unwrap() == *data, "{what} through the mount");
    }
    let mut listed: Vec<String> = fs::read_dir(&back.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    listed.sort();
    assert_eq!(listed, ["docs", "empty", "photos"]);
    back.unmount();

    // Local -> local and S3 -> S3 go the same way.
    let ll = f.src.scratch.join("ll");
    f.copy(&f.src_path(), &ll.display().to_string());
    assert_same_tree(&local_tree(&ll), &want, "local -> local");
    let r = f.copy(&url, &f.s3_url("copy3"));
    assert_eq!(num(&r, "objects_copied"), objects, "{r}");
    assert_same_tree(&s3_tree(&s3, "copy3"), &want, "S3 -> S3");
}

/// Runs `store copy SRC DST --parallel 2` with a fault that stalls after `n` objects
/// copied (the other worker may finish the one it has in hand), kills it with SIGKILL once
/// it says so, and returns its stderr.
fn copy_killed_after(f: &Fixture, src: &str, dst: &str, n: u64) -> String {
    let (k, v) = fault_env(&format!("copy-stall-after-{n}"));
    let mut c = f.cmd();
    c.env(k, v)
        .args(["store", "copy", "--parallel", "2", src, dst])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
            let _ = tx.send(line);
        }
    });
    let t0 = Instant::now();
    let mut seen = String::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains("stalled") {
                    break;
                }
            }
            Err(_) => {
                if let Ok(Some(st)) = child.try_wait() {
                    panic!("the copy ended ({st}) before stalling: {seen}");
                }
            }
        }
        if t0.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the copy did not stall within {TIMEOUT:?}: {seen}");
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    seen
}

fn resume_after_sigkill(f: &Fixture) {
    let s3 = f.s3();
    let want = local_tree(&f.src.store);
    let (objects, bytes) = objects_in(&want);
    let url = f.s3_url("copy2");
    copy_killed_after(f, &f.src_path(), &url, 3);

    // Killed midway: the three objects there (or four: the other worker's), not all, no
    // config, so nothing takes it for a store.
    let part = s3_tree(&s3, "copy2");
    let (there, there_bytes) = objects_in(&part);
    assert!(
        (3..=4).contains(&there),
        "{there} of {objects} objects at the destination after the kill"
    );
    assert!(!part.contains_key(".envelopefs/config.json"));
    assert!(part.contains_key(".envelopefs/keystore"));
    fails_with(
        f.with_key(&url, &["bucket", "list"]),
        "not an envelopefs store",
    );

    // Run again: it goes on (the dead process's lease is taken over), skipping the three.
    let r = f.copy(&f.src_path(), &url);
    assert_eq!(field(&r, "resumed"), &Value::Bool(true), "{r}");
    assert_eq!(num(&r, "objects_skipped"), there, "{r}");
    assert_eq!(num(&r, "objects_copied"), objects - there, "{r}");
    assert_eq!(num(&r, "bytes_skipped"), there_bytes, "{r}");
    assert_eq!(num(&r, "bytes_copied"), bytes - there_bytes, "{r}");
    assert_same_tree(&s3_tree(&s3, "copy2"), &want, "resumed local -> S3");
    assert_fsck_clean(f, &url);

    // Once more: everything is there already.
    let r = f.copy(&f.src_path(), &url);
    assert_eq!(num(&r, "objects_copied"), 0, "{r}");
    assert_eq!(num(&r, "objects_skipped"), objects, "{r}");
    assert_eq!(num(&r, "buckets_copied"), 0, "{r}");

    // The same the other way: S3 -> local killed after 5 objects, then resumed.
    let dst = f.src.scratch.join("resumed");
    let dst_p = dst.display().to_string();
    copy_killed_after(f, &url, &dst_p, 5);
    assert!(!dst.join(".envelopefs/config.json").exists());
    let there = objects_in(&local_objects(&dst)).0;
    assert!(
        (5..=6).contains(&there),
        "{there} of {objects} objects at the destination after the kill"
    );
    let r = f.copy(&url, &dst_p);
    assert_eq!(num(&r, "objects_skipped"), there, "{r}");
    assert_eq!(num(&r, "objects_copied"), objects - there, "{r}");
    assert_same_tree(&local_tree(&dst), &want, "resumed S3 -> local");
    assert!(
        fs::read_dir(dst.join(".envelopefs/tmp"))
            .unwrap()
            .next()
            .is_none(),
        "temporaries of the killed copy left behind"
    );
}

fn refuses_another_store_and_a_mounted_source(f: &mut Fixture) {
    let s3 = f.s3();
    // Another store in the object store: refused, nothing there changed.
    let other = f.s3_url("other");
    let mut c = f.cmd();
    c.args(["init", &other, "--key-file"]).arg(&f.src.key);
    run_cmd(&mut c, TIMEOUT).ok();
    f.with_key(&other, &["bucket", "create", "--name", "photos"])
        .ok();
    let before = s3_tree(&s3, "other");
    let keys_before = s3_keys(&s3, "other");
    fails_with(
        f.run(&["store", "copy", &f.src_path(), &other]),
        "another store",
    );
    assert_same_tree(&s3_tree(&s3, "other"), &before, "the other store");
    assert_eq!(s3_keys(&s3, "other"), keys_before, "the other store's keys");

    // Another local store: refused, unchanged.
    let local_other = TestMount::init_only(None);
    let before = local_tree(&local_other.store);
    fails_with(
        f.run(&[
            "store",
            "copy",
            &f.src_path(),
            &local_other.store.display().to_string(),
        ]),
        "another store",
    );
    assert_same_tree(
        &local_tree(&local_other.store),
        &before,
        "the other local store",
    );

    // A directory that is not empty and not a store: refused, unchanged.
    let stuff = f.src.scratch.join("stuff");
    fs::create_dir(&stuff).unwrap();
    fs::write(stuff.join("notes.txt"), b"mine").unwrap();
    fails_with(
        f.run(&["store", "copy", &f.src_path(), &stuff.display().to_string()]),
        "not empty",
    );
    let left: Vec<_> = fs::read_dir(&stuff).unwrap().collect();
    assert_eq!(
        left.len(),
        1,
        "something was written into a foreign directory"
    );

    // A source in an object store that another process holds (its lease) is refused,
    // naming that process.
    let held_store = f.s3_url("copy1");
    let mut c = f.cmd();
    c.arg("--store")
        .arg(&held_store)
        .arg("--key-file")
        .arg(&f.src.key)
        .args(["object", "put", "--bucket-name", "docs", "--name", "held"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut holder = c.spawn().unwrap();
    let t0 = Instant::now();
    while s3.head("copy1/.envelopefs/lease").unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(60), "no lease taken");
        std::thread::sleep(Duration::from_millis(50));
    }
    let msg = fails_with(
        f.run(&["store", "copy", &held_store, &f.s3_url("copy5")]),
        "in use",
    );
    assert!(msg.contains(&holder.id().to_string()), "{msg}");
    {
        use std::io::Write;
        let mut stdin = holder.stdin.take().unwrap();
        stdin.write_all(b"held data").unwrap();
    }
    assert!(holder.wait().unwrap().success());
    assert!(s3_keys(&s3, "copy5").is_empty(), "the refused copy wrote");

    // Places that overlap are refused: a store into itself, into a directory inside it, an
    // object-store prefix into itself or below itself.
    let inside = f.src.store.join("sub").display().to_string();
    for (from, to) in [
        (f.src_path(), f.src_path()),
        (f.src_path(), inside.clone()),
        (f.s3_url("copy1"), f.s3_url("copy1")),
        (f.s3_url("copy1"), f.s3_url("copy1/deeper")),
    ] {
        fails_with(f.run(&["store", "copy", &from, &to]), "overlap");
    }
    assert!(!Path::new(&inside).exists(), "a refused copy made {inside}");
    assert!(s3_keys(&s3, "copy1/deeper").is_empty());

    // A mounted source is refused.
    f.src.mount();
    fails_with(
        f.run(&["store", "copy", &f.src_path(), &f.s3_url("copy4")]),
        "mounted",
    );
    f.src.unmount();
    assert!(s3_keys(&s3, "copy4").is_empty(), "the refused copy wrote");
}
