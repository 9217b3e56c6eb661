//! The one command language of envelopefs: the store commands of the CLI, which the control
//! file `.envelopefs/ctl` also accepts as a line of text. Parsed in one place ([`parse_line`]
//! for the control file; the CLI flattens [`StoreCommand`] into its own parser) and executed
//! in one place ([`execute`]), which returns the JSON result.

use crate::error::{Error, IoContext, Result};
use crate::keys::crypto::Key32;
use crate::ops::rewrap::{self, Outcome, Target};
use crate::ops::workreq::{self, State};
use crate::store::object::{self, CustomerKeys};
use crate::store::{Store, BUCKET_DIR_MODE, OBJECT_FILE_MODE};
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

mod reply;
pub use reply::{
    wipe_strings, ErrorBody, ErrorReply, ObjectDataReply, ObjectReply, OkReply, Output, Reply,
    SseCAdded, SseCKey, SseCRemoved,
};

/// Store commands: the same words on the command line and in `.envelopefs/ctl`.
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreCommand {
    /// Master keys: create, list, get, rotate, disable, enable, update, usage,
    /// schedule-deletion, cancel-deletion.
    /// Example: envelopefs key list
    #[command(subcommand)]
    Key(KeyCmd),
    /// Buckets: create, list, get, update, reencrypt.
    /// Example: envelopefs bucket list
    #[command(subcommand)]
    Bucket(BucketCmd),
    /// Objects: put, get, head, reencrypt.
    /// Example: envelopefs object head --bucket-name photos --name cat.jpg
    #[command(subcommand)]
    Object(ObjectCmd),
    /// Work requests: get, list, cancel, wait.
    /// Example: envelopefs work-request list
    #[command(subcommand, name = "work-request")]
    WorkRequest(WorkRequestCmd),
    /// Standalone envelope blobs: encrypt, decrypt, generate-data-key, re-encrypt.
    /// Example: envelopefs kms encrypt --key-id photos-key --plaintext aGVsbG8=
    #[command(subcommand)]
    Kms(KmsCmd),
    /// Mounted or not (and where), keys, buckets with object counts, work requests in flight.
    /// Example: envelopefs status --store ~/vault --output json
    Status,
    /// Check the store and change nothing: config, keystore, bucket records, object headers
    /// (each DEK unwraps), and with --read-data every chunk. Exit 1 if anything is wrong.
    /// Example: envelopefs fsck ~/vault --read-data
    Fsck(FsckArgs),
    /// Back up or restore bucket records and object headers (wrapped keys only).
    #[command(subcommand)]
    Headers(HeadersCmd),
    /// Customer-provided keys (SSE-C) loaded into a mount's key ring: add, list, remove.
    /// The ring lives only in the mount's memory; the store keeps fingerprints only.
    /// Example: envelopefs --store ~/vault sse-c add --encryption-key-file my.key
    #[command(subcommand, name = "sse-c")]
    SseC(SseCCmd),
}

/// `sse-c ...` (only through a mount: the ring is the mount's memory).
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SseCCmd {
    /// Load a customer-provided key (base64 or raw 32-byte AES-256 key file) into the mount,
    /// so that objects wrapped under it open.
    /// Example: envelopefs --store ~/vault sse-c add --encryption-key-file my.key
    Add {
        /// The key file.
        #[arg(long)]
        encryption_key_file: PathBuf,
    },
    /// List the fingerprints of the loaded keys (never the keys).
    /// Example: envelopefs --store ~/vault sse-c list
    List,
    /// Remove a key from the mount's ring (its memory is zeroed). Files open already keep
    /// working; new opens of its objects fail with ENOKEY.
    /// Example: envelopefs --store ~/vault sse-c remove --fingerprint 3f2a9c0d1e2b4a5f
    Remove {
        /// The key's fingerprint (hex, or a unique prefix of at least 8 digits).
        #[arg(
            long,
            conflicts_with = "encryption_key_file",
            required_unless_present = "encryption_key_file"
        )]
        fingerprint: Option<String>,
        /// The key file (its fingerprint is computed).
        #[arg(long)]
        encryption_key_file: Option<PathBuf>,
    },
}

/// `fsck [STORE] [--read-data]`
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct FsckArgs {
    /// The store directory (default: --store).
    #[arg(value_name = "STORE")]
    pub path: Option<PathBuf>,
    /// Also read and authenticate every chunk of every object.
    #[arg(long)]
    pub read_data: bool,
}

