//! Encryption seen through the mount: cross-bucket rename rewraps without rewriting data,
//! the read-only envelopefs xattrs, per-object re-encrypt, and the errors of tampered
//! chunks, corrupt headers and disabled key versions.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::time::Duration;

const KEY_ID: &str = "user.envelopefs.key-id";
const KEY_VERSION: &str = "user.envelopefs.key-version";
const OBJECT_ID: &str = "user.envelopefs.object-id";
const ENCRYPTION: &str = "user.envelopefs.encryption";
const HEADER: &str = "user.envelopefs.header";

/// Lets the kernel's asynchronous RELEASE of closed files reach the daemon, so the next
/// open is a fresh one (reads the header again).
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

fn read_range(path: &std::path::Path, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = f.read_at(&mut buf[done..], off + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

#[test]
fn cross_bucket_rename_rewraps_the_key_and_keeps_the_content_bytes() {
    let mut m = TestMount::init_only(None);
    m.cli_store(&["key", "create", "--alias", "k2"]).ok();
    m.cli_store(&["bucket", "create", "--name", "a"]).ok();
    m.cli_store(&["bucket", "create", "--name", "kb", "--kms-key-id", "k2"])
        .ok();
    m.mount();
    let k2 = m.key_id("k2");
    let default = m.key_id("default");
    assert_ne!(k2, default);
    let cs = m.chunk_size() as usize;
    let data = write_pattern(&m.p("a/f"), 1, 2 * cs + 1234);
    assert_eq!(
        xattr_str(&m.p("a/f"), KEY_ID),
        default,
        "a has the default key"
    );
    let oid = xattr_str(&m.p("a/f"), OBJECT_ID);
    let before = read(&m.backing_path("a", "f"));
    let header_before = xattr_get(&m.backing_path("a", "f"), HEADER).unwrap();

    fs::rename(m.p("a/f"), m.p("kb/f")).expect("rename across buckets");

    assert!(
        !m.backing_path("a", "f").exists(),
        "the backing file left bucket a"
    );
    let after = read(&m.backing_path("kb", "f"));
    assert_bytes_eq(
        &after,
        &before,
        "backing content bytes after a cross-bucket rename",
    );
    let header_after = xattr_get(&m.backing_path("kb", "f"), HEADER).unwrap();
    assert_ne!(header_after, header_before, "the header was rewrapped");
    assert_eq!(
        getfattr(&m.p("kb/f"), KEY_ID).ok().stdout,
        k2,
        "getfattr shows kb's key"
    );
    assert_eq!(xattr_str(&m.p("kb/f"), KEY_VERSION), "1");
    assert_eq!(
        xattr_str(&m.p("kb/f"), OBJECT_ID),
        oid,
        "object id unchanged"
    );
    assert_bytes_eq(&read(&m.p("kb/f")), &data, "content after the rename");

    // A directory with objects moves too (mv), each one rewrapped.
    fs::create_dir_all(m.p("a/dir/sub")).unwrap();
    let d1 = write_pattern(&m.p("a/dir/x"), 2, 100);
    let d2 = write_pattern(&m.p("a/dir/sub/y"), 3, cs + 1);
    let bx = read(&m.backing_path("a", "dir/x"));
    m.sh("mv \"$M/a/dir\" \"$M/kb/dir\"").ok();
    assert_eq!(xattr_str(&m.p("kb/dir/x"), KEY_ID), k2);
    assert_eq!(xattr_str(&m.p("kb/dir/sub/y"), KEY_ID), k2);
    assert_bytes_eq(
        &read(&m.backing_path("kb", "dir/x")),
        &bx,
        "backing bytes of dir/x",
    );
    // And back to the default-key bucket.
    fs::rename(m.p("kb/dir/x"), m.p("a/x")).unwrap();
    assert_eq!(xattr_str(&m.p("a/x"), KEY_ID), default);

    m.remount();
    assert_bytes_eq(&read(&m.p("kb/f")), &data, "after remount");
    assert_bytes_eq(&read(&m.p("a/x")), &d1, "a/x after remount");
    assert_bytes_eq(
        &read(&m.p("kb/dir/sub/y")),
        &d2,
        "kb/dir/sub/y after remount",
    );
    assert_eq!(xattr_str(&m.p("kb/f"), KEY_ID), k2);
    // A hard-linked object cannot move (EXDEV), and mv falls back to copy + delete.
    fs::write(m.p("a/linked"), b"linked data").unwrap();
    fs::hard_link(m.p("a/linked"), m.p("a/linked2")).unwrap();
    assert_errno(
        fs::rename(m.p("a/linked"), m.p("kb/linked")),
        libc::EXDEV,
        "rename of a hard-linked object across buckets",
    );
    m.sh("mv \"$M/a/linked\" \"$M/kb/linked\"").ok();
    assert_eq!(read(&m.p("kb/linked")), b"linked data");
    assert_eq!(xattr_str(&m.p("kb/linked"), KEY_ID), k2);
    assert_eq!(read(&m.p("a/linked2")), b"linked data");
}

#[test]
fn read_only_envelopefs_xattrs() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let f = m.p("b/f");
    fs::write(&f, b"content").unwrap();
    let default = m.key_id("default");
    assert_eq!(getfattr(&f, KEY_ID).ok().stdout, default);
    assert_eq!(getfattr(&f, KEY_VERSION).ok().stdout, "1");
    assert_eq!(getfattr(&f, ENCRYPTION).ok().stdout, "master");
    let oid = getfattr(&f, OBJECT_ID).ok().stdout;
    assert_eq!(oid.len(), 32, "object id is 32 hex digits: {oid}");
    assert!(oid.chars().all(|c| c.is_ascii_hexdigit()));
    // Readable by name, not listed: tools that copy every listed xattr (rsync -X, tar
    // --xattrs, cp -a) must not carry them to other files or try to remove them here.
    let list = xattr_list(&f).unwrap();
    for n in [KEY_ID, KEY_VERSION, OBJECT_ID, ENCRYPTION] {
        assert!(
            !list.contains(&n.to_string()),
            "{n} is not listed: {list:?}"
        );
    }
    assert!(
        !list.contains(&HEADER.to_string()),
        "header never listed: {list:?}"
    );
    assert_errno(
        xattr_get(&f, HEADER),
        libc::ENODATA,
        "the header is not readable through the mount",
    );
    let dump = m.sh("getfattr -d -m - \"$M/b/f\"").ok().stdout;
    assert!(
        !dump.contains("header"),
        "getfattr -d -m - never shows the header: {dump}"
    );
    for n in [
        KEY_ID,
        KEY_VERSION,
        OBJECT_ID,
        ENCRYPTION,
        HEADER,
        "user.envelopefs.other",
    ] {
        assert_errno(
            xattr_set(&f, n, b"x", 0),
            libc::EPERM,
            &format!("setxattr {n}"),
        );
        assert_errno(
            xattr_remove(&f, n),
            libc::EPERM,
            &format!("removexattr {n}"),
        );
    }
    m.sh("setfattr -n user.envelopefs.key-id -v x \"$M/b/f\"")
        .fails();
    // Unchanged by the refused attempts.
    assert_eq!(xattr_str(&f, KEY_ID), default);
    assert_eq!(xattr_str(&f, OBJECT_ID), oid);
    assert_eq!(read(&f), b"content");
    // Other user xattrs are still free.
    xattr_set(&f, "user.envelopefsish", b"ok", 0).unwrap();
    assert_eq!(xattr_get(&f, "user.envelopefsish").unwrap(), b"ok");
}

#[test]
fn setfattr_reencrypt_after_rotate_bumps_the_key_version() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let data = write_pattern(&m.p("b/f"), 5, 50_000);
    let default = m.key_id("default");
    assert_eq!(xattr_str(&m.p("b/f"), KEY_VERSION), "1");
    let rotated = m.ctl("key rotate default").ok();
    assert_eq!(rotated["current_version"], 2, "rotate result: {rotated}");
    // Still version 1 until re-encrypted; new objects get version 2.
    assert_eq!(xattr_str(&m.p("b/f"), KEY_VERSION), "1");
    fs::write(m.p("b/new"), b"n").unwrap();
    assert_eq!(
        xattr_str(&m.p("b/new"), KEY_VERSION),
        "2",
        "new objects use the current version"
    );
    let before = read(&m.backing_path("b", "f"));
    m.sh("setfattr -n user.envelopefs.reencrypt -v latest \"$M/b/f\"")
        .ok();
    assert_eq!(
        getfattr(&m.p("b/f"), KEY_VERSION).ok().stdout,
        "2",
        "key-version after reencrypt"
    );
    assert_eq!(xattr_str(&m.p("b/f"), KEY_ID), default);
    assert_bytes_eq(
        &read(&m.backing_path("b", "f")),
        &before,
        "backing content bytes after reencrypt",
    );
    assert_bytes_eq(&read(&m.p("b/f")), &data, "content after reencrypt");
    // Idempotent.
    m.sh("setfattr -n user.envelopefs.reencrypt -v latest \"$M/b/f\"")
        .ok();
    assert_eq!(xattr_str(&m.p("b/f"), KEY_VERSION), "2");
    // To another key by id.
    let k2 = m.ctl("key create --alias k2").ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    xattr_set(&m.p("b/f"), "user.envelopefs.reencrypt", k2.as_bytes(), 0)
        .expect("reencrypt to a key id");
    assert_eq!(xattr_str(&m.p("b/f"), KEY_ID), k2);
    assert_eq!(xattr_str(&m.p("b/f"), KEY_VERSION), "1");
    // A missing key is ENOKEY.
    assert_errno(
        xattr_set(&m.p("b/f"), "user.envelopefs.reencrypt", b"no-such-key", 0),
        libc::ENOKEY,
        "reencrypt to a missing key",
    );
    // While the file is open, a rewrap does not disturb it.
    let h = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("b/f"))
        .unwrap();
    m.sh("setfattr -n user.envelopefs.reencrypt -v latest \"$M/b/f\"")
        .ok();
    h.write_all_at(b"WRITTEN", 10).unwrap();
    let mut back = [0u8; 7];
    h.read_exact_at(&mut back, 10).unwrap();
    assert_eq!(&back, b"WRITTEN");
    drop(h);
    m.remount();
    let mut want = data.clone();
    want[10..17].copy_from_slice(b"WRITTEN");
    assert_bytes_eq(&read(&m.p("b/f")), &want, "after remount");
    assert_eq!(
        xattr_str(&m.p("b/f"), KEY_ID),
        default,
        "back under the bucket's latest key"
    );
    assert_eq!(xattr_str(&m.p("b/f"), KEY_VERSION), "2");
}

