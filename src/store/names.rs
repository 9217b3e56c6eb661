//! The names interface of the storage seam: what the filesystem (`vfs`) does to the names in a
//! store's buckets. The objects' headers and bodies go through [`super::seam`] (`Blob`,
//! `NewObject`); this is the rest of POSIX: lookup, list, create, rename, link, unlink,
//! mkdir, rmdir, symlink, nodes, attributes and user xattrs.
//!
//! A name is a path relative to the store: the empty path is the store's root (whose
//! directories are the buckets), `BUCKET` a bucket, `BUCKET/a/b` an entry in it. The
//! local-directory implementation is [`super::local_names::LocalNames`]; what each operation
//! promises, and how an object store keeps those promises, is in docs/ARCHITECTURE.md
//! ("The storage seam").

use super::seam::Blob;
use crate::error::Result;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

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

/// What a backend knows of a name (for an object: its backing size, the ciphertext's).
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// The backend's number for the node, stable while it exists; names of one node share it
    /// (hard links).
    pub ino: u64,
    /// Its kind.
    pub kind: Kind,
    /// The whole mode (kind, set-id, sticky and permission bits).
    pub mode: u32,
    /// Its names.
    pub nlink: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes of what is stored (for an object: preamble and chunks).
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Device number (device nodes).
    pub rdev: u64,
    /// Preferred I/O size.
    pub blksize: u64,
    /// Access time.
    pub atime: SystemTime,
    /// Modification time.
    pub mtime: SystemTime,
    /// Change time.
    pub ctime: SystemTime,
    /// Birth time, where the backend keeps one (tells a reused node number from the old node).
    pub birth: Option<SystemTime>,
}

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// Its name in the directory.
    pub name: OsString,
    /// The backend's node number ([`Meta::ino`]).
    pub ino: u64,
    /// Its kind.
    pub kind: Kind,
}

/// A time to set: now, or a given time.
#[derive(Debug, Clone, Copy)]
pub enum SetTime {
    /// The current time.
    Now,
    /// This time.
    At(SystemTime),
}

/// Attributes to change, in this order: owner and group, then mode, then times (a chown
/// clears set-id bits; a mode given after it puts back the ones asked for).
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttributes {
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New permission, set-id and sticky bits (not applied to a symlink: it has none).
    pub mode: Option<u32>,
    /// New access time.
    pub atime: Option<SetTime>,
    /// New modification time.
    pub mtime: Option<SetTime>,
}

impl SetAttributes {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.uid.is_none()
            && self.gid.is_none()
            && self.mode.is_none()
            && self.atime.is_none()
            && self.mtime.is_none()
    }
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

