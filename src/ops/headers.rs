//! Header backup: `headers export` writes every bucket record and object header of a store
//! to one JSON file; `headers import` puts back the ones that are missing.
//!
//! The records hold only wrapped keys, so the file is safe to keep with ordinary backups
//! (it does hold names: see docs/SECURITY.md). Its use: copies made by tools that drop
//! extended attributes (`cp -r`, many sync tools) lose every header and with it the data;
//! importing the backup into such a copy makes it readable again.
//!
//! Import never replaces a record or header that is there, and puts an object's header back
//! only if it names the object's data preamble and (when its key is usable) unwraps.

use crate::error::{Error, IoContext, Result};
use crate::format::chunk::PREAMBLE_LEN;
use crate::format::records::{BucketRecord, ObjectHeader};
use crate::format::{hex, unhex, Id16};
use crate::store::object::{self, NoCustomerKeys};
use crate::store::{fsutil, xattr, Store, META_DIR};
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// The `format` field of a header backup.
pub const BACKUP_FORMAT: &str = "envelopefs-headers";
/// The version of the backup file layout.
pub const BACKUP_VERSION: u32 = 1;
/// Largest backup file read (bytes).
pub const MAX_BACKUP_BYTES: u64 = 1 << 30;

/// One bucket's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BucketEntry {
    /// The bucket name, for people (lossy if it is not UTF-8).
    pub name: String,
    /// The bucket name's bytes in hex (what import uses).
    pub name_hex: String,
    /// The encoded bucket record, hex.
    pub record: String,
}

/// One object's header.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ObjectEntry {
    /// Path relative to the store (`bucket/prefix/name`), for people.
    pub path: String,
    /// The path's bytes in hex (what import uses).
    pub path_hex: String,
    /// The object id (hex), also in the header.
    pub object_id: String,
    /// The encoded header, hex.
    pub header: String,
}

/// The backup file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    /// Always [`BACKUP_FORMAT`].
    pub format: String,
    /// Always [`BACKUP_VERSION`].
    pub version: u32,
    /// The store id (hex); import refuses another store's backup.
    pub store_id: String,
    /// Unix seconds.
    pub created_s: u64,
    /// Bucket records.
    pub buckets: Vec<BucketEntry>,
    /// Object headers.
    pub objects: Vec<ObjectEntry>,
}

impl Backup {
    /// Parses and validates a backup file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Backup> {
        let b: Backup = serde_json::from_slice(bytes)
            .map_err(|e| Error::InvalidArgument(format!("header backup does not parse: {e}")))?;
        if b.format != BACKUP_FORMAT || b.version != BACKUP_VERSION {
            return Err(Error::InvalidArgument(format!(
                "not an envelopefs header backup of version {BACKUP_VERSION} (format {:?}, version {})",
                b.format, b.version
            )));
        }
        Ok(b)
    }
}

