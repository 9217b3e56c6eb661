//! `envelopefs init` on a filesystem that cannot keep `user.*` xattrs (ramfs) fails with a
//! clear message and leaves no half-made store behind. Needs root (to mount ramfs), like the
//! mounted tests.

use std::process::Command;

struct Ramfs(tempfile::TempDir);

impl Drop for Ramfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn init_refuses_a_filesystem_without_user_xattrs() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test mounts ramfs: run it as root"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let ok = Command::new("mount")
        .args(["-t", "ramfs", "ramfs"])
        .arg(dir.path())
        .status()
        .expect("running mount");
    assert!(ok.success(), "mounting ramfs");
    let fs = Ramfs(dir);
    let key = tempfile::NamedTempFile::new().expect("key file");
    std::fs::write(key.path(), [7u8; 32]).expect("writing the key file");
    let store = fs.0.path().join("store");
    let out = Command::new(env!("CARGO_BIN_EXE_envelopefs"))
        .arg("init")
        .arg(&store)
        .arg("--key-file")
        .arg(key.path())
        .env_remove("ENVELOPEFS_PASSWORD_FILE")
        .env_remove("ENVELOPEFS_KEY_FILE")
        .output()
        .expect("running envelopefs init");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "init must fail: {stderr}");
    assert!(
        stderr.contains("extended attributes"),
        "the message says what is missing: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    let left: Vec<_> = std::fs::read_dir(&store)
        .map(|it| it.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "nothing is left in the store directory: {left:?}"
    );
}
