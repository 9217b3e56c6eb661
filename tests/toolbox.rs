//! envelopefs in the Linux toolbox (issue 8): mount(8) and /etc/fstab through the
//! `mount.fuse.envelopefs` helper and `umount`, `status`, `--output table`, completions and
//! man pages, the daemon's log.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const HELPER: &str = "/sbin/mount.fuse.envelopefs";

/// Puts `/sbin/mount.fuse.envelopefs` -> the binary under test in place for mount(8), and
/// removes it again on drop (only if this test put it there).
struct HelperLink {
    created: bool,
}

impl HelperLink {
    /// None when another helper (e.g. an installed package) is already there.
    fn install() -> Option<Self> {
        match fs::read_link(HELPER) {
            Ok(t) if t == Path::new(BIN) => Some(HelperLink { created: false }),
            Ok(_) => None,
            Err(_) if Path::new(HELPER).exists() => None,
            Err(_) => {
                std::os::unix::fs::symlink(BIN, HELPER).unwrap();
                Some(HelperLink { created: true })
            }
        }
    }
}

impl Drop for HelperLink {
    fn drop(&mut self) {
        if self.created {
            let _ = fs::remove_file(HELPER);
        }
    }
}

/// After `umount`, waits until the daemon has let go of the store (an offline command can
/// take its lock) and returns that command's output.
fn wait_released(m: &TestMount) -> CmdOut {
    poll(
        Duration::from_secs(30),
        "the daemon to let go of the store",
        || {
            let out = m.cli_store(&["bucket", "list"]);
            (out.code == 0).then_some(out)
        },
    )
}

fn mount_fields(mnt: &Path) -> Option<(String, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (f.get(4)? == &mnt.to_string_lossy()).then(|| (f[sep + 1].to_string(), f[5].to_string()))
    })
}

#[test]
fn mount_t_fuse_envelopefs_an_fstab_line_and_umount() {
    if !have("mount") || !have("umount") {
        panic!("mount(8) is needed (scripts/install-deps.sh installs it)");
    }
    // With another build's helper installed (a package), mount(8) would run that one: the
    // helper is then run directly, as mount(8) runs it, and the fstab part is left out.
    let link = HelperLink::install();
    if link.is_none() {
        eprintln!("{HELPER} is another build's: running the helper directly, no fstab test");
    }
    let helper = |store: &str, mnt: &str, opts: &str| -> Command {
        let mut c = if link.is_some() {
            let mut c = Command::new("mount");
            c.args(["-t", "fuse.envelopefs"]);
            c
        } else {
            let mut c = Command::new(BIN);
            std::os::unix::process::CommandExt::arg0(&mut c, "/sbin/mount.fuse.envelopefs");
            c
        };
        c.args([store, mnt, "-o", opts]);
        for k in SCRUBBED_ENV {
            c.env_remove(k);
        }
        c
    };
    let mut m = TestMount::init_only(None);
    let store = m.store.display().to_string();
    let mnt = m.mnt.display().to_string();
    let key = m.key.display().to_string();

    // mount -t fuse.envelopefs STORE MNT -o ...
    let opts = format!("key_file={key},allow_other,nodev,nosuid");
    run_cmd(&mut helper(&store, &mnt, &opts), CMD_TIMEOUT).ok();
    m.adopt_mount();
    let (fstype, flags) = mount_fields(&m.mnt).unwrap();
    assert_eq!(fstype, "fuse.envelopefs");
    assert!(
        flags.contains("nodev") && flags.contains("nosuid"),
        "kernel flags {flags}"
    );
    fs::create_dir(m.p("b")).unwrap();
    fs::write(m.p("b/hello.txt"), b"through mount(8)").unwrap();
    run_cmd(Command::new("umount").arg(&m.mnt), CMD_TIMEOUT).ok();
    m.mark_unmounted();
    assert!(!is_mounted(&m.mnt));
    let list = wait_released(&m).json();
    assert_eq!(list[0]["name"], "b", "{list}");

    // Bad options fail with mount(8)'s usage code and a message naming the option.
    let mut direct = Command::new(BIN);
    std::os::unix::process::CommandExt::arg0(&mut direct, "/sbin/mount.fuse.envelopefs");
    let out = run_cmd(
        direct.args([&store, &mnt, "-o", "keyfile=/nope"]),
        CMD_TIMEOUT,
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("keyfile"), "{}", out.stderr);
    // A wrong key is a mount failure (32), with the reason.
    let bad = m.scratch.join("bad.key");
    fs::write(&bad, [7u8; 32]).unwrap();
    let out = run_cmd(
        &mut helper(&store, &mnt, &format!("key_file={}", bad.display())),
        CMD_TIMEOUT,
    );
    assert_eq!(out.code, 32, "{out:?}");
    assert!(!is_mounted(&m.mnt));

    if link.is_none() {
        return;
    }
    // An /etc/fstab line (LIBMOUNT_FSTAB points mount(8) at a test fstab): `mount MNT`.
    let fstab = m.scratch.join("fstab");
    fs::write(
        &fstab,
        format!(
            "# test\n{store} {mnt} fuse.envelopefs noauto,nofail,_netdev,x-systemd.automount,key_file={key},ro 0 0\n"
        ),
    )
    .unwrap();
    run_cmd(
        Command::new("mount")
            .arg(&m.mnt)
            .env("LIBMOUNT_FSTAB", &fstab),
        CMD_TIMEOUT,
    )
    .ok();
    m.adopt_mount();
    assert_eq!(read(&m.p("b/hello.txt")), b"through mount(8)");
    assert_errno(
        fs::write(m.p("b/new"), b"x"),
        libc::EROFS,
        "writing to an fstab mount with ro",
    );
    run_cmd(Command::new("umount").arg(&m.mnt), CMD_TIMEOUT).ok();
    m.mark_unmounted();
    wait_released(&m);
}

