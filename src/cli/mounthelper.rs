//! `mount.fuse.envelopefs`: the mount(8) helper, which is the `envelopefs` binary itself
//! under another name (a symlink). `mount -t fuse.envelopefs STORE MNT -o OPTIONS`, and an
//! `/etc/fstab` line of type `fuse.envelopefs`, make mount(8) run
//! `/sbin/mount.fuse.envelopefs STORE MNT [-sfnv] -o OPTIONS`; the helper turns that into
//! `envelopefs mount STORE MNT ...` and returns once the mount is usable (the daemon stays
//! in the background). `umount MNT` needs no helper.
//!
//! Options (comma-separated, as mount(8) passes them):
//! - `password_file=F`, `key_file=F`: the secret (F must not contain a comma);
//! - `allow_other`, `ro`, `default_permissions`, `threads=N`, `log_level=L`: as the `mount`
//!   flags of the same name;
//! - `nodev`, `nosuid`, `noexec`, `dev`, `suid`, `exec`: kernel flags of the mount;
//! - options meant for mount(8) or systemd and meaningless to the filesystem are accepted
//!   and ignored: `rw`, `defaults`, `auto`, `noauto`, `user`, `nouser`, `users`, `nofail`,
//!   `_netdev`, `noatime`, `relatime`, `x-*`, `comment=*`.
//!
//! Anything else is refused (exit 1), so a misspelt option is never silently dropped.

use std::ffi::OsStr;
use std::path::Path;

/// Names under which the binary acts as the mount helper.
pub const HELPER_NAMES: [&str; 2] = ["mount.fuse.envelopefs", "mount.envelopefs"];

/// Exit code of mount(8) helpers for a usage error.
pub const EXIT_USAGE: i32 = 1;
/// Exit code of mount(8) helpers for a failed mount.
pub const EXIT_MOUNT_FAILURE: i32 = 32;

/// Options mount(8) passes that mean nothing to envelopefs.
const IGNORED: [&str; 11] = [
    "rw", "defaults", "auto", "noauto", "user", "nouser", "users", "nofail", "_netdev", "noatime",
    "relatime",
];

/// Whether the program was started as the mount helper (by the name in `argv[0]`).
pub fn invoked_as_helper(argv0: &OsStr) -> bool {
    Path::new(argv0)
        .file_name()
        .and_then(OsStr::to_str)
        .is_some_and(|n| HELPER_NAMES.contains(&n))
}

/// A parsed helper command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HelperArgs {
    /// The store.
    pub source: String,
    /// The mountpoint.
    pub target: String,
    /// `-o` options, split at commas.
    pub options: Vec<String>,
    /// `-f`: fake, do everything but mount.
    pub fake: bool,
}

/// Parses `SOURCE TARGET [-sfnv] [-o OPTS] [-t TYPE] [-N NS]` (flags anywhere).
pub fn parse(args: &[String]) -> Result<HelperArgs, String> {
    let mut h = HelperArgs::default();
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(rest) = a.strip_prefix("-o") {
            let opts = if rest.is_empty() {
                it.next().ok_or("-o needs a value")?.as_str()
            } else {
                rest
            };
            h.options
                .extend(opts.split(',').filter(|o| !o.is_empty()).map(String::from));
        } else if a == "-t" || a == "-N" {
            it.next().ok_or_else(|| format!("{a} needs a value"))?;
        } else if a.starts_with("-t") || a.starts_with("-N") {
            continue;
        } else if let Some(flags) = a.strip_prefix('-').filter(|f| !f.is_empty()) {
            for c in flags.chars() {
                match c {
                    'f' => h.fake = true,
                    's' | 'n' | 'v' | 'r' | 'w' => {}
                    _ => return Err(format!("unknown flag -{c}")),
                }
            }
        } else {
            positional.push(a.clone());
        }
    }
    match positional.as_slice() {
        [s, t] => {
            // The old fuse convention `TYPE#SOURCE` is accepted too.
            h.source = s.strip_prefix("envelopefs#").unwrap_or(s).to_string();
            h.target = t.clone();
            Ok(h)
        }
        _ => Err("usage: mount.fuse.envelopefs STORE MOUNTPOINT [-o OPTIONS]".into()),
    }
}

