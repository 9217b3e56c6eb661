//! POSIX behaviour of a mounted store, with std::fs, libc system calls and ordinary tools.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn last_err<T>(r: i32, v: T) -> std::io::Result<T> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(v)
    }
}

fn mkfifo(p: &Path) -> std::io::Result<()> {
    // SAFETY: a valid C string.
    let r = unsafe { libc::mkfifo(c(p).as_ptr(), 0o644) };
    last_err(r, ())
}

fn mknod_reg(p: &Path) -> std::io::Result<()> {
    // SAFETY: a valid C string.
    let r = unsafe { libc::mknod(c(p).as_ptr(), libc::S_IFREG | 0o644, 0) };
    last_err(r, ())
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
    last_err(r as i32, ())
}

fn fallocate(f: &File, mode: i32, off: i64, len: i64) -> std::io::Result<()> {
    // SAFETY: a valid open descriptor.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, off, len) };
    last_err(r, ())
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn root_lists_buckets_mkdir_makes_one_rmdir_removes_empty_one() {
    let mut m = TestMount::new();
    assert_eq!(names(&m.mnt), vec![".envelopefs"], "a new store's root");
    fs::create_dir(m.p("b1")).expect("mkdir at the root makes a bucket");
    fs::create_dir(m.p("b2")).expect("mkdir b2");
    assert_eq!(names(&m.mnt), vec![".envelopefs", "b1", "b2"]);
    assert!(fs::metadata(m.p("b1")).unwrap().is_dir());
    // The backing directory carries the bucket record.
    let rec = getfattr(&m.store.join("b1"), "user.envelopefs.bucket").ok();
    assert!(!rec.stdout.is_empty(), "bucket record xattr is empty");
    // mkdir of an existing bucket
    assert_errno(
        fs::create_dir(m.p("b1")),
        libc::EEXIST,
        "mkdir of an existing bucket",
    );

    fs::write(m.p("b1/f"), b"x").unwrap();
    assert_errno(
        fs::remove_dir(m.p("b1")),
        libc::ENOTEMPTY,
        "rmdir of a non-empty bucket",
    );
    fs::remove_dir(m.p("b2")).expect("rmdir of an empty bucket");
    assert_eq!(names(&m.mnt), vec![".envelopefs", "b1"]);
    assert!(
        !m.store.join("b2").exists(),
        "the backing dir of b2 is gone"
    );
    assert_errno(
        fs::metadata(m.p("b2")),
        libc::ENOENT,
        "stat of a removed bucket",
    );

    // The bucket made by mkdir is a real bucket for the CLI (after unmount).
    m.unmount();
    let list = m.cli_store(&["bucket", "list"]).ok().json();
    let names: Vec<&str> = list
        .as_array()
        .expect("bucket list is an array")
        .iter()
        .map(|b| b["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, vec!["b1"], "bucket list after unmount: {list}");
    m.mount();
    assert_eq!(read(&m.p("b1/f")), b"x");
}

#[test]
fn root_refuses_files_symlinks_and_nodes() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    fs::write(m.p("b/f"), b"data").unwrap();
    assert_errno(
        File::create(m.p("file")),
        libc::EPERM,
        "create a regular file at the root",
    );
    assert_errno(
        mknod_reg(&m.p("node")),
        libc::EPERM,
        "mknod S_IFREG at the root",
    );
    assert_errno(
        std::os::unix::fs::symlink("b", m.p("link")),
        libc::EPERM,
        "symlink at the root",
    );
    assert_errno(mkfifo(&m.p("fifo")), libc::EPERM, "mkfifo at the root");
    assert_errno(
        fs::hard_link(m.p("b/f"), m.p("hl")),
        libc::EPERM,
        "hard link at the root",
    );
    assert_errno(
        fs::rename(m.p("b/f"), m.p("f")),
        libc::EPERM,
        "rename an object to the root",
    );
    assert_eq!(names(&m.mnt), vec![".envelopefs", "b"]);
    assert_eq!(
        names(&m.store),
        vec![".envelopefs", "b"],
        "nothing new in the store"
    );
    // The tools say the same.
    m.sh("touch \"$M/t\"").fails();
    m.sh("ln -s b \"$M/l\"").fails();
    m.sh("mkfifo \"$M/p\"").fails();
}

#[test]
fn control_dir_cannot_be_removed_renamed_or_created_over() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let ctl = m.p(".envelopefs");
    assert!(fs::metadata(&ctl).unwrap().is_dir());
    assert_errno(fs::remove_dir(&ctl), libc::EPERM, "rmdir .envelopefs");
    assert_errno(
        fs::rename(&ctl, m.p("other")),
        libc::EPERM,
        "rename .envelopefs",
    );
    assert_errno(
        fs::rename(m.p("b"), &ctl),
        libc::EPERM,
        "rename a bucket onto .envelopefs",
    );
    assert_errno(fs::create_dir(&ctl), libc::EEXIST, "mkdir .envelopefs");
    let e = errno_of(
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&ctl),
        "open(O_CREAT) .envelopefs",
    );
    assert!(
        [libc::EISDIR, libc::EEXIST, libc::EPERM].contains(&e),
        "open(O_CREAT) of .envelopefs: {}",
        errno_name(e)
    );
    let e = errno_of(
        std::os::unix::fs::symlink("b", &ctl),
        "symlink over .envelopefs",
    );
    assert!(
        [libc::EEXIST, libc::EPERM].contains(&e),
        "symlink .envelopefs: {}",
        errno_name(e)
    );
    assert_errno(fs::remove_file(&ctl), libc::EISDIR, "unlink .envelopefs");
    m.sh("rm -rf \"$M/.envelopefs\"").fails();
    // Still there and working.
    assert_eq!(names(&ctl), vec!["buckets", "ctl", "keys", "work-requests"]);
    assert_eq!(names(&m.p(".envelopefs/buckets")), vec!["b"]);
    assert!(m.store.join("b").exists());
}

#[test]
fn open_flags_excl_trunc_append() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let p = m.p("b/f");
    // O_CREAT|O_EXCL
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .unwrap();
    f.write_all(b"hello").unwrap();
    drop(f);
    assert_errno(
        OpenOptions::new().write(true).create_new(true).open(&p),
        libc::EEXIST,
        "O_EXCL on an existing file",
    );
    assert_eq!(read(&p), b"hello");
    // O_TRUNC
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    assert_eq!(
        fs::metadata(&p).unwrap().len(),
        0,
        "size right after O_TRUNC"
    );
    f.write_all(b"xy").unwrap();
    drop(f);
    assert_eq!(read(&p), b"xy");
    // O_APPEND: two descriptors interleaving, and a seek does not matter.
    let mut a = OpenOptions::new().append(true).open(&p).unwrap();
    let mut b = OpenOptions::new().append(true).open(&p).unwrap();
    a.write_all(b"1").unwrap();
    b.write_all(b"22").unwrap();
    a.seek(SeekFrom::Start(0)).unwrap();
    a.write_all(b"333").unwrap();
    b.write_all(b"4444").unwrap();
    drop((a, b));
    assert_eq!(read(&p), b"xy1223334444");
    // O_APPEND across a chunk boundary.
    let cs = m.chunk_size() as usize;
    let mut model = read(&p);
    let mut a = OpenOptions::new().append(true).open(&p).unwrap();
    for i in 0..5u64 {
        let piece = pattern(i, cs / 2 + 7);
        a.write_all(&piece).unwrap();
        model.extend_from_slice(&piece);
    }
    drop(a);
    assert_bytes_eq(&read(&p), &model, "appends across chunks");
    // O_RDWR read-modify-write in the middle.
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    f.write_all_at(b"MIDDLE", cs as u64 - 3).unwrap();
    model[cs - 3..cs + 3].copy_from_slice(b"MIDDLE");
    let mut back = vec![0u8; 6];
    f.read_exact_at(&mut back, cs as u64 - 3).unwrap();
    assert_eq!(&back, b"MIDDLE");
    drop(f);
    assert_bytes_eq(&read(&p), &model, "after a write across a chunk boundary");
}

