//! `fsck`: checks a store without changing it.
//!
//! It checks the config, the keystore (that it decodes, belongs to this store and opens),
//! every bucket record, every object's header (it decodes, matches the data preamble, and
//! its DEK unwraps under the key version it names), the backing size, and with `read_data`
//! authenticates every chunk. It reports each problem as `{object, kind, detail}` and never
//! writes to the store.
//!
//! It runs in two places: offline ([`check_offline`], the CLI with the store's secret; it
//! does not need [`Store::open`] to succeed, so it can report a damaged config) and inside
//! a mount ([`check_store`], through `.envelopefs/ctl`), where it reads the backing files
//! beside the running mount and uses the mount's open keystore. A store in an object store
//! is checked by [`check_store`] too, through the storage seam only (`check_backend`): its
//! records, buckets and objects, with the same problem kinds, and its unfinished multipart
//! uploads (`unfinished-upload`); a local store's tmp dir, trash and journal have no
//! counterpart there.

use crate::error::{Error, Result};
use crate::format::chunk::{self, chunk_aad, Geometry, CHUNK_OVERHEAD, NONCE_LEN, TAG_LEN};
use crate::format::config::StoreConfig;
use crate::format::context::dek_context;
use crate::format::records::{
    BucketRecord, KeystoreFile, ObjectHeader, VersionState, Wrapping, WRAPPED_DEK_LEN,
};
use crate::format::{hex, Id16};
use crate::keys::crypto::{self, ChunkCipher, Key32};
use crate::keys::keystore::{key_id_text, KeyStore, Secret};
use crate::store::seam::{Blob, Record};
use crate::store::{xattr, Store, META_DIR};
use serde::Serialize;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// One problem found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// What it is about: a path relative to the store (`.envelopefs/keystore`,
    /// `photos`, `photos/2024/cat.jpg`).
    pub object: String,
    /// A stable machine-readable kind (see docs/ERRORS.md).
    pub kind: ProblemKind,
    /// What is wrong, for a person.
    pub detail: String,
}

string_enum! {
    /// The kinds of problem fsck reports, printed as `kind` (a stable ABI; each is explained
    /// in docs/ERRORS.md, "fsck problem kinds").
    pub enum ProblemKind {
        /// `.envelopefs/config.json` unreadable, malformed, or disagreeing.
        Config = "config",
        /// The keystore does not decode, belongs to another store, or does not open.
        Keystore = "keystore",
        /// A file at the top of the store.
        StrayEntry = "stray-entry",
        /// A top-level directory without a bucket record.
        BucketRecordMissing = "bucket-record-missing",
        /// A damaged bucket record.
        BucketRecord = "bucket-record",
        /// A bucket record of an unknown format version.
        BucketRecordVersion = "bucket-record-version",
        /// An object without a header.
        HeaderMissing = "header-missing",
        /// A header that does not decode.
        HeaderCorrupt = "header-corrupt",
        /// A header of an unknown format version.
        HeaderVersion = "header-version",
        /// A damaged data preamble.
        Preamble = "preamble",
        /// A header that belongs to another object.
        ObjectIdMismatch = "object-id-mismatch",
        /// A data key that does not unwrap.
        HeaderUnwrap = "header-unwrap",
        /// A master key or version named but not in the keystore.
        KeyMissing = "key-missing",
        /// A backing size that no object has.
        Size = "size",
        /// A chunk that fails authentication (`--read-data`).
        Chunk = "chunk",
        /// A work-request file that does not parse.
        WorkRequest = "work-request",
        /// A write a crash cut short, still in the journal (offline).
        InterruptedWrite = "interrupted-write",
        /// A damaged write journal.
        Journal = "journal",
        /// A system call failed while checking.
        Io = "io",
        /// An object store's multipart upload begun under the store and never completed
        /// nor aborted (its process died): invisible, but its parts take space.
        UnfinishedUpload = "unfinished-upload",
    }
}

/// An object whose header could not be verified, without being wrong: its key version is
/// disabled or destroyed, or it is wrapped under a customer key the store does not keep.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Unverified {
    /// Path relative to the store.
    pub object: String,
    /// Why it was not verified.
    pub reason: String,
}

/// The result of a check.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `true` when no problem was found.
    pub ok: bool,
    /// Whether chunks were authenticated (`--read-data`).
    pub read_data: bool,
    /// Buckets looked at.
    pub buckets: u64,
    /// Objects (regular files below buckets) looked at.
    pub objects: u64,
    /// Chunks authenticated (with `--read-data`).
    pub chunks: u64,
    /// Objects whose header could not be verified but is not known to be wrong.
    pub unverified: Vec<Unverified>,
    /// Every problem.
    pub problems: Vec<Problem>,
}

