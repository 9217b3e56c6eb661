//! The object-store backend: a store at `s3://BUCKET[/PREFIX]` (docs/FORMAT.md, "In an
//! object store").
//!
//! ```text
//! PREFIX/.envelopefs/config.json           the config (as locally)
//! PREFIX/.envelopefs/keystore              the sealed keystore (as locally)
//! PREFIX/.envelopefs/work-requests/ID.json work requests (as locally)
//! PREFIX/.envelopefs/buckets/NAME          a bucket's record (the bytes of the local xattr)
//! PREFIX/NAME/OBJECT                       an object: body = the local backing file's bytes,
//!                                          user metadata `envelopefs-header` = its header
//! ```
//!
//! A bucket exists when its record does; it needs no marker object. Every write is one PUT
//! or one server-side copy, durable when acknowledged, so the durability barrier is empty.
//! A header replacement is a copy of the object onto itself with its metadata replaced,
//! conditional on the ETag read with the old header: a concurrent change of the object
//! makes it fail with Stale instead of losing that change, and no data moves.

use super::client::{Head, S3Client};
use crate::error::{Error, IoContext, Result};
use crate::format::records::BucketRecord;
use crate::store::seam::{
    Backend, BackendKind, Blob, NewObject, ObjectWalk, Record, Save, TopName, UnfinishedUpload,
};
use crate::store::META_DIR;
use crate::sync::LockUnpoisoned;
use base64::Engine;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The user-metadata key holding an object's header (base64, standard alphabet).
pub const HEADER_META: &str = "envelopefs-header";

/// Objects listed per request.
const PAGE: i32 = 1000;

/// Where a store lives in an object store: `s3://BUCKET[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The S3 bucket.
    pub bucket: String,
    /// The key prefix of the store, without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3://BUCKET[/PREFIX]`; None when `s` is not an `s3://` address.
    pub fn parse(s: &str) -> Option<Result<S3Location>> {
        let rest = s.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        let bad_bucket = bucket.is_empty()
            || bucket.len() > 63
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if bad_bucket {
            return Some(Err(Error::InvalidArgument(format!(
                "{s}: not an S3 bucket name (1-63 of a-z, 0-9, '-' and '.'): write s3://BUCKET[/PREFIX]"
            ))));
        }
        if prefix.split('/').any(|c| c == "." || c == "..") || prefix.contains("//") {
            return Some(Err(Error::InvalidArgument(format!(
                "{s}: the prefix may not hold '.', '..' or empty components"
            ))));
        }
        Some(Ok(S3Location {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        }))
    }

    /// `s3://bucket/prefix`.
    pub fn display(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// The S3 key of `rel` below the store's prefix.
    pub fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }
}

/// A store kept in an S3-compatible object store.
pub struct ObjectStoreBackend {
    client: S3Client,
    at: S3Location,
    /// Where objects being created and bodies being read are staged (ciphertext only).
    staging: PathBuf,
}

impl ObjectStoreBackend {
    /// The store at `at`, reached with `client` (nothing is read yet). `staging` is a local
    /// directory for private unnamed files holding ciphertext.
    pub fn new(client: S3Client, at: S3Location, staging: PathBuf) -> ObjectStoreBackend {
        ObjectStoreBackend {
            client,
            at,
            staging,
        }
    }

    /// The S3 client (for the single-writer lease and tests).
    pub fn client(&self) -> &S3Client {
        &self.client
    }

    /// Where the store is.
    pub fn at(&self) -> &S3Location {
        &self.at
    }

    /// The local staging directory (ciphertext only).
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// The S3 key of a bucket's record.
    pub fn bucket_record_key_of(&self, name: &str) -> String {
        self.bucket_record_key(name)
    }

    fn meta_key(&self, rel: &str) -> String {
        self.at.key(&format!("{META_DIR}/{rel}"))
    }

    fn record_key(&self, record: Record<'_>) -> String {
        self.meta_key(&record.rel_path())
    }

    fn bucket_record_key(&self, name: &str) -> String {
        self.meta_key(&format!("buckets/{name}"))
    }

