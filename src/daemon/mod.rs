//! Mounting and unmounting: the background daemon, the mount record, signals.
//!
//! `envelopefs mount` without `--foreground` starts itself again in the foreground as a
//! daemon (its own process group, stderr to `STORE/.envelopefs/mount.log`), hands it the
//! secret on a pipe, and returns once the daemon reports the mount usable.
#![allow(unsafe_code)]

use crate::error::{Error, IoContext, Result};
use crate::fuse::EnvelopeFuse;
use crate::keys::keystore::Secret;
use crate::store::lock::Patience;
use crate::store::{Store, StoreLock, META_DIR};
use crate::vfs::{Vfs, VfsOptions};
use fuser::{Config, MountOption, SessionACL};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Set in the environment of the background daemon.
pub const DAEMON_ENV: &str = "ENVELOPEFS_DAEMON";

/// How to serve a mount: the `mount` flags that reach the daemon (the CLI flattens them into
/// its `mount` command and hands them to [`serve`], [`spawn`] or [`run_daemon`]).
#[derive(Debug, Clone, clap::Args)]
pub struct MountOptions {
    /// Let other users access the mount (needs root or user_allow_other).
    #[arg(long)]
    pub allow_other: bool,
    /// Mount read-only.
    #[arg(long)]
    pub read_only: bool,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Have the kernel check file modes on every access. Always so with --allow-other or
    /// when not run as root; a root-only mount (root, no --allow-other) leaves it off unless
    /// asked, since only root reaches it (see docs/DECISIONS.md).
    #[arg(long)]
    pub default_permissions: bool,
    /// A kernel mount flag: nodev, nosuid, noexec, dev, suid or exec (repeatable).
    #[arg(long, value_name = "FLAG", value_parser = KERNEL_OPTIONS)]
    pub kernel_option: Vec<String>,
}

/// The kernel mount flags `--kernel-option` (and the mount(8) helper's `-o`) take.
pub const KERNEL_OPTIONS: [&str; 6] = ["nodev", "nosuid", "noexec", "dev", "suid", "exec"];

/// The fuser mount option of a kernel flag from [`KERNEL_OPTIONS`].
pub fn kernel_option(name: &str) -> Option<MountOption> {
    Some(match name {
        "nodev" => MountOption::NoDev,
        "nosuid" => MountOption::NoSuid,
        "noexec" => MountOption::NoExec,
        "dev" => MountOption::Dev,
        "suid" => MountOption::Suid,
        "exec" => MountOption::Exec,
        _ => return None,
    })
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(p).ctx(|| format!("resolving {}", p.display()))
}

fn encode_secret(s: &Secret) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::new());
    match s {
        Secret::Passphrase(p) => {
            v.push(b'P');
            v.extend_from_slice(p);
        }
        Secret::KeyFile(k) => {
            v.push(b'K');
            v.extend_from_slice(k.expose());
        }
    }
    v
}

fn decode_secret(v: &[u8]) -> Result<Secret> {
    match v.split_first() {
        Some((b'P', p)) => Ok(Secret::Passphrase(Zeroizing::new(p.to_vec()))),
        Some((b'K', k)) => Ok(Secret::KeyFile(crate::keys::crypto::parse_key_file(k)?)),
        _ => Err(Error::InvalidArgument("daemon: no secret on stdin".into())),
    }
}

/// Starts the mount daemon of a local store (see [`spawn_with`]); its log is the store's
/// mount.log.
pub fn spawn(root: &Path, mnt: &Path, args: &MountOptions, secret: &Secret) -> Result<()> {
    let log_path = root.join(META_DIR).join("mount.log");
    spawn_with(root.as_os_str(), &[], &log_path, mnt, args, secret)
}

