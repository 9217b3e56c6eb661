//! The companion CLI: a thin layer over the core. JSON on stdout, messages and progress on
//! stderr. Exit codes: 0 success, 1 error, 2 a wait timed out.

pub mod copy;
pub mod location;
pub mod mounthelper;
pub mod output;
pub mod reliability;
pub mod remote;
pub mod secret;

use crate::command::{self, BucketCmd, DataStreams, Env, StoreCommand, WaitArgs, WorkRequestCmd};
use crate::error::{Error, IoContext, Result};
use crate::ops::workreq::{self, WorkRequest};
use crate::store::object::NoCustomerKeys;
use crate::store::{Store, StoreLock, DEFAULT_CHUNK_SIZE};
use clap::{Parser, Subcommand};
use serde_json::Value;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// envelopefs: an encrypted FUSE filesystem with per-file data keys and header-only
/// re-encryption.
#[derive(Debug, Parser)]
#[command(name = "envelopefs", version, about, long_about = None)]
#[cfg_attr(
    feature = "fault-injection",
    command(version = concat!(env!("CARGO_PKG_VERSION"), " (test build: fault injection compiled in)"))
)]
pub struct Cli {
    /// The store (for store commands): a directory, or s3://BUCKET[/PREFIX] in an object store.
    #[arg(long, global = true, env = "ENVELOPEFS_STORE", value_name = "STORE")]
    pub store: Option<PathBuf>,
    /// The S3 endpoint of an s3:// store (else AWS_ENDPOINT_URL, as S3 tools take it).
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// The S3 region of an s3:// store (else AWS_REGION or AWS_DEFAULT_REGION or the profile's).
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// The AWS profile whose credentials reach an s3:// store (else AWS_PROFILE).
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// File holding the passphrase (one line).
    #[arg(
        long,
        global = true,
        env = "ENVELOPEFS_PASSWORD_FILE",
        value_name = "F"
    )]
    pub password_file: Option<PathBuf>,
    /// File holding a raw 32-byte key (or its base64) instead of a passphrase.
    #[arg(long, global = true, env = "ENVELOPEFS_KEY_FILE", value_name = "F")]
    pub key_file: Option<PathBuf>,
    /// Log filter (error, warn, info, debug, trace), also RUST_LOG.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// How to print data: json, or a readable table (default: json; table for status).
    #[arg(long, global = true, env = "ENVELOPEFS_OUTPUT", value_name = "FORMAT")]
    pub output: Option<output::Format>,
    #[command(subcommand)]
    pub command: Top,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Top {
    /// Create a new store in an empty directory, or at an unused s3://BUCKET[/PREFIX].
    /// Example: envelopefs init ~/vault --password-file pw.txt
    Init {
        /// The store directory (new or empty), or s3://BUCKET[/PREFIX].
        #[arg(value_name = "STORE")]
        path: PathBuf,
        /// Plaintext bytes per chunk: a power of two from 4096 to 1048576.
        #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE)]
        chunk_size: u32,
    },
    /// Mount a store.
    /// Right after an unmount (fusermount3 -u, umount, a signal) it first waits, at most
    /// 60 s, for the old daemon to finish its shutdown; a store still mounted is refused.
    /// Example: envelopefs mount ~/vault ~/mnt --password-file pw.txt
    Mount(crate::cli::MountArgs),
    /// Unmount a mounted store, and wait until its daemon has let go of the store.
    /// Example: envelopefs unmount ~/mnt
    Unmount {
        /// The mountpoint.
        mountpoint: PathBuf,
    },
    #[command(flatten)]
    Store(StoreCommand),
    /// Whole stores: copy.
    /// Example: envelopefs store copy ~/vault s3://backups/vault
    #[command(subcommand, name = "store")]
    Stores(StoresCmd),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    /// Example: envelopefs completions bash > /usr/share/bash-completion/completions/envelopefs
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (envelopefs.1 and one per subcommand), or envelopefs.1 to stdout.
    /// Example: envelopefs man --dir /usr/local/share/man/man1
    Man {
        /// Directory to write every page into (default: print envelopefs.1).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `store ...`: what works on a whole store as it is stored, without its secret.
#[derive(Debug, Subcommand)]
pub enum StoresCmd {
    /// Copy a whole store to another place, a directory or s3://BUCKET[/PREFIX], as it is
    /// stored: config, sealed keystore, bucket records, work requests, and every object's
    /// ciphertext and header byte for byte. Nothing is decrypted and no passphrase or key
    /// file is needed. The destination must be new or empty, or an earlier (perhaps
    /// interrupted) copy of the same store: run again, a copy goes on where it stopped and
    /// skips what is already there. Neither store may be mounted or in use meanwhile.
    /// Example: envelopefs store copy ~/vault s3://backups/vault --endpoint-url http://localhost:3900
    Copy {
        /// The store to copy: a directory or s3://BUCKET[/PREFIX].
        #[arg(value_name = "SRC")]
        src: PathBuf,
        /// Where to copy it: a new or empty directory or s3://BUCKET[/PREFIX].
        #[arg(value_name = "DST")]
        dst: PathBuf,
        /// Objects copied at once (those above 1 MiB are copied one at a time).
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
        parallel: u16,
    },
}

/// `mount` options.
#[derive(Debug, Clone, clap::Args)]
pub struct MountArgs {
    /// The store: a directory, or s3://BUCKET[/PREFIX] in an object store.
    #[arg(value_name = "STORE")]
    pub path: PathBuf,
    /// Where to mount it.
    pub mountpoint: PathBuf,
    /// Stay attached to the terminal (otherwise return once mounted).
    #[arg(long, short = 'f')]
    pub foreground: bool,
    /// How to serve it.
    #[command(flatten)]
    pub options: crate::daemon::MountOptions,
}

/// What `main` turns into an exit code.
pub enum Exit {
    /// 0.
    Ok,
    /// 1, with the error printed.
    Error(Error),
    /// 2: a wait timed out.
    TimedOut(String),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Exit {
    let status = matches!(cli.command, Top::Store(StoreCommand::Status));
    output::set(cli.output.unwrap_or(if status {
        output::Format::Table
    } else {
        output::Format::Json
    }));
    match dispatch(&cli) {
        Ok(()) => Exit::Ok,
        Err(Error::TimedOut(m)) => Exit::TimedOut(m),
        Err(e) => Exit::Error(e),
    }
}

fn dispatch(cli: &Cli) -> Result<()> {
    match &cli.command {
        Top::Init { path, chunk_size } => {
            let secret = secret::for_init(cli)?;
            let cfg = match location::classify(path)? {
                location::Where::Local(p) => {
                    Store::init(p, *chunk_size, &secret)?;
                    Store::read_config(p)?
                }
                location::Where::ObjectStore(at) => {
                    let backend = location::backend(cli, &at)?;
                    Store::init_on(&*backend, *chunk_size, &secret)?
                }
            };
            let out = command::Output::of(&InitReply {
                chunk_size: cfg.chunk_size,
                key_source: cfg.key_source,
                store: path.display().to_string(),
                store_id: cfg.store_id,
            })?;
            print_json(&out);
            Ok(())
        }
        Top::Mount(args) => mount(cli, args),
        Top::Unmount { mountpoint } => crate::daemon::unmount(mountpoint),
        Top::Store(cmd) => run_store_command(cli, cmd),
        Top::Stores(StoresCmd::Copy { src, dst, parallel }) => {
            copy::run(cli, src, dst, usize::from(*parallel))
        }
        Top::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "envelopefs", &mut std::io::stdout());
            Ok(())
        }
        Top::Man { dir } => man_pages(dir.as_deref()),
    }
}

/// `envelopefs man`: the pages generated from the clap definitions.
fn man_pages(dir: Option<&Path>) -> Result<()> {
    let cmd = <Cli as clap::CommandFactory>::command();
    match dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
            clap_mangen::generate_to(cmd, d)
                .map_err(|e| Error::io(format!("writing man pages to {}", d.display()), e))
        }
        None => clap_mangen::Man::new(cmd)
            .render(&mut std::io::stdout())
            .map_err(|e| Error::io("writing the man page", e)),
    }
}