/// Progress of a check: objects done and objects in total.
pub type ProgressFn<'a> = &'a mut dyn FnMut(u64, u64);

/// Where the master keys come from.
enum Keys<'a> {
    /// A mount's open keystore.
    Mounted(&'a Store),
    /// The keystore opened by `check_offline`.
    Offline(Box<KeyStore>),
    /// The keystore did not open: headers are parsed but not unwrapped.
    Unavailable,
}

enum Kek {
    Key(Key32),
    /// Not a problem, but not verifiable (disabled version, customer key).
    Skip(String),
    /// A problem: the key or version does not exist.
    Missing(String),
}

fn kek_from(ks: &KeyStore, key_id: &Id16, version: u32) -> Kek {
    let Some(k) = ks.find(key_id) else {
        return Kek::Missing(format!(
            "header names master key {} which is not in the keystore",
            key_id_text(key_id)
        ));
    };
    let Some(v) = k.versions.iter().find(|v| v.version == version) else {
        return Kek::Missing(format!(
            "header names version {version} of key {}, which has no such version",
            key_id_text(key_id)
        ));
    };
    match v.state {
        VersionState::Enabled => Kek::Key(Key32::from_bytes(v.material)),
        VersionState::Disabled => Kek::Skip(format!(
            "key {} version {version} is disabled",
            key_id_text(key_id)
        )),
        VersionState::PendingDeletion => Kek::Skip(format!(
            "key {} version {version} is pending deletion",
            key_id_text(key_id)
        )),
        VersionState::Destroyed => Kek::Skip(format!(
            "key {} version {version} is destroyed: the object cannot be read",
            key_id_text(key_id)
        )),
    }
}

impl Keys<'_> {
    fn kek(&self, key_id: &Id16, version: u32) -> Option<Kek> {
        match self {
            Keys::Mounted(s) => Some(kek_from(&s.keys(), key_id, version)),
            Keys::Offline(ks) => Some(kek_from(ks, key_id, version)),
            Keys::Unavailable => None,
        }
    }

    fn has_key(&self, key_id: &Id16) -> Option<bool> {
        match self {
            Keys::Mounted(s) => Some(s.keys().find(key_id).is_some()),
            Keys::Offline(ks) => Some(ks.find(key_id).is_some()),
            Keys::Unavailable => None,
        }
    }
}

struct Checker<'a> {
    root: PathBuf,
    store_id: Id16,
    geometry: Geometry,
    chunk_size: u32,
    keys: Keys<'a>,
    read_data: bool,
    report: Report,
}

/// Checks a store that is open (the mount's, or one opened offline).
pub fn check_store(store: &Store, read_data: bool, progress: ProgressFn<'_>) -> Result<Report> {
    let Some(dir) = store.local_dir() else {
        return check_backend(store, read_data, progress);
    };
    let mut c = Checker::new(
        dir.root(),
        *store.store_id(),
        store.chunk_size(),
        Keys::Mounted(store),
        read_data,
    );
    c.check_config_file(Some(store.chunk_size()));
    // The keystore on disk must still open with the sealing key in memory.
    let kpath = dir.meta().join("keystore");
    c.check_keystore_bytes(store, fs::read(&kpath).map_err(|e| e.to_string()));
    c.check_tree(progress)?;
    Ok(c.finish())
}

/// Where an object store keeps an object's header, for messages.
const S3_HEADER_NAME: &str = "user metadata envelopefs-header";

