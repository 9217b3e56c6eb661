//! Rekey: give an object a new data key, for when a DEK may have leaked. Unlike a rewrap,
//! this rewrites the data.
//!
//! The object is re-encrypted into a new backing file under a new random DEK and a new
//! object id, and the new file replaces the old one with one atomic rename:
//! 1. the new object is made by [`object::create_object`] in `STORE/.envelopefs/tmp` (an
//!    `O_TMPFILE` linked to a `rekey-*` name once complete, else a named temporary file):
//!    the data is copied, mode, owner, user xattrs and times are copied, then its header
//!    (the new DEK wrapped under the target) is set and the file fsynced;
//! 2. `renameat2(RENAME_EXCHANGE)` swaps it with the old object's name, so the name leads to
//!    the old object or the new one, never to a mix or to a file without a header;
//! 3. the old object, now under the `rekey-*` name, is unlinked.
//!
//! The old file is never written. A crash leaves at most a `rekey-*` file in
//! `.envelopefs/tmp`, which the next open of the store (mount or CLI) removes.
//!
//! In an object store there is no rename: the new object is published over the name by
//! one upload, after a last check that the object did not change ([`rekey_published`]).

use crate::error::{Error, IoContext, Result};
use crate::format::records::{BucketRecord, Wrapping};
use crate::format::{hex, Id16};
use crate::keys::crypto;
use crate::keys::keystore::ops;
use crate::ops::rewrap::{self, SkipReason, Target};
use crate::store::object::{self, CustomerKeys, Live, ObjectIo};
use crate::store::{fsutil, xattr, Store};
use std::fs::{self, File, FileTimes, Metadata};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// What a rekey did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rekeyed {
    /// The object has a new DEK and object id.
    Done {
        /// Wrapping before.
        from: Wrapping,
        /// Wrapping after.
        to: Wrapping,
        /// The object id before.
        old_object_id: Id16,
        /// The object id now.
        new_object_id: Id16,
    },
    /// Left alone (bucket jobs only), with the reason.
    Skipped(SkipReason),
}

/// How to rekey.
pub struct Options<'a> {
    /// Where the new DEK is wrapped.
    pub target: &'a Target,
    /// Customer keys for an SSE-C source.
    pub customer: &'a dyn CustomerKeys,
    /// The mount, if any.
    pub live: &'a dyn Live,
    /// Creation time (ns) written in the new header.
    pub created_ns: u64,
    /// Set by bucket jobs: their acceptance time. Objects whose creation time equals it were
    /// rekeyed by this request already, later ones are new; both are skipped. Open objects
    /// are skipped too (an error for a single-object rekey; the job retries them, see
    /// [`SkipReason::OpenInMount`]); customer-keyed and hard-linked ones are errors, so a job that
    /// leaves them with their old data keys names them and cannot end SUCCEEDED.
    pub job_scope: Option<u64>,
    /// fsync the directories after the rename (single objects; jobs end with a syncfs).
    pub durable: bool,
}

