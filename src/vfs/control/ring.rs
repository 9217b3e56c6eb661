//! The mount's SSE-C key ring: the customer keys loaded with `sse-c add`, by fingerprint.
//! Keys live only in memory and are zeroized when removed or when the ring is cleared.

use crate::command::{self, Reply, SseCAdded, SseCCmd, SseCKey, SseCRemoved};
use crate::error::{Error, Result};
use crate::format::{hex, unhex};
use crate::keys::crypto::{customer_fingerprint, Key32};
use crate::sync::RwLockUnpoisoned;
use std::collections::HashMap;
use std::sync::RwLock;

/// Most customer keys a mount's ring holds.
pub const MAX_RING_KEYS: usize = 1024;

/// The key ring: fingerprint -> key. Boxed, so that the map's rehashing moves pointers and
/// never leaves copies of key bytes behind; a key is zeroized when removed.
#[derive(Default)]
pub(super) struct KeyRing {
    keys: RwLock<HashMap<[u8; 32], Box<Key32>>>,
}

impl KeyRing {
    /// A copy of the loaded key with this fingerprint.
    pub(super) fn get(&self, fingerprint: &[u8; 32]) -> Option<Key32> {
        self.keys
            .read_unpoisoned()
            .get(fingerprint)
            .map(|k| Key32::clone(k))
    }

    /// Forgets every key; each is zeroized as it is dropped.
    pub(super) fn clear(&self) {
        self.keys.write_unpoisoned().clear();
    }

    /// Runs an `sse-c` command against the ring.
    pub(super) fn execute(&self, cmd: &SseCCmd) -> Result<Reply> {
        match cmd {
            SseCCmd::Add {
                encryption_key_file,
            } => {
                let key = command::read_key_file(encryption_key_file)?;
                let fp = customer_fingerprint(&key);
                let mut ring = self.keys.write_unpoisoned();
                let added = !ring.contains_key(&fp);
                if added && ring.len() >= MAX_RING_KEYS {
                    return Err(Error::InvalidArgument(format!(
                        "the key ring is full ({MAX_RING_KEYS} keys): remove one first"
                    )));
                }
                ring.insert(fp, Box::new(key));
                tracing::info!("customer key {} loaded", hex(&fp[..8]));
                Ok(Reply::SseCAdded(SseCAdded {
                    added,
                    fingerprint: hex(&fp),
                    keys: ring.len(),
                }))
            }
            SseCCmd::List => {
                let ring = self.keys.read_unpoisoned();
                let mut keys: Vec<SseCKey> = ring
                    .keys()
                    .map(|fp| SseCKey {
                        fingerprint: hex(fp),
                    })
                    .collect();
                keys.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
                Ok(Reply::SseCKeys(keys))
            }
            SseCCmd::Remove {
                fingerprint,
                encryption_key_file,
            } => {
                let mut ring = self.keys.write_unpoisoned();
                let fp = match (fingerprint, encryption_key_file) {
                    (None, Some(f)) => customer_fingerprint(&command::read_key_file(f)?),
                    (Some(p), None) => find_fingerprint(ring.keys(), p)?,
                    // Also for a command sent as JSON, which clap's rules did not check.
                    (None, None) | (Some(_), Some(_)) => {
                        return Err(Error::InvalidArgument(
                            "give one of --fingerprint and --encryption-key-file".into(),
                        ))
                    }
                };
                // Dropping the key zeroizes it.
                if ring.remove(&fp).is_none() {
                    return Err(Error::NotFound(format!(
                        "no customer key with fingerprint {} is loaded",
                        hex(&fp[..8])
                    )));
                }
                tracing::info!("customer key {} removed", hex(&fp[..8]));
                Ok(Reply::SseCRemoved(SseCRemoved {
                    fingerprint: hex(&fp),
                    keys: ring.len(),
                    removed: true,
                }))
            }
        }
    }
}

/// The loaded fingerprint that `text` names: all 64 hex digits, or a unique prefix of at
/// least 8.
fn find_fingerprint<'a>(
    loaded: impl Iterator<Item = &'a [u8; 32]>,
    text: &str,
) -> Result<[u8; 32]> {
    let t = text.trim().to_ascii_lowercase();
    if let Some(fp) = unhex::<32>(&t) {
        return Ok(fp);
    }
    if t.len() < 8 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidArgument(format!(
            "{text:?} is not a key fingerprint (64 hex digits, or a prefix of at least 8)"
        )));
    }
    let hits: Vec<[u8; 32]> = loaded
        .filter(|fp| hex(*fp).starts_with(&t))
        .copied()
        .collect();
    match hits.as_slice() {
        [one] => Ok(*one),
        [] => Err(Error::NotFound(format!(
            "no customer key with fingerprint {t} is loaded"
        ))),
        _ => Err(Error::InvalidArgument(format!(
            "fingerprint prefix {t} matches {} loaded keys: give more digits",
            hits.len()
        ))),
    }
}