fn flip_byte(path: &std::path::Path, off: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, off).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn tampered_chunk_is_eio_for_that_chunk_only() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let cs = m.chunk_size();
    let stride = cs + 28;
    let len = 2 * cs + cs / 2;
    let data = write_pattern(&m.p("b/f"), 11, len as usize);
    let other = write_pattern(&m.p("b/other"), 12, len as usize);
    let oid = xattr_str(&m.p("b/f"), OBJECT_ID);
    m.unmount();
    // Chunk 2 starts at 24 + 2 * (cs + 28); its ciphertext after the 12-byte nonce.
    flip_byte(&m.backing_path("b", "f"), 24 + 2 * stride + 12 + 100);
    m.mount();
    let p = m.p("b/f");
    assert_eq!(fs::metadata(&p).unwrap().len(), len, "stat still works");
    // Chunk 0 first (the kernel may read ahead into chunk 2).
    let c0 = read_range(&p, 0, cs as usize).expect("chunk 0 of a file with a bad chunk 2");
    assert_bytes_eq(&c0, &data[..cs as usize], "chunk 0");
    let c1 = read_range(&p, cs, cs as usize).expect("chunk 1");
    assert_bytes_eq(&c1, &data[cs as usize..2 * cs as usize], "chunk 1");
    assert_errno(
        read_range(&p, 2 * cs, 10),
        libc::EIO,
        "read of the tampered chunk 2",
    );
    assert_errno(
        read_range(&p, 2 * cs + 200, 10),
        libc::EIO,
        "read inside the tampered chunk 2 (again)",
    );
    assert_errno(fs::read(&p), libc::EIO, "reading the whole file");
    assert_eq!(
        fs::metadata(&p).unwrap().len(),
        len,
        "size unchanged by failed reads"
    );
    // The other way round, with a cold cache.
    drop_caches();
    assert_errno(
        read_range(&p, 2 * cs + 5, 100),
        libc::EIO,
        "chunk 2 first, cold cache",
    );
    let c0 = read_range(&p, 0, 100).expect("chunk 0 after a failed read of chunk 2");
    assert_bytes_eq(&c0, &data[..100], "chunk 0 after the failure");
    let c1 = read_range(&p, cs + 7, 50).expect("chunk 1 after a failed read of chunk 2");
    assert_bytes_eq(
        &c1,
        &data[(cs + 7) as usize..(cs + 57) as usize],
        "chunk 1 after the failure",
    );
    assert_eq!(
        fs::metadata(&p).unwrap().len(),
        len,
        "size unchanged by failed reads"
    );
    m.sh("cat \"$M/b/f\" > /dev/null").fails();
    // Other objects are not affected.
    assert_bytes_eq(&read(&m.p("b/other")), &other, "an untouched object");
    // The failure is logged with the object and the chunk.
    let log = m.log();
    assert!(
        log.lines()
            .any(|l| (l.contains("b/f") || l.contains(&oid)) && l.contains("chunk 2")),
        "mount.log names the object (path or id {oid}) and the chunk:\n{log}"
    );
}

