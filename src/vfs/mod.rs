//! Filesystem semantics over the store, not tied to the fuser bindings.
//!
//! Inodes are path-based (see [`inodes`]); an inode's number is the backing inode number
//! plus [`INO_BASE`] (so hard links share one inode and numbers are stable across mounts).
//! Open regular files share one [`ObjectIo`] per inode, whose DEK is unwrapped once at the
//! first open.
//!
//! # Locks
//!
//! The one list of the mount's locks and their order. No lock is held across backing I/O
//! except the per-object ones (and the few exceptions named below); a lock may be taken
//! while holding only locks above it in this list, never one above:
//!
//! 1. The per-object gate (`Entry::Opening`): held by the first open of an object across
//!    the backing open, the header read, the unwrap and the truncate. A second open of the
//!    object waits on it (with nothing else held); opens of other objects do not.
//! 2. [`OpenObject`]`::io` (per-object RwLock): held across the object's I/O (read, write,
//!    truncate, fsync, fstat, fchmod).
//! 3. The work pool's `running`, then its `cancelled` (src/vfs/control/work.rs: a cancel
//!    holds `running` while it loads and saves the work request: an exception, not on any
//!    FUSE request's path).
//! 4. `Store::keys` (src/store/mod.rs, RwLock): read by an unwrap (under a gate); written by
//!    a key command, across persisting the keystore (so the file and the memory agree: an
//!    exception, not on any FUSE request's path).
//! 5. Leaves, held only for a lookup or a change of their table, taking nothing else: the
//!    open-objects table [`Vfs`]`::open` (with its condvar `swapped`, which an open waits on
//!    under its gate while a rekey swaps its file; a rekey's [`Vfs::while_closed`] marks the
//!    file as being swapped and releases the table before the swap), `Vfs::buckets`,
//!    `Vfs::handles`, `Vfs::dirs`, `Vfs::trashed`, the inode table ([`inodes`]), the control
//!    tree's `nodes` and `open`, the SSE-C key ring (src/vfs/control/ring.rs; read under a
//!    gate), the work pool's sender and its receiver (held while a worker waits for the next
//!    request), the journal's free slots (src/store/journal.rs; a change waits on its condvar
//!    for a slot under its object's `io`), the trash queue (src/store/trash.rs; a write on a
//!    full disk waits on its condvar for the trash to empty under its object's `io`; the trash
//!    thread unlinks with it released) and the trash thread's handle, the log file
//!    (src/logging.rs, across writing a log line). The kernel notifier is set once
//!    (`OnceLock`) and read without a lock.
//!
//! Every lock is taken through [`crate::sync`], which recovers it from poisoning (and says
//! why that is right here).
#![allow(unsafe_code)]

mod control;
mod inodes;
mod posix;

use crate::error::{Error, IoContext, Result};
use crate::format::hex;
use crate::format::records::{BucketRecord, Wrapping};
use crate::keys::keystore::key_id_text;
use crate::ops::rewrap::{self, Target};
use crate::store::names::{Meta, Names, SetAttributes};
use crate::store::object::{self, ObjectIo};
use crate::store::seam::Blob;
use crate::store::{Store, META_DIR};
use crate::sync::{LockUnpoisoned, RwLockUnpoisoned, WaitUnpoisoned};
pub use posix::{Attr, Kind, SetTime, StatFs};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock, Weak};

/// The root inode.
pub const ROOT: u64 = 1;
/// Inode numbers below this are reserved for the root and the control tree.
pub const INO_BASE: u64 = 1 << 20;

/// What a node id names; every operation routes on it once. A bucket is an [`NodeKind::Entry`]
/// whose parent is the root: nothing routes on a node being a bucket (only on a parent
/// being the root), and telling one from its id alone would take a table lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// The mount's root: the buckets and `.envelopefs/`.
    Root,
    /// A node of the control tree (`.envelopefs/` and below).
    Control,
    /// A bucket or anything in one: a node of the backing store.
    Entry,
}

impl NodeKind {
    /// The kind of node id `ino`.
    pub fn of(ino: u64) -> NodeKind {
        match ino {
            ROOT => NodeKind::Root,
            i if i < INO_BASE => NodeKind::Control,
            _ => NodeKind::Entry,
        }
    }
}

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
    /// Written since its content last reached the store (object stores publish an opened
    /// object's content on close and fsync: [`Names::commit`]).
    dirty: AtomicBool,
    /// Told when the content is closed for good ([`Names::closed`]).
    names: Arc<dyn Names>,
}

impl Drop for OpenObject {
    fn drop(&mut self) {
        let io = match self.io.get_mut() {
            Ok(io) => io,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.names.closed(io.file());
    }
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

/// The open objects by node id, and the backing files a rekey is putting in place. Held only
/// to look up, insert or replace an entry (never across I/O): see the lock order above.
#[derive(Default)]
struct OpenTable {
    objects: HashMap<u64, Entry>,
    /// Backing inode numbers that a [`Vfs::while_closed`] is running for now.
    swapping: std::collections::HashSet<u64>,
    /// How many [`Vfs::while_closed`] have ended. An open that sees this change between its
    /// start and registering its backing file opens the file again: a rekey may have put
    /// another file under the name meanwhile.
    swaps: u64,
}

enum Entry {
    /// Being opened. The opener holds `gate` across the backing open, the header read, the
    /// unwrap and the truncate; another open of the node waits on `gate`, then looks again.
    Opening {
        gate: Arc<Mutex<()>>,
        /// The backing file's inode number, once the opener has it open (a rekey of it is
        /// then refused, as of an open object).
        backing_ino: Option<u64>,
        /// A chmod gave the file a set-id bit while it was being opened.
        setid: bool,
    },
    Open(Weak<OpenObject>),
}

/// Ends a first open, also when it panics: the node's entry becomes the object, or goes if
/// there is none (then a waiting open tries itself).
struct Opening<'a> {
    vfs: &'a Vfs,
    ino: u64,
    gate: &'a Arc<Mutex<()>>,
    obj: Option<Arc<OpenObject>>,
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        let mut t = self.vfs.open_table();
        // The chmod hint of this opener's entry (None if the entry is not ours any more).
        let hint = match t.objects.get(&self.ino) {
            Some(Entry::Opening { gate, setid, .. }) if Arc::ptr_eq(gate, self.gate) => {
                Some(*setid)
            }
            _ => None,
        };
        match (self.obj.take(), hint) {
            (Some(obj), hint) => {
                if hint == Some(true) {
                    obj.setid.store(true, Ordering::Relaxed);
                }
                t.objects
                    .insert(self.ino, Entry::Open(Arc::downgrade(&obj)));
            }
            (None, Some(_)) => {
                t.objects.remove(&self.ino);
            }
            (None, None) => {}
        }
    }
}

