//! The thin `fuser::Filesystem` adapter over [`Vfs`]: translate arguments, call the vfs,
//! turn `Ok` into a reply and `Err` into `reply.error(e.errno())`. A panic in a handler is
//! caught here and answered with EIO, so it never hangs the mount.

use crate::error::Error;
use crate::vfs::{Attr, Kind, NodeKind, SetTime, Vfs};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use std::cell::RefCell;
use std::ffi::OsStr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Attribute and entry cache lifetime given to the kernel (see docs/CACHING.md).
pub const TTL: Duration = Duration::from_secs(10);
/// How long the kernel may cache control-tree entries and attributes (their set changes as
/// buckets and work requests come and go).
pub const CONTROL_TTL: Duration = Duration::from_secs(1);

/// The cache timeout for an inode's entry and attributes.
fn ttl(ino: u64) -> &'static Duration {
    if is_control(ino) {
        &CONTROL_TTL
    } else {
        &TTL
    }
}
/// Largest write the kernel sends in one request.
pub const MAX_WRITE: u32 = 1 << 20;

/// With the `panic-on-lookup` fault (see [`crate::fault`]), a lookup of this name panics
/// inside the handler, to prove that a panic is answered with EIO and does not take a worker
/// thread or the mount down.
pub const PANIC_NAME: &str = "envelopefs-fault-panic";

/// The adapter.
pub struct EnvelopeFuse {
    vfs: Arc<Vfs>,
    panic_on_lookup: bool,
}

impl EnvelopeFuse {
    /// Wraps a vfs.
    pub fn new(vfs: Arc<Vfs>) -> Self {
        let panic_on_lookup = crate::fault::enabled("panic-on-lookup");
        EnvelopeFuse {
            vfs,
            panic_on_lookup,
        }
    }

    /// Open flags of an object handle. Cached pages survive close and open
    /// (`FOPEN_KEEP_CACHE`, docs/CACHING.md). A write-only handle bypasses the page cache
    /// (`FOPEN_DIRECT_IO`): nothing can be read through it, and a write then goes straight to
    /// the daemon instead of being copied into cache pages first, and skips the kernel's
    /// `security.capability` lookup (a GETXATTR round trip) before every write. The kernel
    /// drops cached pages of the written range, so other handles and mappings read the new
    /// bytes. Not with the writeback cache: whoever turns it on wants small writes gathered
    /// in the cache, and write-only handles (loggers, shell appends) make most of them.
    fn object_open_flags(&self, flags: i32) -> FopenFlags {
        if flags & libc::O_ACCMODE == libc::O_WRONLY && !self.vfs.options().writeback_cache {
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::FOPEN_KEEP_CACHE
        }
    }
}

fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

/// Runs a handler body, mapping errors and panics to an errno.
fn guard<T>(op: &str, f: impl FnOnce() -> crate::Result<T>) -> Result<T, Errno> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            let n = e.errno();
            if n == libc::EIO || n == libc::ENOKEY {
                tracing::warn!("{op} failed, errno {n}: {e}");
            } else {
                tracing::debug!("{op} failed, errno {n}: {e}");
            }
            Err(errno(&e))
        }
        Err(_) => {
            tracing::error!("{op}: internal error (panic caught), answered EIO");
            Err(Errno::EIO)
        }
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
        Kind::Socket => FileType::Socket,
    }
}

fn fattr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(s) => SetTime::At(s),
    })
}

