//! Keys: the cryptographic primitives ([`crypto`]: AES-256-GCM chunks and key wraps, key
//! files), the versioned master keys sealed in the store's keystore ([`keystore`]) and each
//! bucket's wrapped name key ([`name_key`]). Above
//! the byte encoding ([`crate::format`]), below the storage.

pub mod crypto;
pub mod keystore;
pub mod name_key;
