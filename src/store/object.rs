//! Objects: creating them atomically, opening them (header → DEK), and random-access
//! plaintext I/O over the chunk format ([`ObjectIo`]), which the mount uses directly.

use super::journal::{Journal, Saved};
use super::seam::Blob;
use super::Store;
use crate::error::{Error, IoContext, Result};
use crate::format::chunk::{
    self, chunk_aad, Geometry, CHUNK_OVERHEAD, NONCE_LEN, PREAMBLE_LEN, TAG_LEN,
};
use crate::format::context::dek_context;
use crate::format::records::{BucketRecord, ObjectHeader, Wrapping, HEADER_MAGIC};
use crate::format::{hex, Id16, FORMAT_VERSION};
use crate::keys::crypto::{self, ChunkCipher, Key32};
use crate::keys::keystore::key_id_text;
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What a live mount does around a change that replaces an object's backing file (a rekey):
/// it must not be open meanwhile, and the kernel's cached entry must go. Offline, [`Offline`].
pub trait Live: Sync {
    /// Runs `f` while the mount cannot open the object whose backing inode number is
    /// `ino`; fails with EBUSY, without running `f`, if the mount has it open now.
    fn while_closed(&self, ino: u64, f: &mut dyn FnMut() -> Result<()>) -> Result<()>;
    /// The name `path` (relative to the store, as [`super::names::Names`] takes names) now
    /// leads to another backing file.
    fn replaced(&self, path: &Path);
}

/// No mount: nothing is open, no cache to drop.
pub struct Offline;

impl Live for Offline {
    fn while_closed(&self, _: u64, f: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        f()
    }
    fn replaced(&self, _: &Path) {}
}

/// Customer keys loaded for unwrapping SSE-C objects (fingerprint → key).
pub trait CustomerKeys {
    /// The key with this fingerprint, if loaded.
    fn customer_key(&self, fingerprint: &[u8; 32]) -> Option<Key32>;

    /// The live mount these keys belong to, if any (a rekey coordinates with its open files).
    fn live(&self) -> Option<&dyn Live> {
        None
    }
}

/// No customer keys.
pub struct NoCustomerKeys;

impl CustomerKeys for NoCustomerKeys {
    fn customer_key(&self, _: &[u8; 32]) -> Option<Key32> {
        None
    }
}

/// Reads and decodes the header of an opened object (a backing file is one).
pub fn read_header(blob: &dyn Blob, what: &str) -> Result<ObjectHeader> {
    match blob.header(what)? {
        Some(b) => ObjectHeader::decode(&b).map_err(|e| match e {
            Error::Corrupt(m) => Error::Corrupt(format!("{what}: {m}")),
            Error::UnsupportedVersion(m) => Error::UnsupportedVersion(format!("{what}: {m}")),
            other => other,
        }),
        None => Err(Error::Corrupt(format!("{what}: object header is missing"))),
    }
}

/// Reads the object id from an opened object's data preamble.
pub fn read_preamble(blob: &dyn Blob, what: &str) -> Result<Id16> {
    let mut p = [0u8; PREAMBLE_LEN as usize];
    let n = blob.read_body(&mut p, 0, what)?;
    chunk::parse_preamble(&p[..n]).map_err(|m| Error::Corrupt(format!("{what}: {m}")))
}

/// Unwraps the DEK of a header for an object in a bucket. `object_id` comes from the data
/// preamble, so a header copied from another object does not unwrap.
pub fn unwrap_header(
    store: &Store,
    bucket: &BucketRecord,
    object_id: &Id16,
    header: &ObjectHeader,
    customer: &dyn CustomerKeys,
    what: &str,
) -> Result<Key32> {
    unwrap_header_as(
        store,
        bucket,
        object_id,
        header,
        customer,
        what,
        crate::keys::keystore::ops::DECRYPT,
    )
}