#[test]
fn sparse_write_at_10_mib_reads_zeros_before_it() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let p = m.p("b/sparse");
    let off = 10u64 << 20;
    let f = File::create(&p).unwrap();
    f.write_all_at(b"tail!", off).unwrap();
    assert_eq!(
        f.metadata().unwrap().len(),
        off + 5,
        "fstat size after the sparse write"
    );
    f.sync_all().unwrap();
    drop(f);
    let check = |m: &TestMount, when: &str| {
        assert_eq!(fs::metadata(&p).unwrap().len(), off + 5, "stat size {when}");
        let data = read(&p);
        assert_eq!(data.len() as u64, off + 5, "{when}");
        if let Some(i) = data[..off as usize].iter().position(|b| *b != 0) {
            panic!(
                "{when}: byte {i} before the sparse write is {:#x}, not 0",
                data[i]
            );
        }
        assert_eq!(&data[off as usize..], b"tail!", "{when}");
        assert_eq!(
            fs::metadata(m.backing_path("b", "sparse")).unwrap().len(),
            m.expected_backing_len(off + 5),
            "backing size {when}"
        );
    };
    check(&m, "before remount");
    m.remount();
    check(&m, "after remount");
    // A hole in the middle of a file with data on both sides.
    let q = m.p("b/holes");
    let f = File::create(&q).unwrap();
    f.write_all_at(b"head", 0).unwrap();
    f.write_all_at(b"far", 300_000).unwrap();
    drop(f);
    let d = read(&q);
    assert_eq!(d.len(), 300_003);
    assert_eq!(&d[..4], b"head");
    assert!(d[4..300_000].iter().all(|b| *b == 0), "hole reads zeros");
    assert_eq!(&d[300_000..], b"far");
}

#[test]
fn truncate_up_and_down() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let cs = m.chunk_size();
    let p = m.p("b/t");
    let data = write_pattern(&p, 7, (3 * cs + 100) as usize);
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    // Down into the middle of chunk 1.
    f.set_len(cs + 5).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), cs + 5);
    assert_bytes_eq(&read(&p), &data[..(cs + 5) as usize], "after truncate down");
    // Up: zeros after the old end.
    f.set_len(3 * cs).unwrap();
    let d = read(&p);
    assert_eq!(d.len() as u64, 3 * cs);
    assert_bytes_eq(
        &d[..(cs + 5) as usize],
        &data[..(cs + 5) as usize],
        "prefix after truncate up",
    );
    assert!(
        d[(cs + 5) as usize..].iter().all(|b| *b == 0),
        "truncate up reads zeros"
    );
    // Down to a chunk boundary exactly, then write past it.
    f.set_len(cs).unwrap();
    assert_bytes_eq(
        &read(&p),
        &data[..cs as usize],
        "after truncate to a chunk boundary",
    );
    f.write_all_at(b"Z", cs + 10).unwrap();
    let d = read(&p);
    assert_eq!(d.len() as u64, cs + 11);
    assert!(d[cs as usize..(cs + 10) as usize].iter().all(|b| *b == 0));
    assert_eq!(d[(cs + 10) as usize], b'Z');
    drop(f);
    // Through the path (the file is closed): truncate(1) tool and set_len on a new fd.
    m.sh("truncate -s 3 \"$M/b/t\"").ok();
    assert_eq!(read(&p), &data[..3]);
    m.sh("truncate -s 20000 \"$M/b/t\"").ok();
    assert_eq!(fs::metadata(&p).unwrap().len(), 20000);
    m.remount();
    let d = read(&p);
    assert_eq!(d.len(), 20000, "size after remount");
    assert_eq!(&d[..3], &data[..3]);
    assert!(d[3..].iter().all(|b| *b == 0));
    OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(0)
        .unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 0);
    assert_eq!(read(&p), b"");
    assert_eq!(
        fs::metadata(m.backing_path("b", "t")).unwrap().len(),
        m.expected_backing_len(0),
        "backing size of an empty object"
    );
}

#[test]
fn fallocate_mode_0_extends_and_punch_hole_is_eopnotsupp() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let p = m.p("b/fa");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    fallocate(&f, 0, 0, 1 << 20).expect("fallocate mode 0");
    assert_eq!(
        fs::metadata(&p).unwrap().len(),
        1 << 20,
        "fallocate extends"
    );
    let d = read(&p);
    assert!(d.iter().all(|b| *b == 0), "allocated range reads zeros");
    f.write_all_at(b"abc", 10).unwrap();
    fallocate(&f, 0, 0, 100).expect("fallocate inside the file");
    assert_eq!(
        fs::metadata(&p).unwrap().len(),
        1 << 20,
        "fallocate inside keeps size"
    );
    fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, 0, 4 << 20).expect("fallocate KEEP_SIZE");
    assert_eq!(
        fs::metadata(&p).unwrap().len(),
        1 << 20,
        "KEEP_SIZE keeps size"
    );
    assert_errno(
        fallocate(
            &f,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            4096,
        ),
        libc::EOPNOTSUPP,
        "fallocate punch hole",
    );
    let d = read(&p);
    assert_eq!(&d[10..13], b"abc", "data intact after a refused punch hole");
    assert_eq!(d.len(), 1 << 20);
    // posix_fallocate (the tool) also works.
    m.sh("fallocate -l 2097152 \"$M/b/fa\"").ok();
    assert_eq!(fs::metadata(&p).unwrap().len(), 2 << 20);
}

#[test]
fn fsync_and_fdatasync_reach_the_backing_file() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let p = m.p("b/s");
    let mut f = File::create(&p).unwrap();
    let data = pattern(3, 100_000);
    f.write_all(&data).unwrap();
    f.sync_all().expect("fsync");
    assert_eq!(
        fs::metadata(m.backing_path("b", "s")).unwrap().len(),
        m.expected_backing_len(100_000),
        "backing size after fsync (data reached the store)"
    );
    f.write_all(b"more").unwrap();
    f.sync_data().expect("fdatasync");
    assert_eq!(
        fs::metadata(m.backing_path("b", "s")).unwrap().len(),
        m.expected_backing_len(100_004),
        "backing size after fdatasync"
    );
    // The backing file never holds plaintext.
    let backing = read(&m.backing_path("b", "s"));
    assert!(
        !backing.windows(32).any(|w| w == &data[5000..5032]),
        "plaintext found in the backing file"
    );
    drop(f);
    // fsync of a directory works too.
    File::open(m.p("b"))
        .unwrap()
        .sync_all()
        .expect("fsync of a directory");
}

