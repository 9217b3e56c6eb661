//! A reference-model test of the vfs layer, driven without FUSE (as mountpoint-s3's
//! reftests are): random sequences of filesystem operations are applied both to a real
//! [`Vfs`] and to a small in-memory model, and after every step their answers (contents,
//! errno, listings, sizes, link counts) must agree. A "reopen" step drops the `Vfs` and opens
//! the store again, so everything must also persist.
//!
//! Layout, so the object-store backend can run the same test later:
//! - [`Backend`] is the only backend-specific part: it hands out a fresh [`Vfs`] over the
//!   same store each time it is asked (the first time and after every reopen).
//!   [`LocalDir`] is the local-directory backend: `Store::init` in a temp dir with a key
//!   file, `Store::open`, `Vfs::new`.
//! - [`Op`] (the operations and their proptest strategies), [`Model`] (a `BTreeMap` of paths
//!   to directories, files and symlinks, with file contents shared by hard links) and
//!   [`run`] (which drives a `Vfs` and compares it with the model) know nothing of the
//!   backend. A second backend implements `Backend` and calls `run` with the same ops.
//!
//! [`Kernel`] plays the part of the Linux VFS between the syscalls and the filesystem: it
//! walks paths with `lookup` (counting lookups so that `forget` gives them back), and makes
//! the checks the kernel makes itself before it calls a FUSE filesystem (an existing name for
//! create/mkdir/symlink/link is EEXIST, unlink of a directory EISDIR, rmdir of a non-directory
//! ENOTDIR, rename's type, ancestor and same-inode checks, link of a directory EPERM). The vfs
//! is only asked what a kernel would ask it. Symlinks are never followed (paths are walked as
//! with O_NOFOLLOW; a symlink in the middle of a path is ENOTDIR in both).
//!
//! The store has two buckets, `b` and `c`, created with mkdir at the root; paths below them
//! use three names, up to three deep, so operations often collide (EEXIST, ENOTEMPTY,
//! ENOTDIR, ...). Renames between the buckets rewrap objects (EXDEV for hard-linked ones),
//! hard links between them are EXDEV. Writes and truncates are biased towards the chunk
//! boundaries of the store's 4096-byte chunks and go past the end of the file.
//!
//! The node ids readdir gives are checked against lookup's.
//!
//! 128 cases of up to 40 operations by default (a few seconds); `PROPTEST_CASES=N` runs more
//! or fewer.
#![allow(clippy::unwrap_used)]

mod common;

use common::{errno_name, pattern};
use envelopefs::keys::crypto::Key32;
use envelopefs::keys::keystore::Secret;
use envelopefs::store::{Store, StoreLock};
use envelopefs::vfs::{Attr, Kind, Vfs, VfsOptions, ROOT};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The store's chunk size.
const CS: u64 = 4096;
/// The buckets every run has.
const BUCKETS: [&str; 2] = ["b", "c"];
/// The names below the buckets.
const NAMES: [&str; 3] = ["x", "y", "z"];
/// Symlink targets (never followed).
const TARGETS: [&str; 4] = [
    "x",
    "../y/z",
    "/elsewhere/entirely",
    "a-long-target/a-long-target/a-long-target/a-long-target/a-long-target/a-long-target/x",
];

// ---------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------

/// What the model test needs of a backend: a filesystem over one store, opened afresh as
/// often as asked (the runner has dropped the previous one, after `Vfs::destroy`).
trait Backend {
    fn open_vfs(&mut self) -> Arc<Vfs>;
    /// The owner new nodes are created with (the caller the kernel would name).
    fn caller(&self) -> (u32, u32);
}

/// The local-directory backend on a temporary store.
struct LocalDir {
    dir: tempfile::TempDir,
    root: PathBuf,
}

fn secret() -> Secret {
    Secret::KeyFile(Key32::from_bytes([0x3c; 32]))
}

impl LocalDir {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("store");
        Store::init(&root, CS as u32, &secret()).expect("init store");
        LocalDir { dir, root }
    }
}

impl Backend for LocalDir {
    fn open_vfs(&mut self) -> Arc<Vfs> {
        let lock = StoreLock::acquire(&self.root).expect("lock store");
        let store = Store::open(&self.root, lock, &secret()).expect("open store");
        Vfs::new(
            Arc::new(store),
            VfsOptions {
                read_only: false,
                writeback_cache: false,
                kernel_checks: true,
            },
        )
        .expect("a local store mounts")
    }

    fn caller(&self) -> (u32, u32) {
        let m = std::fs::metadata(self.dir.path()).expect("stat temp dir");
        (m.uid(), m.gid())
    }
}

// ---------------------------------------------------------------------------------------
// Paths and operations
// ---------------------------------------------------------------------------------------

/// A path from the mount root: a bucket, then names.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct P(Vec<&'static str>);

impl fmt::Debug for P {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.join("/"))
    }
}

impl P {
    fn name(&self) -> &'static str {
        self.0[self.0.len() - 1]
    }

    fn bucket(&self) -> &'static str {
        self.0[0]
    }

    fn join(&self, name: &'static str) -> P {
        let mut v = self.0.clone();
        v.push(name);
        P(v)
    }

    /// Whether `self` is strictly below `anc`.
    fn is_under(&self, anc: &P) -> bool {
        self.0.len() > anc.0.len() && self.0[..anc.0.len()] == anc.0[..]
    }

    /// `self` with its prefix `from` replaced by `to`.
    fn moved(&self, from: &P, to: &P) -> P {
        let mut v = to.0.clone();
        v.extend_from_slice(&self.0[from.0.len()..]);
        P(v)
    }
}

