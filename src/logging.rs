//! Logging through `tracing`: to stderr in the foreground, and in the background daemon to
//! `STORE/.envelopefs/mount.log`, rotated by size (`mount.log.1` .. `mount.log.N`) so the
//! log never grows without bound.
//!
//! The filter is `--log-level` (which the CLI also hands to the daemon through `RUST_LOG`),
//! else `RUST_LOG`, else `warn` (`info` in the daemon, so the log records mounts and
//! unmounts). Nothing that logs here formats key material: errors name objects, keys by id
//! and versions only.
#![allow(unsafe_code)]

use crate::sync::LockUnpoisoned;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tracing_subscriber::fmt::MakeWriter;

/// Largest size of the daemon's log file before it is rotated.
pub const LOG_MAX_BYTES: u64 = 8 << 20;
/// Rotated files kept beside the live one (`mount.log.1` is the newest).
pub const LOG_KEEP: usize = 3;

/// The filter: `--log-level`, else `RUST_LOG`, else `default`, with fuser's warning about
/// an already-unmounted mountpoint (after `fusermount3 -u`, expected) silenced.
fn filter(level: Option<&str>, default: &str) -> tracing_subscriber::EnvFilter {
    let f = level
        .map(str::to_string)
        .or_else(|| {
            std::env::var("RUST_LOG")
                .ok()
                .filter(|s| !s.trim().is_empty())
        })
        .unwrap_or_else(|| default.to_string());
    tracing_subscriber::EnvFilter::new(format!("{f},fuser::mnt=error"))
}

/// Logging to stderr (the CLI and foreground mounts).
pub fn init_stderr(level: Option<&str>) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(level, "warn"))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Logging of the background daemon: to `log_path`, rotated at [`LOG_MAX_BYTES`]; standard
/// error follows the live file (so a panic message lands beside the log lines). Falls back
/// to stderr if the file cannot be opened.
pub fn init_daemon(level: Option<&str>, log_path: &Path) {
    match RotatingLog::open(log_path, LOG_MAX_BYTES, LOG_KEEP, true) {
        Ok(log) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter(level, "info"))
                .with_writer(log)
                .with_ansi(false)
                .try_init();
        }
        Err(e) => {
            init_stderr(level);
            tracing::warn!("cannot open {}: {e}; logging to stderr", log_path.display());
        }
    }
}

/// Where `envelopefs mount STORE ...` run as the daemon logs: `STORE/.envelopefs/mount.log`.
pub fn daemon_log_path(store: &Path) -> PathBuf {
    store.join(crate::store::META_DIR).join("mount.log")
}

struct LogState {
    file: File,
    len: u64,
}

/// An append-only log file rotated by size: when a write would take it past `max_bytes`,
/// `NAME.(k)` becomes `NAME.(k+1)` (the oldest beyond `keep` is dropped), `NAME` becomes
/// `NAME.1`, and a new `NAME` is started. At most `(keep + 1) * max_bytes` (plus one line)
/// is ever on disk.
pub struct RotatingLog {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    follow_stderr: bool,
    state: Mutex<LogState>,
}

/// Opens a log file for appending, creating it with mode 0600 (whatever the umask).
pub fn open_append(path: &Path) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(crate::store::META_FILE_MODE)
        .open(path)?;
    crate::store::fsutil::set_mode(&f, crate::store::META_FILE_MODE)?;
    Ok(f)
}

/// Points file descriptor 2 at `f`.
fn redirect_stderr(f: &File) {
    // SAFETY: dup2 of a valid, open descriptor owned by `f` onto fd 2; it neither closes nor
    // takes ownership of `f`'s descriptor, and fd 2 is the process's stderr, which nothing
    // in this process owns as a Rust object.
    unsafe {
        libc::dup2(f.as_raw_fd(), 2);
    }
}

impl RotatingLog {
    /// Opens (appending to) `path`. With `follow_stderr`, standard error is pointed at the
    /// live file at every rotation.
    pub fn open(
        path: &Path,
        max_bytes: u64,
        keep: usize,
        follow_stderr: bool,
    ) -> std::io::Result<Self> {
        let file = open_append(path)?;
        let len = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1),
            keep: keep.max(1),
            follow_stderr,
            state: Mutex::new(LogState { file, len }),
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&self, st: &mut LogState) -> std::io::Result<()> {
        let _ = std::fs::remove_file(self.rotated(self.keep));
        for n in (1..self.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        st.file = open_append(&self.path)?;
        st.len = 0;
        if self.follow_stderr {
            redirect_stderr(&st.file);
        }
        Ok(())
    }

    fn write_line(&self, buf: &[u8]) -> std::io::Result<()> {
        let mut st = self.state.lock_unpoisoned();
        if st.len > 0 && st.len + buf.len() as u64 > self.max_bytes {
            // A failed rotation keeps writing to the current file rather than losing lines.
            let _ = self.rotate(&mut st);
        }
        st.file.write_all(buf)?;
        st.len += buf.len() as u64;
        Ok(())
    }
}

/// One event's writer (the fmt layer writes each formatted line in one call).
pub struct LogWriter<'a>(&'a RotatingLog);

impl Write for LogWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_line(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for RotatingLog {
    type Writer = LogWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        LogWriter(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mount.log");
        let log = RotatingLog::open(&path, 1000, 3, false).unwrap();
        for i in 0..200 {
            let mut line = vec![b'x'; 99];
            line.extend_from_slice(format!("{i}\n").as_bytes());
            log.make_writer().write_all(&line).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["mount.log", "mount.log.1", "mount.log.2", "mount.log.3"]
        );
        for n in &names {
            let len = std::fs::metadata(dir.path().join(n)).unwrap().len();
            assert!(len <= 1000, "{n} is {len} bytes");
        }
        // The newest lines are in the live file, the ones before them in .1.
        let live = std::fs::read_to_string(&path).unwrap();
        assert!(live.ends_with("199\n"), "{live}");
        let older = std::fs::read_to_string(dir.path().join("mount.log.1")).unwrap();
        let last_old: u32 = older.lines().last().unwrap()[99..].parse().unwrap();
        let first_live: u32 = live.lines().next().unwrap()[99..].parse().unwrap();
        assert_eq!(last_old + 1, first_live);
    }

    #[test]
    fn an_oversized_existing_log_is_rotated_at_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mount.log");
        std::fs::write(&path, vec![b'o'; 5000]).unwrap();
        let log = RotatingLog::open(&path, 1000, 2, false).unwrap();
        log.make_writer().write_all(b"fresh\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "fresh\n");
        assert_eq!(
            std::fs::metadata(dir.path().join("mount.log.1"))
                .unwrap()
                .len(),
            5000
        );
    }
}