/// `headers ...`
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadersCmd {
    /// Write every bucket record and object header to a file (safe to keep anywhere).
    /// Example: envelopefs --store ~/vault headers export --out headers.json
    Export {
        /// The backup file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Put back the bucket records and object headers missing from the store.
    /// Example: envelopefs --store ~/vault headers import headers.json
    Import {
        /// A file written by `headers export`.
        file: PathBuf,
    },
}

/// `key ...`
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyCmd {
    /// Create a master key (version 1).
    /// Example: envelopefs key create --alias photos-key
    Create {
        /// A unique human name for the key.
        #[arg(long)]
        alias: Option<String>,
    },
    /// List master keys (metadata only).
    /// Example: envelopefs key list
    List,
    /// Show one key by id or alias.
    /// Example: envelopefs key get photos-key
    Get {
        /// Key id (key-...) or alias.
        key: String,
    },
    /// Add a new version that becomes current.
    /// Example: envelopefs key rotate photos-key
    Rotate {
        /// Key id or alias.
        key: String,
    },
    /// Disable a version (default: the current one); objects under it cannot be opened.
    /// Example: envelopefs key disable photos-key --version 1
    Disable {
        /// Key id or alias.
        key: String,
        /// The version (default: current).
        #[arg(long)]
        version: Option<u32>,
    },
    /// Enable a version again.
    /// Example: envelopefs key enable photos-key --version 1
    Enable {
        /// Key id or alias.
        key: String,
        /// The version (default: current).
        #[arg(long)]
        version: Option<u32>,
    },
    /// Change a key's policy: the operations it allows.
    /// Example: envelopefs key update photos-key --allowed-operations decrypt,re-encrypt-from
    Update {
        /// Key id or alias.
        key: String,
        /// Comma-separated: encrypt, decrypt, re-encrypt-from, re-encrypt-to; or all, or none.
        #[arg(long, value_name = "OPS")]
        allowed_operations: String,
    },
    /// Count, per version, the objects (and buckets) whose data keys are wrapped under it.
    /// Example: envelopefs key usage photos-key
    Usage {
        /// Key id or alias.
        key: String,
    },
    /// Schedule the destruction of a version (not the current one) after --days days.
    /// Refused while objects depend on it, unless --force.
    /// Example: envelopefs key schedule-deletion photos-key --version 1 --days 7
    ScheduleDeletion {
        /// Key id or alias.
        key: String,
        /// The version to destroy.
        #[arg(long)]
        version: u32,
        /// Days until it is destroyed (7 to 30).
        #[arg(long, default_value_t = crate::keys::keystore::DEFAULT_DELETION_DAYS)]
        days: u32,
        /// Schedule even though objects depend on the version (they become unrecoverable).
        #[arg(long)]
        force: bool,
    },
    /// Cancel a scheduled deletion; the version becomes DISABLED.
    /// Example: envelopefs key cancel-deletion photos-key --version 1
    CancelDeletion {
        /// Key id or alias.
        key: String,
        /// The version.
        #[arg(long)]
        version: u32,
    },
}

/// `kms ...`: standalone envelope blobs with an encryption context.
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KmsCmd {
    /// Encrypt up to 4096 bytes (base64) under a key's current version.
    /// Example: envelopefs kms encrypt --key-id photos-key --plaintext aGVsbG8= --encryption-context app=web
    Encrypt {
        /// Key id or alias.
        #[arg(long)]
        key_id: String,
        /// The plaintext, base64; `-` reads it from standard input (the CLI only), so that it
        /// does not show in the process list.
        #[arg(long, value_name = "B64")]
        plaintext: String,
        /// key=value pairs, comma-separated (repeatable); needed again to decrypt.
        #[arg(long, value_name = "K=V,...")]
        encryption_context: Vec<String>,
    },
    /// Decrypt a blob (the blob names its key and version).
    /// Example: envelopefs kms decrypt --ciphertext-blob RUZLQg... --encryption-context app=web
    Decrypt {
        /// The blob, base64.
        #[arg(long, value_name = "B64")]
        ciphertext_blob: String,
        /// The encryption context it was made with.
        #[arg(long, value_name = "K=V,...")]
        encryption_context: Vec<String>,
        /// Fail unless the blob is under this key.
        #[arg(long)]
        key_id: Option<String>,
    },
    /// Make a random data key: returns it in clear (Plaintext) and sealed (CiphertextBlob).
    /// Example: envelopefs kms generate-data-key --key-id photos-key
    GenerateDataKey {
        /// Key id or alias.
        #[arg(long)]
        key_id: String,
        /// Length of the data key in bytes (1 to 1024).
        #[arg(long, default_value_t = 32)]
        number_of_bytes: usize,
        /// key=value pairs, comma-separated (repeatable).
        #[arg(long, value_name = "K=V,...")]
        encryption_context: Vec<String>,
    },
    /// Decrypt a blob and encrypt it under another key inside the store (the plaintext is
    /// never returned).
    /// Example: envelopefs kms re-encrypt --ciphertext-blob RUZLQg... --destination-key-id new-key
    ReEncrypt {
        /// The blob, base64.
        #[arg(long, value_name = "B64")]
        ciphertext_blob: String,
        /// Key id or alias to encrypt to (its current version).
        #[arg(long)]
        destination_key_id: String,
        /// The context the blob was made with.
        #[arg(long, value_name = "K=V,...")]
        source_encryption_context: Vec<String>,
        /// The context of the new blob.
        #[arg(long, value_name = "K=V,...")]
        destination_encryption_context: Vec<String>,
        /// Fail unless the blob is under this key.
        #[arg(long)]
        source_key_id: Option<String>,
    },
}

/// `bucket ...`
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BucketCmd {
    /// Create a bucket.
    /// Example: envelopefs bucket create --name photos --kms-key-id photos-key
    Create {
        /// Bucket name.
        #[arg(long)]
        name: String,
        /// Master key for its objects (default, or `none`: the store's default key).
        #[arg(long)]
        kms_key_id: Option<String>,
    },
    /// List buckets.
    /// Example: envelopefs bucket list
    List,
    /// Show one bucket.
    /// Example: envelopefs bucket get --name photos
    Get {
        /// Bucket name.
        #[arg(long)]
        name: String,
    },
    /// Assign or remove a bucket's master key.
    /// Example: envelopefs bucket update --name photos --kms-key-id photos-key
    Update {
        /// Bucket name.
        #[arg(long)]
        name: String,
        /// Key to assign (id or alias), or `none` to remove the assigned key (the bucket then
        /// uses the store's default key). An empty value is refused.
        #[arg(
            long,
            conflicts_with = "remove_kms_key",
            required_unless_present = "remove_kms_key"
        )]
        kms_key_id: Option<String>,
        /// Go back to the store's default key (the same as `--kms-key-id none`).
        #[arg(long)]
        remove_kms_key: bool,
    },
    /// Rewrap every object's DEK under the newest version of the bucket's key.
    /// Example: envelopefs bucket reencrypt --bucket-name photos --wait-for-state SUCCEEDED
    Reencrypt {
        /// Bucket name.
        #[arg(long)]
        bucket_name: String,
        /// Assign this key first and re-encrypt to it (default, or `latest`: the assigned
        /// key). An empty value is refused.
        #[arg(long)]
        kms_key_id: Option<String>,
        /// Give every object a new data key and rewrite its data (for a leaked data key),
        /// instead of rewrapping the old one. SSE-C and hard-linked objects cannot be
        /// rekeyed by a bucket job: they end the request FAILED, each named with what to do.
        #[arg(long)]
        rekey: bool,
        /// With --rekey: how long to wait for objects open in the mount to close (seconds,
        /// at most 86400). Objects still open then keep their old data key, and the request
        /// ends FAILED, naming them.
        #[arg(long, requires = "rekey", default_value_t = workreq::DEFAULT_OPEN_WAIT_SECONDS)]
        open_wait_seconds: u64,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// Waiting for a work request.
#[derive(Debug, Clone, Args, Default, Serialize, Deserialize)]
pub struct WaitArgs {
    /// Return when the work request reaches this state (repeatable).
    #[arg(long = "wait-for-state")]
    pub wait_for_state: Vec<String>,
    /// Give up after this long (exit code 2).
    #[arg(long, default_value_t = 1200)]
    pub max_wait_seconds: u64,
    /// The longest pause between two looks: the first look is at once, the next after
    /// 50 ms, each pause twice the last, up to this.
    #[arg(long, default_value_t = 30)]
    pub wait_interval_seconds: u64,
}

/// `object ...`
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectCmd {
    /// Store a file (or standard input) as an object.
    /// Example: envelopefs object put --bucket-name photos --name 2024/cat.jpg --file cat.jpg
    Put {
        /// Bucket name.
        #[arg(long)]
        bucket_name: String,
        /// Object name (may contain '/').
        #[arg(long)]
        name: String,
        /// Source file (default: standard input).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Write an object's plaintext to a file (or standard output).
    /// Example: envelopefs object get --bucket-name photos --name 2024/cat.jpg --file out.jpg
    Get {
        /// Bucket name.
        #[arg(long)]
        bucket_name: String,
        /// Object name.
        #[arg(long)]
        name: String,
        /// Destination file (default: standard output).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Show an object's encryption metadata.
    /// Example: envelopefs object head --bucket-name photos --name 2024/cat.jpg
    Head {
        /// Bucket name.
        #[arg(long)]
        bucket_name: String,
        /// Object name.
        #[arg(long)]
        name: String,
    },
    /// Rewrap one object's DEK (default: to the newest version of the bucket's key).
    /// Example: envelopefs object reencrypt --bucket-name photos --name 2024/cat.jpg
    Reencrypt {
        /// Bucket name.
        #[arg(long)]
        bucket_name: String,
        /// Object name.
        #[arg(long)]
        name: String,
        /// Rewrap to this master key instead (`latest`: the default). An empty value is
        /// refused.
        #[arg(long)]
        kms_key_id: Option<String>,
        /// Rewrap to this customer-provided key (base64 AES-256 key file).
        #[arg(long)]
        encryption_key_file: Option<PathBuf>,
        /// The customer-provided key the object is wrapped under now.
        #[arg(long)]
        source_encryption_key_file: Option<PathBuf>,
        /// Give the object a new data key (and object id) and rewrite its data, instead of
        /// rewrapping the old data key.
        #[arg(long)]
        rekey: bool,
    },
}

/// `work-request ...`
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkRequestCmd {
    /// Show one work request.
    /// Example: envelopefs work-request get wr-0123...
    Get {
        /// Work request id.
        id: String,
    },
    /// List work requests.
    /// Example: envelopefs work-request list --bucket-name photos
    List {
        /// Only this bucket's.
        #[arg(long)]
        bucket_name: Option<String>,
    },
    /// Ask a work request to stop.
    /// Example: envelopefs work-request cancel wr-0123...
    Cancel {
        /// Work request id.
        id: String,
    },
    /// Wait for a work request to reach a state.
    /// Example: envelopefs work-request wait wr-0123... --wait-for-state SUCCEEDED
    Wait {
        /// Work request id.
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// A control-file line: a store command without the program name.
#[derive(Debug, Parser)]
#[command(
    name = "ctl",
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
struct CtlLine {
    #[command(subcommand)]
    command: StoreCommand,
}

/// Largest control command accepted (bytes).
pub const MAX_LINE: usize = 64 * 1024;

/// A command as the CLI sends it to a mount: one JSON object, `{"command": ...}` (see
/// [`to_json_line`]). A control-file line that starts with `{` is read as one.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonLine<C> {
    command: C,
}

/// The line that carries an already-parsed command to a mount's control file, built in a
/// zeroizing buffer (a command may carry a plaintext: `kms encrypt`). Paths go as they are:
/// the caller makes them absolute ([`StoreCommand::make_paths_absolute`]).
pub fn to_json_line(cmd: &StoreCommand) -> Result<crate::hygiene::WipingBuf> {
    let mut out = crate::hygiene::WipingBuf::new();
    serde_json::to_writer(&mut out, &JsonLine { command: cmd })
        .map_err(|e| Error::InvalidArgument(format!("cannot send the command: {e}")))?;
    Ok(out)
}

impl StoreCommand {
    /// Makes every file named by the command absolute, relative to `cwd` (before the command
    /// goes to a mount, whose daemon has another working directory).
    pub fn make_paths_absolute(&mut self, cwd: &std::path::Path) {
        let mut abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = cwd.join(&*p);
            }
        };
        match self {
            StoreCommand::Object(ObjectCmd::Put { file, .. })
            | StoreCommand::Object(ObjectCmd::Get { file, .. }) => file.iter_mut().for_each(abs),
            StoreCommand::Object(ObjectCmd::Reencrypt {
                encryption_key_file,
                source_encryption_key_file,
                ..
            }) => {
                encryption_key_file.iter_mut().for_each(&mut abs);
                source_encryption_key_file.iter_mut().for_each(abs);
            }
            StoreCommand::SseC(SseCCmd::Add {
                encryption_key_file,
            }) => abs(encryption_key_file),
            StoreCommand::SseC(SseCCmd::Remove {
                encryption_key_file,
                ..
            }) => encryption_key_file.iter_mut().for_each(abs),
            StoreCommand::Headers(HeadersCmd::Export { out: p })
            | StoreCommand::Headers(HeadersCmd::Import { file: p }) => abs(p),
            StoreCommand::Fsck(FsckArgs { path, .. }) => path.iter_mut().for_each(abs),
            StoreCommand::Key(_)
            | StoreCommand::Bucket(_)
            | StoreCommand::Object(ObjectCmd::Head { .. })
            | StoreCommand::WorkRequest(_)
            | StoreCommand::Kms(_)
            | StoreCommand::Status
            | StoreCommand::SseC(SseCCmd::List) => {}
        }
    }
}

/// Parses one control-file line into a command: the CLI's words with shell-style quoting
/// (`bucket list`), or, if it starts with `{`, a command as the CLI sends it
/// ([`to_json_line`]).
pub fn parse_line(line: &str) -> Result<StoreCommand> {
    if line.len() > MAX_LINE {
        return Err(Error::InvalidArgument(format!(
            "command is {} bytes; the limit is {MAX_LINE}",
            line.len()
        )));
    }
    if line.trim_start().starts_with('{') {
        return serde_json::from_str::<JsonLine<StoreCommand>>(line)
            .map(|j| j.command)
            .map_err(|e| Error::InvalidArgument(format!("invalid JSON command: {e}")));
    }
    let words = shell_words::split(line.trim())
        .map_err(|e| Error::InvalidArgument(format!("cannot split command: {e}")))?;
    if words.is_empty() {
        return Err(Error::InvalidArgument("empty command".into()));
    }
    CtlLine::try_parse_from(words)
        .map(|c| c.command)
        .map_err(|e| Error::InvalidArgument(first_line(&e.to_string())))
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid command")
        .trim_start_matches("error: ")
        .to_string()
}

/// The words a command takes where it takes a key: [`KeyWord::NoKey`] (`none`) and
/// [`KeyWord::Latest`] (`latest`). Key aliases cannot be either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWord {
    /// `none`: no assigned key (`bucket create`/`update --kms-key-id`, and the control file
    /// `buckets/B/kms-key-id`); the bucket then uses the store's default key.
    NoKey,
    /// `latest`: the newest version of the bucket's key (`bucket`/`object reencrypt
    /// --kms-key-id`, the control file `buckets/B/reencrypt`, the xattr
    /// `user.envelopefs.reencrypt`).
    Latest,
}

impl KeyWord {
    /// The word itself.
    pub const fn word(self) -> &'static str {
        match self {
            KeyWord::NoKey => "none",
            KeyWord::Latest => "latest",
        }
    }

    fn meaning(self) -> &'static str {
        match self {
            KeyWord::NoKey => "to remove the bucket's key (it then uses the store's default key)",
            KeyWord::Latest => "for the newest version of the bucket's key",
        }
    }
}

