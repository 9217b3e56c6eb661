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
    let lease = Lease::acquire(backend.client(), &lease_key(at), &at.display(), what)?;
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

/// The key of a store's lease.
fn lease_key(at: &S3Location) -> String {
    crate::store::s3::lease::key_of(at)
}

/// The global flags that reach the same object store, for a process started again.
fn s3_globals(cli: &Cli) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    for (flag, v) in [
        ("--endpoint-url", &cli.endpoint_url),
        ("--region", &cli.region),
        ("--profile", &cli.profile),
    ] {
        if let Some(v) = v {
            out.push(flag.into());
            out.push(v.into());
        }
    }
    out
}

/// The log of a background mount of `at` (its daemon's stderr): in the staging directory,
/// named after the store.
pub fn mount_log(at: &S3Location) -> PathBuf {
    let name: String = at
        .display()
        .trim_start_matches("s3://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    staging_dir().join(format!("envelopefs-mount-{name}.log"))
}

/// How long attributes and listings of an object store mount are cached:
/// `ENVELOPEFS_S3_CACHE_SECONDS`, else [`crate::store::s3::names::DEFAULT_TTL`].
fn cache_ttl() -> Result<std::time::Duration> {
    match std::env::var("ENVELOPEFS_S3_CACHE_SECONDS") {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .map(std::time::Duration::from_secs)
            .map_err(|_| {
                Error::InvalidArgument(format!(
                    "ENVELOPEFS_S3_CACHE_SECONDS={v:?}: write a whole number of seconds"
                ))
            }),
        Err(_) => Ok(crate::store::s3::names::DEFAULT_TTL),
    }
}

/// `envelopefs mount s3://BUCKET[/PREFIX] MNT`: as the background daemon, in the foreground,
/// or by starting that daemon. The mount holds the store's lease (with its mountpoint, so
/// commands on this host go through it) until it ends.
pub fn mount_object_store(cli: &Cli, at: &S3Location, args: &super::MountArgs) -> Result<()> {
    let mnt = std::fs::canonicalize(&args.mountpoint)
        .map_err(|e| Error::io(format!("resolving {}", args.mountpoint.display()), e))?;
    let mnt_text = mnt.display().to_string();
    let ttl = cache_ttl()?;
    let mut open = |secret: &crate::keys::keystore::Secret| -> Result<crate::daemon::Served> {
        let backend = backend(cli, at)?;
        crate::store::check_xattr_support(backend.staging())?;
        Store::read_config_from(&*backend)?;
        let lease = Lease::acquire_for(
            backend.client(),
            &lease_key(at),
            &at.display(),
            "envelopefs mount",
            Some(&mnt_text),
        )?;
        abort_stale_uploads(&lease, at);
        let names = Arc::new(crate::store::s3::names::S3Names::new(
            Arc::clone(&backend),
            ttl,
        ));
        let store = Store::open_on(backend, Some(Box::new(lease)), secret)?.with_names(names);
        Ok(crate::daemon::Served {
            store,
            root: None,
            location: at.display(),
        })
    };
    if std::env::var_os(crate::daemon::DAEMON_ENV).is_some() {
        return crate::daemon::run_daemon_with(&mnt, &args.options, &mut open);
    }
    // Fail fast, before asking for a secret: the store must be there and not in use.
    let b = backend(cli, at)?;
    let cfg = Store::read_config_from(&*b)?;
    if let Some(held) = Lease::live_holder(b.client(), &lease_key(at))? {
        return Err(Error::Busy(format!(
            "{} is in use by `{}` (pid {} on {}){}",
            at.display(),
            held.what,
            held.pid,
            held.host,
            held.mountpoint
                .map(|m| format!(", mounted at {m}"))
                .unwrap_or_default()
        )));
    }
    let secret = secret::for_open(cli, &cfg.key_source)?;
    if args.foreground {
        let mut once = || open(&secret);
        return crate::daemon::serve_with(&mut once, &mnt, &args.options, false);
    }
    let log = mount_log(at);
    if let Some(d) = log.parent() {
        std::fs::create_dir_all(d)
            .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
    }
    crate::daemon::spawn_with(
        std::ffi::OsStr::new(&at.display()),
        &s3_globals(cli),
        &log,
        &mnt,
        &args.options,
        &secret,
    )
}

/// The mountpoint of a live mount of `at` on this host, if its lease says there is one and
/// it is still mounted there.
pub fn live_mount(cli: &Cli, at: &S3Location) -> Result<Option<PathBuf>> {
    let b = backend(cli, at)?;
    let Some(held) = Lease::live_holder(b.client(), &lease_key(at))? else {
        return Ok(None);
    };
    let here = Lease::is_this_host(&held);
    let Some(m) = held.mountpoint.filter(|_| here) else {
        return Ok(None);
    };
    let mnt = PathBuf::from(m);
    let source = crate::store::lock::mounted_store(&mnt);
    Ok((source.as_deref() == Some(Path::new(&at.display()))).then_some(mnt))
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
