//! The local-directory backend: a store is a directory, each bucket a directory whose record
//! is an xattr, each object a file whose header is an xattr (docs/FORMAT.md).
//!
//! ```text
//! STORE/.envelopefs/   config.json, keystore, lock, mount.json, journal, work-requests/, tmp/
//! STORE/BUCKET/        xattr user.envelopefs.bucket
//!   prefix/OBJECT      preamble + chunks; xattr user.envelopefs.header
//! ```

use super::fsutil::{self, Replace};
use super::seam::{Backend, BackendKind, Blob, NewObject, Record, Save};
use super::{xattr, META_DIR, META_FILE_MODE};
use crate::error::{Error, IoContext, Result};
use crate::format::records::BucketRecord;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A store kept in a local directory.
pub struct LocalDir {
    root: PathBuf,
    meta: PathBuf,
    tmp_counter: AtomicU64,
}

impl LocalDir {
    /// The store rooted at `root` (nothing is checked or opened).
    pub fn new(root: &Path) -> LocalDir {
        LocalDir {
            root: root.to_path_buf(),
            meta: root.join(META_DIR),
            tmp_counter: AtomicU64::new(0),
        }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `STORE/.envelopefs`.
    pub fn meta(&self) -> &Path {
        &self.meta
    }

    /// The directory of a bucket.
    pub fn bucket_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// A fresh temporary path in `STORE/.envelopefs/tmp` (same filesystem as the buckets).
    pub fn tmp_path(&self) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        self.meta
            .join("tmp")
            .join(format!("{}-{n}", std::process::id()))
    }

    fn record_path(&self, record: Record<'_>) -> PathBuf {
        self.meta.join(record.rel_path())
    }
}