#[test]
fn tampering_while_mounted_swapped_chunks_and_truncation_are_errors() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let cs = m.chunk_size();
    let stride = cs + 28;
    let len = 2 * cs + 100;
    for n in ["t", "swap", "cut"] {
        write_pattern(&m.p(&format!("b/{n}")), 1, len as usize);
    }
    let good = read(&m.p("b/t"));
    settle();
    // In place, while mounted: chunk 0 of "t".
    flip_byte(&m.backing_path("b", "t"), 24 + 12 + 5);
    drop_caches();
    assert_errno(
        read_range(&m.p("b/t"), 0, 10),
        libc::EIO,
        "tampered chunk 0 while mounted",
    );
    let c1 = read_range(&m.p("b/t"), cs, 10).expect("chunk 1 of t");
    assert_eq!(c1, &good[cs as usize..cs as usize + 10]);
    // Swap chunks 0 and 1 of "swap" (the AAD binds the index).
    m.unmount();
    let sp = m.backing_path("b", "swap");
    let mut b = read(&sp);
    let (c0, c1) = (
        24..24 + stride as usize,
        24 + stride as usize..24 + 2 * stride as usize,
    );
    let first: Vec<u8> = b[c0.clone()].to_vec();
    let second: Vec<u8> = b[c1.clone()].to_vec();
    b[c0].copy_from_slice(&second);
    b[c1].copy_from_slice(&first);
    fs::write(&sp, &b).unwrap();
    // Cut "cut" at a chunk boundary (drop its final chunk).
    let cp = m.backing_path("b", "cut");
    OpenOptions::new()
        .write(true)
        .open(&cp)
        .unwrap()
        .set_len(24 + 2 * stride)
        .unwrap();
    m.mount();
    assert_errno(
        read_range(&m.p("b/swap"), 0, 10),
        libc::EIO,
        "swapped chunk 0",
    );
    assert_errno(
        read_range(&m.p("b/swap"), cs, 10),
        libc::EIO,
        "swapped chunk 1",
    );
    let e = errno_of(
        fs::read(m.p("b/cut")),
        "reading an object cut at a chunk boundary",
    );
    assert_eq!(errno_name(e), "EIO", "an object cut at a chunk boundary");
}

