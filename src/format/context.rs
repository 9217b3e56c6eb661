//! Encryption-context bytes: the AAD of every DEK wrap.
//!
//! ```text
//! "envelopefs.dek.v1" (17) | store id (16) | bucket id (16) | object id (16)
//!     | created_ns u64 LE (8) | wrapping
//! wrapping = 0x01 | key id (16) | version u32 LE      (master key)
//!          | 0x02 | fingerprint (32)                  (customer key)
//! ```
//! A header moved to another object, bucket or store, or edited to name another key
//! version or another creation time (which scopes bucket re-encrypts), fails to unwrap.

use super::records::Wrapping;
use super::Id16;

/// Domain label that starts every DEK-wrap context.
pub const DEK_CONTEXT_LABEL: &[u8; 17] = b"envelopefs.dek.v1";

/// The context bytes for a DEK wrap.
pub fn dek_context(
    store: &Id16,
    bucket: &Id16,
    object: &Id16,
    created_ns: u64,
    wrapping: &Wrapping,
) -> Vec<u8> {
    let mut c = Vec::with_capacity(17 + 56 + 33);
    c.extend_from_slice(DEK_CONTEXT_LABEL);
    c.extend_from_slice(store);
    c.extend_from_slice(bucket);
    c.extend_from_slice(object);
    c.extend_from_slice(&created_ns.to_le_bytes());
    match wrapping {
        Wrapping::Master { key_id, version } => {
            c.push(1);
            c.extend_from_slice(key_id);
            c.extend_from_slice(&version.to_le_bytes());
        }
        Wrapping::Customer { fingerprint } => {
            c.push(2);
            c.extend_from_slice(fingerprint);
        }
    }
    c
}

/// Domain label that starts every name-key-wrap context. It differs from
/// [`DEK_CONTEXT_LABEL`] from its 12th byte on, so a wrapped name key never unwraps as a DEK
/// and a wrapped DEK never unwraps as a name key.
pub const NAME_KEY_CONTEXT_LABEL: &[u8; 21] = b"envelopefs.namekey.v2";

/// The context bytes (74) for wrapping a bucket's name key under a master key version:
///
/// ```text
/// "envelopefs.namekey.v2" (21) | store id (16) | bucket id (16)
///     | 0x01 | key id (16) | version u32 LE
/// ```
/// A wrapped name key moved to another bucket or store, or edited to name another key or
/// version, does not unwrap.
pub fn name_key_context(store: &Id16, bucket: &Id16, key_id: &Id16, version: u32) -> Vec<u8> {
    let mut c = Vec::with_capacity(74);
    c.extend_from_slice(NAME_KEY_CONTEXT_LABEL);
    c.extend_from_slice(store);
    c.extend_from_slice(bucket);
    c.push(1);
    c.extend_from_slice(key_id);
    c.extend_from_slice(&version.to_le_bytes());
    c
}