impl Backend for LocalDir {
    fn kind(&self) -> BackendKind {
        BackendKind::Local
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn read_record(&self, record: Record<'_>) -> Result<Option<Vec<u8>>> {
        let path = self.record_path(record);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    fn write_record(&self, record: Record<'_>, bytes: &[u8], save: Save<'_>) -> Result<()> {
        let how = match save {
            Save::Durable => Replace::Durable,
            Save::ContentOnly => Replace::ContentOnly,
            Save::DurableAfter(f) => Replace::DurableAfter(f),
        };
        fsutil::replace_file(&self.record_path(record), bytes, META_FILE_MODE, how)
    }

    fn work_request_ids(&self) -> Result<Vec<String>> {
        let d = self.meta.join("work-requests");
        let mut out = Vec::new();
        for e in fs::read_dir(&d).ctx(|| format!("listing {}", d.display()))? {
            let e = e.ctx(|| format!("listing {}", d.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            // `.ID.json.tmp-...` are records being replaced: not records.
            if let Some(id) = name.strip_suffix(".json").filter(|n| !n.starts_with('.')) {
                out.push(id.to_string());
            }
        }
        Ok(out)
    }

    fn bucket_names(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.root).ctx(|| format!("listing {}", self.root.display()))? {
            let e = e.ctx(|| "listing the store".to_string())?;
            let name = match e.file_name().into_string() {
                Ok(n) if n != META_DIR => n,
                _ => continue,
            };
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    fn read_bucket(&self, name: &str) -> Result<BucketRecord> {
        super::read_bucket_record(&self.bucket_dir(name), name)
    }

    fn create_bucket(&self, name: &str, record: &BucketRecord, mode: u32) -> Result<()> {
        // Built under tmp/ and renamed into place: the directory appears only with its record.
        let tmp = self.tmp_path();
        fsutil::mkdir_exact(&tmp, mode).ctx(|| format!("creating {}", tmp.display()))?;
        let done = xattr::set(&tmp, xattr::BUCKET.as_bytes(), &record.encode(), 0)
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
        done
    }

    fn replace_bucket(&self, name: &str, record: &BucketRecord) -> Result<()> {
        xattr::set(
            &self.bucket_dir(name),
            xattr::BUCKET.as_bytes(),
            &record.encode(),
            libc::XATTR_REPLACE,
        )
        .ctx(|| format!("updating bucket {name:?}"))
    }

    fn object_names(&self, bucket: &str) -> Result<Vec<PathBuf>> {
        walk_files(&self.bucket_dir(bucket))
    }

    fn open_object(&self, bucket: &str, name: &Path, what: &str) -> Result<Box<dyn Blob>> {
        Ok(Box::new(super::open_backing(
            &self.bucket_dir(bucket).join(name),
            what,
        )?))
    }

    fn new_object(
        &self,
        bucket: &str,
        name: &Path,
        mode: u32,
        exclusive: bool,
        what: &str,
    ) -> Result<(File, Box<dyn NewObject>)> {
        let final_path = self.bucket_dir(bucket).join(name);
        if exclusive {
            if let Some(file) = open_unnamed(&final_path, mode)? {
                let new = LocalNew {
                    final_path,
                    tmp: None,
                    exclusive,
                    mode,
                    what: what.to_string(),
                };
                return Ok((file, Box::new(new)));
            }
        }
        let tmp = self.tmp_path();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .ctx(|| format!("creating {}", tmp.display()))?;
        let new = LocalNew {
            final_path,
            tmp: Some(tmp),
            exclusive,
            mode,
            what: what.to_string(),
        };
        Ok((file, Box::new(new)))
    }

    fn make_parents(&self, bucket: &str, name: &Path, mode: u32, what: &str) -> Result<()> {
        match self.bucket_dir(bucket).join(name).parent() {
            Some(parent) => fsutil::create_dir_all_exact(parent, mode)
                .ctx(|| format!("creating the prefix of {what}")),
            None => Ok(()),
        }
    }

    fn remove_object(&self, bucket: &str, name: &Path, what: &str) -> Result<()> {
        fs::remove_file(self.bucket_dir(bucket).join(name)).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(format!("no object {what}"))
            } else {
                Error::io(format!("removing {what}"), e)
            }
        })
    }

    fn sync_all(&self) -> Result<()> {
        let f = File::open(&self.root).ctx(|| format!("opening {}", self.root.display()))?;
        fsutil::syncfs(&f).ctx(|| "syncing the store's filesystem".to_string())
    }
}

/// A local object being created: an `O_TMPFILE` in its directory (exclusive creates, where
/// the filesystem has them) or a named file in `.envelopefs/tmp`.
struct LocalNew {
    final_path: PathBuf,
    /// The named temporary file, if this is one (removed if never published).
    tmp: Option<PathBuf>,
    exclusive: bool,
    mode: u32,
    what: String,
}

impl NewObject for LocalNew {
    fn publish(mut self: Box<Self>, file: &File, header: &[u8], durable: bool) -> Result<()> {
        // Exactly `mode`, whatever the umask of the process (the mount's is 0, so no chmod
        // there; the CLI's is the user's).
        if fsutil::umask_may_clear(self.mode) {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(fs::Permissions::from_mode(self.mode))
                .ctx(|| format!("{}: setting its mode", self.what))?;
        }
        xattr::fset(file, xattr::HEADER.as_bytes(), header, 0)
            .ctx(|| "writing the object header".to_string())?;
        if durable {
            file.sync_all().ctx(|| format!("{}: fsync", self.what))?;
        }
        let final_path = &self.final_path;
        let exists = |e: std::io::Error| {
            if e.raw_os_error() == Some(libc::EEXIST) {
                Error::AlreadyExists(format!("{} exists", final_path.display()))
            } else {
                Error::io(format!("creating {}", final_path.display()), e)
            }
        };
        match self.tmp.take() {
            None => fsutil::link_unnamed(file, final_path).map_err(exists)?,
            Some(tmp) => {
                let moved = if self.exclusive {
                    fsutil::rename_noreplace(&tmp, final_path)
                } else {
                    fs::rename(&tmp, final_path)
                };
                if let Err(e) = moved {
                    let _ = fs::remove_file(&tmp);
                    return Err(exists(e));
                }
            }
        }
        Ok(())
    }
}

impl Drop for LocalNew {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// An unnamed file (`O_TMPFILE`) in the directory of `final_path`, or `None` where the
/// filesystem cannot make one (the caller then uses a named temporary file).
fn open_unnamed(final_path: &Path, mode: u32) -> Result<Option<File>> {
    let dir = final_path.parent().unwrap_or(Path::new("."));
    match OpenOptions::new()
        .read(true)
        .write(true)
        .mode(mode)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
    {
        Ok(f) => Ok(Some(f)),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) =>
        {
            Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::NotFound(format!("no directory {}", dir.display())))
        }
        Err(e) => Err(Error::io(
            format!("creating a file in {}", dir.display()),
            e,
        )),
    }
}

/// Every regular file under a directory, as paths relative to it, sorted. Names are kept as
/// bytes: a name that is not UTF-8 is an object like any other. A directory or entry removed
/// while the walk runs (by a live mount) is passed over.
pub fn walk_files(top: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let d = top.join(&rel);
        let entries = match fs::read_dir(&d) {
            Ok(it) => it,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !rel.as_os_str().is_empty() => {
                continue
            }
            Err(e) => return Err(Error::io(format!("listing {}", d.display()), e)),
        };
        for e in entries {
            let e = e.ctx(|| format!("listing {}", d.display()))?;
            let Ok(ft) = e.file_type() else { continue };
            let child = rel.join(e.file_name());
            if ft.is_dir() {
                stack.push(child);
            } else if ft.is_file() {
                out.push(child);
            }
        }
    }
    out.sort();
    Ok(out)
}
