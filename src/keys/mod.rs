//! Keys: the cryptographic primitives ([`crypto`]: AES-256-GCM chunks and key wraps, key
//! files) and the versioned master keys sealed in the store's keystore ([`keystore`]). Above
//! the byte encoding ([`crate::format`]), below the storage.

pub mod crypto;
pub mod keystore;
