//! Backing inode numbers are reused while the kernel still holds the old inode: a removed
//! directory pinned by files open below it, an unlinked file still open. The new inode must
//! not be taken for the old one (found by pjdfstest: after open::einval_invalid_combination
//! left descriptors open, every create in the next test's fresh directory failed ENOENT).

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};

#[test]
fn new_files_and_directories_work_while_removed_ones_are_still_open() {
    let t = TestMount::new();
    let b = t.mnt.join("b");
    fs::create_dir(&b).unwrap();
    for round in 0..20 {
        let d = b.join(format!("d{round}"));
        fs::create_dir(&d).unwrap();
        let mut open = Vec::new();
        for i in 0..3 {
            let p = d.join(format!("f{i}"));
            fs::write(&p, format!("old {round} {i}")).unwrap();
            open.push((
                fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&p)
                    .unwrap(),
                i,
            ));
        }
        for i in 0..3 {
            fs::remove_file(d.join(format!("f{i}"))).unwrap();
        }
        fs::remove_dir(&d).unwrap();
        // A fresh directory (its backing inode number may be the removed one's) takes creates.
        let e = b.join(format!("e{round}"));
        fs::create_dir(&e).unwrap();
        for i in 0..3 {
            let p = e.join(format!("g{i}"));
            fs::write(&p, format!("new {round} {i}")).unwrap();
            assert_eq!(fs::read_to_string(&p).unwrap(), format!("new {round} {i}"));
        }
        // The removed files still read and write through their descriptors.
        for (f, i) in &open {
            let mut buf = vec![0u8; 64];
            let n = f.read_at(&mut buf, 0).unwrap();
            assert_eq!(&buf[..n], format!("old {round} {i}").as_bytes());
            f.write_at(b"OLD", 0).unwrap();
        }
        // Distinct files have distinct inode numbers as seen through the mount.
        let mut inos: Vec<u64> = (0..3)
            .map(|i| fs::metadata(e.join(format!("g{i}"))).unwrap().ino())
            .collect();
        inos.push(fs::metadata(&e).unwrap().ino());
        inos.extend(open.iter().map(|(f, _)| f.metadata().unwrap().ino()));
        let n = inos.len();
        inos.sort_unstable();
        inos.dedup();
        assert_eq!(inos.len(), n, "inode numbers must differ: {inos:?}");
    }
}

/// A change made through `ctl` in a directory whose backing inode number was reused (so the
/// kernel knows it by a fresh node id) shows in the mount at once: the invalidation names the
/// node id the kernel holds, not one computed from the backing inode number.
#[test]
fn ctl_changes_show_in_a_directory_that_reuses_an_inode_number() {
    /// Node ids from here up are fresh ones given to reused inode numbers (vfs::inodes).
    const SYNTH_BASE: u64 = 1 << 62;
    let t = TestMount::new();
    let b = t.mnt.join("b");
    fs::create_dir(&b).unwrap();
    let mut pinned = Vec::new();
    let mut aliased = None;
    for round in 0..50 {
        // A removed directory the kernel still holds (a file open below it).
        let d = b.join(format!("d{round}"));
        fs::create_dir(&d).unwrap();
        let f = d.join("f");
        fs::write(&f, b"pin").unwrap();
        pinned.push(fs::File::open(&f).unwrap());
        fs::remove_file(&f).unwrap();
        fs::remove_dir(&d).unwrap();
        let e = b.join(format!("e{round}"));
        fs::create_dir(&e).unwrap();
        if fs::metadata(&e).unwrap().ino() >= SYNTH_BASE {
            aliased = Some(format!("e{round}"));
            break;
        }
    }
    let dir = aliased.expect("no backing inode number was reused in 50 rounds");
    let name = format!("{dir}/obj");
    let p = b.join(&name);
    fs::write(&p, b"v1").unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 2);
    assert_eq!(fs::read(&p).unwrap(), b"v1");
    // Replaced through ctl: the kernel's cached entry (10 s) must be dropped at once.
    // The kernel caches the attributes (10 s) right before the change.
    assert_eq!(fs::metadata(&p).unwrap().len(), 2);
    t.put_object("b", &name, b"version two");
    assert_eq!(
        fs::metadata(&p).unwrap().len(),
        11,
        "stale size after ctl put"
    );
    assert_eq!(fs::read(&p).unwrap(), b"version two");
    drop(pinned);
}
