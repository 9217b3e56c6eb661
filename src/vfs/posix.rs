//! Attribute types of the vfs and the few POSIX calls std does not wrap.
#![allow(unsafe_code)]

use std::fs::{File, FileType, Metadata};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// File kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Regular file (an object).
    File,
    /// Directory (a bucket or a prefix).
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// Unix socket.
    Socket,
}

/// Attributes as the vfs reports them (plaintext size for objects).
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Access time.
    pub atime: SystemTime,
    /// Modification time.
    pub mtime: SystemTime,
    /// Change time.
    pub ctime: SystemTime,
    /// Kind.
    pub kind: Kind,
    /// Permission bits (with set-id and sticky bits).
    pub perm: u16,
    /// Links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number.
    pub rdev: u32,
    /// Preferred I/O size.
    pub blksize: u32,
}

/// A time to set: now, or a given time.
#[derive(Debug, Clone, Copy)]
pub enum SetTime {
    /// The current time.
    Now,
    /// This time.
    At(SystemTime),
}

/// statfs numbers.
#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    /// Total blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Blocks available to unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
    /// Longest name.
    pub namelen: u32,
    /// Fragment size.
    pub frsize: u32,
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
pub fn kind_of(t: &FileType) -> Kind {
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

/// Attributes from backing metadata (size is the backing size; the caller converts).
pub fn attr_from_meta(m: &Metadata, ino: u64) -> Attr {
    Attr {
        ino,
        size: m.len(),
        blocks: m.blocks(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        kind: kind_of(&m.file_type()),
        perm: u16::try_from(m.mode() & 0o7777).unwrap_or(0),
        nlink: u32::try_from(m.nlink()).unwrap_or(u32::MAX),
        uid: m.uid(),
        gid: m.gid(),
        rdev: u32::try_from(m.rdev()).unwrap_or(0),
        blksize: u32::try_from(m.blksize()).unwrap_or(4096),
    }
}

use crate::store::fsutil::{check, cpath};

/// lchown with optional owner and group.
pub fn lchown(path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: p is NUL-terminated; u32::MAX (-1) means "leave unchanged".
    check(unsafe { libc::lchown(p.as_ptr(), uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX)) })
}

/// fchown.
pub fn fchown(f: &File, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: the fd is open for the borrow's duration.
    check(unsafe { libc::fchown(f.as_raw_fd(), uid, gid) })
}

/// fchown with optional owner and group.
pub fn fchown_opt(f: &File, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    // SAFETY: the fd is open for the borrow's duration; u32::MAX (-1) leaves a field unchanged.
    check(unsafe {
        libc::fchown(
            f.as_raw_fd(),
            uid.unwrap_or(u32::MAX),
            gid.unwrap_or(u32::MAX),
        )
    })
}

/// futimens.
pub fn futimens(f: &File, atime: Option<SetTime>, mtime: Option<SetTime>) -> io::Result<()> {
    let ts = [timespec(atime), timespec(mtime)];
    // SAFETY: the fd is open for the borrow's duration and ts points to two timespecs.
    check(unsafe { libc::futimens(f.as_raw_fd(), ts.as_ptr()) })
}

/// fchmod.
pub fn fchmod(f: &File, mode: u32) -> io::Result<()> {
    // SAFETY: the fd is open for the borrow's duration.
    check(unsafe { libc::fchmod(f.as_raw_fd(), mode) })
}

/// mknod.
pub fn mknod(path: &Path, mode: u32, rdev: u32) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: p is NUL-terminated.
    check(unsafe { libc::mknod(p.as_ptr(), mode, libc::dev_t::from(rdev)) })
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

/// utimensat without following symlinks.
pub fn utimens(path: &Path, atime: Option<SetTime>, mtime: Option<SetTime>) -> io::Result<()> {
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

/// statvfs of the backing filesystem.
pub fn statfs(path: &Path) -> io::Result<StatFs> {
    let p = cpath(path)?;
    // SAFETY: an all-zero statvfs is a valid value to be overwritten.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: p is NUL-terminated and s is a valid out-pointer.
    check(unsafe { libc::statvfs(p.as_ptr(), &mut s) })?;
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

/// CAP_FSETID's bit in a capability set.
const CAP_FSETID: u32 = 4;

/// Whether the thread `tid` (a FUSE request's caller) lacks CAP_FSETID in its effective
/// set, read from `/proc/TID/status`. A caller that cannot be looked at (it exited) counts
/// as lacking it: clearing set-id bits is the safe side.
pub fn lacks_cap_fsetid(tid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return true;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_none_or(|caps| caps & (1 << CAP_FSETID) == 0)
}