/// Ends a [`Vfs::while_closed`], also when its closure panics: opens of the file go on.
struct Swapping<'a> {
    vfs: &'a Vfs,
    backing_ino: u64,
}

impl Drop for Swapping<'_> {
    fn drop(&mut self) {
        let mut t = self.vfs.open_table();
        t.swapping.remove(&self.backing_ino);
        t.swaps = t.swaps.wrapping_add(1);
        self.vfs.swapped.notify_all();
    }
}

struct Handle {
    obj: Arc<OpenObject>,
    append: bool,
}

struct DirHandle {
    entries: Vec<(u64, Kind, OsString)>,
}

/// The kernel's cache of names, as far as the filesystem tells it about changes it did not
/// get through the kernel (a ctl command replacing an object, adding a bucket).
pub trait Notify: Send + Sync {
    /// Drops the kernel's cached entry `name` in directory node `parent`.
    fn inval_entry(&self, parent: u64, name: &OsStr);
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
    /// The store's names (the seam's names interface): what the filesystem shows.
    names: Arc<dyn Names>,
    opts: VfsOptions,
    nodes: inodes::InodeTable,
    handles: RwLock<HashMap<u64, Arc<Handle>>>,
    dirs: Mutex<HashMap<u64, Arc<DirHandle>>>,
    open: Mutex<OpenTable>,
    /// Signalled when a [`Vfs::while_closed`] ends.
    swapped: Condvar,
    next_fh: AtomicU64,
    buckets: RwLock<HashMap<String, BucketRecord>>,
    /// The control tree (`.envelopefs/`).
    control: Arc<control::Control>,
    /// The kernel's entry cache, once the daemon's session exists ([`Vfs::set_notifier`]).
    notify: OnceLock<Box<dyn Notify>>,
    am_root: bool,
    /// The daemon's effective group (what a new backing file gets outside set-group-id
    /// directories).
    own_gid: u32,
    /// Nodes whose last name went to the trash while the kernel still holds them.
    trashed: Mutex<std::collections::HashSet<u64>>,
}

fn einval(m: &str) -> Error {
    Error::InvalidArgument(m.into())
}

impl Vfs {
    /// A filesystem over an open store. Shared: its control tree holds it weakly (to tell it
    /// of changes that commands make).
    /// Only a local store can be mounted so far (Unsupported for an object store: it has no
    /// names interface yet, [`Store::names`]).
    pub fn new(store: Arc<Store>, opts: VfsOptions) -> Result<Arc<Self>> {
        // A read-only mount removes nothing: it needs no deferred deletion.
        let names = store.names(!opts.read_only)?;
        Ok(Arc::new_cyclic(|me: &Weak<Vfs>| {
            let fs: Weak<dyn control::Filesystem> = me.clone();
            let control = control::Control::new(store.clone(), fs);
            Self::with_control(store, names, opts, control)
        }))
    }