/// [`unwrap_header`] authorized by another operation of the master key: a rewrap needs
/// re-encrypt-from, not decrypt (the DEK never leaves the store).
pub fn unwrap_header_as(
    store: &Store,
    bucket: &BucketRecord,
    object_id: &Id16,
    header: &ObjectHeader,
    customer: &dyn CustomerKeys,
    what: &str,
    op: u32,
) -> Result<Key32> {
    if header.chunk_size != store.chunk_size() {
        return Err(Error::Corrupt(format!(
            "{what}: header chunk size {} differs from the store's {}",
            header.chunk_size,
            store.chunk_size()
        )));
    }
    // The header's object id is not part of the wrap's context (the preamble's is), so
    // check it here: a header that names another object is never believed.
    if &header.object_id != object_id {
        return Err(Error::Corrupt(format!(
            "{what}: header belongs to another object (moved or copied header)"
        )));
    }
    let kek = match &header.wrapping {
        Wrapping::Master { key_id, version } => {
            let ks = store.keys();
            ks.check_allowed(key_id, op)?;
            ks.version(key_id, *version)
                .map_err(|e| prefix_error(e, what))?
        }
        Wrapping::Customer { fingerprint } => {
            customer.customer_key(fingerprint).ok_or_else(|| {
                Error::NoKey(format!(
                    "{what}: customer-provided key {} is not loaded",
                    hex(&fingerprint[..8])
                ))
            })?
        }
    };
    let ctx = dek_context(
        store.store_id(),
        &bucket.bucket_id,
        object_id,
        header.created_ns,
        &header.wrapping,
    );
    crypto::unwrap_dek(&kek, &header.wrap_nonce, &ctx, &header.wrapped_dek).ok_or_else(|| {
        Error::Corrupt(format!(
            "{what}: object header does not unwrap (tampered, or moved from another bucket or store)"
        ))
    })
}

fn prefix_error(e: Error, what: &str) -> Error {
    match e {
        Error::NoKey(m) => Error::NoKey(format!("{what}: {m}")),
        other => other,
    }
}

/// Builds a header wrapping `dek` for an object.
#[allow(clippy::too_many_arguments)]
pub fn make_header(
    store: &Store,
    bucket: &BucketRecord,
    object_id: &Id16,
    created_ns: u64,
    wrapping: Wrapping,
    kek: &Key32,
    dek: &Key32,
    nonce: [u8; 12],
) -> Result<ObjectHeader> {
    let ctx = dek_context(
        store.store_id(),
        &bucket.bucket_id,
        object_id,
        created_ns,
        &wrapping,
    );
    Ok(ObjectHeader {
        magic: HEADER_MAGIC,
        version: FORMAT_VERSION,
        chunk_size: store.chunk_size(),
        object_id: *object_id,
        created_ns,
        wrapping,
        wrap_nonce: nonce,
        wrapped_dek: crypto::wrap_dek(kek, &nonce, &ctx, dek)?,
    })
}

/// Header metadata (for `object head` and xattrs).
pub fn describe_header(h: &ObjectHeader) -> HeaderInfo {
    let (encryption, key_id, key_version, customer_key_fingerprint) = match &h.wrapping {
        Wrapping::Master { key_id, version } => {
            ("master", Some(key_id_text(key_id)), Some(*version), None)
        }
        Wrapping::Customer { fingerprint } => ("sse-c", None, None, Some(hex(fingerprint))),
    };
    HeaderInfo {
        chunk_size: h.chunk_size,
        created_ns: h.created_ns,
        customer_key_fingerprint,
        encryption,
        key_id,
        key_version,
        object_id: hex(&h.object_id),
    }
}

/// An object header's metadata: master-keyed objects name their key and version, SSE-C
/// objects the fingerprint of their customer key (the other fields are left out).
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeaderInfo {
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Creation time (nanoseconds since the epoch).
    pub created_ns: u64,
    /// SSE-C: the customer key's fingerprint (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_key_fingerprint: Option<String>,
    /// `master` or `sse-c`.
    pub encryption: &'static str,
    /// Master: the key id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Master: the key version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_version: Option<u32>,
    /// The object id (hex).
    pub object_id: String,
}

/// Creates an object at `final_path` (a path in a local store's bucket): see
/// [`create_object_in`].
pub fn create_object(
    store: &Store,
    bucket: &BucketRecord,
    final_path: &Path,
    mode: u32,
    exclusive: bool,
    fill: &mut dyn FnMut(&mut ObjectIo) -> Result<()>,
) -> Result<ObjectIo> {
    let dir = store.local("a create by path")?;
    let rel = final_path.strip_prefix(dir.root()).map_err(|_| {
        Error::InvalidArgument(format!("{} is not in the store", final_path.display()))
    })?;
    let mut parts = rel.components();
    let bucket_name = parts
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .ok_or_else(|| Error::InvalidArgument(format!("{} names no bucket", rel.display())))?;
    let name = parts.as_path();
    let opts = Create {
        mode,
        exclusive,
        ..Create::default()
    };
    create_object_in(store, bucket_name, bucket, name, &opts, fill)
}

