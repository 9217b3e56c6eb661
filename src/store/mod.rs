//! The store on disk: config, keystore, lock, buckets. Knows nothing of FUSE.
//!
//! ```text
//! STORE/.envelopefs/   config.json, keystore, lock, mount.json, work-requests/, tmp/
//! STORE/BUCKET/        xattr user.envelopefs.bucket
//!   prefix/OBJECT      preamble + chunks; xattr user.envelopefs.header
//! ```

pub mod fsutil;
pub mod journal;
pub mod lock;
pub mod object;
pub mod s3;
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
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

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
    root: PathBuf,
    meta: PathBuf,
    store_id: Id16,
    geometry: Geometry,
    chunk_size: u32,
    keys: RwLock<KeyStore>,
    tmp_counter: AtomicU64,
    /// The write journal (None if it could not be created, say on a full disk).
    journal: Option<std::sync::Arc<journal::Journal>>,
    /// Interrupted writes undone when the store was opened.
    recovered_writes: usize,
    _lock: StoreLock,
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
        let meta = root.join(META_DIR);
        ensure_meta_dirs(&meta)?;
        let store_id: Id16 = crate::keys::crypto::random_array()?;
        let ks = KeyStore::create(store_id, chunk_size, secret)?;
        fsutil::write_atomic(&meta.join("keystore"), &ks.seal()?, META_FILE_MODE)?;
        let key_source = match secret {
            Secret::Passphrase(_) => "passphrase",
            Secret::KeyFile(_) => "keyfile",
        };
        let cfg = StoreConfig::new(&store_id, chunk_size, key_source, now_s());
        fsutil::write_atomic(&meta.join("config.json"), &cfg.to_bytes(), META_FILE_MODE)?;
        Ok(())
    }

    /// Reads the config (no secret needed).
    pub fn read_config(root: &Path) -> Result<StoreConfig> {
        let path = root.join(META_DIR).join("config.json");
        let bytes = fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(format!("{} is not an envelopefs store", root.display()))
            } else {
                Error::io(format!("reading {}", path.display()), e)
            }
        })?;
        StoreConfig::parse(&bytes)
    }

    /// Opens a store whose lock the caller holds.
    pub fn open(root: &Path, lock: StoreLock, secret: &Secret) -> Result<Self> {
        let cfg = Self::read_config(root)?;
        let store_id = cfg
            .store_id_bytes()
            .ok_or_else(|| Error::Corrupt("store config: bad store id".into()))?;
        let meta = root.join(META_DIR);
        let kpath = meta.join("keystore");
        let bytes = fs::read(&kpath).ctx(|| format!("reading {}", kpath.display()))?;
        let ks = KeyStore::unseal(&bytes, &store_id, secret)?;
        if ks.chunk_size() != cfg.chunk_size {
            return Err(Error::Corrupt(format!(
                "store config says chunk size {} but the keystore says {}: config was altered",
                cfg.chunk_size,
                ks.chunk_size()
            )));
        }
        ensure_meta_dirs(&meta)?;
        let geometry = Geometry::new(cfg.chunk_size);
        // Undo what a crash interrupted before anything reads an object.
        let recovered_writes = journal::recover(root, &meta)?;
        let journal = match journal::Journal::create(&meta, geometry) {
            Ok(_) if crate::fault::enabled("no-journal") => None,
            Ok(j) => Some(std::sync::Arc::new(j)),
            Err(e) => {
                tracing::warn!(
                    "no write journal ({e}): a crash during a write may leave a torn chunk"
                );
                None
            }
        };
        fsutil::clear_dir(&meta.join("tmp"))?;
        let store = Store {
            root: root.to_path_buf(),
            meta,
            store_id,
            geometry,
            chunk_size: cfg.chunk_size,
            keys: RwLock::new(ks),
            tmp_counter: AtomicU64::new(0),
            journal,
            recovered_writes,
            _lock: lock,
        };
        Ok(store)
    }

    /// The write journal, if the store has one (see [`journal`]).
    pub fn journal(&self) -> Option<&std::sync::Arc<journal::Journal>> {
        self.journal.as_ref()
    }

    /// How many writes interrupted by a crash were undone when the store was opened.
    pub fn recovered_writes(&self) -> usize {
        self.recovered_writes
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `STORE/.envelopefs`.
    pub fn meta(&self) -> &Path {
        &self.meta
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
        if let Err(e) = fsutil::write_atomic(&self.meta.join("keystore"), &after, META_FILE_MODE) {
            if let Ok(restored) = ks.reopen(&before) {
                *ks = restored;
            }
            return Err(e);
        }
        Ok(out)
    }

    /// A fresh temporary path in `STORE/.envelopefs/tmp` (same filesystem as the buckets).
    pub fn tmp_path(&self) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        self.meta
            .join("tmp")
            .join(format!("{}-{n}", std::process::id()))
    }

    /// The directory of a bucket.
    pub fn bucket_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Resolves an object named by bucket and name, the one way every command does: the
    /// name is checked, the bucket's record read (ENOENT if there is no such bucket), the
    /// backing path and the label `bucket/name` made. Nothing is opened: see
    /// [`ObjectRef::open`].
    pub fn object_ref(&self, bucket_name: &str, name: &str) -> Result<ObjectRef> {
        validate_object_name(name)?;
        let bucket = self.bucket(bucket_name)?;
        Ok(ObjectRef {
            bucket,
            path: self.bucket_dir(bucket_name).join(name),
            what: format!("{bucket_name}/{name}"),
        })
    }

    /// Reads a bucket's record. ENOENT if there is no such bucket.
    pub fn bucket(&self, name: &str) -> Result<BucketRecord> {
        validate_bucket_name(name)?;
        let dir = self.bucket_dir(name);
        read_bucket_record(&dir, name)
    }

    /// All buckets, sorted by name. Directories without a readable record are skipped
    /// with a warning (fsck reports them).
    pub fn buckets(&self) -> Result<Vec<(String, BucketRecord)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.root).ctx(|| format!("listing {}", self.root.display()))? {
            let e = e.ctx(|| "listing the store".to_string())?;
            let name = match e.file_name().into_string() {
                Ok(n) if n != META_DIR => n,
                _ => continue,
            };
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            match read_bucket_record(&e.path(), &name) {
                Ok(r) => out.push((name, r)),
                Err(err) => tracing::warn!("skipping {name:?}: {err}"),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Resolves a key reference to a key id (ENOKEY if unknown).
    pub fn resolve_key(&self, key_ref: &str) -> Result<Id16> {
        Ok(self.keys().resolve(key_ref)?.id)
    }

    /// Creates a bucket: the directory appears only with its record (built under tmp/).
    pub fn create_bucket(
        &self,
        name: &str,
        kms_key: Option<&str>,
        mode: u32,
    ) -> Result<BucketRecord> {
        validate_bucket_name(name)?;
        let key = kms_key.map(|k| self.resolve_key(k)).transpose()?;
        let rec = BucketRecord::new(crate::keys::crypto::random_array()?, key, now_s());
        let tmp = self.tmp_path();
        fsutil::mkdir_exact(&tmp, mode).ctx(|| format!("creating {}", tmp.display()))?;
        let done = xattr::set(&tmp, xattr::BUCKET.as_bytes(), &rec.encode(), 0)
            .ctx(|| "writing the bucket record".to_string())
            .and_then(|()| {
                fsutil::rename_noreplace(&tmp, &self.bucket_dir(name)).map_err(|e| {
                    if e.raw_os_error() == Some(libc::EEXIST) {
                        Error::AlreadyExists(format!("bucket {name:?} exists"))
                    } else {
                        Error::io(format!("creating bucket {name:?}"), e)
                    }
                })
            });
        if done.is_err() {
            let _ = fs::remove_dir(&tmp);
        }
        done.map(|()| rec)
    }

    /// Assigns (or with `None` removes) a bucket's master key.
    pub fn update_bucket(&self, name: &str, kms_key: Option<&str>) -> Result<BucketRecord> {
        let mut rec = self.bucket(name)?;
        rec.kms_key_id = kms_key.map(|k| self.resolve_key(k)).transpose()?;
        xattr::set(
            &self.bucket_dir(name),
            xattr::BUCKET.as_bytes(),
            &rec.encode(),
            libc::XATTR_REPLACE,
        )
        .ctx(|| format!("updating bucket {name:?}"))?;
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

    /// Forces everything written to the store's filesystem to disk (syncfs).
    pub fn sync_all(&self) -> Result<()> {
        let f = File::open(&self.root).ctx(|| format!("opening {}", self.root.display()))?;
        fsutil::syncfs(&f).ctx(|| "syncing the store's filesystem".to_string())
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
    /// Its backing file.
    pub path: PathBuf,
    /// `bucket/name`, for messages.
    pub what: String,
}

impl ObjectRef {
    /// Opens its backing file read-only ([`open_backing`]): ENOENT "no object bucket/name".
    pub fn open(&self) -> Result<File> {
        open_backing(&self.path, &self.what)
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
