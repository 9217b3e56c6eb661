//! `envelopefs store copy SRC DST`: the CLI side of [`crate::ops::copy`] (places parsed the
//! way every command takes them, a progress bar on stderr, the summary on stdout).

use super::{location, print_json, Cli};
use crate::error::Result;
use crate::ops::copy::{self, CopyProgress, Place};
use std::io::IsTerminal;
use std::path::Path;

/// A place as the user wrote it: a directory or `s3://BUCKET[/PREFIX]`.
fn place(cli: &Cli, p: &Path) -> Result<Place> {
    Ok(match location::classify(p)? {
        location::Where::Local(dir) => Place::Local(dir.to_path_buf()),
        location::Where::ObjectStore(at) => Place::ObjectStore(location::backend(cli, &at)?),
    })
}

/// Runs `store copy`.
pub fn run(cli: &Cli, src: &Path, dst: &Path, parallel: usize) -> Result<()> {
    let (src, dst) = (place(cli, src)?, place(cli, dst)?);
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} copy [{bar:40}] {pos}/{len} objects, {msg} copied",
        ) {
            b.set_style(style);
        }
        b.set_message(indicatif::HumanBytes(0).to_string());
        b.enable_steady_tick(std::time::Duration::from_millis(200));
        b
    });
    let mut progress = |p: &CopyProgress| {
        if let Some(b) = &bar {
            b.set_length(p.objects_total);
            b.set_position(p.objects_done);
            b.set_message(indicatif::HumanBytes(p.bytes_copied).to_string());
        }
    };
    let r = copy::copy(&src, &dst, parallel, &mut progress);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let out = crate::command::Output::of(&r?)?;
    print_json(&out);
    Ok(())
}
