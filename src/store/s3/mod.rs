//! Stores that live in an S3-compatible object store (Garage is the reference engine).
//!
//! [`client`] is the blocking S3 client layer; [`backend`] implements the storage seam on it;
//! [`lease`] is the single-writer lease of such a store; [`names`] is what a mount of one
//! shows (the names interface of the seam).

pub mod backend;
pub mod client;
pub mod lease;
pub mod names;
