//! Carrying out store commands through a live mount's `.envelopefs/ctl` (no passphrase;
//! the mount's caches stay coherent).
//!
//! The command sent is the one the CLI parsed, with its files made absolute, as one JSON
//! line ([`command::to_json_line`]): the mount runs exactly that command, and nothing is
//! turned back into words.

use super::{check_wanted, print_json, Progress};
use crate::command::{self, BucketCmd, ObjectCmd, Output, StoreCommand, WaitArgs, WorkRequestCmd};
use crate::error::{Error, IoContext, Result};
use crate::hygiene::WipingBuf;
use crate::ops::workreq::WorkRequest;
use crate::store::{mount_record, StoreLock};
use serde_json::Value;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The mountpoint of a live mount of `root`, if any. A record left by a dead mount (the
/// lock is free) is reported as stale and removed; a mount whose mountpoint is gone is not
/// live (the command then runs offline, once its daemon has let go of the store).
pub fn live_mount(root: &Path) -> Option<PathBuf> {
    let mnt = mount_record(root)?;
    match StoreLock::try_acquire(root) {
        Ok(None) => {}
        Ok(Some(_lock)) => {
            eprintln!("envelopefs: ignoring a stale mount record (no mount of this store is running at {mnt})");
            // Under the lock, so that no new mount's record is removed.
            crate::store::lock::remove_mount_record(root);
            return None;
        }
        Err(_) => return None,
    }
    let mnt = PathBuf::from(mnt);
    let source = crate::store::lock::mounted_store(&mnt)?;
    let same = std::fs::canonicalize(root).ok()? == source;
    same.then_some(mnt)
}

/// Sends a command to the mount and returns its JSON result. Files the command names are
/// made absolute first. The reply is read into zeroizing buffers and the result wiped when
/// dropped (it may carry a plaintext).
pub fn call(mnt: &Path, cmd: &StoreCommand) -> Result<Output> {
    let mut cmd = cmd.clone();
    let cwd = std::env::current_dir().ctx(|| "finding the current directory".to_string())?;
    cmd.make_paths_absolute(&cwd);
    let line = command::to_json_line(&cmd)?;
    let ctl = mnt.join(".envelopefs").join("ctl");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&ctl)
        .ctx(|| format!("opening {}", ctl.display()))?;
    let wrote = f.write_all(line.as_bytes());
    let mut reply = WipingBuf::new();
    let mut buf = Zeroizing::new(vec![0u8; 1 << 16]);
    let mut off = 0u64;
    loop {
        let n = f
            .read_at(&mut buf, off)
            .ctx(|| "reading the control reply".to_string())?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        off += n as u64;
    }
    let mut v = Output::new(
        serde_json::from_slice(reply.as_bytes())
            .map_err(|e| Error::Corrupt(format!("the mount's reply does not parse ({e})")))?,
    );
    if v["ok"] == Value::Bool(true) {
        let mut whole = v.take();
        return Ok(Output::new(whole["result"].take()));
    }
    let errno = v["error"]["errno"]
        .as_i64()
        .and_then(|e| i32::try_from(e).ok())
        .or_else(|| wrote.as_ref().err().and_then(std::io::Error::raw_os_error))
        .unwrap_or(libc::EIO);
    let msg = v["error"]["message"]
        .as_str()
        .unwrap_or("the mount refused the command")
        .to_string();
    let kind = v["error"]["kind"].as_str().unwrap_or("Io");
    Err(Error::from_kind(kind, errno, msg))
}

/// Runs a store command through the mount at `mnt`.
pub fn run(cmd: &StoreCommand, mnt: &Path) -> Result<()> {
    match cmd {
        StoreCommand::Object(ObjectCmd::Put {
            bucket_name,
            name,
            file: None,
        }) => {
            command_name_check(bucket_name, name)?;
            let path = mnt.join(bucket_name).join(name);
            if let Some(p) = path.parent() {
                std::fs::create_dir_all(p).ctx(|| format!("creating {}", p.display()))?;
            }
            let mut out =
                std::fs::File::create(&path).ctx(|| format!("creating {}", path.display()))?;
            std::io::copy(&mut std::io::stdin().lock(), &mut out)
                .ctx(|| format!("writing {}", path.display()))?;
            out.sync_all().ctx(|| format!("fsync {}", path.display()))?;
            let head = StoreCommand::Object(ObjectCmd::Head {
                bucket_name: bucket_name.clone(),
                name: name.clone(),
            });
            print_json(&*call(mnt, &head)?);
            Ok(())
        }
        StoreCommand::Object(ObjectCmd::Get {
            bucket_name,
            name,
            file: None,
        }) => {
            command_name_check(bucket_name, name)?;
            let path = mnt.join(bucket_name).join(name);
            let mut f = std::fs::File::open(&path).ctx(|| format!("opening {}", path.display()))?;
            std::io::copy(&mut f, &mut std::io::stdout().lock())
                .ctx(|| format!("reading {}", path.display()))?;
            Ok(())
        }
        StoreCommand::WorkRequest(WorkRequestCmd::Wait { id, wait }) => wait_through(mnt, id, wait),
        StoreCommand::Bucket(BucketCmd::Reencrypt { wait, .. }) => {
            command::wait_states(wait)?;
            let out = call(mnt, cmd)?;
            if wait.wait_for_state.is_empty() {
                print_json(&out);
                return Ok(());
            }
            let id = out["id"].as_str().unwrap_or_default().to_string();
            wait_through(mnt, &id, wait)
        }
        _ => {
            print_json(&*call(mnt, cmd)?);
            Ok(())
        }
    }
}