#[test]
fn status_shows_the_mount_keys_buckets_and_work_requests_in_flight() {
    let mut m = TestMount::init_only(None);
    m.mount_env.push(fault_env("slow-work-requests"));
    m.mount();
    fs::create_dir(m.p("b")).unwrap();
    fs::create_dir(m.p("empty")).unwrap();
    m.sh("mkdir \"$M/b/d\" && for i in $(seq 1500); do echo $i > \"$M/b/d/f$i\"; done")
        .ok();
    m.cli_store(&["key", "create", "--alias", "photos-key"])
        .ok();
    m.cli_store(&[
        "bucket",
        "update",
        "--name",
        "b",
        "--kms-key-id",
        "photos-key",
    ])
    .ok();
    m.cli_store(&["key", "rotate", "photos-key"]).ok();
    fs::write(m.p(".envelopefs/buckets/b/reencrypt"), "latest").unwrap();
    let s = m.cli_store(&["status", "--output", "json"]).ok().json();
    assert_eq!(s["mounted"], true, "{s}");
    assert_eq!(s["mountpoint"], m.mnt.display().to_string());
    assert_eq!(s["mount_pid"].as_i64(), m.daemon_pid().map(i64::from));
    let keys = s["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{s}");
    let pk = keys.iter().find(|k| k["alias"] == "photos-key").unwrap();
    assert_eq!(pk["current_version"], 2);
    assert_eq!(pk["current_state"], "ENABLED", "{pk}");
    assert!(keys.iter().any(|k| k["default"] == true));
    let b = &s["buckets"][0];
    assert_eq!(b["name"], "b");
    assert_eq!(b["objects"], 1500);
    assert_eq!(b["key_alias"], "photos-key");
    assert_eq!(b["key_version"], 2);
    assert_eq!(s["buckets"][1]["objects"], 0);
    let wr = &s["work_requests_in_flight"][0];
    assert_eq!(
        wr["bucket"], "b",
        "a re-encrypt of 1500 objects is in flight: {s}"
    );
    let pct = wr["percent_complete"].as_f64().unwrap();
    assert!((0.0..100.0).contains(&pct), "{wr}");

    // The default output of status is a table.
    let t = m.cli_store(&["status"]).ok().stdout;
    assert!(t.contains("mounted:"), "{t}");
    assert!(t.contains("NAME") && t.contains("OBJECTS"), "{t}");
    assert!(
        t.lines()
            .any(|l| l.trim_start().starts_with("b ") && l.contains("1500")),
        "{t}"
    );

    let id = wr["id"].as_str().unwrap().to_string();
    m.wait_work_request(&id, Duration::from_secs(120));
    let s = m.cli_store(&["status", "--output", "json"]).ok().json();
    assert_eq!(s["work_requests_in_flight"], Value::Array(vec![]));

    // Offline (with the key): not mounted, same buckets.
    m.unmount();
    let s = m.cli_store(&["status", "--output", "json"]).ok().json();
    assert_eq!(s["mounted"], false, "{s}");
    assert_eq!(s["mountpoint"], Value::Null);
    assert_eq!(s["buckets"][0]["objects"], 1500);
}