/// How a path is drawn. Paths picked from what exists when the step runs make most steps
/// meet something (a fixed path alone would mostly find nothing there); they are resolved
/// against the model just before the step, and failures print the resolved path.
#[derive(Debug, Clone)]
enum Sel {
    /// This path, whatever is there.
    At(P),
    /// The n-th (modulo their number) existing name below the buckets.
    Existing(u8),
    /// This name in the n-th existing directory (buckets included).
    In(u8, &'static str),
}

impl Sel {
    fn resolve(&self, m: &Model) -> P {
        match self {
            Sel::At(p) => p.clone(),
            Sel::Existing(i) => {
                let all: Vec<&P> = m.entries.keys().filter(|p| p.0.len() > 1).collect();
                if all.is_empty() {
                    P(vec![BUCKETS[0], NAMES[0]])
                } else {
                    all[*i as usize % all.len()].clone()
                }
            }
            Sel::In(i, name) => {
                let dirs: Vec<&P> = m
                    .entries
                    .iter()
                    .filter(|(_, e)| **e == Entry::Dir)
                    .map(|(p, _)| p)
                    .collect();
                dirs[*i as usize % dirs.len()].join(name)
            }
        }
    }
}

/// How a path is truncated.
#[derive(Debug, Clone)]
enum Trunc<T> {
    /// setattr of the size by path (truncate(2)).
    Path(T),
    /// setattr of the size through an open handle (ftruncate(2)); index into open handles.
    Handle(u8),
}

/// One operation on paths drawn as `T` ([`Sel`] when generated, [`P`] once resolved).
/// Handle indices are taken modulo the number of open handles (the step does nothing when
/// none is open), so shrinking keeps sequences meaningful.
#[derive(Debug, Clone)]
enum Op<T> {
    /// create(2) with O_EXCL; the handle stays open.
    Create(T),
    /// open(2) read-write, optionally with O_TRUNC; the handle stays open.
    Open {
        path: T,
        trunc: bool,
    },
    Write {
        h: u8,
        off: u64,
        len: usize,
        seed: u64,
    },
    Read {
        h: u8,
        off: u64,
        len: usize,
    },
    Truncate {
        how: Trunc<T>,
        size: u64,
    },
    Fsync {
        h: u8,
        datasync: bool,
    },
    Release {
        h: u8,
    },
    Getattr(T),
    Mkdir(T),
    Rmdir(T),
    Unlink(T),
    Rename {
        from: T,
        to: T,
        flags: u32,
    },
    Link {
        from: T,
        to: T,
    },
    Symlink {
        path: T,
        target: u8,
    },
    Readlink(T),
    Readdir(T),
    /// The kernel forgets every lookup of a node not held open.
    Forget,
    /// Compare the whole tree (listings, contents, link counts).
    CheckAll,
    /// Drop the Vfs (after destroy) and open the store again, then compare the whole tree.
    Reopen,
}

impl Op<Sel> {
    /// The same operation on the paths the selectors give in the model's present state.
    fn resolve(&self, m: &Model) -> Op<P> {
        let r = |s: &Sel| s.resolve(m);
        match self {
            Op::Create(p) => Op::Create(r(p)),
            Op::Open { path, trunc } => Op::Open {
                path: r(path),
                trunc: *trunc,
            },
            Op::Write { h, off, len, seed } => Op::Write {
                h: *h,
                off: *off,
                len: *len,
                seed: *seed,
            },
            Op::Read { h, off, len } => Op::Read {
                h: *h,
                off: *off,
                len: *len,
            },
            Op::Truncate { how, size } => Op::Truncate {
                how: match how {
                    Trunc::Path(p) => Trunc::Path(r(p)),
                    Trunc::Handle(h) => Trunc::Handle(*h),
                },
                size: *size,
            },
            Op::Fsync { h, datasync } => Op::Fsync {
                h: *h,
                datasync: *datasync,
            },
            Op::Release { h } => Op::Release { h: *h },
            Op::Getattr(p) => Op::Getattr(r(p)),
            Op::Mkdir(p) => Op::Mkdir(r(p)),
            Op::Rmdir(p) => Op::Rmdir(r(p)),
            Op::Unlink(p) => Op::Unlink(r(p)),
            Op::Rename { from, to, flags } => Op::Rename {
                from: r(from),
                to: r(to),
                flags: *flags,
            },
            Op::Link { from, to } => Op::Link {
                from: r(from),
                to: r(to),
            },
            Op::Symlink { path, target } => Op::Symlink {
                path: r(path),
                target: *target,
            },
            Op::Readlink(p) => Op::Readlink(r(p)),
            Op::Readdir(p) => Op::Readdir(r(p)),
            Op::Forget => Op::Forget,
            Op::CheckAll => Op::CheckAll,
            Op::Reopen => Op::Reopen,
        }
    }
}

fn name_s() -> impl Strategy<Value = &'static str> {
    prop::sample::select(NAMES.to_vec())
}

fn bucket_s() -> impl Strategy<Value = &'static str> {
    prop_oneof![3 => Just(BUCKETS[0]), 1 => Just(BUCKETS[1])]
}

/// A path of `depth` names below a bucket.
fn path_depth(depth: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = P> {
    (bucket_s(), prop::collection::vec(name_s(), depth)).prop_map(|(b, names)| {
        let mut v = vec![b];
        v.extend(names);
        P(v)
    })
}

/// A path below a bucket (never a bucket itself).
fn path_s() -> impl Strategy<Value = Sel> {
    prop_oneof![
        2 => prop_oneof![
            3 => path_depth(1..=1),
            2 => path_depth(2..=2),
            1 => path_depth(3..=3),
        ]
        .prop_map(Sel::At),
        2 => any::<u8>().prop_map(Sel::Existing),
        2 => (any::<u8>(), name_s()).prop_map(|(i, n)| Sel::In(i, n)),
    ]
}

/// A path that mostly exists: what open, unlink, rename and the like start from.
fn existing_s() -> impl Strategy<Value = Sel> {
    prop_oneof![
        1 => path_s(),
        2 => any::<u8>().prop_map(Sel::Existing),
    ]
}

/// A path to create or rename to: mostly a name in an existing directory.
fn new_s() -> impl Strategy<Value = Sel> {
    prop_oneof![
        1 => path_s(),
        2 => (any::<u8>(), name_s()).prop_map(|(i, n)| Sel::In(i, n)),
    ]
}

/// A directory to list: a path that may be a bucket, or an existing name.
fn dir_s() -> impl Strategy<Value = Sel> {
    prop_oneof![
        1 => path_depth(0..=2).prop_map(Sel::At),
        1 => any::<u8>().prop_map(Sel::Existing),
    ]
}

fn off_s() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => (0u64..6, -2i64..=2).prop_map(|(k, d)| (k * CS).saturating_add_signed(d)),
        2 => 0..3 * CS,
        1 => 0..8 * CS,
    ]
}

fn len_s() -> impl Strategy<Value = usize> {
    let cs = CS as usize;
    prop_oneof![
        2 => 0usize..=3,
        2 => prop::sample::select(vec![cs - 1, cs, cs + 1, 2 * cs + 1]),
        3 => 0..2 * cs,
    ]
}

fn rename_flags_s() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => Just(0),
        1 => Just(libc::RENAME_NOREPLACE),
        1 => Just(libc::RENAME_EXCHANGE),
    ]
}

fn op_s() -> impl Strategy<Value = Op<Sel>> {
    prop_oneof![
        4 => new_s().prop_map(Op::Create),
        2 => (existing_s(), any::<bool>()).prop_map(|(path, trunc)| Op::Open { path, trunc }),
        5 => (any::<u8>(), off_s(), len_s(), any::<u64>())
            .prop_map(|(h, off, len, seed)| Op::Write { h, off, len, seed }),
        3 => (any::<u8>(), off_s(), len_s()).prop_map(|(h, off, len)| Op::Read { h, off, len }),
        2 => (
            prop_oneof![existing_s().prop_map(Trunc::Path), any::<u8>().prop_map(Trunc::Handle)],
            off_s()
        )
            .prop_map(|(how, size)| Op::Truncate { how, size }),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(h, datasync)| Op::Fsync { h, datasync }),
        2 => any::<u8>().prop_map(|h| Op::Release { h }),
        2 => existing_s().prop_map(Op::Getattr),
        4 => new_s().prop_map(Op::Mkdir),
        2 => existing_s().prop_map(Op::Rmdir),
        2 => existing_s().prop_map(Op::Unlink),
        4 => (existing_s(), new_s(), rename_flags_s())
            .prop_map(|(from, to, flags)| Op::Rename { from, to, flags }),
        2 => (existing_s(), new_s()).prop_map(|(from, to)| Op::Link { from, to }),
        2 => (new_s(), 0u8..TARGETS.len() as u8)
            .prop_map(|(path, target)| Op::Symlink { path, target }),
        1 => existing_s().prop_map(Op::Readlink),
        2 => dir_s().prop_map(Op::Readdir),
        1 => Just(Op::Forget),
        1 => Just(Op::CheckAll),
        1 => Just(Op::Reopen),
    ]
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

