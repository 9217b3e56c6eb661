//! Operations over a store, the same for every storage backend: rewrapping and rekeying
//! objects ([`rewrap`], [`rekey`]), persisted bucket jobs ([`workreq`]), the key lifecycle and
//! envelope blobs ([`kms`]), checking ([`fsck`]), header backups ([`headers`]) and one look at
//! a store ([`status`]). They reach the bytes only through [`crate::store`].

pub mod fsck;
pub mod headers;
pub mod kms;
pub mod rekey;
pub mod rewrap;
pub mod status;
pub mod workreq;
