//! The one place that calls the xattr system calls.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Name of the object header xattr.
pub const HEADER: &str = "user.envelopefs.header";
/// Name of the bucket record xattr.
pub const BUCKET: &str = "user.envelopefs.bucket";

use super::fsutil::{check, cpath};

fn cname(n: &[u8]) -> io::Result<CString> {
    CString::new(n).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn ret_len(r: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(r).map_err(|_| io::Error::last_os_error())
}

/// Calls `call` with a growing buffer until the value fits: the get/list pattern of the
/// xattr system calls (ERANGE means "buffer too small").
fn read_growing(
    start: usize,
    max: usize,
    mut call: impl FnMut(&mut [u8]) -> libc::ssize_t,
) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; start];
    loop {
        match ret_len(call(&mut buf)) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(Some(buf));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < max => {
                buf.resize(buf.len() * 4, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads an xattr of a path (not following symlinks). `Ok(None)` if absent.
pub fn get(path: &Path, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let p = cpath(path)?;
    let n = cname(name)?;
    read_growing(256, 1 << 16, |buf| {
        // SAFETY: p and n are valid NUL-terminated strings; buf is valid for buf.len() bytes.
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
    })
}

/// Reads an xattr of an open file. `Ok(None)` if absent.
pub fn fget(fd: &impl AsRawFd, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let n = cname(name)?;
    read_growing(256, 1 << 16, |buf| {
        // SAFETY: the fd is open for the borrow's duration; n is NUL-terminated; buf is valid.
        unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                n.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    })
}

/// Sets an xattr of a path (not following symlinks). `flags`: 0, XATTR_CREATE or XATTR_REPLACE.
pub fn set(path: &Path, name: &[u8], value: &[u8], flags: i32) -> io::Result<()> {
    let p = cpath(path)?;
    let n = cname(name)?;
    // SAFETY: valid NUL-terminated strings and a valid value slice.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    check(r)
}

/// Sets an xattr of an open file.
pub fn fset(fd: &impl AsRawFd, name: &[u8], value: &[u8], flags: i32) -> io::Result<()> {
    let n = cname(name)?;
    // SAFETY: the fd is open for the borrow's duration; valid name and value.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    check(r)
}

/// Removes an xattr of a path (not following symlinks).
pub fn remove(path: &Path, name: &[u8]) -> io::Result<()> {
    let p = cpath(path)?;
    let n = cname(name)?;
    // SAFETY: valid NUL-terminated strings.
    let r = unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) };
    check(r)
}

/// Lists xattr names of a path (not following symlinks).
pub fn list(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let p = cpath(path)?;
    let buf = read_growing(1024, 1 << 20, |buf| {
        // SAFETY: p is NUL-terminated and buf valid for its length.
        unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
    })?
    .unwrap_or_default();
    Ok(buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}