/// Checks a store kept by a backend without local directories (an object store), through
/// the storage seam: its config and keystore records, every bucket record, what lies at the
/// top of the store beside the buckets, every object's header, preamble, size and data-key
/// unwrap, with `read_data` every chunk (read by ranged GETs of at most 4 MiB), and the
/// work-request records, then the unfinished multipart uploads under the store's prefix. A
/// local store's temporary files, trash and write journal have no
/// counterpart there, so nothing of them is checked. Nothing is written.
fn check_backend(store: &Store, read_data: bool, progress: ProgressFn<'_>) -> Result<Report> {
    let backend = store.backend();
    let mut c = Checker::new(
        Path::new(""),
        *store.store_id(),
        store.chunk_size(),
        Keys::Mounted(store),
        read_data,
    );
    let record = |r: Record<'_>| match backend.read_record(r) {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err("missing".to_string()),
        Err(e) => Err(e.to_string()),
    };
    c.check_config_bytes(record(Record::Config), Some(store.chunk_size()));
    c.check_keystore_bytes(store, record(Record::Keystore));

    // Buckets: every record, then the names at the top that hold objects without one.
    let mut buckets: Vec<(String, Option<BucketRecord>)> = Vec::new();
    for name in backend.bucket_names()? {
        match backend.read_bucket(&name) {
            Ok(r) => {
                c.check_bucket_key(&name, &r);
                buckets.push((name, Some(r)));
            }
            // Removed since it was listed.
            Err(Error::NotFound(_)) => continue,
            Err(e) => {
                let kind = match e {
                    Error::UnsupportedVersion(_) => ProblemKind::BucketRecordVersion,
                    Error::Corrupt(_) => ProblemKind::BucketRecord,
                    _ => ProblemKind::Io,
                };
                c.problem(&name, kind, &e.to_string());
                buckets.push((name, None));
            }
        }
        c.report.buckets += 1;
    }
    for top in backend.top_names()? {
        if buckets.iter().any(|(n, _)| *n == top.name) {
            continue;
        }
        if top.has_objects {
            c.problem(
                &top.name,
                ProblemKind::BucketRecordMissing,
                &format!(
                    "objects lie under {0}/ but there is no bucket record ({META_DIR}/buckets/{0})",
                    top.name
                ),
            );
            c.report.buckets += 1;
            buckets.push((top.name, None));
        } else {
            c.problem(
                &top.name,
                ProblemKind::StrayEntry,
                "an object at the top of the store, outside every bucket",
            );
        }
    }

    // Objects of buckets whose record is unreadable cannot be unwrapped; they are still
    // parsed (headers, preambles, sizes).
    let mut objects: Vec<(usize, PathBuf)> = Vec::new();
    for (i, (name, _)) in buckets.iter().enumerate() {
        for obj in backend.object_names(name)? {
            objects.push((i, obj));
        }
    }
    let total = objects.len() as u64;
    progress(0, total);
    for (n, (bi, obj)) in objects.iter().enumerate() {
        c.report.objects += 1;
        let (bucket_name, rec) = &buckets[*bi];
        let what = format!("{bucket_name}/{}", obj.display());
        match backend.open_object(bucket_name, obj, &what) {
            Ok(blob) => {
                if let Err(e) = c.check_blob(&what, &*blob, S3_HEADER_NAME, rec.as_ref()) {
                    c.problem(&what, ProblemKind::Io, &e.to_string());
                }
            }
            // Removed since the listing: nothing to check.
            Err(Error::NotFound(_)) => {}
            // The header metadata is there but not base64.
            Err(e @ Error::Corrupt(_)) => {
                c.problem(&what, ProblemKind::HeaderCorrupt, &e.to_string())
            }
            Err(e) => c.problem(&what, ProblemKind::Io, &e.to_string()),
        }
        progress(n as u64 + 1, total);
    }

    for id in backend.work_request_ids()? {
        let rel = format!("{META_DIR}/work-requests/{id}.json");
        match backend.read_record(Record::WorkRequest(&id)) {
            Ok(Some(b)) => c.check_work_request_bytes(&rel, &b),
            Ok(None) => {}
            Err(e) => c.problem(&rel, ProblemKind::Io, &e.to_string()),
        }
    }

    // Uploads a dead process left; the next command that takes the lease aborts them.
    for u in backend.unfinished_uploads()? {
        c.problem(
            &u.name,
            ProblemKind::UnfinishedUpload,
            &format!(
                "{} and never completed nor aborted (a process died while uploading); the \
                 next command that takes the store's lease aborts it",
                u.detail
            ),
        );
    }
    Ok(c.finish())
}