#[test]
fn output_table_is_honoured_mounted_and_offline() {
    let mut m = TestMount::init_only(None);
    m.cli_store(&["key", "create", "--alias", "k1"]).ok();
    let t = m
        .cli_store(&["key", "list", "--output", "table"])
        .ok()
        .stdout;
    let head = t.lines().next().unwrap();
    assert!(head.starts_with("ID ") && head.contains("ALIAS"), "{t}");
    assert!(t.contains("k1"), "{t}");
    m.mount();
    fs::create_dir(m.p("photos")).unwrap();
    let t = m
        .cli_store(&["--output", "table", "bucket", "list"])
        .ok()
        .stdout;
    assert!(t.starts_with("NAME"), "{t}");
    assert!(t.lines().nth(1).unwrap().starts_with("photos "), "{t}");
    // ENVELOPEFS_OUTPUT works too, and JSON stays the default.
    let out = run_cmd(
        envelopefs_cmd()
            .env("ENVELOPEFS_OUTPUT", "table")
            .args(["--store"])
            .arg(&m.store)
            .args(["key", "get", "k1"]),
        CMD_TIMEOUT,
    )
    .ok();
    assert!(
        out.stdout.contains("alias:") && out.stdout.contains("k1"),
        "{}",
        out.stdout
    );
    m.cli_store(&["key", "get", "k1"]).ok().json();
}

#[test]
fn completions_and_man_pages_come_from_the_clap_definitions() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef envelopefs"),
        ("fish", "complete -c envelopefs"),
    ] {
        let out = cli(&["completions", shell]).ok();
        assert!(out.stdout.contains(marker), "{shell}: {}", out.stdout);
        assert!(
            out.stdout.contains("reencrypt") && out.stdout.contains("status"),
            "{shell} completes the subcommands"
        );
    }
    if have("bash") {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("envelopefs.bash");
        fs::write(&f, cli(&["completions", "bash"]).stdout).unwrap();
        run_cmd(Command::new("bash").arg("-n").arg(&f), CMD_TIMEOUT).ok();
    }
    let dir = tempfile::tempdir().unwrap();
    cli(&["man", "--dir", &dir.path().display().to_string()]).ok();
    for page in [
        "envelopefs.1",
        "envelopefs-mount.1",
        "envelopefs-status.1",
        "envelopefs-key-rotate.1",
        "envelopefs-bucket-reencrypt.1",
        "envelopefs-completions.1",
    ] {
        let text = fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("man page {page}: {e}"));
        assert!(text.contains(".TH"), "{page} is roff");
    }
    let rotate = fs::read_to_string(dir.path().join("envelopefs-key-rotate.1")).unwrap();
    assert!(
        rotate.contains("Example: envelopefs key rotate"),
        "{rotate}"
    );
    let top = cli(&["man"]).ok().stdout;
    assert!(top.contains(".TH envelopefs 1"), "{top}");
}

#[test]
fn every_subcommand_help_shows_an_example() {
    fn walk(prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut args: Vec<&str> = prefix.iter().map(String::as_str).collect();
        args.push("--help");
        let help = cli(&args).ok().stdout;
        out.push(prefix.clone());
        // Subcommands are listed under "Commands:" as "  NAME  about".
        let mut in_cmds = false;
        for l in help.lines() {
            if l.starts_with("Commands:") {
                in_cmds = true;
                continue;
            }
            if in_cmds {
                if !l.starts_with("  ") {
                    break;
                }
                let name = l.split_whitespace().next().unwrap();
                if name != "help" && l.starts_with(&format!("  {name}")) {
                    let mut p = prefix.clone();
                    p.push(name.to_string());
                    walk(p, out);
                }
            }
        }
    }
    let mut all = Vec::new();
    walk(Vec::new(), &mut all);
    assert!(all.len() > 25, "found {} commands", all.len());
    for c in all.iter().filter(|c| !c.is_empty()) {
        let mut args: Vec<&str> = c.iter().map(String::as_str).collect();
        args.push("--help");
        let help = cli(&args).ok().stdout;
        assert!(
            help.lines()
                .any(|l| l.contains("Example: envelopefs") || l.starts_with("Example:")),
            "`envelopefs {} --help` has no example:\n{help}",
            c.join(" ")
        );
    }
}

