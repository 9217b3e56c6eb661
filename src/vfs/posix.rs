//! The attributes the vfs reports (from the names interface's [`Meta`]), and what it asks of
//! the kernel about a caller.

use crate::store::names::Meta;
pub use crate::store::names::{Kind, SetTime, StatFs};
use std::time::SystemTime;

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

/// Attributes from a name's metadata (size is the backing size; the caller converts).
pub fn attr_from_meta(m: &Meta, ino: u64) -> Attr {
    Attr {
        ino,
        size: m.size,
        blocks: m.blocks,
        atime: m.atime,
        mtime: m.mtime,
        ctime: m.ctime,
        kind: m.kind,
        perm: u16::try_from(m.mode & 0o7777).unwrap_or(0),
        nlink: u32::try_from(m.nlink).unwrap_or(u32::MAX),
        uid: m.uid,
        gid: m.gid,
        rdev: u32::try_from(m.rdev).unwrap_or(0),
        blksize: u32::try_from(m.blksize).unwrap_or(4096),
    }
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
