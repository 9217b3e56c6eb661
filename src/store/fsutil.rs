//! Small file-system helpers with the durability rules the store relies on.
#![allow(unsafe_code)]

use crate::error::{Error, IoContext, Result};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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
    replace_file(path, bytes, mode, Replace::Durable)
}

/// How much of a [`replace_file`] must be on disk when it returns.
pub enum Replace<'a> {
    /// The new content, then the rename: after a crash the file is the new one.
    Durable,
    /// The new content only (no directory fsync): after a crash the file is the old one or
    /// the new one, each whole. For records whose older version is also a valid state.
    ContentOnly,
    /// `flush` instead of the file's own fsync (a syncfs that makes other writes durable in
    /// the same flush), then the rename and the directory fsync. The new file never becomes
    /// visible before `flush` has succeeded.
    DurableAfter(&'a dyn Fn() -> Result<()>),
}

/// Replaces `path` through a temp file beside it and a rename, so that no crash leaves a
/// torn or empty file: the new content is flushed before the rename makes it visible.
/// On error the temp file is removed and `path` is left as it was.
pub fn replace_file(path: &Path, bytes: &[u8], mode: u32, how: Replace<'_>) -> Result<()> {
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
    let what = || format!("writing {}", path.display());
    let write = || -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .ctx(what)?;
        // Exactly `mode`, whatever the umask took from it.
        if umask_may_clear(mode) {
            f.set_permissions(fs::Permissions::from_mode(mode))
                .ctx(what)?;
        }
        f.write_all(bytes).ctx(what)?;
        match &how {
            Replace::Durable | Replace::ContentOnly => f.sync_all().ctx(what)?,
            Replace::DurableAfter(flush) => flush()?,
        }
        fs::rename(&tmp, path).ctx(what)?;
        if !matches!(how, Replace::ContentOnly) {
            File::open(dir).and_then(|d| d.sync_all()).ctx(what)?;
        }
        Ok(())
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
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

/// The process's umask, read once from `/proc/self/status` (all bits if it cannot be read, so
/// that callers put modes right). The mount daemon clears its umask before it creates
/// anything and never sets it again; the CLI keeps the user's.
pub fn process_umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o777)
    })
}

/// Whether the umask may have taken bits from a file just created with `mode` (so it needs a
/// chmod to have exactly `mode`). False in the mount daemon: no extra system call per create.
pub fn umask_may_clear(mode: u32) -> bool {
    process_umask() & mode & 0o777 != 0
}

/// Gives an open file or directory exactly the permission bits `mode` (a no-op when it has
/// them): what the umask took at creation, or an older version left, is put right.
pub fn set_mode(f: &File, mode: u32) -> io::Result<()> {
    if f.metadata()?.permissions().mode() & 0o7777 != mode {
        f.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Opens a directory without following a symlink (for [`set_mode`]).
fn open_dir_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
}

/// mkdir with exactly the permission bits and sticky bit of `mode`, whatever the umask
/// (mkdir, then fchmod of the new directory, opened without following a symlink). As with
/// mkdir(2), other bits of `mode` are ignored and a set-group-id bit inherited from the
/// parent is kept.
pub fn mkdir_exact(path: &Path, mode: u32) -> io::Result<()> {
    let mode = mode & 0o1777;
    mkdir(path, mode)?;
    let d = open_dir_nofollow(path)?;
    let inherited = d.metadata()?.permissions().mode() & 0o2000;
    set_mode(&d, inherited | mode)
}

/// Makes sure the directory `path` exists with exactly the mode `mode`: created if absent,
/// its mode put right if present (a symlink or a file there is an error).
pub fn ensure_dir(path: &Path, mode: u32) -> io::Result<()> {
    match mkdir(path, mode) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    set_mode(&open_dir_nofollow(path)?, mode)
}

/// `create_dir_all` whose new directories get exactly `mode` (those already there are left
/// as they are).
pub fn create_dir_all_exact(path: &Path, mode: u32) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all_exact(parent, mode)?;
    }
    match mkdir_exact(path, mode) {
        // Made by someone else meanwhile: theirs to keep.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        r => r,
    }
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

/// This process's effective user and group ids.
pub fn effective_ids() -> (u32, u32) {
    // SAFETY: geteuid and getegid have no preconditions.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n != "rec.json")
            .collect()
    }

    #[test]
    fn every_replace_mode_leaves_the_new_content_and_no_temp_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("rec.json");
        fs::write(&p, b"old").expect("write");
        let flush = || Ok(());
        for (i, how) in [
            Replace::Durable,
            Replace::ContentOnly,
            Replace::DurableAfter(&flush),
        ]
        .into_iter()
        .enumerate()
        {
            let new = format!("new {i}");
            replace_file(&p, new.as_bytes(), 0o640, how).expect("replace");
            assert_eq!(fs::read(&p).expect("read"), new.as_bytes());
            assert!(leftovers(d.path()).is_empty(), "{:?}", leftovers(d.path()));
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }

    #[test]
    fn the_new_file_is_not_visible_before_the_flush_and_a_failed_flush_keeps_the_old() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("rec.json");
        fs::write(&p, b"old").expect("write");
        let calls = Cell::new(0);
        let seen_then = || {
            calls.set(calls.get() + 1);
            assert_eq!(
                fs::read(&p).expect("read"),
                b"old",
                "renamed before the flush"
            );
            Ok(())
        };
        replace_file(&p, b"new", 0o644, Replace::DurableAfter(&seen_then)).expect("replace");
        assert_eq!(calls.get(), 1);
        assert_eq!(fs::read(&p).expect("read"), b"new");

        let failing = || Err(Error::io("syncfs", io::Error::from_raw_os_error(libc::EIO)));
        let e = replace_file(&p, b"newer", 0o644, Replace::DurableAfter(&failing))
            .expect_err("a failed flush fails the replace");
        assert!(e.to_string().contains("syncfs"), "{e}");
        assert_eq!(fs::read(&p).expect("read"), b"new");
        assert!(leftovers(d.path()).is_empty(), "{:?}", leftovers(d.path()));
    }
}