type Errno = i32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Dir,
    /// A file or symlink: an id into `Model::objs` (hard links share it).
    Obj(u64),
}

#[derive(Debug, Clone)]
enum Obj {
    File(Vec<u8>),
    Symlink(Vec<u8>),
}

/// The expected state: every name, and the contents of every object (unlinked ones stay
/// while a handle may still refer to them).
struct Model {
    entries: BTreeMap<P, Entry>,
    objs: HashMap<u64, Obj>,
    next_id: u64,
}

impl Model {
    fn new() -> Self {
        let entries = BUCKETS.iter().map(|b| (P(vec![*b]), Entry::Dir)).collect();
        Model {
            entries,
            objs: HashMap::new(),
            next_id: 1,
        }
    }

    fn kind_of(&self, e: Entry) -> Kind {
        match e {
            Entry::Dir => Kind::Dir,
            Entry::Obj(id) => match self.objs[&id] {
                Obj::File(_) => Kind::File,
                Obj::Symlink(_) => Kind::Symlink,
            },
        }
    }

    /// Every directory above the last name must exist: ENOENT, or ENOTDIR for a non-dir.
    fn walk(&self, p: &P) -> Result<(), Errno> {
        for k in 2..p.0.len() {
            match self.entries.get(&P(p.0[..k].to_vec())) {
                None => return Err(libc::ENOENT),
                Some(Entry::Dir) => {}
                Some(Entry::Obj(_)) => return Err(libc::ENOTDIR),
            }
        }
        Ok(())
    }

    /// The walk, then the entry itself (ENOENT if absent).
    fn get(&self, p: &P) -> Result<Entry, Errno> {
        self.walk(p)?;
        self.entries.get(p).copied().ok_or(libc::ENOENT)
    }

    /// The walk, then EEXIST if the name exists.
    fn creatable(&self, p: &P) -> Result<(), Errno> {
        self.walk(p)?;
        if self.entries.contains_key(p) {
            return Err(libc::EEXIST);
        }
        Ok(())
    }

    fn children(&self, p: &P) -> Vec<(String, Kind)> {
        self.entries
            .iter()
            .filter(|(k, _)| k.0.len() == p.0.len() + 1 && k.is_under(p))
            .map(|(k, e)| (k.name().to_string(), self.kind_of(*e)))
            .collect()
    }

    /// `p` and everything below it.
    fn subtree(&self, p: &P) -> Vec<(P, Entry)> {
        self.entries
            .iter()
            .filter(|(k, _)| *k == p || k.is_under(p))
            .map(|(k, e)| (k.clone(), *e))
            .collect()
    }

    fn links(&self, id: u64) -> u32 {
        self.entries
            .values()
            .filter(|e| **e == Entry::Obj(id))
            .count() as u32
    }

    fn new_obj(&mut self, o: Obj) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.objs.insert(id, o);
        id
    }

    fn file(&self, id: u64) -> &Vec<u8> {
        match &self.objs[&id] {
            Obj::File(d) => d,
            Obj::Symlink(_) => panic!("object {id} is a symlink"),
        }
    }

    fn file_mut(&mut self, id: u64) -> &mut Vec<u8> {
        match self.objs.get_mut(&id) {
            Some(Obj::File(d)) => d,
            _ => panic!("object {id} is not a file"),
        }
    }

    // ----- operations: Ok changes the model, Err leaves it as it was -----

    fn create(&mut self, p: &P) -> Result<u64, Errno> {
        self.creatable(p)?;
        let id = self.new_obj(Obj::File(Vec::new()));
        self.entries.insert(p.clone(), Entry::Obj(id));
        Ok(id)
    }

    fn open(&mut self, p: &P, trunc: bool) -> Result<u64, Errno> {
        match self.get(p)? {
            Entry::Dir => Err(libc::EISDIR),
            Entry::Obj(id) => match self.objs.get_mut(&id) {
                Some(Obj::Symlink(_)) => Err(libc::ELOOP),
                Some(Obj::File(d)) => {
                    if trunc {
                        d.clear();
                    }
                    Ok(id)
                }
                None => unreachable!("entry without object"),
            },
        }
    }

    fn truncate_path(&mut self, p: &P, size: u64) -> Result<(), Errno> {
        match self.get(p)? {
            Entry::Dir => Err(libc::EISDIR),
            Entry::Obj(id) => match self.objs.get_mut(&id) {
                Some(Obj::File(d)) => {
                    d.resize(size as usize, 0);
                    Ok(())
                }
                _ => Err(libc::EINVAL),
            },
        }
    }

    fn mkdir(&mut self, p: &P) -> Result<(), Errno> {
        self.creatable(p)?;
        self.entries.insert(p.clone(), Entry::Dir);
        Ok(())
    }

    fn rmdir(&mut self, p: &P) -> Result<(), Errno> {
        match self.get(p)? {
            Entry::Obj(_) => Err(libc::ENOTDIR),
            Entry::Dir if !self.children(p).is_empty() => Err(libc::ENOTEMPTY),
            Entry::Dir => {
                self.entries.remove(p);
                Ok(())
            }
        }
    }

    fn unlink(&mut self, p: &P) -> Result<(), Errno> {
        match self.get(p)? {
            Entry::Dir => Err(libc::EISDIR),
            Entry::Obj(_) => {
                self.entries.remove(p);
                Ok(())
            }
        }
    }

    fn symlink(&mut self, p: &P, target: &str) -> Result<(), Errno> {
        self.creatable(p)?;
        let id = self.new_obj(Obj::Symlink(target.as_bytes().to_vec()));
        self.entries.insert(p.clone(), Entry::Obj(id));
        Ok(())
    }

    fn readlink(&self, p: &P) -> Result<Vec<u8>, Errno> {
        match self.get(p)? {
            Entry::Obj(id) => match &self.objs[&id] {
                Obj::Symlink(t) => Ok(t.clone()),
                Obj::File(_) => Err(libc::EINVAL),
            },
            Entry::Dir => Err(libc::EINVAL),
        }
    }

    fn link(&mut self, from: &P, to: &P) -> Result<(), Errno> {
        let e = self.get(from)?;
        self.creatable(to)?;
        if e == Entry::Dir {
            return Err(libc::EPERM);
        }
        if from.bucket() != to.bucket() {
            return Err(libc::EXDEV);
        }
        self.entries.insert(to.clone(), e);
        Ok(())
    }

    /// rename(2): first what the kernel checks, then what the filesystem decides.
    fn rename(&mut self, from: &P, to: &P, flags: u32) -> Result<(), Errno> {
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let fe = self.get(from)?;
        self.walk(to)?;
        let te = self.entries.get(to).copied();
        if flags & libc::RENAME_NOREPLACE != 0 && te.is_some() {
            return Err(libc::EEXIST);
        }
        if exchange && te.is_none() {
            return Err(libc::ENOENT);
        }
        if to.is_under(from) {
            return Err(libc::EINVAL);
        }
        if from.is_under(to) {
            return Err(if exchange {
                libc::EINVAL
            } else {
                libc::ENOTEMPTY
            });
        }
        if from == to || matches!((fe, te), (Entry::Obj(a), Some(Entry::Obj(b))) if a == b) {
            return Ok(());
        }
        if let (false, Some(te)) = (exchange, te) {
            match (fe == Entry::Dir, te == Entry::Dir) {
                (true, false) => return Err(libc::ENOTDIR),
                (false, true) => return Err(libc::EISDIR),
                _ => {}
            }
        }
        // The filesystem's part.
        if from.bucket() != to.bucket() {
            if exchange {
                return Err(libc::EINVAL);
            }
            let hard_linked = self.subtree(from).iter().any(|(_, e)| match e {
                Entry::Obj(id) => matches!(self.objs[id], Obj::File(_)) && self.links(*id) > 1,
                Entry::Dir => false,
            });
            if hard_linked {
                return Err(libc::EXDEV);
            }
        }
        if !exchange && te == Some(Entry::Dir) && !self.children(to).is_empty() {
            return Err(libc::ENOTEMPTY);
        }
        let a = self.subtree(from);
        let b = if exchange {
            self.subtree(to)
        } else {
            te.map(|e| vec![(to.clone(), e)]).unwrap_or_default()
        };
        for (k, _) in a.iter().chain(b.iter()) {
            self.entries.remove(k);
        }
        for (k, e) in a {
            self.entries.insert(k.moved(from, to), e);
        }
        if exchange {
            for (k, e) in b {
                self.entries.insert(k.moved(to, from), e);
            }
        }
        Ok(())
    }

    fn readdir(&self, p: &P) -> Result<Vec<(String, Kind)>, Errno> {
        match self.get(p)? {
            Entry::Dir => Ok(self.children(p)),
            Entry::Obj(_) => Err(libc::ENOTDIR),
        }
    }
}