fn unhex_vec(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| {
            let hi = (p[0] as char).to_digit(16)?;
            let lo = (p[1] as char).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

/// A path from a backup, checked to stay inside the store and out of `.envelopefs`.
pub(crate) fn safe_rel(path_hex: &str, want_components: Option<usize>) -> Option<PathBuf> {
    let bytes = unhex_vec(path_hex)?;
    if bytes.is_empty() || bytes.contains(&0) {
        return None;
    }
    let p = PathBuf::from(OsStr::from_bytes(&bytes));
    let comps: Vec<Component<'_>> = p.components().collect();
    if comps.iter().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    if comps.first().map(|c| c.as_os_str().as_bytes()) == Some(META_DIR.as_bytes()) {
        return None;
    }
    match want_components {
        Some(n) if comps.len() != n => None,
        None if comps.len() < 2 => None,
        _ => Some(p),
    }
}

/// Collects the backup of a store (every decodable bucket record and object header).
pub fn collect(store: &Store) -> Result<(Backup, Vec<String>)> {
    let Some(dir) = store.local_dir() else {
        return collect_backend(store);
    };
    let root = dir.root();
    let mut skipped = Vec::new();
    let mut buckets = Vec::new();
    let mut objects = Vec::new();
    let mut tops: Vec<_> = fs::read_dir(root)
        .ctx(|| format!("listing {}", root.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.file_name())
        .filter(|n| n.as_bytes() != META_DIR.as_bytes())
        .collect();
    tops.sort();
    for name in tops {
        let rel = PathBuf::from(&name);
        let shown = rel.to_string_lossy().into_owned();
        match xattr::get(&root.join(&rel), xattr::BUCKET.as_bytes()) {
            Ok(Some(b)) if BucketRecord::decode(&b).is_ok() => buckets.push(BucketEntry {
                name: shown.clone(),
                name_hex: hex(name.as_bytes()),
                record: hex(&b),
            }),
            _ => {
                skipped.push(format!("{shown}: no readable bucket record"));
                continue;
            }
        }
        for obj in crate::store::local::walk_files(&root.join(&rel))? {
            let obj = rel.join(obj);
            let shown = obj.to_string_lossy().into_owned();
            let header = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(root.join(&obj))
                .and_then(|f| xattr::fget(&f, xattr::HEADER.as_bytes()))
                .map_err(|e| Error::io("reading the header", e));
            let path_bytes = obj.as_os_str().as_bytes().to_vec();
            file_header(header, shown, &path_bytes, &mut objects, &mut skipped);
        }
    }
    Ok((backup(store, buckets, objects), skipped))
}

/// Files what reading an object's header gave: its entry in the backup, or why it is left
/// out. An object removed since the listing (a running mount) is left out silently.
fn file_header(
    header: Result<Option<Vec<u8>>>,
    shown: String,
    path_bytes: &[u8],
    objects: &mut Vec<ObjectEntry>,
    skipped: &mut Vec<String>,
) {
    match header {
        Ok(Some(h)) => match ObjectHeader::decode(&h) {
            Ok(dec) => objects.push(ObjectEntry {
                path: shown,
                path_hex: hex(path_bytes),
                object_id: hex(&dec.object_id),
                header: hex(&h),
            }),
            Err(e) => skipped.push(format!("{shown}: {e}")),
        },
        Ok(None) => skipped.push(format!("{shown}: no header")),
        Err(e) if e.errno() == libc::ENOENT => {}
        Err(e) => skipped.push(format!("{shown}: reading the header: {e}")),
    }
}

/// The backup of `store` holding these entries, made now.
fn backup(store: &Store, buckets: Vec<BucketEntry>, objects: Vec<ObjectEntry>) -> Backup {
    Backup {
        format: BACKUP_FORMAT.into(),
        version: BACKUP_VERSION,
        store_id: hex(store.store_id()),
        created_s: crate::keys::keystore::now_s(),
        buckets,
        objects,
    }
}

/// A backup of a store without directories (an object store), through the storage seam:
/// every readable bucket record (as it is stored) and every decodable object header (the
/// bytes of its metadata).
fn collect_backend(store: &Store) -> Result<(Backup, Vec<String>)> {
    let backend = store.backend();
    let mut skipped = Vec::new();
    let mut buckets = Vec::new();
    let mut objects = Vec::new();
    for name in backend.bucket_names()? {
        match backend.read_bucket(&name) {
            Ok(rec) => buckets.push(BucketEntry {
                name: name.clone(),
                name_hex: hex(name.as_bytes()),
                record: hex(&rec.encode()),
            }),
            // Removed since it was listed.
            Err(Error::NotFound(_)) => continue,
            Err(_) => {
                skipped.push(format!("{name}: no readable bucket record"));
                continue;
            }
        }
        for obj in backend.object_names(&name)? {
            let shown = format!("{name}/{}", obj.display());
            let header = backend
                .open_object(&name, &obj, &shown)
                .and_then(|b| b.header(&shown));
            let path_bytes = shown.as_bytes().to_vec();
            file_header(header, shown, &path_bytes, &mut objects, &mut skipped);
        }
    }
    Ok((backup(store, buckets, objects), skipped))
}

/// `headers import` into a store without directories (an object store): a bucket record
/// is put back where objects lie under its name but the record is gone, an object header
/// where the object has none (a copy onto itself with the header as its metadata,
/// conditional on the ETag read, so a concurrent change of the object is not overwritten).
/// The same checks as locally: the header must name the object's data preamble and, when
/// its key is usable, unwrap.
fn import_backend(store: &Store, backup: &Backup) -> Result<ImportSummary> {
    let backend = store.backend();
    let mut s = ImportSummary::default();
    for b in &backup.buckets {
        let name = safe_rel(&b.name_hex, Some(1))
            .and_then(|p| p.to_str().map(str::to_string))
            .filter(|n| crate::store::validate_bucket_name(n).is_ok());
        let Some(name) = name else {
            s.refused.push(format!("bucket {:?}: bad name", b.name));
            continue;
        };
        let Some(rec) = unhex_vec(&b.record).and_then(|r| BucketRecord::decode(&r).ok()) else {
            s.refused.push(format!("bucket {:?}: bad record", b.name));
            continue;
        };
        match backend.read_bucket(&name) {
            // A damaged record is there too: import never replaces one.
            Ok(_) | Err(Error::Corrupt(_)) | Err(Error::UnsupportedVersion(_)) => {
                s.buckets_present += 1
            }
            Err(Error::NotFound(_)) => {
                // A bucket is its record: put it back only where its objects are.
                if backend.object_names(&name)?.is_empty() {
                    s.not_in_store += 1;
                } else {
                    backend.create_bucket(&name, &rec, crate::store::BUCKET_DIR_MODE)?;
                    s.buckets_restored += 1;
                }
            }
            Err(e) => return Err(e),
        }
    }
    for o in &backup.objects {
        match import_object_backend(store, o) {
            Ok(Restore::Restored) => s.headers_restored += 1,
            Ok(Restore::Present) => s.headers_present += 1,
            Ok(Restore::Absent) => s.not_in_store += 1,
            Ok(Restore::Refused(why)) => s.refused.push(format!("{}: {why}", o.path)),
            Err(e) => return Err(e),
        }
    }
    Ok(s)
}

fn import_object_backend(store: &Store, o: &ObjectEntry) -> Result<Restore> {
    let Some(rel) = safe_rel(&o.path_hex, None) else {
        return Ok(Restore::Refused("bad path".into()));
    };
    let Some((bucket_name, name)) = rel.to_str().and_then(|p| p.split_once('/')) else {
        return Ok(Restore::Refused(
            "an object store keeps only UTF-8 names".into(),
        ));
    };
    let Some(bytes) = unhex_vec(&o.header) else {
        return Ok(Restore::Refused("header is not hex".into()));
    };
    let header = match ObjectHeader::decode(&bytes) {
        Ok(h) => h,
        Err(e) => return Ok(Restore::Refused(e.to_string())),
    };
    let blob = match store
        .backend()
        .open_object(bucket_name, Path::new(name), &o.path)
    {
        Ok(b) => b,
        Err(Error::NotFound(_)) => return Ok(Restore::Absent),
        Err(e) => return Err(e),
    };
    if blob.header(&o.path)?.is_some() {
        return Ok(Restore::Present);
    }
    let mut pre = [0u8; PREAMBLE_LEN as usize];
    let n = blob.read_body(&mut pre, 0, &o.path)?;
    let oid: Id16 = match crate::format::chunk::parse_preamble(&pre[..n]) {
        Ok(id) => id,
        Err(m) => return Ok(Restore::Refused(m)),
    };
    if oid != header.object_id {
        return Ok(Restore::Refused(
            "the header is of another object than the object's data".into(),
        ));
    }
    if let Ok(bucket) = store.backend().read_bucket(bucket_name) {
        match object::unwrap_header(store, &bucket, &oid, &header, &NoCustomerKeys, &o.path) {
            Ok(_) | Err(Error::NoKey(_)) | Err(Error::PermissionDenied(_)) => {}
            Err(e) => return Ok(Restore::Refused(e.to_string())),
        }
    }
    blob.add_header(&bytes, &o.path)?;
    Ok(Restore::Restored)
}

/// `headers export --out F`: writes the backup (mode 0600, atomically) and returns a summary.
pub fn export(store: &Store, out: &Path) -> Result<ExportSummary> {
    if !out.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "--out {} must be an absolute path here",
            out.display()
        )));
    }
    let (backup, skipped) = collect(store)?;
    let mut bytes = serde_json::to_vec_pretty(&backup)
        .map_err(|e| Error::InvalidArgument(format!("encoding the backup: {e}")))?;
    bytes.push(b'\n');
    fsutil::write_atomic(out, &bytes, 0o600)?;
    Ok(ExportSummary {
        buckets: backup.buckets.len(),
        file: out.display().to_string(),
        objects: backup.objects.len(),
        skipped,
    })
}

