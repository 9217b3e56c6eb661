//! A store in a real Garage cluster, mounted: the fixture of the object-store mount tests
//! (tests/s3_mount.rs, tests/s3_mount_tools.rs).
//!
//! [`S3Mount::new`] starts a three-node cluster, inits a store at
//! `s3://envelopefs-test/PREFIX` and mounts it (background mode) with its own staging
//! directory (`ENVELOPEFS_STAGING_DIR`), so that a test can look at everything the mount
//! keeps on local disk. Drop unmounts (falling back to `fusermount3 -uz`, then to signalling
//! the daemon this fixture started), then stops the cluster.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use super::s3::S3Store;
use super::{is_mounted, poll, run_cmd, run_cmd_no_panic, CmdOut, BIN, CMD_TIMEOUT};
use envelopefs::store::s3::client::{Head, S3Client};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The variable naming the mount's local staging directory.
pub const STAGING_ENV: &str = "ENVELOPEFS_STAGING_DIR";

/// The S3 user-metadata key of an object's header.
pub const HEADER_META: &str = "envelopefs-header";

/// A mounted store in an object store.
pub struct S3Mount {
    /// The store, its cluster and a temp dir (key file, mountpoint, staging, scratch).
    pub s: S3Store,
    /// The mountpoint.
    pub mnt: PathBuf,
    /// The mount's staging directory.
    pub staging: PathBuf,
    /// A scratch directory outside the mount.
    pub scratch: PathBuf,
    /// Extra environment for the mount daemon (say a fault from `fault_env`).
    pub mount_env: Vec<(String, String)>,
    mounted: bool,
}

impl S3Mount {
    /// A new store at `s3://envelopefs-test/PREFIX`, mounted.
    #[track_caller]
    pub fn new(prefix: &str) -> S3Mount {
        let mut m = Self::init_only(prefix);
        m.mount();
        m
    }

