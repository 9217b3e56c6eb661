//! Fault injection for tests. It exists only in builds with the cargo feature
//! `fault-injection` (scripts/test.sh turns it on; a release build, the package and
//! `cargo install` do not): there, the environment variable `ENVELOPEFS_FAULT_INJECTION` (a
//! comma-separated list of names), read once per process, switches faults on. Without the
//! feature [`enabled`] is a constant `false` and [`die_mid_write`] does nothing, so the
//! compiler removes every fault and the variable is never read. The faults:
//! - `panic-on-lookup`: a lookup of `envelopefs-fault-panic` panics inside the FUSE handler;
//! - `slow-work-requests`: work requests pause 2 ms per object, so a test can kill the
//!   mount in the middle of one;
//! - `slow-trash`: the trash thread waits 100 ms before each deletion, so deleted objects
//!   are still pending when a test fills the disk or kills the mount;
//! - `rekey-crash-before-rename` / `rekey-crash-after-rename`: a rekey aborts the process
//!   with the new file complete but not in place, or in place with the old file not yet
//!   removed;
//! - `die-mid-write`: a change to an object whose path contains `envelopefs-fault-die` kills
//!   the process with SIGKILL halfway through: a write after a prefix of its bytes that ends
//!   on a page boundary inside a chunk (what a kill during `pwrite` leaves), a shrink between
//!   rewriting the final chunk and cutting the file. With `envelopefs-fault-die-at-N` in the
//!   path, the N-th such change of the process dies instead of the first;
//! - `stall-open`: the first open of an object whose name contains `envelopefs-fault-stall`
//!   stops after opening its backing file (holding what an open holds there), creates
//!   `NAME.stalled` beside the backing file and waits until a test creates `NAME.go` there,
//!   so that a test can do other things while one open is in progress;
//! - `no-journal`: the store runs without its write journal (to measure what it costs, and
//!   to see the crash tests fail without it);
//! - `slower-work-requests`: work requests pause 50 ms per object (one at a time), so a
//!   test can kill the process or Garage nodes in the middle of a job on an object store,
//!   whose requests may take only a few milliseconds each;
//! - `slow-rekey-publish`: a rekey in an object store waits 5 s before its last look at the
//!   object, so a test can change the object meanwhile;
//! - `s3-die-mid-upload` / `s3-fail-mid-upload`: a multipart upload to an object store is
//!   cut off once two parts were sent: the process is killed with SIGKILL (after those
//!   parts were stored), or the third part fails as a cut connection would;
//! - `s3-slow-upload`: each part of a multipart upload waits 1 s before it is sent, so a
//!   test can act while the upload is under way;
//! - `deletion-clock-ahead`: the clock that decides whether a key version's scheduled
//!   deletion is due runs 366 days ahead (and a mount sweeps every second), so tests see a
//!   version destroyed without waiting days. Test-only: it destroys scheduled versions early;
//! - `copy-stall-after-N`: `store copy` stops for good after copying its N-th object (N a
//!   number), having written `fault copy-stall-after-N: stalled` on stderr, so that a test can
//!   kill it at a known point and run it again;
//! - `job-page-N`: a bucket job lists N object names at a time instead of 1,000, so that
//!   tests see a job walk many pages of a small bucket;
//! - `die-after-job-page`: a bucket job saves its progress and kills its process with
//!   SIGKILL once it has handled its first page of objects, so that tests resume a job from
//!   a known resume point.

/// The environment variable.
pub const ENV: &str = "ENVELOPEFS_FAULT_INJECTION";

/// Whether this build has fault injection at all (the cargo feature `fault-injection`).
pub const COMPILED_IN: bool = cfg!(feature = "fault-injection");

/// Whether fault `name` is switched on (never, in a build without `fault-injection`).
#[cfg(feature = "fault-injection")]
pub fn enabled(name: &str) -> bool {
    switched_on().iter().any(|f| f == name)
}

