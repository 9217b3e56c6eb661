//! envelopefs: an encrypted FUSE filesystem with one data key per file, wrapped under
//! versioned master keys, so that re-encrypting a bucket after a key rotation rewrites small
//! headers and never the data.
//!
//! The architecture shows in the module names:
//! - pure core, no FUSE: [`format`] (the only byte encoding), [`crypto`], [`keystore`],
//!   [`store`] (store, buckets, object I/O over the chunk format), [`rewrap`], [`rekey`],
//!   [`workreq`];
//! - [`command`]: the one command language shared by the CLI and the control file;
//!   [`kms`]: standalone envelope blobs and the key lifecycle over the store;
//! - [`vfs`]: filesystem semantics over the store, with its own reply types, and the
//!   control tree `.envelopefs/`;
//! - [`fuse`]: the thin `fuser::Filesystem` adapter over [`vfs`];

//! - [`mount`]: mounting, unmounting, the mount record; [`cli`]: the thin CLI;
//!   [`mounthelper`]: the mount(8) helper; [`logging`]: stderr or the rotated daemon log;
//!   [`status`]: one look at a store.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cli;
pub mod command;
pub mod crypto;
pub mod error;
pub mod fault;
pub mod format;
pub mod fsck;
pub mod fuse;
pub mod fuzzing;
pub mod headers;
pub mod hygiene;
pub mod keystore;
pub mod kms;
pub mod logging;
pub mod mount;
pub mod mounthelper;
pub mod rekey;
pub mod rewrap;
pub mod status;
pub mod store;
pub mod vfs;
pub mod workreq;

pub use error::{Error, Result};