/// pwrite(2): a write of nothing changes nothing, even past the end.
fn model_write(d: &mut Vec<u8>, off: u64, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let off = off as usize;
    if d.len() < off + data.len() {
        d.resize(off + data.len(), 0);
    }
    d[off..off + data.len()].copy_from_slice(data);
}

fn model_read(d: &[u8], off: u64, len: usize) -> &[u8] {
    let off = (off as usize).min(d.len());
    &d[off..(off + len).min(d.len())]
}

// ---------------------------------------------------------------------------------------
// The kernel's side: path walks, lookup counts, open handles
// ---------------------------------------------------------------------------------------

fn errno(e: envelopefs::error::Error) -> Errno {
    e.errno()
}

struct Handle {
    ino: u64,
    fh: u64,
    /// The model's object.
    obj: u64,
}

/// What the kernel would hold: the vfs, lookup counts per node id, open handles.
struct Kernel<'a> {
    backend: &'a mut dyn Backend,
    vfs: Option<Arc<Vfs>>,
    lookups: HashMap<u64, u64>,
    handles: Vec<Handle>,
    caller: (u32, u32),
}

impl<'a> Kernel<'a> {
    fn new(backend: &'a mut dyn Backend) -> Self {
        let caller = backend.caller();
        let vfs = backend.open_vfs();
        Kernel {
            backend,
            vfs: Some(vfs),
            lookups: HashMap::new(),
            handles: Vec::new(),
            caller,
        }
    }

    fn vfs(&self) -> &Vfs {
        self.vfs.as_ref().expect("vfs is open")
    }

    /// An entry the kernel got (lookup, create, mkdir, symlink, link) counts one lookup.
    fn counted(&mut self, a: Attr) -> Attr {
        *self.lookups.entry(a.ino).or_default() += 1;
        a
    }

    fn lookup(&mut self, parent: u64, name: &str) -> Result<Attr, Errno> {
        let a = self.vfs().lookup(parent, OsStr::new(name)).map_err(errno)?;
        Ok(self.counted(a))
    }

    /// Walks to the directory holding `p`'s last name: its node id.
    fn walk(&mut self, p: &P) -> Result<u64, Errno> {
        let mut ino = ROOT;
        for name in &p.0[..p.0.len() - 1] {
            let a = self.lookup(ino, name)?;
            if a.kind != Kind::Dir {
                return Err(libc::ENOTDIR);
            }
            ino = a.ino;
        }
        Ok(ino)
    }

    /// The walk and the last name's lookup.
    fn resolve(&mut self, p: &P) -> Result<(u64, Attr), Errno> {
        let parent = self.walk(p)?;
        let a = self.lookup(parent, p.name())?;
        Ok((parent, a))
    }

    /// The walk, and EEXIST if the last name exists (the kernel's own check before create,
    /// mkdir, symlink and link).
    fn walk_new(&mut self, p: &P) -> Result<u64, Errno> {
        let parent = self.walk(p)?;
        match self.lookup(parent, p.name()) {
            Ok(_) => Err(libc::EEXIST),
            Err(libc::ENOENT) => Ok(parent),
            Err(e) => Err(e),
        }
    }

    fn handle(&self, h: u8) -> Option<usize> {
        (!self.handles.is_empty()).then(|| h as usize % self.handles.len())
    }