/// What export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    /// Bucket records written.
    pub buckets: usize,
    /// The backup file.
    pub file: String,
    /// Object headers written.
    pub objects: usize,
    /// Objects left out (with the reason).
    pub skipped: Vec<String>,
}

/// What import did.
#[derive(Debug, Default, Serialize)]
pub struct ImportSummary {
    /// Bucket records put back.
    pub buckets_restored: u64,
    /// Bucket records already there.
    pub buckets_present: u64,
    /// Object headers put back.
    pub headers_restored: u64,
    /// Object headers already there.
    pub headers_present: u64,
    /// Entries whose bucket directory or object file is not in the store.
    pub not_in_store: u64,
    /// Entries refused (with the reason).
    pub refused: Vec<String>,
}

/// `headers import F`: puts back every missing bucket record and object header.
pub fn import(store: &Store, file: &Path) -> Result<ImportSummary> {
    let meta = fs::metadata(file).ctx(|| format!("reading {}", file.display()))?;
    if meta.len() > MAX_BACKUP_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{} is larger than {MAX_BACKUP_BYTES} bytes: not a header backup",
            file.display()
        )));
    }
    let bytes = fs::read(file).ctx(|| format!("reading {}", file.display()))?;
    let backup = Backup::parse(&bytes)?;
    if unhex::<16>(&backup.store_id) != Some(*store.store_id()) {
        return Err(Error::InvalidArgument(format!(
            "this header backup is of store {}, not of this store ({})",
            backup.store_id,
            hex(store.store_id())
        )));
    }
    let Some(dir) = store.local_dir() else {
        return import_backend(store, &backup);
    };
    let root = dir.root();
    let mut s = ImportSummary::default();
    for b in &backup.buckets {
        let Some(rel) = safe_rel(&b.name_hex, Some(1)) else {
            s.refused.push(format!("bucket {:?}: bad name", b.name));
            continue;
        };
        let Some(rec) = unhex_vec(&b.record).filter(|r| BucketRecord::decode(r).is_ok()) else {
            s.refused.push(format!("bucket {:?}: bad record", b.name));
            continue;
        };
        let dir = root.join(&rel);
        if !dir.is_dir() {
            s.not_in_store += 1;
            continue;
        }
        match xattr::get(&dir, xattr::BUCKET.as_bytes()) {
            Ok(Some(_)) => s.buckets_present += 1,
            Ok(None) => {
                xattr::set(&dir, xattr::BUCKET.as_bytes(), &rec, libc::XATTR_CREATE)
                    .ctx(|| format!("restoring the record of bucket {:?}", b.name))?;
                s.buckets_restored += 1;
            }
            Err(e) => return Err(Error::io(format!("reading bucket {:?}", b.name), e)),
        }
    }
    for o in &backup.objects {
        match import_object(store, o) {
            Ok(Restore::Restored) => s.headers_restored += 1,
            Ok(Restore::Present) => s.headers_present += 1,
            Ok(Restore::Absent) => s.not_in_store += 1,
            Ok(Restore::Refused(why)) => s.refused.push(format!("{}: {why}", o.path)),
            Err(e) => return Err(e),
        }
    }
    if s.headers_restored + s.buckets_restored > 0 {
        store.sync_all()?;
    }
    Ok(s)
}