    fn object_key(&self, bucket: &str, name: &Path) -> Result<String> {
        let name = name.to_str().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{bucket}/{}: an object store keeps only UTF-8 names",
                name.display()
            ))
        })?;
        Ok(self.at.key(&format!("{bucket}/{name}")))
    }

    /// Every key below `prefix` (all pages), without the prefix.
    fn list_all(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.client.list(prefix, None, after.as_deref(), PAGE)?;
            for o in page.objects {
                if let Some(rel) = o.key.strip_prefix(prefix) {
                    out.push(rel.to_string());
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        Ok(out)
    }

    /// A private unnamed file in the staging directory (gone when closed).
    fn staging_file(&self, what: &str) -> Result<File> {
        staging_file(&self.staging, what)
    }
}

/// A private unnamed file (`O_TMPFILE`, gone when closed) in the staging directory `dir`,
/// made if missing: where objects being created and bodies being read hold their ciphertext.
pub fn staging_file(dir: &Path, what: &str) -> Result<File> {
    std::fs::create_dir_all(dir)
        .ctx(|| format!("creating the staging directory {}", dir.display()))?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
        .ctx(|| format!("{what}: a staging file in {}", dir.display()))
}

/// The objects under a key prefix in key byte order, one LIST request a page (see
/// [`Backend::object_pages`]).
struct KeyWalk<'a> {
    client: &'a S3Client,
    prefix: String,
    /// The last key listed (or the key to start after).
    start_after: Option<String>,
    done: bool,
}

impl ObjectWalk for KeyWalk<'_> {
    fn next_page(&mut self, max: usize) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        while !self.done && out.len() < max {
            let want = i32::try_from(max - out.len()).unwrap_or(PAGE).min(PAGE);
            let page = self
                .client
                .list(&self.prefix, None, self.start_after.as_deref(), want)?;
            for o in page.objects {
                // Only objects: not a directory marker, symlink or device node of a mount.
                if let Some(rel) = o
                    .key
                    .strip_prefix(&self.prefix)
                    .filter(|r| is_object_key(r, o.size))
                {
                    out.push(PathBuf::from(rel));
                }
                self.start_after = Some(o.key);
            }
            match page.next {
                Some(n) => self.start_after = Some(n),
                None => self.done = true,
            }
        }
        Ok(out)
    }
}

/// Whether a listed key (relative to its bucket) with this size is an object: a mount's
/// other nodes (directory markers `NAME/`, symlinks, fifos, sockets, devices) have empty
/// bodies, and an object's body never is (it holds at least the preamble and the empty
/// final chunk).
pub fn is_object_key(rel: &str, size: u64) -> bool {
    !rel.is_empty() && !rel.ends_with('/') && size > 0
}

/// Decodes the header of an object from its metadata (None when it has none).
pub fn header_of(head: &Head, what: &str) -> Result<Option<Vec<u8>>> {
    match head.metadata.get(HEADER_META) {
        None => Ok(None),
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("{what}: the header metadata is not base64: {e}"))),
    }
}

/// The metadata entry of an object header.
pub fn header_meta(header: &[u8]) -> Vec<(String, String)> {
    vec![(
        HEADER_META.to_string(),
        base64::engine::general_purpose::STANDARD.encode(header),
    )]
}

/// `metadata` with its header entry replaced by `header` (the rest kept: a mount's node
/// attributes and user xattrs).
fn with_header(
    metadata: &std::collections::BTreeMap<String, String>,
    header: &[u8],
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = metadata
        .iter()
        .filter(|(k, _)| k.as_str() != HEADER_META)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.extend(header_meta(header));
    out
}

/// The node attributes of an object created now with `mode` by this process.
pub fn new_object_attrs(mode: u32) -> crate::format::s3meta::NodeAttrs {
    let now = super::names::now_ns();
    let (uid, gid) = crate::store::fsutil::effective_ids();
    crate::format::s3meta::NodeAttrs {
        kind: crate::format::s3meta::NodeKind::File,
        mode: mode & 0o7777,
        uid,
        gid,
        rdev: 0,
        atime_ns: now,
        mtime_ns: now,
        ctime_ns: now,
    }
}