/// A key reference given where `word` is also accepted: the trimmed reference, or `None` for
/// the word. A blank value is EINVAL with what to give instead, so that an unset variable
/// (`echo "$KEY" > .../kms-key-id`) never picks a meaning of its own.
pub fn key_or_word(value: &str, word: KeyWord) -> Result<Option<&str>> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "no key given (the value is empty): give a key id or alias, or {:?} {}",
            word.word(),
            word.meaning()
        )));
    }
    Ok((v != word.word()).then_some(v))
}

fn optional_key_or_word(value: Option<&str>, word: KeyWord) -> Result<Option<&str>> {
    Ok(value.map(|k| key_or_word(k, word)).transpose()?.flatten())
}

/// Where a command's bulk data goes when it has no file (the CLI's stdin/stdout).
pub trait DataStreams {
    /// Standard input for `object put` without `--file`.
    fn input(&mut self) -> Result<Box<dyn std::io::Read + '_>>;
    /// Standard output for `object get` without `--file`.
    fn output(&mut self) -> Result<Box<dyn std::io::Write + '_>>;
}

/// No streams: the control file carries only files named by absolute path.
pub struct NoStreams;

impl DataStreams for NoStreams {
    fn input(&mut self) -> Result<Box<dyn std::io::Read + '_>> {
        Err(Error::InvalidArgument("--file is required here".into()))
    }
    fn output(&mut self) -> Result<Box<dyn std::io::Write + '_>> {
        Err(Error::InvalidArgument("--file is required here".into()))
    }
}

