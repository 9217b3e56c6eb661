//! Where a store is, as the user wrote it: a local directory, or `s3://BUCKET[/PREFIX]` in an
//! S3-compatible object store reached the way S3 tools reach one (`--endpoint-url` or
//! `AWS_ENDPOINT_URL`, `--region` or `AWS_REGION`, `--profile` or `AWS_PROFILE`, credentials
//! from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` or the shared files; never a secret on
//! the command line).

use super::{secret, Cli, Top};
use crate::command::StoreCommand;
use crate::error::{Error, Result};
use crate::store::s3::backend::{ObjectStoreBackend, S3Location};
use crate::store::s3::client::{S3Client, S3Options};
use crate::store::s3::lease::Lease;
use crate::store::Store;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A store's place.
pub enum Where<'a> {
    /// A local directory.
    Local(&'a Path),
    /// An object store.
    ObjectStore(S3Location),
}

/// Tells `s3://...` from a local path.
pub fn classify(p: &Path) -> Result<Where<'_>> {
    match p.to_str().and_then(S3Location::parse) {
        Some(at) => Ok(Where::ObjectStore(at?)),
        None => Ok(Where::Local(p)),
    }
}

/// Where objects being created and bodies being read are staged (ciphertext only, in
/// unnamed files that vanish when closed): `ENVELOPEFS_STAGING_DIR`, else the temp dir.
fn staging_dir() -> PathBuf {
    std::env::var_os("ENVELOPEFS_STAGING_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// The backend of a store in an object store (nothing is read yet).
pub fn backend(cli: &Cli, at: &S3Location) -> Result<Arc<ObjectStoreBackend>> {
    let opts = S3Options {
        endpoint_url: cli.endpoint_url.clone(),
        region: cli.region.clone(),
        profile: cli.profile.clone(),
    };
    let client = S3Client::connect(&at.bucket, &opts)?;
    Ok(Arc::new(ObjectStoreBackend::new(
        client,
        at.clone(),
        staging_dir(),
    )))
}

/// Opens a store in an object store for a command: its config first (a wrong endpoint,
/// credentials or address fails before any secret is asked for), then its single-writer
/// lease (a clear error naming the holder if another process has it), then the secret.
/// Holding the lease, it aborts the unfinished uploads earlier holders left (not for `fsck`,
/// which reports them and changes nothing).
pub fn open_object_store(cli: &Cli, at: &S3Location, what: &str) -> Result<Store> {
    let backend = backend(cli, at)?;
    let cfg = Store::read_config_from(&*backend)?;
    let lease_key = crate::store::s3::lease::key_of(at);
    let lease = Lease::acquire(backend.client(), &lease_key, &at.display(), what)?;
    if !matches!(cli.command, Top::Store(StoreCommand::Fsck(_))) {
        abort_stale_uploads(&lease, at);
    }
    let secret = secret::for_open(cli, &cfg.key_source)?;
    Store::open_on(backend, Some(Box::new(lease)), &secret)
}

/// Aborts the unfinished uploads under the store's prefix that earlier holders of the lease
/// left (docs/DECISIONS.md, "unfinished uploads"). Housekeeping: a failure is a warning, the
/// command goes on.
fn abort_stale_uploads(lease: &Lease, at: &S3Location) {
    match lease.abort_stale_uploads(&at.key("")) {
        Ok(aborted) => {
            for u in aborted {
                tracing::warn!(
                    "{}: aborted an unfinished upload of {} (initiated {}) that an earlier \
                     process left",
                    at.display(),
                    u.key,
                    u.initiated_text
                );
            }
        }
        Err(e) => tracing::warn!(
            "{}: the unfinished uploads of earlier processes were not aborted: {e}",
            at.display()
        ),
    }
}

/// Refuses what only a local store can do yet.
pub fn local_only<'a>(w: Where<'a>, what: &str) -> Result<&'a Path> {
    match w {
        Where::Local(p) => Ok(p),
        Where::ObjectStore(at) => Err(Error::Unsupported(format!(
            "{what} is not supported on a store in an object store ({}) yet",
            at.display()
        ))),
    }
}
