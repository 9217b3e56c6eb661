//! A store in an object store (a real three-node Garage cluster), mounted: round trips of
//! files, directories, symlinks and fifos; no plaintext in the staging directory or the
//! object store; fsync that survives `kill -9` of the daemon, with no object left without
//! its header and no unfinished multipart upload after the remount; a bucket re-encrypt
//! started through a control file (the header changes, the data does not); the read-only
//! `user.envelopefs.*` xattrs; the CLI carried out by the mount; and what the object store
//! refuses (hard links: EPERM; rename across buckets: EXDEV; RENAME_EXCHANGE: EINVAL).
//!
//! Each test starts its own cluster (tests/common/s3mount.rs). Garage missing is a failure
//! that says so, never a skip.
#![allow(clippy::unwrap_used)]

mod common;

use common::s3mount::{contains, S3Mount, HEADER_META};
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

const KEY_ID: &str = "user.envelopefs.key-id";
const KEY_VERSION: &str = "user.envelopefs.key-version";
const OBJECT_ID: &str = "user.envelopefs.object-id";
const ENCRYPTION: &str = "user.envelopefs.encryption";
const HEADER: &str = "user.envelopefs.header";
const WR_TIMEOUT: Duration = Duration::from_secs(300);

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> std::io::Result<()> {
    // SAFETY: valid C strings; AT_FDCWD directories.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            c(from).as_ptr(),
            libc::AT_FDCWD,
            c(to).as_ptr(),
            flags,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn mkfifo(p: &Path) -> std::io::Result<()> {
    // SAFETY: a valid C string.
    let r = unsafe { libc::mkfifo(c(p).as_ptr(), 0o640) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sorted names of a directory.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// 16 random bytes as hex.
fn random_hex() -> String {
    let mut b = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Asserts that every content object of the store that carries data has its header: no
/// object is ever visible without it. Directory records (`~d`) and the other `~` entries
/// of encrypted directories are files of the name layer, not objects; keys ending in `/`
/// are directory markers.
#[track_caller]
fn every_object_has_its_header(m: &S3Mount, when: &str) -> usize {
    let mut n = 0;
    for (key, size) in m.content_keys() {
        let last = key.rsplit('/').next().unwrap_or_default();
        if key.ends_with('/') || last.starts_with('~') || size == 0 {
            continue;
        }
        let head = m
            .s3_head(&key)
            .unwrap_or_else(|| panic!("{when}: {key} was listed but HEAD finds nothing"));
        assert!(
            head.metadata
                .get(HEADER_META)
                .is_some_and(|h| !h.is_empty()),
            "{when}: the S3 object {key} ({size} bytes) has no {HEADER_META} metadata: {:?}",
            head.metadata
        );
        n += 1;
    }
    n
}

/// Everything the round-trip test leaves in bucket `b`, checked through the mount.
#[track_caller]
fn check_tree(m: &S3Mount, small: &[u8], large: &[u8], deep: &[u8], when: &str) {
    assert_eq!(
        names(&m.p("b")),
        ["big", "dir", "empty", "fifo", "link", "log", "moved"],
        "{when}: ls b"
    );
    assert_bytes_eq(&read(&m.p("b/big")), large, &format!("{when}: b/big"));
    assert_eq!(
        fs::metadata(m.p("b/big")).unwrap().len(),
        large.len() as u64,
        "{when}: stat size of b/big"
    );
    let moved = fs::metadata(m.p("b/moved")).unwrap();
    assert_eq!(moved.len(), 20_000, "{when}: size of b/moved");
    assert_eq!(moved.mode() & 0o7777, 0o640, "{when}: mode of b/moved");
    let mut want = small[..5000].to_vec();
    want.resize(20_000, 0);
    assert_bytes_eq(&read(&m.p("b/moved")), &want, &format!("{when}: b/moved"));
    assert_eq!(
        read(&m.p("b/log")),
        b"line 1\nline 2\nline 3\n",
        "{when}: appended file"
    );
    assert_eq!(
        fs::read_link(m.p("b/link")).unwrap(),
        Path::new("moved"),
        "{when}: symlink target"
    );
    assert!(fs::symlink_metadata(m.p("b/link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_bytes_eq(
        &read(&m.p("b/link")),
        &want,
        &format!("{when}: through the link"),
    );
    let fifo = fs::symlink_metadata(m.p("b/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo(), "{when}: b/fifo is a fifo");
    assert_eq!(fifo.mode() & 0o777, 0o640, "{when}: mode of the fifo");
    assert!(fs::metadata(m.p("b/empty")).unwrap().is_dir());
    assert_eq!(names(&m.p("b/empty")), Vec::<String>::new(), "{when}");
    assert_eq!(names(&m.p("b/dir")), ["a", "top"], "{when}: ls b/dir");
    assert_eq!(names(&m.p("b/dir/a")), ["b", "x"], "{when}: ls b/dir/a");
    assert_eq!(names(&m.p("b/dir/a/b")), ["c"], "{when}");
    assert_eq!(names(&m.p("b/dir/a/b/c")), ["deep"], "{when}");
    assert_bytes_eq(
        &read(&m.p("b/dir/a/b/c/deep")),
        deep,
        &format!("{when}: deep"),
    );
    assert_eq!(read(&m.p("b/dir/a/x")), b"x", "{when}");
    assert_eq!(read(&m.p("b/dir/top")), b"top", "{when}");
    assert_eq!(
        xattr_get(&m.p("b/moved"), "user.note").unwrap(),
        b"kept",
        "{when}: a user xattr is stored"
    );
    assert_eq!(names(&m.p("c")), ["other"], "{when}: ls c");
}

#[test]
fn files_directories_links_and_fifos_round_trip() {
    let mut m = S3Mount::new("rt");
    m.bucket("b");
    m.bucket("c");
    assert_eq!(names(&m.mnt), [".envelopefs", "b", "c"]);
    let list = m.cli(&["bucket", "list"]).ok().json();
    assert!(list.to_string().contains("\"b\""), "{list}");

    // Small and large (> 16 MiB: multipart) files.
    let small = pattern(1, 10_000);
    fs::write(m.p("b/small"), &small).unwrap();
    let large = write_pattern(&m.p("b/big"), 2, (17 << 20) + 12_345);
    assert_bytes_eq(&read(&m.p("b/small")), &small, "b/small");
    assert_bytes_eq(&read(&m.p("b/big")), &large, "b/big");
    assert_eq!(fs::metadata(m.p("b/small")).unwrap().len(), 10_000);
    assert_eq!(
        fs::metadata(m.p("b/big")).unwrap().len(),
        large.len() as u64
    );

    // Nested directories, an empty one.
    fs::create_dir_all(m.p("b/d1/a/b/c")).unwrap();
    fs::create_dir(m.p("b/empty")).unwrap();
    let deep = pattern(3, 70_001);
    fs::write(m.p("b/d1/a/b/c/deep"), &deep).unwrap();
    fs::write(m.p("b/d1/a/x"), b"x").unwrap();
    fs::write(m.p("b/d1/top"), b"top").unwrap();
    let ls = m.sh("ls -la \"$M/b\" \"$M/b/d1/a\"").ok().stdout;
    assert!(ls.contains("small") && !ls.contains("deep"), "{ls}");
    assert_eq!(names(&m.p("b/d1/a")), ["b", "x"]);

    // chmod, truncate (shrink, then grow with zeros), append.
    fs::set_permissions(m.p("b/small"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(fs::metadata(m.p("b/small")).unwrap().mode() & 0o7777, 0o640);
    let f = OpenOptions::new().write(true).open(m.p("b/small")).unwrap();
    f.set_len(5000).unwrap();
    assert_eq!(fs::metadata(m.p("b/small")).unwrap().len(), 5000);
    f.set_len(20_000).unwrap();
    drop(f);
    let mut want = small[..5000].to_vec();
    want.resize(20_000, 0);
    assert_bytes_eq(&read(&m.p("b/small")), &want, "after truncate");
    fs::write(m.p("b/log"), b"line 1\n").unwrap();
    for l in ["line 2\n", "line 3\n"] {
        let mut f = OpenOptions::new().append(true).open(m.p("b/log")).unwrap();
        f.write_all(l.as_bytes()).unwrap();
    }
    assert_eq!(read(&m.p("b/log")), b"line 1\nline 2\nline 3\n");
    m.sh("echo shell >> \"$M/b/log2\" && echo again >> \"$M/b/log2\"")
        .ok();
    assert_eq!(read(&m.p("b/log2")), b"shell\nagain\n");
    fs::remove_file(m.p("b/log2")).unwrap();

    // A user xattr, a symlink, a fifo.
    xattr_set(&m.p("b/small"), "user.note", b"kept", 0).unwrap();
    std::os::unix::fs::symlink("moved", m.p("b/link")).unwrap();
    mkfifo(&m.p("b/fifo")).unwrap();

    // Rename a file (copy + delete), over an existing file, and a directory (one copy per
    // object).
    fs::rename(m.p("b/small"), m.p("b/moved")).unwrap();
    assert_errno(fs::metadata(m.p("b/small")), libc::ENOENT, "old name");
    fs::write(m.p("b/d1/a/x2"), b"old").unwrap();
    fs::write(m.p("b/d1/a/x"), b"x").unwrap();
    fs::rename(m.p("b/d1/a/x"), m.p("b/d1/a/x2")).unwrap();
    fs::rename(m.p("b/d1/a/x2"), m.p("b/d1/a/x")).unwrap();
    fs::rename(m.p("b/d1"), m.p("b/dir")).unwrap();
    assert_errno(fs::metadata(m.p("b/d1")), libc::ENOENT, "old dir name");
    fs::write(m.p("c/other"), b"in c").unwrap();

    check_tree(&m, &small, &large, &deep, "mounted");

    // What the object store refuses.
    assert_errno(
        fs::hard_link(m.p("b/moved"), m.p("b/hard")),
        libc::EPERM,
        "link(2) on an object-store mount",
    );
    // A file renamed to another bucket is rewrapped under that bucket's key, then moved.
    m.cli(&["key", "create", "--alias", "ck"]).ok();
    fs::write(m.p("b/tomove"), b"moves to c").unwrap();
    m.cli(&["bucket", "update", "--name", "c", "--kms-key-id", "ck"])
        .ok();
    fs::rename(m.p("b/tomove"), m.p("c/moved-in")).unwrap();
    assert_errno(fs::metadata(m.p("b/tomove")), libc::ENOENT, "moved away");
    assert_eq!(read(&m.p("c/moved-in")), b"moves to c");
    let ck = m.cli(&["key", "list"]).ok().json();
    let ck_id = ck
        .as_array()
        .and_then(|a| a.iter().find(|k| k["alias"] == "ck"))
        .and_then(|k| k["id"].as_str())
        .unwrap_or_else(|| panic!("no key ck in {ck}"))
        .to_string();
    assert_eq!(
        xattr_str(&m.p("c/moved-in"), "user.envelopefs.key-id"),
        ck_id,
        "a file moved to bucket c is under c's key"
    );
    fs::remove_file(m.p("c/moved-in")).unwrap();
    assert_errno(
        renameat2(&m.p("b/moved"), &m.p("b/log"), libc::RENAME_EXCHANGE),
        libc::EINVAL,
        "RENAME_EXCHANGE",
    );
    // mv across buckets falls back to copy + unlink and works.
    m.sh("mv \"$M/c/other\" \"$M/b/other\" && mv \"$M/b/other\" \"$M/c/other\"")
        .ok();
    let objects = every_object_has_its_header(&m, "mounted");
    assert!(objects >= 7, "only {objects} objects with headers listed");

    // Everything is in the object store, not only in the mount's caches.
    m.remount();
    check_tree(&m, &small, &large, &deep, "after remount");

    // rm -rf of a tree, then of everything: nothing of bucket b is left in the object store.
    m.sh("rm -rf \"$M/b/dir\"").ok();
    assert_errno(fs::metadata(m.p("b/dir")), libc::ENOENT, "after rm -rf");
    m.sh("rm -rf \"$M\"/b/*").ok();
    assert_eq!(names(&m.p("b")), Vec::<String>::new());
    m.remount();
    assert_eq!(names(&m.p("b")), Vec::<String>::new(), "after remount");
    let left: Vec<_> = m
        .content_keys()
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{}/b/", m.s.prefix)))
        .collect();
    assert!(
        left.is_empty(),
        "rm -rf left S3 objects of bucket b: {left:?}"
    );
}

#[test]
fn mkdir_and_rmdir_at_the_root_make_and_remove_buckets() {
    let mut m = S3Mount::new("root");
    fs::create_dir(m.p("b")).expect("mkdir at the root of an S3 mount (makes a bucket)");
    assert!(fs::metadata(m.p("b")).unwrap().is_dir());
    fs::write(m.p("b/f"), b"in a bucket made by mkdir").unwrap();
    let list = m.cli(&["bucket", "list"]).ok().json();
    assert!(list.to_string().contains("\"b\""), "{list}");
    assert_errno(
        fs::remove_dir(m.p("b")),
        libc::ENOTEMPTY,
        "rmdir of a full bucket",
    );
    fs::remove_file(m.p("b/f")).unwrap();
    fs::remove_dir(m.p("b")).unwrap();
    assert_errno(fs::metadata(m.p("b")), libc::ENOENT, "a removed bucket");
    m.remount();
    assert_eq!(names(&m.mnt), [".envelopefs"]);
    // Creating a file at the root is refused.
    assert_errno(File::create(m.p("f")), libc::EPERM, "a file at the root");
}

/// Reads every file the daemon has open in the staging directory, through /proc (unnamed
/// files included); returns how many there were and which hold `needle`.
fn scan_open_staging_files(m: &S3Mount, needle: &[u8]) -> (usize, Vec<String>) {
    let pid = m.daemon_pid().expect("the S3 mount's daemon");
    let staging = m.staging.display().to_string();
    let mut n = 0;
    let mut hits = Vec::new();
    for e in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let Ok(target) = fs::read_link(e.path()) else {
            continue;
        };
        let t = target.display().to_string();
        if !t.starts_with(&staging) || t.contains("envelopefs-mount-") {
            continue;
        }
        n += 1;
        if fs::read(e.path()).is_ok_and(|b| contains(&b, needle)) {
            hits.push(t);
        }
    }
    (n, hits)
}

/// Every file below `dir` whose bytes (or name) hold `needle`; `skip_logs` leaves out the
/// mount's log (whose messages name objects, as a local store's mount.log does).
fn scan_tree(dir: &Path, needle: &[u8], skip_logs: bool, hits: &mut Vec<String>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if skip_logs && name.starts_with("envelopefs-mount-") {
            continue;
        }
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            scan_tree(&p, needle, skip_logs, hits);
        } else if md.is_file() && fs::read(&p).is_ok_and(|b| contains(&b, needle)) {
            hits.push(p.display().to_string());
        }
        if contains(name.as_bytes(), needle) {
            hits.push(format!("the name {}", p.display()));
        }
    }
}

/// Every place in the cluster's bucket where `needle` shows: in a key, a body, or a metadata
/// key or value (as it is, or base64-decoded).
fn scan_s3(m: &S3Mount, needle: &str) -> Vec<String> {
    use base64::Engine;
    let s3 = m.s3();
    let mut hits = Vec::new();
    for (key, _) in m.s3_keys("") {
        if key.contains(needle) {
            hits.push(format!("the key {key}"));
        }
        let (bytes, head) = s3
            .get(&key)
            .unwrap_or_else(|e| panic!("GET {key}: {e}"))
            .unwrap_or_else(|| panic!("{key} listed but gone"));
        if contains(&bytes, needle.as_bytes()) {
            hits.push(format!("the body of {key}"));
        }
        for (k, v) in &head.metadata {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .unwrap_or_default();
            if k.contains(needle) || v.contains(needle) || contains(&decoded, needle.as_bytes()) {
                hits.push(format!("metadata {k} of {key}"));
            }
        }
    }
    hits
}

#[test]
fn a_canary_never_reaches_the_staging_dir_or_the_object_store() {
    let m = S3Mount::new("canary");
    m.bucket("b");
    let canary = format!("envelopefs-canary-{}", random_hex());
    let needle = canary.as_bytes();
    let line = format!("{canary}\n");
    let body: Vec<u8> = line.as_bytes().repeat((3 << 20) / line.len());
    let big: Vec<u8> = line.as_bytes().repeat((20 << 20) / line.len());
    fs::create_dir(m.p("b/dir")).unwrap();
    let small_p = m.p("b/dir/small.txt");
    let big_p = m.p("b/big.txt");

    // Written, fsynced and still open: the staging files are there, and hold ciphertext.
    let mut f = File::create(&small_p).unwrap();
    f.write_all(&body).unwrap();
    let mut g = File::create(&big_p).unwrap();
    g.write_all(&big).unwrap();
    f.sync_all().unwrap();
    g.sync_all().unwrap();
    let (open, hits) = scan_open_staging_files(&m, needle);
    assert!(
        open > 0,
        "with two files open for writing, the daemon has no file open in the staging directory \
         {} (ENVELOPEFS_STAGING_DIR): where does it stage?",
        m.staging.display()
    );
    assert!(hits.is_empty(), "plaintext in open staging files: {hits:?}");
    let mut hits = Vec::new();
    scan_tree(&m.staging, needle, false, &mut hits);
    assert!(
        hits.is_empty(),
        "plaintext in the staging directory: {hits:?}"
    );
    // More writes after the fsync, then close (uploads); a read-modify-write in the middle.
    f.write_all(line.as_bytes()).unwrap();
    drop(f);
    let h = OpenOptions::new().write(true).open(&big_p).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&h, line.as_bytes(), 5_000_001).unwrap();
    h.sync_data().unwrap();
    let (_, hits) = scan_open_staging_files(&m, needle);
    assert!(hits.is_empty(), "plaintext in open staging files: {hits:?}");
    drop(h);
    drop(g);
    let mut want = body.clone();
    want.extend_from_slice(line.as_bytes());
    let mut want_big = big.clone();
    want_big[5_000_001..5_000_001 + line.len()].copy_from_slice(line.as_bytes());
    assert_bytes_eq(&read(&small_p), &want, "the canary file reads back");
    assert_bytes_eq(&read(&big_p), &want_big, "the big canary file reads back");
    m.sh("sync").ok();

    // Nowhere in the S3 bucket: not in a body, a key or a metadata value.
    let keys = m.s3_keys("");
    assert!(keys.len() > 3, "the bucket lists only {keys:?}");
    let hits = scan_s3(&m, &canary);
    assert!(hits.is_empty(), "plaintext in the object store: {hits:?}");
    // Nor in the staging directory (the mount's log included).
    let mut hits = Vec::new();
    scan_tree(&m.staging, needle, false, &mut hits);
    assert!(
        hits.is_empty(),
        "plaintext in the staging directory: {hits:?}"
    );
    // The CLI reads the object back (through the mount).
    let out = m.scratch.join("got");
    m.cli(&[
        "object",
        "get",
        "--bucket-name",
        "b",
        "--name",
        "dir/small.txt",
        "--file",
        &out.display().to_string(),
    ])
    .ok();
    assert_bytes_eq(&read(&out), &want, "object get of the canary file");
}

#[test]
fn fsync_survives_kill_9_and_no_object_or_upload_is_left_half_done() {
    let mut m = S3Mount::init_only("durable");
    // Each part of a multipart upload waits 1 s: the kill below lands in the middle of one.
    m.mount_env.push(fault_env("s3-slow-upload"));
    m.mount();
    m.bucket("b");
    fs::create_dir(m.p("b/sub")).unwrap();
    // Written and fsynced, left open.
    let small = pattern(10, 100_000);
    let mut a = File::create(m.p("b/sub/a")).unwrap();
    a.write_all(&small).unwrap();
    a.sync_all().unwrap();
    let big = pattern(11, (20 << 20) + 7);
    let mut b = File::create(m.p("b/big")).unwrap();
    for ch in big.chunks(1 << 20) {
        b.write_all(ch).unwrap();
    }
    b.sync_data().unwrap();
    // An overwrite of a file that exists, fsynced: the new bytes are what is read later.
    fs::write(m.p("b/over"), b"first version").unwrap();
    let mut o = OpenOptions::new().write(true).open(m.p("b/over")).unwrap();
    o.write_all(b"SECOND").unwrap();
    o.sync_all().unwrap();
    every_object_has_its_header(&m, "after the fsyncs");

    // A large file being uploaded at close (no fsync): the daemon dies in the middle.
    let path = m.p("b/cut");
    let cut = pattern(12, 40 << 20);
    let cut2 = cut.clone();
    let writer = std::thread::spawn(move || {
        let mut f = File::create(&path).unwrap();
        for ch in cut2.chunks(1 << 20) {
            if f.write_all(ch).is_err() {
                return;
            }
        }
        // close: the upload starts; the daemon is killed during it.
        drop(f);
    });
    let upload = poll(
        Duration::from_secs(120),
        "a multipart upload of b/cut to be under way",
        || m.uploads().into_iter().next(),
    );
    m.kill_daemon();
    writer.join().unwrap();
    assert!(
        !m.uploads().is_empty(),
        "the killed daemon should have left its upload {upload} unfinished"
    );
    drop((a, b, o));
    every_object_has_its_header(&m, "after kill -9");

    // Remount (the lease of the dead daemon is taken over): the fsynced data is there.
    m.mount_env.clear();
    m.mount();
    assert_bytes_eq(&read(&m.p("b/sub/a")), &small, "fsynced b/sub/a");
    assert_bytes_eq(&read(&m.p("b/big")), &big, "fsynced b/big");
    assert_eq!(read(&m.p("b/over")), b"SECONDversion", "fsynced overwrite");
    // The cut file is absent, or empty (created, never written): never a part of it.
    match fs::read(m.p("b/cut")) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "b/cut: {e}"),
        Ok(got) => assert!(
            got.is_empty() || got == cut,
            "b/cut holds {} bytes of a cut upload",
            got.len()
        ),
    }
    every_object_has_its_header(&m, "after the remount");
    let left = poll(
        Duration::from_secs(60),
        "the new mount to abort the unfinished upload",
        || {
            let u = m.uploads();
            u.is_empty().then_some(u)
        },
    );
    assert!(left.is_empty());
    // And it stays usable.
    fs::write(m.p("b/after"), b"after").unwrap();
    m.remount();
    assert_eq!(read(&m.p("b/after")), b"after");
    assert!(m.uploads().is_empty(), "uploads left: {:?}", m.uploads());
}

/// S3 key -> (ETag, header) of every content object with a header.
fn headers(m: &S3Mount) -> BTreeMap<String, (String, String)> {
    m.content_keys()
        .into_iter()
        .filter_map(|(k, _)| {
            let h = m.s3_head(&k)?;
            let hdr = h.metadata.get(HEADER_META)?.clone();
            Some((k, (h.etag, hdr)))
        })
        .collect()
}

/// Polls `.envelopefs/work-requests/ID` until it is done.
fn wait_work_request(m: &S3Mount, id: &str) -> Value {
    poll(WR_TIMEOUT, &format!("work request {id}"), || {
        let text = fs::read_to_string(m.p(&format!(".envelopefs/work-requests/{id}")))
            .unwrap_or_else(|e| panic!("reading work-requests/{id}: {e}"));
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("work-requests/{id} is not JSON ({e}): {text}"));
        let st = v["status"].as_str().unwrap_or_default().to_string();
        matches!(st.as_str(), "SUCCEEDED" | "FAILED" | "CANCELED").then_some(v)
    })
}

fn key_id(m: &S3Mount, alias: &str) -> String {
    let text = fs::read_to_string(m.p(&format!(".envelopefs/keys/{alias}")))
        .unwrap_or_else(|e| panic!("keys/{alias}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap();
    v["id"].as_str().unwrap().to_string()
}

#[test]
fn control_files_xattrs_and_the_cli_go_through_the_mount() {
    let mut m = S3Mount::new("ctl");
    let mut ls = m
        .sh("ls \"$M/.envelopefs\"")
        .ok()
        .stdout
        .split_whitespace()
        .map(str::to_string)
        .collect::<Vec<_>>();
    ls.sort();
    assert_eq!(ls, ["buckets", "ctl", "keys", "work-requests"]);
    m.sh("echo 'key create --alias k2' > \"$M/.envelopefs/ctl\"")
        .ok();
    m.sh("echo 'bucket create --name kb --kms-key-id k2' > \"$M/.envelopefs/ctl\"")
        .ok();
    let k2 = key_id(&m, "k2");
    assert!(fs::metadata(m.p("kb")).unwrap().is_dir());
    let mut objs: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    fs::create_dir(m.p("kb/dir")).unwrap();
    objs.insert("f1", pattern(20, 3000));
    objs.insert("dir/f2", pattern(21, 200_000));
    objs.insert("big", pattern(22, 18 << 20));
    for (n, d) in &objs {
        fs::write(m.p(&format!("kb/{n}")), d).unwrap();
    }

    // The read-only xattrs, as locally.
    let f1 = m.p("kb/f1");
    assert_eq!(getfattr(&f1, KEY_ID).ok().stdout, k2);
    assert_eq!(getfattr(&f1, KEY_VERSION).ok().stdout, "1");
    assert_eq!(getfattr(&f1, ENCRYPTION).ok().stdout, "master");
    let oid = getfattr(&f1, OBJECT_ID).ok().stdout;
    assert!(
        oid.len() == 32 && oid.chars().all(|c| c.is_ascii_hexdigit()),
        "object id: {oid}"
    );
    assert_errno(xattr_get(&f1, HEADER), libc::ENODATA, "the header xattr");
    assert_errno(
        xattr_set(&f1, KEY_ID, b"x", 0),
        libc::EPERM,
        "setxattr of key-id",
    );
    let dump = m.sh("getfattr -d -m - \"$M/kb/f1\"").ok().stdout;
    assert!(!dump.contains("header"), "{dump}");
    // User xattrs are stored, and survive a remount.
    m.sh("setfattr -n user.colour -v blue \"$M/kb/f1\"").ok();
    m.remount();
    assert_eq!(getfattr(&f1, "user.colour").ok().stdout, "blue");
    let dump = m.sh("getfattr -d \"$M/kb/f1\"").ok().stdout;
    assert!(dump.contains("user.colour=\"blue\""), "{dump}");

    // Rotate, then `echo latest > reencrypt`: every header changes, no data moves.
    let before = headers(&m);
    assert_eq!(before.len(), objs.len(), "objects with headers: {before:?}");
    m.sh("echo 'key rotate k2' > \"$M/.envelopefs/ctl\"").ok();
    m.sh("echo latest > \"$M/.envelopefs/buckets/kb/reencrypt\"")
        .ok();
    let id = m
        .sh("cat \"$M/.envelopefs/buckets/kb/reencrypt\"")
        .ok()
        .stdout
        .trim()
        .to_string();
    assert!(id.starts_with("wr-"), "the reencrypt file shows {id:?}");
    let wr = wait_work_request(&m, &id);
    assert_eq!(wr["status"], "SUCCEEDED", "{wr}");
    assert_eq!(wr["objects_rewrapped"], objs.len() as u64, "{wr}");
    assert_eq!(wr["objects_failed"], 0, "{wr}");
    let after = headers(&m);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the same S3 objects"
    );
    for (k, (etag, hdr)) in &before {
        let (etag2, hdr2) = &after[k];
        assert_eq!(etag2, etag, "{k}: the data (ETag) must not change");
        assert_ne!(hdr2, hdr, "{k}: the header was not rewritten");
    }
    for (n, d) in &objs {
        let p = m.p(&format!("kb/{n}"));
        assert_eq!(getfattr(&p, KEY_VERSION).ok().stdout, "2", "{n}");
        assert_bytes_eq(&read(&p), d, &format!("{n} after the re-encrypt"));
    }
    // setfattr reencrypt of one object, synchronously.
    m.sh("echo 'key rotate k2' > \"$M/.envelopefs/ctl\"").ok();
    m.sh("setfattr -n user.envelopefs.reencrypt -v latest \"$M/kb/f1\"")
        .ok();
    assert_eq!(getfattr(&f1, KEY_VERSION).ok().stdout, "3");

    // The CLI with --store s3://... goes through the mount (the lease is the mount's).
    let list = m.cli(&["bucket", "list"]).ok().json();
    assert!(list.to_string().contains("\"kb\""), "{list}");
    let input = m.scratch.join("in");
    let data = pattern(23, 123_456);
    fs::write(&input, &data).unwrap();
    let input_s = input.display().to_string();
    m.cli(&[
        "object",
        "put",
        "--bucket-name",
        "kb",
        "--name",
        "dir/from-cli",
        "--file",
        &input_s,
    ])
    .ok();
    assert_bytes_eq(
        &read(&m.p("kb/dir/from-cli")),
        &data,
        "an object put by the CLI, seen at once through the mount",
    );
    fs::write(m.p("kb/dir/from-mount"), b"written through the mount").unwrap();
    let out = m.scratch.join("out");
    let out_s = out.display().to_string();
    m.cli(&[
        "object",
        "get",
        "--bucket-name",
        "kb",
        "--name",
        "dir/from-mount",
        "--file",
        &out_s,
    ])
    .ok();
    assert_eq!(read(&out), b"written through the mount");
    let h = m
        .cli(&["object", "head", "--bucket-name", "kb", "--name", "big"])
        .ok()
        .json();
    assert_eq!(h["size"].as_u64(), Some(18 << 20), "{h}");
    m.cli(&[
        "object",
        "reencrypt",
        "--bucket-name",
        "kb",
        "--name",
        "dir/f2",
    ])
    .ok();
    assert_eq!(getfattr(&m.p("kb/dir/f2"), KEY_VERSION).ok().stdout, "3");
    let wrs = m.cli(&["work-request", "get", &id]).ok().json();
    assert_eq!(wrs["status"], "SUCCEEDED", "{wrs}");

    // A second mount of the same store is refused while this one lives.
    let m2 = m.s.dir.path().join("m2");
    fs::create_dir(&m2).unwrap();
    let mut c2 = m.bare_cmd();
    c2.arg("mount")
        .arg(&m.s.store)
        .arg(&m2)
        .arg("--key-file")
        .arg(&m.s.key);
    let o = run_cmd(&mut c2, CMD_TIMEOUT);
    let mounted_twice = is_mounted(&m2);
    if mounted_twice {
        let _ = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(&m2)
            .status();
    }
    assert!(
        o.code != 0 && !mounted_twice,
        "a second mount of a mounted S3 store must be refused: {o:?}"
    );
    // Nothing of that disturbed the first mount.
    assert_bytes_eq(&read(&m.p("kb/big")), &objs["big"], "kb/big at the end");
    m.unmount();
    // Offline now: the CLI runs on its own and sees the same objects.
    let h = m
        .cli(&["object", "head", "--bucket-name", "kb", "--name", "f1"])
        .ok()
        .json();
    assert_eq!(h["size"].as_u64(), Some(3000), "{h}");
}

#[test]
fn stat_sizes_and_mtimes_agree_with_the_object_store_after_remount() {
    let mut m = S3Mount::new("stat");
    m.bucket("b");
    let sizes = [0usize, 1, 65_535, 65_536, 65_537, 1 << 20, (16 << 20) + 1];
    for (i, n) in sizes.iter().enumerate() {
        fs::write(m.p(&format!("b/f{i}")), pattern(30 + i as u64, *n)).unwrap();
    }
    let mtimes: Vec<i64> = (0..sizes.len())
        .map(|i| fs::metadata(m.p(&format!("b/f{i}"))).unwrap().mtime())
        .collect();
    m.remount();
    for (i, n) in sizes.iter().enumerate() {
        let md = fs::metadata(m.p(&format!("b/f{i}"))).unwrap();
        assert_eq!(md.len(), *n as u64, "size of f{i} after remount");
        assert!(
            (md.mtime() - mtimes[i]).abs() <= 1,
            "mtime of f{i}: {} then {}",
            mtimes[i],
            md.mtime()
        );
        let h = m
            .cli(&[
                "object",
                "head",
                "--bucket-name",
                "b",
                "--name",
                &format!("f{i}"),
            ])
            .ok()
            .json();
        assert_eq!(h["size"].as_u64(), Some(*n as u64), "object head f{i}: {h}");
    }
    let du = m.sh("ls -l \"$M/b\" | wc -l").ok().stdout;
    assert_eq!(du.trim(), (sizes.len() + 1).to_string(), "ls -l lines");
}

#[test]
fn rm_rf_of_a_tree_just_made_empties_it() {
    // A tree made and removed at once, as a build's clean step does: every rmdir of rm -rf
    // must find its directory empty (the listing cache must know what was just removed).
    let m = S3Mount::new("rmrf");
    m.bucket("b");
    let mut failed = Vec::new();
    for i in 0..12 {
        let o = m.sh(&format!(
            "mkdir -p \"$M/b/t{i}/a/b/c\" && echo deep > \"$M/b/t{i}/a/b/c/deep\" && \
             echo x > \"$M/b/t{i}/a/x\" && rm -rf \"$M/b/t{i}\""
        ));
        if o.code != 0 {
            failed.push(o.stderr.trim().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "rm -rf right after making a tree failed {} of 12 times: {failed:?}",
        failed.len()
    );
    assert_eq!(names(&m.p("b")), Vec::<String>::new());
}