/// How [`create_object_in`] makes an object.
pub struct Create<'a> {
    /// Its mode (exactly this, whatever the umask).
    pub mode: u32,
    /// Fail with EEXIST if the name is taken (else an old object is replaced).
    pub exclusive: bool,
    /// Body and header durable before the name appears (fsync of the file locally; the
    /// name is made durable by the caller's barrier).
    pub durable: bool,
    /// The wrapping of its DEK and the key that makes it, instead of the bucket key's
    /// current version (a rekey wraps under its target).
    pub wrap: Option<(Wrapping, &'a Key32)>,
    /// Its creation time (ns) instead of now (a rekey job's scope).
    pub created_ns: Option<u64>,
    /// Published by the mount's first commit, not here ([`NewObject::publish_later`]).
    pub publish_later: bool,
}

impl Default for Create<'_> {
    fn default() -> Self {
        Create {
            mode: super::OBJECT_FILE_MODE,
            exclusive: true,
            durable: false,
            wrap: None,
            created_ns: None,
            publish_later: false,
        }
    }
}

/// Creates the object `name` in a bucket: a body that no one can see yet gets an empty final
/// chunk and whatever `fill` writes, then is published with its header, so the object is
/// never visible headerless (and a failed `fill` leaves any old object in place). With
/// `exclusive`, an existing object of that name makes this fail with EEXIST.
///
/// Where the body is made and how it is published is the backend's
/// ([`super::seam::Backend::new_object`]): locally an `O_TMPFILE` linked into place (or a
/// named file in `.envelopefs/tmp` renamed into place), in an object store a private staging
/// file of ciphertext uploaded with its header.
pub fn create_object_in(
    store: &Store,
    bucket_name: &str,
    bucket: &BucketRecord,
    name: &Path,
    opts: &Create<'_>,
    fill: &mut dyn FnMut(&mut ObjectIo) -> Result<()>,
) -> Result<ObjectIo> {
    let current;
    let (wrapping, kek) = match &opts.wrap {
        Some((w, k)) => (*w, *k),
        None => {
            let (key_id, version, kek) = store.wrapping_key_for(bucket)?;
            current = kek;
            (Wrapping::Master { key_id, version }, &current)
        }
    };
    // One read of the OS random source: object id, DEK, wrap nonce, first chunk nonce.
    let mut rnd = zeroize::Zeroizing::new([0u8; 16 + 32 + 12 + NONCE_LEN]);
    crypto::fill_random(rnd.as_mut_slice())?;
    let mut object_id: Id16 = [0u8; 16];
    object_id.copy_from_slice(&rnd[..16]);
    let mut dek_bytes = zeroize::Zeroizing::new([0u8; 32]);
    dek_bytes.copy_from_slice(&rnd[16..48]);
    let dek = Key32::from_bytes(*dek_bytes);
    let mut wrap_nonce = [0u8; 12];
    wrap_nonce.copy_from_slice(&rnd[48..60]);
    let mut chunk_nonce = [0u8; NONCE_LEN];
    chunk_nonce.copy_from_slice(&rnd[60..]);
    let header = make_header(
        store,
        bucket,
        &object_id,
        opts.created_ns.unwrap_or_else(now_ns),
        wrapping,
        kek,
        &dek,
        wrap_nonce,
    )?;
    let label = format!("{bucket_name}/{}", name.display());
    let (file, new) =
        store
            .backend()
            .new_object(bucket_name, name, opts.mode, opts.exclusive, &label)?;
    let mut obj = ObjectIo::new(file, label, &dek, object_id, store.geometry(), 0)?;
    obj.journal = store.journal().cloned();
    obj.write_empty_object(&chunk_nonce)?;
    fill(&mut obj)?;
    if opts.publish_later {
        new.publish_later(obj.file(), &header.encode())?;
    } else {
        new.publish(obj.file(), &header.encode(), opts.durable)?;
    }
    Ok(obj)
}

/// Opens an existing object: reads its header and preamble and unwraps its DEK.
/// A missing or corrupt header is EIO; a disabled key version or missing customer key ENOKEY.
pub fn open_object(
    store: &Store,
    bucket: &BucketRecord,
    path: &Path,
    writable: bool,
    customer: &dyn CustomerKeys,
) -> Result<ObjectIo> {
    let root = store.local_dir().map(|d| d.root().to_path_buf());
    let what = root
        .and_then(|r| path.strip_prefix(r).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string();
    let file = OpenOptions::new()
        .read(true)
        .write(writable)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::NotFound(format!("no object {what}"))
            } else {
                Error::io(format!("opening {what}"), e)
            }
        })?;
    open_object_file(store, bucket, file, &what, customer)
}