#[test]
fn corrupt_or_missing_header_is_eio_on_open() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    for n in ["garbage", "missing", "foreign", "ok"] {
        fs::write(m.p(&format!("b/{n}")), format!("object {n}")).unwrap();
    }
    settle();
    // Garbage with setfattr, as the brief of the test says.
    let gp = m.backing_path("b", "garbage");
    run_cmd(
        std::process::Command::new("setfattr")
            .args([
                "-n",
                HEADER,
                "-v",
                "0x00112233445566778899aabbccddeeff00112233",
            ])
            .arg(&gp),
        Duration::from_secs(30),
    )
    .ok();
    xattr_remove(&m.backing_path("b", "missing"), HEADER).unwrap();
    // Another object's (valid) header: bound to its object id, so it must not unwrap.
    let okh = xattr_get(&m.backing_path("b", "ok"), HEADER).unwrap();
    xattr_set(&m.backing_path("b", "foreign"), HEADER, &okh, 0).unwrap();
    settle();
    for n in ["garbage", "missing", "foreign"] {
        let p = m.p(&format!("b/{n}"));
        assert_errno(
            File::open(&p),
            libc::EIO,
            &format!("open with a {n} header"),
        );
        assert_errno(
            OpenOptions::new().write(true).open(&p),
            libc::EIO,
            &format!("open for writing with a {n} header"),
        );
        assert!(
            fs::metadata(&p).is_ok(),
            "stat of {n} still works (size from the backing file)"
        );
    }
    assert_eq!(read(&m.p("b/ok")), b"object ok");
    let log = m.log();
    assert!(
        log.contains("b/garbage"),
        "mount.log names the object with the bad header:\n{log}"
    );
}