#[test]
fn directories_unlink_and_rename_with_overwrite() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    fs::create_dir_all(m.p("b/a/b/c")).unwrap();
    fs::write(m.p("b/a/b/c/f"), b"deep").unwrap();
    assert_errno(
        fs::remove_dir(m.p("b/a/b")),
        libc::ENOTEMPTY,
        "rmdir of a non-empty dir",
    );
    assert_errno(fs::create_dir(m.p("b/a")), libc::EEXIST, "mkdir existing");
    assert_errno(
        fs::remove_dir(m.p("b/a/b/c/f")),
        libc::ENOTDIR,
        "rmdir of a file",
    );
    assert_errno(fs::remove_file(m.p("b/a")), libc::EISDIR, "unlink of a dir");
    // rename over an existing file replaces it
    fs::write(m.p("b/x"), b"xxx").unwrap();
    fs::write(m.p("b/y"), b"yyyyyy").unwrap();
    fs::rename(m.p("b/x"), m.p("b/y")).unwrap();
    assert_errno(
        fs::metadata(m.p("b/x")),
        libc::ENOENT,
        "old name after rename",
    );
    assert_eq!(read(&m.p("b/y")), b"xxx");
    assert_eq!(fs::metadata(m.p("b/y")).unwrap().len(), 3);
    // rename into a nested dir, and of a directory
    fs::rename(m.p("b/y"), m.p("b/a/b/y")).unwrap();
    fs::rename(m.p("b/a/b"), m.p("b/moved")).unwrap();
    assert_eq!(read(&m.p("b/moved/y")), b"xxx");
    assert_eq!(read(&m.p("b/moved/c/f")), b"deep");
    // rename a dir over an empty dir; not over a non-empty one
    fs::create_dir(m.p("b/empty")).unwrap();
    fs::create_dir(m.p("b/full")).unwrap();
    fs::write(m.p("b/full/z"), b"z").unwrap();
    assert_errno(
        fs::rename(m.p("b/moved"), m.p("b/full")),
        libc::ENOTEMPTY,
        "rename over a non-empty dir",
    );
    fs::rename(m.p("b/moved"), m.p("b/empty")).unwrap();
    assert_eq!(read(&m.p("b/empty/c/f")), b"deep");
    // the data survives a remount under the new names
    m.remount();
    assert_eq!(read(&m.p("b/empty/y")), b"xxx");
    assert_eq!(read(&m.p("b/empty/c/f")), b"deep");
    fs::remove_file(m.p("b/empty/c/f")).unwrap();
    fs::remove_dir(m.p("b/empty/c")).unwrap();
    assert_eq!(names(&m.p("b/empty")), vec!["y"]);
    fs::remove_dir_all(m.p("b/empty")).unwrap();
    fs::remove_dir_all(m.p("b/full")).unwrap();
    fs::remove_dir_all(m.p("b/a")).unwrap();
    assert!(names(&m.p("b")).is_empty());
    assert!(
        names(&m.store.join("b")).is_empty(),
        "store bucket dir is empty"
    );
}

#[test]
fn rename_noreplace_and_exchange() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    fs::write(m.p("b/one"), b"111").unwrap();
    fs::write(m.p("b/two"), b"22222").unwrap();
    assert_errno(
        renameat2(&m.p("b/one"), &m.p("b/two"), libc::RENAME_NOREPLACE),
        libc::EEXIST,
        "RENAME_NOREPLACE onto an existing name",
    );
    assert_eq!(read(&m.p("b/one")), b"111");
    assert_eq!(read(&m.p("b/two")), b"22222");
    renameat2(&m.p("b/one"), &m.p("b/three"), libc::RENAME_NOREPLACE)
        .expect("RENAME_NOREPLACE to a new name");
    assert_eq!(read(&m.p("b/three")), b"111");
    renameat2(&m.p("b/three"), &m.p("b/two"), libc::RENAME_EXCHANGE).expect("RENAME_EXCHANGE");
    assert_eq!(read(&m.p("b/three")), b"22222");
    assert_eq!(read(&m.p("b/two")), b"111");
    assert_eq!(fs::metadata(m.p("b/three")).unwrap().len(), 5);
    assert_eq!(fs::metadata(m.p("b/two")).unwrap().len(), 3);
    // A file with a directory, in nested dirs.
    fs::create_dir(m.p("b/d")).unwrap();
    fs::write(m.p("b/d/in"), b"in").unwrap();
    renameat2(&m.p("b/d"), &m.p("b/two"), libc::RENAME_EXCHANGE).expect("exchange file and dir");
    assert_eq!(read(&m.p("b/d")), b"111");
    assert_eq!(read(&m.p("b/two/in")), b"in");
    assert_errno(
        renameat2(&m.p("b/nope"), &m.p("b/two"), libc::RENAME_EXCHANGE),
        libc::ENOENT,
        "exchange with a missing name",
    );
    m.remount();
    assert_eq!(read(&m.p("b/three")), b"22222");
    assert_eq!(read(&m.p("b/d")), b"111");
    assert_eq!(read(&m.p("b/two/in")), b"in");
}

#[test]
fn hard_links_share_an_inode_and_do_not_cross_buckets() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    fs::create_dir(m.p("c")).unwrap();
    fs::create_dir(m.p("b/sub")).unwrap();
    fs::write(m.p("b/f"), b"linked").unwrap();
    fs::hard_link(m.p("b/f"), m.p("b/sub/g")).expect("link within a bucket");
    let a = fs::metadata(m.p("b/f")).unwrap();
    let b = fs::metadata(m.p("b/sub/g")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard links share the inode number");
    assert_eq!(a.nlink(), 2);
    assert_eq!(b.nlink(), 2);
    // A write through one name is seen through the other.
    OpenOptions::new()
        .append(true)
        .open(m.p("b/sub/g"))
        .unwrap()
        .write_all(b"+more")
        .unwrap();
    assert_eq!(read(&m.p("b/f")), b"linked+more");
    assert_eq!(fs::metadata(m.p("b/f")).unwrap().len(), 11);
    assert_errno(
        fs::hard_link(m.p("b/f"), m.p("c/f")),
        libc::EXDEV,
        "hard link across buckets",
    );
    let ino = a.ino();
    m.remount();
    assert_eq!(
        fs::metadata(m.p("b/f")).unwrap().ino(),
        ino,
        "inode numbers stable across mounts"
    );
    assert_eq!(fs::metadata(m.p("b/sub/g")).unwrap().ino(), ino);
    fs::remove_file(m.p("b/f")).unwrap();
    assert_eq!(fs::metadata(m.p("b/sub/g")).unwrap().nlink(), 1);
    assert_eq!(read(&m.p("b/sub/g")), b"linked+more");
    m.sh("ln \"$M/b/sub/g\" \"$M/b/h\" && cmp \"$M/b/sub/g\" \"$M/b/h\"")
        .ok();
}

