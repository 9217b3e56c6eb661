//! Deferred deletion through a real mount: a removed object's name is gone at once, its
//! space comes back when the trash is emptied, a full disk empties the trash and the write
//! goes through, and what a killed mount left in the trash is deleted at the next mount.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A size-limited tmpfs holding the store, unmounted on drop (after the FUSE mount).
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(at: &Path, size: &str) -> SmallFs {
        fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs at {}", at.display());
        SmallFs(at.to_path_buf())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn trash_entries(t: &TestMount) -> usize {
    fs::read_dir(t.store.join(".envelopefs/trash"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A store on a 24 MiB tmpfs, slow trash, mounted, with a bucket `b`.
fn small_store() -> (TestMount, SmallFs) {
    let mut t = TestMount::init_only(None);
    fs::remove_dir_all(&t.store).unwrap();
    let small = SmallFs::mount(&t.store, "24m");
    cli(&[
        "init",
        t.store.to_str().unwrap(),
        "--key-file",
        t.key.to_str().unwrap(),
    ])
    .ok();
    t.mount_env.push(fault_env("slow-trash"));
    t.mount();
    fs::create_dir(t.mnt.join("b")).unwrap();
    (t, small)
}

fn fill(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut made = Vec::new();
    for i in 0.. {
        let p = dir.join(format!("{prefix}{i}"));
        let r = fs::File::create(&p).and_then(|mut f| {
            f.write_all(&pattern(i, 1 << 20))?;
            f.sync_all()
        });
        match r {
            Ok(()) => made.push(p),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filling: {e}");
                let _ = fs::remove_file(&p);
                break;
            }
        }
    }
    made
}

#[test]
fn a_full_disk_empties_the_trash_and_the_write_goes_through() {
    let (mut t, _small) = small_store();
    let b = t.mnt.join("b");
    let made = fill(&b, "f");
    assert!(made.len() >= 10, "only {} MiB fitted", made.len());
    // Delete the first half: names vanish at once, the space waits in the (slow) trash.
    let half = made.len() / 2;
    for p in &made[..half] {
        fs::remove_file(p).unwrap();
        assert!(!p.exists());
    }
    assert!(
        trash_entries(&t) > 0,
        "deleted objects should wait in the trash"
    );
    // A 4 MiB write needs that space now: ENOSPC inside the daemon empties the trash.
    let big = pattern(99, 4 << 20);
    let p = b.join("big");
    let mut f = fs::File::create(&p).unwrap();
    f.write_all(&big).unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_bytes_eq(
        &fs::read(&p).unwrap(),
        &big,
        "big after the trash was emptied",
    );
    // The objects that were not deleted are intact.
    for (i, q) in made.iter().enumerate().skip(half) {
        assert_bytes_eq(
            &fs::read(q).unwrap(),
            &pattern(i as u64, 1 << 20),
            "kept object",
        );
    }
    t.unmount();
    assert_eq!(trash_entries(&t), 0, "unmount empties the trash");
}

#[test]
fn what_a_killed_mount_left_in_the_trash_is_deleted_at_the_next_mount() {
    let (mut t, _small) = small_store();
    let b = t.mnt.join("b");
    for i in 0..20 {
        fs::write(b.join(format!("o{i}")), pattern(i, 64 << 10)).unwrap();
    }
    fs::write(b.join("keep"), b"kept").unwrap();
    for i in 0..20 {
        fs::remove_file(b.join(format!("o{i}"))).unwrap();
    }
    assert!(trash_entries(&t) > 10);
    let pid = t.daemon_pid().expect("daemon pid");
    // SAFETY: kill(2) of the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    poll(Duration::from_secs(10), "daemon gone", || {
        // SAFETY: signal 0 only checks that the process exists.
        (unsafe { libc::kill(pid, 0) } != 0).then_some(())
    });
    let _ = Command::new("fusermount3").arg("-u").arg(&t.mnt).status();
    t.mark_unmounted();
    assert!(trash_entries(&t) > 10, "the killed mount left its trash");
    t.mount_env.clear();
    t.mount();
    poll(Duration::from_secs(10), "trash emptied", || {
        (trash_entries(&t) == 0).then_some(())
    });
    assert_eq!(fs::read(t.mnt.join("b/keep")).unwrap(), b"kept");
    for i in 0..20 {
        assert!(!t.mnt.join(format!("b/o{i}")).exists());
    }
    t.unmount();
}

#[test]
fn removing_one_name_of_a_hard_linked_object_drops_its_link_count_at_once() {
    let (mut t, _small) = small_store();
    let b = t.mnt.join("b");
    fs::write(b.join("a"), b"shared").unwrap();
    fs::hard_link(b.join("a"), b.join("c")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(b.join("c")).unwrap().nlink(), 2);
    fs::remove_file(b.join("a")).unwrap();
    // With the slow trash, a link moved there would still count.
    assert_eq!(fs::metadata(b.join("c")).unwrap().nlink(), 1);
    assert_eq!(trash_entries(&t), 0);
    assert_eq!(fs::read(b.join("c")).unwrap(), b"shared");
    t.unmount();
}

#[test]
fn an_open_object_whose_name_went_to_the_trash_has_no_links_and_still_works() {
    let (mut t, _small) = small_store();
    let p = t.mnt.join("b/open");
    fs::write(&p, b"before").unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    fs::remove_file(&p).unwrap();
    assert!(trash_entries(&t) > 0, "the slow trash still holds it");
    use std::os::unix::fs::{FileExt, MetadataExt};
    assert_eq!(f.metadata().unwrap().nlink(), 0, "fstat after unlink");
    f.write_all_at(b"AFTER", 0).unwrap();
    let mut buf = [0u8; 6];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"AFTERe");
    drop(f);
    t.unmount();
}