/// What `execute` needs besides the store.
pub struct Env<'a> {
    /// Customer keys loaded (the mount's key ring, or none).
    pub customer: &'a dyn CustomerKeys,
    /// stdin/stdout for object data.
    pub streams: &'a mut dyn DataStreams,
    /// Called as a work request runs synchronously (offline); the mount runs them in its pool.
    pub progress: &'a mut dyn FnMut(&workreq::WorkRequest),
    /// Starts a work request asynchronously; `None` runs it synchronously here.
    pub spawn_work: Option<&'a dyn Fn(&workreq::WorkRequest)>,
}

/// Executes a store command and returns its JSON result.
pub fn execute(store: &Store, cmd: &StoreCommand, env: &mut Env<'_>) -> Result<Output> {
    Output::of(&execute_reply(store, cmd, env)?)
}

/// Executes a store command and returns its typed result.
pub fn execute_reply(store: &Store, cmd: &StoreCommand, env: &mut Env<'_>) -> Result<Reply> {
    // Key versions past their deletion date are destroyed before anything uses the keys
    // (not for fsck, which changes nothing).
    if !matches!(cmd, StoreCommand::Fsck(_)) {
        crate::ops::kms::destroy_due_logged(store);
    }
    match cmd {
        StoreCommand::Key(k) => execute_key(store, k),
        StoreCommand::Kms(k) => execute_kms(store, k),
        StoreCommand::Bucket(b) => execute_bucket(store, b, env),
        StoreCommand::Object(o) => execute_object(store, o, env),
        StoreCommand::WorkRequest(w) => execute_work_request(store, w),
        StoreCommand::Status => {
            crate::ops::status::status(store).map(|s| Reply::Status(Box::new(s)))
        }
        StoreCommand::Fsck(a) => {
            crate::ops::fsck::check_store(store, a.read_data, &mut |_, _| {}).map(Reply::Fsck)
        }
        StoreCommand::Headers(HeadersCmd::Export { out }) => {
            crate::ops::headers::export(store, out).map(Reply::HeadersExport)
        }
        StoreCommand::Headers(HeadersCmd::Import { file }) => {
            crate::ops::headers::import(store, file).map(Reply::HeadersImport)
        }
        StoreCommand::SseC(_) => Err(Error::InvalidArgument(
            "the customer key ring lives in a mount (keys are never stored): mount the store, \
             then run sse-c with --store STORE or through MOUNT/.envelopefs/ctl"
                .into(),
        )),
    }
}