#[test]
fn the_daemon_logs_failed_operations_with_object_and_errno_and_no_key() {
    let mut m = TestMount::init_only(None);
    m.mount_with(&["--log-level", "info"]);
    fs::create_dir(m.p("b")).unwrap();
    fs::write(m.p("b/locked.txt"), b"under version 1").unwrap();
    let kid = m.key_id("default");
    m.cli_store(&["key", "rotate", &kid]).ok();
    m.cli_store(&["key", "disable", &kid, "--version", "1"])
        .ok();
    drop_caches();
    m.remount();
    assert_errno(
        fs::read(m.p("b/locked.txt")),
        libc::ENOKEY,
        "open under a disabled version",
    );
    let log = m.log();
    assert!(log.contains("mounted "), "an info line at mount:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("open failed") && l.contains(&format!("errno {}", libc::ENOKEY)))
        .unwrap_or_else(|| panic!("no line for the failed open:\n{log}"));
    assert!(
        line.contains("b/locked.txt") || line.contains("locked.txt"),
        "{line}"
    );
    let key = fs::read(&m.key).unwrap();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!log.contains(&hex), "the log holds the key");
    assert!(log.len() < 1 << 20);
}

/// The child a test started, unmounted lazily and killed if still there on drop.
struct Started {
    child: std::process::Child,
    mnt: std::path::PathBuf,
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mnt)
                .status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn the_systemd_unit_template_mounts_with_its_credential_and_stops_on_sigterm() {
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    let unit = fs::read_to_string(contrib.join("envelopefs@.service")).unwrap();
    let example = fs::read_to_string(contrib.join("envelopefs.conf.example")).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("efsd")
        .tempdir_in("/tmp")
        .unwrap();
    let (store, mnt, creds) = (
        dir.path().join("s"),
        dir.path().join("m"),
        dir.path().join("creds"),
    );
    fs::create_dir(&mnt).unwrap();
    fs::create_dir(&creds).unwrap();
    // What LoadCredential=passphrase:... puts in $CREDENTIALS_DIRECTORY.
    let pass = creds.join("passphrase");
    fs::write(&pass, "correct horse battery staple\n").unwrap();
    cli(&[
        "init",
        &store.display().to_string(),
        "--password-file",
        &pass.display().to_string(),
    ])
    .ok();
    // EnvironmentFile= (the example, with this test's paths), then Environment= lines,
    // then ExecStart= with systemd's expansions: %d, ${VAR} (one word), $VAR (split).
    let mut vars: Vec<(String, String)> = example
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| k != "STORE" && k != "MOUNTPOINT")
        .collect();
    vars.push(("STORE".into(), store.display().to_string()));
    vars.push(("MOUNTPOINT".into(), mnt.display().to_string()));
    let spec = |s: &str| {
        s.replace("%d", &creds.display().to_string())
            .replace("%i", "vault")
    };
    let mut env = Vec::new();
    for l in unit.lines() {
        if let Some(e) = l.strip_prefix("Environment=") {
            let (k, v) = spec(e)
                .split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .unwrap();
            env.push((k, v));
        }
    }
    assert!(
        env.iter().any(|(k, _)| k == "ENVELOPEFS_PASSWORD_FILE"),
        "the unit hands the credential over as a file: {env:?}"
    );
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let mut words = Vec::new();
    for w in spec(exec).split_whitespace() {
        if let Some(name) = w.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
            words.push(vars.iter().find(|(k, _)| k == name).unwrap().1.clone());
        } else if let Some(name) = w.strip_prefix('$') {
            let v = &vars.iter().find(|(k, _)| k == name).unwrap().1;
            words.extend(v.split_whitespace().map(String::from));
        } else {
            words.push(w.to_string());
        }
    }
    assert_eq!(words[0], "/usr/bin/envelopefs");
    assert!(words.iter().any(|w| w == "--foreground"), "{words:?}");
    let mut c = envelopefs_cmd();
    c.args(&words[1..])
        .envs(env)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut started = Started {
        child: c.spawn().unwrap(),
        mnt: mnt.clone(),
    };
    poll(Duration::from_secs(60), "the unit's mount", || {
        if let Ok(Some(st)) = started.child.try_wait() {
            panic!("the unit's ExecStart exited: {st}");
        }
        (is_mounted(&mnt) && fs::metadata(mnt.join(".envelopefs")).is_ok()).then_some(())
    });
    let (_, flags) = mount_fields(&mnt).unwrap();
    assert!(
        flags.contains("nodev") && flags.contains("nosuid"),
        "{flags}"
    );
    fs::create_dir(mnt.join("b")).unwrap();
    fs::write(mnt.join("b/f"), b"from the unit").unwrap();
    // systemctl stop: SIGTERM to the main process, which unmounts and exits 0.
    // SAFETY: kill on the pid of a child this test started and has not reaped.
    unsafe { libc::kill(started.child.id() as i32, libc::SIGTERM) };
    let st = poll(Duration::from_secs(60), "the mount to stop", || {
        started.child.try_wait().unwrap()
    });
    assert!(st.success(), "{st}");
    assert!(!is_mounted(&mnt));
    // In the foreground the log goes to stderr (the journal), not to the store's log file.
    let mut err = String::new();
    std::io::Read::read_to_string(&mut started.child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("INFO") && err.contains("mounted "), "{err}");
    assert!(!store.join(".envelopefs/mount.log").exists());
    let out = cli(&[
        "--store",
        &store.display().to_string(),
        "--password-file",
        &pass.display().to_string(),
        "object",
        "get",
        "--bucket-name",
        "b",
        "--name",
        "f",
    ])
    .ok();
    assert_eq!(out.stdout, "from the unit");
}

