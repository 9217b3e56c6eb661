//! Deferred deletion. Removing a name is a rename into `.envelopefs/trash/`, and a background
//! thread unlinks what lands there.
//!
//! Why: on ext4 mounted with `discard` (and no journal), freeing blocks issues synchronous
//! discards. An object frees two separate blocks even when small: its data and the external
//! xattr block that holds its header. An `unlink` of a 4 KiB object took about 67 µs in the
//! daemon, most of it waiting on the disk. The rename is the commit point: after it the name is
//! gone, and a crash leaves only trash, which the next mount empties.
//!
//! The cost: space comes back a little after `rm` returns. A write or create that fails with
//! ENOSPC empties the trash and retries once (see `Vfs`), and unmount empties it.

use crate::sync::{LockUnpoisoned, WaitUnpoisoned};
use std::collections::VecDeque;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// The trash of one store, with its deleting thread.
pub struct Trash {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    dir: PathBuf,
    next: AtomicU64,
    prefix: String,
    queue: Mutex<Queue>,
    wake: Condvar,
    idle: Condvar,
}

#[derive(Default)]
struct Queue {
    names: VecDeque<PathBuf>,
    busy: usize,
    stop: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock_unpoisoned()
    }

    /// Unlinks one queued entry; `false` when the queue is empty.
    fn delete_one(&self) -> bool {
        let next = {
            let mut q = self.lock();
            let n = q.names.pop_front();
            if n.is_some() {
                q.busy += 1;
            }
            n
        };
        let Some(path) = next else { return false };
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!("emptying the trash: {}: {e}", path.display());
            }
        }
        let mut q = self.lock();
        q.busy -= 1;
        if q.names.is_empty() && q.busy == 0 {
            self.idle.notify_all();
        }
        true
    }
}

impl Trash {
    /// Opens the trash directory `dir` (creating it, mode 0700), queues what a previous mount left in it
    /// and starts the deleting thread.
    pub fn start(dir: &Path) -> io::Result<Trash> {
        // Only the store's owner may reach what waits here (no planting, no linking out).
        super::fsutil::ensure_dir(dir, super::META_DIR_MODE)?;
        let mut names = VecDeque::new();
        for e in fs::read_dir(dir)? {
            names.push_back(e?.path());
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            next: AtomicU64::new(0),
            prefix: format!("{stamp:x}-{}", std::process::id()),
            queue: Mutex::new(Queue {
                names,
                ..Queue::default()
            }),
            wake: Condvar::new(),
            idle: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("trash".into())
            .spawn(move || loop {
                if crate::fault::enabled("slow-trash") && s.lock().names.front().is_some() {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                if s.delete_one() {
                    continue;
                }
                let q = s.lock();
                if q.stop {
                    return;
                }
                if q.names.is_empty() {
                    drop(s.wake.wait_unpoisoned(q));
                }
            })?;
        Ok(Trash {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Removes the name `path` (anything but a directory): EISDIR for a directory, ENOENT if
    /// there is nothing there. A regular file with no other link goes to the trash and its
    /// inode is freed later; anything else is unlinked at once (nothing to free, and a
    /// hard-linked file's link count must drop now). Returns whether the file went to the
    /// trash (then it still has one link there until the thread deletes it).
    pub fn remove(&self, path: &Path) -> io::Result<bool> {
        let m = fs::symlink_metadata(path)?;
        if m.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        }
        if !m.is_file() || m.nlink() > 1 {
            return fs::remove_file(path).map(|()| false);
        }
        let n = self.shared.next.fetch_add(1, Ordering::Relaxed);
        let to = self.shared.dir.join(format!("{}-{n}", self.shared.prefix));
        match super::fsutil::rename_noreplace(path, &to) {
            Ok(()) => {
                self.shared.lock().names.push_back(to);
                self.shared.wake.notify_one();
                Ok(true)
            }
            // Another filesystem, or a name clash: delete in place as before.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EEXIST)) => {
                fs::remove_file(path).map(|()| false)
            }
            Err(e) => Err(e),
        }
    }

    /// Entries waiting to be deleted.
    pub fn pending(&self) -> usize {
        let q = self.shared.lock();
        q.names.len() + q.busy
    }

    /// Deletes everything in the trash now (helping the thread), and waits until it is done.
    pub fn empty(&self) {
        while self.shared.delete_one() {}
        let mut q = self.shared.lock();
        while !(q.names.is_empty() && q.busy == 0) {
            q = self.shared.idle.wait_unpoisoned(q);
        }
    }

    /// Empties the trash and stops the thread (at unmount).
    pub fn shutdown(&self) {
        self.empty();
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        let t = self.thread.lock_unpoisoned().take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

impl Drop for Trash {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_names_vanish_at_once_and_their_files_soon_after() {
        let dir = tempfile::tempdir().unwrap();
        let t = Trash::start(&dir.path().join("trash")).unwrap();
        let mut paths = Vec::new();
        for i in 0..50 {
            let p = dir.path().join(format!("f{i}"));
            fs::write(&p, b"x").unwrap();
            paths.push(p);
        }
        std::os::unix::fs::symlink("f0", dir.path().join("link")).unwrap();
        for p in &paths {
            t.remove(p).unwrap();
            assert!(fs::symlink_metadata(p).is_err());
        }
        t.remove(&dir.path().join("link")).unwrap();
        assert!(fs::symlink_metadata(dir.path().join("link")).is_err());
        t.empty();
        assert_eq!(t.pending(), 0);
        assert_eq!(fs::read_dir(dir.path().join("trash")).unwrap().count(), 0);
    }

    #[test]
    fn directories_and_missing_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let t = Trash::start(&dir.path().join("trash")).unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        let e = t.remove(&dir.path().join("d")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EISDIR));
        assert!(dir.path().join("d").is_dir());
        let e = t.remove(&dir.path().join("nothing")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_hard_link_keeps_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let t = Trash::start(&dir.path().join("trash")).unwrap();
        fs::write(dir.path().join("a"), b"data").unwrap();
        fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        t.remove(&dir.path().join("a")).unwrap();
        // The link count drops at once (the other name is not waiting in the trash).
        assert_eq!(fs::metadata(dir.path().join("b")).unwrap().nlink(), 1);
        assert_eq!(t.pending(), 0);
        t.empty();
        assert_eq!(fs::read(dir.path().join("b")).unwrap(), b"data");
    }

    #[test]
    fn leftovers_of_a_crash_are_deleted_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let tdir = dir.path().join("trash");
        fs::create_dir(&tdir).unwrap();
        for i in 0..5 {
            fs::write(tdir.join(format!("old-{i}")), b"x").unwrap();
        }
        let t = Trash::start(&tdir).unwrap();
        t.empty();
        assert_eq!(fs::read_dir(&tdir).unwrap().count(), 0);
        t.shutdown();
    }
}