/// The names of a store, as the filesystem uses them. Paths are relative to the store (see
/// the module's documentation). Errors carry the errno the filesystem answers with (ENOENT,
/// EEXIST, ENOTEMPTY, EXDEV, ...), through [`crate::error::Error`].
pub trait Names: Send + Sync {
    /// lstat: what is at `path` (a symlink is not followed).
    fn stat(&self, path: &Path) -> Result<Meta>;
    /// fstat of an opened object's content ([`Names::open`]).
    fn stat_open(&self, file: &File) -> Result<Meta>;
    /// The entries of directory `dir` (without `.` and `..`), in the backend's order.
    fn list(&self, dir: &Path) -> Result<Vec<DirEntry>>;
    /// Every object under directory `dir`, as paths relative to it, sorted. Entries removed
    /// while it runs are passed over.
    fn walk_objects(&self, dir: &Path) -> Result<Vec<PathBuf>>;
    /// Opens an object's content: read-write unless `write` is false or the object cannot
    /// be written (then read-only). A symlink is not followed (ELOOP).
    fn open(&self, path: &Path, write: bool) -> Result<File>;
    /// Opens an object to read or replace its header (its access time is left alone where
    /// the backend can). ENOENT is "no object PATH".
    fn open_for_header(&self, path: &Path) -> Result<Box<dyn Blob>>;
    /// An object was just created through [`super::object::create_object_in`] at `path`,
    /// and `file` (its body) stays open in the filesystem as if [`Names::open`] had
    /// returned it.
    fn created(&self, _path: &Path, _file: &File) -> Result<()> {
        Ok(())
    }
    /// Makes what was written to an opened object's content (`file`, from [`Names::open`]
    /// or [`Names::created`]) reach the store, with its header: `path` is its name now, None
    /// when it has none any more (unlinked: nothing to publish). Returns when the store has
    /// it (durably with `durable`). A local store writes in place: nothing to do.
    fn commit(&self, _path: Option<&Path>, _file: &File, _durable: bool) -> Result<()> {
        Ok(())
    }
    /// Something at or below `path` changed behind the filesystem's back (a command through
    /// the control file): forget what is cached of it. The empty path: the buckets.
    fn invalidate(&self, _path: &Path) {}
    /// Whether an opened object's content is the stored object itself, written in place
    /// (a local store), so that [`Names::commit`] has nothing to do.
    fn writes_in_place(&self) -> bool {
        true
    }
    /// Bytes `[start, end)` of an opened object's content (`file`, from [`Names::open`]) are
    /// about to be read or written (`end` u64::MAX: all of it, for a truncate): where the
    /// content is fetched as it is needed (an object store), they are fetched now.
    fn prepare(&self, _file: &File, _start: u64, _end: u64) -> Result<()> {
        Ok(())
    }
    /// An opened object's content is about to be cut or extended to `backing_len` bytes:
    /// where content is fetched as it is needed, what stays is fetched now and what goes
    /// is never fetched.
    fn truncating(&self, _file: &File, _backing_len: u64) -> Result<()> {
        Ok(())
    }
    /// The filesystem closed an opened object's content for good.
    fn closed(&self, _file: &File) {}
    /// mkdir(2) with `mode` (the process umask applies, as to mkdir(2): the mount daemon's is
    /// 0). EEXIST if the name is taken.
    fn mkdir(&self, path: &Path, mode: u32) -> Result<()>;
    /// rmdir: ENOTEMPTY unless empty.
    fn rmdir(&self, path: &Path) -> Result<()>;
    /// unlink of a name that is not a directory. Returns true when the content is deleted
    /// later ([`Names::make_room`]), so that open handles and the kernel still see it.
    fn unlink(&self, path: &Path) -> Result<bool>;
    /// symlink(2): `path` points to `target`.
    fn symlink(&self, target: &Path, path: &Path) -> Result<()>;
    /// readlink(2).
    fn readlink(&self, path: &Path) -> Result<PathBuf>;
    /// A hard link `to` of the node at `from` (within a bucket).
    fn link(&self, from: &Path, to: &Path) -> Result<()>;
    /// rename(2) with its flags (RENAME_NOREPLACE, RENAME_EXCHANGE): atomic for one name.
    fn rename(&self, from: &Path, to: &Path, flags: u32) -> Result<()>;
    /// mknod(2) of a fifo, socket or device node (objects are made through
    /// [`super::object::create_object_in`]).
    fn mknod(&self, path: &Path, mode: u32, rdev: u32) -> Result<()>;
    /// Changes attributes of the node at `path`.
    fn set_attributes(&self, path: &Path, set: &SetAttributes) -> Result<()>;
    /// Changes attributes of an opened object ([`Names::open`]): this works after it was
    /// renamed or unlinked too.
    fn set_open_attributes(&self, file: &File, set: &SetAttributes) -> Result<()>;
    /// A user xattr's value, or None.
    fn xattr_get(&self, path: &Path, name: &[u8]) -> Result<Option<Vec<u8>>>;
    /// The names of the xattrs of the node at `path`.
    fn xattr_list(&self, path: &Path) -> Result<Vec<Vec<u8>>>;
    /// Sets a user xattr (`flags`: XATTR_CREATE, XATTR_REPLACE).
    fn xattr_set(&self, path: &Path, name: &[u8], value: &[u8], flags: i32) -> Result<()>;
    /// Removes a user xattr (ENODATA when it is not there).
    fn xattr_remove(&self, path: &Path, name: &[u8]) -> Result<()>;
    /// Makes the names in directory `dir` durable (after a rename into it).
    fn sync_dir(&self, dir: &Path) -> Result<()>;
    /// Space and nodes of what holds the store.
    fn statfs(&self) -> Result<StatFs>;
    /// Deletes what [`Names::unlink`] left for later, now (a write that found the disk
    /// full tries again after it). Returns false if nothing was waiting.
    fn make_room(&self) -> bool;
    /// Ends deferred deletion (at unmount); later unlinks delete at once.
    fn shutdown(&self);
}