/// A background mount made by a test, unmounted on drop.
struct Mounted(std::path::PathBuf);

impl Mounted {
    #[track_caller]
    fn new(store: &Path, mnt: &Path, key: &Path) -> Self {
        fs::create_dir_all(mnt).unwrap();
        cli(&[
            "mount",
            &store.display().to_string(),
            &mnt.display().to_string(),
            "--key-file",
            &key.display().to_string(),
        ])
        .ok();
        Mounted(mnt.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = envelopefs_cmd()
            .arg("unmount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok && is_mounted(&self.0) {
            let _ = Command::new("fusermount3").arg("-uz").arg(&self.0).status();
        }
    }
}

#[test]
fn a_store_backed_up_with_its_xattrs_mounts_again_and_one_without_them_does_not() {
    let mut m = TestMount::new();
    fs::create_dir_all(m.p("b/d")).unwrap();
    let f = write_pattern(&m.p("b/f"), 1, 100_000);
    fs::write(m.p("b/d/g"), b"nested").unwrap();
    m.unmount();
    m.sh(r#"set -e
        rsync -aX "$S/" "$X/rsync/"
        mkdir "$X/tar"
        tar --xattrs --xattrs-include='user.*' -C "$S" -cpf "$X/s.tar" .
        tar --xattrs --xattrs-include='user.*' -C "$X/tar" -xpf "$X/s.tar"
        cp -r "$S" "$X/plain"
        rsync -a "$S/" "$X/rsync-no-x/""#)
        .ok();
    for copy in ["rsync", "tar"] {
        let mnt = m.scratch.join(format!("{copy}-mnt"));
        let _g = Mounted::new(&m.scratch.join(copy), &mnt, &m.key);
        assert_bytes_eq(&read(&mnt.join("b/f")), &f, copy);
        assert_eq!(read(&mnt.join("b/d/g")), b"nested", "{copy}");
    }
    for copy in ["plain", "rsync-no-x"] {
        let mnt = m.scratch.join(format!("{copy}-mnt"));
        let _g = Mounted::new(&m.scratch.join(copy), &mnt, &m.key);
        assert_errno(
            fs::read(mnt.join("b/f")),
            libc::EIO,
            &format!("{copy}: an object copied without its xattrs"),
        );
    }
}