#[test]
fn disabled_key_version_is_enokey_on_open() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    fs::write(m.p("b/old"), b"under version 1").unwrap();
    settle();
    m.ctl("key rotate default").ok();
    let r = m.ctl("key disable default --version 1").ok();
    let v1 = r["versions"]
        .as_array()
        .and_then(|v| v.iter().find(|x| x["version"] == 1))
        .cloned()
        .unwrap_or_default();
    assert_eq!(v1["state"], "DISABLED", "key get after disable: {r}");
    assert_errno(
        File::open(m.p("b/old")),
        libc::ENOKEY,
        "open of an object under a disabled version",
    );
    m.sh("cat \"$M/b/old\"").fails();
    assert!(fs::metadata(m.p("b/old")).is_ok(), "stat still works");
    // Rewrapping from a disabled version is refused too.
    assert_errno(
        xattr_set(&m.p("b/old"), "user.envelopefs.reencrypt", b"latest", 0),
        libc::ENOKEY,
        "reencrypt from a disabled version",
    );
    // Objects under version 2 are fine.
    fs::write(m.p("b/new"), b"under version 2").unwrap();
    assert_eq!(read(&m.p("b/new")), b"under version 2");
    // Enabled again: opens.
    m.ctl("key enable default --version 1").ok();
    assert_eq!(read(&m.p("b/old")), b"under version 1");
    // A disabled current version cannot wrap new objects.
    m.ctl("key disable default --version 2").ok();
    settle();
    assert_errno(
        File::create(m.p("b/newer")),
        libc::ENOKEY,
        "create under a disabled current version",
    );
    assert_errno(
        File::open(m.p("b/new")),
        libc::ENOKEY,
        "open of an object under disabled version 2",
    );
    m.ctl("key enable default --version 2").ok();
    assert_eq!(read(&m.p("b/new")), b"under version 2");
}

#[test]
fn an_open_file_keeps_working_across_a_cross_bucket_rename() {
    let mut m = TestMount::new();
    m.ctl("key create --alias k2").ok();
    m.ctl("bucket create --name kb --kms-key-id k2").ok();
    fs::create_dir(m.p("a")).unwrap();
    let k2 = m.key_id("k2");
    let cs = m.chunk_size() as usize;
    let mut model = pattern(8, cs + 500);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.p("a/open"))
        .unwrap();
    f.write_all_at(&model, 0).unwrap();
    fs::rename(m.p("a/open"), m.p("kb/open")).expect("rename of an open file across buckets");
    assert_eq!(xattr_str(&m.p("kb/open"), KEY_ID), k2);
    // Writes and reads through the old descriptor continue, in the moved object.
    f.write_all_at(b"MID", 100).unwrap();
    model[100..103].copy_from_slice(b"MID");
    f.write_all_at(b"END", model.len() as u64).unwrap();
    model.extend_from_slice(b"END");
    let mut back = vec![0u8; model.len()];
    f.read_exact_at(&mut back, 0).unwrap();
    assert_bytes_eq(&back, &model, "read through the old descriptor");
    f.sync_all().expect("fsync through the old descriptor");
    drop(f);
    settle();
    assert_bytes_eq(&read(&m.p("kb/open")), &model, "read by the new name");
    assert!(!m.backing_path("a", "open").exists());
    m.remount();
    assert_bytes_eq(&read(&m.p("kb/open")), &model, "after remount");
    assert_eq!(xattr_str(&m.p("kb/open"), KEY_ID), k2);
}

