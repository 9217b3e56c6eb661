//! `envelopefs status`: one look at a store. Whether it is mounted and where, its master keys
//! and their current versions, its buckets with their keys and object counts, and the work
//! requests in flight with their percent complete. Executed like every store command (by the
//! mount through its control file, or offline by the CLI), so it is built from the open
//! [`Store`] alone and never shows key material.

use crate::error::Result;
use crate::format::hex;
use crate::ops::workreq;
use crate::store::lock::{mounted_store, read_mount_record};
use crate::store::Store;
use serde_json::{json, Value};
use std::path::Path;

/// The status of an open store as JSON.
pub fn status(store: &Store) -> Result<Value> {
    let root = store.root();
    let canon = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let record = read_mount_record(root)
        .filter(|r| mounted_store(Path::new(&r.mountpoint)).as_deref() == Some(canon.as_path()));
    let mount_pid = record.as_ref().and_then(|r| r.pid);
    let mountpoint = record.map(|r| r.mountpoint);
    let ks = store.keys();
    let keys: Vec<Value> = ks
        .keys()
        .iter()
        .map(|k| {
            let d = ks.describe(k);
            let current = d["versions"]
                .as_array()
                .and_then(|v| v.last())
                .cloned()
                .unwrap_or(Value::Null);
            json!({
                "id": d["id"],
                "alias": d["alias"],
                "current_version": d["current_version"],
                "current_state": current["state"],
                "versions": d["versions"].as_array().map_or(0, Vec::len),
                "default": d["is_default"],
            })
        })
        .collect();
    let mut buckets = Vec::new();
    for (name, rec) in store.buckets()? {
        let key_id = store.bucket_key(&rec);
        let key = ks.find(&key_id);
        let objects = workreq::walk_objects(&store.bucket_dir(&name))?.len();
        let d = store.describe_bucket(&name, &rec);
        buckets.push(json!({
            "name": name,
            "key_id": d["effective_key_id"],
            "key_alias": key.and_then(|k| k.alias.clone()),
            "key_assigned": rec.kms_key_id.is_some(),
            "key_version": key.and_then(|k| k.versions.last()).map(|v| v.version),
            "objects": objects,
        }));
    }
    drop(ks);
    let in_flight: Vec<Value> = workreq::unfinished(store)?
        .iter()
        .map(|w| {
            json!({
                "id": w.id,
                "bucket": w.bucket_name,
                "status": w.status,
                "percent_complete": w.percent_complete,
                "objects_done": w.objects_done(),
                "objects_total": w.objects_total,
                "target_key_id": w.target_key_id,
                "target_key_version": w.target_key_version,
            })
        })
        .collect();
    Ok(json!({
        "store": root.display().to_string(),
        "store_id": hex(store.store_id()),
        "chunk_size": store.chunk_size(),
        "mounted": mountpoint.is_some(),
        "mountpoint": mountpoint,
        "mount_pid": mount_pid,
        "keys": keys,
        "buckets": buckets,
        "work_requests_in_flight": in_flight,
    }))
}
