//! Copying a whole store from one place to another (`envelopefs store copy SRC DST`): a
//! local directory or an object store, either way, without decrypting anything and without
//! the store's secret.
//!
//! What is copied, through the storage seam only, as it is stored: the sealed keystore, every
//! bucket record, every object (its body, preamble and chunks, byte for byte, and its header
//! bytes), every work request, and the config last. What is not: what belongs to one place
//! (a local store's lock, mount record, journal, temporaries and trash; an object store's
//! lease).
//!
//! Resuming (docs/DECISIONS.md, "Copying a store"): the destination has no config until the
//! copy is complete, so no command takes it for a store before then; its keystore, written
//! first, says which store it is a part of. Run again with the same source, a copy skips
//! every bucket record, object and work request already at the destination with the same
//! bytes (for an object: the same body length and header bytes; an object appears at the
//! destination only whole, so one that is there is complete). A destination holding another
//! store, whole or in part, or anything that is not a store, is refused before anything is
//! written there.
//!
//! Both places are held for the copy's length the way offline commands hold a store: a
//! local store by its lock (a mounted store is refused), an object store by its lease.

use crate::error::{Error, IoContext, Result};
use crate::format::config::StoreConfig;
use crate::format::records::KeystoreFile;
use crate::format::{hex, Id16};
use crate::store::local::LocalDir;
use crate::store::s3::backend::ObjectStoreBackend;
use crate::store::s3::lease::{self, Lease};
use crate::store::seam::{Backend, Record, Save};
use crate::store::{journal, Store, StoreLock, BUCKET_DIR_MODE, META_DIR, OBJECT_FILE_MODE};
use crate::sync::LockUnpoisoned;
use serde::Serialize;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Body bytes read and written per step: the memory a copy holds for data, whatever an
/// object's size.
pub const STEP: usize = 8 << 20;

/// What the lease of an object store says while a copy holds it.
const LEASE_WHAT: &str = "envelopefs store copy";

/// One end of a copy.
pub enum Place {
    /// A local directory.
    Local(PathBuf),
    /// An object store.
    ObjectStore(Arc<ObjectStoreBackend>),
}

impl Place {
    fn location(&self) -> String {
        match self {
            Place::Local(p) => p.display().to_string(),
            Place::ObjectStore(b) => b.location(),
        }
    }
}

/// How far a copy is (for a progress bar).
#[derive(Debug, Clone, Default)]
pub struct CopyProgress {
    /// Objects looked at (copied or skipped) so far.
    pub objects_done: u64,
    /// Objects in the source.
    pub objects_total: u64,
    /// Body bytes written to the destination so far.
    pub bytes_copied: u64,
}

/// The reply of `store copy`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopySummary {
    /// Bucket records written to the destination.
    pub buckets_copied: u64,
    /// Bucket records already at the destination, the same.
    pub buckets_skipped: u64,
    /// Body bytes written to the destination (the objects copied).
    pub bytes_copied: u64,
    /// Body bytes of the objects already at the destination.
    pub bytes_skipped: u64,
    /// The destination, as given.
    pub destination: String,
    /// Objects written to the destination.
    pub objects_copied: u64,
    /// Objects already at the destination with the same length and header.
    pub objects_skipped: u64,
    /// Objects in the source.
    pub objects_total: u64,
    /// Whether the destination held part (or all) of this store already: a resumed copy.
    pub resumed: bool,
    /// The source, as given.
    pub source: String,
    /// The store's id (hex), the same at both ends.
    pub store_id: String,
    /// Files of the source that are not objects (no header) and were left out, as
    /// `bucket/name` (fsck reports them too).
    pub without_header: Vec<String>,
    /// Work-request records written to the destination.
    pub work_requests_copied: u64,
    /// Work-request records already at the destination, the same.
    pub work_requests_skipped: u64,
}

/// A place opened for the copy: its backend, and what keeps others out while it lasts.
struct Held {
    backend: Arc<dyn Backend>,
    /// The local directory, when the place is one (for modes).
    local: Option<Arc<LocalDir>>,
    _guard: Guard,
}

