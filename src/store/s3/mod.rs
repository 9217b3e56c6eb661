//! Stores that live in an S3-compatible object store (Garage is the reference engine).
//!
//! [`client`] is the blocking S3 client layer the object-store backend calls.

pub mod client;