/// Like [`open_object`] for an already opened backing file.
pub fn open_object_file(
    store: &Store,
    bucket: &BucketRecord,
    file: File,
    what: &str,
    customer: &dyn CustomerKeys,
) -> Result<ObjectIo> {
    let header = read_header(&file, what)?;
    let object_id = read_preamble(&file, what)?;
    let dek = unwrap_header(store, bucket, &object_id, &header, customer, what)?;
    let md = file.metadata().ctx(|| format!("{what}: stat"))?;
    let len = md.len();
    let geometry = store.geometry();
    let size = geometry.plain_len(len).ok_or_else(|| {
        Error::Corrupt(format!(
            "{what}: backing size {len} is not a valid object size (truncated?)"
        ))
    })?;
    let mut io = ObjectIo::new(file, what.to_string(), &dek, object_id, geometry, size)?;
    io.journal = store.journal().cloned();
    io.note_metadata(&md);
    io.check_empty_final_chunk()?;
    Ok(io)
}

/// Opens an object given as a [`Blob`] (any backend): header and preamble from the blob, the
/// body read from [`Blob::body_file`] (for an object store, a private copy of the ciphertext).
pub fn open_blob(
    store: &Store,
    bucket: &BucketRecord,
    blob: &dyn Blob,
    what: &str,
    customer: &dyn CustomerKeys,
) -> Result<ObjectIo> {
    let header = read_header(blob, what)?;
    let object_id = read_preamble(blob, what)?;
    let dek = unwrap_header(store, bucket, &object_id, &header, customer, what)?;
    let len = blob.len(what)?;
    let size = store.geometry().plain_len(len).ok_or_else(|| {
        Error::Corrupt(format!(
            "{what}: backing size {len} is not a valid object size (truncated?)"
        ))
    })?;
    let file = blob.body_file(what)?;
    let mut io = ObjectIo::new(
        file,
        what.to_string(),
        &dek,
        object_id,
        store.geometry(),
        size,
    )?;
    io.journal = store.journal().cloned();
    io.check_empty_final_chunk()?;
    Ok(io)
}