/// Starts the mount daemon (this binary again, with the global flags `globals`, `mount STORE
/// MNT --foreground` in its own process group, stderr to `log_path`), hands it the secret on
/// a pipe and returns once it reports the mount usable.
pub fn spawn_with(
    store: &std::ffi::OsStr,
    globals: &[std::ffi::OsString],
    log_path: &Path,
    mnt: &Path,
    args: &MountOptions,
    secret: &Secret,
) -> Result<()> {
    let exe = std::env::current_exe().ctx(|| "finding the envelopefs binary".to_string())?;
    let log =
        crate::logging::open_append(log_path).ctx(|| format!("opening {}", log_path.display()))?;
    let mut cmd = Command::new(exe);
    cmd.args(globals);
    cmd.arg("mount").arg(store).arg(mnt).arg("--foreground");
    cmd.arg("--threads").arg(args.threads.to_string());
    if args.allow_other {
        cmd.arg("--allow-other");
    }
    if args.read_only {
        cmd.arg("--read-only");
    }
    if args.default_permissions {
        cmd.arg("--default-permissions");
    }
    for o in &args.kernel_option {
        cmd.arg("--kernel-option").arg(o);
    }
    cmd.env(DAEMON_ENV, "1")
        .env_remove("ENVELOPEFS_PASSWORD_FILE")
        .env_remove("ENVELOPEFS_KEY_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .ctx(|| "starting the mount daemon".to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&encode_secret(secret))
            .ctx(|| "handing the secret to the daemon".to_string())?;
    }
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::InvalidArgument("daemon has no stdout".into()))?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .ctx(|| "waiting for the mount daemon".to_string())?;
    if line.trim() == "READY" {
        return Ok(());
    }
    let _ = child.wait();
    let msg = line
        .trim()
        .strip_prefix("ERROR: ")
        .map(str::to_string)
        .unwrap_or_else(|| format!("the mount daemon exited; see {}", log_path.display()));
    Err(Error::InvalidArgument(msg))
}

/// The background daemon's side of [`spawn`] for a local store: reads the secret from stdin,
/// then serves.
pub fn run_daemon(root: &Path, mnt: &Path, args: &MountOptions) -> Result<()> {
    run_daemon_with(mnt, args, &mut |secret| open_local(root, secret))
}

/// The background daemon's side of [`spawn_with`]: reads the secret from stdin, then serves
/// the store `open` opens with it.
pub fn run_daemon_with(
    mnt: &Path,
    args: &MountOptions,
    open: &mut dyn FnMut(&Secret) -> Result<Served>,
) -> Result<()> {
    let mut buf = Zeroizing::new(Vec::new());
    std::io::stdin()
        .read_to_end(&mut buf)
        .ctx(|| "reading the secret".to_string())?;
    let res = decode_secret(&buf).and_then(|s| serve_with(&mut || open(&s), mnt, args, true));
    if let Err(e) = &res {
        println!("ERROR: {e}");
        tracing::error!("mount failed: {e}");
    }
    res
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local, zero-initialized set; pthread_sigmask on the
    // current thread with a valid set pointer.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> bool {
    let ts = libc::timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(1),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    // SAFETY: set and ts are valid; a null siginfo pointer is allowed.
    let r = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    r > 0
}

