//! Filesystem semantics over the store, not tied to the fuser bindings.
//!
//! Inodes are path-based (see [`inodes`]); an inode's number is the backing inode number
//! plus [`INO_BASE`] (so hard links share one inode and numbers are stable across mounts). Open regular files share one [`ObjectIo`] per
//! inode, whose DEK is unwrapped once at the first open. Locks are per table, never one lock
//! for the whole filesystem; object I/O takes only the object's own lock.
#![allow(unsafe_code)]

pub mod control;
mod inodes;
mod posix;

use crate::error::{Error, IoContext, Result};
use crate::format::hex;
use crate::format::records::{BucketRecord, Wrapping};
use crate::keys::keystore::key_id_text;
use crate::ops::rewrap::{self, Target};
use crate::store::object::{self, ObjectIo};
use crate::store::trash::Trash;
use crate::store::{fsutil, read_bucket_record, xattr, Store, META_DIR};
pub use posix::{Attr, Kind, SetTime, StatFs};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

/// The root inode.
pub const ROOT: u64 = 1;
/// Inode numbers below this are reserved for the root and the control tree.
pub const INO_BASE: u64 = 1 << 20;

/// Read-only virtual xattrs of objects.
pub const XATTR_KEY_ID: &str = "user.envelopefs.key-id";
/// See [`XATTR_KEY_ID`].
pub const XATTR_KEY_VERSION: &str = "user.envelopefs.key-version";
/// See [`XATTR_KEY_ID`].
pub const XATTR_OBJECT_ID: &str = "user.envelopefs.object-id";
/// See [`XATTR_KEY_ID`].
pub const XATTR_ENCRYPTION: &str = "user.envelopefs.encryption";
/// Writing this xattr rewraps the object (value `latest` or a key id).
pub const XATTR_REENCRYPT: &str = "user.envelopefs.reencrypt";
const XATTR_PREFIX: &[u8] = b"user.envelopefs.";

/// One open object shared by all handles of an inode.
pub struct OpenObject {
    io: RwLock<ObjectIo>,
    /// Backing inode number (a rekey refuses objects that are open).
    backing_ino: u64,
    /// The fingerprint of the customer key it was opened with (SSE-C objects): a new open
    /// that would share this object needs the key loaded still.
    customer: Option<[u8; 32]>,
    /// The backing file may carry set-user-id or set-group-id. Only then does clearing
    /// them after a write or truncate look at the file (writers without CAP_FSETID send
    /// the kill flag with every write). Set from the mode at open and by every chmod; it
    /// may be true of a file without such bits, never false of one with them.
    setid: AtomicBool,
}

/// The mount's key ring, noting which customer key an open asked for.
struct NoteCustomer<'a> {
    ring: &'a control::Control,
    asked: std::cell::Cell<Option<[u8; 32]>>,
}

impl object::CustomerKeys for NoteCustomer<'_> {
    fn customer_key(&self, fingerprint: &[u8; 32]) -> Option<crate::keys::crypto::Key32> {
        self.asked.set(Some(*fingerprint));
        self.ring.customer_key(fingerprint)
    }
}

struct Handle {
    obj: Arc<OpenObject>,
    append: bool,
}

struct DirHandle {
    entries: Vec<(u64, Kind, OsString)>,
}

/// Options of a mounted filesystem.
#[derive(Debug, Clone, Copy)]
pub struct VfsOptions {
    /// Refuse every change.
    pub read_only: bool,
    /// The kernel's writeback cache is on (then the kernel handles O_APPEND).
    pub writeback_cache: bool,
    /// The kernel checks file modes (`default_permissions`). Off only on a root-only mount
    /// (daemon root, no allow_other): every caller is then root, whom the backing
    /// filesystem treats the same way, and the kernel leaves two things to the filesystem:
    /// access(2) ([`Vfs::access`]) and clearing set-id bits after a write or truncate by a
    /// caller without CAP_FSETID (FUSE_HANDLE_KILLPRIV_V2, [`Vfs::kill_suidgid`]).
    pub kernel_checks: bool,
}

/// The filesystem.
pub struct Vfs {
    store: Arc<Store>,
    opts: VfsOptions,
    nodes: inodes::InodeTable,
    handles: RwLock<HashMap<u64, Arc<Handle>>>,
    dirs: Mutex<HashMap<u64, Arc<DirHandle>>>,
    open: Mutex<HashMap<u64, Weak<OpenObject>>>,
    next_fh: AtomicU64,
    buckets: RwLock<HashMap<String, BucketRecord>>,
    /// The control tree (`.envelopefs/`).
    pub control: Arc<control::Control>,
    am_root: bool,
    /// The daemon's effective group (what a new backing file gets outside set-group-id
    /// directories).
    own_gid: u32,
    /// Deferred deletion (`None` on a read-only mount, or if the trash could not be opened).
    trash: Option<Trash>,
    /// Nodes whose last name went to the trash while the kernel still holds them.
    trashed: Mutex<std::collections::HashSet<u64>>,
}

fn einval(m: &str) -> Error {
    Error::InvalidArgument(m.into())
}