#[test]
fn symlinks_and_fifos() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    fs::create_dir(m.p("b/d")).unwrap();
    fs::write(m.p("b/d/target"), b"pointed at").unwrap();
    std::os::unix::fs::symlink("d/target", m.p("b/rel")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/abs", m.p("b/dangling")).unwrap();
    assert_eq!(fs::read_link(m.p("b/rel")).unwrap(), Path::new("d/target"));
    assert_eq!(
        fs::read_link(m.p("b/dangling")).unwrap(),
        Path::new("/nonexistent/abs")
    );
    assert!(fs::symlink_metadata(m.p("b/rel"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::symlink_metadata(m.p("b/rel")).unwrap().len(),
        8,
        "symlink size is its target length"
    );
    assert_eq!(read(&m.p("b/rel")), b"pointed at");
    assert_errno(
        fs::metadata(m.p("b/dangling")),
        libc::ENOENT,
        "stat through a dangling link",
    );
    m.sh("ln -s d \"$M/b/dirlink\" && test -f \"$M/b/dirlink/target\"")
        .ok();
    // fifo, with the tool and with libc, and data through it
    m.sh("mkfifo \"$M/b/p1\"").ok();
    mkfifo(&m.p("b/p2")).unwrap();
    assert!(fs::metadata(m.p("b/p1")).unwrap().file_type().is_fifo());
    assert!(fs::metadata(m.p("b/p2")).unwrap().file_type().is_fifo());
    let path = m.p("b/p2");
    let writer = std::thread::spawn(move || {
        let mut w = OpenOptions::new().write(true).open(&path).unwrap();
        w.write_all(b"through the fifo").unwrap();
    });
    let mut got = String::new();
    File::open(m.p("b/p2"))
        .unwrap()
        .read_to_string(&mut got)
        .unwrap();
    writer.join().unwrap();
    assert_eq!(got, "through the fifo");
    m.remount();
    assert_eq!(fs::read_link(m.p("b/rel")).unwrap(), Path::new("d/target"));
    assert!(fs::metadata(m.p("b/p1")).unwrap().file_type().is_fifo());
    fs::remove_file(m.p("b/p1")).unwrap();
    fs::remove_file(m.p("b/rel")).unwrap();
    assert_eq!(
        read(&m.p("b/d/target")),
        b"pointed at",
        "unlink of a symlink keeps the target"
    );
}

#[test]
fn chmod_chown_utimens_with_nanoseconds() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let p = m.p("b/f");
    fs::write(&p, b"attrs").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);
    std::os::unix::fs::chown(&p, Some(1234), Some(5678)).expect("chown as root");
    let md = fs::metadata(&p).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    fs::set_permissions(&p, fs::Permissions::from_mode(0o4755)).unwrap();
    assert_eq!(
        fs::metadata(&p).unwrap().mode() & 0o7777,
        0o4755,
        "set-uid bit kept by chmod"
    );
    fs::set_permissions(m.p("b"), fs::Permissions::from_mode(0o711)).unwrap();
    assert_eq!(
        fs::metadata(m.p("b")).unwrap().mode() & 0o7777,
        0o711,
        "chmod of a bucket"
    );
    std::os::unix::fs::lchown(m.p("b"), Some(42), None).unwrap();
    assert_eq!(fs::metadata(m.p("b")).unwrap().uid(), 42);
    // utimensat with nanoseconds
    let times = [
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 123_456_789,
        },
        libc::timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 987_654_321,
        },
    ];
    // SAFETY: a valid C string and two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c(&p).as_ptr(), times.as_ptr(), 0) };
    assert_eq!(r, 0, "utimensat: {}", std::io::Error::last_os_error());
    let check = |m: &TestMount, when: &str| {
        let md = fs::metadata(m.p("b/f")).unwrap();
        assert_eq!(
            (md.atime(), md.atime_nsec()),
            (1_000_000_000, 123_456_789),
            "atime {when}"
        );
        assert_eq!(
            (md.mtime(), md.mtime_nsec()),
            (1_500_000_000, 987_654_321),
            "mtime {when}"
        );
        assert_eq!(md.mode() & 0o7777, 0o4755, "mode {when}");
        assert_eq!((md.uid(), md.gid()), (1234, 5678), "owner {when}");
    };
    check(&m, "after utimensat");
    // UTIME_OMIT for atime, UTIME_NOW for mtime.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    m.remount();
    check(&m, "after remount");
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
    ];
    // SAFETY: as above.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c(&p).as_ptr(), times.as_ptr(), 0) };
    assert_eq!(r, 0, "utimensat now: {}", std::io::Error::last_os_error());
    let md = fs::metadata(&p).unwrap();
    assert_eq!(
        (md.atime(), md.atime_nsec()),
        (1_000_000_000, 123_456_789),
        "UTIME_OMIT keeps atime"
    );
    assert!(md.mtime() >= before - 1, "UTIME_NOW sets mtime to now");
    // touch -d with the tool
    m.sh("touch -m -d '2001-02-03 04:05:06.5 UTC' \"$M/b/f\"")
        .ok();
    let md = fs::metadata(&p).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (981_173_106, 500_000_000));
}

#[test]
fn statfs_and_df() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and an out-struct.
    let r = unsafe { libc::statvfs(c(&m.p("b")).as_ptr(), &mut s) };
    assert_eq!(r, 0, "statvfs: {}", std::io::Error::last_os_error());
    assert!(
        s.f_bsize > 0 && s.f_blocks > 0,
        "statvfs numbers: bsize {} blocks {}",
        s.f_bsize,
        s.f_blocks
    );
    assert!(s.f_bavail <= s.f_blocks && s.f_bfree <= s.f_blocks);
    assert!(s.f_namemax >= 255, "namemax {}", s.f_namemax);
    let out = m.sh("df -P \"$M\"").ok();
    assert!(
        out.stdout.contains("envelopefs"),
        "df shows the envelopefs source: {}",
        out.stdout
    );
}

#[test]
fn user_xattrs_set_get_list_remove() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    fs::create_dir(m.p("b/dir")).unwrap();
    let f = m.p("b/f");
    fs::write(&f, b"x").unwrap();
    m.sh("setfattr -n user.color -v blue \"$M/b/f\"").ok();
    xattr_set(&f, "user.bin", &[0, 1, 2, 255], 0).unwrap();
    let big = pattern(9, 3000);
    xattr_set(&f, "user.big", &big, 0).unwrap();
    assert_eq!(getfattr(&f, "user.color").ok().stdout, "blue");
    assert_eq!(xattr_get(&f, "user.bin").unwrap(), vec![0, 1, 2, 255]);
    assert_eq!(xattr_get(&f, "user.big").unwrap(), big);
    let list = xattr_list(&f).unwrap();
    for n in ["user.color", "user.bin", "user.big"] {
        assert!(list.contains(&n.to_string()), "{n} listed: {list:?}");
    }
    assert!(
        !list.iter().any(|n| n == "user.envelopefs.header"),
        "header never listed: {list:?}"
    );
    assert_errno(
        xattr_set(&f, "user.color", b"red", libc::XATTR_CREATE),
        libc::EEXIST,
        "XATTR_CREATE on existing",
    );
    assert_errno(
        xattr_set(&f, "user.none", b"v", libc::XATTR_REPLACE),
        libc::ENODATA,
        "XATTR_REPLACE on missing",
    );
    xattr_set(&f, "user.color", b"red", libc::XATTR_REPLACE).unwrap();
    assert_eq!(xattr_get(&f, "user.color").unwrap(), b"red");
    // on directories too
    xattr_set(&m.p("b/dir"), "user.d", b"dv", 0).unwrap();
    assert_eq!(xattr_get(&m.p("b/dir"), "user.d").unwrap(), b"dv");
    // getfattr -d dumps them all
    let dump = m.sh("getfattr -d \"$M/b/f\"").ok();
    assert!(
        dump.stdout.contains("user.color=\"red\""),
        "getfattr -d: {}",
        dump.stdout
    );
    assert!(
        !dump.stdout.contains("user.envelopefs.header"),
        "getfattr -d: {}",
        dump.stdout
    );
    m.remount();
    assert_eq!(
        xattr_get(&f, "user.color").unwrap(),
        b"red",
        "xattr after remount"
    );
    xattr_remove(&f, "user.color").unwrap();
    assert_errno(
        xattr_get(&f, "user.color"),
        libc::ENODATA,
        "get removed xattr",
    );
    assert_errno(
        xattr_remove(&f, "user.color"),
        libc::ENODATA,
        "remove missing xattr",
    );
    m.sh("setfattr -x user.bin \"$M/b/f\"").ok();
    let list = xattr_list(&f).unwrap();
    assert!(
        !list.iter().any(|n| n == "user.bin" || n == "user.color"),
        "{list:?}"
    );
    assert_eq!(read(&f), b"x", "object intact after xattr changes");
}