    /// A new store, not mounted yet.
    #[track_caller]
    pub fn init_only(prefix: &str) -> S3Mount {
        let s = S3Store::new(prefix);
        let root = s.dir.path().to_path_buf();
        let mnt = root.join("m");
        let staging = root.join("staging");
        let scratch = root.join("x");
        for d in [&mnt, &staging, &scratch] {
            fs::create_dir(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        }
        S3Mount {
            s,
            mnt,
            staging,
            scratch,
            mount_env: Vec::new(),
            mounted: false,
        }
    }

    /// `envelopefs` reaching the cluster (AWS_* set), with the staging directory, without a
    /// store or secret.
    pub fn bare_cmd(&self) -> Command {
        let mut c = self.s.bare_cmd();
        c.env(STAGING_ENV, &self.staging);
        c
    }

    /// Runs `envelopefs mount s3://... MNT --key-file KEY EXTRA...` without asserting.
    #[track_caller]
    pub fn mount_args(&self, extra: &[&str]) -> CmdOut {
        let mut c = self.bare_cmd();
        c.arg("mount")
            .arg(&self.s.store)
            .arg(&self.mnt)
            .arg("--key-file")
            .arg(&self.s.key)
            .args(extra);
        for (k, v) in &self.mount_env {
            c.env(k, v);
        }
        run_cmd(&mut c, CMD_TIMEOUT)
    }

    /// Mounts (background mode); returns once mounted and answering.
    #[track_caller]
    pub fn mount(&mut self) {
        self.mount_with(&[]);
    }

    /// Mounts with extra options (say `--allow-other`).
    #[track_caller]
    pub fn mount_with(&mut self, extra: &[&str]) {
        assert!(!self.mounted, "already mounted");
        self.mount_args(extra).ok();
        self.mounted = true;
        assert!(
            is_mounted(&self.mnt),
            "`envelopefs mount {}` returned but {} is not in /proc/self/mountinfo",
            self.s.store,
            self.mnt.display()
        );
        poll(Duration::from_secs(30), "the S3 mount to answer", || {
            fs::metadata(self.mnt.join(".envelopefs")).ok()
        });
    }

    /// `envelopefs unmount MNT`, asserting success and that the mount is gone.
    #[track_caller]
    pub fn unmount(&mut self) {
        assert!(self.mounted, "not mounted");
        let mut c = self.bare_cmd();
        c.arg("unmount").arg(&self.mnt);
        let out = run_cmd(&mut c, CMD_TIMEOUT);
        if out.code != 0 {
            panic!(
                "`envelopefs unmount` of the S3 mount failed ({}): {}",
                out.code, out.stderr
            );
        }
        self.mounted = false;
        assert!(
            !is_mounted(&self.mnt),
            "{} still mounted after `envelopefs unmount`",
            self.mnt.display()
        );
        // The daemon is gone too (it held the store's lease).
        poll(
            Duration::from_secs(60),
            "the S3 mount daemon to exit",
            || self.daemon_pid().is_none().then_some(()),
        );
    }

    /// Unmounts and mounts again (drops every cache of the mount).
    #[track_caller]
    pub fn remount(&mut self) {
        self.unmount();
        self.mount();
    }

    /// Whether this fixture thinks the store is mounted.
    pub fn is_mounted(&self) -> bool {
        self.mounted
    }

    /// The pid of the daemon serving this mount: the envelopefs process whose command line
    /// holds `mount` and this (unique) mountpoint.
    pub fn daemon_pid(&self) -> Option<i32> {
        daemon_of(&self.mnt)
    }

    /// Kills the daemon with SIGKILL, as a crash would; lazily unmounts the dead mount and
    /// forgets it (a later [`S3Mount::mount`] mounts again).
    #[track_caller]
    pub fn kill_daemon(&mut self) {
        let pid = self
            .daemon_pid()
            .unwrap_or_else(|| panic!("no daemon serves {}", self.mnt.display()));
        // SAFETY: kill(2) of the daemon of this fixture's mount (found by its command line).
        let r = unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(r, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
        // Gone and reaped: the lease of a process of this host counts as live while its pid
        // exists, a zombie's too.
        poll(
            Duration::from_secs(30),
            "the killed daemon to be reaped",
            || (!Path::new(&format!("/proc/{pid}")).exists()).then_some(()),
        );
        let _ = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.mnt)
            .stdin(Stdio::null())
            .status();
        poll(Duration::from_secs(10), "the dead mount to go", || {
            (!is_mounted(&self.mnt)).then_some(())
        });
        self.mounted = false;
    }

    /// A path in the mount.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Creates bucket `name` with the CLI (through the mount) and waits until the mount shows
    /// it.
    #[track_caller]
    pub fn bucket(&self, name: &str) {
        self.cli(&["bucket", "create", "--name", name]).ok();
        let p = self.p(name);
        poll(Duration::from_secs(10), "the new bucket to show", || {
            fs::metadata(&p).ok().filter(|m| m.is_dir())
        });
    }

    /// Runs `envelopefs --store s3://... --key-file KEY ARGS` (the CLI: through the mount
    /// when it is mounted).
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> CmdOut {
        let mut c = self.bare_cmd();
        c.arg("--store")
            .arg(&self.s.store)
            .arg("--key-file")
            .arg(&self.s.key)
            .args(args);
        run_cmd(&mut c, CMD_TIMEOUT)
    }

    /// Runs `sh -c SCRIPT` with $M = mountpoint, $X = scratch dir, $ST = staging dir,
    /// $EFS = binary, in the scratch dir.
    #[track_caller]
    pub fn sh(&self, script: &str) -> CmdOut {
        self.sh_timeout(script, CMD_TIMEOUT)
    }

    /// [`S3Mount::sh`] with a timeout.
    #[track_caller]
    pub fn sh_timeout(&self, script: &str, timeout: Duration) -> CmdOut {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(script)
            .env("M", &self.mnt)
            .env("X", &self.scratch)
            .env("ST", &self.staging)
            .env("EFS", BIN)
            .current_dir(&self.scratch);
        for k in super::SCRUBBED_ENV {
            c.env_remove(k);
        }
        let mut out = run_cmd(&mut c, timeout);
        out.what = format!("sh -c {script:?}");
        out
    }

    /// A raw S3 client of the cluster.
    pub fn s3(&self) -> S3Client {
        self.s.s3()
    }

    /// Every S3 object of the cluster's bucket under `prefix` (all pages), in key order.
    #[track_caller]
    pub fn s3_keys(&self, prefix: &str) -> Vec<(String, u64)> {
        let s3 = self.s3();
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = s3
                .list(prefix, None, after.as_deref(), 1000)
                .unwrap_or_else(|e| panic!("listing {prefix}: {e}"));
            out.extend(page.objects.into_iter().map(|o| (o.key, o.size)));
            match page.next {
                Some(n) => after = Some(n),
                None => return out,
            }
        }
    }