/// The `envelopefs` command line that carries out a helper call.
pub fn envelopefs_argv(h: &HelperArgs) -> Result<Vec<String>, String> {
    let mut global = vec!["envelopefs".to_string()];
    let mut mount = vec!["mount".to_string(), h.source.clone(), h.target.clone()];
    for o in &h.options {
        let (name, value) = match o.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (o.as_str(), None),
        };
        let need = || value.ok_or_else(|| format!("option {name} needs a value ({name}=...)"));
        match name {
            "password_file" => global.extend(["--password-file".into(), need()?.into()]),
            "key_file" => global.extend(["--key-file".into(), need()?.into()]),
            "log_level" => global.extend(["--log-level".into(), need()?.into()]),
            "threads" => mount.extend(["--threads".into(), need()?.into()]),
            "allow_other" => mount.push("--allow-other".into()),
            "ro" => mount.push("--read-only".into()),
            "default_permissions" => mount.push("--default-permissions".into()),
            n if crate::daemon::KERNEL_OPTIONS.contains(&n) => {
                mount.extend(["--kernel-option".into(), n.into()]);
            }
            n if IGNORED.contains(&n) || n.starts_with("x-") || n == "comment" => {}
            n => return Err(format!("unknown mount option {n:?}")),
        }
    }
    global.extend(mount);
    Ok(global)
}

/// Runs the helper with the arguments after `argv[0]`; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let argv = match parse(args).and_then(|h| Ok((envelopefs_argv(&h)?, h.fake))) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mount.fuse.envelopefs: {e}");
            return EXIT_USAGE;
        }
    };
    let (argv, fake) = argv;
    let cli = match <crate::cli::Cli as clap::Parser>::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "mount.fuse.envelopefs: {}",
                e.to_string().lines().next().unwrap_or("bad arguments")
            );
            return EXIT_USAGE;
        }
    };
    if fake {
        return 0;
    }
    crate::logging::init_stderr(cli.log_level.as_deref());
    match crate::cli::run(cli) {
        crate::cli::Exit::Ok => 0,
        crate::cli::Exit::Error(e) => {
            eprintln!("mount.fuse.envelopefs: {e}");
            EXIT_MOUNT_FAILURE
        }
        crate::cli::Exit::TimedOut(m) => {
            eprintln!("mount.fuse.envelopefs: {m}");
            EXIT_MOUNT_FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn mount_8_arguments_become_an_envelopefs_mount() {
        let h = parse(&words(
            "/srv/vault /mnt/v -o rw,password_file=/etc/pw,allow_other,nodev,x-systemd.automount -n",
        ))
        .unwrap();
        assert_eq!(h.source, "/srv/vault");
        assert_eq!(h.target, "/mnt/v");
        assert_eq!(
            envelopefs_argv(&h).unwrap(),
            words("envelopefs --password-file /etc/pw mount /srv/vault /mnt/v --allow-other --kernel-option nodev")
        );
        let h = parse(&words(
            "-oro,key_file=/k,threads=8,default_permissions envelopefs#/s /m -t fuse.envelopefs",
        ))
        .unwrap();
        assert_eq!(
            envelopefs_argv(&h).unwrap(),
            words("envelopefs --key-file /k mount /s /m --read-only --threads 8 --default-permissions")
        );
        assert!(parse(&words("/s /m -f")).unwrap().fake);
    }

    #[test]
    fn unknown_options_and_bad_calls_are_refused() {
        let h = parse(&words("/s /m -o passwordfile=/x")).unwrap();
        assert!(envelopefs_argv(&h).unwrap_err().contains("passwordfile"));
        let h = parse(&words("/s /m -o password_file")).unwrap();
        assert!(envelopefs_argv(&h).is_err());
        assert!(parse(&words("/s")).is_err());
        assert!(parse(&words("/s /m -o")).is_err());
        assert!(parse(&words("/s /m -q")).is_err());
    }

    #[test]
    fn helper_names() {
        assert!(invoked_as_helper(OsStr::new("/sbin/mount.fuse.envelopefs")));
        assert!(invoked_as_helper(OsStr::new("mount.envelopefs")));
        assert!(!invoked_as_helper(OsStr::new("/usr/bin/envelopefs")));
    }
}