#[test]
fn stat_and_ls_show_plaintext_sizes() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let cs = m.chunk_size() as usize;
    let sizes = [0, 1, cs - 1, cs, cs + 1, 5 << 20];
    for (i, n) in sizes.iter().enumerate() {
        write_pattern(&m.p(&format!("b/f{i}")), i as u64, *n);
    }
    let check = |m: &TestMount, when: &str| {
        for (i, n) in sizes.iter().enumerate() {
            let p = m.p(&format!("b/f{i}"));
            assert_eq!(
                fs::metadata(&p).unwrap().len(),
                *n as u64,
                "stat size of f{i} {when}"
            );
            let ls = m.sh(&format!("ls -ln \"$M/b/f{i}\"")).ok().stdout;
            let col: Vec<&str> = ls.split_whitespace().collect();
            assert_eq!(
                col.get(4).copied(),
                Some(n.to_string().as_str()),
                "ls -l of f{i} {when}: {ls}"
            );
            let st = m.sh(&format!("stat -c %s \"$M/b/f{i}\"")).ok().stdout;
            assert_eq!(st.trim(), n.to_string(), "stat(1) of f{i} {when}");
            assert_eq!(
                fs::metadata(m.backing_path("b", &format!("f{i}")))
                    .unwrap()
                    .len(),
                m.expected_backing_len(*n as u64),
                "backing size of f{i} {when}"
            );
            assert_bytes_eq(&read(&p), &pattern(i as u64, *n), &format!("f{i} {when}"));
        }
    };
    check(&m, "after writing");
    m.remount();
    check(&m, "after remount");
    let du = m.sh("du -sb \"$M/b\"").ok();
    assert!(!du.stdout.is_empty());
}

#[test]
fn stat_shows_plaintext_size_of_files_being_written() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let p = m.p("b/growing");
    let mut f = File::create(&p).unwrap();
    let reader = File::open(&p).unwrap();
    let mut written = 0u64;
    for (i, len) in [1usize, 100, 16_000, 500, 40_000, 1 << 20, 3]
        .iter()
        .enumerate()
    {
        f.write_all(&pattern(i as u64, *len)).unwrap();
        written += *len as u64;
        assert_eq!(
            fs::metadata(&p).unwrap().len(),
            written,
            "stat(path) while open after {written} bytes"
        );
        assert_eq!(
            f.metadata().unwrap().len(),
            written,
            "fstat(writer) after {written} bytes"
        );
        assert_eq!(
            reader.metadata().unwrap().len(),
            written,
            "fstat(reader) after {written} bytes"
        );
        let st = m.sh("stat -c %s \"$M/b/growing\"").ok().stdout;
        assert_eq!(
            st.trim(),
            written.to_string(),
            "stat(1) in another process while open"
        );
    }
    // The other descriptor reads everything written so far.
    let mut got = Vec::new();
    (&reader).read_to_end(&mut got).unwrap();
    assert_eq!(got.len() as u64, written);
    f.sync_all().unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), written, "after fsync");
    drop(f);
    drop(reader);
    // After the kernel's attribute cache expires, the filesystem's own answer.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        fs::metadata(&p).unwrap().len(),
        written,
        "stat after close and attr timeout"
    );
    assert_eq!(
        fs::metadata(m.backing_path("b", "growing")).unwrap().len(),
        m.expected_backing_len(written)
    );
}

fn close_checked(f: File) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = f.into_raw_fd();
    // SAFETY: fd is an open descriptor owned here.
    let r = unsafe { libc::close(fd) };
    last_err(r, ())
}

#[test]
fn an_unlinked_open_file_keeps_working() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let p = m.p("b/tmpfile");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all(b"before unlink;").unwrap();
    fs::remove_file(&p).unwrap();
    assert_errno(fs::metadata(&p), libc::ENOENT, "stat of the unlinked name");
    f.write_all(b" after unlink").unwrap();
    assert_eq!(
        f.metadata().expect("fstat of an unlinked open file").len(),
        27
    );
    let mut buf = vec![0u8; 27];
    f.read_exact_at(&mut buf, 0)
        .expect("pread of an unlinked open file");
    assert_eq!(&buf, b"before unlink; after unlink");
    // Every descriptor operation still works; collect the failures to report them all.
    let mut failed = Vec::new();
    let mut check = |what: &str, r: std::io::Result<()>| {
        if let Err(e) = r {
            failed.push(format!(
                "{what}: {} ({e})",
                errno_name(e.raw_os_error().unwrap_or(0))
            ));
        }
    };
    check("fsync", f.sync_all());
    check("ftruncate", f.set_len(6));
    check(
        "fchmod",
        f.set_permissions(fs::Permissions::from_mode(0o600)),
    );
    check(
        "futimens",
        f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000)),
    );
    check("fdatasync", f.sync_data());
    check("close", close_checked(f));
    assert!(failed.is_empty(), "on an unlinked open file: {failed:?}");
    assert!(names(&m.p("b")).is_empty());
    // A new file may take the name while an old descriptor is still open.
    let old = {
        fs::write(&p, b"first").unwrap();
        let f = File::open(&p).unwrap();
        fs::remove_file(&p).unwrap();
        f
    };
    fs::write(&p, b"second").unwrap();
    let mut s = String::new();
    (&old).read_to_string(&mut s).unwrap();
    assert_eq!(s, "first");
    assert_eq!(read(&p), b"second");
}

#[test]
fn rename_over_an_open_file_and_of_a_dir_with_open_files() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    fs::write(m.p("b/A"), b"content of A").unwrap();
    fs::write(m.p("b/B"), b"old B").unwrap();
    let old_b = File::open(m.p("b/B")).unwrap();
    fs::rename(m.p("b/A"), m.p("b/B")).unwrap();
    let mut s = String::new();
    (&old_b).read_to_string(&mut s).unwrap();
    assert_eq!(s, "old B", "an open descriptor keeps the replaced file");
    assert_eq!(read(&m.p("b/B")), b"content of A");
    drop(old_b);
    // A file open in a directory that is renamed: I/O and ftruncate through the fd.
    fs::create_dir_all(m.p("b/d1/d2")).unwrap();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.p("b/d1/d2/f"))
        .unwrap();
    f.write_all(b"0123456789").unwrap();
    fs::rename(m.p("b/d1"), m.p("b/e1")).unwrap();
    f.write_all(b"abc").unwrap();
    f.set_len(12)
        .expect("ftruncate after the parent dir was renamed");
    assert_eq!(f.metadata().unwrap().len(), 12);
    close_checked(f).expect("close");
    assert_eq!(read(&m.p("b/e1/d2/f")), b"0123456789ab");
    m.remount();
    assert_eq!(read(&m.p("b/e1/d2/f")), b"0123456789ab");
}

