//! `envelopefs status`: one look at a store. Whether it is mounted and where, its master keys
//! and their current versions, its buckets with their keys and object counts, and the work
//! requests in flight with their percent complete. Executed like every store command (by the
//! mount through its control file, or offline by the CLI), so it is built from the open
//! [`Store`] alone and never shows key material.

use crate::error::Result;
use crate::format::hex;
use crate::format::records::VersionState;
use crate::ops::workreq;
use crate::store::lock::{mounted_store, read_mount_record};
use crate::store::Store;
use serde::Serialize;
use std::path::Path;

/// The status of an open store.
pub fn status(store: &Store) -> Result<StatusReply> {
    // Only a local store can be mounted so far: an object store's has no mount record.
    let record = store.local_dir().and_then(|dir| {
        let root = dir.root();
        let canon = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        read_mount_record(root)
            .filter(|r| mounted_store(Path::new(&r.mountpoint)).as_deref() == Some(canon.as_path()))
    });
    let mount_pid = record.as_ref().and_then(|r| r.pid);
    let mountpoint = record.map(|r| r.mountpoint);
    let ks = store.keys();
    let keys = ks
        .keys()
        .iter()
        .map(|k| {
            let d = ks.describe(k);
            KeyStatus {
                alias: d.alias,
                current_state: d.versions.last().map(|v| v.state),
                current_version: d.current_version,
                default: d.is_default,
                id: d.id,
                versions: d.versions.len(),
            }
        })
        .collect();
    let mut buckets = Vec::new();
    for (name, rec) in store.buckets()? {
        let key = ks.find(&store.bucket_key(&rec));
        let objects = store.backend().count_objects(&name)?;
        let d = store.describe_bucket(&name, &rec);
        buckets.push(BucketStatus {
            key_alias: key.and_then(|k| k.alias.clone()),
            key_assigned: rec.kms_key_id.is_some(),
            key_id: d.effective_key_id,
            key_version: key.and_then(|k| k.versions.last()).map(|v| v.version),
            name,
            objects,
        });
    }
    drop(ks);
    let work_requests_in_flight = workreq::unfinished(store)?
        .into_iter()
        .map(|w| InFlight {
            bucket: w.bucket_name.clone(),
            id: w.id.clone(),
            objects_done: w.objects_done(),
            objects_total: w.objects_total,
            percent_complete: w.percent_complete,
            status: w.status,
            target_key_id: w.target_key_id.clone(),
            target_key_version: w.target_key_version,
        })
        .collect();
    Ok(StatusReply {
        buckets,
        chunk_size: store.chunk_size(),
        keys,
        mount_pid,
        mounted: mountpoint.is_some(),
        mountpoint,
        store: store.backend().location(),
        store_id: hex(store.store_id()),
        work_requests_in_flight,
    })
}

/// The reply of `status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReply {
    /// Buckets, by name.
    pub buckets: Vec<BucketStatus>,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Master keys.
    pub keys: Vec<KeyStatus>,
    /// The mount daemon's pid, or null.
    pub mount_pid: Option<u32>,
    /// Whether the store is mounted.
    pub mounted: bool,
    /// Where, or null.
    pub mountpoint: Option<String>,
    /// The store directory.
    pub store: String,
    /// The store id (hex).
    pub store_id: String,
    /// Work requests not finished.
    pub work_requests_in_flight: Vec<InFlight>,
}

/// A master key in [`StatusReply`].
#[derive(Debug, Clone, Serialize)]
pub struct KeyStatus {
    /// Its alias, or null.
    pub alias: Option<String>,
    /// The state of its newest version.
    pub current_state: Option<VersionState>,
    /// Its newest version.
    pub current_version: Option<u32>,
    /// Whether it is the store's default key.
    pub default: bool,
    /// `key-HEX`.
    pub id: String,
    /// How many versions it has.
    pub versions: usize,
}

/// A bucket in [`StatusReply`].
#[derive(Debug, Clone, Serialize)]
pub struct BucketStatus {
    /// The alias of the key its new objects are wrapped under, or null.
    pub key_alias: Option<String>,
    /// Whether the key is assigned (not the store's default).
    pub key_assigned: bool,
    /// The key its new objects are wrapped under.
    pub key_id: String,
    /// That key's newest version.
    pub key_version: Option<u32>,
    /// The bucket.
    pub name: String,
    /// How many objects it holds.
    pub objects: u64,
}

/// A work request in flight in [`StatusReply`].
#[derive(Debug, Clone, Serialize)]
pub struct InFlight {
    /// Its bucket.
    pub bucket: String,
    /// `wr-HEX`.
    pub id: String,
    /// Objects done (rewrapped, rekeyed, skipped or failed).
    pub objects_done: u64,
    /// Objects in scope.
    pub objects_total: u64,
    /// Percent complete.
    pub percent_complete: f64,
    /// Its state.
    pub status: workreq::State,
    /// The key it re-encrypts to.
    pub target_key_id: String,
    /// That key's version.
    pub target_key_version: u32,
}