    /// The store's content objects: every S3 key under `PREFIX/` outside `PREFIX/.envelopefs/`.
    #[track_caller]
    pub fn content_keys(&self) -> Vec<(String, u64)> {
        let meta = format!("{}/.envelopefs/", self.s.prefix);
        self.s3_keys(&format!("{}/", self.s.prefix))
            .into_iter()
            .filter(|(k, _)| !k.starts_with(&meta))
            .collect()
    }

    /// HEAD of an S3 key.
    #[track_caller]
    pub fn s3_head(&self, key: &str) -> Option<Head> {
        self.s3()
            .head(key)
            .unwrap_or_else(|e| panic!("HEAD {key}: {e}"))
    }

    /// Every unfinished multipart upload under the store's prefix.
    #[track_caller]
    pub fn uploads(&self) -> Vec<String> {
        self.s3()
            .list_uploads(&format!("{}/", self.s.prefix))
            .unwrap_or_else(|e| panic!("listing multipart uploads: {e}"))
            .into_iter()
            .map(|u| format!("{} ({})", u.key, u.upload_id))
            .collect()
    }

    /// What the mount logged, as far as it can be found: files whose names hold `log` in the
    /// staging directory (for messages only).
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(rd) = fs::read_dir(&self.staging) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.contains("log") {
                    s += &format!("--- {name} ---\n");
                    s += &fs::read_to_string(e.path()).unwrap_or_default();
                }
            }
        }
        s
    }

    fn force_cleanup(&mut self) {
        eprintln!(
            "S3Mount: falling back to `fusermount3 -uz {}`",
            self.mnt.display()
        );
        let _ = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.mnt)
            .stdin(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.daemon_pid().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for sig in [libc::SIGTERM, libc::SIGKILL] {
            if let Some(pid) = self.daemon_pid() {
                eprintln!("S3Mount: daemon {pid} still alive, sending signal {sig}");
                // SAFETY: kill(2) of the daemon of this fixture's mount (by command line).
                unsafe { libc::kill(pid, sig) };
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

impl Drop for S3Mount {
    fn drop(&mut self) {
        if self.mounted {
            let mut c = self.bare_cmd();
            c.arg("unmount").arg(&self.mnt);
            match run_cmd_no_panic(&mut c, Duration::from_secs(60)) {
                Some(o) if o.code == 0 && !is_mounted(&self.mnt) => {}
                other => {
                    eprintln!(
                        "S3Mount: `envelopefs unmount {}` failed: {:?}",
                        self.mnt.display(),
                        other.map(|o| (o.code, o.stderr))
                    );
                    self.force_cleanup();
                }
            }
            self.mounted = false;
        }
        if is_mounted(&self.mnt) || self.daemon_pid().is_some() {
            self.force_cleanup();
        }
        if std::thread::panicking() {
            eprintln!("--- S3 mount logs ---\n{}", self.log());
        }
        // Then `self.s` drops: the cluster stops.
    }
}

/// The pid of an envelopefs process (not a zombie) whose command line holds `mount` and `mnt`.
pub fn daemon_of(mnt: &Path) -> Option<i32> {
    let want = mnt.as_os_str().as_encoded_bytes();
    let rd = fs::read_dir("/proc").ok()?;
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_efs = args
            .first()
            .is_some_and(|a| a.ends_with(b"envelopefs") || a.ends_with(b"envelopefs (deleted)"));
        if is_efs && args.contains(&&b"mount"[..]) && args.contains(&want) {
            let st = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if !st
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
            {
                return Some(pid);
            }
        }
    }
    None
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