    fn with_control(
        store: Arc<Store>,
        names: Arc<dyn Names>,
        opts: VfsOptions,
        control: control::Control,
    ) -> Self {
        let control = Arc::new(control);
        Vfs {
            store,
            names,
            opts,
            nodes: inodes::InodeTable::default(),
            handles: RwLock::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            open: Mutex::new(OpenTable::default()),
            swapped: Condvar::new(),
            next_fh: AtomicU64::new(1),
            buckets: RwLock::new(HashMap::new()),
            control,
            notify: OnceLock::new(),
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

    /// Gives the filesystem the kernel's entry cache to invalidate. The daemon calls it once
    /// its session exists (which is after the filesystem: the session is built around it); a
    /// second call changes nothing.
    pub fn set_notifier(&self, notify: Box<dyn Notify>) {
        let _ = self.notify.set(notify);
    }

    /// Starts the control tree's work-request workers (resuming unfinished requests).
    pub fn start_workers(&self) -> Result<()> {
        self.control.start_workers()
    }

    /// Stops taking work requests (at unmount); running ones resume at the next mount.
    pub fn stop_workers(&self) {
        self.control.stop_workers();
    }

    /// Forgets every SSE-C customer key (each is zeroized).
    pub fn clear_ring(&self) {
        self.control.clear_ring();
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

    /// The name of an inode in the store (its path relative to the store, empty for the root:
    /// see [`crate::store::names`]), and its bucket name (None for the root).
    fn path_of(&self, ino: u64) -> Result<(PathBuf, Option<OsString>)> {
        self.path_with(ino, None)
    }

    /// [`Vfs::path_of`] with `child` appended, built in one allocation (lookups are the
    /// hottest metadata path: no reallocation while it grows).
    fn path_with(&self, ino: u64, child: Option<&OsStr>) -> Result<(PathBuf, Option<OsString>)> {
        let comps = self.components(ino)?;
        let len = comps.iter().map(|c| c.len() + 1).sum::<usize>() + child.map_or(0, OsStr::len);
        let mut p = PathBuf::with_capacity(len);
        for c in &comps {
            p.push(c);
        }
        if let Some(c) = child {
            p.push(c);
        }
        Ok((p, comps.into_iter().next()))
    }

    fn child_path(&self, parent: u64, name: &OsStr) -> Result<(PathBuf, Option<OsString>)> {
        check_name(name)?;
        let (p, bucket) = self.path_with(parent, Some(name))?;
        Ok((p, Some(bucket.unwrap_or_else(|| name.to_os_string()))))
    }

    /// Records the lookup and gives `a` the node id the kernel is to know it by.
    fn remember(&self, a: &mut Attr, m: &Meta, parent: u64, name: &OsStr) {
        a.ino = self
            .nodes
            .remember(a.ino, parent, name, a.kind == Kind::Dir, m.birth);
    }

    /// The kernel forgets `n` lookups of an inode.
    pub fn forget(&self, ino: u64, n: u64) {
        if NodeKind::of(ino) == NodeKind::Entry && self.nodes.forget(ino, n) {
            self.trashed.lock_unpoisoned().remove(&ino);
        }
    }

    /// The attributes the kernel gets for node `ino`: its own id, and no link for an object
    /// whose last name went to the trash (its backing file keeps one there for a moment).
    fn answer_attr(&self, ino: u64, mut a: Attr) -> Attr {
        a.ino = ino;
        if a.kind == Kind::File && self.trashed.lock_unpoisoned().contains(&ino) {
            a.nlink = 0;
        }
        a
    }

    // ----- buckets -----

    fn bucket_record(&self, bucket: &OsStr) -> Result<BucketRecord> {
        let name = bucket
            .to_str()
            .ok_or_else(|| einval("bucket names are UTF-8"))?;
        if let Some(r) = self.buckets.read_unpoisoned().get(name) {
            return Ok(r.clone());
        }
        let rec = self.store.bucket(name)?;
        self.buckets
            .write_unpoisoned()
            .insert(name.to_string(), rec.clone());
        Ok(rec)
    }

    /// Drops cached bucket records (after a bucket changes).
    pub fn invalidate_buckets(&self) {
        self.buckets.write_unpoisoned().clear();
        // And what the names cache of them (an object store's names).
        self.names.invalidate(Path::new(""));
    }

    // ----- attributes -----

    /// The node id the kernel knows the inode with backing inode number `backing_ino` by. The
    /// one mapping: it goes through the alias table that gives reused inode numbers a fresh id
    /// (see [`inodes`]), so readdir and cache invalidation name the node the kernel holds.
    pub fn node_id_of_backing(&self, backing_ino: u64) -> u64 {
        self.nodes.node_id(backing_ino + INO_BASE)
    }

    /// The node id of the store directory `dir` (a name relative to the store: the empty
    /// path is the mount's root), or None if it is gone.
    pub fn node_id_of_store_dir(&self, dir: &Path) -> Option<u64> {
        if dir.as_os_str().is_empty() {
            return Some(ROOT);
        }
        let m = self.names.stat(dir).ok()?;
        Some(self.node_id_of_backing(m.ino))
    }

    fn attr_of_meta(&self, m: &Meta) -> Attr {
        let mut a = posix::attr_from_meta(m, m.ino + INO_BASE);
        if a.kind == Kind::File {
            a.size = self.store.geometry().plain_len_lossy(m.size);
        }
        a
    }

    fn lstat(&self, path: &Path) -> Result<Meta> {
        self.names.stat(path)
    }

    /// lookup(2)
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        match NodeKind::of(parent) {
            NodeKind::Control => return self.control.lookup(parent, name),
            NodeKind::Root if name == META_DIR => return Ok(self.control.root_attr()),
            NodeKind::Root | NodeKind::Entry => {}
        }
        let (path, _) = self.child_path(parent, name)?;
        let m = self.lstat(&path)?;
        let mut a = self.attr_of_meta(&m);
        self.remember(&mut a, &m, parent, name);
        Ok(a)
    }

    /// getattr(2)
    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> Result<Attr> {
        match NodeKind::of(ino) {
            NodeKind::Control => self.control.getattr(ino),
            NodeKind::Root | NodeKind::Entry => {
                let a = self.getattr_of(ino, fh)?;
                Ok(self.answer_attr(ino, a))
            }
        }
    }

    fn getattr_of(&self, ino: u64, fh: Option<u64>) -> Result<Attr> {
        if let Some(obj) = self.open_obj(ino, fh) {
            let io = obj.io.read_unpoisoned();
            let m = self.names.stat_open(io.file())?;
            return Ok(self.attr_of_meta(&m));
        }
        let (path, _) = self.path_of(ino)?;
        let m = self.lstat(&path)?;
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
        match NodeKind::of(ino) {
            // Truncation (O_TRUNC of a redirect) and time updates (the kernel flushes them
            // at close) are accepted and ignored; ownership and mode are fixed.
            NodeKind::Control if mode.is_some() || uid.is_some() || gid.is_some() => Err(
                Error::PermissionDenied("control files have fixed attributes".into()),
            ),
            NodeKind::Control => self.control.getattr(ino),
            NodeKind::Root | NodeKind::Entry => {
                let a = self.setattr_of(ino, mode, uid, gid, size, atime, mtime, fh, caller)?;
                Ok(self.answer_attr(ino, a))
            }
        }
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
            let mut io = obj.io.write_unpoisoned();
            if let Some(size) = size {
                self.names.truncating(io.file(), self.kept(size))?;
                obj.dirty.store(true, Ordering::Relaxed);
                truncate_io(&mut io, size)?;
                if !self.opts.kernel_checks {
                    clear_setid_after_truncate(&*self.names, &obj, io.file(), caller)?;
                }
            }
            let f = io.file();
            self.names.set_open_attributes(
                f,
                &SetAttributes {
                    uid,
                    gid,
                    mode,
                    atime,
                    mtime,
                },
            )?;
            if let Some(mode) = mode {
                obj.setid.store(has_setid(mode), Ordering::Relaxed);
            }
            let m = self.names.stat_open(f)?;
            return Ok(self.attr_of_meta(&m));
        }
        let (path, _) = self.path_of(ino)?;
        if let Some(size) = size {
            let obj = self.open_object(ino, &path, false)?;
            let mut io = obj.io.write_unpoisoned();
            self.names.truncating(io.file(), self.kept(size))?;
            obj.dirty.store(true, Ordering::Relaxed);
            truncate_io(&mut io, size)?;
            if !self.opts.kernel_checks {
                clear_setid_after_truncate(&*self.names, &obj, io.file(), caller)?;
            }
            self.commit(ino, &obj, &io, false)?;
        }
        let set = SetAttributes {
            uid,
            gid,
            mode,
            atime,
            mtime,
        };
        if !set.is_empty() {
            self.names.set_attributes(&path, &set)?;
        }
        if let Some(mode) = mode {
            // An object opened meanwhile may have read the mode before this chmod: an open
            // object gets the new mode's flag, one being opened the hint that it may
            // have a set-id bit (its opener reads it when it registers the object).
            let mut t = self.open_table();
            match t.objects.get_mut(&ino) {
                Some(Entry::Open(w)) => {
                    if let Some(obj) = w.upgrade() {
                        obj.setid.store(has_setid(mode), Ordering::Relaxed);
                    }
                }
                Some(Entry::Opening { setid, .. }) => *setid |= has_setid(mode),
                None => {}
            }
        }
        self.getattr(ino, None)
    }

    /// The open object of an inode: through the handle if given, else any open one.
    fn open_obj(&self, ino: u64, fh: Option<u64>) -> Option<Arc<OpenObject>> {
        if let Some(h) = fh.and_then(|fh| self.handle(fh).ok()) {
            return Some(h.obj.clone());
        }
        match self.open_table().objects.get(&ino) {
            Some(Entry::Open(w)) => w.upgrade(),
            _ => None,
        }
    }

    fn open_table(&self) -> MutexGuard<'_, OpenTable> {
        self.open.lock_unpoisoned()
    }

