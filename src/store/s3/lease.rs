//! The single-writer lease of a store in an object store.
//!
//! A local store is fenced by a lock file that the kernel frees when its holder dies. An
//! object store has no such thing, and Garage ignores conditional PUTs (`If-None-Match`,
//! `If-Match`), so no compare-and-swap exists to make a lock safe by the store alone. What
//! can be enforced is done: every process that changes a store (an offline command; later a
//! mount) holds a lease, a small object `PREFIX/.envelopefs/lease` naming its holder (host,
//! pid, what it runs) and an expiry, renewed while it works and removed when it is done.
//! Another process that finds a live lease is refused with a clear error naming the holder;
//! a lease whose holder is gone (expired, or a dead pid on this host) is taken over.
//!
//! Two processes that take a free lease at the same instant can both believe they hold it
//! (a race the store cannot settle): the read-back after the write narrows the window to
//! one round trip, and docs/DECISIONS.md says what that means. No content write is lost even
//! then: a rewrap is conditional on the ETag it read (see [`super::backend`]).
//!
//! A holder killed in the middle of a multipart upload leaves it unfinished: invisible, but
//! its parts take space until someone aborts it. The lease says who that someone is: a
//! process that took the lease (so no other holder is live) aborts, with
//! [`Lease::abort_stale_uploads`], every unfinished upload under the store's prefix that was
//! initiated before its lease was written, by the server's clock; an upload initiated after
//! that (its own, or a racing writer's) is left alone (docs/DECISIONS.md, "unfinished
//! uploads").

use super::client::S3Client;
use super::client::Upload;
use crate::error::{Error, Result};
use crate::sync::LockUnpoisoned;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

/// The key of the lease of the store at `at`: `PREFIX/.envelopefs/lease`.
pub fn key_of(at: &super::backend::S3Location) -> String {
    at.key(&format!("{}/lease", crate::store::META_DIR))
}

/// How long a lease lasts without renewal.
pub const TTL_SECONDS: u64 = 30;
/// How often a held lease is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(TTL_SECONDS / 3);

/// The lease record (JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LeaseRecord {
    /// The holder's host name.
    pub host: String,
    /// The holder's process id.
    pub pid: u32,
    /// What it runs (`bucket reencrypt`, `mount`), for the message others get.
    pub what: String,
    /// A random value that tells this holder's lease from another's.
    pub nonce: String,
    /// Seconds since the epoch after which the lease is free.
    pub expires_s: u64,
    /// Where the holder mounts the store, when it is a mount: commands on this host go
    /// through its control file instead of waiting for the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mountpoint: Option<String>,
}