enum Restore {
    Restored,
    Present,
    Absent,
    Refused(String),
}

fn import_object(store: &Store, o: &ObjectEntry) -> Result<Restore> {
    let Some(rel) = safe_rel(&o.path_hex, None) else {
        return Ok(Restore::Refused("bad path".into()));
    };
    let Some(bytes) = unhex_vec(&o.header) else {
        return Ok(Restore::Refused("header is not hex".into()));
    };
    let header = match ObjectHeader::decode(&bytes) {
        Ok(h) => h,
        Err(e) => return Ok(Restore::Refused(e.to_string())),
    };
    let root = store.local("headers import")?.root();
    let path = root.join(&rel);
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Restore::Absent),
        Err(e) => return Err(Error::io(format!("opening {}", o.path), e)),
    };
    if !file.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Ok(Restore::Refused("not a regular file".into()));
    }
    match xattr::fget(&file, xattr::HEADER.as_bytes()) {
        Ok(Some(_)) => return Ok(Restore::Present),
        Ok(None) => {}
        Err(e) => return Err(Error::io(format!("{}: reading the header", o.path), e)),
    }
    let mut pre = [0u8; PREAMBLE_LEN as usize];
    let n = file
        .read_at(&mut pre, 0)
        .ctx(|| format!("{}: reading the data preamble", o.path))?;
    let oid: Id16 = match crate::format::chunk::parse_preamble(&pre[..n]) {
        Ok(id) => id,
        Err(m) => return Ok(Restore::Refused(m)),
    };
    if oid != header.object_id {
        return Ok(Restore::Refused(
            "the header is of another object than the file's data".into(),
        ));
    }
    // Verify the wrap when the key is usable; a disabled key or a customer key cannot be
    // checked, and the preamble match above is then what ties header and data.
    let bucket_name = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Ok(bucket) = crate::store::read_bucket_record(&root.join(&bucket_name), &bucket_name) {
        match object::unwrap_header(store, &bucket, &oid, &header, &NoCustomerKeys, &o.path) {
            Ok(_) | Err(Error::NoKey(_)) | Err(Error::PermissionDenied(_)) => {}
            Err(e) => return Ok(Restore::Refused(e.to_string())),
        }
    }
    xattr::fset(&file, xattr::HEADER.as_bytes(), &bytes, libc::XATTR_CREATE)
        .ctx(|| format!("{}: restoring the header", o.path))?;
    Ok(Restore::Restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_paths_stay_in_the_store() {
        let h = |s: &str| hex(s.as_bytes());
        assert!(safe_rel(&h("b/x"), None).is_some());
        assert!(safe_rel(&h("b"), Some(1)).is_some());
        assert!(safe_rel(&h("b"), None).is_none());
        assert!(safe_rel(&h("../x/y"), None).is_none());
        assert!(safe_rel(&h("/etc/passwd"), None).is_none());
        assert!(safe_rel(&h("b/../../x"), None).is_none());
        assert!(safe_rel(&h(".envelopefs/keystore"), None).is_none());
        assert!(safe_rel("zz", None).is_none());
        assert!(safe_rel(&hex(b"b/\xff\n"), None).is_some());
    }
}
