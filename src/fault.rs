//! Fault injection for tests, switched on only by the environment variable
//! `ENVELOPEFS_FAULT_INJECTION` (a comma-separated list of names) at process start:
//! - `panic-on-lookup`: a lookup of `envelopefs-fault-panic` panics inside the FUSE handler;
//! - `slow-work-requests`: work requests pause 2 ms per object, so a test can kill the
//!   mount in the middle of one;
//! - `slow-trash`: the trash thread waits 100 ms before each deletion, so deleted objects
//!   are still pending when a test fills the disk or kills the mount.
//! - `deletion-clock-ahead`: the clock that decides whether a key version's scheduled
//!   deletion is due runs 366 days ahead (and a mount sweeps every second), so tests see a
//!   version destroyed without waiting days. Test-only: it destroys scheduled versions early.

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