#[test]
fn shared_mmap_writes_reach_the_file() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let cs = m.chunk_size() as usize;
    let len = 3 * cs + 10;
    let p = m.p("b/mm");
    let mut model = pattern(77, len);
    fs::write(&p, &model).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    // SAFETY: mapping an open descriptor of `len` bytes, shared, read-write; unmapped below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(
        ptr,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: ptr maps len bytes.
    let map = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) };
    assert_bytes_eq(map, &model, "mmap read");
    for off in [0, 5, cs - 1, cs, 2 * cs + 3, len - 1] {
        map[off] ^= 0xff;
        model[off] ^= 0xff;
    }
    // SAFETY: as above.
    let r = unsafe { libc::msync(ptr, len, libc::MS_SYNC) };
    assert_eq!(r, 0, "msync: {}", std::io::Error::last_os_error());
    // SAFETY: as above; the slice is not used after this.
    unsafe { libc::munmap(ptr, len) };
    drop(f);
    assert_bytes_eq(&read(&p), &model, "read after mmap writes");
    m.remount();
    assert_bytes_eq(&read(&p), &model, "after remount");
}

#[test]
fn unusual_names() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let long = "n".repeat(255);
    fs::write(m.p(&format!("b/{long}")), b"255").unwrap();
    assert_errno(
        fs::write(m.p(&format!("b/{}", "n".repeat(256))), b"x"),
        libc::ENAMETOOLONG,
        "a 256-byte name",
    );
    for name in [
        "with\nnewline",
        "ünïcödé ☃",
        " leading space",
        "-dash",
        "a:b*c?d",
        ".hidden",
        ".envelopefs",
    ] {
        fs::write(m.p(&format!("b/{name}")), name.as_bytes())
            .unwrap_or_else(|e| panic!("create {name:?}: {e}"));
    }
    fs::create_dir(m.p("b/sub")).unwrap();
    fs::create_dir(m.p("b/sub/.envelopefs"))
        .expect(".envelopefs is an ordinary name below the root");
    fs::write(m.p("b/sub/.envelopefs/x"), b"x").unwrap();
    m.remount();
    assert_eq!(read(&m.p(&format!("b/{long}"))), b"255");
    for name in [
        "with\nnewline",
        "ünïcödé ☃",
        " leading space",
        "-dash",
        "a:b*c?d",
        ".hidden",
        ".envelopefs",
    ] {
        assert_eq!(
            read(&m.p(&format!("b/{name}"))),
            name.as_bytes(),
            "{name:?}"
        );
    }
    assert_eq!(read(&m.p("b/sub/.envelopefs/x")), b"x");
}

#[test]
fn a_bucket_can_be_renamed() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    fs::create_dir(m.p("full")).unwrap();
    fs::write(m.p("full/z"), b"z").unwrap();
    let data = write_pattern(&m.p("b/f"), 3, 40_000);
    let key = xattr_str(&m.p("b/f"), "user.envelopefs.key-id");
    fs::rename(m.p("b"), m.p("c")).expect("rename of a bucket");
    assert_bytes_eq(&read(&m.p("c/f")), &data, "object in the renamed bucket");
    assert_errno(fs::metadata(m.p("b")), libc::ENOENT, "old bucket name");
    let buckets = names(&m.p(".envelopefs/buckets"));
    assert_eq!(buckets, vec!["c", "full"]);
    let e = errno_of(
        fs::rename(m.p("c"), m.p("full")),
        "rename a bucket over a non-empty one",
    );
    assert!(
        [libc::ENOTEMPTY, libc::EEXIST].contains(&e),
        "{}",
        errno_name(e)
    );
    fs::write(m.p("c/new"), b"new").unwrap();
    m.remount();
    assert_bytes_eq(&read(&m.p("c/f")), &data, "after remount");
    assert_eq!(read(&m.p("c/new")), b"new");
    assert_eq!(xattr_str(&m.p("c/f"), "user.envelopefs.key-id"), key);
}

#[test]
fn touch_h_changes_the_symlink_not_its_target() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    fs::write(m.p("b/t"), b"t").unwrap();
    std::os::unix::fs::symlink("t", m.p("b/l")).unwrap();
    let before = fs::metadata(m.p("b/t")).unwrap().mtime();
    m.sh("touch -h -m -d '2000-01-01 00:00:00 UTC' \"$M/b/l\"")
        .ok();
    assert_eq!(
        fs::symlink_metadata(m.p("b/l")).unwrap().mtime(),
        946_684_800,
        "symlink mtime"
    );
    assert_eq!(
        fs::metadata(m.p("b/t")).unwrap().mtime(),
        before,
        "target mtime unchanged"
    );
}

#[test]
fn truncate_by_path_while_another_descriptor_writes() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let p = m.p("b/f");
    let f = File::create(&p).unwrap();
    let data = pattern(4, 100_000);
    f.write_all_at(&data, 0).unwrap();
    m.sh("truncate -s 10 \"$M/b/f\"").ok();
    assert_eq!(
        fs::metadata(&p).unwrap().len(),
        10,
        "size after truncate(1)"
    );
    f.write_all_at(b"X", 50).unwrap();
    drop(f);
    let d = read(&p);
    assert_eq!(d.len(), 51);
    assert_eq!(&d[..10], &data[..10]);
    assert!(
        d[10..50].iter().all(|b| *b == 0),
        "zeros between the truncation and the write"
    );
    assert_eq!(d[50], b'X');
}

#[test]
fn creation_modes_follow_the_umask_and_the_mode_asked_for() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    m.sh("umask 027 && touch \"$M/b/f\" && mkdir \"$M/b/d\" && mkfifo \"$M/b/p\"")
        .ok();
    assert_eq!(
        fs::metadata(m.p("b/f")).unwrap().mode() & 0o7777,
        0o640,
        "touch under umask 027"
    );
    assert_eq!(
        fs::metadata(m.p("b/d")).unwrap().mode() & 0o7777,
        0o750,
        "mkdir under umask 027"
    );
    assert_eq!(
        fs::metadata(m.p("b/p")).unwrap().mode() & 0o7777,
        0o640,
        "mkfifo under umask 027"
    );
    m.sh("umask 0 && mkdir -m 1777 \"$M/b/sticky\" && mkdir -m 2755 \"$M/b/sgid\"")
        .ok();
    assert_eq!(
        fs::metadata(m.p("b/sticky")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert_eq!(fs::metadata(m.p("b/sgid")).unwrap().mode() & 0o7777, 0o2755);
    std::os::unix::fs::chown(m.p("b/sgid"), None, Some(4321)).unwrap();
    fs::set_permissions(m.p("b/sgid"), fs::Permissions::from_mode(0o2775)).unwrap();
    fs::write(m.p("b/sgid/child"), b"c").unwrap();
    fs::create_dir(m.p("b/sgid/sub")).unwrap();
    assert_eq!(
        fs::metadata(m.p("b/sgid/child")).unwrap().gid(),
        4321,
        "group inherited from a set-gid dir"
    );
    let sub = fs::metadata(m.p("b/sgid/sub")).unwrap();
    assert_eq!(sub.gid(), 4321, "a subdirectory inherits the group");
    assert_ne!(
        sub.mode() & 0o2000,
        0,
        "a subdirectory of a set-gid dir is set-gid"
    );
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(m.p("b/private"))
        .unwrap();
    assert_eq!(
        fs::metadata(m.p("b/private")).unwrap().mode() & 0o777,
        0o600
    );
}

#[test]
fn with_the_writeback_cache_appends_sizes_and_truncates_are_right() {
    let mut m = TestMount::new_writeback_cache();
    fs::create_dir(m.p("b")).unwrap();
    let cs = m.chunk_size() as usize;
    let p = m.p("b/f");
    // O_APPEND handled by the kernel: two descriptors, a seek in between.
    fs::write(&p, b"xy").unwrap();
    let mut a = OpenOptions::new().append(true).open(&p).unwrap();
    let mut b = OpenOptions::new().append(true).open(&p).unwrap();
    a.write_all(b"1").unwrap();
    b.write_all(b"22").unwrap();
    a.seek(SeekFrom::Start(0)).unwrap();
    a.write_all(b"333").unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 8, "size while open");
    drop((a, b));
    assert_eq!(read(&p), b"xy122333");
    m.sh("i=0; while [ $i -lt 100 ]; do echo \"l $i\" >> \"$M/b/log\"; i=$((i+1)); done")
        .ok();
    assert_eq!(m.sh("wc -l < \"$M/b/log\"").ok().stdout.trim(), "100");
    // Sizes while writing, sparse writes, truncation.
    let g = m.p("b/g");
    let f = File::create(&g).unwrap();
    let data = pattern(1, 3 * cs + 7);
    f.write_all_at(&data, 0).unwrap();
    assert_eq!(
        fs::metadata(&g).unwrap().len(),
        data.len() as u64,
        "stat while open"
    );
    f.write_all_at(b"far", 1 << 20).unwrap();
    assert_eq!(fs::metadata(&g).unwrap().len(), (1 << 20) + 3);
    f.set_len(cs as u64 + 1).unwrap();
    assert_eq!(fs::metadata(&g).unwrap().len(), cs as u64 + 1);
    drop(f);
    assert_bytes_eq(&read(&g), &data[..cs + 1], "after truncate");
    let t = fs::metadata(&g).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    OpenOptions::new()
        .write(true)
        .open(&g)
        .unwrap()
        .write_all(b"Z")
        .unwrap();
    assert!(
        fs::metadata(&g).unwrap().modified().unwrap() > t,
        "a write updates mtime"
    );
    m.remount();
    assert_eq!(read(&p), b"xy122333");
    let mut want = data[..cs + 1].to_vec();
    want[0] = b'Z';
    assert_bytes_eq(&read(&g), &want, "after remount");
}

