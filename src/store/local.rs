//! The local-directory backend: a store is a directory, each bucket a directory whose record
//! is an xattr, each object a file whose header is an xattr (docs/FORMAT.md).
//!
//! ```text
//! STORE/.envelopefs/   config.json, keystore, lock, mount.json, journal, work-requests/, tmp/
//! STORE/BUCKET/        xattr user.envelopefs.bucket
//!   prefix/OBJECT      preamble + chunks; xattr user.envelopefs.header
//! ```

use super::fsutil::{self, Replace};
use super::seam::{Backend, BackendKind, Blob, NewObject, ObjectWalk, Record, Save};
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

    fn object_pages(&self, bucket: &str, after: Option<&Path>) -> Result<Box<dyn ObjectWalk + '_>> {
        Ok(Box::new(FileWalk::new(&self.bucket_dir(bucket), after)?))
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
    FileWalk::new(top, None)?.rest()
}

/// A walk over the regular files under a directory in `Path` order, a page at a time (see
/// [`Backend::object_pages`]): depth first, each directory's entries sorted by their bytes.
/// It holds the sorted entries of the directories on the path to the current file, never
/// the whole tree; a directory or entry removed meanwhile is passed over.
pub struct FileWalk {
    top: PathBuf,
    /// The directories being walked, outermost first.
    levels: Vec<Level>,
}

struct Level {
    /// The directory, relative to the top.
    rel: PathBuf,
    /// Its subdirectories and regular files, sorted by name; `true` for a directory.
    entries: Vec<(std::ffi::OsString, bool)>,
    /// The next entry to visit.
    next: usize,
}

impl FileWalk {
    /// The walk of the files under `top` that come after `after` (relative to `top`).
    pub fn new(top: &Path, after: Option<&Path>) -> Result<FileWalk> {
        let mut walk = FileWalk {
            top: top.to_path_buf(),
            levels: Vec::new(),
        };
        // The top must exist; the directories on the way to `after` need not any more.
        let Some(mut level) = walk.read_level(PathBuf::new())? else {
            return Err(Error::NotFound(format!("no directory {}", top.display())));
        };
        let mut rest = after.map(|a| a.components());
        loop {
            let Some(c) = rest.as_mut().and_then(|r| r.next()) else {
                walk.levels.push(level);
                return Ok(walk);
            };
            let c = c.as_os_str();
            let at = level.entries.partition_point(|(n, _)| n.as_os_str() < c);
            level.next = at;
            let here = level.entries.get(at).filter(|(n, _)| n.as_os_str() == c);
            let Some(&(_, is_dir)) = here else {
                // Nothing of that name: what follows `after` starts at `at`.
                walk.levels.push(level);
                return Ok(walk);
            };
            // `after` itself, or a name on its path: either way not visited again.
            level.next = at + 1;
            if !is_dir {
                // A file, or a file now where `after` had a directory: both come before
                // everything that follows them.
                walk.levels.push(level);
                return Ok(walk);
            }
            let rel = level.rel.join(c);
            walk.levels.push(level);
            match walk.read_level(rel)? {
                Some(l) => level = l,
                None => return Ok(walk),
            }
        }
    }

    /// A directory's sorted entries, None if it is gone.
    fn read_level(&self, rel: PathBuf) -> Result<Option<Level>> {
        let d = self.top.join(&rel);
        let it = match fs::read_dir(&d) {
            Ok(it) => it,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("listing {}", d.display()), e)),
        };
        let mut entries = Vec::new();
        for e in it {
            let e = e.ctx(|| format!("listing {}", d.display()))?;
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() || ft.is_file() {
                entries.push((e.file_name(), ft.is_dir()));
            }
        }
        entries.sort_unstable();
        Ok(Some(Level {
            rel,
            entries,
            next: 0,
        }))
    }
}

