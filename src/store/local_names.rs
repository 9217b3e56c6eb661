//! The names interface ([`super::names::Names`]) of a local-directory store: a name is the
//! file of the same path under the store's directory, and each operation is the system call
//! of the same name (not following symlinks). Unlinked objects go to the store's trash
//! (deferred deletion, src/store/trash.rs) when it runs.
#![allow(unsafe_code)]

use super::fsutil::{self, check, cpath};
use super::local::LocalDir;
use super::names::{DirEntry, Kind, Meta, Names, SetAttributes, SetTime, StatFs};
use super::seam::Blob;
use super::trash::Trash;
use super::xattr;
use crate::error::{Error, IoContext, Result};
use std::fs::{self, File, FileType, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirEntryExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The names of a local store.
pub struct LocalNames {
    dir: Arc<LocalDir>,
    trash: Option<Trash>,
}

impl LocalNames {
    /// The names of the store in `dir`; with `deferred_delete`, unlinked objects go through
    /// the store's trash (if it cannot be started, they are unlinked at once, with a warning).
    pub fn new(dir: Arc<LocalDir>, deferred_delete: bool) -> LocalNames {
        let trash = if deferred_delete {
            match Trash::start(&dir.meta().join("trash")) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!("no deferred deletion (removing names unlinks at once): {e}");
                    None
                }
            }
        } else {
            None
        };
        LocalNames { dir, trash }
    }

    /// The backing path of a name, in one allocation.
    fn abs(&self, path: &Path) -> PathBuf {
        let root = self.dir.root();
        let mut p = PathBuf::with_capacity(root.as_os_str().len() + 1 + path.as_os_str().len());
        p.push(root);
        if !path.as_os_str().is_empty() {
            p.push(path);
        }
        p
    }
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    let ns = u32::try_from(nsecs).unwrap_or(0);
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), ns)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(u64::from(ns))
    }
}

/// The kind of a std file type.
fn kind_of(t: &FileType) -> Kind {
    if t.is_dir() {
        Kind::Dir
    } else if t.is_symlink() {
        Kind::Symlink
    } else if t.is_fifo() {
        Kind::Fifo
    } else if t.is_char_device() {
        Kind::CharDevice
    } else if t.is_block_device() {
        Kind::BlockDevice
    } else if t.is_socket() {
        Kind::Socket
    } else {
        Kind::File
    }
}