fn execute_key(store: &Store, cmd: &KeyCmd) -> Result<Reply> {
    match cmd {
        KeyCmd::Create { alias } => {
            let id = store.update_keys(|ks| ks.create_key(alias.clone()))?;
            let ks = store.keys();
            let k = ks
                .find(&id)
                .ok_or_else(|| Error::NotFound("key vanished".into()))?;
            Ok(Reply::Key(ks.describe(k)))
        }
        KeyCmd::List => {
            let ks = store.keys();
            Ok(Reply::Keys(
                ks.keys().iter().map(|k| ks.describe(k)).collect(),
            ))
        }
        KeyCmd::Get { key } => {
            let ks = store.keys();
            Ok(Reply::Key(ks.describe(ks.resolve(key)?)))
        }
        KeyCmd::Rotate { key } => {
            let id = store.resolve_key(key)?;
            store.update_keys(|ks| ks.rotate(&id))?;
            let ks = store.keys();
            Ok(Reply::Key(ks.describe(ks.resolve(key)?)))
        }
        KeyCmd::Disable { key, version } | KeyCmd::Enable { key, version } => {
            let enable = matches!(cmd, KeyCmd::Enable { .. });
            let id = store.resolve_key(key)?;
            store.update_keys(|ks| ks.set_enabled(&id, *version, enable))?;
            let ks = store.keys();
            Ok(Reply::Key(ks.describe(ks.resolve(key)?)))
        }
        KeyCmd::Update {
            key,
            allowed_operations,
        } => {
            let bits = crate::keys::keystore::parse_ops(allowed_operations)?;
            let id = store.resolve_key(key)?;
            store.update_keys(|ks| ks.set_allowed_ops(&id, bits))?;
            let ks = store.keys();
            Ok(Reply::Key(ks.describe(ks.resolve(key)?)))
        }
        KeyCmd::Usage { key } => crate::ops::kms::usage_reply(store, key).map(Reply::KeyUsage),
        KeyCmd::ScheduleDeletion {
            key,
            version,
            days,
            force,
        } => crate::ops::kms::schedule_deletion(store, key, *version, *days, *force)
            .map(Reply::KeyDeletion),
        KeyCmd::CancelDeletion { key, version } => {
            let id = store.resolve_key(key)?;
            store.update_keys(|ks| ks.cancel_deletion(&id, *version))?;
            let ks = store.keys();
            Ok(Reply::Key(ks.describe(ks.resolve(key)?)))
        }
    }
}

