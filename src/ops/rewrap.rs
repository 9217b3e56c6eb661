//! Rewrap: decrypt an object's DEK with its current wrapping key and wrap it under another,
//! replacing only the header xattr. Data is never touched.
//!
//! Authorized twice: the source master key must allow re-encrypt-from and the destination
//! re-encrypt-to; a disabled version can be neither.

use crate::error::Result;
use crate::format::records::{BucketRecord, ObjectHeader, Wrapping};
use crate::format::Id16;
use crate::keys::crypto::{self, Key32};
use crate::keys::keystore::ops;
use crate::store::object::{self, CustomerKeys};
use crate::store::seam::Blob;
use crate::store::Store;

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

/// Who asks for a rewrap. The mode decides, here only, what is skipped, whether the file is
/// fsynced and where the object id comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One object asked for by name (`object reencrypt`, the `user.envelopefs.reencrypt`
    /// xattr): fsynced after the header is replaced; a customer-keyed object is rewrapped if
    /// its key is given, an error otherwise.
    Single,
    /// An object moving to another bucket (rename): its header is bound to the destination
    /// bucket; not fsynced (the rename that follows is the commit point).
    Move,
    /// A bucket work request accepted at `scope` (ns): objects created at or after it and
    /// customer-keyed objects are skipped; not fsynced (the job ends with one syncfs). The
    /// object id is taken from the header instead of the data preamble, which saves one disk
    /// read per object when the cache is cold; a header copied from another object therefore
    /// still rewraps, and its object keeps failing to open, as it did before.
    Job {
        /// The request's acceptance time (ns).
        scope: u64,
    },
}

impl Mode {
    /// Why this mode skips an object with this header, if it does.
    fn skip(self, header: &ObjectHeader) -> Option<SkipReason> {
        let Mode::Job { scope } = self else {
            return None;
        };
        if header.created_ns >= scope {
            Some(SkipReason::CreatedAfter)
        } else if matches!(header.wrapping, Wrapping::Customer { .. }) {
            Some(SkipReason::CustomerKey)
        } else {
            None
        }
    }

    fn durable(self) -> bool {
        self == Mode::Single
    }

    fn id_from_header(self) -> bool {
        matches!(self, Mode::Job { .. })
    }
}

/// A rewrap of one object given the object opened (a backing file, read-only, is one).
pub struct Request<'a> {
    /// The object, opened (read-only is enough).
    pub file: &'a dyn Blob,
    /// `bucket/name`, for messages.
    pub what: &'a str,
    /// The bucket the header is bound to now.
    pub src_bucket: &'a BucketRecord,
    /// The bucket it will be bound to (the same but for [`Mode::Move`]).
    pub dst_bucket: &'a BucketRecord,
    /// Where the DEK goes.
    pub target: &'a Target,
    /// Customer keys that may unwrap the DEK now.
    pub customer: &'a dyn CustomerKeys,
    /// Who asks.
    pub mode: Mode,
}

impl<'a> Request<'a> {
    /// A rewrap within `bucket` ([`Mode::Single`]).
    pub fn single(
        file: &'a dyn Blob,
        what: &'a str,
        bucket: &'a BucketRecord,
        target: &'a Target,
        customer: &'a dyn CustomerKeys,
    ) -> Self {
        Request {
            file,
            what,
            src_bucket: bucket,
            dst_bucket: bucket,
            target,
            customer,
            mode: Mode::Single,
        }
    }

    /// A rewrap for a bucket work request accepted at `scope` ([`Mode::Job`]): no customer
    /// key is ever used (customer-keyed objects are skipped).
    pub fn job(
        file: &'a dyn Blob,
        what: &'a str,
        bucket: &'a BucketRecord,
        target: &'a Target,
        scope: u64,
    ) -> Self {
        Request {
            file,
            what,
            src_bucket: bucket,
            dst_bucket: bucket,
            target,
            customer: &object::NoCustomerKeys,
            mode: Mode::Job { scope },
        }
    }
}

/// Rewraps one object.
pub fn rewrap(store: &Store, req: &Request<'_>) -> Result<Outcome> {
    let Request {
        file,
        what,
        src_bucket,
        dst_bucket,
        target,
        customer,
        mode,
    } = *req;
    let header = object::read_header(file, what)?;
    if let Some(why) = mode.skip(&header) {
        return Ok(Outcome::Skipped(why));
    }
    let (to, kek) = resolve_target(store, dst_bucket, target)?;
    let same_bucket = src_bucket.bucket_id == dst_bucket.bucket_id;
    if same_bucket && header.wrapping == to {
        return Ok(Outcome::Skipped(SkipReason::AlreadyCurrent));
    }
    if let Wrapping::Master { key_id, .. } = &header.wrapping {
        store.keys().check_allowed(key_id, ops::REENCRYPT_FROM)?;
    }
    let object_id = if mode.id_from_header() {
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
    file.replace_header(&new.encode(), what)?;
    if mode.durable() {
        file.sync(what)?;
    }
    Ok(Outcome::Rewrapped {
        from: header.wrapping,
        to,
    })
}

/// Rewraps the object at `bucket/name` ([`Mode::Single`]).
pub fn rewrap_object(
    store: &Store,
    bucket_name: &str,
    name: &str,
    target: &Target,
    customer: &dyn CustomerKeys,
) -> Result<Outcome> {
    let obj = store.object_ref(bucket_name, name)?;
    let file = obj.open(store)?;
    rewrap(
        store,
        &Request::single(&*file, &obj.what, &obj.bucket, target, customer),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::records::{HEADER_MAGIC, WRAPPED_DEK_LEN};
    use crate::format::FORMAT_VERSION;

    fn header(created_ns: u64, wrapping: Wrapping) -> ObjectHeader {
        ObjectHeader {
            magic: HEADER_MAGIC,
            version: FORMAT_VERSION,
            chunk_size: 4096,
            object_id: [1; 16],
            created_ns,
            wrapping,
            wrap_nonce: [0; 12],
            wrapped_dek: [0; WRAPPED_DEK_LEN],
        }
    }

    #[test]
    fn the_mode_decides_skips_durability_and_the_object_id_source() {
        let master = Wrapping::Master {
            key_id: [2; 16],
            version: 1,
        };
        let customer = Wrapping::Customer {
            fingerprint: [3; 32],
        };
        let job = Mode::Job { scope: 100 };
        assert_eq!(job.skip(&header(99, master)), None);
        for created in [100, 101] {
            assert_eq!(
                job.skip(&header(created, master)),
                Some(SkipReason::CreatedAfter)
            );
        }
        assert_eq!(
            job.skip(&header(99, customer)),
            Some(SkipReason::CustomerKey)
        );
        for mode in [Mode::Single, Mode::Move] {
            assert_eq!(mode.skip(&header(u64::MAX, customer)), None);
            assert!(!mode.id_from_header());
        }
        assert!(Mode::Single.durable());
        assert!(!Mode::Move.durable() && !job.durable());
        assert!(job.id_from_header());
    }
}