fn command_name_check(bucket: &str, name: &str) -> Result<()> {
    crate::store::validate_bucket_name(bucket)?;
    crate::store::validate_object_name(name)
}

/// The first pause between two looks at a work request while waiting.
pub const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// The pauses between looks at a work request while waiting: 50 ms, then each twice the last,
/// up to `--wait-interval-seconds` (at least 50 ms). A small job is seen done within
/// milliseconds of its end; a long one is looked at every interval, as the option asks.
pub fn wait_pauses(interval_seconds: u64) -> impl Iterator<Item = Duration> {
    let cap = Duration::from_secs(interval_seconds).max(FIRST_PAUSE);
    std::iter::successors(Some(FIRST_PAUSE), move |d| {
        Some(d.saturating_mul(2).min(cap))
    })
}

/// Waits for a work request, for every waiting command, mounted or offline: `look` (which
/// returns the request as it is now) is called at once, then after each of [`wait_pauses`],
/// until the request reaches a wanted state, ends, or `--max-wait-seconds` run out. Prints
/// the request as last seen; the exit code is [`check_wanted`]'s.
pub fn wait_for(
    wait: &WaitArgs,
    bar: &Progress,
    look: &mut dyn FnMut() -> Result<WorkRequest>,
) -> Result<()> {
    let wanted = command::wait_states(wait)?;
    let deadline = Instant::now() + Duration::from_secs(wait.max_wait_seconds);
    let mut pauses = wait_pauses(wait.wait_interval_seconds);
    loop {
        let wr = look()?;
        bar.update(&wr);
        let now = Instant::now();
        if wanted.contains(&wr.status) || wr.status.is_terminal() || now >= deadline {
            bar.finish();
            print_json(&Output::of(&wr)?.take());
            return check_wanted(&wr, wait);
        }
        let pause = pauses.next().unwrap_or(FIRST_PAUSE);
        std::thread::sleep(pause.min(deadline - now));
    }
}

/// [`wait_for`] through the mount at `mnt`.
fn wait_through(mnt: &Path, id: &str, wait: &WaitArgs) -> Result<()> {
    let get = StoreCommand::WorkRequest(WorkRequestCmd::Get { id: id.to_string() });
    wait_for(wait, &Progress::new(), &mut || {
        serde_json::from_value(call(mnt, &get)?.take())
            .map_err(|e| Error::Corrupt(format!("work request: {e}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_look_soon_then_at_growing_pauses_up_to_the_interval() {
        let ms = |n| Duration::from_millis(n);
        let p: Vec<Duration> = wait_pauses(30).take(14).collect();
        assert_eq!(&p[..4], [ms(50), ms(100), ms(200), ms(400)]);
        assert!(p.windows(2).all(|w| w[0] <= w[1]), "{p:?}");
        assert_eq!(p[13], Duration::from_secs(30), "{p:?}");
        assert!(p.iter().all(|d| *d <= Duration::from_secs(30)), "{p:?}");
        // An interval of 0 or 1 s caps the pauses there (never below the first).
        assert!(wait_pauses(0).take(5).all(|d| d == FIRST_PAUSE));
        assert_eq!(wait_pauses(1).nth(10), Some(Duration::from_secs(1)));
    }

    #[test]
    fn commands_go_as_json_with_absolute_files_and_parse_back_the_same() {
        let argv = [
            "object",
            "put",
            "--bucket-name",
            "b",
            "--name",
            "x y",
            "--file",
            "rel/f",
        ];
        let mut cmd = command::parse_line(&shell_words::join(argv)).unwrap();
        cmd.make_paths_absolute(Path::new("/home/u"));
        let line = command::to_json_line(&cmd).unwrap();
        let text = std::str::from_utf8(line.as_bytes()).unwrap();
        assert!(text.starts_with('{') && !text.contains('\n'), "{text}");
        let back = command::parse_line(text).unwrap();
        let StoreCommand::Object(ObjectCmd::Put {
            bucket_name,
            name,
            file: Some(file),
        }) = &back
        else {
            panic!("{back:?}");
        };
        assert_eq!((bucket_name.as_str(), name.as_str()), ("b", "x y"));
        assert_eq!(file, Path::new("/home/u/rel/f"));
        // Every kind of command survives the trip unchanged, including `-` and quotes that
        // the old re-tokenised line had to escape.
        for l in [
            "status",
            "bucket list",
            "kms encrypt --key-id k --plaintext 'a\"b c' --encryption-context a=b",
            "bucket reencrypt --bucket-name b --rekey --wait-for-state SUCCEEDED",
            "work-request wait wr-1 --max-wait-seconds 3",
            "sse-c remove --fingerprint 0123456789abcdef",
            "fsck --read-data",
            "headers import h.json",
        ] {
            let mut c = command::parse_line(l).unwrap();
            c.make_paths_absolute(Path::new("/d"));
            let sent = command::to_json_line(&c).unwrap();
            let got = command::parse_line(std::str::from_utf8(sent.as_bytes()).unwrap())
                .unwrap_or_else(|e| panic!("{l}: {e}"));
            assert_eq!(format!("{got:?}"), format!("{c:?}"), "{l}");
        }
    }

    #[test]
    fn malformed_json_commands_are_refused_with_einval() {
        for l in [
            "{",
            "{\"command\": {\"bucket\": \"nope\"}}",
            "{\"command\": \"status\", \"x\": 1}",
        ] {
            let e = command::parse_line(l).unwrap_err();
            assert_eq!(e.errno(), libc::EINVAL, "{l}: {e}");
        }
        let ok = command::parse_line("{\"command\": \"status\"}").unwrap();
        assert!(matches!(ok, StoreCommand::Status));
    }
}
