//! The CLI side of `fsck` and `headers export|import`: offline they run here; on a mounted
//! store they go through the mount's `.envelopefs/ctl` (with paths made absolute).

use super::{open_offline, print_json, remote, secret, store_path, Cli};
use crate::command::{FsckArgs, HeadersCmd, StoreCommand};
use crate::error::{Error, IoContext, Result};
use serde_json::Value;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Runs `fsck` and `headers` commands; `None` for every other command.
pub fn run(cli: &Cli, cmd: &StoreCommand) -> Option<Result<()>> {
    match cmd {
        StoreCommand::Fsck(a) => Some(fsck(cli, a)),
        StoreCommand::Headers(h) => Some(headers(cli, h)),
        _ => None,
    }
}

fn bar(len: Option<u64>) -> Option<indicatif::ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let (b, template) = match len {
            Some(n) => (
                indicatif::ProgressBar::new(n),
                "{spinner} fsck [{bar:40}] {pos}/{len} objects",
            ),
            None => (
                indicatif::ProgressBar::new_spinner(),
                "{spinner} fsck through the mount: {elapsed}",
            ),
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            b.set_style(style);
        }
        b.enable_steady_tick(std::time::Duration::from_millis(200));
        b
    })
}

fn fsck(cli: &Cli, a: &FsckArgs) -> Result<()> {
    let root = match &a.path {
        Some(p) => p.as_path(),
        None => store_path(cli)?,
    };
    let in_object_store = matches!(
        super::location::classify(root)?,
        super::location::Where::ObjectStore(_)
    );
    let report: Value = if in_object_store {
        // No mount and no local layout: the store's own checks, through the seam.
        let store = open_offline(cli, root)?;
        let b = bar(Some(0));
        let mut progress = |done: u64, total: u64| {
            if let Some(b) = &b {
                b.set_length(total);
                b.set_position(done);
            }
        };
        let r = crate::ops::fsck::check_store(&store, a.read_data, &mut progress);
        if let Some(b) = &b {
            b.finish_and_clear();
        }
        crate::command::Output::of(&r?)?.take()
    } else if let Some(mnt) = remote::live_mount(root) {
        // The mount checks its own store: no path goes with the command.
        let cmd = StoreCommand::Fsck(FsckArgs {
            path: None,
            read_data: a.read_data,
        });
        let b = bar(None);
        let r = remote::call(&mnt, &cmd);
        if let Some(b) = b {
            b.finish_and_clear();
        }
        r?.take()
    } else {
        let b = bar(Some(0));
        let mut progress = |done: u64, total: u64| {
            if let Some(b) = &b {
                b.set_length(total);
                b.set_position(done);
            }
        };
        let r = crate::ops::fsck::check_offline(
            root,
            &mut |source| secret::for_open(cli, source),
            a.read_data,
            &mut progress,
        );
        if let Some(b) = &b {
            b.finish_and_clear();
        }
        crate::command::Output::of(&r?)?.take()
    };
    print_json(&report);
    if report["ok"] == Value::Bool(true) {
        return Ok(());
    }
    let n = report["problems"].as_array().map(Vec::len).unwrap_or(0);
    Err(Error::Corrupt(format!(
        "fsck found {n} problem{}",
        if n == 1 { "" } else { "s" }
    )))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().ctx(|| "finding the current directory".to_string())?;
    Ok(cwd.join(p))
}

fn headers(cli: &Cli, h: &HeadersCmd) -> Result<()> {
    let root = store_path(cli)?;
    let cmd = match h {
        HeadersCmd::Export { out } => HeadersCmd::Export {
            out: absolute(out)?,
        },
        HeadersCmd::Import { file } => HeadersCmd::Import {
            file: absolute(file)?,
        },
    };
    let local = matches!(
        super::location::classify(root)?,
        super::location::Where::Local(_)
    );
    let out = match local.then(|| remote::live_mount(root)).flatten() {
        Some(mnt) => remote::call(&mnt, &StoreCommand::Headers(cmd))?.take(),
        None => {
            let store = open_offline(cli, root)?;
            match &cmd {
                HeadersCmd::Export { out } => {
                    crate::command::Output::of(&crate::ops::headers::export(&store, out)?)?.take()
                }
                HeadersCmd::Import { file } => {
                    crate::command::Output::of(&crate::ops::headers::import(&store, file)?)?.take()
                }
            }
        }
    };
    print_json(&out);
    Ok(())
}
