//! Small file-system helpers with the durability rules the store relies on.
#![allow(unsafe_code)]

use crate::error::{Error, IoContext, Result};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// A path as a C string (EINVAL if it holds a NUL).
pub(crate) fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// 0 → Ok, else the errno of the failed call.
pub(crate) fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Replaces `path` atomically: temp file beside it, write, fsync, rename, fsync the directory.
/// A crash leaves either the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::InvalidArgument(format!("{} has no parent", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per call: threads of one process may replace the same file concurrently.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(format!("writing {}", path.display()), e)
    })
}

/// Takes an exclusive flock without waiting: `Ok(false)` if another process holds it.
pub fn try_flock_exclusive(f: &File) -> io::Result<bool> {
    // SAFETY: the fd is open for the borrow's duration.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Removes everything inside `dir` (leftover temporaries after a crash).
pub fn clear_dir(dir: &Path) -> Result<()> {
    for e in fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
        let e = e.ctx(|| format!("listing {}", dir.display()))?;
        let p = e.path();
        let r = if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        r.ctx(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

/// mkdir with an explicit mode (subject to the umask, as mkdir(2)).
pub fn mkdir(path: &Path, mode: u32) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: p is NUL-terminated.
    check(unsafe { libc::mkdir(p.as_ptr(), mode) })
}

/// rename that fails with EEXIST instead of replacing.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    rename_flags(from, to, libc::RENAME_NOREPLACE)
}

/// renameat2 with flags (RENAME_NOREPLACE, RENAME_EXCHANGE).
pub fn rename_flags(from: &Path, to: &Path, flags: u32) -> io::Result<()> {
    let f = cpath(from)?;
    let t = cpath(to)?;
    // SAFETY: both paths are NUL-terminated; AT_FDCWD makes them relative to the cwd.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    })
}

/// syncfs(2) on the filesystem holding `f`.
pub fn syncfs(f: &File) -> io::Result<()> {
    // SAFETY: the fd is open for the borrow's duration.
    check(unsafe { libc::syncfs(f.as_raw_fd()) })
}

/// fsync of a directory.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Starts writeback of the file's dirty pages without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): the disk works while the caller goes on, so a
/// later fsync has less left to wait for. Not a durability point.
pub fn start_writeback(f: &File) -> io::Result<()> {
    // SAFETY: a valid open descriptor; offset 0 and length 0 mean the whole file.
    let r = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Gives an unnamed (`O_TMPFILE`) file the name `to`; EEXIST if `to` exists. Uses
/// `AT_EMPTY_PATH` where allowed (it needs CAP_DAC_READ_SEARCH), else the file's
/// `/proc/self/fd` link.
pub fn link_unnamed(f: &File, to: &Path) -> io::Result<()> {
    let to_c = CString::new(to.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let empty = c"";
    // SAFETY: valid descriptor and NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::linkat(
            f.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOENT)) {
        return Err(e);
    }
    let proc_c = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: as above.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Starts reading `len` bytes at `off` of the file into the page cache without waiting
/// (`posix_fadvise(POSIX_FADV_WILLNEED)`). Only a hint.
pub fn will_need(f: &File, off: u64, len: u64) -> io::Result<()> {
    let (Ok(off), Ok(len)) = (i64::try_from(off), i64::try_from(len)) else {
        return Ok(());
    };
    // SAFETY: a valid open descriptor; the range is only a hint.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), off, len, libc::POSIX_FADV_WILLNEED) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}