/// Checks a store that is not mounted. `secret` gets the store's key source
/// (`"passphrase"` or `"keyfile"`) and returns the secret; it is asked only if the keystore
/// decodes. Holds the store's lock while checking. A wrong secret is an error, not a
/// problem (nothing could be checked).
pub fn check_offline(
    root: &Path,
    secret: &mut dyn FnMut(&str) -> Result<Secret>,
    read_data: bool,
    progress: ProgressFn<'_>,
) -> Result<Report> {
    let _lock = crate::store::StoreLock::acquire_existing(root)?;
    let mut problems = Vec::new();
    let config = match fs::read(root.join(META_DIR).join("config.json")) {
        Ok(b) => match StoreConfig::parse(&b) {
            Ok(c) => Some(c),
            Err(e) => {
                problems.push(problem(
                    ".envelopefs/config.json",
                    ProblemKind::Config,
                    &e.to_string(),
                ));
                None
            }
        },
        Err(e) => {
            problems.push(problem(
                ".envelopefs/config.json",
                ProblemKind::Config,
                &format!("cannot read: {e}"),
            ));
            None
        }
    };
    // Writes a crash cut short are undone when the store is next opened; fsck changes
    // nothing, so it reports them (their objects may show a torn chunk until then).
    match crate::store::journal::read_records(&root.join(META_DIR)) {
        Ok(j) => problems.extend(j.records.iter().map(|r| {
            problem(
                ".envelopefs/journal",
                ProblemKind::InterruptedWrite,
                &format!(
                    "a write to object {} was cut short by a crash; it is repaired (undone, or \
                     completed from the journal) when the store is next opened (mount it, or \
                     run any other store command)",
                    r.object_id_hex()
                ),
            )
        })),
        Err(e) => problems.push(problem(
            ".envelopefs/journal",
            ProblemKind::Journal,
            &e.to_string(),
        )),
    }
    let kpath = root.join(META_DIR).join("keystore");
    let kbytes = fs::read(&kpath).map_err(|e| Error::io(format!("reading {}", kpath.display()), e));
    let file = kbytes
        .as_ref()
        .map_err(clone_err)
        .and_then(|b| KeystoreFile::decode(b));
    let (store_id, keys, chunk_size) = match (&file, &config) {
        (Ok(f), _) => {
            if let Some(cid) = config.as_ref().and_then(StoreConfig::store_id_bytes) {
                if cid != f.prefix.store_id {
                    problems.push(problem(
                        ".envelopefs/keystore",
                        ProblemKind::Keystore,
                        "keystore belongs to another store (store id differs from config)",
                    ));
                }
            }
            let source = match &config {
                Some(c) => c.key_source.clone(),
                None => match f.prefix.kdf {
                    crate::format::records::KdfParams::RawKey => "keyfile".into(),
                    _ => "passphrase".into(),
                },
            };
            let s = secret(&source)?;
            let bytes = kbytes.as_ref().map_err(clone_err)?;
            let ks = KeyStore::unseal(bytes, &f.prefix.store_id, &s)?;
            let cs = ks.chunk_size();
            if let Some(c) = &config {
                if c.chunk_size != cs {
                    problems.push(problem(
                        ".envelopefs/config.json",
                        ProblemKind::Config,
                        &format!(
                            "config says chunk size {} but the keystore says {cs}: config was altered",
                            c.chunk_size
                        ),
                    ));
                }
            }
            (f.prefix.store_id, Keys::Offline(Box::new(ks)), cs)
        }
        (Err(e), Some(c)) => {
            problems.push(problem(
                ".envelopefs/keystore",
                ProblemKind::Keystore,
                &e.to_string(),
            ));
            let id = c.store_id_bytes().unwrap_or_default();
            (id, Keys::Unavailable, c.chunk_size)
        }
        (Err(e), None) => {
            problems.push(problem(
                ".envelopefs/keystore",
                ProblemKind::Keystore,
                &e.to_string(),
            ));
            return Ok(Report {
                ok: false,
                read_data,
                buckets: 0,
                objects: 0,
                chunks: 0,
                unverified: Vec::new(),
                problems,
            });
        }
    };
    let mut c = Checker::new(root, store_id, chunk_size, keys, read_data);
    c.report.problems = problems;
    c.check_tree(progress)?;
    Ok(c.finish())
}

fn clone_err(e: &Error) -> Error {
    Error::Corrupt(e.to_string())
}

fn problem(object: &str, kind: ProblemKind, detail: &str) -> Problem {
    Problem {
        object: object.to_string(),
        kind,
        detail: detail.to_string(),
    }
}