/// Rekeys the object at `path` in `bucket`.
pub fn rekey_path(
    store: &Store,
    bucket: &BucketRecord,
    path: &Path,
    what: &str,
    opts: &Options<'_>,
) -> Result<Rekeyed> {
    let job = opts.job_scope.is_some();
    let src = crate::store::open_backing(path, what)?;
    let meta = src.metadata().ctx(|| format!("{what}: stat"))?;
    if !meta.is_file() {
        return Err(Error::InvalidArgument(format!("{what} is not an object")));
    }
    let header = object::read_header(&src, what)?;
    if let Some(skip) = in_job_scope(&header, opts, what)? {
        return Ok(skip);
    }
    if meta.nlink() > 1 {
        return Err(Error::InvalidArgument(format!(
            "{what} has {} hard links: a rekey writes a new file, which would leave the other \
             names with the old data key; remove the other links first",
            meta.nlink()
        )));
    }
    match opts.live.while_closed(meta.ino(), &mut || Ok(())) {
        Err(Error::Busy(_)) if job => return Ok(Rekeyed::Skipped(SkipReason::OpenInMount)),
        Err(Error::Busy(_)) => {
            return Err(Error::Busy(format!(
                "{what} is open in the mount (its open files hold the old data key): close it \
                 and try again"
            )))
        }
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    let (to, kek) = authorize(store, bucket, &header, opts.target)?;
    let src_io = src
        .try_clone()
        .ctx(|| format!("{what}: duplicating a descriptor"))?;
    let old = object::open_object_file(store, bucket, src_io, what, opts.customer)?;
    let old_object_id = *old.object_id();

    let tmp_dir = store.local("a rekey")?.meta().join("tmp");
    let staging_name = format!("rekey-{}", hex(&crypto::random_array::<8>()?));
    let staging = tmp_dir.join(&staging_name);
    let create = object::Create {
        mode: meta.mode() & 0o7777,
        exclusive: true,
        durable: true,
        wrap: Some((to, &kek)),
        created_ns: Some(opts.created_ns),
        publish_later: false,
    };
    // The staging file lives in `.envelopefs/tmp`, which the local backend addresses as the
    // bucket `.envelopefs`: the same directory tree, so the rename below is atomic.
    let new = object::create_object_in(
        store,
        crate::store::META_DIR,
        bucket,
        &Path::new("tmp").join(&staging_name),
        &create,
        &mut |obj| {
            copy_data(&old, obj, what)?;
            copy_metadata(&src, path, &meta, obj.file(), what)
        },
    )?;
    let new_object_id = *new.object_id();
    let new_ino = new
        .file()
        .metadata()
        .ctx(|| format!("{what}: stat of the new file"))?
        .ino();
    drop(new);
    drop(old);
    if crate::fault::enabled("rekey-crash-before-rename") {
        tracing::error!("fault rekey-crash-before-rename: aborting");
        std::process::abort();
    }
    let swapped = opts.live.while_closed(meta.ino(), &mut || {
        let now = src.metadata().ctx(|| format!("{what}: stat"))?;
        if changed(&meta, &now) {
            return Err(Error::Busy(format!(
                "{what} changed while it was being rekeyed; try again"
            )));
        }
        fsutil::rename_flags(&staging, path, libc::RENAME_EXCHANGE)
            .ctx(|| format!("{what}: putting the rekeyed object in place"))?;
        let back = fs::symlink_metadata(&staging).ctx(|| format!("{what}: stat"))?;
        if (back.dev(), back.ino()) != (meta.dev(), meta.ino()) {
            // Someone replaced the name meanwhile: give it back its file.
            let _ = fsutil::rename_flags(&staging, path, libc::RENAME_EXCHANGE);
            return Err(Error::Busy(format!(
                "{what} was replaced while it was being rekeyed; try again"
            )));
        }
        Ok(())
    });
    if let Err(e) = swapped {
        // Remove the staging name only if it still holds the new object.
        if fs::symlink_metadata(&staging).is_ok_and(|m| m.ino() == new_ino) {
            let _ = fs::remove_file(&staging);
        }
        return match e {
            Error::Busy(_) if job => Ok(Rekeyed::Skipped(SkipReason::OpenInMount)),
            e => Err(e),
        };
    }
    if crate::fault::enabled("rekey-crash-after-rename") {
        tracing::error!("fault rekey-crash-after-rename: aborting");
        std::process::abort();
    }
    // The old object now sits under the staging name; a crash before this unlink leaves it
    // there for the next open of the store to remove.
    if let Err(e) = fs::remove_file(&staging) {
        tracing::warn!("{what}: removing the old file after a rekey: {e}");
    }
    if opts.durable {
        if let Some(dir) = path.parent() {
            fsutil::sync_dir(dir).ctx(|| format!("{what}: fsync of its directory"))?;
        }
        let _ = fsutil::sync_dir(&tmp_dir);
    }
    // The mount takes names relative to the store.
    if let Some(rel) = store
        .local_dir()
        .and_then(|d| path.strip_prefix(d.root()).ok())
    {
        opts.live.replaced(rel);
    }
    Ok(Rekeyed::Done {
        from: header.wrapping,
        to,
        old_object_id,
        new_object_id,
    })
}

/// Rekeys the object `name` of a bucket (a bucket job's): see [`rekey_path`] for a local
/// store, [`rekey_published`] for one without directories (an object store).
pub fn rekey_in(
    store: &Store,
    bucket_name: &str,
    bucket: &BucketRecord,
    name: &Path,
    what: &str,
    opts: &Options<'_>,
) -> Result<Rekeyed> {
    match store.local_dir() {
        Some(dir) => {
            let path = dir.bucket_dir(bucket_name).join(name);
            rekey_path(store, bucket, &path, what, opts)
        }
        None => rekey_published(store, bucket_name, bucket, name, what, opts),
    }
}

/// Rekeys an object of a store without directories (an object store), where an object is
/// replaced by publishing a new one over its name:
/// 1. the object is opened (its header and size as one HEAD saw them) and its ciphertext
///    read into a private unnamed staging file by ranged GETs;
/// 2. the new object (new DEK, new object id, the data re-encrypted) is written into
///    another private staging file by [`object::create_object_in`];
/// 3. the object is looked at once more: if its header or size changed since step 1 (a
///    rewrap, a new upload), nothing is published and the rekey fails with EBUSY;
/// 4. the new object is uploaded over the name with its header in one PUT, or one
///    multipart upload that becomes visible only when it completes (aborted on failure).
///
/// The name leads to the old object or the new one, never to a mix, and a crash before
/// step 4 completes leaves the old object as it was (and at most an unfinished multipart
/// upload, invisible). The store cannot refuse the PUT if someone wrote the object between
/// steps 3 and 4 (Garage ignores `If-Match` on PUT): what keeps other writers out is the
/// store's lease, held by every process that changes the store (docs/DECISIONS.md).
pub fn rekey_published(
    store: &Store,
    bucket_name: &str,
    bucket: &BucketRecord,
    name: &Path,
    what: &str,
    opts: &Options<'_>,
) -> Result<Rekeyed> {
    let blob = store.open_object(bucket_name, name, what)?;
    let seen_header = blob.header(what)?;
    let seen_len = blob.len(what)?;
    let header = object::read_header(&*blob, what)?;
    if let Some(skip) = in_job_scope(&header, opts, what)? {
        return Ok(skip);
    }
    let (to, kek) = authorize(store, bucket, &header, opts.target)?;
    let old = object::open_blob(store, bucket, &*blob, what, opts.customer)?;
    let old_object_id = *old.object_id();
    let create = object::Create {
        mode: crate::store::OBJECT_FILE_MODE,
        exclusive: false,
        durable: true,
        wrap: Some((to, &kek)),
        created_ns: Some(opts.created_ns),
        publish_later: false,
    };
    let new = object::create_object_in(store, bucket_name, bucket, name, &create, &mut |obj| {
        copy_data(&old, obj, what)?;
        if crate::fault::enabled("rekey-crash-before-rename") {
            tracing::error!("fault rekey-crash-before-rename: aborting");
            std::process::abort();
        }
        if crate::fault::enabled("slow-rekey-publish") {
            std::thread::sleep(std::time::Duration::from_secs(5));
        }
        // The last look before publishing over the name.
        let now = store.open_object(bucket_name, name, what)?;
        if now.header(what)? != seen_header || now.len(what)? != seen_len {
            return Err(Error::Busy(format!(
                "{what} changed while it was being rekeyed; try again"
            )));
        }
        Ok(())
    })?;
    let new_object_id = *new.object_id();
    Ok(Rekeyed::Done {
        from: header.wrapping,
        to,
        old_object_id,
        new_object_id,
    })
}

/// What a bucket job does with an object given its header: None to rekey it, a skip, or
/// an error for an object it cannot rekey (single-object rekeys: always None).
fn in_job_scope(
    header: &crate::format::records::ObjectHeader,
    opts: &Options<'_>,
    what: &str,
) -> Result<Option<Rekeyed>> {
    let Some(scope) = opts.job_scope else {
        return Ok(None);
    };
    if header.created_ns == scope {
        return Ok(Some(Rekeyed::Skipped(SkipReason::RekeyedByThisRequest)));
    }
    if header.created_ns > scope {
        return Ok(Some(Rekeyed::Skipped(SkipReason::CreatedAfter)));
    }
    // Not rekeyed, so it keeps a data key that may have leaked: the job cannot succeed,
    // and names it (a failure, not a skip).
    if matches!(header.wrapping, Wrapping::Customer { .. }) {
        return Err(Error::NoKey(format!(
            "{what} is wrapped under a customer-provided key, which a bucket job does not \
             hold, so it keeps its old data key: rekey it with `object reencrypt --rekey \
             --source-encryption-key-file F` on the mounted store"
        )));
    }
    Ok(None)
}

/// Authorized twice, as a rewrap: the old key must allow decrypt (checked by the unwrap)
/// and re-encrypt-from, the new one re-encrypt-to and encrypt. The new wrapping and its key.
fn authorize(
    store: &Store,
    bucket: &BucketRecord,
    header: &crate::format::records::ObjectHeader,
    target: &Target,
) -> Result<(Wrapping, crypto::Key32)> {
    if let Wrapping::Master { key_id, .. } = &header.wrapping {
        store.keys().check_allowed(key_id, ops::REENCRYPT_FROM)?;
    }
    let (to, kek) = rewrap::resolve_target(store, bucket, target)?;
    if let Wrapping::Master { key_id, .. } = &to {
        store.keys().check_allowed(key_id, ops::ENCRYPT)?;
    }
    Ok((to, kek))
}

/// Rekeys the object at `bucket/name` (synchronously, durably).
pub fn rekey_object(
    store: &Store,
    bucket_name: &str,
    name: &str,
    target: &Target,
    customer: &dyn CustomerKeys,
    live: &dyn Live,
) -> Result<Rekeyed> {
    let obj = store.object_ref(bucket_name, name)?;
    let opts = Options {
        target,
        customer,
        live,
        created_ns: object::now_ns(),
        job_scope: None,
        durable: true,
    };
    rekey_in(store, bucket_name, &obj.bucket, &obj.name, &obj.what, &opts)
}

/// Whether the old file was touched since the rekey started (a write through the mount, a
/// chmod, an xattr change, a truncate).
fn changed(a: &Metadata, b: &Metadata) -> bool {
    (a.ino(), a.nlink(), a.size(), a.mtime(), a.mtime_nsec())
        != (b.ino(), b.nlink(), b.size(), b.mtime(), b.mtime_nsec())
        || (a.ctime(), a.ctime_nsec()) != (b.ctime(), b.ctime_nsec())
}

fn copy_data(old: &ObjectIo, new: &mut ObjectIo, what: &str) -> Result<()> {
    let size = old.size();
    let mut buf = zeroize::Zeroizing::new(vec![0u8; 1 << 20]);
    let mut off = 0u64;
    while off < size {
        let n = old.read_at(off, &mut buf)?;
        if n == 0 {
            return Err(Error::Corrupt(format!(
                "{what}: ended at {off} bytes of {size} while being rekeyed"
            )));
        }
        new.write_at(off, &buf[..n])?;
        off += n as u64;
    }
    Ok(())
}

/// Copies user xattrs, owner, mode and times from the old object to the new file (times
/// last: everything before changes them).
fn copy_metadata(src: &File, path: &Path, meta: &Metadata, dst: &File, what: &str) -> Result<()> {
    let names = xattr::list(path).ctx(|| format!("{what}: listing xattrs"))?;
    for n in names {
        if !n.starts_with(b"user.") || n == xattr::HEADER.as_bytes() {
            continue;
        }
        if let Some(v) = xattr::fget(src, &n).ctx(|| format!("{what}: reading an xattr"))? {
            xattr::fset(dst, &n, &v, 0).ctx(|| format!("{what}: copying an xattr"))?;
        }
    }
    let cur = dst.metadata().ctx(|| format!("{what}: stat"))?;
    if (cur.uid(), cur.gid()) != (meta.uid(), meta.gid()) {
        std::os::unix::fs::fchown(dst, Some(meta.uid()), Some(meta.gid()))
            .ctx(|| format!("{what}: keeping its owner"))?;
    }
    dst.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))
        .ctx(|| format!("{what}: keeping its mode"))?;
    let times = FileTimes::new()
        .set_accessed(meta.accessed().ctx(|| format!("{what}: atime"))?)
        .set_modified(meta.modified().ctx(|| format!("{what}: mtime"))?);
    dst.set_times(times)
        .ctx(|| format!("{what}: keeping its times"))
}