/// The store path of a store command.
pub fn store_path(cli: &Cli) -> Result<&Path> {
    cli.store.as_deref().ok_or_else(|| {
        Error::InvalidArgument("no store given: pass --store STORE or set ENVELOPEFS_STORE".into())
    })
}

/// `envelopefs mount`: as the background daemon (started by [`crate::daemon::spawn`]), in the
/// foreground, or by starting that daemon.
fn mount(cli: &Cli, args: &MountArgs) -> Result<()> {
    if let location::Where::ObjectStore(at) = location::classify(&args.path)? {
        return location::mount_object_store(cli, &at, args);
    }
    let absolute = |p: &Path| std::fs::canonicalize(p).ctx(|| format!("resolving {}", p.display()));
    let root = absolute(&args.path)?;
    let mnt = absolute(&args.mountpoint)?;
    if std::env::var_os(crate::daemon::DAEMON_ENV).is_some() {
        return crate::daemon::run_daemon(&root, &mnt, &args.options);
    }
    // Fail fast, before asking for a secret, if the store is mounted or not a store.
    let cfg = Store::read_config(&root)?;
    drop(StoreLock::acquire(&root)?);
    let secret = secret::for_open(cli, &cfg.key_source)?;
    if args.foreground {
        return crate::daemon::serve(&root, &mnt, &args.options, &secret, false);
    }
    crate::daemon::spawn(&root, &mnt, &args.options, &secret)
}

