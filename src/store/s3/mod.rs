//! Stores that live in an S3-compatible object store (Garage is the reference engine).
//!
//! [`client`] is the blocking S3 client layer; [`backend`] implements the storage seam on it;
//! [`lease`] is the single-writer lease of such a store.

pub mod backend;
pub mod client;
pub mod lease;
