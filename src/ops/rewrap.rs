//! Rewrap: decrypt an object's DEK with its current wrapping key and wrap it under another,
//! replacing only the header xattr. Data is never touched.
//!
//! Authorized twice: the source master key must allow re-encrypt-from and the destination
//! re-encrypt-to; a disabled version can be neither.

use crate::error::{Error, IoContext, Result};
use crate::format::records::{BucketRecord, ObjectHeader, Wrapping};
use crate::format::Id16;
use crate::keys::crypto::{self, Key32};
use crate::keys::keystore::ops;
use crate::store::object::{self, CustomerKeys};
use crate::store::{xattr, Store};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Where a rewrap puts the DEK.
pub enum Target {
    /// The newest version of the bucket's key (the destination bucket's, for a move).
    BucketLatest,
    /// The newest version of a given master key.
    Master(Id16),
    /// A fixed master key version (work requests fix theirs when accepted).
    MasterVersion(Id16, u32),
    /// A customer-provided key.
    Customer(Key32),
}

/// What a rewrap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The header was replaced.
    Rewrapped {
        /// Wrapping before.
        from: Wrapping,
        /// Wrapping after.
        to: Wrapping,
    },
    /// Nothing to do, with the reason.
    Skipped(SkipReason),
}

string_enum! {
    /// Why a rewrap or a rekey left an object alone. A bucket work request counts its skips
    /// by reason (`skipped_reasons`, keyed by these strings, persisted and printed).
    pub enum SkipReason {
        /// Its header is already under the target key version.
        AlreadyCurrent = "already under the target key version",
        /// Created at or after a bucket job's acceptance: out of its scope (a rekey's new
        /// objects have a fresh data key already).
        CreatedAfter = "created after the request",
        /// Wrapped under a customer-provided key, which a bucket re-encrypt does not hold.
        CustomerKey = "wrapped under a customer-provided key",
        /// A rekey's: its header was made by this very request.
        RekeyedByThisRequest = "rekeyed by this request",
        /// A rekey's: open in the mount (its open handles hold the old data key). A bucket
        /// job retries it until it is closed (bounded) and otherwise fails it, so it is
        /// never counted.
        OpenInMount = "open in the mount",
        /// A bucket job's: the object was removed while the job ran.
        RemovedMeanwhile = "removed meanwhile",
    }
}

/// Resolves a target to a wrapping and its KEK, checking re-encrypt-to and that the version
/// is enabled.
pub fn resolve_target(
    store: &Store,
    bucket: &BucketRecord,
    target: &Target,
) -> Result<(Wrapping, Key32)> {
    let ks = store.keys();
    match target {
        Target::BucketLatest | Target::Master(_) => {
            let id = match target {
                Target::Master(id) => *id,
                _ => store.bucket_key(bucket),
            };
            ks.check_allowed(&id, ops::REENCRYPT_TO)?;
            let (version, k) = ks.current(&id)?;
            Ok((
                Wrapping::Master {
                    key_id: id,
                    version,
                },
                k,
            ))
        }
        Target::MasterVersion(id, version) => {
            ks.check_allowed(id, ops::REENCRYPT_TO)?;
            let k = ks.version(id, *version)?;
            Ok((
                Wrapping::Master {
                    key_id: *id,
                    version: *version,
                },
                k,
            ))
        }
        Target::Customer(k) => Ok((
            Wrapping::Customer {
                fingerprint: crypto::customer_fingerprint(k),
            },
            k.clone(),
        )),
    }
}

/// Rewraps one object given its open backing file.
///
/// `src_bucket` is the bucket the header is bound to now; `dst_bucket` the one it will be
/// bound to (equal except for a cross-bucket move). `scope` is set by bucket work requests:
/// objects created at or after that time, and customer-keyed objects, are skipped. With
/// `durable`, the file is fsynced after the header is replaced.
#[allow(clippy::too_many_arguments)]
pub fn rewrap_file(
    store: &Store,
    file: &File,
    what: &str,
    src_bucket: &BucketRecord,
    dst_bucket: &BucketRecord,
    target: &Target,
    customer: &dyn CustomerKeys,
    scope: Option<u64>,
    durable: bool,
) -> Result<Outcome> {
    rewrap_inner(
        store, file, what, src_bucket, dst_bucket, target, customer, scope, durable, false,
    )
}

