//! The store: config, keystore, buckets and objects, wherever they live. Knows nothing of
//! FUSE. Everything above this layer reaches the bytes through [`Store`], whose backend is
//! one of the storage seam's implementations ([`seam`]): a local directory ([`local`]) or an
//! S3-compatible object store ([`s3`]).

pub mod fsutil;
pub mod journal;
pub mod local;
pub mod local_names;
pub mod lock;
pub mod names;
pub mod object;
pub mod s3;
pub mod seam;
pub mod trash;
pub mod xattr;

pub use lock::{mount_record, StoreLock};

use crate::error::{Error, IoContext, Result};
use crate::format::chunk::{valid_chunk_size, Geometry};
use crate::format::config::StoreConfig;
use crate::format::records::BucketRecord;
use crate::format::{hex, Id16};
use crate::keys::crypto::Key32;
use crate::keys::keystore::{key_id_text, now_s, KeyStore, Secret};
use crate::sync::RwLockUnpoisoned;
use local::LocalDir;
use seam::{Backend, Blob, Record, Save};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Name of the reserved metadata directory (in the store and in the mount).
pub const META_DIR: &str = ".envelopefs";
/// Default chunk size for new stores (chosen by measurement: docs/CHUNK-SIZE.md).
pub const DEFAULT_CHUNK_SIZE: u32 = 4096;
/// Mode of the store's own directories (`.envelopefs` and those below it), whatever the umask.
pub const META_DIR_MODE: u32 = 0o700;
/// Mode of the store's own files (config, keystore, lock, records, logs), whatever the umask.
pub const META_FILE_MODE: u32 = 0o600;
/// Mode of a store directory `init` creates (it is the mount's root), whatever the umask.
pub const ROOT_DIR_MODE: u32 = 0o755;
/// Mode of buckets, prefixes and objects that commands create (`bucket create`,
/// `object put`), whatever the umask; the mount keeps the modes its callers ask for.
pub const BUCKET_DIR_MODE: u32 = 0o755;
/// See [`BUCKET_DIR_MODE`].
pub const OBJECT_FILE_MODE: u32 = 0o644;

/// Creates the store's own directories below `meta` (and `meta` itself), or puts their mode
/// right in a store an older version made.
fn ensure_meta_dirs(meta: &Path) -> Result<()> {
    for d in [
        meta.to_path_buf(),
        meta.join("work-requests"),
        meta.join("tmp"),
    ] {
        fsutil::ensure_dir(&d, META_DIR_MODE).ctx(|| format!("creating {}", d.display()))?;
    }
    Ok(())
}

/// Validates a bucket name: the rules in the README ("The mount").
pub fn validate_bucket_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > 255
        || name.contains('/')
        || name.contains('\0')
        || name == "."
        || name == ".."
        || name == META_DIR;
    if bad {
        return Err(Error::InvalidArgument(format!(
            "invalid bucket name {name:?}: 1-255 bytes, no '/' or NUL, not '.', '..' or '{META_DIR}'"
        )));
    }
    Ok(())
}

/// Validates an object name (`a/b/c`): no empty, `.` or `..` component, no NUL, each
/// component at most 255 bytes.
pub fn validate_object_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.contains('\0')
        || name.starts_with('/')
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.len() > 255);
    if bad {
        return Err(Error::InvalidArgument(format!(
            "invalid object name {name:?}: '/'-separated components, none empty, '.', '..' or over 255 bytes"
        )));
    }
    Ok(())
}

/// An open store.
pub struct Store {
    backend: Arc<dyn Backend>,
    /// What only a local store has: its directory (the vfs's names), journal and lock.
    local: Option<LocalParts>,
    store_id: Id16,
    geometry: Geometry,
    chunk_size: u32,
    keys: RwLock<KeyStore>,
    /// What keeps other writers out while the store is open, where that is not the local
    /// lock (an object store's lease); released when the store is dropped.
    _guard: Option<Box<dyn std::any::Any + Send + Sync>>,
    /// The names a mount uses, where the backend is not a local directory (an object
    /// store's: [`s3::names::S3Names`]).
    names: Option<Arc<dyn names::Names>>,
}

/// The parts of an open store that only a local directory has.
struct LocalParts {
    dir: Arc<LocalDir>,
    /// The write journal (None if it could not be created, say on a full disk).
    journal: Option<Arc<journal::Journal>>,
    /// Interrupted writes undone when the store was opened.
    recovered_writes: usize,
    _lock: StoreLock,
}