#[test]
fn a_write_updates_mtime_durably() {
    let mut m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let p = m.p("b/f");
    fs::write(&p, b"content").unwrap();
    m.sh("touch -m -d '2000-01-01 00:00:00 UTC' \"$M/b/f\"")
        .ok();
    assert_eq!(fs::metadata(&p).unwrap().mtime(), 946_684_800);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(b"C", 0).unwrap();
    drop(f);
    assert!(
        fs::metadata(&p).unwrap().mtime() >= now - 1,
        "mtime after a write"
    );
    m.remount();
    let md = fs::metadata(&p).unwrap();
    assert!(
        md.mtime() >= now - 1,
        "mtime after a write, after remount: {}",
        md.mtime()
    );
    assert_eq!(read(&p), b"Content");
}

/// The modes, owners and access answers a root caller sees after the operations that clear
/// set-id bits, run in directory $1: chown, writes and truncates by root, and by root
/// without CAP_FSETID (setpriv), plus access(2) through `test`.
const SETID_SCRIPT: &str = r#"
set -e
cd "$1"
nofsetid() { setpriv --inh-caps=-fsetid --bounding-set=-fsetid sh -c "$1"; }
for f in chown chown2644 write nofsetid_write nofsetid_write2745 nofsetid_trunc nofsetid_otrunc; do
    printf 'abc' > "$f"
done
chmod 6755 chown nofsetid_write nofsetid_trunc nofsetid_otrunc write
chmod 2644 chown2644
chmod 2745 nofsetid_write2745
chown 0:0 chown chown2644
echo more >> write
nofsetid 'echo more >> nofsetid_write'
nofsetid 'echo more >> nofsetid_write2745'
nofsetid 'truncate -s 1 nofsetid_trunc'
nofsetid ': > nofsetid_otrunc'
printf 'abc' > open_then_chmod
nofsetid 'exec 3>>open_then_chmod; chmod 4755 open_then_chmod; echo more >&3; exec 3>&-'
for f in chown chown2644 write nofsetid_write nofsetid_write2745 nofsetid_trunc nofsetid_otrunc open_then_chmod; do
    echo "$f $(stat -c '%a %u %g %s' "$f")"
done
printf x > plain; chmod 0644 plain
printf x > exe; chmod 0744 exe
printf x > ro; chmod 0444 ro
mkdir closed; chmod 0000 closed
for f in plain exe ro closed; do
    r=-; w=-; x=-
    test -r "$f" && r=r; test -w "$f" && w=w; test -x "$f" && x=x
    echo "access $f $r$w$x"
done
"#;

#[test]
fn a_root_only_mount_clears_set_id_bits_and_answers_access_as_the_disk_does() {
    // Root without --allow-other: the kernel does not check modes (no default_permissions)
    // and leaves set-id clearing to the filesystem (FUSE_HANDLE_KILLPRIV_V2).
    let m = TestMount::new();
    let opts = m.sh("findmnt -n -o OPTIONS \"$M\"").ok().stdout;
    assert!(
        !opts.contains("default_permissions"),
        "a root-only mount should leave mode checks to the filesystem: {opts}"
    );
    fs::create_dir(m.p("b")).unwrap();
    fs::create_dir(m.scratch.join("disk")).unwrap();
    let on_mount = m
        .sh(&format!("set -- \"$M/b\"\n{SETID_SCRIPT}"))
        .ok()
        .stdout;
    let on_disk = m
        .sh(&format!("set -- \"$X/disk\"\n{SETID_SCRIPT}"))
        .ok()
        .stdout;
    assert_eq!(on_mount, on_disk, "the mount differs from ext4 for root");
    // And the disk's answers are the ones the kernel documents, so the comparison means
    // something: chown and a write without CAP_FSETID clear both bits (group may execute),
    // root's own write keeps them, and set-group-id without group execute survives.
    for line in [
        "chown 755 0 0 3",
        "chown2644 2644 0 0 3",
        "write 6755 0 0 8",
        "nofsetid_write 755 0 0 8",
        "nofsetid_write2745 2745 0 0 8",
        "nofsetid_trunc 755 0 0 1",
        "nofsetid_otrunc 755 0 0 0",
        "open_then_chmod 755 0 0 8",
        "access plain rw-",
        "access exe rwx",
        "access ro rw-",
        "access closed rwx",
    ] {
        assert_has_line(&on_mount, line);
    }
}

#[test]
fn default_permissions_can_be_asked_for_and_then_the_kernel_checks() {
    let mut m = TestMount::init_only(None);
    m.mount_with(&["--default-permissions"]);
    let opts = m.sh("findmnt -n -o OPTIONS \"$M\"").ok().stdout;
    assert!(
        opts.contains("default_permissions"),
        "--default-permissions was not passed to the kernel: {opts}"
    );
    fs::create_dir(m.p("b")).unwrap();
    let out = m
        .sh(&format!("set -- \"$M/b\"\n{SETID_SCRIPT}"))
        .ok()
        .stdout;
    for line in [
        "chown 755 0 0 3",
        "nofsetid_write 755 0 0 8",
        "open_then_chmod 755 0 0 8",
        "access plain rw-",
    ] {
        assert_has_line(&out, line);
    }
}

#[track_caller]
fn assert_has_line(out: &str, line: &str) {
    assert!(
        out.lines().any(|l| l == line),
        "missing {line:?} in:\n{out}"
    );
}