/// Reads up to `buf.len()` bytes at `off`, retrying short reads; fewer only at end of file.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Ends a journaled change: on success the record is dropped; on failure the change is
/// undone first, so a failed write (ENOSPC halfway through, say) leaves the object as it was.
fn finish_change(guard: Option<super::journal::Guard<'_>>, r: Result<()>) -> Result<()> {
    match (r, guard) {
        (Ok(()), _) => Ok(()),
        (Err(e), Some(g)) => {
            if let Err(u) = g.undo() {
                tracing::error!("{u} (the next open of the store undoes it)");
            }
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}

thread_local! {
    /// Per-thread scratch for chunk I/O, so the hot path does not allocate per call.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static SCRATCH2: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Most chunks processed per backing write (bounds memory for large sparse extensions).
const MAX_BATCH_BYTES: u64 = 4 << 20;

/// How far ahead of a sequential reader the backing file is read ahead (see
/// [`ObjectIo::read_ahead`]).
const READ_AHEAD_BYTES: u64 = 4 << 20;

/// Backing bytes written to an object after which its writeback is started (write-behind),
/// so that large sequential writes keep the disk busy instead of leaving it all to fsync.
const WRITE_BEHIND_BYTES: u64 = 8 << 20;

/// What a write puts into the range: caller data, or zeros (extension, sparse gaps).
#[derive(Clone, Copy)]
enum Source<'a> {
    Data(&'a [u8]),
    Zeros(u64),
}

impl Source<'_> {
    fn len(&self) -> u64 {
        match self {
            Source::Data(d) => d.len() as u64,
            Source::Zeros(n) => *n,
        }
    }
}

/// Random-access plaintext I/O over one object's backing file. Reads take `&self` and may
/// run concurrently; writes and truncation take `&mut self`.
pub struct ObjectIo {
    file: File,
    /// How errors name the object: its path in the store when it was opened.
    label: String,
    cipher: ChunkCipher,
    object_id: Id16,
    geometry: Geometry,
    size: u64,
    /// Backing bytes written sequentially since writeback was last started (see
    /// [`WRITE_BEHIND_BYTES`]), and where the last write ended.
    unflushed: u64,
    last_end: u64,
    /// Backing offset up to which read-ahead has been asked for.
    ra_next: AtomicU64,
    /// The store's write journal, which makes each change crash-atomic (see
    /// [`super::journal`]); None for stores without one.
    journal: Option<Arc<Journal>>,
    /// The backing file's (device, inode), found at the first journaled change.
    inode: Option<(u64, u64)>,
    /// When the final chunk is empty and this ObjectIo wrote it: its 28 bytes, so that the
    /// journal record of the next append copies them instead of reading them back.
    empty_tail: Option<[u8; CHUNK_OVERHEAD as usize]>,
}

impl ObjectIo {
    fn new(
        file: File,
        label: String,
        dek: &Key32,
        object_id: Id16,
        geometry: Geometry,
        size: u64,
    ) -> Result<Self> {
        Ok(ObjectIo {
            file,
            label,
            cipher: ChunkCipher::new(dek)?,
            object_id,
            geometry,
            size,
            unflushed: 0,
            last_end: 0,
            ra_next: AtomicU64::new(0),
            journal: None,
            inode: None,
            empty_tail: None,
        })
    }

    /// Tells the object its backing file's metadata, read by the caller anyway, so that the
    /// first journaled change does not stat the file again.
    /// fstat of the backing file, as the names interface reports it, noting its (device,
    /// inode) for the journal as [`ObjectIo::note_metadata`] does.
    pub fn stat(&mut self) -> Result<super::names::Meta> {
        let m = self
            .file
            .metadata()
            .ctx(|| format!("{}: stat", self.what()))?;
        self.note_metadata(&m);
        Ok(super::local_names::meta_of(&m))
    }

    pub fn note_metadata(&mut self, m: &std::fs::Metadata) {
        self.inode = Some((m.dev(), m.ino()));
    }

    /// The backing file's (device, inode), as the journal records it.
    fn inode(&mut self) -> Result<(u64, u64)> {
        if let Some(id) = self.inode {
            return Ok(id);
        }
        let md = self
            .file
            .metadata()
            .ctx(|| format!("{}: stat", self.what()))?;
        let id = (md.dev(), md.ino());
        self.inode = Some(id);
        Ok(id)
    }

    /// Starts a journaled change at backing offset `at` of a backing file `len` bytes long
    /// (None without a journal).
    fn begin_change(
        &self,
        inode: Option<(u64, u64)>,
        at: u64,
        saved: Saved<'_>,
        len: u64,
    ) -> Result<Option<super::journal::Guard<'_>>> {
        match (&self.journal, inode) {
            (Some(j), Some(id)) => j
                .begin(&self.file, id, &self.object_id, at, saved, len)
                .map(Some),
            _ => Ok(None),
        }
    }

    /// Plaintext size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The object id.
    pub fn object_id(&self) -> &Id16 {
        &self.object_id
    }

    /// The backing file.
    pub fn file(&self) -> &File {
        &self.file
    }

    fn what(&self) -> String {
        format!("{} (object {})", self.label, hex(&self.object_id))
    }

    fn write_empty_object(&mut self, nonce: &[u8; NONCE_LEN]) -> Result<()> {
        let mut buf = Vec::with_capacity((PREAMBLE_LEN + CHUNK_OVERHEAD) as usize);
        buf.extend_from_slice(&chunk::preamble(&self.object_id));
        buf.extend_from_slice(nonce);
        let tag = self
            .cipher
            .encrypt(nonce, &chunk_aad(&self.object_id, 0, true), &mut [])?;
        buf.extend_from_slice(&tag);
        self.file
            .write_all_at(&buf, 0)
            .ctx(|| "writing a new object".to_string())?;
        self.size = 0;
        let mut tail = [0u8; CHUNK_OVERHEAD as usize];
        tail.copy_from_slice(&buf[PREAMBLE_LEN as usize..]);
        self.empty_tail = Some(tail);
        Ok(())
    }

    /// Reads plaintext at `off` into `buf`; returns bytes read (0 at or past the end).
    /// If any chunk of the range fails authentication, the whole read is an error.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<usize> {
        if off >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let end = (off + buf.len() as u64).min(self.size);
        let g = self.geometry;
        let cs = g.chunk_size;
        let first = off / cs;
        let last = (end - 1) / cs;
        let start_b = g.backing_offset(first);
        let end_b = g.backing_offset(last) + CHUNK_OVERHEAD + g.chunk_plain_len(last, self.size);
        let final_idx = g.final_index(self.size);
        self.read_ahead(start_b, end_b);
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let need = usize::try_from(end_b - start_b)
                .map_err(|_| Error::InvalidArgument("read too large".into()))?;
            if s.len() < need {
                s.resize(need, 0);
            }
            let got = read_full_at(&self.file, &mut s[..need], start_b)
                .ctx(|| format!("{}: reading", self.what()))?;
            let mut copied = 0usize;
            for j in first..=last {
                let plen = g.chunk_plain_len(j, self.size);
                let rel = usize::try_from(g.backing_offset(j) - start_b).unwrap_or(usize::MAX);
                let slot_len = plen as usize + NONCE_LEN + TAG_LEN;
                if rel.saturating_add(slot_len) > got {
                    return self.corrupt_chunk(j, "backing file is shorter than its chunks");
                }
                let slot = &mut s[rel..rel + slot_len];
                let (nonce, rest) = slot.split_at_mut(NONCE_LEN);
                let (ct, tag) = rest.split_at_mut(plen as usize);
                let aad = chunk_aad(&self.object_id, j, j == final_idx);
                if !self.cipher.decrypt(nonce, &aad, ct, tag) {
                    return self.corrupt_chunk(j, "chunk failed authentication");
                }
                let cstart = j * cs;
                let from = off.max(cstart);
                let to = end.min(cstart + plen);
                let a = (from - cstart) as usize;
                let b = (to - cstart) as usize;
                buf[copied..copied + (b - a)].copy_from_slice(&ct[a..b]);
                copied += b - a;
            }
            Ok(copied)
        })
    }

    /// Asks the kernel to read the backing file ahead of a sequential reader. The kernel's own
    /// read-ahead on the backing file sees the reads of several FUSE worker threads slightly
    /// out of order and often stops growing its window, so each 128 KiB READ waited for the
    /// disk. A read that starts near the frontier of what was already asked for moves the
    /// frontier `READ_AHEAD_BYTES` past its end (`posix_fadvise(WILLNEED)` starts the reads
    /// without waiting for them); reads elsewhere (random access) ask for nothing.
    fn read_ahead(&self, start_b: u64, end_b: u64) {
        let ra = self.ra_next.load(Ordering::Relaxed);
        if start_b > ra + READ_AHEAD_BYTES / 2 || end_b + READ_AHEAD_BYTES / 2 < ra {
            return;
        }
        let to = end_b + READ_AHEAD_BYTES;
        if self
            .ra_next
            .compare_exchange(ra, to, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let from = ra.max(end_b);
            let _ = super::fsutil::will_need(&self.file, from, to - from);
        }
    }

    /// Authenticates the final chunk when it is empty. No read ever touches an empty final
    /// chunk, so without this check a backing file cut to a chunk boundary plus 28 bytes (a
    /// valid backing size) would read as a shorter, valid object.
    fn check_empty_final_chunk(&self) -> Result<()> {
        let g = self.geometry;
        let last = g.final_index(self.size);
        if g.chunk_plain_len(last, self.size) != 0 {
            return Ok(());
        }
        self.read_chunk(last, self.size, &mut [])
    }

    /// A read that touches a chunk failing authentication fails as a whole. (A short read
    /// would be taken as end-of-file by the kernel, which then zero-fills the rest of the
    /// page-cache range: garbage. After an EIO the kernel retries the good pages singly, so
    /// only reads of the bad chunk fail.)
    fn corrupt_chunk<T>(&self, chunk: u64, why: &str) -> Result<T> {
        // Not logged here: the caller reports it once (the mount logs every EIO it answers).
        Err(Error::Corrupt(format!(
            "{}: chunk {chunk}: {why}",
            self.what()
        )))
    }

    /// Decrypts chunk `j` as stored for plaintext size `size` into `out` (which must hold
    /// the chunk's plaintext length). Uses the second scratch buffer.
    fn read_chunk(&self, j: u64, size: u64, out: &mut [u8]) -> Result<()> {
        let g = self.geometry;
        let plen = g.chunk_plain_len(j, size) as usize;
        SCRATCH2.with(|s| {
            let mut s = s.borrow_mut();
            let need = plen + NONCE_LEN + TAG_LEN;
            if s.len() < need {
                s.resize(need, 0);
            }
            let got = read_full_at(&self.file, &mut s[..need], g.backing_offset(j))
                .ctx(|| format!("{}: reading", self.what()))?;
            if got < need {
                return self.corrupt_chunk(j, "backing file is shorter than its chunks");
            }
            let (nonce, rest) = s[..need].split_at_mut(NONCE_LEN);
            let (ct, tag) = rest.split_at_mut(plen);
            let aad = chunk_aad(&self.object_id, j, j == g.final_index(size));
            if !self.cipher.decrypt(nonce, &aad, ct, tag) {
                return self.corrupt_chunk(j, "chunk failed authentication");
            }
            out[..plen].copy_from_slice(ct);
            Ok(())
        })
    }

    /// Writes `data` at plaintext offset `off`, extending the object (with authenticated zero
    /// chunks over any gap) as needed.
    pub fn write_at(&mut self, off: u64, data: &[u8]) -> Result<()> {
        self.write_range(off, Source::Data(data))
    }

    /// Sets the plaintext size: shrinking rewrites the new final chunk and truncates the
    /// backing file; growing appends authenticated zeros.
    pub fn set_len(&mut self, new: u64) -> Result<()> {
        let old = self.size;
        if new == old {
            return Ok(());
        }
        if new > old {
            return self.write_range(old, Source::Zeros(new - old));
        }
        let g = self.geometry;
        let j = g.final_index(new);
        let plen = g.chunk_plain_len(j, new) as usize;
        let inode = match self.journal {
            Some(_) => Some(self.inode()?),
            None => None,
        };
        let mut slot = vec![0u8; NONCE_LEN + plen + TAG_LEN];
        if plen > 0 {
            let old_len = g.chunk_plain_len(j, old) as usize;
            let mut tmp = vec![0u8; old_len];
            self.read_chunk(j, old, &mut tmp)?;
            slot[NONCE_LEN..NONCE_LEN + plen].copy_from_slice(&tmp[..plen]);
        }
        crypto::fill_nonces(&mut slot[..NONCE_LEN])?;
        let (nonce, rest) = slot.split_at_mut(NONCE_LEN);
        let (pt, tag) = rest.split_at_mut(plen);
        let t = self
            .cipher
            .encrypt(nonce, &chunk_aad(&self.object_id, j, true), pt)?;
        tag.copy_from_slice(&t);
        // Two phases (see the journal): rewrite the new final chunk (undone after a crash),
        // then cut the file (completed after a crash).
        let at = g.backing_offset(j);
        let saved = Saved::FromFile(slot.len() as u64);
        let mut guard = self.begin_change(inode, at, saved, g.backing_len(old))?;
        let r = self
            .file
            .write_all_at(&slot, at)
            .ctx(|| format!("{}: writing", self.what()))
            .and_then(|()| {
                crate::fault::die_mid_write(&self.label, &self.file, &[], at, true);
                if let Some(gd) = guard.as_mut() {
                    gd.truncating(g.backing_len(new));
                }
                self.file
                    .set_len(g.backing_len(new))
                    .ctx(|| format!("{}: truncating", self.what()))
            });
        finish_change(guard, r)?;
        self.empty_tail = None;
        if plen == 0 {
            let mut t = [0u8; CHUNK_OVERHEAD as usize];
            t.copy_from_slice(&slot);
            self.empty_tail = Some(t);
        }
        self.size = new;
        Ok(())
    }

    /// fsync (or fdatasync) of the backing file.
    pub fn sync(&self, data_only: bool) -> Result<()> {
        let r = if data_only {
            self.file.sync_data()
        } else {
            self.file.sync_all()
        };
        r.ctx(|| format!("{}: fsync", self.what()))
    }

    fn write_range(&mut self, off: u64, src: Source<'_>) -> Result<()> {
        let len = src.len();
        if len == 0 {
            return Ok(());
        }
        let old = self.size;
        let end = off
            .checked_add(len)
            .ok_or_else(|| Error::InvalidArgument("write past the largest offset".into()))?;
        let new = old.max(end);
        let g = self.geometry;
        let cs = g.chunk_size;
        let inode = match self.journal {
            Some(_) => Some(self.inode()?),
            None => None,
        };
        let first = off.min(old) / cs;
        let final_old = g.final_index(old);
        let final_new = g.final_index(new);
        let old_len = g.backing_len(old);
        // Chunks that hold old data and keep their length: rewritten piece by piece, each
        // piece journaled with its new bytes (the whole write if the size does not change;
        // the chunks before the old final one if the object grows).
        let over_end = if new > old {
            final_old
        } else {
            (end - 1) / cs + 1
        };
        let piece = super::journal::piece_chunks(g);
        let mut b0 = first;
        while b0 < over_end {
            let b1 = (b0 + piece - 1).min(over_end - 1);
            let journal = inode.map(|id| (id, old_len));
            // An empty final chunk is never rewritten here (it holds no byte to overwrite).
            self.write_batch(b0, b1, off, end, old, new, final_new, src, journal)?;
            b0 = b1 + 1;
        }
        if new > old {
            // Growing: the old final chunk is rewritten and chunks are appended, in batches
            // under one record holding the old final chunk and the old length, so a crash
            // anywhere in between leaves the object as it was.
            let from = g.backing_offset(final_old);
            let known = self
                .empty_tail
                .take()
                .filter(|_| old_len - from == CHUNK_OVERHEAD);
            let saved = match &known {
                Some(t) => Saved::Bytes(t),
                None => Saved::FromFile(old_len - from),
            };
            let guard = self.begin_change(inode, from, saved, old_len)?;
            let batch_chunks = (MAX_BATCH_BYTES / g.stride()).max(1);
            let mut r = Ok(None);
            let mut b0 = final_old;
            while b0 <= final_new && r.is_ok() {
                let b1 = (b0 + batch_chunks - 1).min(final_new);
                r = self.write_batch(b0, b1, off, end, old, new, final_new, src, None);
                b0 = b1 + 1;
            }
            let tail = match r {
                Ok(t) => {
                    finish_change(guard, Ok(()))?;
                    t
                }
                Err(e) => {
                    finish_change(guard, Err(e))?;
                    None
                }
            };
            self.empty_tail = tail;
        }
        self.size = new;
        // Write-behind for sequential writers only: random writes stay in the page cache.
        if off == self.last_end {
            self.unflushed += len;
        } else {
            self.unflushed = 0;
        }
        self.last_end = end;
        if self.unflushed >= WRITE_BEHIND_BYTES {
            self.unflushed = 0;
            // Only a hint to start the disk early: fsync still decides durability.
            let _ = super::fsutil::start_writeback(&self.file);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn write_batch(
        &self,
        b0: u64,
        b1: u64,
        off: u64,
        end: u64,
        old: u64,
        new: u64,
        final_new: u64,
        src: Source<'_>,
        journal: Option<((u64, u64), u64)>,
    ) -> Result<Option<[u8; CHUNK_OVERHEAD as usize]>> {
        let g = self.geometry;
        let cs = g.chunk_size;
        let start_b = g.backing_offset(b0);
        let end_b = g.backing_offset(b1) + CHUNK_OVERHEAD + g.chunk_plain_len(b1, new);
        let total = usize::try_from(end_b - start_b)
            .map_err(|_| Error::InvalidArgument("write too large".into()))?;
        SCRATCH.with(|s| -> Result<Option<[u8; CHUNK_OVERHEAD as usize]>> {
            let mut s = s.borrow_mut();
            if s.len() < total {
                s.resize(total, 0);
            }
            let buf = &mut s[..total];
            for j in b0..=b1 {
                let plen = g.chunk_plain_len(j, new);
                let cstart = j * cs;
                let cend = cstart + plen;
                let rel = (g.backing_offset(j) - start_b) as usize;
                let slot = &mut buf[rel..rel + NONCE_LEN + plen as usize + TAG_LEN];
                let (nonce, rest) = slot.split_at_mut(NONCE_LEN);
                let (pt, tag) = rest.split_at_mut(plen as usize);
                // Old bytes are needed where the chunk holds old data outside the write.
                let old_in_chunk_end = old.min(cend);
                let needs_old =
                    cstart < old_in_chunk_end && (cstart < off || old_in_chunk_end > end);
                if needs_old {
                    let old_plen = g.chunk_plain_len(j, old) as usize;
                    self.read_chunk(j, old, &mut pt[..old_plen])?;
                    pt[old_plen..].fill(0);
                } else {
                    pt.fill(0);
                }
                let from = off.max(cstart);
                let to = end.min(cend);
                if from < to {
                    let a = (from - cstart) as usize;
                    let b = (to - cstart) as usize;
                    match src {
                        Source::Data(d) => {
                            let da = (from - off) as usize;
                            pt[a..b].copy_from_slice(&d[da..da + (b - a)]);
                        }
                        Source::Zeros(_) => pt[a..b].fill(0),
                    }
                }
                // Straight from the thread's pool of OS randomness into the slot.
                crypto::fill_nonces(nonce)?;
                let t = self.cipher.encrypt(
                    nonce,
                    &chunk_aad(&self.object_id, j, j == final_new),
                    pt,
                )?;
                tag.copy_from_slice(&t);
            }
            // The batch ends with an empty final chunk: its bytes, for the next append.
            let tail = (b1 == final_new && g.chunk_plain_len(b1, new) == 0).then(|| {
                let mut t = [0u8; CHUNK_OVERHEAD as usize];
                t.copy_from_slice(&buf[total - CHUNK_OVERHEAD as usize..]);
                t
            });
            // An overwrite saves its new bytes in the journal (a copy in memory), so a crash
            // during the pwrite completes it at the next open.
            let guard = match journal {
                Some((id, len)) => self.begin_change(Some(id), start_b, Saved::Bytes(buf), len)?,
                None => None,
            };
            crate::fault::die_mid_write(&self.label, &self.file, buf, start_b, false);
            let r = self
                .file
                .write_all_at(buf, start_b)
                .ctx(|| format!("{}: writing", self.what()));
            finish_change(guard, r).map(|()| tail)
        })
    }
}