enum Guard {
    Lock(#[allow(dead_code)] StoreLock),
    Lease(#[allow(dead_code)] Lease),
}

/// What the destination holds before the copy.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// Nothing of a store.
    Nothing,
    /// This store, whole (a config) or in part (a keystore, no config yet).
    ThisStore,
}

/// Copies the store at `src` to `dst` (see the module's documentation), `parallel` objects
/// at a time (those above 1 MiB one at a time); `progress` is called every 100 ms.
pub fn copy(
    src: &Place,
    dst: &Place,
    parallel: usize,
    progress: &mut dyn FnMut(&CopyProgress),
) -> Result<CopySummary> {
    refuse_same_place(src, dst)?;
    let source = hold_source(src)?;
    let s = &*source.backend;
    let config = s
        .read_record(Record::Config)?
        .ok_or_else(|| Error::NotFound(format!("{} is not an envelopefs store", s.location())))?;
    let store_id = StoreConfig::parse(&config)?
        .store_id_bytes()
        .ok_or_else(|| Error::Corrupt("store config: bad store id".into()))?;
    let keystore = s
        .read_record(Record::Keystore)?
        .ok_or_else(|| Error::Corrupt(format!("{}: the keystore is missing", s.location())))?;
    if KeystoreFile::decode(&keystore)?.prefix.store_id != store_id {
        return Err(Error::Corrupt(format!(
            "{}: the keystore belongs to another store than the config",
            s.location()
        )));
    }

    // Nothing is written at the destination before it is known to be this store's or empty.
    let found = inspect_destination(dst, &store_id)?;
    let dest = hold_destination(dst)?;
    // Checked again now that no one else can change it.
    let found_now = inspect_destination(dst, &store_id)?;
    if found_now != found && found_now != Found::ThisStore {
        return Err(Error::Busy(format!(
            "{} changed while the copy was starting",
            dst.location()
        )));
    }
    let d = &*dest.backend;
    let mut sum = CopySummary {
        destination: dst.location(),
        resumed: found_now == Found::ThisStore,
        source: src.location(),
        store_id: hex(&store_id),
        ..CopySummary::default()
    };

    // Uploads a killed run left unfinished (invisible, but they hold space): the lease is
    // ours, and the prefix this store's.
    if let (true, Place::ObjectStore(b)) = (sum.resumed, dst) {
        let n = b.client().abort_uploads(&b.at().key(""))?;
        if n > 0 {
            tracing::info!("{}: aborted {n} unfinished upload(s)", b.location());
        }
    }
    // The keystore first: it says whose the destination is from now on.
    if d.read_record(Record::Keystore)?.as_deref() != Some(&keystore[..]) {
        d.write_record(Record::Keystore, &keystore, Save::Durable)?;
    }
    copy_buckets(&source, &dest, &mut sum)?;
    copy_objects(&source, d, parallel, &mut sum, progress)?;
    for id in s.work_request_ids()? {
        let Some(bytes) = s.read_record(Record::WorkRequest(&id))? else {
            continue;
        };
        if d.read_record(Record::WorkRequest(&id))?.as_deref() == Some(&bytes[..]) {
            sum.work_requests_skipped += 1;
        } else {
            d.write_record(Record::WorkRequest(&id), &bytes, Save::Durable)?;
            sum.work_requests_copied += 1;
        }
    }
    // Everything durable, then the config: the destination becomes a store only now.
    d.sync_all()?;
    if d.read_record(Record::Config)?.as_deref() != Some(&config[..]) {
        d.write_record(Record::Config, &config, Save::Durable)?;
    }
    Ok(sum)
}

/// Refuses a copy of a place onto itself, or of a local store into a directory inside it.
fn refuse_same_place(src: &Place, dst: &Place) -> Result<()> {
    let same = match (src, dst) {
        (Place::Local(a), Place::Local(b)) => {
            let a = std::fs::canonicalize(a).unwrap_or_else(|_| a.clone());
            let b = canonical_ancestor(b);
            b.starts_with(&a) || a.starts_with(&b)
        }
        (Place::ObjectStore(a), Place::ObjectStore(b)) => {
            let (a, b) = (a.at(), b.at());
            let inside = |x: &str, y: &str| {
                x.is_empty() || y.is_empty() || x == y || y.starts_with(&format!("{x}/"))
            };
            a.bucket == b.bucket && (inside(&a.prefix, &b.prefix) || inside(&b.prefix, &a.prefix))
        }
        _ => false,
    };
    if same {
        return Err(Error::InvalidArgument(format!(
            "{} and {} overlap: a store is copied to a separate place",
            src.location(),
            dst.location()
        )));
    }
    Ok(())
}

/// `p` with its longest existing ancestor made canonical (`p` itself may not exist yet).
fn canonical_ancestor(p: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = p.to_path_buf();
    loop {
        if let Ok(c) = std::fs::canonicalize(&cur) {
            return rest.iter().rev().fold(c, |acc, part| acc.join(part));
        }
        match (cur.file_name().map(|n| n.to_os_string()), cur.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                cur = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// Holds the source: its lock (a mount refused) and, locally, undoes what a crash cut short
/// (the write journal, as opening the store does) so that no torn chunk is copied; an
/// object store's lease.
fn hold_source(src: &Place) -> Result<Held> {
    match src {
        Place::Local(root) => {
            let lock = StoreLock::acquire(root)?;
            let dir = Arc::new(LocalDir::new(root));
            let meta = root.join(META_DIR);
            let undone = journal::recover(root, &meta)?;
            if undone > 0 {
                tracing::warn!("{}: undid {undone} interrupted write(s)", root.display());
            }
            Ok(Held {
                backend: dir.clone(),
                local: Some(dir),
                _guard: Guard::Lock(lock),
            })
        }
        Place::ObjectStore(b) => {
            // Not a store: said before a lease is written there.
            Store::read_config_from(&**b)?;
            hold_object_store(b)
        }
    }
}

/// Holds a store in an object store by its lease.
fn hold_object_store(b: &Arc<ObjectStoreBackend>) -> Result<Held> {
    let lease = Lease::acquire(
        b.client(),
        &lease::key_of(b.at()),
        &b.location(),
        LEASE_WHAT,
    )?;
    Ok(Held {
        backend: b.clone(),
        local: None,
        _guard: Guard::Lease(lease),
    })
}

/// Holds the destination (made ready first, locally).
fn hold_destination(dst: &Place) -> Result<Held> {
    match dst {
        Place::Local(root) => {
            Store::prepare_local_root(root)?;
            let lock = StoreLock::acquire_incomplete(root)?;
            // Temporaries of a copy killed midway.
            crate::store::fsutil::clear_dir(&root.join(META_DIR).join("tmp"))?;
            let dir = Arc::new(LocalDir::new(root));
            Ok(Held {
                backend: dir.clone(),
                local: Some(dir),
                _guard: Guard::Lock(lock),
            })
        }
        Place::ObjectStore(b) => hold_object_store(b),
    }
}

/// What the destination holds; an error if it is another store or not empty.
fn inspect_destination(dst: &Place, store_id: &Id16) -> Result<Found> {
    let other = |what: &str, id: &Id16| {
        Error::AlreadyExists(format!(
            "{} holds {what} (store id {}), not of the store being copied ({}): nothing was \
             written there",
            dst.location(),
            hex(id),
            hex(store_id)
        ))
    };
    let backend: Arc<dyn Backend> = match dst {
        Place::Local(root) => Arc::new(LocalDir::new(root)),
        Place::ObjectStore(b) => b.clone(),
    };
    if let Some(bytes) = backend.read_record(Record::Config)? {
        let id = StoreConfig::parse(&bytes)?
            .store_id_bytes()
            .ok_or_else(|| Error::Corrupt("destination's config: bad store id".into()))?;
        if &id != store_id {
            return Err(other("another store", &id));
        }
        return Ok(Found::ThisStore);
    }
    if let Some(bytes) = backend.read_record(Record::Keystore)? {
        let id = KeystoreFile::decode(&bytes)?.prefix.store_id;
        if &id != store_id {
            return Err(other("part of another store", &id));
        }
        return Ok(Found::ThisStore);
    }
    let stray = match dst {
        Place::Local(root) => local_stray(root)?,
        Place::ObjectStore(b) => {
            let prefix = b.at().key("");
            let lease_key = lease::key_of(b.at());
            let page = b.client().list(&prefix, None, None, 2)?;
            page.objects
                .into_iter()
                .map(|o| o.key)
                .find(|k| *k != lease_key)
        }
    };
    match stray {
        None => Ok(Found::Nothing),
        Some(what) => Err(Error::AlreadyExists(format!(
            "{} is not empty ({what}) and holds no envelopefs store: a store is copied into a \
             new or empty place, or into an earlier copy of itself; nothing was written there",
            dst.location()
        ))),
    }
}

/// Something in a local directory that is not what an earlier copy leaves before its first
/// record (`.envelopefs/` with its empty directories and lock), if there is anything.
fn local_stray(root: &Path) -> Result<Option<String>> {
    let entries = match std::fs::read_dir(root) {
        Ok(it) => it,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", root.display()), e)),
    };
    for e in entries {
        let e = e.ctx(|| format!("reading {}", root.display()))?;
        if e.file_name() != META_DIR {
            return Ok(Some(e.file_name().to_string_lossy().into_owned()));
        }
        let meta = e.path();
        for m in std::fs::read_dir(&meta).ctx(|| format!("reading {}", meta.display()))? {
            let m = m.ctx(|| format!("reading {}", meta.display()))?;
            let name = m.file_name().to_string_lossy().into_owned();
            let empty_dir = (name == "work-requests" || name == "tmp")
                && std::fs::read_dir(m.path())
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false);
            if !(empty_dir || name == "lock") {
                return Ok(Some(format!("{META_DIR}/{name}")));
            }
        }
    }
    Ok(None)
}

/// The mode of a local bucket directory or object file (permission bits), if local.
fn local_mode(local: Option<&Arc<LocalDir>>, rel: &Path) -> Option<u32> {
    let dir = local?;
    std::fs::symlink_metadata(dir.root().join(rel))
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

fn copy_buckets(source: &Held, dest: &Held, sum: &mut CopySummary) -> Result<()> {
    let (s, d) = (&*source.backend, &*dest.backend);
    for name in s.bucket_names()? {
        let rec = match s.read_bucket(&name) {
            Ok(r) => r,
            // A directory of a local store that is not a bucket (fsck reports it).
            Err(Error::Corrupt(m)) => {
                tracing::warn!("not copied: {m}");
                continue;
            }
            Err(e) => return Err(e),
        };
        match d.read_bucket(&name) {
            Ok(have) if have.encode() == rec.encode() => sum.buckets_skipped += 1,
            Ok(_) => {
                d.replace_bucket(&name, &rec)?;
                sum.buckets_copied += 1;
            }
            Err(Error::NotFound(_)) => {
                let mode =
                    local_mode(source.local.as_ref(), Path::new(&name)).unwrap_or(BUCKET_DIR_MODE);
                d.create_bucket(&name, &rec, mode)?;
                sum.buckets_copied += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn copy_objects(
    source: &Held,
    d: &dyn Backend,
    parallel: usize,
    sum: &mut CopySummary,
    progress: &mut dyn FnMut(&CopyProgress),
) -> Result<()> {
    let s = &*source.backend;
    let mut all: Vec<(String, PathBuf)> = Vec::new();
    for bucket in s.bucket_names()? {
        if s.read_bucket(&bucket).is_err() {
            continue;
        }
        for name in s.object_names(&bucket)? {
            all.push((bucket.clone(), name));
        }
    }
    sum.objects_total = all.len() as u64;
    let work = Work {
        all: &all,
        next: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        large: Mutex::new(()),
        done: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        tally: Mutex::new(Tally::default()),
        failed: Mutex::new(None),
    };
    let report = |p: &mut dyn FnMut(&CopyProgress)| {
        p(&CopyProgress {
            objects_done: work.done.load(Ordering::Relaxed),
            objects_total: all.len() as u64,
            bytes_copied: work.bytes.load(Ordering::Relaxed),
        })
    };
    report(progress);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..parallel.clamp(1, all.len().max(1)))
            .map(|_| scope.spawn(|| work.run(source, d)))
            .collect();
        // This thread shows progress while the workers copy.
        while !workers.iter().all(|w| w.is_finished()) {
            report(progress);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        for w in workers {
            if w.join().is_err() {
                work.fail(Error::Corrupt("a copying thread panicked".into()));
            }
        }
    });
    report(progress);
    if let Some(e) = work.failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let t = work.tally.into_inner().unwrap_or_else(|p| p.into_inner());
    sum.objects_copied = t.copied;
    sum.objects_skipped = t.skipped;
    sum.bytes_copied = t.bytes_copied;
    sum.bytes_skipped = t.bytes_skipped;
    sum.without_header = t.without_header;
    sum.without_header.sort();
    Ok(())
}

/// Objects bigger than this are copied one at a time (a multipart upload holds several
/// parts in memory); smaller ones by every worker at once.
const LARGE: u64 = 1 << 20;

/// What the workers of [`copy_objects`] share.
struct Work<'a> {
    all: &'a [(String, PathBuf)],
    /// The index of the next object to take.
    next: AtomicUsize,
    /// Set on the first error: the workers stop taking objects.
    stop: AtomicBool,
    /// Held while a large object is copied.
    large: Mutex<()>,
    /// Objects looked at, and body bytes written (for progress).
    done: AtomicU64,
    bytes: AtomicU64,
    tally: Mutex<Tally>,
    failed: Mutex<Option<Error>>,
}

#[derive(Default)]
struct Tally {
    copied: u64,
    skipped: u64,
    bytes_copied: u64,
    bytes_skipped: u64,
    without_header: Vec<String>,
}

impl Work<'_> {
    fn fail(&self, e: Error) {
        self.stop.store(true, Ordering::Relaxed);
        self.failed.lock_unpoisoned().get_or_insert(e);
    }

    /// One worker: takes objects until there are none or one failed.
    fn run(&self, source: &Held, d: &dyn Backend) {
        let mut buf = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some((bucket, name)) = self.all.get(i) else {
                return;
            };
            if let Err(e) = self.one(source, d, bucket, name, &mut buf) {
                self.fail(e);
                return;
            }
            self.done.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Copies one object unless it is at the destination already.
    fn one(
        &self,
        source: &Held,
        d: &dyn Backend,
        bucket: &str,
        name: &Path,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let s = &*source.backend;
        let what = format!("{bucket}/{}", name.display());
        let blob = s.open_object(bucket, name, &what)?;
        let len = blob.len(&what)?;
        let Some(header) = blob.header(&what)? else {
            tracing::warn!("not copied: {what} has no header");
            self.tally.lock_unpoisoned().without_header.push(what);
            return Ok(());
        };
        let same = match d.open_object(bucket, name, &what) {
            Ok(there) => {
                there.len(&what)? == len && there.header(&what)?.as_deref() == Some(&header[..])
            }
            Err(Error::NotFound(_)) => false,
            Err(e) => return Err(e),
        };
        if same {
            let mut t = self.tally.lock_unpoisoned();
            t.skipped += 1;
            t.bytes_skipped += len;
            return Ok(());
        }
        let _one_at_a_time = (len > LARGE).then(|| self.large.lock_unpoisoned());
        let step = usize::try_from(len).unwrap_or(STEP).clamp(1, STEP);
        if buf.len() < step {
            buf.resize(step, 0);
        }
        let rel = Path::new(bucket).join(name);
        let mode = local_mode(source.local.as_ref(), &rel).unwrap_or(OBJECT_FILE_MODE);
        d.make_parents(bucket, name, BUCKET_DIR_MODE, &what)?;
        let (file, new) = d.new_object(bucket, name, mode, false, &what)?;
        let mut off = 0u64;
        while off < len {
            let want = step.min(usize::try_from(len - off).unwrap_or(step));
            let n = blob.read_body(&mut buf[..want], off, &what)?;
            if n == 0 {
                return Err(Error::Corrupt(format!(
                    "{what}: ended at {off} of {len} bytes while being copied"
                )));
            }
            file.write_all_at(&buf[..n], off)
                .ctx(|| format!("{what}: writing its copy"))?;
            off += n as u64;
        }
        new.publish(&file, &header, true)?;
        if len > LARGE {
            // Large buffers are not kept for the small objects that follow.
            *buf = Vec::new();
        }
        self.bytes.fetch_add(len, Ordering::Relaxed);
        let mut t = self.tally.lock_unpoisoned();
        t.copied += 1;
        t.bytes_copied += len;
        // Stalled holding the tally: no other worker gets past the object it has in hand.
        crate::fault::copy_stall(t.copied);
        Ok(())
    }
}
