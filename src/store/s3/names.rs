//! The names interface ([`Names`]) of a store in an object store: what a mount of
//! `s3://BUCKET[/PREFIX]` shows (docs/SEMANTICS-OBJECT-STORE.md).
//!
//! - An object is the S3 object `PREFIX/BUCKET/NAME` (body: the ciphertext; metadata: its
//!   header and its node attributes, [`crate::format::s3meta`]).
//! - A directory is a key prefix `PREFIX/BUCKET/DIR/`; one made through the mount has a
//!   marker object of that key (empty body, the directory's attributes), so it exists while
//!   empty. A prefix without a marker (objects put by the CLI under `a/b/`) is a directory
//!   with default attributes while something lies below it.
//! - Symlinks, fifos, sockets and device nodes are empty objects whose attributes say what
//!   they are (a symlink's target in its metadata). An object's body is never empty, so a
//!   listing tells objects from these without reading metadata.
//! - An opened object's content is a private unnamed staging file holding its ciphertext
//!   (downloaded at open) and its header as an xattr, exactly like a local backing file:
//!   the filesystem reads and writes it in place, and [`Names::commit`] uploads it (one PUT,
//!   multipart when large) on close and fsync. No plaintext reaches the local disk.
//! - Node numbers are handed out per mount, one per name (kept across a rename).
//! - Attributes and listings are cached for [`S3Names::ttl`]: the mount holds the store's
//!   single-writer lease, so what it caches changes only through it (and it updates its
//!   cache as it changes things); the lifetime bounds how long a change made behind its
//!   back with S3 tools stays unseen.
//!
//! No lock is held across a request. Lock order: `inner` is a leaf (nothing is locked
//! while it is held).

use super::backend::{header_meta, header_of, is_object_key, ObjectStoreBackend};
use super::client::{Head, S3Client};
use crate::error::{Error, IoContext, Result};
use crate::format::records::ObjectHeader;
use crate::format::s3meta::{self, NodeAttrs, NodeKind};
use crate::store::names::{DirEntry, Kind, Meta, Names, SetAttributes, SetTime, StatFs};
use crate::store::seam::{Backend, Blob};
use crate::store::{xattr, META_DIR, OBJECT_FILE_MODE};
use crate::sync::LockUnpoisoned;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn time_of(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn ns_of(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// Default cache lifetime of attributes and listings.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// The longest S3 key.
const KEY_MAX: usize = 1024;

/// A staging file is filled in blocks of this size.
const BLOCK: u64 = 1 << 20;
/// A read that needs a block also fetches this many blocks after it (sequential readers
/// then wait for one request every so many MiB).
const READ_AHEAD: u64 = 16;

/// User xattrs: (name, value), sorted by name.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// What the mount knows of a node.
#[derive(Debug, Clone)]
struct Node {
    attrs: NodeAttrs,
    /// Stored size (an object's ciphertext; 0 for the others).
    size: u64,
    /// The ETag last seen (empty for a directory without a marker, the root and buckets).
    etag: String,
    /// A directory with a marker object (else implicit: a prefix with objects below).
    marker: bool,
    target: Option<Vec<u8>>,
    xattrs: Xattrs,
    /// An object's header as last seen with `etag` (None: not known).
    header: Option<Vec<u8>>,
}

impl Node {
    /// A node with these attributes and nothing else known.
    fn of(attrs: NodeAttrs) -> Node {
        Node {
            attrs,
            size: 0,
            etag: String::new(),
            marker: false,
            target: None,
            xattrs: Vec::new(),
            header: None,
        }
    }
}

/// An opened object's staging file.
#[derive(Debug, Clone)]
struct OpenFile {
    /// A descriptor of the staging file (dropped at [`Names::closed`]).
    file: Arc<File>,
    /// Its name now (store-relative); None once unlinked or replaced.
    path: Option<String>,
    attrs: NodeAttrs,
    xattrs: Xattrs,
    /// Created by the mount and not yet uploaded: it exists only here until its first commit.
    unpublished: bool,
    /// What of the stored object is not in the staging file yet (None: all of it is).
    lazy: Option<Arc<Lazy>>,
}

/// A staging file filled as it is read: which blocks of the stored object it holds.
#[derive(Debug)]
struct Lazy {
    key: String,
    /// The stored object's length when it was opened.
    remote_len: u64,
    /// Per [`BLOCK`] of the stored object: in the staging file. Held across a fill, so
    /// two readers of one object do not fetch a block twice (a lock of this object only).
    filled: Mutex<Vec<bool>>,
}

#[derive(Default)]
struct Inner {
    /// Node numbers by name.
    inos: HashMap<String, u64>,
    next_ino: u64,
    /// Nodes by name: Some (found) or None (known absent), with when it was learnt.
    nodes: HashMap<String, (Instant, Option<Node>)>,
    /// Complete listings of directories: entry name -> whether it is a directory.
    dirs: HashMap<String, (Instant, BTreeMap<String, bool>)>,
    /// Opened objects, by their staging file's inode number.
    open: HashMap<u64, OpenFile>,
}

/// The names of a store in an object store.
pub struct S3Names {
    backend: Arc<ObjectStoreBackend>,
    client: S3Client,
    ttl: Duration,
    uid: u32,
    gid: u32,
    started_ns: i64,
    inner: Mutex<Inner>,
}

fn kind_of(k: NodeKind) -> Kind {
    match k {
        NodeKind::File => Kind::File,
        NodeKind::Dir => Kind::Dir,
        NodeKind::Symlink => Kind::Symlink,
        NodeKind::Fifo => Kind::Fifo,
        NodeKind::Socket => Kind::Socket,
        NodeKind::CharDevice => Kind::CharDevice,
        NodeKind::BlockDevice => Kind::BlockDevice,
    }
}

fn type_bits(k: NodeKind) -> u32 {
    match k {
        NodeKind::File => libc::S_IFREG,
        NodeKind::Dir => libc::S_IFDIR,
        NodeKind::Symlink => libc::S_IFLNK,
        NodeKind::Fifo => libc::S_IFIFO,
        NodeKind::Socket => libc::S_IFSOCK,
        NodeKind::CharDevice => libc::S_IFCHR,
        NodeKind::BlockDevice => libc::S_IFBLK,
    }
}

/// The times of an open object: access and modification times are the staging file's
/// (writes move them, fills of what was not read yet put them back, utimensat sets them),
/// the change time the later of the last attribute change and the last write.
fn open_times(a: &NodeAttrs, md: &std::fs::Metadata) -> NodeAttrs {
    let (atime, mtime) = file_times(md);
    NodeAttrs {
        atime_ns: atime,
        mtime_ns: mtime,
        ctime_ns: a.ctime_ns.max(mtime),
        ..*a
    }
}

/// A file's access and modification times, ns since the epoch.
fn file_times(md: &std::fs::Metadata) -> (i64, i64) {
    (
        md.atime() * 1_000_000_000 + md.atime_nsec(),
        md.mtime() * 1_000_000_000 + md.mtime_nsec(),
    )
}

/// Sets a staging file's access and modification times.
fn set_times(file: &File, atime_ns: i64, mtime_ns: i64, what: &str) -> Result<()> {
    crate::store::local_names::futimens(
        file,
        Some(SetTime::At(time_of(atime_ns))),
        Some(SetTime::At(time_of(mtime_ns))),
    )
    .ctx(|| format!("{what}: the times of its staging file"))
}

/// Whether two attributes differ in their change time at most.
fn same_but_ctime(a: &NodeAttrs, b: &NodeAttrs) -> bool {
    NodeAttrs {
        ctime_ns: b.ctime_ns,
        ..*a
    } == *b
}

fn errno(what: String, e: i32) -> Error {
    Error::io(what, std::io::Error::from_raw_os_error(e))
}

fn not_found(path: &str) -> Error {
    errno(format!("stat {path}"), libc::ENOENT)
}

fn utf8(path: &Path) -> Result<String> {
    path.to_str().map(str::to_string).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{}: an object store keeps only UTF-8 names",
            path.display()
        ))
    })
}

