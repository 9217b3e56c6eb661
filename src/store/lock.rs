//! The store's lock: one exclusive flock on `STORE/.envelopefs/lock`, held by the one process
//! using the store (a mount daemon, or an offline command), and the one way every command
//! takes it.
//!
//! A process that finds the lock held asks who holds it ([`holder`]). A daemon serving a live
//! mount is refused at once ("store is mounted at MNT"). A daemon whose mountpoint is gone
//! (`fusermount3 -u`, `umount`, a signal) is only finishing its shutdown (final sync, then
//! exit): the command waits for it, saying so once on stderr, for at most
//! [`SHUTDOWN_WAIT`]. The rule is in docs/DECISIONS.md ("Unmount, then use the store at
//! once").

use super::{fsutil, META_DIR, META_FILE_MODE};
use crate::error::{Error, IoContext, Result};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest a command waits for a daemon whose mount is gone to let go of the store.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(60);
/// How long a lock held with no mount record is retried before the command is refused: the
/// moment between a daemon removing its record and exiting.
const NO_RECORD_GRACE: Duration = Duration::from_millis(500);
const POLL: Duration = Duration::from_millis(50);

/// The mount record's name in `STORE/.envelopefs`.
pub const MOUNT_RECORD: &str = "mount.json";

/// A held exclusive lock on a store (released when dropped or when the process dies).
pub struct StoreLock {
    _file: File,
}

/// How a command that finds the lock held behaves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// A store command: waits (saying so on stderr) only for a daemon whose mount is gone;
    /// any other holder is refused.
    Command,
    /// `envelopefs unmount`, which has just unmounted the holder: waits quietly for it,
    /// record or not.
    Unmount,
}

impl StoreLock {
    /// Takes the store's lock (creating the lock file, mode 0600). A live mount of the store is
    /// refused at once with where it is mounted; a daemon whose mount is gone is waited for.
    pub fn acquire(root: &Path) -> Result<Self> {
        Self::acquire_with(root, Patience::Command)
    }

    /// [`StoreLock::acquire`] with the given [`Patience`].
    pub fn acquire_with(root: &Path, patience: Patience) -> Result<Self> {
        let file = open_lock_file(root)?;
        wait_for(root, file, patience).map(|f| StoreLock { _file: f })
    }

    /// For `fsck`, which never writes to the store: takes the lock only if the lock file
    /// exists (`None` if it does not), and needs only `STORE/.envelopefs`, not a readable
    /// config. Waits like [`StoreLock::acquire`].
    pub fn acquire_existing(root: &Path) -> Result<Option<Self>> {
        if !root.join(META_DIR).is_dir() {
            return Err(Error::NotFound(format!(
                "{} is not an envelopefs store (no {META_DIR}/)",
                root.display()
            )));
        }
        let path = root.join(META_DIR).join("lock");
        let file = match OpenOptions::new().read(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
        };
        wait_for(root, file, Patience::Command).map(|f| Some(StoreLock { _file: f }))
    }

    /// For a store being written by `store copy`, which has no config until the copy ends:
    /// takes the lock like [`StoreLock::acquire`] (refusing a live mount, waiting for a
    /// daemon shutting down), creating the lock file in `STORE/.envelopefs` (which must
    /// exist) whether or not there is a config yet.
    pub fn acquire_incomplete(root: &Path) -> Result<Self> {
        let file = create_lock_file(root)?;
        wait_for(root, file, Patience::Command).map(|f| StoreLock { _file: f })
    }

    /// Takes the lock if it is free, without waiting: `None` if another process holds it.
    pub fn try_acquire(root: &Path) -> Result<Option<Self>> {
        let file = open_lock_file(root)?;
        if fsutil::try_flock_exclusive(&file).ctx(|| "locking the store".to_string())? {
            return Ok(Some(StoreLock { _file: file }));
        }
        Ok(None)
    }
}

fn open_lock_file(root: &Path) -> Result<File> {
    let meta = root.join(META_DIR);
    if !meta.join("config.json").exists() {
        return Err(Error::NotFound(format!(
            "{} is not an envelopefs store (no {META_DIR}/config.json)",
            root.display()
        )));
    }
    create_lock_file(root)
}

/// Opens (creating it if need be, mode 0600) `STORE/.envelopefs/lock`.
fn create_lock_file(root: &Path) -> Result<File> {
    let path = root.join(META_DIR).join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(META_FILE_MODE)
        .open(&path)
        .ctx(|| format!("opening {}", path.display()))?;
    fsutil::set_mode(&file, META_FILE_MODE)
        .ctx(|| format!("setting the mode of {}", path.display()))?;
    Ok(file)
}

/// Takes the flock on `file`, waiting as `patience` says while its holder shuts down.
fn wait_for(root: &Path, file: File, patience: Patience) -> Result<File> {
    let start = Instant::now();
    // The daemon waited for (pid, mountpoint), once it has been seen shutting down.
    let mut waiting: Option<(u32, String)> = None;
    loop {
        if fsutil::try_flock_exclusive(&file).ctx(|| "locking the store".to_string())? {
            return Ok(file);
        }
        match holder(root) {
            Holder::Mounted { mountpoint } => {
                return Err(Error::Busy(format!("store is mounted at {mountpoint}")));
            }
            Holder::ShuttingDown { mountpoint, pid } => {
                if waiting.is_none() && patience == Patience::Command {
                    eprintln!(
                        "envelopefs: {mountpoint} is unmounted; waiting for its daemon (pid {pid}) \
                         to finish shutting down and let go of the store (at most {} s)",
                        SHUTDOWN_WAIT.as_secs()
                    );
                }
                waiting = Some((pid, mountpoint));
            }
            // A daemon removes its record just before it exits: once seen shutting down (or
            // just unmounted by `envelopefs unmount`), a holder without a record is that
            // daemon exiting.
            Holder::Other => {
                if waiting.is_none()
                    && patience == Patience::Command
                    && start.elapsed() >= NO_RECORD_GRACE
                {
                    return Err(Error::Busy(
                        "store is in use by another envelopefs process".into(),
                    ));
                }
            }
        }
        if start.elapsed() >= SHUTDOWN_WAIT {
            let who = match &waiting {
                Some((pid, mnt)) => format!("the daemon (pid {pid}) of the unmounted {mnt}"),
                None => "the daemon of the unmounted store".to_string(),
            };
            return Err(Error::TimedOut(format!(
                "{who} still holds the store after {} s; try again once it has exited \
                 ({META_DIR}/mount.log says what it is doing)",
                SHUTDOWN_WAIT.as_secs()
            )));
        }
        std::thread::sleep(POLL);
    }
}

