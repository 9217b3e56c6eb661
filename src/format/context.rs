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
