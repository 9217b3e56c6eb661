//! Shared helpers of the mounted integration tests (`tests/mount_*.rs`).
//!
//! [`TestMount`] makes a temp dir (`/tmp/efXXXXXX`, short paths), inits a store with a random
//! key file (no Argon2, fast), mounts it with the real binary in background mode and unmounts
//! it on drop, even when the test panics (falling back to `fusermount3 -uz`, then to
//! signalling the daemon it started). Every test gets its own store and mountpoint, so tests
//! can run in parallel threads.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

pub mod garage;
pub mod s3;
pub mod s3mount;
pub mod snapshot;
pub mod workreq;

use serde_json::Value;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The envelopefs binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_envelopefs");

/// Longest a CLI command (mount, unmount, a store command) may take before the test fails.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(120);

/// What a command printed and how it exited.
#[derive(Debug, Clone)]
pub struct CmdOut {
    /// What was run (for messages).
    pub what: String,
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CmdOut {
    /// Asserts exit code 0 and returns self.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "`{}` failed with exit code {}\nstdout:\n{}\nstderr:\n{}",
            self.what, self.code, self.stdout, self.stderr
        );
        self
    }

    /// Asserts a non-zero exit code and returns self.
    #[track_caller]
    pub fn fails(self) -> Self {
        assert_ne!(
            self.code, 0,
            "`{}` should have failed\nstdout:\n{}\nstderr:\n{}",
            self.what, self.stdout, self.stderr
        );
        self
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}` printed no JSON on stdout ({e}):\n{}\nstderr:\n{}",
                self.what, self.stdout, self.stderr
            )
        })
    }
}

/// Asserts a refused command: exit code 1, nothing on stdout, `needle` in the message on
/// stderr; returns the message.
#[track_caller]
pub fn fails_with(o: CmdOut, needle: &str) -> String {
    assert_eq!(
        o.code, 1,
        "`{}` should exit 1\nstdout {}\nstderr {}",
        o.what, o.stdout, o.stderr
    );
    assert!(
        o.stdout.trim().is_empty(),
        "`{}`: stdout {}",
        o.what,
        o.stdout
    );
    assert!(
        o.stderr.contains(needle),
        "`{}`: stderr should name {needle:?}: {}",
        o.what,
        o.stderr
    );
    o.stderr
}

/// Runs a command with a timeout, capturing stdout and stderr. Panics on timeout (after
/// killing the child it started).
#[track_caller]
pub fn run_cmd(cmd: &mut Command, timeout: Duration) -> CmdOut {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`{what}` did not finish within {timeout:?}");
            }
            Err(e) => panic!("waiting for `{what}`: {e}"),
        }
    };
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    CmdOut {
        what,
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// Environment variables that would pick a store, a secret or the output format behind a
/// test's back; they
/// are removed from every command the tests run. (Other ENVELOPEFS_* variables, such as the
/// fault-injection switch or ENVELOPEFS_WRITEBACK_CACHE, pass through on purpose.)
pub const SCRUBBED_ENV: [&str; 4] = [
    "ENVELOPEFS_STORE",
    "ENVELOPEFS_PASSWORD_FILE",
    "ENVELOPEFS_KEY_FILE",
    "ENVELOPEFS_OUTPUT",
];

/// The fault-injection switch of test builds (src/fault.rs).
pub const FAULT_ENV: &str = "ENVELOPEFS_FAULT_INJECTION";

/// `(FAULT_ENV, faults)` (comma-separated fault names), for a mount, a command or the test
/// process. A build without the cargo feature `fault-injection` has no faults: the test then
/// fails here, saying so, instead of passing without its fault.
#[track_caller]
pub fn fault_env(faults: &str) -> (String, String) {
    if !cfg!(feature = "fault-injection") {
        panic!(
            "this test needs the fault(s) {faults}, which only exist in a build with the cargo \
             feature `fault-injection`: run `cargo test --features fault-injection` (as \
             scripts/test.sh does)"
        );
    }
    (FAULT_ENV.to_string(), faults.to_string())
}

/// A `Command` for the envelopefs binary without the caller's store or secret variables.
pub fn envelopefs_cmd() -> Command {
    let mut c = Command::new(BIN);
    for k in SCRUBBED_ENV {
        c.env_remove(k);
    }
    c.env("RUST_LOG", "warn");
    c
}

/// Runs the envelopefs CLI with these arguments.
#[track_caller]
pub fn cli(args: &[&str]) -> CmdOut {
    run_cmd(envelopefs_cmd().args(args), CMD_TIMEOUT)
}

/// Whether a program is on PATH.
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {prog} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Fails the test (never skips it) when a tool it drives is missing: scripts/install-deps.sh
/// installs what the tests need, so a missing tool is a broken set-up, not a reason to pass.
#[track_caller]
pub fn require(prog: &str) {
    assert!(
        have(prog),
        "this test needs `{prog}` on PATH (scripts/install-deps.sh installs the test tools)"
    );
}

/// The errno of a failed call; panics (with `what`) if it succeeded.
#[track_caller]
pub fn errno_of<T: std::fmt::Debug>(r: io::Result<T>, what: &str) -> i32 {
    match r {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("{what}: error without errno: {e}")),
    }
}

/// Asserts that a call failed with `want` (an errno).
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(r: io::Result<T>, want: i32, what: &str) {
    let got = errno_of(r, what);
    assert_eq!(
        got,
        want,
        "{what}: expected {} ({want}), got {} ({got})",
        errno_name(want),
        errno_name(got)
    );
}

/// A readable errno name for messages.
pub fn errno_name(e: i32) -> String {
    let names = [
        (libc::EPERM, "EPERM"),
        (libc::ENOENT, "ENOENT"),
        (libc::EIO, "EIO"),
        (libc::EBADF, "EBADF"),
        (libc::EACCES, "EACCES"),
        (libc::EBUSY, "EBUSY"),
        (libc::EEXIST, "EEXIST"),
        (libc::EXDEV, "EXDEV"),
        (libc::ENOTDIR, "ENOTDIR"),
        (libc::EISDIR, "EISDIR"),
        (libc::EINVAL, "EINVAL"),
        (libc::ENOSPC, "ENOSPC"),
        (libc::EROFS, "EROFS"),
        (libc::ERANGE, "ERANGE"),
        (libc::ENOSYS, "ENOSYS"),
        (libc::ENOTEMPTY, "ENOTEMPTY"),
        (libc::ENODATA, "ENODATA"),
        (libc::EOPNOTSUPP, "EOPNOTSUPP"),
        (libc::ENOKEY, "ENOKEY"),
        (libc::ESTALE, "ESTALE"),
        (libc::ETIMEDOUT, "ETIMEDOUT"),
    ];
    names
        .iter()
        .find(|(n, _)| *n == e)
        .map(|(_, s)| s.to_string())
        .unwrap_or_else(|| format!("errno {e}"))
}

/// Deterministic pseudo-random bytes (splitmix64), so failures are reproducible.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Index of the first differing byte, for messages about large buffers.
pub fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b.iter())
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))
}

/// Asserts two byte buffers are equal without printing megabytes.
#[track_caller]
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if let Some(i) = first_diff(got, want) {
        panic!(
            "{what}: contents differ at byte {i} (got {} bytes, want {} bytes; got {:?}, want {:?} there)",
            got.len(),
            want.len(),
            got.get(i..(i + 16).min(got.len())),
            want.get(i..(i + 16).min(want.len()))
        );
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// getxattr(2) (not following symlinks is not needed here: objects are regular files).
pub fn xattr_get(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let p = cpath(path);
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// getxattr(2) as text.
#[track_caller]
pub fn xattr_str(path: &Path, name: &str) -> String {
    let v = xattr_get(path, name)
        .unwrap_or_else(|e| panic!("getxattr {name} on {}: {e}", path.display()));
    String::from_utf8(v).unwrap_or_else(|e| panic!("xattr {name} is not UTF-8: {e}"))
}

/// setxattr(2)
pub fn xattr_set(path: &Path, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
    let p = cpath(path);
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and a value buffer of the given length.
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// removexattr(2)
pub fn xattr_remove(path: &Path, name: &str) -> io::Result<()> {
    let p = cpath(path);
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings.
    let r = unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// listxattr(2) as names.
pub fn xattr_list(path: &Path) -> io::Result<Vec<String>> {
    let p = cpath(path);
    let mut buf = vec![0u8; 65536];
    // SAFETY: a valid C string and a buffer of the given length.
    let r = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(r as usize);
    Ok(buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

/// `getfattr --only-values -n NAME PATH` (the tool, as a user would run it).
#[track_caller]
pub fn getfattr(path: &Path, name: &str) -> CmdOut {
    run_cmd(
        Command::new("getfattr")
            .arg("--absolute-names")
            .arg("--only-values")
            .arg("-n")
            .arg(name)
            .arg(path),
        Duration::from_secs(60),
    )
}

/// Drops the kernel's page cache (root only; best effort).
pub fn drop_caches() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    let _ = fs::write("/proc/sys/vm/drop_caches", "3");
}

/// Whether `mnt` is a mountpoint now (per /proc/self/mountinfo).
pub fn is_mounted(mnt: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let target = mnt.to_string_lossy();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .map(|m| m.replace("\\040", " ") == target)
            .unwrap_or(false)
    })
}

/// Polls `f` every 50 ms until it returns Some, or panics after `timeout` with `what`.
#[track_caller]
pub fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A reply from `.envelopefs/ctl`: the parsed JSON on the same fd, and the write's result.
#[derive(Debug)]
pub struct CtlReply {
    /// The command line.
    pub line: String,
    /// errno of the write, if it failed.
    pub errno: Option<i32>,
    /// The JSON read back on the same fd.
    pub json: Value,
}

impl CtlReply {
    /// Asserts success; returns `result`.
    #[track_caller]
    pub fn ok(self) -> Value {
        assert!(
            self.errno.is_none() && self.json["ok"] == Value::Bool(true),
            "ctl `{}` failed: errno {:?}, reply {}",
            self.line,
            self.errno.map(errno_name),
            self.json
        );
        self.json["result"].clone()
    }

    /// Asserts failure with `want`; returns the error message read back.
    #[track_caller]
    pub fn err(self, want: i32) -> String {
        assert_eq!(
            self.errno.map(errno_name),
            Some(errno_name(want)),
            "ctl `{}`: wrong result; reply {}",
            self.line,
            self.json
        );
        assert_eq!(
            self.json["ok"],
            Value::Bool(false),
            "ctl `{}`: the reply read back on the fd should say ok=false: {}",
            self.line,
            self.json
        );
        let msg = self.json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            !msg.trim().is_empty(),
            "ctl `{}`: the reply should carry a reason: {}",
            self.line,
            self.json
        );
        msg
    }
}

/// Reads a whole file through `pread` from offset 0 (independent of the fd's position).
pub fn pread_all(f: &File) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = f.read_at(&mut buf, out.len() as u64)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// One test's store and mount.
pub struct TestMount {
    dir: Option<tempfile::TempDir>,
    /// The store directory.
    pub store: PathBuf,
    /// The mountpoint.
    pub mnt: PathBuf,
    /// The 32-byte key file of the store.
    pub key: PathBuf,
    /// A scratch directory outside the mount (same temp dir).
    pub scratch: PathBuf,
    mounted: bool,
    daemon_pid: Option<i32>,
    /// Extra environment for the mount daemon (e.g. ENVELOPEFS_WRITEBACK_CACHE=1).
    pub mount_env: Vec<(String, String)>,
}

impl TestMount {
    /// A new store (default chunk size), mounted.
    #[track_caller]
    pub fn new() -> Self {
        let mut m = Self::init_only(None);
        m.mount();
        m
    }

    /// A new store with this chunk size, mounted.
    #[track_caller]
    pub fn with_chunk_size(chunk: u32) -> Self {
        let mut m = Self::init_only(Some(chunk));
        m.mount();
        m
    }

    /// A new store, not mounted yet (for offline CLI setup before [`TestMount::mount`]).
    #[track_caller]
    pub fn init_only(chunk: Option<u32>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ef")
            .tempdir_in("/tmp")
            .expect("creating a temp dir");
        let root = dir.path().to_path_buf();
        let store = root.join("s");
        let mnt = root.join("m");
        let key = root.join("key");
        let scratch = root.join("x");
        fs::create_dir(&mnt).unwrap();
        fs::create_dir(&scratch).unwrap();
        let mut k = [0u8; 32];
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut k))
            .expect("reading /dev/urandom");
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key)
            .and_then(|mut f| f.write_all(&k))
            .expect("writing the key file");
        let mut args = vec![
            "init".to_string(),
            store.display().to_string(),
            "--key-file".into(),
            key.display().to_string(),
        ];
        if let Some(c) = chunk {
            args.push("--chunk-size".into());
            args.push(c.to_string());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&argv).ok();
        TestMount {
            dir: Some(dir),
            store,
            mnt,
            key,
            scratch,
            mounted: false,
            daemon_pid: None,
            mount_env: Vec::new(),
        }
    }

    /// Mounts (background mode); returns once mounted.
    #[track_caller]
    pub fn mount(&mut self) {
        self.mount_with(&[]);
    }

    /// Mounts (background mode) with extra options, e.g. `--read-only`.
    #[track_caller]
    pub fn mount_with(&mut self, extra: &[&str]) {
        assert!(!self.mounted, "already mounted");
        self.mount_args(extra).ok();
        self.mounted = true;
        assert!(
            is_mounted(&self.mnt),
            "`envelopefs mount` returned but {} is not in /proc/self/mountinfo",
            self.mnt.display()
        );
        self.daemon_pid = fs::read(self.store.join(".envelopefs/mount.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["pid"].as_i64())
            .map(|p| p as i32);
    }

    /// Runs `envelopefs mount STORE MNT --key-file KEY EXTRA...` without asserting.
    #[track_caller]
    pub fn mount_args(&self, extra: &[&str]) -> CmdOut {
        let mut c = envelopefs_cmd();
        c.arg("mount")
            .arg(&self.store)
            .arg(&self.mnt)
            .arg("--key-file")
            .arg(&self.key)
            .args(extra);
        for (k, v) in &self.mount_env {
            c.env(k, v);
        }
        run_cmd(&mut c, CMD_TIMEOUT)
    }

    /// A new store mounted with the kernel's writeback cache (ENVELOPEFS_WRITEBACK_CACHE=1),
    /// so the kernel handles O_APPEND, sizes and mtimes (the default mount does not).
    #[track_caller]
    pub fn new_writeback_cache() -> Self {
        let mut m = Self::init_only(None);
        m.mount_env
            .push(("ENVELOPEFS_WRITEBACK_CACHE".into(), "1".into()));
        m.mount();
        m
    }

    /// `envelopefs unmount MNT`, asserting success and that the daemon let go.
    #[track_caller]
    pub fn unmount(&mut self) {
        assert!(self.mounted, "not mounted");
        let out = cli(&["unmount", &self.mnt.display().to_string()]);
        if out.code != 0 {
            // Leave it mounted: Drop cleans up (lazily) after the assertion below panics.
            panic!(
                "`envelopefs unmount` failed ({}): {}\n{}",
                out.code,
                out.stderr,
                self.log()
            );
        }
        self.mounted = false;
        assert!(
            !is_mounted(&self.mnt),
            "{} still mounted after `envelopefs unmount`",
            self.mnt.display()
        );
        self.daemon_pid = None;
    }

    /// Unmounts and mounts again (drops every kernel cache of the mount).
    #[track_caller]
    pub fn remount(&mut self) {
        self.unmount();
        self.mount();
    }

    /// Tells the helper the mount went away by other means (fusermount3 -u, a killed
    /// daemon); Drop then does not unmount it again (but still cleans up if it is there).
    pub fn mark_unmounted(&mut self) {
        self.mounted = false;
        self.daemon_pid = None;
    }

    /// Tells the helper the store was mounted at `self.mnt` by other means (mount(8) and the
    /// mount helper), so that Drop unmounts it.
    #[track_caller]
    pub fn adopt_mount(&mut self) {
        assert!(
            is_mounted(&self.mnt),
            "{} is not mounted",
            self.mnt.display()
        );
        self.mounted = true;
        self.daemon_pid = fs::read(self.store.join(".envelopefs/mount.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["pid"].as_i64())
            .map(|p| p as i32);
    }

    /// The pid of the background daemon (from STORE/.envelopefs/mount.json at mount time).
    pub fn daemon_pid(&self) -> Option<i32> {
        self.daemon_pid
    }

    /// Starts `envelopefs mount --foreground` and waits until the mountpoint is mounted.
    #[track_caller]
    pub fn spawn_foreground(&self, extra: &[&str]) -> Foreground {
        let mut c = envelopefs_cmd();
        c.arg("mount")
            .arg(&self.store)
            .arg(&self.mnt)
            .arg("--key-file")
            .arg(&self.key)
            .arg("--foreground")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = c.spawn().expect("starting a foreground mount");
        let mut fg = Foreground {
            child,
            mnt: self.mnt.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !is_mounted(&self.mnt) {
            if let Ok(Some(st)) = fg.child.try_wait() {
                panic!("the foreground mount exited before mounting: {st}");
            }
            assert!(
                Instant::now() < deadline,
                "the foreground mount did not mount in 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Usable, not just listed: the root answers.
        poll(
            Duration::from_secs(30),
            "the foreground mount to answer",
            || fs::metadata(fg.mnt.join(".envelopefs")).ok(),
        );
        fg
    }

    /// Whether the mount is up (as far as this helper knows).
    pub fn is_mounted(&self) -> bool {
        self.mounted
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.store.join(".envelopefs/mount.log")).unwrap_or_default()
    }

    /// A path in the mount.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// The backing file of object `name` in `bucket`.
    pub fn backing_path(&self, bucket: &str, name: &str) -> PathBuf {
        self.store.join(bucket).join(name)
    }

    /// The store's chunk size (from config.json).
    pub fn chunk_size(&self) -> u64 {
        let b = fs::read(self.store.join(".envelopefs/config.json")).expect("config.json");
        let v: Value = serde_json::from_slice(&b).expect("config.json is JSON");
        v["chunk_size"].as_u64().expect("chunk_size in config.json")
    }

    /// The backing size of an object of `plain` bytes (docs: preamble 24, 28 per chunk,
    /// always a final short chunk).
    pub fn expected_backing_len(&self, plain: u64) -> u64 {
        let cs = self.chunk_size();
        24 + (plain / cs) * (cs + 28) + (plain % cs) + 28
    }

    /// Runs a store command of the CLI offline (`--store S --key-file K ARGS`).
    #[track_caller]
    pub fn cli_store(&self, args: &[&str]) -> CmdOut {
        self.cli_store_env(&[], args)
    }

    /// [`TestMount::cli_store`] with environment variables set (say a fault from
    /// [`fault_env`]).
    #[track_caller]
    pub fn cli_store_env(&self, env: &[(&str, &str)], args: &[&str]) -> CmdOut {
        let mut c = envelopefs_cmd();
        c.envs(env.iter().copied())
            .arg("--store")
            .arg(&self.store)
            .arg("--key-file")
            .arg(&self.key)
            .args(args);
        run_cmd(&mut c, CMD_TIMEOUT)
    }

    /// `envelopefs object VERB --bucket-name B --name N --file F` (put or get); offline or
    /// through the mount, as the CLI decides.
    fn object_file_cmd(&self, verb: &str, bucket: &str, name: &str, file: &Path) -> CmdOut {
        let file = file.display().to_string();
        self.cli_store(&[
            "object",
            verb,
            "--bucket-name",
            bucket,
            "--name",
            name,
            "--file",
            &file,
        ])
    }

    /// `envelopefs object put` of `data` (through a scratch file), asserting success.
    #[track_caller]
    pub fn put_object(&self, bucket: &str, name: &str, data: &[u8]) {
        let f = self.scratch.join(format!("put-{}", data.len()));
        fs::write(&f, data).expect("writing the input file");
        self.object_file_cmd("put", bucket, name, &f).ok();
    }

    /// `envelopefs object get` into a scratch file: the command's output, and the bytes it
    /// wrote (empty if none).
    pub fn get_object(&self, bucket: &str, name: &str) -> (CmdOut, Vec<u8>) {
        let f = self.scratch.join("get-output");
        let _ = fs::remove_file(&f);
        let o = self.object_file_cmd("get", bucket, name, &f);
        (o, fs::read(&f).unwrap_or_default())
    }

    /// Runs `sh -c SCRIPT` with $M = mountpoint, $S = store, $X = scratch dir, $EFS = binary.
    #[track_caller]
    pub fn sh(&self, script: &str) -> CmdOut {
        self.sh_timeout(script, CMD_TIMEOUT)
    }

    /// [`TestMount::sh`] with a timeout.
    #[track_caller]
    pub fn sh_timeout(&self, script: &str, timeout: Duration) -> CmdOut {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(script)
            .env("M", &self.mnt)
            .env("S", &self.store)
            .env("X", &self.scratch)
            .env("EFS", BIN)
            .current_dir(&self.scratch);
        for k in SCRUBBED_ENV {
            c.env_remove(k);
        }
        let mut out = run_cmd(&mut c, timeout);
        out.what = format!("sh -c {script:?}");
        out
    }

    /// Writes one command line to `.envelopefs/ctl` and reads the JSON reply on the same fd
    /// (from offset 0, with pread).
    #[track_caller]
    pub fn ctl(&self, line: &str) -> CtlReply {
        self.write_ctl_file("ctl", &format!("{line}\n"))
    }

    /// Writes `text` as it is to the control file `rel` (below `.envelopefs/`) and reads the
    /// JSON reply on the same fd (from offset 0, with pread).
    #[track_caller]
    pub fn write_ctl_file(&self, rel: &str, text: &str) -> CtlReply {
        let line = text.trim_end_matches('\n');
        let path = self.p(&format!(".envelopefs/{rel}"));
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let w = f.write(text.as_bytes());
        let errno = match w {
            Ok(_) => None,
            Err(e) => Some(e.raw_os_error().unwrap_or(-1)),
        };
        let bytes = pread_all(&f).unwrap_or_else(|e| panic!("reading the reply of `{line}`: {e}"));
        let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "ctl `{line}`: reply is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            )
        });
        CtlReply {
            line: line.to_string(),
            errno,
            json,
        }
    }

    /// Reads a control file as text: `work-requests/ID` (below `.envelopefs/`), or the same
    /// with the `.envelopefs/` prefix.
    #[track_caller]
    pub fn read_ctl_file(&self, rel: &str) -> String {
        let rel = rel.strip_prefix(".envelopefs/").unwrap_or(rel);
        let p = self.p(&format!(".envelopefs/{rel}"));
        fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    }

    /// The id (`key-...`) of a key by alias, from `.envelopefs/keys/ALIAS`.
    #[track_caller]
    pub fn key_id(&self, alias: &str) -> String {
        let v: Value = serde_json::from_str(&self.read_ctl_file(&format!("keys/{alias}")))
            .unwrap_or_else(|e| panic!("keys/{alias} is not JSON: {e}"));
        v["id"]
            .as_str()
            .unwrap_or_else(|| panic!("keys/{alias} has no id: {v}"))
            .to_string()
    }

    /// Polls `.envelopefs/work-requests/ID` until it reaches a terminal state; returns it.
    #[track_caller]
    pub fn wait_work_request(&self, id: &str, timeout: Duration) -> Value {
        poll(timeout, &format!("work request {id} to finish"), || {
            let text = fs::read_to_string(self.p(&format!(".envelopefs/work-requests/{id}")))
                .unwrap_or_else(|e| panic!("reading work-requests/{id}: {e}"));
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("work-requests/{id} is not JSON ({e}): {text}"));
            let st = v["status"].as_str().unwrap_or_default().to_string();
            matches!(st.as_str(), "SUCCEEDED" | "FAILED" | "CANCELED").then_some(v)
        })
    }

    fn force_cleanup(&mut self) {
        let mnt = self.mnt.display().to_string();
        eprintln!("TestMount: falling back to `fusermount3 -uz {mnt}`");
        let _ = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.mnt)
            .stdin(Stdio::null())
            .status();
        // Give the daemon time to notice, then signal the daemon this test started.
        if let Some(pid) = self.daemon_pid {
            let alive = |pid: i32| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&*self.store.to_string_lossy()))
                    .unwrap_or(false)
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            for sig in [libc::SIGTERM, libc::SIGKILL] {
                if alive(pid) {
                    eprintln!("TestMount: daemon {pid} still alive, sending signal {sig}");
                    // SAFETY: kill on a pid this test's mount started (checked by cmdline).
                    unsafe { libc::kill(pid, sig) };
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
}

impl Default for TestMount {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        if self.mounted {
            let out = run_cmd_no_panic(
                envelopefs_cmd().arg("unmount").arg(&self.mnt),
                Duration::from_secs(60),
            );
            match out {
                Some(o) if o.code == 0 && !is_mounted(&self.mnt) => {}
                other => {
                    eprintln!(
                        "TestMount: `envelopefs unmount {}` failed: {:?}",
                        self.mnt.display(),
                        other.map(|o| (o.code, o.stderr))
                    );
                    self.force_cleanup();
                }
            }
            self.mounted = false;
        }
        if is_mounted(&self.mnt) {
            self.force_cleanup();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- mount.log of {} ---\n{}",
                self.store.display(),
                self.log()
            );
        }
        if let Some(d) = self.dir.take() {
            if std::env::var_os("ENVELOPEFS_TEST_KEEP").is_some() {
                let _ = d.keep();
            } else if let Err(e) = d.close() {
                eprintln!("TestMount: removing the temp dir: {e}");
            }
        }
    }
}

/// A foreground mount process started by a test; on drop, if still running, it is unmounted
/// lazily and the process (which this test started) is killed.
pub struct Foreground {
    /// The `envelopefs mount --foreground` process.
    pub child: std::process::Child,
    mnt: PathBuf,
}

impl Foreground {
    /// Sends a signal to the foreground process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill on the pid of a child this test started and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the process to exit; returns its exit code (-1 for a signal).
    #[track_caller]
    pub fn wait(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self
                .child
                .try_wait()
                .expect("waiting for the foreground mount")
            {
                return st.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "the foreground mount did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            eprintln!("Foreground: still running; unmounting lazily and killing it");
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mnt)
                .stdin(Stdio::null())
                .status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        } else if is_mounted(&self.mnt) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mnt)
                .stdin(Stdio::null())
                .status();
        }
    }
}

/// Like [`run_cmd`] but never panics (for Drop).
fn run_cmd_no_panic(cmd: &mut Command, timeout: Duration) -> Option<CmdOut> {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().ok()?;
    let mut err = child.stderr.take()?;
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    Some(CmdOut {
        what,
        code: status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr,
    })
}

/// Writes a file of `len` pattern bytes through the mount in 1 MiB writes; returns the data.
#[track_caller]
pub fn write_pattern(path: &Path, seed: u64, len: usize) -> Vec<u8> {
    let data = pattern(seed, len);
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    for c in data.chunks(1 << 20) {
        f.write_all(c)
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    data
}

/// Reads a file, panicking with its path on error.
#[track_caller]
pub fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