/// `a/b` -> (`a`, `b`); `a` -> (``, `a`).
fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((d, n)) => (d, n),
        None => ("", path),
    }
}

fn depth(path: &str) -> usize {
    if path.is_empty() {
        0
    } else {
        path.split('/').count()
    }
}

/// Whether `p` is `base` or below it.
fn under(p: &str, base: &str) -> bool {
    p == base || (p.starts_with(base) && p.as_bytes().get(base.len()) == Some(&b'/'))
}

fn moved(p: &str, from: &str, to: &str) -> String {
    format!("{to}{}", &p[from.len()..])
}

impl S3Names {
    /// The names of the store `backend` keeps, caching attributes and listings for `ttl`.
    pub fn new(backend: Arc<ObjectStoreBackend>, ttl: Duration) -> S3Names {
        let client = backend.client().clone();
        let (uid, gid) = crate::store::fsutil::effective_ids();
        S3Names {
            backend,
            client,
            ttl,
            uid,
            gid,
            started_ns: now_ns(),
            inner: Mutex::new(Inner {
                next_ino: 2,
                ..Inner::default()
            }),
        }
    }

    /// How long attributes and listings are cached.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn key(&self, path: &str) -> String {
        self.backend.at().key(path)
    }

    /// A name as its key's text: UTF-8, and short enough that its key (with a marker's `/`)
    /// fits the 1,024 bytes S3 allows (ENAMETOOLONG beyond).
    fn name(&self, path: &Path) -> Result<String> {
        let p = utf8(path)?;
        if self.key(&p).len() + 1 > KEY_MAX {
            return Err(Error::NameTooLong(format!(
                "{}: its S3 key would be longer than {KEY_MAX} bytes",
                path.display()
            )));
        }
        Ok(p)
    }

    fn ino_of(&self, inner: &mut Inner, path: &str) -> u64 {
        if path.is_empty() {
            return 1;
        }
        if let Some(i) = inner.inos.get(path) {
            return *i;
        }
        let i = inner.next_ino;
        inner.next_ino += 1;
        inner.inos.insert(path.to_string(), i);
        i
    }

    fn default_attrs(&self, kind: NodeKind, mode: u32, time_ns: i64) -> NodeAttrs {
        NodeAttrs {
            kind,
            mode,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            atime_ns: time_ns,
            mtime_ns: time_ns,
            ctime_ns: time_ns,
        }
    }

    fn meta_of(&self, inner: &mut Inner, path: &str, node: &Node) -> Meta {
        let a = &node.attrs;
        let size = match a.kind {
            NodeKind::Symlink => node.target.as_ref().map_or(0, |t| t.len() as u64),
            _ => node.size,
        };
        Meta {
            ino: self.ino_of(inner, path),
            kind: kind_of(a.kind),
            mode: type_bits(a.kind) | (a.mode & 0o7777),
            nlink: if a.kind == NodeKind::Dir { 2 } else { 1 },
            uid: a.uid,
            gid: a.gid,
            size,
            blocks: size.div_ceil(512),
            rdev: a.rdev,
            blksize: 1 << 20,
            atime: time_of(a.atime_ns),
            mtime: time_of(a.mtime_ns),
            ctime: time_of(a.ctime_ns),
            birth: None,
        }
    }

    /// A node from its HEAD (`dir`: the HEAD of a marker `KEY/`).
    fn node_of_head(&self, head: &Head, dir: bool, what: &str) -> Result<Node> {
        let attrs = match head.metadata.get(s3meta::ATTRS_META) {
            Some(v) => NodeAttrs::decode(v, what)?,
            None => {
                let t = head.modified.map_or(self.started_ns, ns_of);
                if dir {
                    self.default_attrs(NodeKind::Dir, 0o755, t)
                } else {
                    self.default_attrs(NodeKind::File, OBJECT_FILE_MODE, t)
                }
            }
        };
        if dir != (attrs.kind == NodeKind::Dir) {
            return Err(Error::Corrupt(format!(
                "{what}: its attributes say {:?}",
                attrs.kind
            )));
        }
        if attrs.kind == NodeKind::File && head.size == 0 {
            return Err(Error::Corrupt(format!(
                "{what}: an object with an empty body"
            )));
        }
        let target = match head.metadata.get(s3meta::TARGET_META) {
            Some(v) if attrs.kind == NodeKind::Symlink => Some(s3meta::decode_target(v, what)?),
            _ if attrs.kind == NodeKind::Symlink => {
                return Err(Error::Corrupt(format!(
                    "{what}: a symlink without a target"
                )))
            }
            _ => None,
        };
        let xattrs = match head.metadata.get(s3meta::XATTRS_META) {
            Some(v) => s3meta::decode_xattrs(v, what)?,
            None => Vec::new(),
        };
        Ok(Node {
            header: header_of(head, what)?,
            attrs,
            size: head.size,
            etag: head.etag.clone(),
            marker: dir,
            target,
            xattrs,
        })
    }

    /// The metadata that stores `node` (its header, for an object, given apart).
    fn metadata_of(&self, node: &Node, header: Option<&[u8]>) -> Result<Vec<(String, String)>> {
        let mut meta = header.map(header_meta).unwrap_or_default();
        meta.push((s3meta::ATTRS_META.to_string(), node.attrs.encode()));
        if let Some(t) = &node.target {
            meta.push((s3meta::TARGET_META.to_string(), s3meta::encode_target(t)?));
        }
        if let Some(x) = s3meta::encode_xattrs(&node.xattrs)? {
            meta.push((s3meta::XATTRS_META.to_string(), x));
        }
        Ok(meta)
    }

    fn fresh(&self, at: Instant) -> bool {
        at.elapsed() < self.ttl
    }

    fn remember(&self, path: &str, node: Option<Node>) {
        let mut inner = self.inner.lock_unpoisoned();
        if node.is_none() {
            inner.inos.remove(path);
        }
        inner.nodes.insert(path.to_string(), (Instant::now(), node));
    }

    /// Notes in the parent's complete listing (if one is cached) that `path` now is (`Some`:
    /// whether a directory) or is not there.
    fn note_entry(&self, path: &str, is_dir: Option<bool>) {
        let (dir, name) = split(path);
        let mut inner = self.inner.lock_unpoisoned();
        if let Some((_, entries)) = inner.dirs.get_mut(dir) {
            match is_dir {
                Some(d) => {
                    entries.insert(name.to_string(), d);
                }
                None => {
                    entries.remove(name);
                }
            }
        }
    }

    /// Forgets what is cached at or below `path`, but that names there are gone: a listing
    /// may still show them for a moment after their delete (see [`S3Names::dir_is_empty`]).
    fn forget_below(&self, path: &str) {
        let mut inner = self.inner.lock_unpoisoned();
        inner
            .nodes
            .retain(|p, (_, n)| !under(p, path) || n.is_none());
        inner.dirs.retain(|p, _| !under(p, path));
    }

    /// The open staging file at `path`, if any: (its inode number, its state).
    fn open_at(&self, path: &str) -> Option<(u64, OpenFile)> {
        let inner = self.inner.lock_unpoisoned();
        inner
            .open
            .iter()
            .find(|(_, o)| o.path.as_deref() == Some(path))
            .map(|(i, o)| (*i, o.clone()))
    }

    /// What is at `path`, asking the store when the cache does not know.
    fn node(&self, path: &str) -> Result<Option<Node>> {
        match depth(path) {
            0 => Ok(Some(Node::of(self.default_attrs(
                NodeKind::Dir,
                0o755,
                self.started_ns,
            )))),
            _ => {
                {
                    let inner = self.inner.lock_unpoisoned();
                    if let Some((at, n)) = inner.nodes.get(path) {
                        if self.fresh(*at) {
                            return Ok(n.clone());
                        }
                    }
                    // A complete listing of the parent that lacks the name: absent.
                    let (dir, name) = split(path);
                    if let Some((at, entries)) = inner.dirs.get(dir) {
                        if self.fresh(*at) && !entries.contains_key(name) {
                            return Ok(None);
                        }
                    }
                }
                let n = self.look_up(path)?;
                self.remember(path, n.clone());
                Ok(n)
            }
        }
    }

    /// Asks the store what is at `path`.
    fn look_up(&self, path: &str) -> Result<Option<Node>> {
        if depth(path) == 1 {
            if path == META_DIR {
                return Ok(None);
            }
            // A bucket: its record says it exists; a marker keeps its attributes.
            match self.backend.read_bucket(path) {
                Ok(_) => {}
                Err(Error::NotFound(_)) => return Ok(None),
                Err(Error::Corrupt(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
            let marker = format!("{}/", self.key(path));
            return Ok(Some(match self.client.head(&marker)? {
                Some(h) => self.node_of_head(&h, true, path)?,
                None => Node::of(self.default_attrs(NodeKind::Dir, 0o755, self.started_ns)),
            }));
        }
        let key = self.key(path);
        if let Some(h) = self.client.head(&key)? {
            return self.node_of_head(&h, false, path).map(Some);
        }
        let marker = format!("{key}/");
        if let Some(h) = self.client.head(&marker)? {
            return self.node_of_head(&h, true, path).map(Some);
        }
        let page = self.client.list(&marker, None, None, 1)?;
        if page.objects.is_empty() {
            return Ok(None);
        }
        Ok(Some(Node::of(self.default_attrs(
            NodeKind::Dir,
            0o755,
            self.started_ns,
        ))))
    }

    fn need(&self, path: &str) -> Result<Node> {
        self.node(path)?.ok_or_else(|| not_found(path))
    }

    fn need_absent(&self, path: &str) -> Result<()> {
        if self.open_at(path).is_some() || self.node(path)?.is_some() {
            return Err(errno(format!("{path} exists"), libc::EEXIST));
        }
        Ok(())
    }

    fn check_parent(&self, path: &str) -> Result<()> {
        let (dir, _) = split(path);
        match self.node(dir)? {
            Some(n) if n.attrs.kind == NodeKind::Dir => Ok(()),
            Some(_) => Err(errno(format!("{dir} is not a directory"), libc::ENOTDIR)),
            None => Err(not_found(dir)),
        }
    }

    /// Creates an empty node (marker, symlink, special) at `path` with `node`.
    fn put_empty(&self, path: &str, node: Node) -> Result<()> {
        let dir = node.attrs.kind == NodeKind::Dir;
        let key = if dir {
            format!("{}/", self.key(path))
        } else {
            self.key(path)
        };
        let etag = self
            .client
            .put(&key, Vec::new(), &self.metadata_of(&node, None)?)?;
        let mut node = node;
        node.etag = etag;
        node.marker = dir;
        self.remember(path, Some(node));
        self.note_entry(path, Some(dir));
        if dir {
            self.inner
                .lock_unpoisoned()
                .dirs
                .insert(path.to_string(), (Instant::now(), BTreeMap::new()));
        }
        Ok(())
    }

    /// Stores a changed node's metadata: a directory's marker is put (made if it had
    /// none); another node is copied onto itself with the metadata replaced, its current
    /// header kept (the copy is conditional on the ETag last seen: a header replaced
    /// meanwhile, by a re-encrypt, is read again, never undone).
    fn store_meta(&self, path: &str, node: &mut Node) -> Result<()> {
        if node.attrs.kind == NodeKind::Dir {
            if depth(path) == 0 {
                return Ok(());
            }
            let key = format!("{}/", self.key(path));
            node.etag = self
                .client
                .put(&key, Vec::new(), &self.metadata_of(node, None)?)?;
            node.marker = true;
            return Ok(());
        }
        let key = self.key(path);
        self.copy_node(path, &key, &key, node)
    }

    /// Copies the object or node `src` (named `path`) to `dst`, onto itself for a change
    /// of attributes, with the metadata of `node` and the header stored with it: first
    /// conditional on the ETag and header last seen (one request), then, if it changed
    /// since (a re-encrypt rewrapped it), read afresh, so a newer header is never undone.
    /// `node` gets the new ETag, and the size and header copied.
    fn copy_node(&self, path: &str, src: &str, dst: &str, node: &mut Node) -> Result<()> {
        let known =
            (node.attrs.kind != NodeKind::File || node.header.is_some()) && !node.etag.is_empty();
        let mut seen = known.then(|| (node.etag.clone(), node.header.clone(), node.size));
        for _ in 0..3 {
            let (etag, header, size) = match seen.take() {
                Some(s) => s,
                None => {
                    let head = self.client.head(src)?.ok_or_else(|| not_found(path))?;
                    (head.etag.clone(), header_of(&head, path)?, head.size)
                }
            };
            let meta = self.metadata_of(node, header.as_deref())?;
            match self.client.copy(src, dst, &meta, Some(&etag)) {
                Ok(etag) => {
                    node.etag = etag;
                    node.size = size;
                    node.header = header;
                    return Ok(());
                }
                Err(Error::Stale(_)) | Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Busy(format!(
            "{path}: changed three times while it was being copied; try again"
        )))
    }

    fn staging_ino(file: &File) -> Result<u64> {
        Ok(file
            .metadata()
            .ctx(|| "fstat of a staging file".to_string())?
            .ino())
    }

    /// The open state of a staging file (one made by a create that has not said
    /// [`Names::created`] yet gets a fresh one).
    fn open_state(&self, file: &File) -> Result<(u64, OpenFile)> {
        let sino = Self::staging_ino(file)?;
        let mut inner = self.inner.lock_unpoisoned();
        if let Some(o) = inner.open.get(&sino) {
            return Ok((sino, o.clone()));
        }
        let md = file
            .metadata()
            .ctx(|| "fstat of a staging file".to_string())?;
        let now = now_ns();
        let o = OpenFile {
            file: Arc::new(
                file.try_clone()
                    .ctx(|| "duplicating a staging file's descriptor".to_string())?,
            ),
            path: None,
            unpublished: false,
            lazy: None,
            attrs: NodeAttrs {
                mode: md.mode() & 0o7777,
                ..self.default_attrs(NodeKind::File, OBJECT_FILE_MODE, now)
            },
            xattrs: Vec::new(),
        };
        inner.open.insert(sino, o.clone());
        Ok((sino, o))
    }

    fn open_meta(&self, sino: u64, o: &OpenFile, file: &File) -> Result<Meta> {
        let md = file.metadata().ctx(|| "fstat".to_string())?;
        let node = Node {
            size: md.len(),
            ..Node::of(open_times(&o.attrs, &md))
        };
        let mut inner = self.inner.lock_unpoisoned();
        let mut m = match &o.path {
            Some(p) => self.meta_of(&mut inner, p, &node),
            None => {
                // Unlinked: a number of its own that no name uses.
                let mut m = self.meta_of(&mut inner, "", &node);
                m.ino = (1 << 62) | sino;
                m
            }
        };
        if o.path.is_none() {
            m.nlink = 0;
        }
        Ok(m)
    }

    /// Applies `set` to `a` as chown, chmod and utimens would, in that order.
    fn apply(a: &mut NodeAttrs, set: &SetAttributes) {
        let now = now_ns();
        if set.uid.is_some_and(|u| u != a.uid) || set.gid.is_some_and(|g| g != a.gid) {
            // chown clears set-user-id, and set-group-id when group-executable.
            if a.kind != NodeKind::Dir {
                a.mode &= !libc::S_ISUID;
                if a.mode & 0o010 != 0 {
                    a.mode &= !libc::S_ISGID;
                }
            }
        }
        if let Some(u) = set.uid {
            a.uid = u;
        }
        if let Some(g) = set.gid {
            a.gid = g;
        }
        if let Some(m) = set.mode {
            if a.kind != NodeKind::Symlink {
                a.mode = m & 0o7777;
            }
        }
        let t = |s: SetTime| match s {
            SetTime::Now => now,
            SetTime::At(t) => ns_of(t),
        };
        if let Some(s) = set.atime {
            a.atime_ns = t(s);
        }
        if let Some(s) = set.mtime {
            a.mtime_ns = t(s);
        }
        a.ctime_ns = now;
    }

    /// Every key below `prefix`, all pages.
    fn keys_below(&self, prefix: &str) -> Result<Vec<super::client::Listed>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.client.list(prefix, None, after.as_deref(), 1000)?;
            out.extend(page.objects);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

    fn rename_node(&self, from: &str, to: &str, fnode: &Node) -> Result<()> {
        if fnode.attrs.kind != NodeKind::Dir {
            // One copy that also sets the change time (a rename changes it).
            let (src, dst) = (self.key(from), self.key(to));
            let mut node = fnode.clone();
            node.attrs.ctime_ns = now_ns();
            self.copy_node(from, &src, &dst, &mut node)?;
            self.client.delete(&src)?;
            return Ok(());
        }
        // A directory: every key below it, one copy and one delete each (not atomic).
        let src = format!("{}/", self.key(from));
        let dst = format!("{}/", self.key(to));
        let keys = self.keys_below(&src)?;
        for k in &keys {
            if k.key == src {
                // The directory's own marker: its change time moves with the rename.
                let mut node = fnode.clone();
                node.attrs.ctime_ns = now_ns();
                self.copy_node(from, &src, &dst, &mut node)?;
                continue;
            }
            let rest = &k.key[src.len()..];
            self.client.copy_keep(&k.key, &format!("{dst}{rest}"))?;
        }
        for k in &keys {
            self.client.delete(&k.key)?;
        }
        if !fnode.marker && keys.is_empty() {
            return Err(not_found(from));
        }
        Ok(())
    }
}

impl Names for S3Names {
    fn stat(&self, path: &Path) -> Result<Meta> {
        let p = self.name(path)?;
        if let Some((sino, o)) = self.open_at(&p) {
            return self.open_meta(sino, &o, &o.file);
        }
        let node = self.need(&p)?;
        let mut inner = self.inner.lock_unpoisoned();
        Ok(self.meta_of(&mut inner, &p, &node))
    }

    fn stat_open(&self, file: &File) -> Result<Meta> {
        let (sino, o) = self.open_state(file)?;
        self.open_meta(sino, &o, file)
    }

    fn list(&self, dir: &Path) -> Result<Vec<DirEntry>> {
        let d = self.name(dir)?;
        if d.is_empty() {
            let mut out = Vec::new();
            let names = self.backend.bucket_names()?;
            let mut inner = self.inner.lock_unpoisoned();
            for n in names {
                if n == META_DIR || crate::store::validate_bucket_name(&n).is_err() {
                    continue;
                }
                out.push(DirEntry {
                    ino: self.ino_of(&mut inner, &n),
                    name: OsString::from(n),
                    kind: Kind::Dir,
                });
            }
            return Ok(out);
        }
        let cached = {
            let inner = self.inner.lock_unpoisoned();
            inner
                .dirs
                .get(&d)
                .filter(|(at, _)| self.fresh(*at))
                .map(|(_, e)| e.clone())
        };
        let entries = match cached {
            Some(e) => e,
            None => {
                let prefix = format!("{}/", self.key(&d));
                let mut entries = BTreeMap::new();
                let mut after: Option<String> = None;
                loop {
                    let page = self
                        .client
                        .list(&prefix, Some("/"), after.as_deref(), 1000)?;
                    for o in &page.objects {
                        let name = &o.key[prefix.len().min(o.key.len())..];
                        if !name.is_empty() && !name.contains('/') {
                            entries.insert(name.to_string(), false);
                        }
                    }
                    for p in &page.prefixes {
                        let name = p[prefix.len().min(p.len())..].trim_end_matches('/');
                        if !name.is_empty() {
                            entries.insert(name.to_string(), true);
                        }
                    }
                    match page.next {
                        Some(n) => after = Some(n),
                        None => break,
                    }
                }
                // A listing right after a delete may still show what was deleted (Garage):
                // what the mount itself removed lately is not listed.
                {
                    let inner = self.inner.lock_unpoisoned();
                    entries.retain(|name, _| {
                        let p = format!("{d}/{name}");
                        !matches!(inner.nodes.get(&p), Some((at, None)) if self.fresh(*at))
                    });
                }
                // Objects still being created are the mount's own: they are listed too.
                {
                    let inner = self.inner.lock_unpoisoned();
                    for o in inner.open.values() {
                        if let Some(p) = &o.path {
                            let (pd, name) = split(p);
                            if pd == d {
                                entries.entry(name.to_string()).or_insert(false);
                            }
                        }
                    }
                }
                self.inner
                    .lock_unpoisoned()
                    .dirs
                    .insert(d.clone(), (Instant::now(), entries.clone()));
                self.prefetch(&d, &entries);
                entries
            }
        };
        let mut out = Vec::with_capacity(entries.len());
        for (name, is_dir) in entries {
            let p = format!("{d}/{name}");
            let kind = if is_dir {
                Kind::Dir
            } else {
                // Objects are files; an empty key is another kind of node: its metadata says.
                let known = {
                    let inner = self.inner.lock_unpoisoned();
                    inner
                        .nodes
                        .get(&p)
                        .and_then(|(_, n)| n.as_ref().map(|n| kind_of(n.attrs.kind)))
                };
                match known {
                    Some(k) => k,
                    None => Kind::File,
                }
            };
            let mut inner = self.inner.lock_unpoisoned();
            out.push(DirEntry {
                ino: self.ino_of(&mut inner, &p),
                name: OsString::from(name),
                kind,
            });
        }
        Ok(out)
    }

    fn walk_objects(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let d = self.name(dir)?;
        let prefix = format!("{}/", self.key(&d));
        let mut out: Vec<PathBuf> = self
            .keys_below(&prefix)?
            .into_iter()
            .filter_map(|l| {
                let rel = l.key[prefix.len()..].to_string();
                is_object_key(&rel, l.size).then(|| PathBuf::from(rel))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn open(&self, path: &Path, _write: bool) -> Result<File> {
        let p = self.name(path)?;
        let key = self.key(&p);
        let head = self.client.head(&key)?.ok_or_else(|| not_found(&p))?;
        let node = self.node_of_head(&head, false, &p)?;
        match node.attrs.kind {
            NodeKind::File => {}
            NodeKind::Dir => return Err(Error::IsDirectory(format!("{p} is a directory"))),
            NodeKind::Symlink => {
                return Err(errno(format!("{p} is a symlink"), libc::ELOOP));
            }
            _ => {
                return Err(errno(format!("{p} is not an object"), libc::ENXIO));
            }
        }
        let header = header_of(&head, &p)?
            .ok_or_else(|| Error::Corrupt(format!("{p}: the object has no header")))?;
        let file = super::backend::staging_file(self.backend.staging(), &p)?;
        // Sparse, filled by ranged GETs as it is read ([`Names::prepare`]); its first and
        // last blocks now (the preamble and the final chunk, which opening reads).
        file.set_len(head.size)
            .ctx(|| format!("{p}: sizing its staging file"))?;
        let lazy = Arc::new(Lazy {
            key: key.clone(),
            remote_len: head.size,
            filled: Mutex::new(vec![false; head.size.div_ceil(BLOCK) as usize]),
        });
        self.fill(&lazy, &file, 0, 1, false, &p)?;
        self.fill(
            &lazy,
            &file,
            head.size.saturating_sub(2 * BLOCK),
            head.size,
            false,
            &p,
        )?;
        set_times(&file, node.attrs.atime_ns, node.attrs.mtime_ns, &p)?;
        xattr::fset(&file, xattr::HEADER.as_bytes(), &header, 0)
            .ctx(|| format!("{p}: the header of its staging file"))?;
        let sino = Self::staging_ino(&file)?;
        let mut inner = self.inner.lock_unpoisoned();
        inner.open.insert(
            sino,
            OpenFile {
                file: Arc::new(
                    file.try_clone()
                        .ctx(|| format!("{p}: duplicating its descriptor"))?,
                ),
                path: Some(p.clone()),
                unpublished: false,
                lazy: Some(lazy),
                attrs: node.attrs,
                xattrs: node.xattrs.clone(),
            },
        );
        inner.nodes.insert(p, (Instant::now(), Some(node)));
        Ok(file)
    }

    fn open_for_header(&self, path: &Path) -> Result<Box<dyn Blob>> {
        let p = self.name(path)?;
        let (bucket, name) = p
            .split_once('/')
            .ok_or_else(|| Error::IsDirectory(format!("{p} is a bucket")))?;
        let blob = self.backend.open_object(bucket, Path::new(name), &p)?;
        // The header is about to change: what the cache holds of the node goes.
        self.inner.lock_unpoisoned().nodes.remove(&p);
        Ok(blob)
    }

    fn created(&self, path: &Path, file: &File) -> Result<()> {
        let p = self.name(path)?;
        let (sino, mut o) = self.open_state(file)?;
        if xattr::fget(file, xattr::HEADER.as_bytes())
            .ctx(|| format!("{p}: the header of its staging file"))?
            .is_none()
        {
            return Err(Error::Unsupported(format!(
                "{p}: the staging directory {} does not keep xattrs",
                self.backend.staging().display()
            )));
        }
        // Published later (`publish_later`): it exists only here until its first commit,
        // which uploads it with its attributes.
        o.path = Some(p.clone());
        o.unpublished = true;
        self.inner.lock_unpoisoned().open.insert(sino, o);
        self.forget_node(&p);
        self.note_entry(&p, Some(false));
        Ok(())
    }

    fn commit(&self, path: Option<&Path>, file: &File, _durable: bool) -> Result<()> {
        let Some(path) = path else {
            return Ok(());
        };
        let p = self.name(path)?;
        let (sino, mut o) = self.open_state(file)?;
        if o.path.is_none() {
            // Unlinked or replaced since it was opened: its content has no name to go to.
            return Ok(());
        }
        // All of it goes up: what was never read is fetched first.
        if let Some(lazy) = &o.lazy {
            self.fill(lazy, file, 0, u64::MAX, false, &p)?;
        }
        let local = xattr::fget(file, xattr::HEADER.as_bytes())
            .ctx(|| format!("{p}: the header of its staging file"))?
            .ok_or_else(|| Error::Corrupt(format!("{p}: its staging file has no header")))?;
        let mine = ObjectHeader::decode(&local)?.object_id;
        let key = self.key(&p);
        // The header stored now wraps the same data key if it is of this object (a
        // re-encrypt may have rewrapped it meanwhile: keep that one). Never uploaded: none.
        let stored = if o.unpublished {
            None
        } else {
            self.client.head(&key)?
        };
        let header = match stored {
            Some(h) => match header_of(&h, &p)? {
                Some(theirs) => match ObjectHeader::decode(&theirs) {
                    Ok(t) if t.object_id == mine => theirs,
                    Ok(_) => {
                        tracing::warn!(
                            "{p}: replaced by another object while open; what was written to \
                             the old one is not published"
                        );
                        return Ok(());
                    }
                    Err(_) => local,
                },
                None => local,
            },
            None => local,
        };
        let md = file.metadata().ctx(|| format!("{p}: fstat"))?;
        o.attrs = open_times(&o.attrs, &md);
        let node = Node {
            size: md.len(),
            xattrs: o.xattrs.clone(),
            ..Node::of(o.attrs)
        };
        let meta = self.metadata_of(&node, Some(&header))?;
        let etag = self.client.put_file(&key, file, md.len(), &meta)?;
        if header
            != xattr::fget(file, xattr::HEADER.as_bytes())
                .ok()
                .flatten()
                .unwrap_or_default()
        {
            let _ = xattr::fset(file, xattr::HEADER.as_bytes(), &header, 0);
        }
        let mut node = node;
        node.etag = etag;
        node.header = Some(header);
        o.unpublished = false;
        let mut inner = self.inner.lock_unpoisoned();
        inner.open.insert(sino, o);
        inner.nodes.insert(p, (Instant::now(), Some(node)));
        Ok(())
    }

    fn writes_in_place(&self) -> bool {
        false
    }

    fn truncating(&self, file: &File, backing_len: u64) -> Result<()> {
        let sino = Self::staging_ino(file)?;
        let lazy = match self.inner.lock_unpoisoned().open.get(&sino) {
            Some(o) => o.lazy.clone(),
            None => None,
        };
        if let Some(l) = lazy {
            let what = l.key.clone();
            self.fill(&l, file, 0, backing_len, false, &what)?;
            // Past the new end nothing stored is needed any more: never fetch it.
            l.filled
                .lock_unpoisoned()
                .iter_mut()
                .for_each(|f| *f = true);
        }
        Ok(())
    }

    fn prepare(&self, file: &File, start: u64, end: u64) -> Result<()> {
        let sino = Self::staging_ino(file)?;
        let lazy = match self.inner.lock_unpoisoned().open.get(&sino) {
            Some(o) => o.lazy.clone(),
            None => None,
        };
        match lazy {
            Some(l) => {
                let what = l.key.clone();
                self.fill(&l, file, start, end, true, &what)
            }
            None => Ok(()),
        }
    }

    fn closed(&self, file: &File) {
        if let Ok(sino) = Self::staging_ino(file) {
            self.inner.lock_unpoisoned().open.remove(&sino);
        }
    }

    fn mkdir(&self, path: &Path, mode: u32) -> Result<()> {
        let p = self.name(path)?;
        self.check_parent(&p)?;
        self.need_absent(&p)?;
        let node = Node {
            marker: true,
            ..Node::of(self.default_attrs(NodeKind::Dir, mode & 0o7777, now_ns()))
        };
        self.put_empty(&p, node)
    }

    fn rmdir(&self, path: &Path) -> Result<()> {
        let p = self.name(path)?;
        let node = self.need(&p)?;
        if node.attrs.kind != NodeKind::Dir {
            return Err(errno(format!("{p} is not a directory"), libc::ENOTDIR));
        }
        let marker = format!("{}/", self.key(&p));
        if !self.dir_is_empty(&p)? {
            return Err(Error::NotEmpty(format!("{p} is not empty")));
        }
        if depth(&p) == 1 {
            // A bucket: its record goes too.
            self.client.delete(&self.backend.bucket_record_key_of(&p))?;
        }
        self.client.delete(&marker)?;
        self.forget_below(&p);
        self.remember(&p, None);
        self.note_entry(&p, None);
        Ok(())
    }

    fn unlink(&self, path: &Path) -> Result<bool> {
        let p = self.name(path)?;
        let open = self.open_at(&p);
        let node = match self.node(&p)? {
            Some(n) => n,
            None if open.is_some() => {
                Node::of(self.default_attrs(NodeKind::File, OBJECT_FILE_MODE, now_ns()))
            }
            None => return Err(not_found(&p)),
        };
        if node.attrs.kind == NodeKind::Dir {
            return Err(Error::IsDirectory(format!("{p} is a directory")));
        }
        self.client.delete(&self.key(&p))?;
        {
            let mut inner = self.inner.lock_unpoisoned();
            for o in inner.open.values_mut() {
                if o.path.as_deref() == Some(p.as_str()) {
                    o.path = None;
                }
            }
        }
        self.remember(&p, None);
        self.note_entry(&p, None);
        Ok(false)
    }

    fn symlink(&self, target: &Path, path: &Path) -> Result<()> {
        let p = self.name(path)?;
        self.check_parent(&p)?;
        self.need_absent(&p)?;
        use std::os::unix::ffi::OsStrExt;
        let node = Node {
            target: Some(target.as_os_str().as_bytes().to_vec()),
            ..Node::of(self.default_attrs(NodeKind::Symlink, 0o777, now_ns()))
        };
        self.put_empty(&p, node)
    }

    fn readlink(&self, path: &Path) -> Result<PathBuf> {
        use std::os::unix::ffi::OsStringExt;
        let p = self.name(path)?;
        match self.need(&p)?.target {
            Some(t) => Ok(PathBuf::from(OsString::from_vec(t))),
            None => Err(errno(format!("{p} is not a symlink"), libc::EINVAL)),
        }
    }

    fn link(&self, _from: &Path, to: &Path) -> Result<()> {
        Err(Error::PermissionDenied(format!(
            "{}: an object store mount has no hard links",
            to.display()
        )))
    }

    fn rename(&self, from: &Path, to: &Path, flags: u32) -> Result<()> {
        let (f, t) = (self.name(from)?, self.name(to)?);
        if flags & libc::RENAME_EXCHANGE != 0 {
            return Err(Error::InvalidArgument(
                "RENAME_EXCHANGE is not supported on an object store mount".into(),
            ));
        }
        if depth(&f) <= 1 || depth(&t) <= 1 {
            return Err(Error::Unsupported(
                "a bucket of an object store mount cannot be renamed".into(),
            ));
        }
        if f == t {
            return Ok(());
        }
        if under(&t, &f) {
            return Err(Error::InvalidArgument(format!(
                "{t} is inside {f}: a directory cannot move into itself"
            )));
        }
        // A file created here and not uploaded yet moves by its name alone.
        let unpublished = self.open_at(&f).is_some_and(|(_, o)| o.unpublished);
        let fnode = match self.node(&f)? {
            Some(n) => n,
            None if unpublished => {
                Node::of(self.default_attrs(NodeKind::File, OBJECT_FILE_MODE, now_ns()))
            }
            None => return Err(not_found(&f)),
        };
        self.check_parent(&t)?;
        let from_dir = fnode.attrs.kind == NodeKind::Dir;
        if let Some(tnode) = self.node(&t)? {
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(errno(format!("{t} exists"), libc::EEXIST));
            }
            let to_dir = tnode.attrs.kind == NodeKind::Dir;
            match (from_dir, to_dir) {
                (false, true) => {
                    return Err(Error::IsDirectory(format!("{t} is a directory")));
                }
                (true, false) => {
                    return Err(errno(format!("{t} is not a directory"), libc::ENOTDIR));
                }
                (true, true) => {
                    let marker = format!("{}/", self.key(&t));
                    if !self.dir_is_empty(&t)? {
                        return Err(Error::NotEmpty(format!("{t} is not empty")));
                    }
                    self.client.delete(&marker)?;
                }
                (false, false) => {}
            }
        }
        // A file still being written goes to its new name at its next commit; what the
        // store has of it moves now.
        if !unpublished {
            self.rename_node(&f, &t, &fnode)?;
        } else if self.node(&t)?.is_some() {
            // The name it replaces goes now; it appears at the first commit.
            self.client.delete(&self.key(&t))?;
        }
        {
            let mut inner = self.inner.lock_unpoisoned();
            // Node numbers follow their names.
            let moved_inos: Vec<(String, u64)> = inner
                .inos
                .iter()
                .filter(|(p, _)| under(p, &f))
                .map(|(p, i)| (p.clone(), *i))
                .collect();
            inner.inos.retain(|p, _| !under(p, &t) && !under(p, &f));
            for (p, i) in moved_inos {
                inner.inos.insert(moved(&p, &f, &t), i);
            }
            for o in inner.open.values_mut() {
                if let Some(p) = &o.path {
                    if under(p, &t) && !under(p, &f) {
                        o.path = None;
                    } else if under(p, &f) {
                        o.path = Some(moved(p, &f, &t));
                    }
                }
            }
            inner.nodes.retain(|p, _| !under(p, &f) && !under(p, &t));
            inner.dirs.retain(|p, _| !under(p, &f) && !under(p, &t));
        }
        // Gone from its old name (a listing may show it there for a moment).
        self.remember(&f, None);
        self.note_entry(&f, None);
        self.note_entry(&t, Some(from_dir));
        Ok(())
    }

    fn mknod(&self, path: &Path, mode: u32, rdev: u32) -> Result<()> {
        let p = self.name(path)?;
        self.check_parent(&p)?;
        self.need_absent(&p)?;
        let kind = match mode & libc::S_IFMT {
            libc::S_IFIFO => NodeKind::Fifo,
            libc::S_IFSOCK => NodeKind::Socket,
            libc::S_IFCHR => NodeKind::CharDevice,
            libc::S_IFBLK => NodeKind::BlockDevice,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "{p}: mknod of mode {mode:o}"
                )))
            }
        };
        let mut attrs = self.default_attrs(kind, mode & 0o7777, now_ns());
        attrs.rdev = u64::from(rdev);
        let node = Node {
            header: None,
            attrs,
            size: 0,
            etag: String::new(),
            marker: false,
            target: None,
            xattrs: Vec::new(),
        };
        self.put_empty(&p, node)
    }

    fn set_attributes(&self, path: &Path, set: &SetAttributes) -> Result<()> {
        let p = self.name(path)?;
        if let Some((_, o)) = self.open_at(&p) {
            return self.set_open_attributes(&o.file, set);
        }
        let mut node = self.need(&p)?;
        let before = node.attrs;
        Self::apply(&mut node.attrs, set);
        if same_but_ctime(&node.attrs, &before) && set.atime.is_none() && set.mtime.is_none() {
            // Nothing changes but the change time: not worth a request.
            return Ok(());
        }
        self.store_meta(&p, &mut node)?;
        self.remember(&p, Some(node));
        Ok(())
    }

    fn set_open_attributes(&self, file: &File, set: &SetAttributes) -> Result<()> {
        let (sino, mut o) = self.open_state(file)?;
        let before = o.attrs;
        Self::apply(&mut o.attrs, set);
        if set.atime.is_some() || set.mtime.is_some() {
            crate::store::local_names::futimens(file, set.atime, set.mtime)
                .ctx(|| "futimens of a staging file".to_string())?;
        }
        self.inner.lock_unpoisoned().open.insert(sino, o.clone());
        let Some(p) = o.path.clone().filter(|_| !o.unpublished) else {
            // Not stored yet: the first commit stores the attributes with the content.
            return Ok(());
        };
        if same_but_ctime(&o.attrs, &before) && set.atime.is_none() && set.mtime.is_none() {
            return Ok(());
        }
        let md = file.metadata().ctx(|| "fstat".to_string())?;
        let mut node = Node {
            xattrs: o.xattrs.clone(),
            ..Node::of(open_times(&o.attrs, &md))
        };
        self.store_meta(&p, &mut node)?;
        self.forget_node(&p);
        Ok(())
    }

    fn xattr_get(&self, path: &Path, name: &[u8]) -> Result<Option<Vec<u8>>> {
        let p = self.name(path)?;
        let xattrs = match self.open_at(&p) {
            Some((_, o)) => o.xattrs,
            None => self.need(&p)?.xattrs,
        };
        Ok(xattrs
            .into_iter()
            .find(|(n, _)| n.as_slice() == name)
            .map(|(_, v)| v))
    }

    fn xattr_list(&self, path: &Path) -> Result<Vec<Vec<u8>>> {
        let p = self.name(path)?;
        let xattrs = match self.open_at(&p) {
            Some((_, o)) => o.xattrs,
            None => self.need(&p)?.xattrs,
        };
        Ok(xattrs.into_iter().map(|(n, _)| n).collect())
    }

    fn xattr_set(&self, path: &Path, name: &[u8], value: &[u8], flags: i32) -> Result<()> {
        self.change_xattrs(path, &mut |x| {
            let at = x.iter().position(|(n, _)| n.as_slice() == name);
            match at {
                Some(_) if flags & libc::XATTR_CREATE != 0 => {
                    Err(errno("the xattr exists".into(), libc::EEXIST))
                }
                None if flags & libc::XATTR_REPLACE != 0 => {
                    Err(Error::NoAttribute("no such attribute".into()))
                }
                Some(i) => {
                    x[i].1 = value.to_vec();
                    Ok(())
                }
                None => {
                    x.push((name.to_vec(), value.to_vec()));
                    x.sort();
                    Ok(())
                }
            }
        })
    }

    fn xattr_remove(&self, path: &Path, name: &[u8]) -> Result<()> {
        self.change_xattrs(path, &mut |x| {
            let i = x
                .iter()
                .position(|(n, _)| n.as_slice() == name)
                .ok_or_else(|| Error::NoAttribute("no such attribute".into()))?;
            x.remove(i);
            Ok(())
        })
    }

    fn sync_dir(&self, _dir: &Path) -> Result<()> {
        // Every change is one acknowledged request: durable when it returns.
        Ok(())
    }

    fn statfs(&self) -> Result<StatFs> {
        // An object store has no fixed size: a large, honest "plenty".
        Ok(StatFs {
            blocks: 1 << 40,
            bfree: 1 << 40,
            bavail: 1 << 40,
            files: 1 << 40,
            ffree: 1 << 40,
            bsize: 4096,
            namelen: 255,
            frsize: 4096,
        })
    }

    fn make_room(&self) -> bool {
        false
    }

    fn invalidate(&self, path: &Path) {
        let Some(p) = path.to_str() else {
            return;
        };
        let mut inner = self.inner.lock_unpoisoned();
        if p.is_empty() {
            // The buckets: every bucket's node, and the root's listing.
            inner.nodes.retain(|n, _| depth(n) != 1);
            inner.dirs.remove("");
            return;
        }
        inner.nodes.retain(|n, _| !under(n, p));
        inner.dirs.retain(|n, _| !under(n, p));
        let (dir, _) = split(p);
        inner.dirs.remove(dir);
    }

    fn shutdown(&self) {}
}

/// Entries of a fresh listing whose attributes are read ahead.
const PREFETCH_MAX: usize = 1000;
/// Requests in flight while reading ahead.
const PREFETCH_THREADS: usize = 8;

impl S3Names {
    /// Makes bytes `[start, end)` of the stored object (and, with `ahead`, [`READ_AHEAD`]
    /// blocks more) present in its staging file, one ranged GET per missing run of blocks.
    /// Bytes written into the staging file are never overwritten: every write, truncate and
    /// upload fills what it touches first.
    fn fill(
        &self,
        lazy: &Lazy,
        file: &File,
        start: u64,
        end: u64,
        ahead: bool,
        what: &str,
    ) -> Result<()> {
        let end = end.min(lazy.remote_len);
        if start >= end {
            return Ok(());
        }
        let mut filled = lazy.filled.lock_unpoisoned();
        let blocks = filled.len() as u64;
        let first = start / BLOCK;
        let mut last = ((end - 1) / BLOCK + 1).min(blocks);
        // Read ahead only when something is missing: a reader inside a window fetched
        // before asks nothing, and the next request fetches a whole window again.
        if (first..last).all(|b| filled[b as usize]) {
            return Ok(());
        }
        if ahead {
            last = last.saturating_add(READ_AHEAD).min(blocks);
        }
        // Fetching what was stored is no change: the file's times are put back after.
        let before = file.metadata().ctx(|| format!("{what}: fstat"))?;
        let mut b = first;
        while b < last {
            if filled[b as usize] {
                b += 1;
                continue;
            }
            let mut run_end = b + 1;
            while run_end < last && !filled[run_end as usize] {
                run_end += 1;
            }
            let off = b * BLOCK;
            let len = (run_end * BLOCK).min(lazy.remote_len) - off;
            tracing::debug!("{what}: fetching {len} bytes at {off}");
            let bytes = self.client.get_range(&lazy.key, off, len)?;
            if bytes.len() as u64 != len {
                return Err(Error::Corrupt(format!(
                    "{what}: {} bytes at {off} where {len} were stored",
                    bytes.len()
                )));
            }
            file.write_all_at(&bytes, off)
                .ctx(|| format!("{what}: staging its ciphertext"))?;
            for i in b..run_end {
                filled[i as usize] = true;
            }
            b = run_end;
        }
        let (atime, mtime) = file_times(&before);
        set_times(file, atime, mtime, what)
    }

    /// Reads the attributes of the entries of a directory just listed, several requests at
    /// a time (a listing gives no attributes, and `ls -l`, `find`, `rm -r` and `cp -a` ask
    /// for every entry's next). Best effort: a failure leaves the entry to be asked later.
    fn prefetch(&self, dir: &str, entries: &BTreeMap<String, bool>) {
        let wanted: Vec<String> = {
            let inner = self.inner.lock_unpoisoned();
            entries
                .keys()
                .map(|name| format!("{dir}/{name}"))
                .filter(|p| {
                    !matches!(inner.nodes.get(p), Some((at, _)) if self.fresh(*at))
                        && !inner.open.values().any(|o| o.path.as_deref() == Some(p))
                })
                .take(PREFETCH_MAX)
                .collect()
        };
        if wanted.len() < 2 {
            return;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..PREFETCH_THREADS.min(wanted.len()) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(p) = wanted.get(i) else {
                        return;
                    };
                    if let Ok(n) = self.look_up(p) {
                        self.remember(p, n);
                    }
                });
            }
        });
    }

    /// Whether nothing lies below directory `path` but its marker. A listing right after a
    /// delete may still show the deleted key (Garage), so a key listed below is confirmed:
    /// by the cache when the mount removed it itself, else by a HEAD.
    fn dir_is_empty(&self, path: &str) -> Result<bool> {
        if self.inner.lock_unpoisoned().open.values().any(|o| {
            o.path
                .as_deref()
                .is_some_and(|q| under(q, path) && q != path)
        }) {
            return Ok(false);
        }
        let marker = format!("{}/", self.key(path));
        let root = self.key("");
        let mut after: Option<String> = None;
        loop {
            let page = self.client.list(&marker, None, after.as_deref(), 100)?;
            for o in page.objects.iter().filter(|o| o.key != marker) {
                let rel = o.key.strip_prefix(&root).unwrap_or(&o.key);
                let rel = rel.trim_end_matches('/');
                let gone = {
                    let inner = self.inner.lock_unpoisoned();
                    matches!(inner.nodes.get(rel), Some((at, None)) if self.fresh(*at))
                };
                if !gone && self.client.head(&o.key)?.is_some() {
                    return Ok(false);
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(true),
            }
        }
    }

    fn forget_node(&self, path: &str) {
        self.inner.lock_unpoisoned().nodes.remove(path);
    }

    fn change_xattrs(
        &self,
        path: &Path,
        f: &mut dyn FnMut(&mut Xattrs) -> Result<()>,
    ) -> Result<()> {
        let p = self.name(path)?;
        if let Some((sino, mut o)) = self.open_at(&p) {
            f(&mut o.xattrs)?;
            s3meta::encode_xattrs(&o.xattrs)?;
            self.inner.lock_unpoisoned().open.insert(sino, o.clone());
            if o.unpublished {
                return Ok(());
            }
            let mut node = Node {
                header: None,
                attrs: NodeAttrs {
                    ctime_ns: now_ns(),
                    ..o.attrs
                },
                size: 0,
                etag: String::new(),
                marker: false,
                target: None,
                xattrs: o.xattrs,
            };
            self.store_meta(&p, &mut node)?;
            self.forget_node(&p);
            return Ok(());
        }
        let mut node = self.need(&p)?;
        f(&mut node.xattrs)?;
        s3meta::encode_xattrs(&node.xattrs)?;
        node.attrs.ctime_ns = now_ns();
        self.store_meta(&p, &mut node)?;
        self.remember(&p, Some(node));
        Ok(())
    }
}
