//! envelopefs: an encrypted FUSE filesystem with one data key per file, wrapped under
//! versioned master keys, so that re-encrypting a bucket after a key rotation rewrites small
//! headers and never the data.
//!
//! The layers show in the module names, bottom up; each uses only those below it
//! (docs/ARCHITECTURE.md):
//! - [`format`]: bytes, the only byte encoding, pinned by golden vectors;
//! - [`keys`]: the cryptographic primitives and the sealed keystore of master keys;
//! - [`store`]: storage (config, lock, buckets, object I/O over the chunk format, journal);
//! - [`ops`]: operations over a store (rewrap, rekey, work requests, kms, fsck, headers,
//!   status);
//! - [`command`]: the one command language shared by the CLI and the control file;
//! - [`vfs`]: filesystem semantics over the store, with its control tree `.envelopefs/`;
//! - [`fuse`]: the thin `fuser::Filesystem` adapter over [`vfs`];
//! - [`daemon`]: mounting, serving and unmounting;
//! - [`cli`]: the command line (and the mount(8) helper).
//!
//! Beside them, used by any layer: [`error`] (the one errno table), [`fault`] (fault
//! injection, test builds only), [`hygiene`] (memory locking and wiping), [`logging`], and
//! [`fuzzing`] (entry points for the fuzz targets).
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cli;
pub mod command;
pub mod daemon;
pub mod error;
pub mod fault;
pub mod format;
pub mod fuse;
pub mod fuzzing;
pub mod hygiene;
pub mod keys;
pub mod logging;
pub mod ops;
pub mod store;
pub mod sync;
pub mod vfs;

pub use error::{Error, Result};