fn execute_kms(store: &Store, cmd: &KmsCmd) -> Result<Reply> {
    use crate::ops::kms::{self, parse_context};
    match cmd {
        KmsCmd::Encrypt {
            key_id,
            plaintext,
            encryption_context,
        } => kms::encrypt(
            store,
            key_id,
            plaintext,
            &parse_context(encryption_context)?,
        )
        .map(Reply::KmsEncrypt),
        KmsCmd::Decrypt {
            ciphertext_blob,
            encryption_context,
            key_id,
        } => kms::decrypt(
            store,
            ciphertext_blob,
            &parse_context(encryption_context)?,
            key_id.as_deref(),
        )
        .map(Reply::KmsDecrypt),
        KmsCmd::GenerateDataKey {
            key_id,
            number_of_bytes,
            encryption_context,
        } => kms::generate_data_key(
            store,
            key_id,
            *number_of_bytes,
            &parse_context(encryption_context)?,
        )
        .map(Reply::KmsDataKey),
        KmsCmd::ReEncrypt {
            ciphertext_blob,
            destination_key_id,
            source_encryption_context,
            destination_encryption_context,
            source_key_id,
        } => kms::re_encrypt(
            store,
            ciphertext_blob,
            &parse_context(source_encryption_context)?,
            source_key_id.as_deref(),
            destination_key_id,
            &parse_context(destination_encryption_context)?,
        )
        .map(Reply::KmsReEncrypt),
    }
}

fn execute_bucket(store: &Store, cmd: &BucketCmd, env: &mut Env<'_>) -> Result<Reply> {
    match cmd {
        BucketCmd::Create { name, kms_key_id } => {
            let key = optional_key_or_word(kms_key_id.as_deref(), KeyWord::NoKey)?;
            let rec = store.create_bucket(name, key, BUCKET_DIR_MODE)?;
            Ok(Reply::Bucket(store.describe_bucket(name, &rec)))
        }
        BucketCmd::List => Ok(Reply::Buckets(
            store
                .buckets()?
                .iter()
                .map(|(n, r)| store.describe_bucket(n, r))
                .collect(),
        )),
        BucketCmd::Get { name } => {
            let rec = store.bucket(name)?;
            Ok(Reply::Bucket(store.describe_bucket(name, &rec)))
        }
        BucketCmd::Update {
            name,
            kms_key_id,
            remove_kms_key,
        } => {
            // The rules clap enforces on the command line hold for a command sent as JSON
            // too: exactly one of the two, so a missing key never removes one.
            let key = match (kms_key_id.as_deref(), *remove_kms_key) {
                (None, true) => None,
                (Some(k), false) => key_or_word(k, KeyWord::NoKey)?,
                (None, false) | (Some(_), true) => {
                    return Err(Error::InvalidArgument(
                        "bucket update takes exactly one of --kms-key-id K (or `none`) and \
                         --remove-kms-key"
                            .into(),
                    ))
                }
            };
            let rec = store.update_bucket(name, key)?;
            Ok(Reply::Bucket(store.describe_bucket(name, &rec)))
        }
        BucketCmd::Reencrypt {
            bucket_name,
            kms_key_id,
            rekey,
            open_wait_seconds,
            wait: _,
        } => {
            let key = optional_key_or_word(kms_key_id.as_deref(), KeyWord::Latest)?;
            let job = if *rekey {
                workreq::Job::Rekey {
                    open_wait_seconds: *open_wait_seconds,
                }
            } else {
                workreq::Job::Reencrypt
            };
            let mut wr = workreq::accept_op(store, bucket_name, key, job)?;
            match env.spawn_work {
                Some(spawn) => spawn(&wr),
                None => workreq::run(store, &mut wr, &workreq::never_stop, env.progress)?,
            }
            Ok(Reply::WorkRequest(Box::new(wr)))
        }
    }
}

