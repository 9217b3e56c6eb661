//! scripts/package.sh builds a Debian package that installs the binary, the mount(8)
//! helper, completions, man pages and the systemd unit, and depends on fuse3. The package
//! is built from the binary under test and installed with dpkg into a scratch root.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BUILD: Duration = Duration::from_secs(300);

#[test]
fn the_debian_package_installs_binary_helper_completions_man_pages_and_unit() {
    assert!(have("dpkg-deb"), "dpkg-deb is needed (Debian)");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let built = run_cmd(
        Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package.sh"))
            .arg(&out)
            .env("ENVELOPEFS_BIN", BIN),
        BUILD,
    )
    .ok();
    let deb = built.stdout.trim().to_string();
    assert!(
        deb.ends_with(".deb") && Path::new(&deb).is_file(),
        "{built:?}"
    );

    let field = |f: &str| {
        run_cmd(Command::new("dpkg-deb").args(["-f", &deb, f]), BUILD)
            .ok()
            .stdout
            .trim()
            .to_string()
    };
    assert_eq!(field("Package"), "envelopefs");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    let depends = field("Depends");
    assert!(
        depends.split(',').any(|d| d.trim() == "fuse3"),
        "Depends: {depends}"
    );
    assert!(depends.contains("libc6"), "Depends: {depends}");

    // Install into a scratch root with dpkg's own database there.
    let root = work.path().join("root");
    let admin = root.join("var/lib/dpkg");
    fs::create_dir_all(admin.join("info")).unwrap();
    fs::create_dir_all(admin.join("updates")).unwrap();
    fs::write(admin.join("status"), "").unwrap();
    run_cmd(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args([
                "--force-depends",
                "--force-not-root",
                "--force-script-chrootless",
                "--log=/dev/null",
                "-i",
                &deb,
            ]),
        BUILD,
    )
    .ok();
    let listed = run_cmd(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["-L", "envelopefs"]),
        BUILD,
    )
    .ok()
    .stdout;
    for f in [
        "/usr/bin/envelopefs",
        "/usr/sbin/mount.fuse.envelopefs",
        "/usr/share/bash-completion/completions/envelopefs",
        "/usr/share/zsh/vendor-completions/_envelopefs",
        "/usr/share/fish/vendor_completions.d/envelopefs.fish",
        "/usr/share/man/man1/envelopefs.1.gz",
        "/usr/share/man/man1/envelopefs-mount.1.gz",
        "/usr/share/man/man1/envelopefs-status.1.gz",
        "/usr/lib/systemd/system/envelopefs@.service",
        "/usr/share/doc/envelopefs/examples/fstab.example",
        "/usr/share/doc/envelopefs/copyright",
    ] {
        assert!(
            listed.lines().any(|l| l == f),
            "{f} not in the package:\n{listed}"
        );
        let p = root.join(f.trim_start_matches('/'));
        assert!(p.exists(), "{} not installed", p.display());
    }

    // The installed binary runs, and the helper is the same binary under its helper name.
    let v = run_cmd(
        Command::new(root.join("usr/bin/envelopefs")).arg("--version"),
        BUILD,
    )
    .ok();
    assert!(v.stdout.starts_with("envelopefs "), "{v:?}");
    assert_eq!(
        fs::read_link(root.join("usr/sbin/mount.fuse.envelopefs")).unwrap(),
        Path::new("../bin/envelopefs")
    );
    let h = run_cmd(
        &mut Command::new(root.join("usr/sbin/mount.fuse.envelopefs")),
        BUILD,
    );
    assert_eq!(h.code, 1, "{h:?}");
    assert!(h.stderr.contains("usage: mount.fuse.envelopefs"), "{h:?}");
    let bash =
        fs::read_to_string(root.join("usr/share/bash-completion/completions/envelopefs")).unwrap();
    assert!(bash.contains("complete -F"), "{bash}");
    let unit = fs::read_to_string(root.join("usr/lib/systemd/system/envelopefs@.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/envelopefs mount"),
        "{unit}"
    );
}