impl Vfs {
    /// A filesystem over an open store.
    pub fn new(store: Arc<Store>, opts: VfsOptions) -> Self {
        let control = Arc::new(control::Control::new(store.clone()));
        let trash = if opts.read_only {
            None
        } else {
            match Trash::start(&store.meta().join("trash")) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!("no deferred deletion (removing names unlinks at once): {e}");
                    None
                }
            }
        };
        Vfs {
            store,
            opts,
            nodes: inodes::InodeTable::default(),
            handles: RwLock::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            open: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            buckets: RwLock::new(HashMap::new()),
            control,
            trash,
            trashed: Mutex::new(std::collections::HashSet::new()),
            // SAFETY: geteuid has no preconditions.
            am_root: unsafe { libc::geteuid() } == 0,
            // SAFETY: getegid has no preconditions.
            own_gid: unsafe { libc::getegid() },
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Options.
    pub fn options(&self) -> VfsOptions {
        self.opts
    }

    fn check_writable(&self) -> Result<()> {
        if self.opts.read_only {
            Err(Error::ReadOnly("read-only mount".into()))
        } else {
            Ok(())
        }
    }

    // ----- inode table -----

    fn components(&self, ino: u64) -> Result<Vec<OsString>> {
        self.nodes.components(ino).map_err(|e| match e {
            inodes::PathError::Unknown => Error::Stale("unknown inode".into()),
            inodes::PathError::Unlinked => Error::NotFound("inode has no name left".into()),
            inodes::PathError::Loop => Error::Loop("inode table loop".into()),
        })
    }

    /// Backing path of an inode, and its bucket name (None for the root).
    fn path_of(&self, ino: u64) -> Result<(PathBuf, Option<OsString>)> {
        let comps = self.components(ino)?;
        let mut p = self.store.root().to_path_buf();
        for c in &comps {
            p.push(c);
        }
        Ok((p, comps.into_iter().next()))
    }

    fn child_path(&self, parent: u64, name: &OsStr) -> Result<(PathBuf, Option<OsString>)> {
        check_name(name)?;
        let (mut p, bucket) = self.path_of(parent)?;
        p.push(name);
        Ok((p, Some(bucket.unwrap_or_else(|| name.to_os_string()))))
    }

    /// Records the lookup and gives `a` the node id the kernel is to know it by.
    fn remember(&self, a: &mut Attr, m: &fs::Metadata, parent: u64, name: &OsStr) {
        a.ino = self
            .nodes
            .remember(a.ino, parent, name, a.kind == Kind::Dir, m.created().ok());
    }

    /// The kernel forgets `n` lookups of an inode.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino >= INO_BASE && self.nodes.forget(ino, n) {
            self.trashed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&ino);
        }
    }

    /// The attributes the kernel gets for node `ino`: its own id, and no link for an object
    /// whose last name went to the trash (its backing file keeps one there for a moment).
    fn answer_attr(&self, ino: u64, mut a: Attr) -> Attr {
        a.ino = ino;
        if a.kind == Kind::File
            && self
                .trashed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&ino)
        {
            a.nlink = 0;
        }
        a
    }

    // ----- buckets -----

    fn bucket_record(&self, bucket: &OsStr) -> Result<BucketRecord> {
        let name = bucket
            .to_str()
            .ok_or_else(|| einval("bucket names are UTF-8"))?;
        if let Some(r) = self
            .buckets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(r.clone());
        }
        let rec = read_bucket_record(&self.store.bucket_dir(name), name)?;
        self.buckets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), rec.clone());
        Ok(rec)
    }

    /// Drops cached bucket records (after a bucket changes).
    pub fn invalidate_buckets(&self) {
        self.buckets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    // ----- attributes -----

    /// The node id the kernel knows the inode with backing inode number `backing_ino` by. The
    /// one mapping: it goes through the alias table that gives reused inode numbers a fresh id
    /// (see [`inodes`]), so readdir and cache invalidation name the node the kernel holds.
    pub fn node_id_of_backing(&self, backing_ino: u64) -> u64 {
        self.nodes.node_id(backing_ino + INO_BASE)
    }

    /// The node id of the store directory `dir` (the store's root is the mount's root), or
    /// None if it is gone.
    pub fn node_id_of_store_dir(&self, dir: &Path) -> Option<u64> {
        if dir == self.store.root() {
            return Some(ROOT);
        }
        let m = fs::symlink_metadata(dir).ok()?;
        Some(self.node_id_of_backing(m.ino()))
    }

    fn attr_of_meta(&self, m: &fs::Metadata) -> Attr {
        let mut a = posix::attr_from_meta(m, m.ino() + INO_BASE);
        if a.kind == Kind::File {
            a.size = self.store.geometry().plain_len_lossy(m.len());
        }
        a
    }

    fn lstat(path: &Path) -> Result<fs::Metadata> {
        fs::symlink_metadata(path).map_err(|e| Error::io(format!("stat {}", path.display()), e))
    }

    /// lookup(2)
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        if parent == ROOT && name == META_DIR {
            return Ok(self.control.root_attr());
        }
        if parent < INO_BASE && parent != ROOT {
            return self.control.lookup(parent, name);
        }
        let (path, _) = self.child_path(parent, name)?;
        let m = Self::lstat(&path)?;
        let mut a = self.attr_of_meta(&m);
        self.remember(&mut a, &m, parent, name);
        Ok(a)
    }

    /// getattr(2)
    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> Result<Attr> {
        if ino < INO_BASE && ino != ROOT {
            return self.control.getattr(ino);
        }
        let a = self.getattr_of(ino, fh)?;
        Ok(self.answer_attr(ino, a))
    }

    fn getattr_of(&self, ino: u64, fh: Option<u64>) -> Result<Attr> {
        if let Some(obj) = self.open_obj(ino, fh) {
            let io = obj.io.read().unwrap_or_else(|p| p.into_inner());
            let m = io.file().metadata().ctx(|| "fstat".to_string())?;
            return Ok(self.attr_of_meta(&m));
        }
        let (path, _) = self.path_of(ino)?;
        let m = Self::lstat(&path)?;
        Ok(self.attr_of_meta(&m))
    }

    /// setattr(2): chmod, chown, truncate, utimens.
    #[allow(clippy::too_many_arguments)]
    pub fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<posix::SetTime>,
        mtime: Option<posix::SetTime>,
        fh: Option<u64>,
        caller: u32,
    ) -> Result<Attr> {
        if ino < INO_BASE && ino != ROOT {
            // Truncation (O_TRUNC of a redirect) and time updates (the kernel flushes them
            // at close) are accepted and ignored; ownership and mode are fixed.
            if mode.is_some() || uid.is_some() || gid.is_some() {
                return Err(Error::PermissionDenied(
                    "control files have fixed attributes".into(),
                ));
            }
            return self.control.getattr(ino);
        }
        let a = self.setattr_of(ino, mode, uid, gid, size, atime, mtime, fh, caller)?;
        Ok(self.answer_attr(ino, a))
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr_of(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<posix::SetTime>,
        mtime: Option<posix::SetTime>,
        fh: Option<u64>,
        caller: u32,
    ) -> Result<Attr> {
        self.check_writable()?;
        // An open object is changed through its descriptor: that works after it was
        // renamed or unlinked too.
        if let Some(obj) = self.open_obj(ino, fh) {
            let mut io = obj.io.write().unwrap_or_else(|p| p.into_inner());
            if let Some(size) = size {
                truncate_io(&mut io, size)?;
                if !self.opts.kernel_checks {
                    clear_setid_after_truncate(&obj, io.file(), caller)?;
                }
            }
            let f = io.file();
            if uid.is_some() || gid.is_some() {
                posix::fchown_opt(f, uid, gid).ctx(|| "fchown".to_string())?;
            }
            if let Some(mode) = mode {
                posix::fchmod(f, mode & 0o7777).ctx(|| "fchmod".to_string())?;
                obj.setid.store(has_setid(mode), Ordering::Relaxed);
            }
            if atime.is_some() || mtime.is_some() {
                posix::futimens(f, atime, mtime).ctx(|| "futimens".to_string())?;
            }
            let m = f.metadata().ctx(|| "fstat".to_string())?;
            return Ok(self.attr_of_meta(&m));
        }
        let (path, _) = self.path_of(ino)?;
        if let Some(size) = size {
            let obj = self.open_object(ino, &path, false)?;
            let mut io = obj.io.write().unwrap_or_else(|p| p.into_inner());
            truncate_io(&mut io, size)?;
            if !self.opts.kernel_checks {
                clear_setid_after_truncate(&obj, io.file(), caller)?;
            }
        }
        if uid.is_some() || gid.is_some() {
            posix::lchown(&path, uid, gid).ctx(|| format!("chown {}", path.display()))?;
        }
        if let Some(mode) = mode {
            let m = Self::lstat(&path)?;
            if !m.file_type().is_symlink() {
                fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777),
                )
                .ctx(|| format!("chmod {}", path.display()))?;
                // An object opened meanwhile read the mode before this chmod (open_object
                // reads it and registers the object under this lock).
                let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(obj) = open.get(&ino).and_then(Weak::upgrade) {
                    obj.setid.store(has_setid(mode), Ordering::Relaxed);
                }
            }
        }
        if atime.is_some() || mtime.is_some() {
            posix::utimens(&path, atime, mtime).ctx(|| format!("utimens {}", path.display()))?;
        }
        self.getattr(ino, None)
    }

    /// The open object of an inode: through the handle if given, else any open one.
    fn open_obj(&self, ino: u64, fh: Option<u64>) -> Option<Arc<OpenObject>> {
        if let Some(h) = fh.and_then(|fh| self.handle(fh).ok()) {
            return Some(h.obj.clone());
        }
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ino)
            .and_then(Weak::upgrade)
    }

    // ----- objects -----

    fn open_object(&self, ino: u64, path: &Path, truncate: bool) -> Result<Arc<OpenObject>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(obj) = open.get(&ino).and_then(Weak::upgrade) {
            drop(open);
            if let Some(fp) = &obj.customer {
                self.check_customer_key(path, fp)?;
            }
            if truncate {
                obj.io
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .set_len(0)?;
            }
            return Ok(obj);
        }
        let comps = self.components(ino)?;
        let bucket_name = comps
            .first()
            .ok_or_else(|| Error::IsDirectory("the root is not an object".into()))?;
        let bucket = self.bucket_record(bucket_name)?;
        let file = self.open_backing(path)?;
        let what = path
            .strip_prefix(self.store.root())
            .unwrap_or(path)
            .display()
            .to_string();
        let md = file.metadata().ctx(|| format!("{what}: stat"))?;
        let ring = NoteCustomer {
            ring: &self.control,
            asked: std::cell::Cell::new(None),
        };
        let mut io = object::open_object_file(&self.store, &bucket, file, &what, &ring)?;
        if truncate {
            io.set_len(0)?;
        }
        let obj = Arc::new(OpenObject {
            io: RwLock::new(io),
            backing_ino: md.ino(),
            customer: ring.asked.get(),
            setid: AtomicBool::new(has_setid(md.mode())),
        });
        open.retain(|_, w| w.strong_count() > 0);
        open.insert(ino, Arc::downgrade(&obj));
        Ok(obj)
    }

    /// An SSE-C object already open shares its DEK with new opens only while its customer
    /// key is still loaded (or the object is no longer under that key).
    fn check_customer_key(&self, path: &Path, fp: &[u8; 32]) -> Result<()> {
        use object::CustomerKeys;
        if self.control.customer_key(fp).is_some() {
            return Ok(());
        }
        match self.header_of(path)?.wrapping {
            Wrapping::Customer { fingerprint } if &fingerprint == fp => Err(Error::NoKey(format!(
                "{}: customer-provided key {} is not loaded",
                path.strip_prefix(self.store.root())
                    .unwrap_or(path)
                    .display(),
                hex(&fp[..8])
            ))),
            _ => Ok(()),
        }
    }

    /// Runs `f` while no object with backing inode number `backing_ino` is open in the
    /// mount and none can be opened; EBUSY (and `f` not run) if one is open. Used by a rekey
    /// to put the rewritten file in place.
    pub fn while_closed(&self, backing_ino: u64, f: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let busy = open
            .values()
            .filter_map(Weak::upgrade)
            .any(|o| o.backing_ino == backing_ino);
        if busy {
            return Err(Error::Busy(
                "the object is open in the mount; close it and try again".into(),
            ));
        }
        f()
    }

    fn open_backing(&self, path: &Path) -> Result<File> {
        let rw = OpenOptions::new()
            .read(true)
            .write(!self.opts.read_only)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path);
        match rw {
            Ok(f) => Ok(f),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EROFS)) => {
                OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)
                    .ctx(|| format!("open {}", path.display()))
            }
            Err(e) => Err(Error::io(format!("open {}", path.display()), e)),
        }
    }

    fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    fn handle(&self, fh: u64) -> Result<Arc<Handle>> {
        self.handles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .cloned()
            .ok_or_else(|| Error::BadHandle("unknown file handle".into()))
    }

    fn add_handle(&self, obj: Arc<OpenObject>, flags: i32) -> u64 {
        let fh = self.new_fh();
        let append = flags & libc::O_APPEND != 0 && !self.opts.writeback_cache;
        self.handles
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(Handle { obj, append }));
        fh
    }

    /// open(2) of a regular file by the thread `caller`.
    pub fn open(&self, ino: u64, flags: i32, caller: u32) -> Result<u64> {
        if ino < INO_BASE && ino != ROOT {
            return self.control.open(ino, flags);
        }
        let trunc = flags & libc::O_TRUNC != 0;
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY || trunc;
        if writes {
            self.check_writable()?;
        }
        let (path, _) = self.path_of(ino)?;
        let obj = self.open_object(ino, &path, trunc)?;
        if trunc && !self.opts.kernel_checks {
            let io = obj.io.read().unwrap_or_else(|p| p.into_inner());
            clear_setid_after_truncate(&obj, io.file(), caller)?;
        }
        Ok(self.add_handle(obj, flags))
    }

    /// create(2): a new object, opened.
    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        uid: u32,
        gid: u32,
    ) -> Result<(Attr, u64)> {
        self.check_writable()?;
        check_in_bucket(parent)?;
        let (path, bucket) = self.child_path(parent, name)?;
        let bucket = bucket.ok_or_else(|| einval("no bucket"))?;
        let rec = self.bucket_record(&bucket)?;
        let am_root = self.am_root;
        let own_gid = self.own_gid;
        let mut io = self.retry_if_full(|| {
            object::create_object(&self.store, &rec, &path, mode & 0o7777, true, &mut |o| {
                // A caller with the daemon's own uid (root) and gid gets from the backing
                // filesystem exactly what the kernel would give: no fstat, no chown.
                if am_root && (uid, gid) != (0, own_gid) {
                    let m = o.file().metadata().ctx(|| "fstat".to_string())?;
                    // The backing file got the directory's group if the directory is
                    // set-group-id, else the daemon's: only when that says nothing (the
                    // daemon's group, and the caller's differs) is the directory looked at.
                    let gid = if m.gid() != own_gid {
                        m.gid()
                    } else if gid == own_gid {
                        gid
                    } else {
                        self.inherited_gid(parent, gid)?
                    };
                    if (m.uid(), m.gid()) != (uid, gid) {
                        posix::fchown(o.file(), uid, gid)
                            .ctx(|| "chown of a new object".to_string())?;
                        if mode & 0o6000 != 0 {
                            // chown clears set-id bits; put back the ones asked for.
                            posix::fchmod(o.file(), mode & 0o7777).ctx(|| "chmod".to_string())?;
                        }
                    }
                }
                Ok(())
            })
        })?;
        let m = io.file().metadata().ctx(|| "fstat".to_string())?;
        io.note_metadata(&m);
        let mut a = self.attr_of_meta(&m);
        self.remember(&mut a, &m, parent, name);
        let obj = Arc::new(OpenObject {
            io: RwLock::new(io),
            backing_ino: m.ino(),
            customer: None,
            setid: AtomicBool::new(has_setid(m.mode())),
        });
        {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            open.insert(a.ino, Arc::downgrade(&obj));
        }
        let fh = self.add_handle(obj, flags);
        Ok((a, fh))
    }

    fn inherited_gid(&self, parent: u64, gid: u32) -> Result<u32> {
        if parent == ROOT {
            return Ok(gid);
        }
        let (ppath, _) = self.path_of(parent)?;
        let pm = Self::lstat(&ppath)?;
        Ok(if pm.mode() & libc::S_ISGID != 0 {
            pm.gid()
        } else {
            gid
        })
    }

    /// read(2)
    pub fn read(&self, ino: u64, fh: u64, off: u64, size: u32, out: &mut Vec<u8>) -> Result<()> {
        if ino < INO_BASE && ino != ROOT {
            return self.control.read(ino, fh, off, size, out);
        }
        let h = self.handle(fh)?;
        let io = h.obj.io.read().unwrap_or_else(|p| p.into_inner());
        out.resize(size as usize, 0);
        let n = io.read_at(off, out)?;
        out.truncate(n);
        Ok(())
    }

    /// write(2)
    pub fn write(&self, ino: u64, fh: u64, off: u64, data: &[u8]) -> Result<u32> {
        if ino < INO_BASE && ino != ROOT {
            return self.control.write(ino, fh, off, data);
        }
        self.check_writable()?;
        let h = self.handle(fh)?;
        let mut io = h.obj.io.write().unwrap_or_else(|p| p.into_inner());
        let off = if h.append { io.size() } else { off };
        self.retry_if_full(|| io.write_at(off, data))?;
        u32::try_from(data.len()).map_err(|_| einval("write too large"))
    }

    /// fsync(2) / fdatasync(2)
    pub fn fsync(&self, ino: u64, fh: u64, datasync: bool) -> Result<()> {
        if ino < INO_BASE && ino != ROOT {
            return Ok(());
        }
        let h = self.handle(fh)?;
        let io = h.obj.io.read().unwrap_or_else(|p| p.into_inner());
        io.sync(datasync)
    }

    /// close(2) of the last descriptor of an open file description.
    pub fn release(&self, ino: u64, fh: u64) {
        if ino < INO_BASE && ino != ROOT {
            self.control.release(fh);
            return;
        }
        let h = self
            .handles
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh);
        drop(h);
    }

    /// fallocate(2): mode 0 extends the object; other modes are EOPNOTSUPP.
    pub fn fallocate(&self, fh: u64, off: u64, len: u64, mode: i32) -> Result<()> {
        self.check_writable()?;
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            return Err(Error::Unsupported(
                "only plain fallocate (allocate, optionally keeping the size) is supported".into(),
            ));
        }
        let h = self.handle(fh)?;
        let mut io = h.obj.io.write().unwrap_or_else(|p| p.into_inner());
        let end = off
            .checked_add(len)
            .ok_or_else(|| Error::TooLarge("fallocate past the largest offset".into()))?;
        if mode & libc::FALLOC_FL_KEEP_SIZE == 0 && end > io.size() {
            io.set_len(end)?;
        }
        Ok(())
    }

    // ----- namespace -----

    /// mkdir(2): at the root, a new bucket (default key).
    pub fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        self.check_writable()?;
        if parent < INO_BASE && parent != ROOT {
            return Err(Error::PermissionDenied("the control tree is fixed".into()));
        }
        let (path, _) = self.child_path(parent, name)?;
        if parent == ROOT {
            let n = name
                .to_str()
                .ok_or_else(|| einval("bucket names are UTF-8"))?;
            if n == META_DIR {
                return Err(Error::AlreadyExists(".envelopefs is reserved".into()));
            }
            self.store.create_bucket(n, None, mode & 0o7777)?;
        } else {
            fsutil::mkdir(&path, mode & 0o7777).ctx(|| format!("mkdir {}", path.display()))?;
        }
        self.adopt(parent, name, &path, uid, gid)
    }

    /// The common end of mkdir, mknod and symlink: the caller (or the set-group-id parent
    /// directory's group) owns the new node, which the kernel then looks up.
    fn adopt(&self, parent: u64, name: &OsStr, path: &Path, uid: u32, gid: u32) -> Result<Attr> {
        let gid = self.inherited_gid(parent, gid)?;
        self.own(path, uid, gid)?;
        self.lookup(parent, name)
    }

    fn own(&self, path: &Path, uid: u32, gid: u32) -> Result<()> {
        if self.am_root {
            let before = Self::lstat(path)?.mode();
            posix::lchown(path, Some(uid), Some(gid))
                .ctx(|| format!("chown {}", path.display()))?;
            if before & 0o6000 != 0 && before & libc::S_IFMT != libc::S_IFLNK {
                fs::set_permissions(
                    path,
                    std::os::unix::fs::PermissionsExt::from_mode(before & 0o7777),
                )
                .ctx(|| format!("chmod {}", path.display()))?;
            }
        }
        Ok(())
    }

    /// mknod(2): regular files become objects; fifos, sockets and devices are plain nodes.
    #[allow(clippy::too_many_arguments)]
    pub fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        self.check_writable()?;
        check_in_bucket(parent)?;
        if mode & libc::S_IFMT == libc::S_IFREG {
            let (a, fh) = self.create(parent, name, mode, libc::O_RDWR, uid, gid)?;
            self.release(a.ino, fh);
            return Ok(a);
        }
        let (path, _) = self.child_path(parent, name)?;
        posix::mknod(&path, mode, rdev).ctx(|| format!("mknod {}", path.display()))?;
        self.adopt(parent, name, &path, uid, gid)
    }

    /// symlink(2)
    pub fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &Path,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        self.check_writable()?;
        check_in_bucket(parent)?;
        let (path, _) = self.child_path(parent, name)?;
        std::os::unix::fs::symlink(target, &path).ctx(|| format!("symlink {}", path.display()))?;
        self.adopt(parent, name, &path, uid, gid)
    }

    /// readlink(2)
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let (path, _) = self.path_of(ino)?;
        let t = fs::read_link(&path).ctx(|| format!("readlink {}", path.display()))?;
        Ok(t.as_os_str().as_bytes().to_vec())
    }

    /// Refuses changes to the control tree and to the reserved name at the root.
    fn check_removable(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.check_writable()?;
        if parent < INO_BASE && parent != ROOT {
            return Err(Error::PermissionDenied("the control tree is fixed".into()));
        }
        if parent == ROOT && name == META_DIR {
            return Err(Error::PermissionDenied(".envelopefs is reserved".into()));
        }
        Ok(())
    }

    /// unlink(2)
    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.check_removable(parent, name)?;
        let (path, _) = self.child_path(parent, name)?;
        let trashed = match &self.trash {
            Some(t) => t.remove(&path),
            None => fs::remove_file(&path).map(|()| false),
        }
        .ctx(|| format!("unlink {}", path.display()))?;
        if trashed {
            if let Some(ino) = self.nodes.ino_of(parent, name) {
                self.trashed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(ino);
            }
        }
        self.nodes.forget_name(parent, name);
        Ok(())
    }

    /// rmdir(2): at the root, removes an empty bucket.
    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.check_removable(parent, name)?;
        let (path, _) = self.child_path(parent, name)?;
        fs::remove_dir(&path).ctx(|| format!("rmdir {}", path.display()))?;
        self.nodes.forget_name(parent, name);
        if parent == ROOT {
            self.invalidate_buckets();
        }
        Ok(())
    }

    /// link(2): within one bucket only (EXDEV across buckets).
    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> Result<Attr> {
        self.check_writable()?;
        if newparent < INO_BASE || ino < INO_BASE {
            return Err(Error::PermissionDenied(
                "no hard links at the root or in the control tree".into(),
            ));
        }
        let (from, from_bucket) = self.path_of(ino)?;
        let (to, to_bucket) = self.child_path(newparent, newname)?;
        if from_bucket != to_bucket {
            return Err(Error::CrossBucket(
                "hard links cannot cross buckets (each bucket binds its objects' keys)".into(),
            ));
        }
        fs::hard_link(&from, &to).ctx(|| format!("link {}", to.display()))?;
        self.lookup(newparent, newname)
    }

    /// rename(2), with RENAME_NOREPLACE and RENAME_EXCHANGE. Across buckets, objects are
    /// rewrapped under the destination bucket's key (no data is rewritten).
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        self.check_writable()?;
        if parent < INO_BASE && parent != ROOT || newparent < INO_BASE && newparent != ROOT {
            return Err(Error::PermissionDenied("the control tree is fixed".into()));
        }
        if (parent == ROOT && name == META_DIR) || (newparent == ROOT && newname == META_DIR) {
            return Err(Error::PermissionDenied(".envelopefs is reserved".into()));
        }
        let (from, from_bucket) = self.child_path(parent, name)?;
        let (to, to_bucket) = self.child_path(newparent, newname)?;
        let fm = Self::lstat(&from)?;
        if (parent == ROOT) != (newparent == ROOT) {
            return Err(Error::PermissionDenied(
                "buckets stay at the root and only buckets live there".into(),
            ));
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if parent == ROOT {
            // Renaming a bucket: its id (bound into the keys) does not change.
            let n = newname
                .to_str()
                .ok_or_else(|| einval("bucket names are UTF-8"))?;
            crate::store::validate_bucket_name(n)?;
            fsutil::rename_flags(&from, &to, flags).ctx(|| format!("rename {}", from.display()))?;
            self.invalidate_buckets();
        } else if from_bucket == to_bucket {
            fsutil::rename_flags(&from, &to, flags).ctx(|| format!("rename {}", from.display()))?;
        } else {
            if exchange {
                return Err(einval("RENAME_EXCHANGE across buckets is not supported"));
            }
            self.rename_across(&from, &to, &fm, from_bucket, to_bucket, flags)?;
        }
        if exchange {
            self.nodes.exchange(parent, name, newparent, newname);
        } else {
            self.nodes.rename(parent, name, newparent, newname);
        }
        Ok(())
    }

    fn rename_across(
        &self,
        from: &Path,
        to: &Path,
        fm: &fs::Metadata,
        from_bucket: Option<OsString>,
        to_bucket: Option<OsString>,
        flags: u32,
    ) -> Result<()> {
        let src = self.bucket_record(&from_bucket.ok_or_else(|| einval("no bucket"))?)?;
        let dst = self.bucket_record(&to_bucket.ok_or_else(|| einval("no bucket"))?)?;
        let objects: Vec<PathBuf> = if fm.is_dir() {
            crate::ops::workreq::walk_objects(from)?
                .into_iter()
                .map(|n| from.join(n))
                .collect()
        } else if fm.is_file() {
            vec![from.to_path_buf()]
        } else {
            Vec::new()
        };
        // A hard-linked object cannot move: its other names would keep a header bound to
        // the destination bucket. mv then falls back to copy and delete.
        for p in &objects {
            if Self::lstat(p)?.nlink() > 1 {
                return Err(Error::CrossBucket(
                    "a hard-linked object cannot move to another bucket".into(),
                ));
            }
        }
        let mut done: Vec<&PathBuf> = Vec::new();
        let result = (|| -> Result<()> {
            for p in &objects {
                let what = p
                    .strip_prefix(self.store.root())
                    .unwrap_or(p)
                    .display()
                    .to_string();
                let f = rewrap::open_for_rewrap(p, &what)?;
                let target = self.move_target(&f, &what)?;
                rewrap::rewrap_file(
                    &self.store,
                    &f,
                    &what,
                    &src,
                    &dst,
                    &target,
                    &*self.control,
                    None,
                    false,
                )?;
                done.push(p);
            }
            fsutil::rename_flags(from, to, flags).ctx(|| format!("rename {}", from.display()))
        })();
        if let Err(e) = result {
            // Put the moved headers back under the source bucket.
            for p in done {
                let what = p.display().to_string();
                if let Ok(f) = rewrap::open_for_rewrap(p, &what) {
                    let Ok(target) = self.move_target(&f, &what) else {
                        continue;
                    };
                    let _ = rewrap::rewrap_file(
                        &self.store,
                        &f,
                        &what,
                        &dst,
                        &src,
                        &target,
                        &*self.control,
                        None,
                        false,
                    );
                }
            }
            return Err(e);
        }
        if let Some(d) = to.parent() {
            let _ = fsutil::sync_dir(d);
        }
        Ok(())
    }

    /// Where an object moving to another bucket is rewrapped: the destination bucket's key,
    /// or, for an SSE-C object, the same customer key (which must be loaded: ENOKEY).
    fn move_target(&self, f: &File, what: &str) -> Result<Target> {
        use object::CustomerKeys;
        match object::read_header(f, what)?.wrapping {
            Wrapping::Master { .. } => Ok(Target::BucketLatest),
            Wrapping::Customer { fingerprint } => self
                .control
                .customer_key(&fingerprint)
                .map(Target::Customer)
                .ok_or_else(|| {
                    Error::NoKey(format!(
                        "{what}: customer-provided key {} is not loaded (sse-c add)",
                        hex(&fingerprint[..8])
                    ))
                }),
        }
    }

    // ----- directories -----

    /// opendir(2): snapshots the entries.
    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let mut entries = vec![
            (ino, Kind::Dir, OsString::from(".")),
            (ROOT, Kind::Dir, OsString::from("..")),
        ];
        if ino < INO_BASE && ino != ROOT {
            entries.extend(self.control.readdir(ino)?);
        } else {
            let (path, _) = self.path_of(ino)?;
            if ino == ROOT {
                entries.push((control::CTL_DIR_INO, Kind::Dir, OsString::from(META_DIR)));
            }
            for e in fs::read_dir(&path).ctx(|| format!("readdir {}", path.display()))? {
                let e = e.ctx(|| format!("readdir {}", path.display()))?;
                let name = e.file_name();
                if ino == ROOT && name == META_DIR {
                    continue;
                }
                let kind = e
                    .file_type()
                    .map(|t| posix::kind_of(&t))
                    .unwrap_or(Kind::File);
                if ino == ROOT && kind != Kind::Dir {
                    continue;
                }
                entries.push((self.node_id_of_backing(e.ino()), kind, name));
            }
        }
        let fh = self.new_fh();
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(DirHandle { entries }));
        Ok(fh)
    }

    /// readdir(2): entries from `offset`, passed to `add` until it returns true (full).
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        add: &mut dyn FnMut(u64, u64, Kind, &OsStr) -> bool,
    ) -> Result<()> {
        let d = self
            .dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .cloned()
            .ok_or_else(|| Error::BadHandle("unknown directory handle".into()))?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (ino, kind, name)) in d.entries.iter().enumerate().skip(start) {
            if add(*ino, i as u64 + 1, *kind, name) {
                break;
            }
        }
        Ok(())
    }

    /// closedir(2)
    pub fn releasedir(&self, fh: u64) {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh);
    }

    /// statfs(2) of the backing filesystem.
    pub fn statfs(&self) -> Result<posix::StatFs> {
        posix::statfs(self.store.root()).ctx(|| "statfs".to_string())
    }

    // ----- xattrs -----

    fn header_of(&self, path: &Path) -> Result<crate::format::records::ObjectHeader> {
        let what = path
            .strip_prefix(self.store.root())
            .unwrap_or(path)
            .display()
            .to_string();
        let f = rewrap::open_for_rewrap(path, &what)?;
        object::read_header(&f, &what)
    }

    /// getxattr(2)
    pub fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>> {
        if ino < INO_BASE && ino != ROOT {
            return Err(Error::NoAttribute("no xattrs on control files".into()));
        }
        let (path, _) = self.path_of(ino)?;
        let n = name.as_bytes();
        if n.starts_with(XATTR_PREFIX) {
            let m = Self::lstat(&path)?;
            if !m.is_file() {
                return Err(Error::NoAttribute("no such attribute".into()));
            }
            let h = self.header_of(&path)?;
            let v = match (n, &h.wrapping) {
                (b"user.envelopefs.object-id", _) => hex(&h.object_id),
                (b"user.envelopefs.encryption", Wrapping::Master { .. }) => "master".into(),
                (b"user.envelopefs.encryption", Wrapping::Customer { .. }) => "sse-c".into(),
                (b"user.envelopefs.key-id", Wrapping::Master { key_id, .. }) => key_id_text(key_id),
                (b"user.envelopefs.key-version", Wrapping::Master { version, .. }) => {
                    version.to_string()
                }
                (b"user.envelopefs.key-id", Wrapping::Customer { fingerprint }) => {
                    format!("sse-c:{}", hex(fingerprint))
                }
                _ => return Err(Error::NoAttribute("no such attribute".into())),
            };
            return Ok(v.into_bytes());
        }
        check_user_xattr(n)?;
        match xattr::get(&path, n).ctx(|| format!("getxattr {}", path.display()))? {
            Some(v) => Ok(v),
            None => Err(Error::NoAttribute("no such attribute".into())),
        }
    }

    /// listxattr(2): the user's own xattrs. The read-only `user.envelopefs.*` attributes are
    /// readable by name but not listed (as CephFS does with its virtual xattrs): tools that
    /// copy every listed xattr (`rsync -X`, `tar --xattrs`, `cp -a`) would otherwise carry them
    /// to other files, or try to remove them here and fail. The header is never exposed.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        if ino < INO_BASE && ino != ROOT {
            return Ok(Vec::new());
        }
        let (path, _) = self.path_of(ino)?;
        let mut out = Vec::new();
        for n in xattr::list(&path).ctx(|| format!("listxattr {}", path.display()))? {
            if n.starts_with(XATTR_PREFIX) || !n.starts_with(b"user.") {
                continue;
            }
            out.extend_from_slice(&n);
            out.push(0);
        }
        Ok(out)
    }

    /// setxattr(2): user xattrs; `user.envelopefs.reencrypt` rewraps the object.
    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        self.check_writable()?;
        if ino < INO_BASE && ino != ROOT {
            return Err(Error::PermissionDenied("no xattrs on control files".into()));
        }
        let (path, bucket) = self.path_of(ino)?;
        let n = name.as_bytes();
        if n == XATTR_REENCRYPT.as_bytes() {
            let bucket = bucket.ok_or_else(|| einval("the root is not an object"))?;
            return self.reencrypt_object(&path, &bucket, value);
        }
        if n.starts_with(XATTR_PREFIX) {
            return Err(Error::PermissionDenied(format!(
                "{} is read-only",
                String::from_utf8_lossy(n)
            )));
        }
        check_user_xattr(n)?;
        xattr::set(&path, n, value, flags).ctx(|| format!("setxattr {}", path.display()))
    }

    fn reencrypt_object(&self, path: &Path, bucket: &OsStr, value: &[u8]) -> Result<()> {
        let v = std::str::from_utf8(value)
            .map_err(|_| einval("reencrypt value must be \"latest\" or a key id"))?
            .trim();
        let target = match crate::command::key_or_word(v, crate::command::KeyWord::Latest)? {
            None => Target::BucketLatest,
            Some(k) => Target::Master(self.store.resolve_key(k)?),
        };
        let rec = self.bucket_record(bucket)?;
        let what = path
            .strip_prefix(self.store.root())
            .unwrap_or(path)
            .display()
            .to_string();
        let f = rewrap::open_for_rewrap(path, &what)?;
        rewrap::rewrap_file(
            &self.store,
            &f,
            &what,
            &rec,
            &rec,
            &target,
            &*self.control,
            None,
            true,
        )
        .map(|_| ())
    }

    /// removexattr(2)
    pub fn removexattr(&self, ino: u64, name: &OsStr) -> Result<()> {
        self.check_writable()?;
        if ino < INO_BASE && ino != ROOT {
            return Err(Error::PermissionDenied("no xattrs on control files".into()));
        }
        let (path, _) = self.path_of(ino)?;
        let n = name.as_bytes();
        if n.starts_with(XATTR_PREFIX) {
            return Err(Error::PermissionDenied(format!(
                "{} cannot be removed",
                String::from_utf8_lossy(n)
            )));
        }
        check_user_xattr(n)?;
        xattr::remove(&path, n).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENODATA) {
                Error::NoAttribute("no such attribute".into())
            } else {
                Error::io(format!("removexattr {}", path.display()), e)
            }
        })
    }

    /// access(2). The kernel asks only when it does not check modes itself, on a root-only
    /// mount ([`VfsOptions::kernel_checks`]): the caller is root, who may read and write
    /// anything and execute what has an execute bit, or search any directory.
    pub fn access(&self, ino: u64, mask: i32) -> Result<()> {
        let a = self.getattr(ino, None)?;
        if mask & libc::X_OK != 0 && a.kind != Kind::Dir && a.perm & 0o111 == 0 {
            return Err(Error::AccessDenied("no execute permission".into()));
        }
        Ok(())
    }

    /// Clears set-user-id, and set-group-id where the group may execute, as the kernel does
    /// to a file written by a caller without CAP_FSETID; the write request says when (with
    /// FUSE_HANDLE_KILLPRIV_V2 on root-only mounts, and for every direct write). Looks at
    /// the file only if it may carry such a bit.
    pub fn kill_suidgid(&self, fh: u64) -> Result<()> {
        let h = self.handle(fh)?;
        if !h.obj.setid.load(Ordering::Relaxed) {
            return Ok(());
        }
        let io = h.obj.io.read().unwrap_or_else(|p| p.into_inner());
        let f = io.file();
        let mode = f.metadata().ctx(|| "fstat".to_string())?.mode();
        let left = kill_setid(f, mode)?;
        h.obj.setid.store(has_setid(left), Ordering::Relaxed);
        Ok(())
    }

    /// Unmount: make everything durable.
    /// Runs `f`; if it fails with ENOSPC while deleted objects still wait in the trash,
    /// empties the trash and runs `f` once more.
    fn retry_if_full<T>(&self, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        match f() {
            Err(e) if e.errno() == libc::ENOSPC => match &self.trash {
                Some(t) if t.pending() > 0 => {
                    t.empty();
                    f()
                }
                _ => Err(e),
            },
            r => r,
        }
    }

    pub fn destroy(&self) {
        self.control.clear_ring();
        if let Some(t) = &self.trash {
            t.shutdown();
        }
        if let Err(e) = self.store.sync_all() {
            tracing::error!("sync at unmount: {e}");
        }
    }
}