fn execute_object(store: &Store, cmd: &ObjectCmd, env: &mut Env<'_>) -> Result<Reply> {
    match cmd {
        ObjectCmd::Put {
            bucket_name,
            name,
            file,
        } => {
            let dest = store.object_ref(bucket_name, name)?;
            store
                .backend()
                .make_parents(bucket_name, &dest.name, BUCKET_DIR_MODE, &dest.what)?;
            let mut src: Box<dyn std::io::Read> = match file {
                Some(f) => {
                    Box::new(std::fs::File::open(f).ctx(|| format!("opening {}", f.display()))?)
                }
                None => Box::new(env.streams.input()?),
            };
            let create = object::Create {
                mode: OBJECT_FILE_MODE,
                exclusive: false,
                durable: true,
                ..object::Create::default()
            };
            let obj = object::create_object_in(
                store,
                bucket_name,
                &dest.bucket,
                &dest.name,
                &create,
                &mut |obj| {
                    let mut buf = vec![0u8; 1 << 20];
                    let mut off = 0u64;
                    loop {
                        let n = read_some(&mut src, &mut buf)?;
                        if n == 0 {
                            break;
                        }
                        obj.write_at(off, &buf[..n])?;
                        off += n as u64;
                    }
                    Ok(())
                },
            )?;
            let size = obj.size();
            drop(obj);
            let mut v = head(store, bucket_name, name)?;
            v.size = size;
            Ok(Reply::Object(v))
        }
        ObjectCmd::Get {
            bucket_name,
            name,
            file,
        } => {
            let src = store.object_ref(bucket_name, name)?;
            let blob = src.open(store)?;
            let obj = object::open_blob(store, &src.bucket, &*blob, &src.what, env.customer)?;
            let mut out: Box<dyn std::io::Write> = match file {
                Some(f) => {
                    Box::new(std::fs::File::create(f).ctx(|| format!("creating {}", f.display()))?)
                }
                None => Box::new(env.streams.output()?),
            };
            let mut buf = vec![0u8; 1 << 20];
            let mut off = 0u64;
            while off < obj.size() {
                let n = obj.read_at(off, &mut buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])
                    .ctx(|| "writing the object out".to_string())?;
                off += n as u64;
            }
            out.flush().ctx(|| "writing the object out".to_string())?;
            Ok(Reply::ObjectData(ObjectDataReply {
                bucket: bucket_name.clone(),
                name: name.clone(),
                size: off,
            }))
        }
        ObjectCmd::Head { bucket_name, name } => head(store, bucket_name, name).map(Reply::Object),
        ObjectCmd::Reencrypt {
            bucket_name,
            name,
            kms_key_id,
            encryption_key_file,
            source_encryption_key_file,
            rekey,
        } => {
            let target = match (kms_key_id, encryption_key_file) {
                (Some(_), Some(_)) => {
                    return Err(Error::InvalidArgument(
                        "--kms-key-id and --encryption-key-file exclude each other".into(),
                    ))
                }
                (Some(k), None) => match key_or_word(k, KeyWord::Latest)? {
                    Some(k) => Target::Master(store.resolve_key(k)?),
                    None => Target::BucketLatest,
                },
                (None, Some(f)) => Target::Customer(read_key_file(f)?),
                (None, None) => Target::BucketLatest,
            };
            let source = source_encryption_key_file
                .as_ref()
                .map(|f| read_key_file(f))
                .transpose()?;
            check_source_key(store, bucket_name, name, source.as_ref(), env.customer)?;
            let ring = OneKeyThen {
                key: source,
                then: env.customer,
            };
            if *rekey {
                let live = env
                    .customer
                    .live()
                    .unwrap_or(&crate::store::object::Offline);
                let done = crate::ops::rekey::rekey_object(
                    store,
                    bucket_name,
                    name,
                    &target,
                    &ring,
                    live,
                )?;
                let mut v = head(store, bucket_name, name)?;
                if let crate::ops::rekey::Rekeyed::Done { old_object_id, .. } = done {
                    v.result = Some("REKEYED".into());
                    v.previous_object_id = Some(crate::format::hex(&old_object_id));
                }
                return Ok(Reply::Object(v));
            }
            let outcome = rewrap::rewrap_object(store, bucket_name, name, &target, &ring)?;
            let mut v = head(store, bucket_name, name)?;
            v.result = Some(match outcome {
                Outcome::Rewrapped { .. } => "REWRAPPED".into(),
                Outcome::Skipped(why) => format!("SKIPPED: {why}"),
            });
            Ok(Reply::Object(v))
        }
    }
}

fn read_some(r: &mut dyn std::io::Read, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading the input", e)),
        }
    }
    Ok(filled)
}

/// Reads a customer key file (base64 or raw 32 bytes).
pub fn read_key_file(path: &std::path::Path) -> Result<Key32> {
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(path).ctx(|| format!("reading key file {}", path.display()))?,
    );
    crate::keys::crypto::parse_key_file(&bytes)
}

/// Checks the source side of an object re-encrypt before anything changes: a source key given
/// for an object not under a customer key, a source key that is not the object's, or an SSE-C
/// object without its key are clear errors.
fn check_source_key(
    store: &Store,
    bucket_name: &str,
    name: &str,
    source: Option<&Key32>,
    ring: &dyn CustomerKeys,
) -> Result<()> {
    let obj = store.object_ref(bucket_name, name)?;
    let what = &obj.what;
    let h = object::read_header(&*obj.open(store)?, what)?;
    let short = |fp: &[u8; 32]| crate::format::hex(&fp[..8]);
    match (&h.wrapping, source) {
        (crate::format::records::Wrapping::Master { .. }, Some(_)) => {
            Err(Error::InvalidArgument(format!(
                "{what} is not wrapped under a customer-provided key: drop \
                 --source-encryption-key-file"
            )))
        }
        (crate::format::records::Wrapping::Customer { fingerprint }, Some(k)) => {
            let given = crate::keys::crypto::customer_fingerprint(k);
            if &given == fingerprint {
                Ok(())
            } else {
                Err(Error::NoKey(format!(
                    "the key in --source-encryption-key-file (fingerprint {}) is not the one \
                     {what} is wrapped under (fingerprint {}); nothing was changed",
                    short(&given),
                    short(fingerprint)
                )))
            }
        }
        (crate::format::records::Wrapping::Customer { fingerprint }, None) => {
            if ring.customer_key(fingerprint).is_some() {
                Ok(())
            } else {
                Err(Error::NoKey(format!(
                    "{what} is wrapped under customer-provided key {}: give it with \
                     --source-encryption-key-file (or load it into the mount with sse-c add)",
                    short(fingerprint)
                )))
            }
        }
        (crate::format::records::Wrapping::Master { .. }, None) => Ok(()),
    }
}

/// A single customer key in front of a key ring.
struct OneKeyThen<'a> {
    key: Option<Key32>,
    then: &'a dyn CustomerKeys,
}