impl Backend for ObjectStoreBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::ObjectStore
    }

    fn location(&self) -> String {
        self.at.display()
    }

    fn read_record(&self, record: Record<'_>) -> Result<Option<Vec<u8>>> {
        Ok(self.client.get(&self.record_key(record))?.map(|(b, _)| b))
    }

    fn write_record(&self, record: Record<'_>, bytes: &[u8], save: Save<'_>) -> Result<()> {
        // An acknowledged PUT is durable; a record that must follow a barrier waits for it.
        if let Save::DurableAfter(barrier) = save {
            barrier()?;
        }
        self.client
            .put(&self.record_key(record), bytes.to_vec(), &[])
            .map(drop)
    }

    fn work_request_ids(&self) -> Result<Vec<String>> {
        let prefix = self.meta_key("work-requests/");
        Ok(self
            .list_all(&prefix)?
            .into_iter()
            .filter_map(|k| k.strip_suffix(".json").map(str::to_string))
            .filter(|k| !k.contains('/'))
            .collect())
    }

    fn bucket_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .list_all(&self.meta_key("buckets/"))?
            .into_iter()
            .filter(|k| !k.contains('/'))
            .collect();
        names.sort();
        Ok(names)
    }

    fn read_bucket(&self, name: &str) -> Result<BucketRecord> {
        match self.client.get(&self.bucket_record_key(name))? {
            Some((bytes, _)) => BucketRecord::decode(&bytes),
            None => Err(Error::NotFound(format!("no bucket {name:?}"))),
        }
    }

    fn create_bucket(&self, name: &str, record: &BucketRecord, _mode: u32) -> Result<()> {
        // The store cannot refuse a second PUT (Garage ignores If-None-Match): one writer at
        // a time is the lease's job; this check catches the common mistake.
        let key = self.bucket_record_key(name);
        if self.client.head(&key)?.is_some() {
            return Err(Error::AlreadyExists(format!("bucket {name:?} exists")));
        }
        self.client.put(&key, record.encode(), &[]).map(drop)
    }

    fn replace_bucket(&self, name: &str, record: &BucketRecord) -> Result<()> {
        let key = self.bucket_record_key(name);
        if self.client.head(&key)?.is_none() {
            return Err(Error::NotFound(format!("no bucket {name:?}")));
        }
        self.client.put(&key, record.encode(), &[]).map(drop)
    }

    fn object_pages(&self, bucket: &str, after: Option<&Path>) -> Result<Box<dyn ObjectWalk + '_>> {
        let prefix = self.at.key(&format!("{bucket}/"));
        let start_after = match after {
            Some(a) => Some(self.object_key(bucket, a)?),
            None => None,
        };
        Ok(Box::new(KeyWalk {
            client: &self.client,
            prefix,
            start_after,
            done: false,
        }))
    }

    fn open_object(&self, bucket: &str, name: &Path, what: &str) -> Result<Box<dyn Blob>> {
        let key = self.object_key(bucket, name)?;
        let head = self
            .client
            .head(&key)?
            .ok_or_else(|| Error::NotFound(format!("no object {what}")))?;
        let header = header_of(&head, what)?;
        Ok(Box::new(S3Blob {
            client: self.client.clone(),
            key,
            size: head.size,
            state: Mutex::new((head.etag, header)),
            metadata: head.metadata,
            staging: self.staging.clone(),
        }))
    }

    fn new_object(
        &self,
        bucket: &str,
        name: &Path,
        mode: u32,
        exclusive: bool,
        what: &str,
    ) -> Result<(File, Box<dyn NewObject>)> {
        // An exclusive create is checked once, when it is published.
        let key = self.object_key(bucket, name)?;
        let file = self.staging_file(what)?;
        // The unnamed staging file carries the object's mode (no one else can open it), so
        // that a mount sees the mode from the start.
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
            .ctx(|| format!("{what}: the mode of its staging file"))?;
        Ok((
            file,
            Box::new(S3New {
                client: self.client.clone(),
                key,
                exclusive,
                mode,
                what: what.to_string(),
            }),
        ))
    }

    fn make_parents(&self, _: &str, _: &Path, _: u32, _: &str) -> Result<()> {
        Ok(())
    }

    fn remove_object(&self, bucket: &str, name: &Path, what: &str) -> Result<()> {
        let key = self.object_key(bucket, name)?;
        if self.client.head(&key)?.is_none() {
            return Err(Error::NotFound(format!("no object {what}")));
        }
        self.client.delete(&key)
    }

    fn sync_all(&self) -> Result<()> {
        Ok(())
    }

    fn top_names(&self) -> Result<Vec<TopName>> {
        let prefix = self.at.key("");
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .client
                .list(&prefix, Some("/"), after.as_deref(), PAGE)?;
            for o in &page.objects {
                if let Some(rel) = o.key.strip_prefix(&prefix) {
                    out.push(TopName {
                        name: rel.to_string(),
                        has_objects: false,
                    });
                }
            }
            for p in &page.prefixes {
                if let Some(rel) = p.strip_prefix(&prefix) {
                    out.push(TopName {
                        name: rel.trim_end_matches('/').to_string(),
                        has_objects: true,
                    });
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        out.retain(|t| t.name != META_DIR);
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn unfinished_uploads(&self) -> Result<Vec<UnfinishedUpload>> {
        let prefix = self.at.key("");
        Ok(self
            .client
            .list_uploads(&prefix)?
            .into_iter()
            .map(|u| UnfinishedUpload {
                name: u.key.strip_prefix(&prefix).unwrap_or(&u.key).to_string(),
                detail: format!(
                    "multipart upload {} of {}, initiated {}",
                    u.upload_id, u.key, u.initiated_text
                ),
            })
            .collect())
    }
}

/// An object of an object store, as seen by one HEAD.
struct S3Blob {
    client: S3Client,
    key: String,
    size: u64,
    /// The ETag and header last seen (a header replacement updates both).
    state: Mutex<(String, Option<Vec<u8>>)>,
    /// Its user metadata as seen: a header replacement keeps the rest.
    metadata: std::collections::BTreeMap<String, String>,
    staging: PathBuf,
}

impl S3Blob {
    fn put_header(&self, header: &[u8]) -> Result<()> {
        let mut st = self.state.lock_unpoisoned();
        let etag = self.client.copy(
            &self.key,
            &self.key,
            &with_header(&self.metadata, header),
            Some(&st.0),
        )?;
        *st = (etag, Some(header.to_vec()));
        Ok(())
    }
}

impl Blob for S3Blob {
    fn header(&self, _what: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.state.lock_unpoisoned().1.clone())
    }

    fn len(&self, _what: &str) -> Result<u64> {
        Ok(self.size)
    }

    fn read_body(&self, buf: &mut [u8], off: u64, _what: &str) -> Result<usize> {
        let bytes = self.client.get_range(&self.key, off, buf.len() as u64)?;
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        Ok(n)
    }

    fn replace_header(&self, header: &[u8], _what: &str) -> Result<()> {
        self.put_header(header)
    }

    fn add_header(&self, header: &[u8], what: &str) -> Result<()> {
        if self.state.lock_unpoisoned().1.is_some() {
            return Err(Error::AlreadyExists(format!("{what} has a header")));
        }
        self.put_header(header)
    }

    fn sync(&self, _what: &str) -> Result<()> {
        Ok(())
    }

    fn body_file(&self, what: &str) -> Result<File> {
        let file = staging_file(&self.staging, what)?;
        // Ranged GETs of a few MiB each: memory stays bounded whatever the object's size.
        const STEP: u64 = 8 << 20;
        let mut off = 0;
        while off < self.size {
            let part = self
                .client
                .get_range(&self.key, off, STEP.min(self.size - off))?;
            if part.is_empty() {
                return Err(Error::Corrupt(format!(
                    "{what}: ended at {off} of {} bytes while being read",
                    self.size
                )));
            }
            file.write_all_at(&part, off)
                .ctx(|| format!("{what}: staging its ciphertext"))?;
            off += part.len() as u64;
        }
        Ok(file)
    }

    fn as_file(&self) -> Option<&File> {
        None
    }
}

/// An object of an object store being created: its body is staged in a private unnamed
/// file (ciphertext only) and uploaded with its header in one PUT (multipart when large):
/// nothing is visible before the upload completes, and a failed upload is aborted.
struct S3New {
    client: S3Client,
    key: String,
    exclusive: bool,
    /// Its mode (kept in its node attributes for a mount).
    mode: u32,
    what: String,
}

impl NewObject for S3New {
    fn publish(self: Box<Self>, file: &File, header: &[u8], _durable: bool) -> Result<()> {
        if self.exclusive && self.client.head(&self.key)?.is_some() {
            return Err(Error::AlreadyExists(format!("{} exists", self.what)));
        }
        let len = file
            .metadata()
            .ctx(|| format!("{}: stat of its staging file", self.what))?
            .len();
        let mut meta = header_meta(header);
        meta.push((
            crate::format::s3meta::ATTRS_META.to_string(),
            new_object_attrs(self.mode).encode(),
        ));
        self.client.put_file(&self.key, file, len, &meta)?;
        // The staging file carries its header too, as a local backing file does, for a mount
        // that goes on writing it (best effort: only a mount needs it, and checks for it).
        let _ = crate::store::xattr::fset(file, crate::store::xattr::HEADER.as_bytes(), header, 0);
        Ok(())
    }

    fn publish_later(self: Box<Self>, file: &File, header: &[u8]) -> Result<()> {
        crate::store::xattr::fset(file, crate::store::xattr::HEADER.as_bytes(), header, 0)
            .ctx(|| format!("{}: the header of its staging file", self.what))
    }
}
