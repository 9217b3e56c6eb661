//! The storage seam: what everything above `store` may ask of the place a store's bytes live.
//!
//! Two implementations: a local directory ([`super::local::LocalDir`]) and an S3-compatible
//! object store ([`super::s3::ObjectStoreBackend`]). Operations, the command language and the
//! work-request engine reach buckets, records and objects only through [`Backend`] and
//! [`Blob`]; the filesystem (`vfs`) of a local store also uses the directory's POSIX names
//! through [`Store::local`](super::Store::local), which is the names interface of
//! docs/ARCHITECTURE.md for the one backend that has directories.
//!
//! The promises each method makes (atomicity, durability) are the table in
//! docs/ARCHITECTURE.md ("What each operation promises"); every implementation keeps them.

use crate::error::Result;
use crate::format::records::BucketRecord;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The small named records of a store (bucket records are kept with their bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// `config.json`: store id, chunk size, key source (readable without the secret).
    Config,
    /// The sealed keystore.
    Keystore,
    /// A work request, by id (`wr-<hex>`): `work-requests/ID.json`.
    WorkRequest(&'a str),
}

impl Record<'_> {
    /// The record's path relative to the store's metadata directory (`.envelopefs/` locally,
    /// `PREFIX/.envelopefs/` in an object store): one layout for both backends.
    pub fn rel_path(&self) -> String {
        match self {
            Record::Config => "config.json".to_string(),
            Record::Keystore => "keystore".to_string(),
            Record::WorkRequest(id) => format!("work-requests/{id}.json"),
        }
    }
}

/// How durable a record write must be before it returns. An object store's PUT is durable
/// when acknowledged, so there all three are the same.
pub enum Save<'a> {
    /// Content and name durable.
    Durable,
    /// Content flushed before the name changes; the name change not waited for (after a
    /// crash the record is this one or the one before).
    ContentOnly,
    /// Made durable by `barrier` (a store-wide sync that also covers other writes), then
    /// the name changed durably: never visible before what `barrier` makes durable.
    DurableAfter(&'a dyn Fn() -> Result<()>),
}

/// Which implementation a backend is (for messages and for what only one of them can do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// A local directory with xattrs.
    Local,
    /// An S3-compatible object store.
    ObjectStore,
}

/// One object's stored form, opened: its header and its body (preamble and chunks). The
/// header and length are those seen when it was opened; a header replacement is atomic and,
/// where the store can tell, refused with [`crate::error::Error::Stale`] if the object
/// changed since (object store: the copy-source ETag condition).
pub trait Blob: Send + Sync {
    /// The raw header, or None when the object has none.
    fn header(&self, what: &str) -> Result<Option<Vec<u8>>>;
    /// Length of the body (preamble and chunks) in bytes.
    fn len(&self, what: &str) -> Result<u64>;
    /// Reads body bytes at `off`; fewer than `buf.len()` only at the end.
    fn read_body(&self, buf: &mut [u8], off: u64, what: &str) -> Result<usize>;
    /// Replaces the header atomically: readers see the old or the new one. Data untouched.
    fn replace_header(&self, header: &[u8], what: &str) -> Result<()>;
    /// Sets the header of an object that has none (AlreadyExists if it has one).
    fn add_header(&self, header: &[u8], what: &str) -> Result<()>;
    /// Makes a header change durable (no-op where a change is durable when acknowledged).
    fn sync(&self, what: &str) -> Result<()>;
    /// The body as a local file to read chunks from: the backing file itself (a duplicate
    /// descriptor) locally, a private unnamed copy of the ciphertext for an object store.
    fn body_file(&self, what: &str) -> Result<File>;
    /// The backing file, when the object is one (local stores): for what only a file can do.
    fn as_file(&self) -> Option<&File>;
}

/// An object being created: its body (ciphertext) is written into the file that
/// [`Backend::new_object`] returned beside it, then it is published under its name with its
/// header. Until [`NewObject::publish`] nothing is visible; dropped unpublished, it leaves no
/// trace (and any old object of that name as it was).
pub trait NewObject: Send {
    /// Makes `file` (the one returned with this) visible under its name with `header`:
    /// atomically, never without the header; for an exclusive create, AlreadyExists if the
    /// name is taken. With `durable`, the body and header are durable before the name
    /// appears (the name itself is made durable by the caller's barrier, locally a directory
    /// fsync or syncfs; in an object store the acknowledged PUT is durable).
    fn publish(self: Box<Self>, file: &File, header: &[u8], durable: bool) -> Result<()>;