impl CustomerKeys for OneKeyThen<'_> {
    fn customer_key(&self, fingerprint: &[u8; 32]) -> Option<Key32> {
        match &self.key {
            Some(k) if &crate::keys::crypto::customer_fingerprint(k) == fingerprint => {
                Some(k.clone())
            }
            _ => self.then.customer_key(fingerprint),
        }
    }

    fn live(&self) -> Option<&dyn crate::store::object::Live> {
        self.then.live()
    }
}

/// `object head`: header metadata and plaintext size (computed from the backing size).
pub fn head(store: &Store, bucket_name: &str, name: &str) -> Result<ObjectReply> {
    let obj = store.object_ref(bucket_name, name)?;
    let what = &obj.what;
    let f = obj.open(store)?;
    let h = object::read_header(&*f, what)?;
    let len = f.len(what)?;
    Ok(ObjectReply {
        bucket: bucket_name.to_string(),
        header: object::describe_header(&h),
        name: name.to_string(),
        previous_object_id: None,
        result: None,
        size: store.geometry().plain_len_lossy(len),
    })
}

fn execute_work_request(store: &Store, cmd: &WorkRequestCmd) -> Result<Reply> {
    Ok(match cmd {
        WorkRequestCmd::Get { id } | WorkRequestCmd::Wait { id, .. } => {
            Reply::WorkRequest(Box::new(workreq::load(store, id)?))
        }
        WorkRequestCmd::List { bucket_name } => {
            Reply::WorkRequests(workreq::list(store, bucket_name.as_deref())?)
        }
        WorkRequestCmd::Cancel { id } => {
            Reply::WorkRequest(Box::new(workreq::request_cancel(store, id)?))
        }
    })
}

/// Parses the states of `--wait-for-state` (default: any terminal state).
pub fn wait_states(args: &WaitArgs) -> Result<Vec<State>> {
    if args.wait_for_state.is_empty() {
        return Ok(vec![State::Succeeded, State::Failed, State::Canceled]);
    }
    args.wait_for_state
        .iter()
        .map(|s| State::parse(s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_one_liners() {
        assert!(matches!(
            parse_line("bucket reencrypt --bucket-name photos").unwrap(),
            StoreCommand::Bucket(BucketCmd::Reencrypt { .. })
        ));
        assert!(matches!(
            parse_line("key rotate 'my key'").unwrap(),
            StoreCommand::Key(KeyCmd::Rotate { .. })
        ));
    }

    #[test]
    fn parses_sse_c_and_rekey() {
        assert!(matches!(
            parse_line("sse-c add --encryption-key-file /k").unwrap(),
            StoreCommand::SseC(SseCCmd::Add { .. })
        ));
        assert!(matches!(
            parse_line("sse-c remove --fingerprint 0123456789abcdef").unwrap(),
            StoreCommand::SseC(SseCCmd::Remove { .. })
        ));
        assert!(matches!(
            parse_line("bucket reencrypt --bucket-name b --rekey").unwrap(),
            StoreCommand::Bucket(BucketCmd::Reencrypt { rekey: true, .. })
        ));
        for line in [
            "sse-c remove",
            "sse-c remove --fingerprint ab --encryption-key-file /k",
            "sse-c add",
        ] {
            assert_eq!(
                parse_line(line).unwrap_err().errno(),
                libc::EINVAL,
                "{line}"
            );
        }
    }

    #[test]
    fn blank_keys_are_einval_naming_the_word_and_the_words_mean_no_key() {
        for blank in ["", " ", "\t\n"] {
            for (word, name) in [
                (KeyWord::NoKey, "\"none\""),
                (KeyWord::Latest, "\"latest\""),
            ] {
                let e = key_or_word(blank, word).unwrap_err();
                assert_eq!(e.errno(), libc::EINVAL, "{blank:?}");
                assert!(e.to_string().contains(name), "{e}");
            }
        }
        assert_eq!(key_or_word("none", KeyWord::NoKey).unwrap(), None);
        assert_eq!(key_or_word(" latest\n", KeyWord::Latest).unwrap(), None);
        assert_eq!(key_or_word("k2\n", KeyWord::NoKey).unwrap(), Some("k2"));
        assert_eq!(
            key_or_word("latest", KeyWord::NoKey).unwrap(),
            Some("latest")
        );
    }

    #[test]
    fn output_strings_are_wiped() {
        use serde_json::{json, Value};
        let mut v = json!({"Plaintext": "c2VjcmV0", "n": 1, "a": [{"x": "y"}]});
        wipe_strings(&mut v);
        assert_eq!(v, json!({"Plaintext": "", "n": 1, "a": [{"x": ""}]}));
        let mut o = Output::new(json!({"id": "wr-1"}));
        assert_eq!(o["id"], "wr-1");
        assert_eq!(o.take(), json!({"id": "wr-1"}));
        assert_eq!(*o, Value::Null);
    }

    #[test]
    fn bad_lines_are_einval_with_a_reason() {
        for line in [
            "",
            "frobnicate",
            "bucket create",
            "key 'unterminated",
            "bucket update --name b",
        ] {
            let e = parse_line(line).unwrap_err();
            assert_eq!(e.errno(), libc::EINVAL, "{line}");
            assert!(!e.to_string().is_empty());
        }
        let huge = "x".repeat(MAX_LINE + 1);
        assert_eq!(parse_line(&huge).unwrap_err().errno(), libc::EINVAL);
    }
}