    /// A directory's entries, without `.` and `..`, sorted: (name, kind, node id).
    fn list(&self, ino: u64) -> Result<Vec<(String, Kind, u64)>, Errno> {
        let vfs = self.vfs();
        let fh = vfs.opendir(ino).map_err(errno)?;
        let mut out = Vec::new();
        let r = vfs.readdir(fh, 0, &mut |ino, _off, kind, name| {
            out.push((name.to_string_lossy().into_owned(), kind, ino));
            false
        });
        vfs.releasedir(fh);
        r.map_err(errno)?;
        out.retain(|(n, _, _)| n != "." && n != "..");
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The whole contents through a handle.
    fn read_all(&self, ino: u64, fh: u64, size: u64) -> Result<Vec<u8>, String> {
        let mut buf = Vec::new();
        self.vfs()
            .read(ino, fh, 0, (size + CS) as u32, &mut buf)
            .map_err(|e| format!("read: {}", errno_name(errno(e))))?;
        Ok(buf)
    }

    /// The kernel forgets every node it does not hold open.
    fn forget_all(&mut self) {
        let pinned: Vec<u64> = self.handles.iter().map(|h| h.ino).collect();
        let vfs = self.vfs.as_ref().expect("vfs is open");
        self.lookups.retain(|ino, n| {
            if pinned.contains(ino) {
                return true;
            }
            vfs.forget(*ino, *n);
            false
        });
    }

    /// Closes everything and unmounts (as the kernel does at unmount).
    fn unmount(&mut self) {
        let vfs = self.vfs.take().expect("vfs is open");
        for h in self.handles.drain(..) {
            vfs.release(h.ino, h.fh);
        }
        for (ino, n) in self.lookups.drain() {
            vfs.forget(ino, n);
        }
        vfs.destroy();
    }

    fn reopen(&mut self) {
        self.unmount();
        self.vfs = Some(self.backend.open_vfs());
    }
}

// ---------------------------------------------------------------------------------------
// The runner
// ---------------------------------------------------------------------------------------

/// Compares the vfs's outcome with the model's: both succeed or both fail with one errno.
fn same<A, B>(got: &Result<A, Errno>, want: &Result<B, Errno>) -> Result<(), String> {
    match (got, want) {
        (Ok(_), Ok(_)) => Ok(()),
        (Err(g), Err(w)) if g == w => Ok(()),
        (g, w) => Err(format!(
            "vfs {}, model {}",
            outcome(g.as_ref().map(|_| ()).map_err(|e| *e)),
            outcome(w.as_ref().map(|_| ()).map_err(|e| *e))
        )),
    }
}

fn outcome(r: Result<(), Errno>) -> String {
    match r {
        Ok(()) => "succeeded".into(),
        Err(e) => format!("failed with {}", errno_name(e)),
    }
}

fn check_eq<T: PartialEq + fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: vfs {got:?}, model {want:?}"))
    }
}

fn check_bytes(what: &str, got: &[u8], want: &[u8]) -> Result<(), String> {
    match common::first_diff(got, want) {
        None => Ok(()),
        Some(i) => Err(format!(
            "{what}: contents differ at byte {i} (vfs {} bytes, model {} bytes)",
            got.len(),
            want.len()
        )),
    }
}

/// What each step ended with (errno 0 for success), for tests that look at the outcomes.
type Outcomes = Vec<(String, Errno)>;

/// Applies `ops` to a vfs of `backend` and to the model, comparing after every step; at the
/// end compares the whole tree, then once more after a reopen. Backend-independent.
fn run(backend: &mut dyn Backend, ops: &[Op<Sel>]) -> Result<Outcomes, String> {
    let mut k = Kernel::new(backend);
    let mut model = Model::new();
    let mut outcomes = Vec::new();
    let r = (|| {
        let (uid, gid) = k.caller;
        for b in BUCKETS {
            let a = k
                .vfs()
                .mkdir(ROOT, OsStr::new(b), 0o755, uid, gid)
                .map_err(|e| format!("creating bucket {b}: {e}"))?;
            k.counted(a);
        }
        for (i, op) in ops.iter().enumerate() {
            let op = op.resolve(&model);
            let r = step(&mut k, &mut model, &op).map_err(|e| format!("step {i} {op:?}: {e}"))?;
            outcomes.push((format!("{op:?}"), r.err().unwrap_or(0)));
        }
        check_all(&mut k, &model).map_err(|e| format!("at the end: {e}"))?;
        k.reopen();
        check_all(&mut k, &model).map_err(|e| format!("at the end, after a reopen: {e}"))
    })();
    if k.vfs.is_some() {
        k.unmount();
    }
    r.map(|()| outcomes)
}

