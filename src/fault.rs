//! Fault injection for tests, switched on only by the environment variable
//! `ENVELOPEFS_FAULT_INJECTION` (a comma-separated list of names) at process start:
//! - `panic-on-lookup`: a lookup of `envelopefs-fault-panic` panics inside the FUSE handler;
//! - `slow-work-requests`: work requests pause 2 ms per object, so a test can kill the
//!   mount in the middle of one;
//! - `slow-trash`: the trash thread waits 100 ms before each deletion, so deleted objects
//!   are still pending when a test fills the disk or kills the mount;
//! - `rekey-crash-before-rename` / `rekey-crash-after-rename`: a rekey aborts the process
//!   with the new file complete but not in place, or in place with the old file not yet
//!   removed.

use std::sync::OnceLock;

/// The environment variable.
pub const ENV: &str = "ENVELOPEFS_FAULT_INJECTION";

/// Whether fault `name` is switched on.
pub fn enabled(name: &str) -> bool {
    static SET: OnceLock<Vec<String>> = OnceLock::new();
    SET.get_or_init(|| {
        std::env::var(ENV)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default()
    })
    .iter()
    .any(|f| f == name)
}