/// Writes a new store's keystore and config records through `backend`.
fn init_records(backend: &dyn Backend, chunk_size: u32, secret: &Secret) -> Result<StoreConfig> {
    if !valid_chunk_size(chunk_size) {
        return Err(Error::InvalidArgument(format!(
            "chunk size {chunk_size} must be a power of two from 4096 to 1048576"
        )));
    }
    let store_id: Id16 = crate::keys::crypto::random_array()?;
    let ks = KeyStore::create(store_id, chunk_size, secret)?;
    backend.write_record(Record::Keystore, &ks.seal()?, Save::Durable)?;
    let key_source = match secret {
        Secret::Passphrase(_) => "passphrase",
        Secret::KeyFile(_) => "keyfile",
    };
    let cfg = StoreConfig::new(&store_id, chunk_size, key_source, now_s());
    // The config last: a store is one once its config is there.
    backend.write_record(Record::Config, &cfg.to_bytes(), Save::Durable)?;
    Ok(cfg)
}

impl Store {
    /// Creates a store in `root` (absent or an empty directory).
    pub fn init(root: &Path, chunk_size: u32, secret: &Secret) -> Result<()> {
        if !valid_chunk_size(chunk_size) {
            return Err(Error::InvalidArgument(format!(
                "chunk size {chunk_size} must be a power of two from 4096 to 1048576"
            )));
        }
        match fs::read_dir(root) {
            Ok(mut it) => {
                if it.next().is_some() {
                    if root.join(META_DIR).join("config.json").exists() {
                        return Err(Error::AlreadyExists(format!(
                            "{} is already an envelopefs store",
                            root.display()
                        )));
                    }
                    return Err(Error::AlreadyExists(format!(
                        "{} is not empty: a store must be created in a new or empty directory",
                        root.display()
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fsutil::create_dir_all_exact(root, ROOT_DIR_MODE)
                    .ctx(|| format!("creating {}", root.display()))?;
            }
            Err(e) => return Err(Error::io(format!("reading {}", root.display()), e)),
        }
        check_xattr_support(root)?;
        ensure_meta_dirs(&root.join(META_DIR))?;
        init_records(&LocalDir::new(root), chunk_size, secret).map(drop)
    }

    /// Makes a local directory ready to receive a store copied into it (`store copy`):
    /// created if missing (mode [`ROOT_DIR_MODE`]), its filesystem checked for `user.*`
    /// xattrs, `.envelopefs/` and the directories below it made. Writes no record: the
    /// caller has checked that `root` is new, empty, or a copy of the same store.
    pub fn prepare_local_root(root: &Path) -> Result<()> {
        if !root.exists() {
            fsutil::create_dir_all_exact(root, ROOT_DIR_MODE)
                .ctx(|| format!("creating {}", root.display()))?;
        }
        check_xattr_support(root)?;
        ensure_meta_dirs(&root.join(META_DIR))
    }

    /// Creates a store on a backend that holds nothing of a store yet (an object store's
    /// prefix): AlreadyExists if it has a config.
    pub fn init_on(backend: &dyn Backend, chunk_size: u32, secret: &Secret) -> Result<StoreConfig> {
        if backend.read_record(Record::Config)?.is_some() {
            return Err(Error::AlreadyExists(format!(
                "{} is already an envelopefs store",
                backend.location()
            )));
        }
        init_records(backend, chunk_size, secret)
    }

    /// Reads the config of the local store at `root` (no secret needed).
    pub fn read_config(root: &Path) -> Result<StoreConfig> {
        Self::read_config_from(&LocalDir::new(root))
    }

    /// Reads a store's config through its backend (no secret needed).
    pub fn read_config_from(backend: &dyn Backend) -> Result<StoreConfig> {
        match backend.read_record(Record::Config)? {
            Some(bytes) => StoreConfig::parse(&bytes),
            None => Err(Error::NotFound(format!(
                "{} is not an envelopefs store",
                backend.location()
            ))),
        }
    }

    /// Opens the local store at `root`, whose lock the caller holds.
    pub fn open(root: &Path, lock: StoreLock, secret: &Secret) -> Result<Self> {
        let dir = Arc::new(LocalDir::new(root));
        let (cfg, store_id, ks) = Self::unseal(&*dir, secret)?;
        let meta = dir.meta().to_path_buf();
        ensure_meta_dirs(&meta)?;
        let geometry = Geometry::new(cfg.chunk_size);
        // Undo what a crash interrupted before anything reads an object.
        let recovered_writes = journal::recover(root, &meta)?;
        let journal = match journal::Journal::create(&meta, geometry) {
            Ok(_) if crate::fault::enabled("no-journal") => None,
            Ok(j) => Some(Arc::new(j)),
            Err(e) => {
                tracing::warn!(
                    "no write journal ({e}): a crash during a write may leave a torn chunk"
                );
                None
            }
        };
        fsutil::clear_dir(&meta.join("tmp"))?;
        Ok(Store {
            backend: dir.clone(),
            local: Some(LocalParts {
                dir,
                journal,
                recovered_writes,
                _lock: lock,
            }),
            store_id,
            geometry,
            chunk_size: cfg.chunk_size,
            keys: RwLock::new(ks),
            _guard: None,
            names: None,
        })
    }

    /// Opens a store kept by a backend other than a local directory (an object store),
    /// holding `guard` (its single-writer lease) until the store is dropped.
    pub fn open_on(
        backend: Arc<dyn Backend>,
        guard: Option<Box<dyn std::any::Any + Send + Sync>>,
        secret: &Secret,
    ) -> Result<Self> {
        let (cfg, store_id, ks) = Self::unseal(&*backend, secret)?;
        Ok(Store {
            backend,
            local: None,
            store_id,
            geometry: Geometry::new(cfg.chunk_size),
            chunk_size: cfg.chunk_size,
            keys: RwLock::new(ks),
            _guard: guard,
            names: None,
        })
    }

    /// Reads the config and unseals the keystore, checking that they agree.
    fn unseal(backend: &dyn Backend, secret: &Secret) -> Result<(StoreConfig, Id16, KeyStore)> {
        let cfg = Self::read_config_from(backend)?;
        let store_id = cfg
            .store_id_bytes()
            .ok_or_else(|| Error::Corrupt("store config: bad store id".into()))?;
        let bytes = backend.read_record(Record::Keystore)?.ok_or_else(|| {
            Error::Corrupt(format!("{}: the keystore is missing", backend.location()))
        })?;
        let ks = KeyStore::unseal(&bytes, &store_id, secret)?;
        if ks.chunk_size() != cfg.chunk_size {
            return Err(Error::Corrupt(format!(
                "store config says chunk size {} but the keystore says {}: config was altered",
                cfg.chunk_size,
                ks.chunk_size()
            )));
        }
        Ok((cfg, store_id, ks))
    }

    /// Where the store's bytes live.
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// The local directory of a local store; Unsupported (naming `what`) for an object store.
    pub fn local(&self, what: &str) -> Result<&Arc<LocalDir>> {
        match &self.local {
            Some(l) => Ok(&l.dir),
            None => Err(Error::Unsupported(format!(
                "{what} is not supported on a store in an object store ({})",
                self.backend.location()
            ))),
        }
    }

    /// The names of the store's buckets, as the filesystem uses them (the names interface of
    /// the seam, [`names::Names`]); with `deferred_delete`, unlinked objects go to the trash
    /// first (locally). A store in an object store has the names it was given
    /// ([`Store::with_names`]); without them mounting it is Unsupported.
    pub fn names(&self, deferred_delete: bool) -> Result<Arc<dyn names::Names>> {
        if let Some(n) = &self.names {
            return Ok(Arc::clone(n));
        }
        let dir = self.local("mounting")?;
        Ok(Arc::new(local_names::LocalNames::new(
            Arc::clone(dir),
            deferred_delete,
        )))
    }

    /// Gives a store that is not a local directory the names its mount uses.
    pub fn with_names(mut self, names: Arc<dyn names::Names>) -> Self {
        self.names = Some(names);
        self
    }

    /// The local directory of a local store, None for an object store.
    pub fn local_dir(&self) -> Option<&Arc<LocalDir>> {
        self.local.as_ref().map(|l| &l.dir)
    }

    /// The write journal, if the store has one (see [`journal`]).
    pub fn journal(&self) -> Option<&Arc<journal::Journal>> {
        self.local.as_ref().and_then(|l| l.journal.as_ref())
    }

    /// How many writes interrupted by a crash were undone when the store was opened.
    pub fn recovered_writes(&self) -> usize {
        self.local.as_ref().map_or(0, |l| l.recovered_writes)
    }

    /// The store id.
    pub fn store_id(&self) -> &Id16 {
        &self.store_id
    }

    /// Chunk geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Plaintext bytes per chunk.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Read access to the keystore.
    pub fn keys(&self) -> RwLockReadGuard<'_, KeyStore> {
        self.keys.read_unpoisoned()
    }

    /// Changes the keystore and persists it atomically. If persisting fails, the change is
    /// rolled back in memory too.
    pub fn update_keys<T>(&self, f: impl FnOnce(&mut KeyStore) -> Result<T>) -> Result<T> {
        let mut ks: RwLockWriteGuard<'_, KeyStore> = self.keys.write_unpoisoned();
        let before = ks.seal()?;
        let out = f(&mut ks)?;
        let after = ks.seal()?;
        if let Err(e) = self
            .backend
            .write_record(Record::Keystore, &after, Save::Durable)
        {
            if let Ok(restored) = ks.reopen(&before) {
                *ks = restored;
            }
            return Err(e);
        }
        Ok(out)
    }

    /// Resolves an object named by bucket and name, the one way every command does: the
    /// name is checked, the bucket's record read (ENOENT if there is no such bucket), the
    /// label `bucket/name` made. Nothing is opened: see [`ObjectRef::open`].
    pub fn object_ref(&self, bucket_name: &str, name: &str) -> Result<ObjectRef> {
        validate_object_name(name)?;
        let bucket = self.bucket(bucket_name)?;
        Ok(ObjectRef {
            bucket,
            bucket_name: bucket_name.to_string(),
            name: PathBuf::from(name),
            what: format!("{bucket_name}/{name}"),
        })
    }

    /// Opens an object of a bucket through the backend.
    pub fn open_object(&self, bucket_name: &str, name: &Path, what: &str) -> Result<Box<dyn Blob>> {
        self.backend.open_object(bucket_name, name, what)
    }

    /// Reads a bucket's record. ENOENT if there is no such bucket.
    pub fn bucket(&self, name: &str) -> Result<BucketRecord> {
        validate_bucket_name(name)?;
        self.backend.read_bucket(name)
    }

    /// All buckets, sorted by name. Names without a readable record are skipped with a
    /// warning (fsck reports them).
    pub fn buckets(&self) -> Result<Vec<(String, BucketRecord)>> {
        let mut out = Vec::new();
        for name in self.backend.bucket_names()? {
            match self.backend.read_bucket(&name) {
                Ok(r) => out.push((name, r)),
                Err(err) => tracing::warn!("skipping {name:?}: {err}"),
            }
        }
        Ok(out)
    }

    /// Resolves a key reference to a key id (ENOKEY if unknown).
    pub fn resolve_key(&self, key_ref: &str) -> Result<Id16> {
        Ok(self.keys().resolve(key_ref)?.id)
    }

    /// Creates a bucket: it appears only with its record.
    pub fn create_bucket(
        &self,
        name: &str,
        kms_key: Option<&str>,
        mode: u32,
    ) -> Result<BucketRecord> {
        validate_bucket_name(name)?;
        let key = kms_key.map(|k| self.resolve_key(k)).transpose()?;
        let rec = BucketRecord::new(crate::keys::crypto::random_array()?, key, now_s());
        self.backend.create_bucket(name, &rec, mode)?;
        Ok(rec)
    }

    /// Assigns (or with `None` removes) a bucket's master key.
    pub fn update_bucket(&self, name: &str, kms_key: Option<&str>) -> Result<BucketRecord> {
        let mut rec = self.bucket(name)?;
        rec.kms_key_id = kms_key.map(|k| self.resolve_key(k)).transpose()?;
        self.backend.replace_bucket(name, &rec)?;
        Ok(rec)
    }

    /// The master key a bucket's new objects are wrapped under.
    pub fn bucket_key(&self, rec: &BucketRecord) -> Id16 {
        rec.kms_key_id.unwrap_or_else(|| self.keys().default_key())
    }

    /// Bucket metadata: the reply of the `bucket` commands.
    pub fn describe_bucket(&self, name: &str, rec: &BucketRecord) -> BucketInfo {
        BucketInfo {
            created: rec.created_s,
            effective_key_id: key_id_text(&self.bucket_key(rec)),
            id: hex(&rec.bucket_id),
            kms_key_id: rec.kms_key_id.map(|k| key_id_text(&k)),
            name: name.to_string(),
        }
    }

    /// Durability barrier: everything written to the store before survives a power loss
    /// (syncfs locally; acknowledged writes are durable in an object store).
    pub fn sync_all(&self) -> Result<()> {
        self.backend.sync_all()
    }

    /// Lookup of the DEK-wrapping key for encryption: the bucket key's current version.
    pub fn wrapping_key_for(&self, rec: &BucketRecord) -> Result<(Id16, u32, Key32)> {
        let id = self.bucket_key(rec);
        let ks = self.keys();
        ks.check_allowed(&id, crate::keys::keystore::ops::ENCRYPT)?;
        let (v, k) = ks.current(&id)?;
        Ok((id, v, k))
    }
}

/// An object resolved by [`Store::object_ref`] (it may not exist).
#[derive(Debug, Clone)]
pub struct ObjectRef {
    /// Its bucket's record.
    pub bucket: BucketRecord,
    /// Its bucket's name.
    pub bucket_name: String,
    /// Its name in the bucket.
    pub name: PathBuf,
    /// `bucket/name`, for messages.
    pub what: String,
}

impl ObjectRef {
    /// Opens it read-only through the store's backend: ENOENT "no object bucket/name".
    pub fn open(&self, store: &Store) -> Result<Box<dyn Blob>> {
        store.open_object(&self.bucket_name, &self.name, &self.what)
    }
}

/// Opens a backing file read-only, not following a symlink, for its header and size
/// (xattrs are inode metadata: a rewrap needs no write access). ENOENT is "no object WHAT".
pub fn open_backing(path: &Path, what: &str) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOATIME)
        .open(path)
        .or_else(|_| {
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
        })
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(format!("no object {what}"))
            } else {
                Error::io(format!("opening {what}"), e)
            }
        })
}