/// One step. The outer error is a disagreement; the inner result is the agreed outcome.
fn step(k: &mut Kernel<'_>, m: &mut Model, op: &Op<P>) -> Result<Result<(), Errno>, String> {
    let (uid, gid) = k.caller;
    match op {
        Op::Create(p) => {
            let got = k.walk_new(p).and_then(|parent| {
                k.vfs()
                    .create(
                        parent,
                        OsStr::new(p.name()),
                        0o644,
                        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                        uid,
                        gid,
                    )
                    .map_err(errno)
            });
            let want = m.create(p);
            same(&got, &want)?;
            if let (Ok((a, fh)), Ok(id)) = (got, want) {
                let a = k.counted(a);
                check_eq("kind", a.kind, Kind::File)?;
                check_eq("size", a.size, 0)?;
                check_eq("nlink", a.nlink, 1)?;
                k.handles.push(Handle {
                    ino: a.ino,
                    fh,
                    obj: id,
                });
                return Ok(Ok(()));
            }
            Ok(want.map(|_| ()))
        }
        Op::Open { path, trunc } => {
            let flags = libc::O_RDWR | if *trunc { libc::O_TRUNC } else { 0 };
            let got = k.resolve(path).and_then(|(_, a)| match a.kind {
                Kind::Dir => Err(libc::EISDIR),
                Kind::Symlink => Err(libc::ELOOP),
                _ => k
                    .vfs()
                    .open(a.ino, flags, 0)
                    .map(|fh| (a.ino, fh))
                    .map_err(errno),
            });
            let want = m.open(path, *trunc);
            same(&got, &want)?;
            if let (Ok((ino, fh)), Ok(id)) = (got, want) {
                k.handles.push(Handle { ino, fh, obj: id });
                let a = k.vfs().getattr(ino, Some(fh)).map_err(|e| e.to_string())?;
                check_eq("size after open", a.size, m.file(id).len() as u64)?;
            }
            Ok(want.map(|_| ()))
        }
        Op::Write { h, off, len, seed } => {
            let Some(i) = k.handle(*h) else {
                return Ok(Ok(()));
            };
            let (ino, fh, id) = (k.handles[i].ino, k.handles[i].fh, k.handles[i].obj);
            let data = pattern(*seed, *len);
            let n = k
                .vfs()
                .write(ino, fh, *off, &data)
                .map_err(|e| format!("write: {e}"))?;
            check_eq("bytes written", n as usize, *len)?;
            model_write(m.file_mut(id), *off, &data);
            let a = k.vfs().getattr(ino, Some(fh)).map_err(|e| e.to_string())?;
            check_eq("size after write", a.size, m.file(id).len() as u64)?;
            Ok(Ok(()))
        }
        Op::Read { h, off, len } => {
            let Some(i) = k.handle(*h) else {
                return Ok(Ok(()));
            };
            let (ino, fh, id) = (k.handles[i].ino, k.handles[i].fh, k.handles[i].obj);
            let mut buf = Vec::new();
            k.vfs()
                .read(ino, fh, *off, *len as u32, &mut buf)
                .map_err(|e| format!("read: {e}"))?;
            check_bytes("read", &buf, model_read(m.file(id), *off, *len))?;
            Ok(Ok(()))
        }
        Op::Truncate { how, size } => {
            let (got, want, id) = match how {
                Trunc::Path(p) => {
                    let got = k.resolve(p).and_then(|(_, a)| match a.kind {
                        Kind::Dir => Err(libc::EISDIR),
                        Kind::Symlink => Err(libc::EINVAL),
                        _ => k
                            .vfs()
                            .setattr(a.ino, None, None, None, Some(*size), None, None, None, 0)
                            .map_err(errno),
                    });
                    let want = m.truncate_path(p, *size);
                    (got, want, None)
                }
                Trunc::Handle(h) => {
                    let Some(i) = k.handle(*h) else {
                        return Ok(Ok(()));
                    };
                    let (ino, fh, id) = (k.handles[i].ino, k.handles[i].fh, k.handles[i].obj);
                    let got = k
                        .vfs()
                        .setattr(ino, None, None, None, Some(*size), None, None, Some(fh), 0)
                        .map_err(errno);
                    m.file_mut(id).resize(*size as usize, 0);
                    (got, Ok(()), Some(id))
                }
            };
            same(&got, &want)?;
            if let Ok(a) = got {
                check_eq("size after truncate", a.size, *size)?;
                if let Some(id) = id {
                    check_eq("model size", m.file(id).len() as u64, *size)?;
                }
            }
            Ok(want)
        }
        Op::Fsync { h, datasync } => {
            let Some(i) = k.handle(*h) else {
                return Ok(Ok(()));
            };
            let (ino, fh) = (k.handles[i].ino, k.handles[i].fh);
            k.vfs()
                .fsync(ino, fh, *datasync)
                .map_err(|e| format!("fsync: {e}"))?;
            Ok(Ok(()))
        }
        Op::Release { h } => {
            let Some(i) = k.handle(*h) else {
                return Ok(Ok(()));
            };
            let hd = k.handles.remove(i);
            k.vfs().release(hd.ino, hd.fh);
            Ok(Ok(()))
        }
        Op::Getattr(p) => {
            let got = k
                .resolve(p)
                .and_then(|(_, a)| k.vfs().getattr(a.ino, None).map_err(errno));
            let want = m.get(p);
            same(&got, &want)?;
            if let (Ok(a), Ok(e)) = (got, want) {
                check_attr(m, e, &a)?;
            }
            Ok(want.map(|_| ()))
        }
        Op::Mkdir(p) => {
            let got = k.walk_new(p).and_then(|parent| {
                k.vfs()
                    .mkdir(parent, OsStr::new(p.name()), 0o755, uid, gid)
                    .map_err(errno)
            });
            let want = m.mkdir(p);
            same(&got, &want)?;
            if let Ok(a) = got {
                check_eq("kind", k.counted(a).kind, Kind::Dir)?;
            }
            Ok(want)
        }
        Op::Rmdir(p) => {
            let got = k.resolve(p).and_then(|(parent, a)| {
                if a.kind != Kind::Dir {
                    return Err(libc::ENOTDIR);
                }
                k.vfs().rmdir(parent, OsStr::new(p.name())).map_err(errno)
            });
            let want = m.rmdir(p);
            same(&got, &want)?;
            Ok(want)
        }
        Op::Unlink(p) => {
            let got = k.resolve(p).and_then(|(parent, a)| {
                if a.kind == Kind::Dir {
                    return Err(libc::EISDIR);
                }
                k.vfs().unlink(parent, OsStr::new(p.name())).map_err(errno)
            });
            let want = m.unlink(p);
            same(&got, &want)?;
            Ok(want)
        }
        Op::Rename { from, to, flags } => {
            let got = kernel_rename(k, from, to, *flags);
            let want = m.rename(from, to, *flags);
            same(&got, &want)?;
            Ok(want)
        }
        Op::Link { from, to } => {
            let got = k.resolve(from).and_then(|(_, a)| {
                let parent = k.walk_new(to)?;
                if a.kind == Kind::Dir {
                    return Err(libc::EPERM);
                }
                k.vfs()
                    .link(a.ino, parent, OsStr::new(to.name()))
                    .map_err(errno)
            });
            let want = m.link(from, to);
            same(&got, &want)?;
            if let (Ok(a), Ok(())) = (got, want) {
                let a = k.counted(a);
                check_attr(m, m.get(to).map_err(errno_name)?, &a)?;
            }
            Ok(want)
        }
        Op::Symlink { path, target } => {
            let t = TARGETS[*target as usize % TARGETS.len()];
            let got = k.walk_new(path).and_then(|parent| {
                k.vfs()
                    .symlink(parent, OsStr::new(path.name()), Path::new(t), uid, gid)
                    .map_err(errno)
            });
            let want = m.symlink(path, t);
            same(&got, &want)?;
            if let Ok(a) = got {
                let a = k.counted(a);
                check_eq("kind", a.kind, Kind::Symlink)?;
                check_eq("size", a.size, t.len() as u64)?;
            }
            Ok(want)
        }
        Op::Readlink(p) => {
            let got = k.resolve(p).and_then(|(_, a)| {
                if a.kind != Kind::Symlink {
                    return Err(libc::EINVAL);
                }
                k.vfs().readlink(a.ino).map_err(errno)
            });
            let want = m.readlink(p);
            same(&got, &want)?;
            if let (Ok(g), Ok(w)) = (&got, &want) {
                check_bytes("symlink target", g, w)?;
            }
            Ok(want.map(|_| ()))
        }
        Op::Readdir(p) => {
            let got = k.resolve(p).and_then(|(_, a)| {
                if a.kind != Kind::Dir {
                    return Err(libc::ENOTDIR);
                }
                k.list(a.ino).map(|l| (a.ino, l))
            });
            let want = m.readdir(p);
            same(&got, &want)?;
            if let (Ok((ino, list)), Ok(_)) = (got, &want) {
                compare_listing(k, m, p, ino, &list)?;
            }
            Ok(want.map(|_| ()))
        }
        Op::Forget => {
            k.forget_all();
            Ok(Ok(()))
        }
        Op::CheckAll => {
            check_all(k, m)?;
            Ok(Ok(()))
        }
        Op::Reopen => {
            k.reopen();
            check_all(k, m).map_err(|e| format!("after the reopen: {e}"))?;
            Ok(Ok(()))
        }
    }
}