/// Opens a store offline: lock (a lease in an object store) first, failing fast if it is
/// mounted or in use, then the secret.
pub fn open_offline(cli: &Cli, root: &Path) -> Result<Store> {
    if let location::Where::ObjectStore(at) = location::classify(root)? {
        let store = location::open_object_store(cli, &at, command_word(cli))?;
        crate::ops::kms::destroy_due_logged(&store);
        return Ok(store);
    }
    let lock = StoreLock::acquire(root)?;
    let cfg = Store::read_config(root)?;
    let secret = secret::for_open(cli, &cfg.key_source)?;
    let store = Store::open(root, lock, &secret)?;
    // Key versions whose deletion date passed while the store was closed go now.
    crate::ops::kms::destroy_due_logged(&store);
    Ok(store)
}

/// The command being run, as its first word, for the lease others see (nothing it carries:
/// a command may carry a plaintext).
fn command_word(cli: &Cli) -> &'static str {
    match &cli.command {
        Top::Store(StoreCommand::Key(_)) => "envelopefs key",
        Top::Store(StoreCommand::Bucket(_)) => "envelopefs bucket",
        Top::Store(StoreCommand::Object(_)) => "envelopefs object",
        Top::Store(StoreCommand::WorkRequest(_)) => "envelopefs work-request",
        Top::Store(StoreCommand::Kms(_)) => "envelopefs kms",
        Top::Store(StoreCommand::Status) => "envelopefs status",
        Top::Store(StoreCommand::Fsck(_)) => "envelopefs fsck",
        Top::Store(StoreCommand::Headers(_)) => "envelopefs headers",
        _ => "envelopefs",
    }
}

/// `kms encrypt --plaintext -`: the command with the base64 plaintext read from standard
/// input, so that it never appears in `/proc/PID/cmdline`.
fn with_plaintext_from_stdin(cmd: &StoreCommand) -> Result<Option<StoreCommand>> {
    let StoreCommand::Kms(command::KmsCmd::Encrypt {
        key_id,
        plaintext,
        encryption_context,
    }) = cmd
    else {
        return Ok(None);
    };
    if plaintext != "-" {
        return Ok(None);
    }
    let mut buf = zeroize::Zeroizing::new(String::new());
    std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut buf)
        .map_err(|e| Error::io("reading the plaintext from standard input", e))?;
    Ok(Some(StoreCommand::Kms(command::KmsCmd::Encrypt {
        key_id: key_id.clone(),
        plaintext: buf.trim().to_string(),
        encryption_context: encryption_context.clone(),
    })))
}

fn run_store_command(cli: &Cli, cmd: &StoreCommand) -> Result<()> {
    let from_stdin = with_plaintext_from_stdin(cmd)?;
    let cmd = from_stdin.as_ref().unwrap_or(cmd);
    if let Some(done) = reliability::run(cli, cmd) {
        return done;
    }
    let root = store_path(cli)?;
    let mounted = match location::classify(root)? {
        location::Where::Local(_) => remote::live_mount(root),
        location::Where::ObjectStore(at) => location::live_mount(cli, &at)?,
    };
    if let Some(mnt) = mounted {
        return remote::run(cmd, &mnt);
    }
    let store = open_offline(cli, root)?;
    let mut streams = StdStreams;
    let bar = Progress::new();
    let mut progress = |wr: &WorkRequest| bar.update(wr);
    // Unfinished work requests of the bucket (an interrupted earlier run) are resumed first.
    if let StoreCommand::Bucket(BucketCmd::Reencrypt { bucket_name, .. }) = cmd {
        resume_unfinished(&store, Some(bucket_name), &mut progress)?;
    }
    if let StoreCommand::WorkRequest(WorkRequestCmd::Wait { id, wait }) = cmd {
        command::wait_states(wait)?;
        // Offline, the one look runs the request to its end here.
        return remote::wait_for(wait, &bar, &mut || {
            let mut wr = workreq::load(&store, id)?;
            if !wr.status.is_terminal() {
                workreq::run(&store, &mut wr, &workreq::never_stop, &mut progress)?;
            }
            Ok(wr)
        });
    }
    let mut env = Env {
        customer: &NoCustomerKeys,
        streams: &mut streams,
        progress: &mut progress,
        spawn_work: None,
    };
    let mut out = command::execute(&store, cmd, &mut env)?;
    bar.finish();
    let is_get_to_stdout = matches!(
        cmd,
        StoreCommand::Object(command::ObjectCmd::Get { file: None, .. })
    );
    if is_get_to_stdout {
        return Ok(());
    }
    if let StoreCommand::Bucket(BucketCmd::Reencrypt { wait, .. }) = cmd {
        if !wait.wait_for_state.is_empty() {
            // Offline the request ran to its end in `execute`: the one look finds it done.
            let wr: WorkRequest = serde_json::from_value(out.take())
                .map_err(|e| Error::Corrupt(format!("work request: {e}")))?;
            return remote::wait_for(wait, &bar, &mut || Ok(wr.clone()));
        }
    }
    print_json(&out);
    Ok(())
}