    // ----- objects -----

    /// The open object of node `ino` (backing file `path`), opened if it is not yet. The table
    /// is locked only to find or insert the node's entry: a first open holds the entry's own
    /// gate across its I/O, so opens of other objects go on meanwhile and a second open of
    /// this one waits on the gate.
    fn open_object(&self, ino: u64, path: &Path, truncate: bool) -> Result<Arc<OpenObject>> {
        loop {
            let mut t = self.open_table();
            let busy = match t.objects.get(&ino) {
                Some(Entry::Open(w)) => match w.upgrade() {
                    Some(obj) => {
                        drop(t);
                        return self.share_object(obj, path, truncate);
                    }
                    None => None,
                },
                Some(Entry::Opening { gate, .. }) => Some(Arc::clone(gate)),
                None => None,
            };
            if let Some(gate) = busy {
                drop(t);
                // Being opened by another thread: wait until it is done, then look again.
                drop(gate.lock_unpoisoned());
                continue;
            }
            let gate = Arc::new(Mutex::new(()));
            // Nobody else has the gate yet: this never waits.
            let _held = gate.lock_unpoisoned();
            t.objects
                .retain(|_, e| !matches!(e, Entry::Open(w) if w.strong_count() == 0));
            t.objects.insert(
                ino,
                Entry::Opening {
                    gate: Arc::clone(&gate),
                    backing_ino: None,
                    setid: false,
                },
            );
            let seen = t.swaps;
            drop(t);
            // Dropped before `_held`: the entry is final when the waiters look again.
            let mut opening = Opening {
                vfs: self,
                ino,
                gate: &gate,
                obj: None,
            };
            let obj = self.first_open(ino, path, truncate, &gate, seen)?;
            opening.obj = Some(Arc::clone(&obj));
            return Ok(obj);
        }
    }

    /// Another open of an object already open: it shares its DEK and its lock.
    fn share_object(
        &self,
        obj: Arc<OpenObject>,
        path: &Path,
        truncate: bool,
    ) -> Result<Arc<OpenObject>> {
        if let Some(fp) = &obj.customer {
            self.check_customer_key(path, fp)?;
        }
        if truncate {
            let mut io = obj.io.write_unpoisoned();
            self.names.truncating(io.file(), self.kept(0))?;
            io.set_len(0)?;
            obj.dirty.store(true, Ordering::Relaxed);
        }
        Ok(obj)
    }