fn harden_process() {
    // SAFETY: plain system calls with valid arguments; failures are ignored on purpose
    // (best effort: not every environment allows them).
    unsafe {
        // No core dumps of a process holding keys.
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The session's notifier, as the vfs asks for it.
struct KernelNotifier(fuser::Notifier);

impl crate::vfs::Notify for KernelNotifier {
    fn inval_entry(&self, parent: u64, name: &std::ffi::OsStr) {
        let _ = self.0.inval_entry(fuser::INodeNo(parent), name);
    }
}

/// An opened store, as a mount serves it.
pub struct Served {
    /// The store, with what keeps other writers out (the local lock, an object store's lease).
    pub store: Store,
    /// A local store's directory (its mount record lives there); None for an object store.
    pub root: Option<PathBuf>,
    /// The store's location as users write it (the mount's source in mountinfo).
    pub location: String,
}

/// Opens a local store for a mount: its lock, then the store.
fn open_local(root: &Path, secret: &Secret) -> Result<Served> {
    let lock = StoreLock::acquire(root)?;
    Ok(Served {
        store: Store::open(root, lock, secret)?,
        root: Some(root.to_path_buf()),
        location: root.display().to_string(),
    })
}

/// Mounts the local store `root` at `mnt` and serves it (see [`serve_with`]).
pub fn serve(
    root: &Path,
    mnt: &Path,
    args: &MountOptions,
    secret: &Secret,
    daemon: bool,
) -> Result<()> {
    serve_with(&mut || open_local(root, secret), mnt, args, daemon)
}

/// Mounts the store `open` opens at `mnt` and serves it until it is unmounted or signalled
/// (`daemon`: report READY or ERROR on stdout for [`spawn`]).
pub fn serve_with(
    open: &mut dyn FnMut() -> Result<Served>,
    mnt: &Path,
    args: &MountOptions,
    daemon: bool,
) -> Result<()> {
    // Before any thread exists, so every thread inherits the mask and only the main thread
    // (in sigtimedwait) receives SIGINT/SIGTERM/SIGHUP.
    let set = block_signals();
    // Callers' modes reach the backing files as asked, and the store's own files get theirs
    // without a chmod: cleared before the store is opened, so that the umask the store layer
    // reads once (store::fsutil::process_umask) is this one.
    // SAFETY: umask has no preconditions.
    unsafe {
        libc::umask(0);
    }
    let served = open()?;
    let store = Arc::new(served.store);
    let root = served.root;
    let location = served.location;
    // Key versions whose deletion date passed while the store was closed go now.
    crate::ops::kms::destroy_due_logged(&store);
    // After the keystore is open: its master keys are in the pages mlockall(MCL_CURRENT)
    // locks (see hygiene.rs for why not MCL_FUTURE).
    crate::hygiene::protect_process();
    harden_process();
    let opts = VfsOptions {
        read_only: args.read_only,
        // Off by default (docs/CACHING.md): ENVELOPEFS_WRITEBACK_CACHE=1 turns it on.
        writeback_cache: std::env::var_os("ENVELOPEFS_WRITEBACK_CACHE").is_some_and(|v| v == "1"),
        // SAFETY: geteuid has no preconditions.
        kernel_checks: args.default_permissions
            || args.allow_other
            || unsafe { libc::geteuid() } != 0,
    };
    let vfs = Vfs::new(store.clone(), opts)?;
    if !args.read_only {
        vfs.start_workers()?;
    }
    let mut options = vec![
        MountOption::FSName(format!("envelopefs:{location}")),
        MountOption::Subtype("envelopefs".into()),
        MountOption::NoAtime,
    ];
    if opts.kernel_checks {
        options.push(MountOption::DefaultPermissions);
    }
    if args.read_only {
        options.push(MountOption::RO);
    }
    // SAFETY: geteuid has no preconditions. As root, fuser calls mount(2) itself with type
    // "fuse"; the kernel's own subtype option makes it fuse.envelopefs in mountinfo.
    if unsafe { libc::geteuid() } == 0 {
        options.push(MountOption::CUSTOM("subtype=envelopefs".into()));
    }
    options.extend(args.kernel_option.iter().filter_map(|o| kernel_option(o)));
    let mut config = Config::default();
    config.mount_options = options;
    config.acl = if args.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(args.threads.clamp(1, 64));
    config.clone_fd = true;
    let session = fuser::spawn_mount(EnvelopeFuse::new(vfs.clone()), mnt, &config)
        .map_err(|e| Error::io(format!("mounting at {}", mnt.display()), e))?;
    // Commands through ctl that replace objects or add buckets tell the kernel to drop its
    // cached entry for that name, so the mount shows the change at once.
    vfs.set_notifier(Box::new(KernelNotifier(session.notifier())));
    if let Some(root) = &root {
        crate::store::lock::write_mount_record(
            root,
            &crate::store::lock::MountRecord {
                mountpoint: mnt.display().to_string(),
                pid: Some(std::process::id()),
                store: Some(root.display().to_string()),
            },
        )?;
    }
    tracing::info!("mounted {location} at {}", mnt.display());
    if daemon {
        println!("READY");
        let _ = std::io::stdout().flush();
    }
    let mut signalled = false;
    let mut last_sweep = Instant::now();
    let mut last_lock = Instant::now();
    while !session.guard.is_finished() {
        if wait_signal(&set, Duration::from_millis(200)) {
            signalled = true;
            break;
        }
        // Worker threads map new memory (their malloc arenas hold data keys): lock it too.
        if last_lock.elapsed() >= crate::hygiene::RELOCK_INTERVAL {
            crate::hygiene::relock();
            last_lock = Instant::now();
        }
        // Key versions reach their deletion date while mounted too.
        if last_sweep.elapsed() >= crate::ops::kms::sweep_interval() {
            crate::ops::kms::destroy_due_logged(&store);
            last_sweep = Instant::now();
        }
    }
    vfs.stop_workers();
    let res = if signalled {
        session.umount_and_join()
    } else {
        session.join()
    };
    // Customer keys are zeroized as they are dropped.
    vfs.clear_ring();
    if let Err(e) = store.sync_all() {
        tracing::error!("final sync: {e}");
    }
    // The record goes last, just before the lock is let go (as `store` drops on return):
    // until then a command that finds the lock held sees from the record that this daemon's
    // mount is gone and waits for it (store/lock.rs).
    if let Some(root) = &root {
        crate::store::lock::remove_mount_record(root);
    }
    // Dropping the store lets go of its lock or lease.
    drop(vfs);
    drop(store);
    res.map_err(|e| Error::io("serving the mount", e))
}

use crate::store::lock::mounted_store;

/// `envelopefs unmount MNT`: fusermount3 -u, then wait until the daemon has let go of the
/// store (so a following command finds it consistent and unlocked). For a store in an object
/// store, whose lease is not local, it waits until the daemon process has exited.
pub fn unmount(mountpoint: &Path) -> Result<()> {
    let mnt = absolute(mountpoint)?;
    let store = mounted_store(&mnt)
        .ok_or_else(|| Error::NotFound(format!("{} is not an envelopefs mount", mnt.display())))?;
    let object_store = store
        .to_str()
        .filter(|s| s.starts_with("s3://"))
        .map(str::to_string);
    let daemons = match &object_store {
        Some(at) => serving_processes(at, &mnt),
        None => Vec::new(),
    };
    let out = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .output()
        .ctx(|| "running fusermount3 (install fuse3)".to_string())?;
    if !out.status.success() {
        return Err(Error::Busy(format!(
            "unmounting {}: {}",
            mnt.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // The daemon is now finishing its shutdown: wait until it lets go of the store.
    if let Some(at) = object_store {
        return wait_exited(&daemons, &at);
    }
    StoreLock::acquire_with(&store, Patience::Unmount).map(drop)
}

/// The processes of this host serving `location` at `mnt`: `envelopefs ... mount LOCATION MNT`
/// (found in /proc, so that no object-store request is needed to unmount).
fn serving_processes(location: &str, mnt: &Path) -> Vec<u32> {
    let mnt = mnt.display().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            let has = |w: &str| args.contains(&w.as_bytes());
            has("mount") && has(location) && has(&mnt)
        })
        .collect()
}

/// Waits (every 50 ms, at most 60 s) until the processes `pids` have exited.
fn wait_exited(pids: &[u32], location: &str) -> Result<()> {
    let start = Instant::now();
    while pids.iter().any(|p| crate::store::lock::alive(*p)) {
        if start.elapsed() > Duration::from_secs(60) {
            return Err(Error::TimedOut(format!(
                "{location}: its mount daemon has not exited 60 s after the unmount"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
