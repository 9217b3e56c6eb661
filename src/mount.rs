//! Mounting and unmounting (the FUSE side comes with the mount issue).

use crate::cli::{Cli, MountArgs};
use crate::error::{Error, Result};
use std::path::Path;

/// Sets up logging to stderr, filtered by `--log-level` or `RUST_LOG`.
pub fn init_logging(level: Option<&str>) {
    let filter = level
        .map(str::to_string)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "warn".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

/// `envelopefs mount`.
pub fn run_mount_command(_cli: &Cli, _args: &MountArgs) -> Result<()> {
    Err(Error::Unsupported(
        "mount is not available in this build".into(),
    ))
}

/// `envelopefs unmount`.
pub fn unmount(_mountpoint: &Path) -> Result<()> {
    Err(Error::Unsupported(
        "unmount is not available in this build".into(),
    ))
}