impl ObjectWalk for FileWalk {
    fn next_page(&mut self, max: usize) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(level) = self.levels.last_mut() else {
                break;
            };
            let Some((name, is_dir)) = level.entries.get(level.next) else {
                self.levels.pop();
                continue;
            };
            level.next += 1;
            let child = level.rel.join(name);
            if *is_dir {
                if let Some(l) = self.read_level(child)? {
                    self.levels.push(l);
                }
            } else {
                out.push(child);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::seam::ObjectWalk;

    /// A tree whose `Path` order differs from the byte order of whole names (`a-c` sorts
    /// after `a/...` by components, before it by bytes), with an empty directory and a
    /// name that is not UTF-8.
    fn tree() -> (tempfile::TempDir, Vec<PathBuf>) {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        let names: Vec<PathBuf> = [
            &b"a/x"[..],
            b"a/y/z",
            b"a-c",
            b"b",
            b"c/d/e/f",
            b"c/\xff",
            b"z",
        ]
        .iter()
        .map(|n| PathBuf::from(std::ffi::OsStr::from_bytes(n)))
        .collect();
        for n in &names {
            let p = d.path().join(n);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, b"x").unwrap();
        }
        fs::create_dir_all(d.path().join("empty/deeper")).unwrap();
        let mut sorted = names.clone();
        sorted.sort();
        (d, sorted)
    }

    fn pages(top: &Path, after: Option<&Path>, size: usize) -> Vec<PathBuf> {
        let mut w = FileWalk::new(top, after).unwrap();
        let mut all = Vec::new();
        loop {
            let p = w.next_page(size).unwrap();
            assert!(p.len() <= size, "a page of {} for {size}", p.len());
            if p.is_empty() {
                return all;
            }
            all.extend(p);
        }
    }

    #[test]
    fn a_paged_walk_lists_every_file_once_in_path_order_for_any_page_size() {
        let (d, sorted) = tree();
        for size in 1..=sorted.len() + 1 {
            assert_eq!(pages(d.path(), None, size), sorted, "page size {size}");
        }
        assert_eq!(walk_files(d.path()).unwrap(), sorted);
    }

    #[test]
    fn a_walk_resumed_after_any_name_lists_exactly_the_names_after_it() {
        let (d, sorted) = tree();
        for (i, after) in sorted.iter().enumerate() {
            assert_eq!(
                pages(d.path(), Some(after), 2),
                sorted[i + 1..].to_vec(),
                "after {after:?}"
            );
        }
    }

    #[test]
    fn a_resume_point_that_is_gone_or_changed_kind_still_resumes_in_order() {
        let (d, sorted) = tree();
        // Removed since: its directory too.
        fs::remove_dir_all(d.path().join("a/y")).unwrap();
        let want: Vec<PathBuf> = sorted
            .iter()
            .filter(|n| n.as_path() > Path::new("a/y/z"))
            .cloned()
            .collect();
        assert_eq!(pages(d.path(), Some(Path::new("a/y/z")), 3), want);
        // A name that never existed, between two that do.
        assert_eq!(
            pages(d.path(), Some(Path::new("a/xx")), 3),
            want,
            "after a/xx"
        );
        // `b` was a file and is now a directory: what is below it comes after `b`.
        fs::remove_file(d.path().join("b")).unwrap();
        fs::create_dir(d.path().join("b")).unwrap();
        fs::write(d.path().join("b/inner"), b"x").unwrap();
        let got = pages(d.path(), Some(Path::new("b")), 3);
        assert_eq!(got[0], Path::new("b/inner"), "{got:?}");
        // `c/d` was a directory the resume point lay in, and is now a file: after it.
        fs::remove_dir_all(d.path().join("c/d")).unwrap();
        fs::write(d.path().join("c/d"), b"x").unwrap();
        let got = pages(d.path(), Some(Path::new("c/d/e/f")), 3);
        assert!(!got.contains(&PathBuf::from("c/d")), "{got:?}");
        assert_eq!(got.last().unwrap(), Path::new("z"), "{got:?}");
    }

    #[test]
    fn a_walk_of_a_missing_directory_is_not_found() {
        let d = tempfile::tempdir().unwrap();
        let e = FileWalk::new(&d.path().join("nope"), None).err().unwrap();
        assert!(matches!(e, Error::NotFound(_)), "{e}");
    }
}