/// A bucket's metadata as the `bucket` commands print it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BucketInfo {
    /// Creation time (seconds since the epoch).
    pub created: u64,
    /// The key its new objects are wrapped under (its own, or the store's default).
    pub effective_key_id: String,
    /// The bucket id (hex).
    pub id: String,
    /// Its assigned key, or null (it uses the store's default key).
    pub kms_key_id: Option<String>,
    /// Its name.
    pub name: String,
}

/// Reads and decodes a bucket directory's record.
pub fn read_bucket_record(dir: &Path, name: &str) -> Result<BucketRecord> {
    match xattr::get(dir, xattr::BUCKET.as_bytes()) {
        Ok(Some(b)) => BucketRecord::decode(&b),
        Ok(None) => {
            if dir.is_dir() {
                Err(Error::Corrupt(format!(
                    "directory {name:?} in the store has no bucket record"
                )))
            } else {
                Err(Error::NotFound(format!("no bucket {name:?}")))
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            Err(Error::NotFound(format!("no bucket {name:?}")))
        }
        Err(e) => Err(Error::io(format!("reading bucket {name:?}"), e)),
    }
}

/// Fails with a clear message if the filesystem under `dir` does not keep `user.*` xattrs.
pub fn check_xattr_support(dir: &Path) -> Result<()> {
    let probe = dir.join(".envelopefs-xattr-probe");
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(META_FILE_MODE)
        .open(&probe)
        .ctx(|| format!("writing in {}", dir.display()))?;
    let r = xattr::set(&probe, b"user.envelopefs.probe", b"1", 0)
        .and_then(|()| xattr::get(&probe, b"user.envelopefs.probe"));
    let _ = fs::remove_file(&probe);
    match r {
        Ok(Some(v)) if v == b"1" => Ok(()),
        Ok(_) => Err(Error::Unsupported(format!(
            "the filesystem of {} did not keep a user.* extended attribute; envelopefs needs one that does (ext4, xfs, btrfs, tmpfs)",
            dir.display()
        ))),
        Err(e) => Err(Error::Unsupported(format!(
            "the filesystem of {} does not support user.* extended attributes ({e}); envelopefs needs one that does (ext4, xfs, btrfs, tmpfs)",
            dir.display()
        ))),
    }
}