/// rename(2) as the kernel runs it: lookups, its own checks, then the filesystem.
fn kernel_rename(k: &mut Kernel<'_>, from: &P, to: &P, flags: u32) -> Result<(), Errno> {
    let exchange = flags & libc::RENAME_EXCHANGE != 0;
    let (fparent, fa) = k.resolve(from)?;
    let tparent = k.walk(to)?;
    let ta = match k.lookup(tparent, to.name()) {
        Ok(a) => Some(a),
        Err(libc::ENOENT) => None,
        Err(e) => return Err(e),
    };
    if flags & libc::RENAME_NOREPLACE != 0 && ta.is_some() {
        return Err(libc::EEXIST);
    }
    if exchange && ta.is_none() {
        return Err(libc::ENOENT);
    }
    // The kernel knows the ancestry from its dentries; here, from the paths walked.
    if to.is_under(from) {
        return Err(libc::EINVAL);
    }
    if from.is_under(to) {
        return Err(if exchange {
            libc::EINVAL
        } else {
            libc::ENOTEMPTY
        });
    }
    if let Some(ta) = ta {
        if ta.ino == fa.ino {
            return Ok(());
        }
        if !exchange {
            match (fa.kind == Kind::Dir, ta.kind == Kind::Dir) {
                (true, false) => return Err(libc::ENOTDIR),
                (false, true) => return Err(libc::EISDIR),
                _ => {}
            }
        }
    }
    k.vfs()
        .rename(
            fparent,
            OsStr::new(from.name()),
            tparent,
            OsStr::new(to.name()),
            flags,
        )
        .map_err(errno)
}

/// An entry's attributes against the model: kind, size and link count of objects.
fn check_attr(m: &Model, e: Entry, a: &Attr) -> Result<(), String> {
    check_eq("kind", a.kind, m.kind_of(e))?;
    if let Entry::Obj(id) = e {
        let size = match &m.objs[&id] {
            Obj::File(d) | Obj::Symlink(d) => d.len() as u64,
        };
        check_eq("size", a.size, size)?;
        check_eq("nlink", a.nlink, m.links(id))?;
    }
    Ok(())
}

/// A listing against the model's, and each entry's node id in readdir against the one lookup
/// gives.
fn compare_listing(
    k: &mut Kernel<'_>,
    m: &Model,
    dir: &P,
    ino: u64,
    got: &[(String, Kind, u64)],
) -> Result<(), String> {
    let names: Vec<(String, Kind)> = got.iter().map(|(n, kd, _)| (n.clone(), *kd)).collect();
    check_eq("listing", names.as_slice(), m.children(dir).as_slice())?;
    for (name, _, listed) in got {
        let a = k
            .lookup(ino, name)
            .map_err(|e| format!("lookup of listed {name:?}: {}", errno_name(e)))?;
        if *listed != a.ino {
            return Err(format!(
                "node id of {name:?}: readdir {listed}, lookup {}",
                a.ino
            ));
        }
    }
    Ok(())
}

/// The whole tree against the model: listings, kinds, sizes, link counts, contents, targets.
fn check_all(k: &mut Kernel<'_>, m: &Model) -> Result<(), String> {
    let root = k
        .list(ROOT)
        .map_err(|e| format!("readdir /: {}", errno_name(e)))?;
    for b in BUCKETS {
        if !root.iter().any(|(n, kd, _)| n == b && *kd == Kind::Dir) {
            return Err(format!("bucket {b} is not listed at the root"));
        }
        let a = k
            .lookup(ROOT, b)
            .map_err(|e| format!("lookup {b}: {}", errno_name(e)))?;
        check_dir(k, m, &P(vec![b]), a.ino)?;
    }
    Ok(())
}