/// Rewraps one object for a bucket work request: [`rewrap_file`] within one bucket, not
/// durable (the job ends with one syncfs), customer-keyed objects and objects created after
/// `scope` skipped. The object id is taken from the header instead of the data preamble, which
/// saves one disk read per object when the cache is cold. A header copied from another object
/// therefore still rewraps; its object keeps failing to open, as it did before.
pub fn rewrap_for_job(
    store: &Store,
    file: &File,
    what: &str,
    bucket: &BucketRecord,
    target: &Target,
    scope: u64,
) -> Result<Outcome> {
    rewrap_inner(
        store,
        file,
        what,
        bucket,
        bucket,
        target,
        &object::NoCustomerKeys,
        Some(scope),
        false,
        true,
    )
}

#[allow(clippy::too_many_arguments)]
fn rewrap_inner(
    store: &Store,
    file: &File,
    what: &str,
    src_bucket: &BucketRecord,
    dst_bucket: &BucketRecord,
    target: &Target,
    customer: &dyn CustomerKeys,
    scope: Option<u64>,
    durable: bool,
    header_id: bool,
) -> Result<Outcome> {
    let header = object::read_header(file, what)?;
    if let Some(t) = scope {
        if header.created_ns >= t {
            return Ok(Outcome::Skipped(SkipReason::CreatedAfter));
        }
        if matches!(header.wrapping, Wrapping::Customer { .. }) {
            return Ok(Outcome::Skipped(SkipReason::CustomerKey));
        }
    }
    let (to, kek) = resolve_target(store, dst_bucket, target)?;
    let same_bucket = src_bucket.bucket_id == dst_bucket.bucket_id;
    if same_bucket && header.wrapping == to {
        return Ok(Outcome::Skipped(SkipReason::AlreadyCurrent));
    }
    if let Wrapping::Master { key_id, .. } = &header.wrapping {
        store.keys().check_allowed(key_id, ops::REENCRYPT_FROM)?;
    }
    let object_id = if header_id {
        header.object_id
    } else {
        object::read_preamble(file, what)?
    };
    let dek = object::unwrap_header_as(
        store,
        src_bucket,
        &object_id,
        &header,
        customer,
        what,
        ops::REENCRYPT_FROM,
    )?;
    let new = object::make_header(
        store,
        dst_bucket,
        &object_id,
        header.created_ns,
        to,
        &kek,
        &dek,
        crypto::random_array()?,
    )?;
    replace_header(file, &new, what)?;
    if durable {
        file.sync_all()
            .ctx(|| format!("{what}: fsync after rewrap"))?;
    }
    Ok(Outcome::Rewrapped {
        from: header.wrapping,
        to,
    })
}

/// Replaces the header xattr in place (one atomic setxattr).
pub fn replace_header(file: &File, header: &ObjectHeader, what: &str) -> Result<()> {
    xattr::fset(
        file,
        xattr::HEADER.as_bytes(),
        &header.encode(),
        libc::XATTR_REPLACE,
    )
    .ctx(|| format!("{what}: replacing the object header"))
}

/// Opens a backing file for a rewrap (read-only is enough: xattrs are inode metadata).
pub fn open_for_rewrap(path: &Path, what: &str) -> Result<File> {
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

/// Rewraps the object at `bucket/name`.
pub fn rewrap_object(
    store: &Store,
    bucket_name: &str,
    name: &str,
    target: &Target,
    customer: &dyn CustomerKeys,
) -> Result<Outcome> {
    crate::store::validate_object_name(name)?;
    let bucket = store.bucket(bucket_name)?;
    let path = store.bucket_dir(bucket_name).join(name);
    let what = format!("{bucket_name}/{name}");
    let file = open_for_rewrap(&path, &what)?;
    rewrap_file(
        store, &file, &what, &bucket, &bucket, target, customer, None, true,
    )
}