    /// For a mount of a backend that does not write in place
    /// ([`super::names::Names::writes_in_place`]): gives `file` its header and leaves the
    /// publishing to the mount's first [`super::names::Names::commit`], so that a create
    /// costs no request. Elsewhere the same as `publish` (not durable).
    fn publish_later(self: Box<Self>, file: &File, header: &[u8]) -> Result<()> {
        self.publish(file, header, false)
    }
}

/// Where a store's bytes live. Object names are paths relative to their bucket
/// (`a/b/c`), kept as bytes locally (a name need not be UTF-8 there).
pub trait Backend: Send + Sync {
    /// Which implementation this is.
    fn kind(&self) -> BackendKind;
    /// The store's location as users write it (`/path/to/store`, `s3://bucket/prefix`).
    fn location(&self) -> String;

    /// Reads a record; None if there is none.
    fn read_record(&self, record: Record<'_>) -> Result<Option<Vec<u8>>>;
    /// Writes a record atomically (readers see the old or the new bytes).
    fn write_record(&self, record: Record<'_>, bytes: &[u8], save: Save<'_>) -> Result<()>;
    /// The ids of the stored work requests, in no particular order.
    fn work_request_ids(&self) -> Result<Vec<String>>;

    /// The names that may be buckets, sorted (each is confirmed by [`Backend::read_bucket`]).
    fn bucket_names(&self) -> Result<Vec<String>>;
    /// A bucket's record: NotFound if there is no such bucket, Corrupt if unreadable.
    fn read_bucket(&self, name: &str) -> Result<BucketRecord>;
    /// Creates a bucket with its record (never visible without it); AlreadyExists if taken.
    fn create_bucket(&self, name: &str, record: &BucketRecord, mode: u32) -> Result<()>;
    /// Replaces an existing bucket's record atomically.
    fn replace_bucket(&self, name: &str, record: &BucketRecord) -> Result<()>;

    /// Every object of a bucket, sorted by name (`Path` order). An object removed meanwhile
    /// by someone else may be listed or not. The whole list is held in memory (about 100
    /// bytes a name): a walk over a bucket of any size goes page by page with
    /// [`Backend::object_pages`] instead.
    fn object_names(&self, bucket: &str) -> Result<Vec<PathBuf>> {
        let mut all = self.object_pages(bucket, None)?.rest()?;
        all.sort();
        Ok(all)
    }
    /// A bucket's objects a page at a time, in the backend's listing order (a total order
    /// of names, stable while they exist: `Path` order locally, key byte order in an object
    /// store), starting strictly after `after` (a name an earlier walk returned, which need
    /// no longer exist). Memory is bounded by the page, plus, locally, the entries of the
    /// directories on the path to the current name. Objects created or removed during the
    /// walk may be listed or not; every object that exists throughout is listed once.
    fn object_pages(&self, bucket: &str, after: Option<&Path>) -> Result<Box<dyn ObjectWalk + '_>>;
    /// How many objects a bucket has, counted page by page (memory stays bounded).
    fn count_objects(&self, bucket: &str) -> Result<u64> {
        let mut walk = self.object_pages(bucket, None)?;
        let mut n = 0u64;
        loop {
            let page = walk.next_page(LIST_PAGE)?;
            if page.is_empty() {
                return Ok(n);
            }
            n += page.len() as u64;
        }
    }
    /// Opens an object: NotFound "no object WHAT" if it does not exist.
    fn open_object(&self, bucket: &str, name: &Path, what: &str) -> Result<Box<dyn Blob>>;
    /// Starts creating an object: the file to write its body into (read-write, private),
    /// and what publishes it (see [`NewObject`]).
    fn new_object(
        &self,
        bucket: &str,
        name: &Path,
        mode: u32,
        exclusive: bool,
        what: &str,
    ) -> Result<(File, Box<dyn NewObject>)>;
    /// Makes what must exist before an object `name` can be created in a bucket: its parent
    /// directories, with `mode`, locally; nothing in an object store (names are keys).
    fn make_parents(&self, bucket: &str, name: &Path, mode: u32, what: &str) -> Result<()>;
    /// Removes an object (NotFound if there is none).
    fn remove_object(&self, bucket: &str, name: &Path, what: &str) -> Result<()>;

    /// Durability barrier: every completed change before it survives a power loss.
    fn sync_all(&self) -> Result<()>;

    /// What lies at the top of the store outside its metadata, as fsck of a store without
    /// directories sees it: each name with whether objects lie below it (`NAME/...`, a
    /// bucket if it has a record) or it is a single entry. A local store returns nothing
    /// here: fsck walks its directory itself.
    fn top_names(&self) -> Result<Vec<TopName>> {
        Ok(Vec::new())
    }

    /// Writes begun under the store and never finished nor cancelled, which take space
    /// without being visible (an object store's unfinished multipart uploads), for fsck. A
    /// local store has none: its staging files are unnamed and go with their process.
    fn unfinished_uploads(&self) -> Result<Vec<UnfinishedUpload>> {
        Ok(Vec::new())
    }
}

/// Names listed per page by the provided walks of [`Backend`] (an S3 LIST returns at most
/// 1,000 keys a request).
pub const LIST_PAGE: usize = 1000;

/// A walk over a bucket's objects (see [`Backend::object_pages`]).
pub trait ObjectWalk: Send {
    /// The next names, at most `max` (and at least one unless the walk is at its end): an
    /// empty page is the end.
    fn next_page(&mut self, max: usize) -> Result<Vec<PathBuf>>;