fn renameat2(from: &std::path::Path, to: &std::path::Path, flags: u32) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &std::path::Path| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
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

#[test]
fn cross_bucket_rename_flags_overwrite_and_rollback() {
    let m = TestMount::new();
    m.ctl("key create --alias k2").ok();
    m.ctl("bucket create --name kb --kms-key-id k2").ok();
    fs::create_dir(m.p("a")).unwrap();
    let default = m.key_id("default");
    let k2 = m.key_id("k2");
    fs::write(m.p("a/f"), b"from a").unwrap();
    fs::write(m.p("kb/f"), b"already in kb").unwrap();
    // NOREPLACE onto an existing name: EEXIST, and the source is untouched (rolled back).
    assert_errno(
        renameat2(&m.p("a/f"), &m.p("kb/f"), libc::RENAME_NOREPLACE),
        libc::EEXIST,
        "RENAME_NOREPLACE across buckets onto an existing name",
    );
    assert_eq!(read(&m.p("a/f")), b"from a");
    assert_eq!(
        xattr_str(&m.p("a/f"), KEY_ID),
        default,
        "key of the source after a refused rename"
    );
    assert_eq!(read(&m.p("kb/f")), b"already in kb");
    // EXCHANGE across buckets: a clean EINVAL (or it works and both are rewrapped).
    match renameat2(&m.p("a/f"), &m.p("kb/f"), libc::RENAME_EXCHANGE) {
        Err(e) => {
            assert_eq!(
                e.raw_os_error(),
                Some(libc::EINVAL),
                "RENAME_EXCHANGE across buckets: {e}"
            );
            assert_eq!(read(&m.p("a/f")), b"from a");
            assert_eq!(read(&m.p("kb/f")), b"already in kb");
            assert_eq!(xattr_str(&m.p("a/f"), KEY_ID), default);
            assert_eq!(xattr_str(&m.p("kb/f"), KEY_ID), k2);
        }
        Ok(()) => {
            assert_eq!(read(&m.p("a/f")), b"already in kb");
            assert_eq!(read(&m.p("kb/f")), b"from a");
            assert_eq!(xattr_str(&m.p("a/f"), KEY_ID), default);
            assert_eq!(xattr_str(&m.p("kb/f"), KEY_ID), k2);
            renameat2(&m.p("a/f"), &m.p("kb/f"), libc::RENAME_EXCHANGE).unwrap();
        }
    }
    // Plain rename overwrites across buckets.
    fs::rename(m.p("a/f"), m.p("kb/f")).unwrap();
    assert_eq!(read(&m.p("kb/f")), b"from a");
    assert_eq!(xattr_str(&m.p("kb/f"), KEY_ID), k2);
    assert_errno(
        fs::metadata(m.p("a/f")),
        libc::ENOENT,
        "source after the rename",
    );
    // A file renamed to a bucket whose key version is disabled cannot be wrapped there.
    fs::write(m.p("a/g"), b"g").unwrap();
    m.ctl("key disable k2").ok();
    let e = errno_of(
        fs::rename(m.p("a/g"), m.p("kb/g")),
        "rename into a bucket with a disabled key",
    );
    assert_eq!(errno_name(e), "ENOKEY");
    assert_eq!(
        read(&m.p("a/g")),
        b"g",
        "source intact after the refused rename"
    );
    assert_eq!(xattr_str(&m.p("a/g"), KEY_ID), default);
}