fn resume_unfinished(
    store: &Store,
    bucket: Option<&str>,
    progress: &mut dyn FnMut(&WorkRequest),
) -> Result<()> {
    for mut wr in workreq::unfinished(store)? {
        if bucket.is_none_or(|b| b == wr.bucket_name) {
            eprintln!("resuming work request {} ({:?})", wr.id, wr.status);
            workreq::run(store, &mut wr, &workreq::never_stop, progress)?;
        }
    }
    Ok(())
}

/// Whether a work request reached one of the states waited for.
pub fn check_wanted(wr: &WorkRequest, wait: &WaitArgs) -> Result<()> {
    let wanted = command::wait_states(wait)?;
    if wanted.contains(&wr.status) {
        return Ok(());
    }
    if wr.status.is_terminal() {
        return Err(Error::InvalidArgument(format!(
            "work request {} ended {:?}, not in {:?}{}",
            wr.id,
            wr.status,
            wanted,
            failed_objects(wr)
        )));
    }
    Err(Error::TimedOut(format!(
        "work request {} is {:?} after waiting",
        wr.id, wr.status
    )))
}

/// The objects a work request failed, for its error message: `; N object(s) failed: ...`
/// with the first few reasons (every one is in the printed request's `errors`).
fn failed_objects(wr: &WorkRequest) -> String {
    const SHOWN: usize = 5;
    if wr.objects_failed == 0 {
        return String::new();
    }
    let mut s = format!("; {} object(s) failed", wr.objects_failed);
    for (i, e) in wr.errors.iter().take(SHOWN).enumerate() {
        s.push_str(if i == 0 { ": " } else { "; " });
        if !e.message.contains(&e.object) {
            s.push_str(&format!("{}: ", e.object));
        }
        s.push_str(&e.message);
    }
    let listed = wr.errors.len().min(SHOWN) as u64;
    if wr.objects_failed > listed {
        s.push_str(&format!(
            "; and {} more (see `errors`)",
            wr.objects_failed - listed
        ));
    }
    s
}

/// The reply of `init`.
#[derive(serde::Serialize)]
struct InitReply {
    /// Plaintext bytes per chunk.
    chunk_size: u32,
    /// `keyfile` or `passphrase`.
    key_source: String,
    /// The store directory.
    store: String,
    /// The new store's id (hex).
    store_id: String,
}

/// Prints data to stdout, as JSON or a table (`--output`). A reader that went away (`| head`)
/// is not an error of the command; any other failure to write (a full disk behind `>`) is
/// reported and exits 1.
///
/// The text is rendered into a zeroizing buffer and written with one `write_all` on a
/// duplicate of the stdout descriptor, past std's stdout buffer, which is never freed or
/// wiped (a `kms decrypt` result carries a plaintext).
pub fn print_json(v: &Value) {
    use std::io::Write;
    use std::os::fd::AsFd;
    let mut text = output::render(v);
    text.extend_from_slice(b"\n");
    let mut out = std::io::stdout().lock();
    let r = out
        .flush()
        .and_then(|()| out.as_fd().try_clone_to_owned())
        .and_then(|fd| std::fs::File::from(fd).write_all(text.as_bytes()));
    match r {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            eprintln!("envelopefs: writing the result to standard output: {e}");
            std::process::exit(1);
        }
    }
}

struct StdStreams;

impl DataStreams for StdStreams {
    fn input(&mut self) -> Result<Box<dyn std::io::Read + '_>> {
        Ok(Box::new(std::io::stdin().lock()))
    }
    fn output(&mut self) -> Result<Box<dyn std::io::Write + '_>> {
        Ok(Box::new(std::io::stdout().lock()))
    }
}

/// A progress bar on stderr, only when stderr is a terminal.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// A bar if stderr is a terminal, else nothing.
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(100);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{bar:40}] {pos}/{len} objects",
            ) {
                b.set_style(style);
            }
            b
        });
        Progress { bar }
    }

    /// Shows a work request's progress.
    pub fn update(&self, wr: &WorkRequest) {
        if let Some(b) = &self.bar {
            b.set_length(wr.objects_total);
            b.set_position(wr.objects_done());
            b.set_message(format!("{} {:?}", wr.id, wr.status));
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}