    /// The first open of an object, under its gate (see [`Vfs::open_object`]); `seen` is
    /// [`OpenTable::swaps`] when the gate went in.
    fn first_open(
        &self,
        ino: u64,
        path: &Path,
        truncate: bool,
        gate: &Arc<Mutex<()>>,
        mut seen: u64,
    ) -> Result<Arc<OpenObject>> {
        let comps = self.components(ino)?;
        let bucket_name = comps
            .first()
            .ok_or_else(|| Error::IsDirectory("the root is not an object".into()))?;
        let bucket = self.bucket_record(bucket_name)?;
        let what = path.display().to_string();
        // The backing file, registered before the header is read: a rekey either finds it
        // registered (and refuses), or put its new file in place before (then this opens the
        // new one, after waiting for the rekey to end if it runs now).
        let (file, md) = loop {
            let file = self.names.open(path, !self.opts.read_only)?;
            let md = self.names.stat_open(&file)?;
            let mut t = self.open_table();
            if t.swapping.contains(&md.ino) {
                while t.swapping.contains(&md.ino) {
                    t = self.swapped.wait_unpoisoned(t);
                }
                seen = t.swaps;
                continue;
            }
            if t.swaps != seen {
                seen = t.swaps;
                continue;
            }
            if let Some(Entry::Opening {
                gate: g,
                backing_ino,
                ..
            }) = t.objects.get_mut(&ino)
            {
                if Arc::ptr_eq(g, gate) {
                    *backing_ino = Some(md.ino);
                }
            }
            break (file, md);
        };
        // The fault writes beside the backing file: only a local store has one.
        #[cfg(feature = "fault-injection")]
        if let Some(d) = self.store.local_dir() {
            crate::fault::stall_open(&d.root().join(path));
        }
        let ring = NoteCustomer {
            ring: &self.control,
            asked: std::cell::Cell::new(None),
        };
        let mut io = object::open_object_file(&self.store, &bucket, file, &what, &ring)?;
        if truncate {
            self.names.truncating(io.file(), self.kept(0))?;
            io.set_len(0)?;
        }
        Ok(Arc::new(OpenObject {
            io: RwLock::new(io),
            backing_ino: md.ino,
            customer: ring.asked.get(),
            setid: AtomicBool::new(has_setid(md.mode)),
            dirty: AtomicBool::new(truncate),
            names: Arc::clone(&self.names),
        }))
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
                path.display(),
                hex(&fp[..8])
            ))),
            _ => Ok(()),
        }
    }

    /// Runs `f` while no object with backing inode number `backing_ino` is open in the
    /// mount and none can be opened; EBUSY (and `f` not run) if one is open, or being opened
    /// and past its backing open. The table is not held across `f`: opens of this file wait
    /// for it to end (on the condvar `swapped`), others go on. Used by a rekey
    /// to put the rewritten file in place.
    pub fn while_closed(&self, backing_ino: u64, f: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        let mut t = self.open_table();
        while t.swapping.contains(&backing_ino) {
            t = self.swapped.wait_unpoisoned(t);
        }
        let busy = t.objects.values().any(|e| match e {
            Entry::Open(w) => w.upgrade().is_some_and(|o| o.backing_ino == backing_ino),
            Entry::Opening { backing_ino: b, .. } => *b == Some(backing_ino),
        });
        if busy {
            return Err(Error::Busy(
                "the object is open in the mount; close it and try again".into(),
            ));
        }
        // Opens of this file wait until `f` is done; the table is not held across it.
        t.swapping.insert(backing_ino);
        drop(t);
        let _end = Swapping {
            vfs: self,
            backing_ino,
        };
        f()
    }

    fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    fn handle(&self, fh: u64) -> Result<Arc<Handle>> {
        self.handles
            .read_unpoisoned()
            .get(&fh)
            .cloned()
            .ok_or_else(|| Error::BadHandle("unknown file handle".into()))
    }

    fn add_handle(&self, obj: Arc<OpenObject>, flags: i32) -> u64 {
        let fh = self.new_fh();
        let append = flags & libc::O_APPEND != 0 && !self.opts.writeback_cache;
        self.handles
            .write_unpoisoned()
            .insert(fh, Arc::new(Handle { obj, append }));
        fh
    }

    /// open(2) of a regular file by the thread `caller`.
    pub fn open(&self, ino: u64, flags: i32, caller: u32) -> Result<u64> {
        match NodeKind::of(ino) {
            NodeKind::Control => return self.control.open(ino, flags),
            NodeKind::Root | NodeKind::Entry => {}
        }
        let trunc = flags & libc::O_TRUNC != 0;
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY || trunc;
        if writes {
            self.check_writable()?;
        }
        let (path, _) = self.path_of(ino)?;
        let obj = self.open_object(ino, &path, trunc)?;
        if trunc && !self.opts.kernel_checks {
            let io = obj.io.read_unpoisoned();
            clear_setid_after_truncate(&*self.names, &obj, io.file(), caller)?;
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
        let bucket_name = bucket
            .to_str()
            .ok_or_else(|| einval("bucket names are UTF-8"))?;
        // The object's name within its bucket: the path without its first component.
        let mut parts = path.components();
        parts.next();
        let in_bucket = parts.as_path();
        let am_root = self.am_root;
        let own_gid = self.own_gid;
        // Where content is published on close (object stores), so is a new object: its
        // create costs no request.
        let later = !self.names.writes_in_place();
        let how = object::Create {
            mode: mode & 0o7777,
            exclusive: true,
            publish_later: later,
            ..object::Create::default()
        };
        let mut io = self.retry_if_full(|| {
            object::create_object_in(&self.store, bucket_name, &rec, in_bucket, &how, &mut |o| {
                // A caller with the daemon's own uid (root) and gid gets from the backing
                // filesystem exactly what the kernel would give: no fstat, no chown.
                if am_root && (uid, gid) != (0, own_gid) {
                    let m = self.names.stat_open(o.file())?;
                    // The backing file got the directory's group if the directory is
                    // set-group-id, else the daemon's: only when that says nothing (the
                    // daemon's group, and the caller's differs) is the directory looked at.
                    let gid = if m.gid != own_gid {
                        m.gid
                    } else if gid == own_gid {
                        gid
                    } else {
                        self.inherited_gid(parent, gid)?
                    };
                    if (m.uid, m.gid) != (uid, gid) {
                        self.names.set_open_attributes(
                            o.file(),
                            &SetAttributes {
                                uid: Some(uid),
                                gid: Some(gid),
                                // chown clears set-id bits; put back the ones asked for.
                                mode: (mode & 0o6000 != 0).then_some(mode & 0o7777),
                                ..SetAttributes::default()
                            },
                        )?;
                    }
                }
                Ok(())
            })
        })?;
        self.names.created(&path, io.file())?;
        // Locally the new backing file's own numbers; elsewhere what the names say of it.
        let m = if self.names.writes_in_place() {
            io.stat()?
        } else {
            self.names.stat_open(io.file())?
        };
        let mut a = self.attr_of_meta(&m);
        self.remember(&mut a, &m, parent, name);
        let obj = Arc::new(OpenObject {
            io: RwLock::new(io),
            backing_ino: m.ino,
            customer: None,
            setid: AtomicBool::new(has_setid(m.mode)),
            dirty: AtomicBool::new(later),
            names: Arc::clone(&self.names),
        });
        self.open_table()
            .objects
            .insert(a.ino, Entry::Open(Arc::downgrade(&obj)));
        let fh = self.add_handle(obj, flags);
        Ok((a, fh))
    }

    fn inherited_gid(&self, parent: u64, gid: u32) -> Result<u32> {
        if parent == ROOT {
            return Ok(gid);
        }
        let (ppath, _) = self.path_of(parent)?;
        let pm = self.lstat(&ppath)?;
        Ok(if pm.mode & libc::S_ISGID != 0 {
            pm.gid
        } else {
            gid
        })
    }

    /// read(2)
    pub fn read(&self, ino: u64, fh: u64, off: u64, size: u32, out: &mut Vec<u8>) -> Result<()> {
        match NodeKind::of(ino) {
            NodeKind::Control => return self.control.read(ino, fh, off, size, out),
            NodeKind::Root | NodeKind::Entry => {}
        }
        let h = self.handle(fh)?;
        let io = h.obj.io.read_unpoisoned();
        self.prepare(&io, off, u64::from(size))?;
        out.resize(size as usize, 0);
        let n = io.read_at(off, out)?;
        out.truncate(n);
        Ok(())
    }

    /// write(2)
    pub fn write(&self, ino: u64, fh: u64, off: u64, data: &[u8]) -> Result<u32> {
        match NodeKind::of(ino) {
            NodeKind::Control => return self.control.write(ino, fh, off, data),
            NodeKind::Root | NodeKind::Entry => {}
        }
        self.check_writable()?;
        let h = self.handle(fh)?;
        let mut io = h.obj.io.write_unpoisoned();
        let off = if h.append { io.size() } else { off };
        self.prepare(&io, off, data.len() as u64)?;
        h.obj.dirty.store(true, Ordering::Relaxed);
        self.retry_if_full(|| io.write_at(off, data))?;
        u32::try_from(data.len()).map_err(|_| einval("write too large"))
    }

    /// fsync(2) / fdatasync(2)
    pub fn fsync(&self, ino: u64, fh: u64, datasync: bool) -> Result<()> {
        match NodeKind::of(ino) {
            NodeKind::Control => Ok(()),
            NodeKind::Root | NodeKind::Entry => {
                let h = self.handle(fh)?;
                let io = h.obj.io.read_unpoisoned();
                io.sync(datasync)?;
                self.commit(ino, &h.obj, &io, true)
            }
        }
    }

    /// What of an object's stored bytes a truncate to plaintext `size` reads or keeps: up to
    /// the end of the chunk that holds the new end (its old ciphertext is read, then
    /// rewritten).
    fn kept(&self, size: u64) -> u64 {
        let g = self.store.geometry();
        g.backing_offset((size / g.chunk_size).saturating_add(1))
    }

    /// Fetches what a read or write of plaintext `[off, off + len)` touches, where content is
    /// fetched as it is needed ([`Names::prepare`]): the chunks it covers.
    fn prepare(&self, io: &ObjectIo, off: u64, len: u64) -> Result<()> {
        if self.names.writes_in_place() {
            return Ok(());
        }
        let g = self.store.geometry();
        let first = off / g.chunk_size;
        let last = off.saturating_add(len.max(1) - 1) / g.chunk_size;
        self.names.prepare(
            io.file(),
            g.backing_offset(first),
            g.backing_offset(last.saturating_add(1)),
        )
    }

    /// Publishes what was written to an open object, if anything was, under its name now
    /// ([`Names::commit`]; nothing to do on a local store). `io` is the object's I/O, held
    /// (read) so that no write lands halfway through the upload.
    fn commit(&self, ino: u64, obj: &OpenObject, io: &ObjectIo, durable: bool) -> Result<()> {
        if self.names.writes_in_place() || !obj.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let path = self.path_of(ino).ok().map(|(p, _)| p);
        let r = self.names.commit(path.as_deref(), io.file(), durable);
        if r.is_err() {
            obj.dirty.store(true, Ordering::Release);
        }
        r
    }

    /// Whether closes must be reported ([`Vfs::flush`]): only where an open object's content
    /// is published on close (object stores).
    pub fn wants_flush(&self) -> bool {
        !self.names.writes_in_place()
    }

    /// close(2) of a descriptor (FLUSH): publishes what was written, so that close reports
    /// a failed upload.
    pub fn flush(&self, ino: u64, fh: u64) -> Result<()> {
        match NodeKind::of(ino) {
            NodeKind::Control => Ok(()),
            NodeKind::Root | NodeKind::Entry => {
                let h = self.handle(fh)?;
                let io = h.obj.io.read_unpoisoned();
                self.commit(ino, &h.obj, &io, false)
            }
        }
    }

    /// close(2) of the last descriptor of an open file description.
    pub fn release(&self, ino: u64, fh: u64) {
        match NodeKind::of(ino) {
            NodeKind::Control => self.control.release(fh),
            NodeKind::Root | NodeKind::Entry => {
                let h = self.handles.write_unpoisoned().remove(&fh);
                // Where content is published on close: written after the last flush
                // (through a shared mapping, say). A local store has nothing to do.
                if let Some(h) = h.as_ref().filter(|_| !self.names.writes_in_place()) {
                    let io = h.obj.io.read_unpoisoned();
                    if let Err(e) = self.commit(ino, &h.obj, &io, false) {
                        tracing::error!("publishing an object at its last close: {e}");
                    }
                }
                drop(h);
            }
        }
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
        let mut io = h.obj.io.write_unpoisoned();
        let end = off
            .checked_add(len)
            .ok_or_else(|| Error::TooLarge("fallocate past the largest offset".into()))?;
        if mode & libc::FALLOC_FL_KEEP_SIZE == 0 && end > io.size() {
            self.names.truncating(io.file(), self.kept(end))?;
            h.obj.dirty.store(true, Ordering::Relaxed);
            io.set_len(end)?;
        }
        Ok(())
    }

    // ----- namespace -----

    /// mkdir(2): at the root, a new bucket (default key).
    pub fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        self.check_writable()?;
        let kind = NodeKind::of(parent);
        if kind == NodeKind::Control {
            return Err(Error::PermissionDenied("the control tree is fixed".into()));
        }
        let (path, _) = self.child_path(parent, name)?;
        if kind == NodeKind::Root {
            let n = name
                .to_str()
                .ok_or_else(|| einval("bucket names are UTF-8"))?;
            if n == META_DIR {
                return Err(Error::AlreadyExists(".envelopefs is reserved".into()));
            }
            self.store.create_bucket(n, None, mode & 0o7777)?;
            // Made through the store, not the names: they may remember it as absent.
            self.invalidate_buckets();
        } else {
            self.names.mkdir(&path, mode & 0o7777)?;
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
            let before = self.lstat(path)?.mode;
            self.names.set_attributes(
                path,
                &SetAttributes {
                    uid: Some(uid),
                    gid: Some(gid),
                    // chown clears set-id bits: put them back (a symlink has none).
                    mode: (before & 0o6000 != 0 && before & libc::S_IFMT != libc::S_IFLNK)
                        .then_some(before & 0o7777),
                    ..SetAttributes::default()
                },
            )?;
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
        self.names.mknod(&path, mode, rdev)?;
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
        self.names.symlink(target, &path)?;
        self.adopt(parent, name, &path, uid, gid)
    }

    /// readlink(2)
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let (path, _) = self.path_of(ino)?;
        let t = self.names.readlink(&path)?;
        Ok(t.as_os_str().as_bytes().to_vec())
    }

    /// Refuses changes to the control tree and to the reserved name at the root.
    fn check_removable(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.check_writable()?;
        match NodeKind::of(parent) {
            NodeKind::Control => Err(Error::PermissionDenied("the control tree is fixed".into())),
            NodeKind::Root if name == META_DIR => {
                Err(Error::PermissionDenied(".envelopefs is reserved".into()))
            }
            NodeKind::Root | NodeKind::Entry => Ok(()),
        }
    }

    /// unlink(2)
    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.check_removable(parent, name)?;
        let (path, _) = self.child_path(parent, name)?;
        let trashed = self.names.unlink(&path)?;
        if trashed {
            if let Some(ino) = self.nodes.ino_of(parent, name) {
                self.trashed.lock_unpoisoned().insert(ino);
            }
        }
        self.nodes.forget_name(parent, name);
        Ok(())
    }

    /// rmdir(2): at the root, removes an empty bucket.
    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.check_removable(parent, name)?;
        let (path, _) = self.child_path(parent, name)?;
        self.names.rmdir(&path)?;
        self.nodes.forget_name(parent, name);
        if parent == ROOT {
            self.invalidate_buckets();
        }
        Ok(())
    }

    /// link(2): within one bucket only (EXDEV across buckets).
    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> Result<Attr> {
        self.check_writable()?;
        if NodeKind::of(newparent) != NodeKind::Entry || NodeKind::of(ino) != NodeKind::Entry {
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
        self.names.link(&from, &to)?;
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
        let (kind, newkind) = (NodeKind::of(parent), NodeKind::of(newparent));
        if kind == NodeKind::Control || newkind == NodeKind::Control {
            return Err(Error::PermissionDenied("the control tree is fixed".into()));
        }
        if (kind == NodeKind::Root && name == META_DIR)
            || (newkind == NodeKind::Root && newname == META_DIR)
        {
            return Err(Error::PermissionDenied(".envelopefs is reserved".into()));
        }
        let (from, from_bucket) = self.child_path(parent, name)?;
        let (to, to_bucket) = self.child_path(newparent, newname)?;
        let fm = self.lstat(&from)?;
        if (kind == NodeKind::Root) != (newkind == NodeKind::Root) {
            return Err(Error::PermissionDenied(
                "buckets stay at the root and only buckets live there".into(),
            ));
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if kind == NodeKind::Root {
            // Renaming a bucket: its id (bound into the keys) does not change.
            let n = newname
                .to_str()
                .ok_or_else(|| einval("bucket names are UTF-8"))?;
            crate::store::validate_bucket_name(n)?;
            self.names.rename(&from, &to, flags)?;
            self.invalidate_buckets();
        } else if from_bucket == to_bucket {
            self.names.rename(&from, &to, flags)?;
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
        fm: &Meta,
        from_bucket: Option<OsString>,
        to_bucket: Option<OsString>,
        flags: u32,
    ) -> Result<()> {
        let src = self.bucket_record(&from_bucket.ok_or_else(|| einval("no bucket"))?)?;
        let dst = self.bucket_record(&to_bucket.ok_or_else(|| einval("no bucket"))?)?;
        let objects: Vec<PathBuf> = if fm.kind == Kind::Dir {
            self.names
                .walk_objects(from)?
                .into_iter()
                .map(|n| from.join(n))
                .collect()
        } else if fm.kind == Kind::File {
            vec![from.to_path_buf()]
        } else {
            Vec::new()
        };
        // A hard-linked object cannot move: its other names would keep a header bound to
        // the destination bucket. mv then falls back to copy and delete.
        for p in &objects {
            if self.lstat(p)?.nlink > 1 {
                return Err(Error::CrossBucket(
                    "a hard-linked object cannot move to another bucket".into(),
                ));
            }
        }
        let mut done: Vec<&PathBuf> = Vec::new();
        let result = (|| -> Result<()> {
            for p in &objects {
                let what = p.display().to_string();
                let f = self.names.open_for_header(p)?;
                let target = self.move_target(&*f, &what)?;
                rewrap::rewrap(
                    &self.store,
                    &rewrap::Request {
                        file: &*f,
                        what: &what,
                        src_bucket: &src,
                        dst_bucket: &dst,
                        target: &target,
                        customer: &*self.control,
                        mode: rewrap::Mode::Move,
                    },
                )?;
                done.push(p);
            }
            self.names.rename(from, to, flags)
        })();
        if let Err(e) = result {
            // Put the moved headers back under the source bucket.
            for p in done {
                let what = p.display().to_string();
                if let Ok(f) = self.names.open_for_header(p) {
                    let Ok(target) = self.move_target(&*f, &what) else {
                        continue;
                    };
                    let _ = rewrap::rewrap(
                        &self.store,
                        &rewrap::Request {
                            file: &*f,
                            what: &what,
                            src_bucket: &dst,
                            dst_bucket: &src,
                            target: &target,
                            customer: &*self.control,
                            mode: rewrap::Mode::Move,
                        },
                    );
                }
            }
            return Err(e);
        }
        if let Some(d) = to.parent() {
            let _ = self.names.sync_dir(d);
        }
        Ok(())
    }

    /// Where an object moving to another bucket is rewrapped: the destination bucket's key,
    /// or, for an SSE-C object, the same customer key (which must be loaded: ENOKEY).
    fn move_target(&self, f: &dyn Blob, what: &str) -> Result<Target> {
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
        let node = NodeKind::of(ino);
        if node == NodeKind::Control {
            entries.extend(self.control.readdir(ino)?);
        } else {
            let at_root = node == NodeKind::Root;
            let (path, _) = self.path_of(ino)?;
            if at_root {
                entries.push((control::CTL_DIR_INO, Kind::Dir, OsString::from(META_DIR)));
            }
            for e in self.names.list(&path)? {
                if at_root && (e.name == META_DIR || e.kind != Kind::Dir) {
                    continue;
                }
                entries.push((self.node_id_of_backing(e.ino), e.kind, e.name));
            }
        }
        let fh = self.new_fh();
        self.dirs
            .lock_unpoisoned()
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
            .lock_unpoisoned()
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
        self.dirs.lock_unpoisoned().remove(&fh);
    }

    /// statfs(2) of the backing filesystem.
    pub fn statfs(&self) -> Result<posix::StatFs> {
        self.names.statfs()
    }

    // ----- xattrs -----

    fn header_of(&self, path: &Path) -> Result<crate::format::records::ObjectHeader> {
        let f = self.names.open_for_header(path)?;
        object::read_header(&*f, &path.display().to_string())
    }

    /// getxattr(2)
    pub fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>> {
        if NodeKind::of(ino) == NodeKind::Control {
            return Err(Error::NoAttribute("no xattrs on control files".into()));
        }
        let (path, _) = self.path_of(ino)?;
        let n = name.as_bytes();
        if n.starts_with(XATTR_PREFIX) {
            let m = self.lstat(&path)?;
            if m.kind != Kind::File {
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
        match self.names.xattr_get(&path, n)? {
            Some(v) => Ok(v),
            None => Err(Error::NoAttribute("no such attribute".into())),
        }
    }

    /// listxattr(2): the user's own xattrs. The read-only `user.envelopefs.*` attributes are
    /// readable by name but not listed (as CephFS does with its virtual xattrs): tools that
    /// copy every listed xattr (`rsync -X`, `tar --xattrs`, `cp -a`) would otherwise carry them
    /// to other files, or try to remove them here and fail. The header is never exposed.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        if NodeKind::of(ino) == NodeKind::Control {
            return Ok(Vec::new());
        }
        let (path, _) = self.path_of(ino)?;
        let mut out = Vec::new();
        for n in self.names.xattr_list(&path)? {
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
        if NodeKind::of(ino) == NodeKind::Control {
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
        self.names.xattr_set(&path, n, value, flags)
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
        let what = path.display().to_string();
        let f = self.names.open_for_header(path)?;
        rewrap::rewrap(
            &self.store,
            &rewrap::Request::single(&*f, &what, &rec, &target, &*self.control),
        )
        .map(|_| ())
    }

    /// removexattr(2)
    pub fn removexattr(&self, ino: u64, name: &OsStr) -> Result<()> {
        self.check_writable()?;
        if NodeKind::of(ino) == NodeKind::Control {
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
        self.names.xattr_remove(&path, n)
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
        let io = h.obj.io.read_unpoisoned();
        let f = io.file();
        let mode = self.names.stat_open(f)?.mode;
        let left = kill_setid(&*self.names, f, mode)?;
        h.obj.setid.store(has_setid(left), Ordering::Relaxed);
        Ok(())
    }

    /// Unmount: make everything durable.
    /// Runs `f`; if it fails with ENOSPC while deleted objects still wait in the trash,
    /// empties the trash and runs `f` once more.
    fn retry_if_full<T>(&self, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        match f() {
            Err(e) if e.errno() == libc::ENOSPC && self.names.make_room() => f(),
            r => r,
        }
    }

    pub fn destroy(&self) {
        self.control.clear_ring();
        self.names.shutdown();
        if let Err(e) = self.store.sync_all() {
            tracing::error!("sync at unmount: {e}");
        }
    }
}

impl control::Filesystem for Vfs {
    /// Drops the kernel's cached entry for the name, if the daemon gave a notifier.
    fn path_changed(&self, path: &Path) {
        self.names.invalidate(path);
        let Some(notify) = self.notify.get() else {
            return;
        };
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return;
        };
        if let Some(parent) = self.node_id_of_store_dir(parent) {
            notify.inval_entry(parent, name);
        }
    }

    fn buckets_changed(&self) {
        self.invalidate_buckets();
    }

    fn while_closed(&self, backing_ino: u64, f: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        Vfs::while_closed(self, backing_ino, f)
    }
}

/// Only buckets (directories) live at the root, and the control tree is fixed.
fn check_in_bucket(parent: u64) -> Result<()> {
    if NodeKind::of(parent) != NodeKind::Entry {
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
fn kill_setid(names: &dyn Names, f: &File, mode: u32) -> Result<u32> {
    let mode = mode & 0o7777;
    let mut new = mode & !libc::S_ISUID;
    if new & (libc::S_ISGID | libc::S_IXGRP) == libc::S_ISGID | libc::S_IXGRP {
        new &= !libc::S_ISGID;
    }
    if new != mode {
        names.set_open_attributes(
            f,
            &SetAttributes {
                mode: Some(new),
                ..SetAttributes::default()
            },
        )?;
    }
    Ok(new)
}

/// The same after a truncate (setattr of the size, open with O_TRUNC) on a root-only mount.
/// There the request does not say whether the caller lacks CAP_FSETID (fuser drops the
/// flag), so the caller's capabilities are read, and only when the file has such a bit.
fn clear_setid_after_truncate(
    names: &dyn Names,
    obj: &OpenObject,
    f: &File,
    caller: u32,
) -> Result<()> {
    if !obj.setid.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mode = names.stat_open(f)?.mode;
    let left = if has_setid(mode) && posix::lacks_cap_fsetid(caller) {
        kill_setid(names, f, mode)?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_classify_by_range() {
        assert_eq!(NodeKind::of(ROOT), NodeKind::Root);
        assert_eq!(NodeKind::of(control::CTL_DIR_INO), NodeKind::Control);
        assert_eq!(NodeKind::of(0), NodeKind::Control);
        assert_eq!(NodeKind::of(INO_BASE - 1), NodeKind::Control);
        assert_eq!(NodeKind::of(INO_BASE), NodeKind::Entry);
        assert_eq!(NodeKind::of(u64::MAX), NodeKind::Entry);
    }
}