fn check_dir(k: &mut Kernel<'_>, m: &Model, p: &P, ino: u64) -> Result<(), String> {
    let list = k
        .list(ino)
        .map_err(|e| format!("readdir {p:?}: {}", errno_name(e)))?;
    compare_listing(k, m, p, ino, &list).map_err(|e| format!("{p:?}: {e}"))?;
    for (name, _, _) in &list {
        let name: &'static str = NAMES
            .iter()
            .find(|n| **n == name)
            .ok_or_else(|| format!("{p:?}: unexpected name {name:?}"))?;
        let child = p.join(name);
        let e = m.entries[&child];
        let a = k
            .lookup(ino, name)
            .map_err(|e| format!("lookup {child:?}: {}", errno_name(e)))?;
        check_attr(m, e, &a).map_err(|e| format!("{child:?}: {e}"))?;
        match (e, a.kind) {
            (Entry::Dir, _) => check_dir(k, m, &child, a.ino)?,
            (Entry::Obj(id), Kind::File) => {
                let fh = k
                    .vfs()
                    .open(a.ino, libc::O_RDONLY, 0)
                    .map_err(|e| format!("open {child:?}: {e}"))?;
                let data = k.read_all(a.ino, fh, a.size);
                k.vfs().release(a.ino, fh);
                check_bytes(&format!("{child:?}"), &data?, m.file(id))?;
            }
            (Entry::Obj(id), _) => {
                let t = k
                    .vfs()
                    .readlink(a.ino)
                    .map_err(|e| format!("readlink {child:?}: {e}"))?;
                if let Obj::Symlink(want) = &m.objs[&id] {
                    check_bytes(&format!("target of {child:?}"), &t, want)?;
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn local_dir_backend_agrees_with_the_model(ops in prop::collection::vec(op_s(), 1..40)) {
        let mut backend = LocalDir::new();
        run(&mut backend, &ops).map_err(TestCaseError::fail)?;
    }
}

fn p(s: &'static str) -> Sel {
    Sel::At(P(s.split('/').collect()))
}

/// A fixed sequence through the same runner, so every operation and the interesting errnos
/// are reached whatever proptest draws; the outcomes are asserted here too, not only agreed
/// on by the vfs and the model.
#[test]
fn scripted_sequence_reaches_every_operation() {
    use libc::{EEXIST, EINVAL, EISDIR, ENOENT, ENOTDIR, ENOTEMPTY, EPERM, EXDEV};
    use Op::*;
    let cs = CS as usize;
    let (noreplace, exchange) = (libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE);
    let script: Vec<(Op<Sel>, Errno)> = vec![
        (Mkdir(p("b/x")), 0),
        (Create(p("b/x/y")), 0), // handle 0
        // Past EOF and across two chunk boundaries, then a read across them.
        (
            Write {
                h: 0,
                off: CS - 10,
                len: cs + 20,
                seed: 1,
            },
            0,
        ),
        (
            Write {
                h: 0,
                off: 3 * CS + 7,
                len: 5,
                seed: 2,
            },
            0,
        ),
        (
            Read {
                h: 0,
                off: CS - 20,
                len: 3 * cs,
            },
            0,
        ),
        (
            Truncate {
                how: Trunc::Handle(0),
                size: CS + 1,
            },
            0,
        ),
        (
            Truncate {
                how: Trunc::Path(p("b/x/y")),
                size: 5 * CS,
            },
            0,
        ),
        (
            Truncate {
                how: Trunc::Path(p("b/x")),
                size: 1,
            },
            EISDIR,
        ),
        (
            Fsync {
                h: 0,
                datasync: true,
            },
            0,
        ),
        (Getattr(p("b/x/y")), 0),
        (Getattr(p("b/y")), ENOENT),
        (
            Link {
                from: p("b/x/y"),
                to: p("b/z"),
            },
            0,
        ),
        (
            Link {
                from: p("b/x/y"),
                to: p("c/z"),
            },
            EXDEV,
        ),
        (
            Link {
                from: p("b/x"),
                to: p("b/y"),
            },
            EPERM,
        ),
        (Getattr(p("b/z")), 0), // nlink 2
        (
            Symlink {
                path: p("b/y"),
                target: 1,
            },
            0,
        ),
        (Readlink(p("b/y")), 0),
        (Readlink(p("b/z")), EINVAL),
        (
            Open {
                path: p("b/y"),
                trunc: false,
            },
            libc::ELOOP,
        ),
        (
            Open {
                path: p("b/x"),
                trunc: false,
            },
            EISDIR,
        ),
        (Mkdir(p("b/y")), EEXIST),
        (Mkdir(p("b/z/x")), ENOTDIR),
        (Mkdir(p("b/x/x/x")), ENOENT),
        (Rmdir(p("b/x")), ENOTEMPTY),
        (Unlink(p("b/x")), EISDIR),
        (Rmdir(p("b/z")), ENOTDIR),
        (Readdir(p("b")), 0),
        (Readdir(p("b/z")), ENOTDIR),
        (Create(p("b/x/z")), 0), // handle 1
        (
            Write {
                h: 1,
                off: 0,
                len: 100,
                seed: 3,
            },
            0,
        ),
        // Over an existing file within one directory, then across directories over the
        // last name of handle 0's file, which stays open and writable.
        (
            Rename {
                from: p("b/x/z"),
                to: p("b/x/y"),
                flags: 0,
            },
            0,
        ),
        (
            Rename {
                from: p("b/x/y"),
                to: p("b/z"),
                flags: 0,
            },
            0,
        ),
        (
            Write {
                h: 0,
                off: 10,
                len: 10,
                seed: 4,
            },
            0,
        ),
        (
            Read {
                h: 0,
                off: 0,
                len: 6 * cs,
            },
            0,
        ),
        // Two names of one file: rename between them does nothing; across buckets EXDEV
        // while hard-linked, then a rewrap once it has one name (still open).
        (
            Link {
                from: p("b/z"),
                to: p("b/x/x"),
            },
            0,
        ),
        (
            Rename {
                from: p("b/z"),
                to: p("b/x/x"),
                flags: 0,
            },
            0,
        ),
        (Getattr(p("b/z")), 0),
        (
            Rename {
                from: p("b/z"),
                to: p("c/x"),
                flags: 0,
            },
            EXDEV,
        ),
        (Unlink(p("b/x/x")), 0),
        (
            Rename {
                from: p("b/z"),
                to: p("c/x"),
                flags: 0,
            },
            0,
        ),
        (
            Write {
                h: 1,
                off: CS,
                len: 10,
                seed: 5,
            },
            0,
        ),
        // Directories: onto a non-empty one, into itself, onto its own ancestor, onto a
        // file, a file onto a directory, across buckets with an open file inside.
        (Mkdir(p("b/z")), 0),
        (Mkdir(p("b/z/x")), 0),
        (Create(p("b/z/x/y")), 0), // handle 2
        (Mkdir(p("b/x/y")), 0),
        (
            Rename {
                from: p("b/x"),
                to: p("b/z"),
                flags: 0,
            },
            ENOTEMPTY,
        ),
        (
            Rename {
                from: p("b/z"),
                to: p("b/z/x/x"),
                flags: 0,
            },
            EINVAL,
        ),
        (
            Rename {
                from: p("b/z/x"),
                to: p("b/z"),
                flags: 0,
            },
            ENOTEMPTY,
        ),
        (
            Rename {
                from: p("b/x/y"),
                to: p("b/z/x/y"),
                flags: 0,
            },
            ENOTDIR,
        ),
        (
            Rename {
                from: p("b/z/x/y"),
                to: p("b/x/y"),
                flags: 0,
            },
            EISDIR,
        ),
        (
            Rename {
                from: p("b/x/y"),
                to: p("b/z/y"),
                flags: 0,
            },
            0,
        ),
        (
            Rename {
                from: p("b/z"),
                to: p("c/y"),
                flags: 0,
            },
            0,
        ),
        (
            Write {
                h: 2,
                off: 2 * CS - 1,
                len: 2,
                seed: 6,
            },
            0,
        ),
        // Rename flags.
        (
            Rename {
                from: p("b/y"),
                to: p("c/x"),
                flags: noreplace,
            },
            EEXIST,
        ),
        (
            Rename {
                from: p("b/y"),
                to: p("b/x"),
                flags: exchange,
            },
            0,
        ),
        (
            Rename {
                from: p("b/y"),
                to: p("c/x"),
                flags: exchange,
            },
            EINVAL,
        ),
        (
            Rename {
                from: p("b/y"),
                to: p("b/z"),
                flags: exchange,
            },
            ENOENT,
        ),
        (Release { h: 0 }, 0),
        (Forget, 0),
        (Readdir(p("c/y")), 0),
        (Reopen, 0),
        (Readdir(p("c")), 0),
        (CheckAll, 0),
    ];
    let ops: Vec<Op<Sel>> = script.iter().map(|(op, _)| op.clone()).collect();
    let mut backend = LocalDir::new();
    let out = run(&mut backend, &ops).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.len(), script.len());
    for ((op, want), (_, got)) in script.iter().zip(&out) {
        assert_eq!(
            got,
            want,
            "{op:?}: {} where the script expects {}",
            errno_name(*got),
            errno_name(*want)
        );
    }
}

/// A file with two names keeps one node id when the kernel held it under one name only and
/// that name was unlinked: a lookup of the other name finds the same file, not a reused inode
/// number (found by the model: `stat` and `fstat` gave two inode numbers for one file).
#[test]
fn a_hard_link_keeps_its_node_id_after_another_name_is_unlinked() {
    let mut backend = LocalDir::new();
    let vfs = backend.open_vfs();
    let (uid, gid) = backend.caller();
    let b = vfs
        .mkdir(ROOT, OsStr::new("b"), 0o755, uid, gid)
        .unwrap()
        .ino;
    let (a, fh) = vfs
        .create(
            b,
            OsStr::new("a"),
            0o644,
            libc::O_RDWR | libc::O_CREAT,
            uid,
            gid,
        )
        .unwrap();
    vfs.release(a.ino, fh);
    let l = vfs.link(a.ino, b, OsStr::new("l")).unwrap();
    assert_eq!(l.ino, a.ino);
    vfs.forget(a.ino, 2); // the kernel evicts the node
    let l = vfs.lookup(b, OsStr::new("l")).unwrap();
    let fh = vfs.open(l.ino, libc::O_RDWR, 0).unwrap();
    vfs.unlink(b, OsStr::new("l")).unwrap();
    let a2 = vfs.lookup(b, OsStr::new("a")).unwrap();
    let held = vfs.getattr(l.ino, Some(fh)).unwrap();
    assert_eq!(held.nlink, 1);
    assert_eq!(a2.ino, held.ino, "one file, two node ids");
    vfs.release(l.ino, fh);
    vfs.destroy();
}