/// Who holds a store's lock, as seen by a process that could not take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A daemon serving a live mount of the store at `mountpoint`.
    Mounted {
        /// Where the store is mounted.
        mountpoint: String,
    },
    /// A daemon (alive) whose mountpoint is no longer a mount of this store: it is finishing
    /// its shutdown.
    ShuttingDown {
        /// Where the store was mounted.
        mountpoint: String,
        /// The daemon's pid.
        pid: u32,
    },
    /// No live daemon's record: an offline command, a daemon starting or exiting.
    Other,
}

/// The mount record (`mount.json`) a live mount writes once mounted and removes as the last
/// thing before it exits. Read and written only here.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountRecord {
    /// The mountpoint.
    pub mountpoint: String,
    /// The daemon's pid (absent in records of old versions).
    #[serde(default)]
    pub pid: Option<u32>,
    /// The store's directory.
    #[serde(default)]
    pub store: Option<String>,
}

fn record_path(root: &Path) -> PathBuf {
    root.join(META_DIR).join(MOUNT_RECORD)
}

/// The store's mount record, if there is one that parses.
pub fn read_mount_record(root: &Path) -> Option<MountRecord> {
    let bytes = fs::read(record_path(root)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes the mount record (atomically, mode 0600); only the holder of the store's lock.
pub fn write_mount_record(root: &Path, rec: &MountRecord) -> Result<()> {
    let bytes = serde_json::to_vec(rec)
        .map_err(|e| Error::InvalidArgument(format!("encoding the mount record: {e}")))?;
    fsutil::write_atomic(&record_path(root), &bytes, META_FILE_MODE)
}

/// Removes the mount record; only the holder of the store's lock (a new mount's record must
/// never be removed by someone else).
pub fn remove_mount_record(root: &Path) {
    let _ = fs::remove_file(record_path(root));
}

/// Where the store is mounted, if a mount recorded itself (`mount.json`).
pub fn mount_record(root: &Path) -> Option<String> {
    read_mount_record(root).map(|r| r.mountpoint)
}

/// Who holds the lock of `root` (call it after failing to take the lock). The record's
/// daemon must be alive; it serves a live mount if its mountpoint is an envelopefs mount of
/// this store in its own mount table (`/proc/PID/mountinfo`, or this process's where that
/// cannot be read).
pub fn holder(root: &Path) -> Holder {
    let Some(rec) = read_mount_record(root) else {
        return Holder::Other;
    };
    let Some(pid) = rec.pid.filter(|p| alive(*p)) else {
        return Holder::Other;
    };
    let info = fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .or_else(|_| fs::read_to_string("/proc/self/mountinfo"))
        .unwrap_or_default();
    let source = fs::canonicalize(root)
        .map(|r| format!("envelopefs:{}", r.display()))
        .unwrap_or_default();
    let mounted = sources_at(&info, Path::new(&rec.mountpoint)).contains(&source);
    if mounted {
        Holder::Mounted {
            mountpoint: rec.mountpoint,
        }
    } else {
        Holder::ShuttingDown {
            mountpoint: rec.mountpoint,
            pid,
        }
    }
}

/// Whether process `pid` (of this host) exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')' (comm may hold any byte).
    let state = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 1..))
        .and_then(|rest| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

/// The sources of the mounts at `mnt` in a mountinfo text, bottom to top.
pub fn sources_at(mountinfo: &str, mnt: &Path) -> Vec<String> {
    let target = mnt.to_string_lossy();
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.get(4).map(|m| unescape(m)).as_deref() != Some(&*target) {
            continue;
        }
        if let Some(source) = fields.get(sep + 2) {
            out.push(unescape(source));
        }
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The `envelopefs:STORE` source of the mount at `mnt` in this process's mount table (the
/// top one where mounts are stacked), if it is an envelopefs mount.
pub fn mounted_store(mnt: &Path) -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    sources_at(&info, mnt)
        .pop()?
        .strip_prefix("envelopefs:")
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
36 25 0:32 / /mnt/a rw,nosuid - fuse.envelopefs envelopefs:/srv/store rw,user_id=0
37 25 0:33 / /mnt/with\\040space rw - fuse.envelopefs envelopefs:/srv/my\\040store rw
38 36 0:34 / /mnt/a rw - tmpfs tmpfs rw
";

    #[test]
    fn sources_are_read_bottom_to_top_and_unescaped() {
        assert_eq!(
            sources_at(INFO, Path::new("/mnt/a")),
            ["envelopefs:/srv/store", "tmpfs"]
        );
        assert_eq!(
            sources_at(INFO, Path::new("/mnt/with space")),
            ["envelopefs:/srv/my store"]
        );
        assert!(sources_at(INFO, Path::new("/mnt")).is_empty());
    }

    #[test]
    fn this_process_is_alive_and_a_free_pid_is_not() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX));
    }
}