/// A name's [`Meta`] from the local file's metadata.
pub fn meta_of(m: &Metadata) -> Meta {
    Meta {
        ino: m.ino(),
        kind: kind_of(&m.file_type()),
        mode: m.mode(),
        nlink: m.nlink(),
        uid: m.uid(),
        gid: m.gid(),
        size: m.len(),
        blocks: m.blocks(),
        rdev: m.rdev(),
        blksize: m.blksize(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        birth: m.created().ok(),
    }
}

fn timespec(t: Option<SetTime>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(SetTime::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(SetTime::At(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => libc::timespec {
                tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(d.subsec_nanos()),
            },
            Err(e) => {
                let d = e.duration();
                let mut secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                let mut ns = i64::from(d.subsec_nanos());
                if ns > 0 {
                    secs -= 1;
                    ns = 1_000_000_000 - ns;
                }
                libc::timespec {
                    tv_sec: secs,
                    tv_nsec: ns,
                }
            }
        },
    }
}

/// lchown with optional owner and group (u32::MAX, that is -1, leaves one unchanged).
fn lchown(path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: p is NUL-terminated.
    check(unsafe { libc::lchown(p.as_ptr(), uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX)) })
}

fn fchown(f: &File, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    // SAFETY: the fd is open for the borrow's duration; u32::MAX (-1) leaves a field unchanged.
    check(unsafe {
        libc::fchown(
            f.as_raw_fd(),
            uid.unwrap_or(u32::MAX),
            gid.unwrap_or(u32::MAX),
        )
    })
}

pub(crate) fn futimens(f: &File, atime: Option<SetTime>, mtime: Option<SetTime>) -> io::Result<()> {
    let ts = [timespec(atime), timespec(mtime)];
    // SAFETY: the fd is open for the borrow's duration and ts points to two timespecs.
    check(unsafe { libc::futimens(f.as_raw_fd(), ts.as_ptr()) })
}

fn fchmod(f: &File, mode: u32) -> io::Result<()> {
    // SAFETY: the fd is open for the borrow's duration.
    check(unsafe { libc::fchmod(f.as_raw_fd(), mode) })
}

/// utimensat without following symlinks.
fn utimens(path: &Path, atime: Option<SetTime>, mtime: Option<SetTime>) -> io::Result<()> {
    let p = cpath(path)?;
    let ts = [timespec(atime), timespec(mtime)];
    // SAFETY: p is NUL-terminated and ts points to two timespecs.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

impl Names for LocalNames {
    fn stat(&self, path: &Path) -> Result<Meta> {
        let p = self.abs(path);
        fs::symlink_metadata(&p)
            .map(|m| meta_of(&m))
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))
    }

    fn stat_open(&self, file: &File) -> Result<Meta> {
        file.metadata()
            .map(|m| meta_of(&m))
            .ctx(|| "fstat".to_string())
    }

    fn list(&self, dir: &Path) -> Result<Vec<DirEntry>> {
        let p = self.abs(dir);
        let mut out = Vec::new();
        for e in fs::read_dir(&p).ctx(|| format!("readdir {}", dir.display()))? {
            let e = e.ctx(|| format!("readdir {}", dir.display()))?;
            let kind = e.file_type().map(|t| kind_of(&t)).unwrap_or(Kind::File);
            out.push(DirEntry {
                name: e.file_name(),
                ino: e.ino(),
                kind,
            });
        }
        Ok(out)
    }

    fn walk_objects(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        super::local::walk_files(&self.abs(dir))
    }

    fn open(&self, path: &Path, write: bool) -> Result<File> {
        let p = self.abs(path);
        let rw = OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p);
        match rw {
            Ok(f) => Ok(f),
            Err(e)
                if write && matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EROFS)) =>
            {
                OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&p)
                    .ctx(|| format!("open {}", path.display()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::NotFound(format!("no object {}", path.display())))
            }
            Err(e) => Err(Error::io(format!("open {}", path.display()), e)),
        }
    }

    fn open_for_header(&self, path: &Path) -> Result<Box<dyn Blob>> {
        Ok(Box::new(super::open_backing(
            &self.abs(path),
            &path.display().to_string(),
        )?))
    }

    fn mkdir(&self, path: &Path, mode: u32) -> Result<()> {
        fsutil::mkdir(&self.abs(path), mode).ctx(|| format!("mkdir {}", path.display()))
    }

    fn rmdir(&self, path: &Path) -> Result<()> {
        fs::remove_dir(self.abs(path)).ctx(|| format!("rmdir {}", path.display()))
    }

    fn unlink(&self, path: &Path) -> Result<bool> {
        let p = self.abs(path);
        match &self.trash {
            Some(t) => t.remove(&p),
            None => fs::remove_file(&p).map(|()| false),
        }
        .ctx(|| format!("unlink {}", path.display()))
    }

    fn symlink(&self, target: &Path, path: &Path) -> Result<()> {
        std::os::unix::fs::symlink(target, self.abs(path))
            .ctx(|| format!("symlink {}", path.display()))
    }

    fn readlink(&self, path: &Path) -> Result<PathBuf> {
        fs::read_link(self.abs(path)).ctx(|| format!("readlink {}", path.display()))
    }

    fn link(&self, from: &Path, to: &Path) -> Result<()> {
        fs::hard_link(self.abs(from), self.abs(to)).ctx(|| format!("link {}", to.display()))
    }

    fn rename(&self, from: &Path, to: &Path, flags: u32) -> Result<()> {
        fsutil::rename_flags(&self.abs(from), &self.abs(to), flags)
            .ctx(|| format!("rename {}", from.display()))
    }

    fn mknod(&self, path: &Path, mode: u32, rdev: u32) -> Result<()> {
        let p = cpath(&self.abs(path)).ctx(|| format!("mknod {}", path.display()))?;
        // SAFETY: p is NUL-terminated.
        check(unsafe { libc::mknod(p.as_ptr(), mode, libc::dev_t::from(rdev)) })
            .ctx(|| format!("mknod {}", path.display()))
    }

    fn set_attributes(&self, path: &Path, set: &SetAttributes) -> Result<()> {
        let p = self.abs(path);
        if set.uid.is_some() || set.gid.is_some() {
            lchown(&p, set.uid, set.gid).ctx(|| format!("chown {}", path.display()))?;
        }
        if let Some(mode) = set.mode {
            let m = fs::symlink_metadata(&p).ctx(|| format!("stat {}", path.display()))?;
            if !m.file_type().is_symlink() {
                fs::set_permissions(&p, fs::Permissions::from_mode(mode & 0o7777))
                    .ctx(|| format!("chmod {}", path.display()))?;
            }
        }
        if set.atime.is_some() || set.mtime.is_some() {
            utimens(&p, set.atime, set.mtime).ctx(|| format!("utimens {}", path.display()))?;
        }
        Ok(())
    }

    fn set_open_attributes(&self, file: &File, set: &SetAttributes) -> Result<()> {
        if set.uid.is_some() || set.gid.is_some() {
            fchown(file, set.uid, set.gid).ctx(|| "fchown".to_string())?;
        }
        if let Some(mode) = set.mode {
            fchmod(file, mode & 0o7777).ctx(|| "fchmod".to_string())?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            futimens(file, set.atime, set.mtime).ctx(|| "futimens".to_string())?;
        }
        Ok(())
    }

    fn xattr_get(&self, path: &Path, name: &[u8]) -> Result<Option<Vec<u8>>> {
        xattr::get(&self.abs(path), name).ctx(|| format!("getxattr {}", path.display()))
    }

    fn xattr_list(&self, path: &Path) -> Result<Vec<Vec<u8>>> {
        xattr::list(&self.abs(path)).ctx(|| format!("listxattr {}", path.display()))
    }

    fn xattr_set(&self, path: &Path, name: &[u8], value: &[u8], flags: i32) -> Result<()> {
        xattr::set(&self.abs(path), name, value, flags)
            .ctx(|| format!("setxattr {}", path.display()))
    }

    fn xattr_remove(&self, path: &Path, name: &[u8]) -> Result<()> {
        xattr::remove(&self.abs(path), name).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENODATA) {
                Error::NoAttribute("no such attribute".into())
            } else {
                Error::io(format!("removexattr {}", path.display()), e)
            }
        })
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        fsutil::sync_dir(&self.abs(dir)).ctx(|| format!("fsync {}", dir.display()))
    }

    fn statfs(&self) -> Result<StatFs> {
        let p = cpath(self.dir.root()).ctx(|| "statfs".to_string())?;
        // SAFETY: an all-zero statvfs is a valid value to be overwritten.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: p is NUL-terminated and s is a valid out-pointer.
        check(unsafe { libc::statvfs(p.as_ptr(), &mut s) }).ctx(|| "statfs".to_string())?;
        Ok(StatFs {
            blocks: s.f_blocks,
            bfree: s.f_bfree,
            bavail: s.f_bavail,
            files: s.f_files,
            ffree: s.f_ffree,
            bsize: u32::try_from(s.f_bsize).unwrap_or(4096),
            namelen: u32::try_from(s.f_namemax).unwrap_or(255).min(255),
            frsize: u32::try_from(s.f_frsize).unwrap_or(4096),
        })
    }

    fn make_room(&self) -> bool {
        match &self.trash {
            Some(t) if t.pending() > 0 => {
                t.empty();
                true
            }
            _ => false,
        }
    }

    fn shutdown(&self) {
        if let Some(t) = &self.trash {
            t.shutdown();
        }
    }
}