fn rel_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl<'a> Checker<'a> {
    fn new(root: &Path, store_id: Id16, chunk_size: u32, keys: Keys<'a>, read_data: bool) -> Self {
        Checker {
            root: root.to_path_buf(),
            store_id,
            geometry: Geometry::new(chunk_size),
            chunk_size,
            keys,
            read_data,
            report: Report {
                ok: true,
                read_data,
                buckets: 0,
                objects: 0,
                chunks: 0,
                unverified: Vec::new(),
                problems: Vec::new(),
            },
        }
    }

    fn problem(&mut self, object: &str, kind: ProblemKind, detail: &str) {
        self.report.problems.push(problem(object, kind, detail));
    }

    fn finish(mut self) -> Report {
        self.report.ok = self.report.problems.is_empty();
        self.report
    }

    fn check_config_file(&mut self, chunk_size: Option<u32>) {
        let read =
            fs::read(self.root.join(META_DIR).join("config.json")).map_err(|e| e.to_string());
        self.check_config_bytes(read, chunk_size);
    }

    /// The keystore as stored must still open with the sealing key of the open store.
    fn check_keystore_bytes(&mut self, store: &Store, read: std::result::Result<Vec<u8>, String>) {
        match read {
            Ok(b) => match store.keys().reopen(&b) {
                Ok(ks) => {
                    if ks.chunk_size() != store.chunk_size() {
                        self.problem(
                            ".envelopefs/keystore",
                            ProblemKind::Keystore,
                            "keystore on disk records another chunk size than the open store",
                        );
                    }
                }
                Err(e) => self.problem(
                    ".envelopefs/keystore",
                    ProblemKind::Keystore,
                    &format!("keystore on disk does not open with the mounted store's key: {e}"),
                ),
            },
            Err(e) => self.problem(
                ".envelopefs/keystore",
                ProblemKind::Keystore,
                &format!("cannot read: {e}"),
            ),
        }
    }

    /// The config as read (or why it could not be) must parse and agree with the open store.
    fn check_config_bytes(
        &mut self,
        read: std::result::Result<Vec<u8>, String>,
        chunk_size: Option<u32>,
    ) {
        match read {
            Ok(b) => match StoreConfig::parse(&b) {
                Ok(c) => {
                    if c.store_id_bytes() != Some(self.store_id) {
                        self.problem(
                            ".envelopefs/config.json",
                            ProblemKind::Config,
                            "store id differs from the open store's",
                        );
                    }
                    if let Some(cs) = chunk_size {
                        if cs != c.chunk_size {
                            self.problem(
                                ".envelopefs/config.json",
                                ProblemKind::Config,
                                &format!(
                                    "chunk size {} differs from the open store's {cs}",
                                    c.chunk_size
                                ),
                            );
                        }
                    }
                }
                Err(e) => self.problem(
                    ".envelopefs/config.json",
                    ProblemKind::Config,
                    &e.to_string(),
                ),
            },
            Err(e) => self.problem(
                ".envelopefs/config.json",
                ProblemKind::Config,
                &format!("cannot read: {e}"),
            ),
        }
    }

    /// Buckets, then every object of every bucket, then the work-request files.
    fn check_tree(&mut self, progress: ProgressFn<'_>) -> Result<()> {
        let mut buckets: Vec<(PathBuf, BucketRecord)> = Vec::new();
        let entries = fs::read_dir(&self.root)
            .map_err(|e| Error::io(format!("listing {}", self.root.display()), e))?;
        let mut names: Vec<(std::ffi::OsString, fs::FileType)> = Vec::new();
        for e in entries {
            let e = e.map_err(|e| Error::io("listing the store", e))?;
            let ft = e
                .file_type()
                .map_err(|e| Error::io("listing the store", e))?;
            names.push((e.file_name(), ft));
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, ft) in names {
            if name.as_bytes() == META_DIR.as_bytes() {
                continue;
            }
            let rel = PathBuf::from(&name);
            if !ft.is_dir() {
                self.problem(
                    &rel_text(&rel),
                    ProblemKind::StrayEntry,
                    "an entry at the top of the store that is not a bucket directory",
                );
                continue;
            }
            self.report.buckets += 1;
            match xattr::get(&self.root.join(&rel), xattr::BUCKET.as_bytes()) {
                Ok(Some(b)) => match BucketRecord::decode(&b) {
                    Ok(r) => {
                        if let Some(k) = r.kms_key_id {
                            if self.keys.has_key(&k) == Some(false) {
                                self.problem(
                                    &rel_text(&rel),
                                    ProblemKind::KeyMissing,
                                    &format!(
                                        "bucket is assigned master key {}, which is not in the keystore",
                                        key_id_text(&k)
                                    ),
                                );
                            }
                        }
                        buckets.push((rel, r));
                    }
                    Err(e) => {
                        let kind = if matches!(e, Error::UnsupportedVersion(_)) {
                            ProblemKind::BucketRecordVersion
                        } else {
                            ProblemKind::BucketRecord
                        };
                        self.problem(&rel_text(&rel), kind, &e.to_string());
                    }
                },
                Ok(None) => self.problem(
                    &rel_text(&rel),
                    ProblemKind::BucketRecordMissing,
                    "directory has no bucket record (user.envelopefs.bucket)",
                ),
                Err(e) => self.problem(
                    &rel_text(&rel),
                    ProblemKind::Io,
                    &format!("reading the bucket record: {e}"),
                ),
            }
        }
        // Objects of buckets whose record is unreadable cannot be unwrapped; they are still
        // parsed (headers, preambles, sizes).
        let mut objects: Vec<(PathBuf, Option<usize>)> = Vec::new();
        let mut all_dirs: Vec<(PathBuf, Option<usize>)> = buckets
            .iter()
            .enumerate()
            .map(|(i, (p, _))| (p.clone(), Some(i)))
            .collect();
        for p in &self.report.problems {
            if matches!(
                p.kind,
                ProblemKind::BucketRecordMissing
                    | ProblemKind::BucketRecord
                    | ProblemKind::BucketRecordVersion
            ) {
                all_dirs.push((PathBuf::from(&p.object), None));
            }
        }
        for (dir, bi) in all_dirs {
            for rel in crate::store::local::walk_files(&self.root.join(&dir))? {
                objects.push((dir.join(rel), bi));
            }
        }
        let total = objects.len() as u64;
        progress(0, total);
        for (n, (rel, bi)) in objects.iter().enumerate() {
            self.report.objects += 1;
            let bucket = bi.and_then(|i| buckets.get(i)).map(|(_, r)| r.clone());
            if let Err(e) = self.check_object(rel, bucket.as_ref()) {
                self.problem(&rel_text(rel), ProblemKind::Io, &e.to_string());
            }
            progress(n as u64 + 1, total);
        }
        self.check_work_requests();
        Ok(())
    }

    /// A bucket assigned a master key the keystore does not have.
    fn check_bucket_key(&mut self, object: &str, r: &BucketRecord) {
        if let Some(k) = r.kms_key_id {
            if self.keys.has_key(&k) == Some(false) {
                self.problem(
                    object,
                    ProblemKind::KeyMissing,
                    &format!(
                        "bucket is assigned master key {}, which is not in the keystore",
                        key_id_text(&k)
                    ),
                );
            }
        }
    }

    /// A work-request record must parse.
    fn check_work_request_bytes(&mut self, rel: &str, bytes: &[u8]) {
        if let Err(why) = serde_json::from_slice::<crate::ops::workreq::WorkRequest>(bytes) {
            self.problem(
                rel,
                ProblemKind::WorkRequest,
                &format!("work request file does not parse: {why}"),
            );
        }
    }

    fn check_work_requests(&mut self) {
        let dir = self.root.join(META_DIR).join("work-requests");
        let Ok(it) = fs::read_dir(&dir) else {
            return;
        };
        for e in it.flatten() {
            let name = e.file_name();
            let n = name.to_string_lossy();
            if !n.ends_with(".json") || n.starts_with('.') {
                continue;
            }
            let rel = format!(".envelopefs/work-requests/{n}");
            let parsed = fs::read(e.path()).map_err(|e| e.to_string()).and_then(|b| {
                serde_json::from_slice::<crate::ops::workreq::WorkRequest>(&b)
                    .map(drop)
                    .map_err(|e| e.to_string())
            });
            if let Err(why) = parsed {
                self.problem(
                    &rel,
                    ProblemKind::WorkRequest,
                    &format!("work request file does not parse: {why}"),
                );
            }
        }
    }

    fn check_object(&mut self, rel: &Path, bucket: Option<&BucketRecord>) -> Result<()> {
        let what = rel_text(rel);
        let path = self.root.join(rel);
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOATIME)
            .open(&path)
            .or_else(|_| {
                OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
            });
        let file = match file {
            Ok(f) => f,
            // Removed by the running mount since the walk: nothing to check.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("opening {what}"), e)),
        };
        self.check_blob(&what, &file, "user.envelopefs.header", bucket)
    }

    /// Checks one opened object (a local backing file, or an object of an object store):
    /// its header (`header_name` says where it is kept, for the message), its data preamble,
    /// its size, the unwrap of its data key and, with `read_data`, every chunk.
    fn check_blob(
        &mut self,
        what: &str,
        blob: &dyn Blob,
        header_name: &str,
        bucket: Option<&BucketRecord>,
    ) -> Result<()> {
        let what = what.to_string();
        let header = match blob.header(&what)? {
            None => {
                self.problem(
                    &what,
                    ProblemKind::HeaderMissing,
                    &format!("object has no header ({header_name})"),
                );
                None
            }
            Some(b) => match ObjectHeader::decode(&b) {
                Ok(h) => Some(h),
                Err(e) => {
                    let kind = if matches!(e, Error::UnsupportedVersion(_)) {
                        ProblemKind::HeaderVersion
                    } else {
                        ProblemKind::HeaderCorrupt
                    };
                    self.problem(&what, kind, &format!("{e} ({} bytes)", b.len()));
                    None
                }
            },
        };
        let mut pre = [0u8; chunk::PREAMBLE_LEN as usize];
        let got = blob.read_body(&mut pre, 0, &what)?;
        let object_id = match chunk::parse_preamble(&pre[..got]) {
            Ok(id) => Some(id),
            Err(m) => {
                self.problem(&what, ProblemKind::Preamble, &m);
                None
            }
        };
        let len = blob.len(&what)?;
        let size = self.geometry.plain_len(len);
        if size.is_none() {
            self.problem(
                &what,
                ProblemKind::Size,
                &format!("backing size {len} is not a valid object size (truncated or padded)"),
            );
        }
        let (Some(h), Some(oid)) = (header, object_id) else {
            return Ok(());
        };
        if h.chunk_size != self.chunk_size {
            self.problem(
                &what,
                ProblemKind::HeaderCorrupt,
                &format!(
                    "header chunk size {} differs from the store's {}",
                    h.chunk_size, self.chunk_size
                ),
            );
            return Ok(());
        }
        if h.object_id != oid {
            self.problem(
                &what,
                ProblemKind::ObjectIdMismatch,
                "header names another object than the data preamble (moved or copied header)",
            );
            return Ok(());
        }
        let Some(bucket) = bucket else {
            return Ok(());
        };
        let kek = match &h.wrapping {
            Wrapping::Master { key_id, version } => match self.keys.kek(key_id, *version) {
                None => return Ok(()),
                Some(k) => k,
            },
            Wrapping::Customer { fingerprint } => Kek::Skip(format!(
                "wrapped under customer-provided key {}",
                hex(&fingerprint[..8])
            )),
        };
        let kek = match kek {
            Kek::Key(k) => k,
            Kek::Skip(reason) => {
                self.report.unverified.push(Unverified {
                    object: what,
                    reason,
                });
                return Ok(());
            }
            Kek::Missing(m) => {
                self.problem(&what, ProblemKind::KeyMissing, &m);
                return Ok(());
            }
        };
        let ctx = dek_context(
            &self.store_id,
            &bucket.bucket_id,
            &oid,
            h.created_ns,
            &h.wrapping,
        );
        let wrapped: &[u8; WRAPPED_DEK_LEN] = &h.wrapped_dek;
        let Some(dek) = crypto::unwrap_dek(&kek, &h.wrap_nonce, &ctx, wrapped) else {
            self.problem(
                &what,
                ProblemKind::HeaderUnwrap,
                "the data key does not unwrap (tampered header, or moved from another bucket or store)",
            );
            return Ok(());
        };
        if let (true, Some(size)) = (self.read_data, size) {
            self.read_chunks(blob, &what, &dek, &oid, size)?;
        }
        Ok(())
    }

    /// Authenticates every chunk, reading the body in batches of at most 4 MiB (one ranged
    /// GET each in an object store): memory stays bounded whatever the object's size.
    fn read_chunks(
        &mut self,
        blob: &dyn Blob,
        what: &str,
        dek: &Key32,
        oid: &Id16,
        size: u64,
    ) -> Result<()> {
        let g = self.geometry;
        let cipher = ChunkCipher::new(dek)?;
        let last = g.final_index(size);
        let per_batch = ((4u64 << 20) / g.stride()).max(1);
        let mut buf = zeroize::Zeroizing::new(Vec::new());
        let mut j0 = 0u64;
        while j0 <= last {
            let j1 = (j0 + per_batch - 1).min(last);
            let start = g.backing_offset(j0);
            let end = g.backing_offset(j1) + CHUNK_OVERHEAD + g.chunk_plain_len(j1, size);
            let need = usize::try_from(end - start).unwrap_or(usize::MAX);
            buf.resize(need, 0);
            let got = blob.read_body(&mut buf[..need], start, what)?;
            for j in j0..=j1 {
                self.report.chunks += 1;
                let plen = usize::try_from(g.chunk_plain_len(j, size)).unwrap_or(usize::MAX);
                let rel = usize::try_from(g.backing_offset(j) - start).unwrap_or(usize::MAX);
                let slot_len = NONCE_LEN + plen + TAG_LEN;
                if rel.saturating_add(slot_len) > got {
                    self.problem(
                        what,
                        ProblemKind::Chunk,
                        &format!("chunk {j}: backing file is shorter than its chunks"),
                    );
                    return Ok(());
                }
                let slot = &mut buf[rel..rel + slot_len];
                let (nonce, rest) = slot.split_at_mut(NONCE_LEN);
                let (ct, tag) = rest.split_at_mut(plen);
                let aad = chunk_aad(oid, j, j == last);
                if !cipher.decrypt(nonce, &aad, ct, tag) {
                    self.problem(
                        what,
                        ProblemKind::Chunk,
                        &format!("chunk {j} failed authentication"),
                    );
                }
            }
            j0 = j1 + 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kinds as fsck has always printed them.
    const TODAY: [(ProblemKind, &str); 20] = [
        (ProblemKind::Config, "config"),
        (ProblemKind::Keystore, "keystore"),
        (ProblemKind::StrayEntry, "stray-entry"),
        (ProblemKind::BucketRecordMissing, "bucket-record-missing"),
        (ProblemKind::BucketRecord, "bucket-record"),
        (ProblemKind::BucketRecordVersion, "bucket-record-version"),
        (ProblemKind::HeaderMissing, "header-missing"),
        (ProblemKind::HeaderCorrupt, "header-corrupt"),
        (ProblemKind::HeaderVersion, "header-version"),
        (ProblemKind::Preamble, "preamble"),
        (ProblemKind::ObjectIdMismatch, "object-id-mismatch"),
        (ProblemKind::HeaderUnwrap, "header-unwrap"),
        (ProblemKind::KeyMissing, "key-missing"),
        (ProblemKind::Size, "size"),
        (ProblemKind::Chunk, "chunk"),
        (ProblemKind::WorkRequest, "work-request"),
        (ProblemKind::InterruptedWrite, "interrupted-write"),
        (ProblemKind::Journal, "journal"),
        (ProblemKind::Io, "io"),
        (ProblemKind::UnfinishedUpload, "unfinished-upload"),
    ];

    #[test]
    fn problem_kinds_serialize_as_they_always_have() {
        crate::ops::test_support::assert_strings_as_today(&TODAY, ProblemKind::ALL);
        let p = problem("b/o", ProblemKind::ObjectIdMismatch, "d");
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"object": "b/o", "kind": "object-id-mismatch", "detail": "d"})
        );
    }

    /// A work-request record of a newer version (an operation type this one does not know)
    /// is a problem, and the detail says what was not understood.
    #[test]
    fn a_work_request_this_version_does_not_parse_is_a_problem_that_says_why() {
        let (_dir, root, store) = crate::ops::test_support::temp_store(5);
        store.create_bucket("b", Some("default"), 0o755).unwrap();
        let wr = crate::ops::workreq::accept(&store, "b", None).unwrap();
        assert!(check_store(&store, false, &mut |_, _| {}).unwrap().ok);
        let path = root.join(format!(".envelopefs/work-requests/{}.json", wr.id));
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace("REENCRYPT_BUCKET", "SHRED_BUCKET")).unwrap();
        let r = check_store(&store, false, &mut |_, _| {}).unwrap();
        assert!(!r.ok);
        let [p] = &r.problems[..] else {
            panic!("one problem: {:?}", r.problems)
        };
        assert_eq!(p.kind, ProblemKind::WorkRequest);
        assert_eq!(
            p.object,
            format!(".envelopefs/work-requests/{}.json", wr.id)
        );
        assert!(p.detail.contains("SHRED_BUCKET"), "{}", p.detail);
    }

    /// docs/ERRORS.md explains every kind fsck can print, and no other.
    #[test]
    fn the_errors_doc_lists_exactly_the_problem_kinds() {
        let doc = include_str!("../../docs/ERRORS.md");
        let section = doc
            .split("\n## fsck problem kinds\n")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("docs/ERRORS.md has a section \"fsck problem kinds\"");
        let mut documented: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix('|'))
            .filter_map(|l| l.split('|').next())
            .map(str::trim)
            .filter(|c| *c != "kind" && !c.starts_with("---"))
            .flat_map(|c| c.split(','))
            .map(str::trim)
            .collect();
        documented.sort_unstable();
        let mut kinds: Vec<&str> = ProblemKind::ALL.iter().map(|k| k.as_str()).collect();
        kinds.sort_unstable();
        assert_eq!(documented, kinds);
    }
}