/// Only buckets (directories) live at the root, and the control tree is fixed.
fn check_in_bucket(parent: u64) -> Result<()> {
    if parent < INO_BASE {
        return Err(Error::PermissionDenied(
            "only buckets (directories) can be created at the root".into(),
        ));
    }
    Ok(())
}

/// Whether a mode has set-user-id or set-group-id.
fn has_setid(mode: u32) -> bool {
    mode & (libc::S_ISUID | libc::S_ISGID) != 0
}

/// Clears set-user-id, and set-group-id if the group may execute (the kernel's rule for a
/// write or truncate by a caller without CAP_FSETID); changes nothing if neither applies.
/// Returns the mode left.
fn kill_setid(f: &File, mode: u32) -> Result<u32> {
    let mode = mode & 0o7777;
    let mut new = mode & !libc::S_ISUID;
    if new & (libc::S_ISGID | libc::S_IXGRP) == libc::S_ISGID | libc::S_IXGRP {
        new &= !libc::S_ISGID;
    }
    if new != mode {
        posix::fchmod(f, new).ctx(|| "fchmod".to_string())?;
    }
    Ok(new)
}

/// The same after a truncate (setattr of the size, open with O_TRUNC) on a root-only mount.
/// There the request does not say whether the caller lacks CAP_FSETID (fuser drops the
/// flag), so the caller's capabilities are read, and only when the file has such a bit.
fn clear_setid_after_truncate(obj: &OpenObject, f: &File, caller: u32) -> Result<()> {
    if !obj.setid.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mode = f.metadata().ctx(|| "fstat".to_string())?.mode();
    let left = if has_setid(mode) && posix::lacks_cap_fsetid(caller) {
        kill_setid(f, mode)?
    } else {
        mode
    };
    obj.setid.store(has_setid(left), Ordering::Relaxed);
    Ok(())
}

/// Truncation of an open object. Same size: still a truncate, which updates mtime and ctime.
fn truncate_io(io: &mut ObjectIo, size: u64) -> Result<()> {
    if io.size() == size {
        let len = io.file().metadata().ctx(|| "fstat".to_string())?.len();
        return io.file().set_len(len).ctx(|| "truncate".to_string());
    }
    io.set_len(size)
}

fn check_name(name: &OsStr) -> Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b.contains(&b'/') || b == b"." || b == b".." {
        return Err(einval("invalid name"));
    }
    if b.len() > 255 {
        return Err(Error::NameTooLong("name too long".into()));
    }
    Ok(())
}

fn check_user_xattr(n: &[u8]) -> Result<()> {
    if n.starts_with(b"user.") {
        Ok(())
    } else {
        Err(Error::Unsupported(
            "only user.* extended attributes are supported".into(),
        ))
    }
}