/// The faults switched on in this process.
#[cfg(feature = "fault-injection")]
fn switched_on() -> &'static [String] {
    use std::sync::OnceLock;
    static SET: OnceLock<Vec<String>> = OnceLock::new();
    SET.get_or_init(|| {
        let set: Vec<String> = std::env::var(ENV)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default();
        if !set.is_empty() {
            tracing::warn!("fault injection is on (test build): {}", set.join(","));
        }
        set
    })
}

/// The number N of a switched-on fault named `prefix` + N (`job-page-7`), if one is.
#[cfg(feature = "fault-injection")]
pub fn number(prefix: &str) -> Option<u64> {
    switched_on()
        .iter()
        .find_map(|f| f.strip_prefix(prefix).and_then(|n| n.parse::<u64>().ok()))
}

/// Never a number, in a build without `fault-injection`.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn number(_prefix: &str) -> Option<u64> {
    None
}

/// Whether fault `name` is switched on: never, in a build without `fault-injection`.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn enabled(_name: &str) -> bool {
    false
}

/// The `die-mid-write` fault: if it is on and `label` names a fault object, writes the part of
/// `buf` (meant for `at`) up to the first page boundary after its start (or all of it, if
/// `whole`), then kills this process with SIGKILL.
#[cfg(feature = "fault-injection")]
#[allow(unsafe_code)]
pub fn die_mid_write(label: &str, file: &std::fs::File, buf: &[u8], at: u64, whole: bool) {
    use std::os::unix::fs::FileExt;
    const MARK: &str = "envelopefs-fault-die";
    let Some(at_mark) = label.find(MARK) else {
        return;
    };
    if !enabled("die-mid-write") {
        return;
    }
    let nth: u32 = label[at_mark + MARK.len()..]
        .strip_prefix("-at-")
        .map(|r| {
            r.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|d| d.parse().ok())
        .unwrap_or(1);
    static SEEN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    if SEEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 < nth {
        return;
    }
    let cut = if whole {
        buf.len()
    } else {
        let next_page = (at / 4096 + 1) * 4096;
        usize::try_from(next_page - at).unwrap_or(0).min(buf.len())
    };
    let _ = file.write_all_at(&buf[..cut], at);
    // SAFETY: kill(2) of this very process; it does not return.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

/// The `die-mid-write` fault: nothing, in a build without `fault-injection`.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn die_mid_write(_label: &str, _file: &std::fs::File, _buf: &[u8], _at: u64, _whole: bool) {}

/// The `stall-open` fault: if it is on and `backing` (an object's backing file, being opened)
/// names a fault object, creates `NAME.stalled` beside it and waits until `NAME.go` exists.
#[cfg(feature = "fault-injection")]
pub fn stall_open(backing: &std::path::Path) {
    let Some(name) = backing.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    if !name.contains("envelopefs-fault-stall") || !enabled("stall-open") {
        return;
    }
    let beside = |ext: &str| backing.with_file_name(format!("{name}.{ext}"));
    tracing::warn!("fault stall-open: {name} waits for {name}.go");
    if let Err(e) = std::fs::write(beside("stalled"), b"") {
        tracing::error!("fault stall-open: {e}");
        return;
    }
    while !beside("go").exists() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The `stall-open` fault: nothing, in a build without `fault-injection`.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn stall_open(_backing: &std::path::Path) {}

/// Kills this process with SIGKILL, as a crash would (faults of test builds only).
#[cfg(feature = "fault-injection")]
#[allow(unsafe_code)]
pub fn die_now() -> ! {
    // SAFETY: kill(2) of this very process; it does not return.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}

/// Never called in a build without `fault-injection` (no fault is ever enabled there).
#[cfg(not(feature = "fault-injection"))]
pub fn die_now() -> ! {
    std::process::abort()
}

/// The `copy-stall-after-N` fault: if it is on and `copied` objects have been copied, N of
/// them, says so on stderr and never returns (the test kills the process).
#[cfg(feature = "fault-injection")]
pub fn copy_stall(copied: u64) {
    const NAME: &str = "copy-stall-after-";
    if number(NAME) != Some(copied) {
        return;
    }
    eprintln!("fault {NAME}{copied}: stalled");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// The `copy-stall-after-N` fault: nothing, in a build without `fault-injection`.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn copy_stall(_copied: u64) {}