fn now_s() -> u64 {
    crate::keys::keystore::now_s()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

impl LeaseRecord {
    /// Whether the lease binds others now: not expired, and not held by a process of this
    /// host that no longer exists.
    fn is_live(&self, host: &str) -> bool {
        if self.expires_s <= now_s() {
            return false;
        }
        if self.host == host {
            // A process gone, or a zombie (killed, not yet reaped), holds nothing any more.
            return crate::store::lock::alive(self.pid);
        }
        true
    }
}

/// A held lease: renewed by a thread until dropped, then removed.
pub struct Lease {
    shared: Arc<(Mutex<bool>, Condvar)>,
    renewer: Option<std::thread::JoinHandle<()>>,
    client: S3Client,
    key: String,
    nonce: String,
    /// When our lease record was written, by the server's clock (None if unknown).
    taken_at: Option<SystemTime>,
}

impl Lease {
    /// The holder of the lease at `key` if it binds others now (see [`Lease::acquire`]).
    pub fn live_holder(client: &S3Client, key: &str) -> Result<Option<LeaseRecord>> {
        let host = host_name();
        Ok(match client.get(key)? {
            Some((bytes, _)) => serde_json::from_slice::<LeaseRecord>(&bytes)
                .ok()
                .filter(|r| r.is_live(&host)),
            None => None,
        })
    }

    /// Whether a lease record was written by a process of this host.
    pub fn is_this_host(record: &LeaseRecord) -> bool {
        record.host == host_name()
    }

    /// Takes the lease at `key` for `what`, or fails with Busy naming the holder.
    pub fn acquire(client: &S3Client, key: &str, location: &str, what: &str) -> Result<Lease> {
        Self::acquire_for(client, key, location, what, None)
    }

    /// [`Lease::acquire`] for a mount at `mountpoint`, which others read from the record.
    pub fn acquire_for(
        client: &S3Client,
        key: &str,
        location: &str,
        what: &str,
        mountpoint: Option<&str>,
    ) -> Result<Lease> {
        let host = host_name();
        if let Some((bytes, _)) = client.get(key)? {
            match serde_json::from_slice::<LeaseRecord>(&bytes) {
                Ok(held) if held.is_live(&host) => {
                    return Err(Error::Busy(format!(
                        "{location} is in use by `{}` (pid {} on {}) until its lease expires \
                         (within {TTL_SECONDS} s of its last renewal); only one process may \
                         change a store in an object store at a time",
                        held.what, held.pid, held.host
                    )))
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("{location}: replacing an unreadable lease ({e})"),
            }
        }
        let nonce = crate::format::hex(&crate::keys::crypto::random_array::<16>()?);
        let record = LeaseRecord {
            host,
            pid: std::process::id(),
            what: what.to_string(),
            nonce: nonce.clone(),
            expires_s: now_s() + TTL_SECONDS,
            mountpoint: mountpoint.map(str::to_string),
        };
        write(client, key, &record)?;
        // Read back: a writer that raced us and wrote after us wins, and we step back.
        if let Some((bytes, _)) = client.get(key)? {
            if let Ok(now) = serde_json::from_slice::<LeaseRecord>(&bytes) {
                if now.nonce != nonce {
                    return Err(Error::Busy(format!(
                        "{location} was taken at the same moment by `{}` (pid {} on {})",
                        now.what, now.pid, now.host
                    )));
                }
            }
        }
        // The server's time of our write: the line between uploads of earlier holders and
        // ours (none of which has started yet).
        let taken_at = client.modified_at(key).unwrap_or_else(|e| {
            tracing::warn!("{location}: the time of the lease is unknown ({e})");
            None
        });
        let shared = Arc::new((Mutex::new(false), Condvar::new()));
        let renewer = {
            let shared = shared.clone();
            let client = client.clone();
            let key = key.to_string();
            let mut record = record;
            std::thread::Builder::new()
                .name("lease".into())
                .spawn(move || loop {
                    let (stop, cv) = &*shared;
                    let guard = stop.lock_unpoisoned();
                    let (guard, _) = cv
                        .wait_timeout_while(guard, RENEW_EVERY, |s| !*s)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if *guard {
                        return;
                    }
                    drop(guard);
                    record.expires_s = now_s() + TTL_SECONDS;
                    if let Err(e) = write(&client, &key, &record) {
                        tracing::warn!("renewing the store's lease: {e}");
                    }
                })
                .ok()
        };
        Ok(Lease {
            shared,
            renewer,
            client: client.clone(),
            key: key.to_string(),
            nonce,
            taken_at,
        })
    }

    /// The unfinished multipart uploads under `prefix` that were initiated before this
    /// lease was taken (by the server's clock): left by earlier holders, dead or no longer
    /// holders, since no other holder was live when this one was taken.
    pub fn stale_uploads(&self, prefix: &str) -> Result<Vec<Upload>> {
        let Some(taken_at) = self.taken_at else {
            return Ok(Vec::new());
        };
        Ok(self
            .client
            .list_uploads(prefix)?
            .into_iter()
            .filter(|u| u.initiated.is_some_and(|t| t < taken_at))
            .collect())
    }

    /// Aborts [`Lease::stale_uploads`]; returns those it aborted. Never one initiated after
    /// the lease was taken: this process's own uploads all are.
    pub fn abort_stale_uploads(&self, prefix: &str) -> Result<Vec<Upload>> {
        let mut aborted = Vec::new();
        for u in self.stale_uploads(prefix)? {
            if self.client.abort_upload(&u)? {
                aborted.push(u);
            }
        }
        Ok(aborted)
    }
}

fn write(client: &S3Client, key: &str, record: &LeaseRecord) -> Result<()> {
    let bytes = serde_json::to_vec(record)
        .map_err(|e| Error::InvalidArgument(format!("lease does not serialize: {e}")))?;
    client.put(key, bytes, &[]).map(drop)
}

impl Drop for Lease {
    fn drop(&mut self) {
        {
            let (stop, cv) = &*self.shared;
            *stop.lock_unpoisoned() = true;
            cv.notify_all();
        }
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        // Remove it only if it is still ours.
        let ours = match self.client.get(&self.key) {
            Ok(Some((bytes, _))) => serde_json::from_slice::<LeaseRecord>(&bytes)
                .map(|r| r.nonce == self.nonce)
                .unwrap_or(false),
            _ => false,
        };
        if ours {
            if let Err(e) = self.client.delete(&self.key) {
                tracing::warn!("removing the store's lease: {e}");
            }
        }
    }
}