/// A read-only shared mapping of an open file, unmapped on drop.
struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    fn new(f: &File, len: usize) -> Self {
        assert!(len > 0);
        // SAFETY: a fresh read-only shared mapping of an open file; Drop unmaps it.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(
            addr,
            libc::MAP_FAILED,
            "{}",
            std::io::Error::last_os_error()
        );
        Mapping { addr, len }
    }

    /// What the mapping shows now.
    fn bytes(&self) -> Vec<u8> {
        // SAFETY: the mapping is `len` readable bytes while self lives.
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len).to_vec() }
    }

    /// Pages of the file in the page cache (mincore(2); mapping reads nothing by itself).
    fn resident_pages(&self) -> usize {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let mut vec = vec![0u8; self.len.div_ceil(page)];
        // SAFETY: the mapping is `len` bytes long and `vec` has a byte per page of it.
        let r = unsafe { libc::mincore(self.addr, self.len, vec.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|b| **b & 1 != 0).count()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in new().
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// Pages of the file at `p` in the mount's page cache.
fn resident_pages(p: &Path) -> usize {
    let f = File::open(p).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    Mapping::new(&f, len).resident_pages()
}

#[test]
fn write_only_handles_bypass_the_page_cache_and_readers_still_see_their_writes() {
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let data = pattern(1, 64 * 1024);

    // A write-only handle (cp, tar, dd, shell redirections) leaves no page of the file in the
    // mount's cache; a read-write one caches what it wrote, as before.
    let wo = m.p("b/wo");
    fs::write(&wo, &data).unwrap();
    assert_eq!(
        resident_pages(&wo),
        0,
        "written through O_WRONLY, yet cached"
    );
    let rw = m.p("b/rw");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&rw)
        .unwrap();
    f.write_all_at(&data, 0).unwrap();
    drop(f);
    assert!(
        resident_pages(&rw) > 0,
        "written through O_RDWR, not cached"
    );
    assert_eq!(fs::read(&wo).unwrap(), data);

    // A reader with the file cached, and a shared mapping, both see an unaligned overwrite
    // and an extension made through a write-only handle.
    let reader = File::open(&wo).unwrap();
    assert_eq!(pread_all(&reader).unwrap(), data);
    assert_eq!(resident_pages(&wo), 16, "the reader's pages are cached");
    let map = Mapping::new(&reader, data.len());
    assert_eq!(map.bytes(), data, "the mapping before the write");
    let w = OpenOptions::new().write(true).open(&wo).unwrap();
    w.write_all_at(&[0xAB; 5000], 1000).unwrap();
    w.write_all_at(&[0xCD; 3000], data.len() as u64).unwrap();
    let mut want = data.clone();
    want[1000..6000].fill(0xAB);
    want.extend_from_slice(&[0xCD; 3000]);
    assert_bytes_eq(&pread_all(&reader).unwrap(), &want, "the reader's handle");
    assert_bytes_eq(&map.bytes(), &want[..data.len()], "the mapping");
    assert_bytes_eq(&fs::read(&wo).unwrap(), &want, "a new handle");
    assert_eq!(reader.metadata().unwrap().len(), want.len() as u64);
}

#[test]
fn with_the_writeback_cache_write_only_handles_stay_cached() {
    // That mode is there to gather small writes in the cache, and write-only handles (loggers,
    // shell appends) make most of them: there every handle goes through the cache.
    let m = TestMount::new_writeback_cache();
    fs::create_dir(m.p("b")).unwrap();
    let data = pattern(2, 64 * 1024);
    let wo = m.p("b/wo");
    fs::write(&wo, &data).unwrap();
    assert!(
        resident_pages(&wo) > 0,
        "written through O_WRONLY with the writeback cache"
    );
    assert_eq!(fs::read(&wo).unwrap(), data);
}

/// The contents of `f` through a fresh read-only shared mapping (empty file: empty).
fn mapped_contents(f: &File, len: usize) -> Vec<u8> {
    if len == 0 {
        return Vec::new();
    }
    Mapping::new(f, len).bytes()
}

#[test]
fn cached_and_write_only_handles_of_one_file_agree_with_a_model() {
    // Write-only handles bypass the page cache, read-write and read-only ones use it: random
    // writes, appends and truncations through all three kinds, each followed by a check of
    // what every reader sees (a long-lived reader, the read-write handle, a fresh mapping)
    // against a plain byte vector.
    let m = TestMount::new();
    fs::create_dir(m.p("b")).unwrap();
    let p = m.p("b/mixed");
    let open_wo = || OpenOptions::new().write(true).open(&p).unwrap();
    let open_app = || OpenOptions::new().append(true).open(&p).unwrap();
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&p)
        .unwrap();
    let mut wo = open_wo();
    let mut app = open_app();
    let mut ro = File::open(&p).unwrap();
    let mut model: Vec<u8> = Vec::new();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for step in 0..600u64 {
        let size = model.len() as u64;
        let what = next(100);
        let desc;
        if what < 30 {
            let off = next(size + 9000);
            let data = pattern(step, next(20_000) as usize + 1);
            let through_wo = what < 20;
            let h = if through_wo { &wo } else { &rw };
            h.write_all_at(&data, off).unwrap();
            let end = off as usize + data.len();
            if model.len() < end {
                model.resize(end, 0);
            }
            model[off as usize..end].copy_from_slice(&data);
            desc = format!(
                "write of {} at {off} through {}",
                data.len(),
                if through_wo { "O_WRONLY" } else { "O_RDWR" }
            );
        } else if what < 40 {
            let data = pattern(step, next(9000) as usize + 1);
            app.write_all(&data).unwrap();
            model.extend_from_slice(&data);
            desc = format!("append of {}", data.len());
        } else if what < 48 {
            let len = next(size + 9000);
            rw.set_len(len).unwrap();
            model.resize(len as usize, 0);
            desc = format!("truncate to {len}");
        } else if what < 53 {
            wo = open_wo();
            app = open_app();
            desc = "reopen the writers".into();
        } else if what < 56 {
            ro = File::open(&p).unwrap();
            desc = "reopen the reader".into();
        } else {
            // A read through the long-lived reader, or the read-write handle, of a random
            // range (the rest of the steps check everything).
            let off = next(size + 1);
            let mut buf = vec![0u8; next(30_000) as usize + 1];
            let h = if what < 80 { &ro } else { &rw };
            let n = h.read_at(&mut buf, off).unwrap();
            let want_end = (off as usize + buf.len()).min(model.len());
            assert_bytes_eq(
                &buf[..n],
                &model[off as usize..want_end],
                &format!("step {step}: read of {} at {off}", buf.len()),
            );
            continue;
        }
        assert_eq!(
            ro.metadata().unwrap().len(),
            model.len() as u64,
            "step {step}: size after {desc}"
        );
        assert_bytes_eq(
            &pread_all(&ro).unwrap(),
            &model,
            &format!("step {step}: the reader after {desc}"),
        );
        if step % 5 == 0 {
            assert_bytes_eq(
                &mapped_contents(&ro, model.len()),
                &model,
                &format!("step {step}: a mapping after {desc}"),
            );
            assert_bytes_eq(
                &pread_all(&rw).unwrap(),
                &model,
                &format!("step {step}: the read-write handle after {desc}"),
            );
        }
    }
    drop((wo, app, ro, rw));
    assert_bytes_eq(&fs::read(&p).unwrap(), &model, "a new handle at the end");
}