    /// Every name left in the walk, held whole (for the walks that need them all).
    fn rest(&mut self) -> Result<Vec<PathBuf>> {
        let mut all = Vec::new();
        loop {
            let page = self.next_page(LIST_PAGE)?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }
}

/// An unfinished write (see [`Backend::unfinished_uploads`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfinishedUpload {
    /// What it would create, relative to the store (`bucket/name`).
    pub name: String,
    /// Which upload it is, and when it began, for a person.
    pub detail: String,
}

/// A name at the top of a store (see [`Backend::top_names`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopName {
    /// The name, without a trailing `/`.
    pub name: String,
    /// Whether objects lie below it (else it is one entry at the top).
    pub has_objects: bool,
}

/// A local backing file is a [`Blob`]: its header is an xattr, its body the file.
impl Blob for File {
    fn header(&self, what: &str) -> Result<Option<Vec<u8>>> {
        use crate::error::IoContext;
        super::xattr::fget(self, super::xattr::HEADER.as_bytes())
            .ctx(|| format!("{what}: reading object header"))
    }

    fn len(&self, what: &str) -> Result<u64> {
        use crate::error::IoContext;
        self.metadata()
            .map(|m| m.len())
            .ctx(|| format!("{what}: stat"))
    }

    fn read_body(&self, buf: &mut [u8], off: u64, what: &str) -> Result<usize> {
        use crate::error::IoContext;
        super::object::read_full_at(self, buf, off).ctx(|| format!("{what}: reading"))
    }

    fn replace_header(&self, header: &[u8], what: &str) -> Result<()> {
        use crate::error::IoContext;
        super::xattr::fset(
            self,
            super::xattr::HEADER.as_bytes(),
            header,
            libc::XATTR_REPLACE,
        )
        .ctx(|| format!("{what}: replacing the object header"))
    }

    fn add_header(&self, header: &[u8], what: &str) -> Result<()> {
        match super::xattr::fset(
            self,
            super::xattr::HEADER.as_bytes(),
            header,
            libc::XATTR_CREATE,
        ) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Err(
                crate::error::Error::AlreadyExists(format!("{what} has a header")),
            ),
            Err(e) => Err(crate::error::Error::io(
                format!("{what}: writing the object header"),
                e,
            )),
        }
    }

    fn sync(&self, what: &str) -> Result<()> {
        use crate::error::IoContext;
        self.sync_all().ctx(|| format!("{what}: fsync"))
    }

    fn body_file(&self, what: &str) -> Result<File> {
        use crate::error::IoContext;
        self.try_clone()
            .ctx(|| format!("{what}: duplicating a descriptor"))
    }

    fn as_file(&self) -> Option<&File> {
        Some(self)
    }
}