fn is_control(ino: u64) -> bool {
    NodeKind::of(ino) == NodeKind::Control
}

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl fuser::Filesystem for EnvelopeFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        let mut want = InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_MAX_PAGES;
        if self.vfs.options().writeback_cache {
            want |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        if !self.vfs.options().kernel_checks {
            // The filesystem clears set-id bits itself (Vfs::kill_suidgid): the kernel then
            // skips the GETATTR it sends before every chown (one per file in tar -x).
            want |= InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        }
        let want = want & config.capabilities();
        if let Err(unsupported) = config.add_capabilities(want) {
            tracing::warn!("kernel refused FUSE capabilities {unsupported:?}");
        }
        Ok(())
    }

    fn destroy(&mut self) {
        self.vfs.stop_workers();
        self.vfs.destroy();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match guard("lookup", || {
            if self.panic_on_lookup && name == PANIC_NAME {
                panic!("fault injection: panic in lookup");
            }
            self.vfs.lookup(parent.0, name)
        }) {
            Ok(a) => reply.entry(ttl(a.ino), &fattr(&a), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _ = guard("forget", || {
            self.vfs.forget(ino.0, nlookup);
            Ok(())
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match guard("getattr", || self.vfs.getattr(ino.0, fh.map(|f| f.0))) {
            Ok(a) => reply.attr(ttl(a.ino), &fattr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = guard("setattr", || {
            self.vfs.setattr(
                ino.0,
                mode,
                uid,
                gid,
                size,
                set_time(atime),
                set_time(mtime),
                fh.map(|f| f.0),
                req.pid(),
            )
        });
        match r {
            Ok(a) => reply.attr(ttl(a.ino), &fattr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match guard("readlink", || self.vfs.readlink(ino.0)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        match guard("mknod", || {
            self.vfs
                .mknod(parent.0, name, mode, rdev, req.uid(), req.gid())
        }) {
            Ok(a) => reply.entry(ttl(a.ino), &fattr(&a), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match guard("mkdir", || {
            self.vfs.mkdir(parent.0, name, mode, req.uid(), req.gid())
        }) {
            Ok(a) => reply.entry(ttl(a.ino), &fattr(&a), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match guard("unlink", || self.vfs.unlink(parent.0, name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match guard("rmdir", || self.vfs.rmdir(parent.0, name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        match guard("symlink", || {
            self.vfs
                .symlink(parent.0, link_name, target, req.uid(), req.gid())
        }) {
            Ok(a) => reply.entry(ttl(a.ino), &fattr(&a), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match guard("rename", || {
            self.vfs
                .rename(parent.0, name, newparent.0, newname, flags.bits())
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match guard("link", || self.vfs.link(ino.0, newparent.0, newname)) {
            Ok(a) => reply.entry(ttl(a.ino), &fattr(&a), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match guard("open", || self.vfs.open(ino.0, flags.0, req.pid())) {
            Ok(fh) => {
                let f = if is_control(ino.0) {
                    FopenFlags::FOPEN_DIRECT_IO
                } else {
                    self.object_open_flags(flags.0)
                };
                reply.opened(FileHandle(fh), f)
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        READ_BUF.with(|b| {
            let mut buf = b.borrow_mut();
            match guard("read", || {
                self.vfs.read(ino.0, fh.0, offset, size, &mut buf)
            }) {
                Ok(()) => reply.data(&buf),
                Err(e) => reply.error(e),
            }
            // A control reply may carry a plaintext (kms decrypt): no copy stays behind.
            if is_control(ino.0) {
                zeroize::Zeroize::zeroize(&mut *buf);
            }
        })
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match guard("write", || {
            let n = self.vfs.write(ino.0, fh.0, offset, data)?;
            // Set for a writer without CAP_FSETID, with FUSE_HANDLE_KILLPRIV_V2 or on a
            // direct (write-only) handle.
            if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) && !is_control(ino.0) {
                self.vfs.kill_suidgid(fh.0)?;
            }
            Ok(n)
        }) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // On a local store writes reach the backing file as they come; nothing is buffered
        // here, and locks are the kernel's own. ENOSYS tells the kernel so once: it stops
        // sending FLUSH at every close (one round trip less per file for cp, tar and
        // editors). With the writeback cache, the kernel still writes dirty pages back at
        // close and reports their errors. In an object store, close publishes the content.
        if !self.vfs.wants_flush() {
            return reply.error(Errno::from_i32(libc::ENOSYS));
        }
        match guard("flush", || self.vfs.flush(ino.0, fh.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _ = guard("release", || {
            self.vfs.release(ino.0, fh.0);
            Ok(())
        });
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match guard("fsync", || self.vfs.fsync(ino.0, fh.0, datasync)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match guard("opendir", || self.vfs.opendir(ino.0)) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = guard("readdir", || {
            self.vfs
                .readdir(fh.0, offset, &mut |ino, next, kind, name| {
                    reply.add(INodeNo(ino), next, file_type(kind), name)
                })
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.vfs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match guard("fsyncdir", || self.vfs.store().sync_all()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match guard("statfs", || self.vfs.statfs()) {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        match guard("setxattr", || self.vfs.setxattr(ino.0, name, value, flags)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match guard("getxattr", || self.vfs.getxattr(ino.0, name)) {
            Ok(v) => xattr_reply(reply, size, &v),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match guard("listxattr", || self.vfs.listxattr(ino.0)) {
            Ok(v) => xattr_reply(reply, size, &v),
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match guard("removexattr", || self.vfs.removexattr(ino.0, name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match guard("access", || self.vfs.access(ino.0, mask.bits())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match guard("create", || {
            self.vfs
                .create(parent.0, name, mode, flags, req.uid(), req.gid())
        }) {
            Ok((a, fh)) => reply.created(
                &TTL,
                &fattr(&a),
                Generation(0),
                FileHandle(fh),
                self.object_open_flags(flags),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // No ioctls (isatty() and the like ask; the answer is "not a terminal").
        reply.error(Errno::from_i32(libc::ENOTTY));
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match guard("fallocate", || {
            self.vfs.fallocate(fh.0, offset, length, mode)
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

fn xattr_reply(reply: ReplyXattr, size: u32, v: &[u8]) {
    if size == 0 {
        reply.size(u32::try_from(v.len()).unwrap_or(u32::MAX));
    } else if v.len() > size as usize {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(v);
    }
}
