//! The results of the store commands: one typed reply per command ([`Reply`]), and the JSON
//! it is printed as ([`Output`]). That JSON is the documented ABI of the CLI and of
//! `.envelopefs/ctl` (pinned by `tests/reply_abi.rs`): an [`Output`] holds a
//! `serde_json::Value`, whose objects print their fields sorted by name, so the reply types
//! declare their fields in that order too.

use crate::error::{Error, Result};
use crate::keys::keystore::KeyInfo;
use crate::ops::fsck::Report;
use crate::ops::headers::{ExportSummary, ImportSummary};
use crate::ops::kms::{
    DataKeyReply, DecryptReply, EncryptReply, ReEncryptReply, ScheduledDeletion, UsageReply,
};
use crate::ops::status::StatusReply;
use crate::ops::workreq::WorkRequest;
use crate::store::object::HeaderInfo;
use crate::store::BucketInfo;
use serde::Serialize;
use serde_json::Value;

/// What a store command returns.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// `key create|get|rotate|disable|enable|update|cancel-deletion`.
    Key(KeyInfo),
    /// `key list`.
    Keys(Vec<KeyInfo>),
    /// `key usage`.
    KeyUsage(UsageReply),
    /// `key schedule-deletion`.
    KeyDeletion(ScheduledDeletion),
    /// `bucket create|get|update`.
    Bucket(BucketInfo),
    /// `bucket list`.
    Buckets(Vec<BucketInfo>),
    /// `object put|head|reencrypt`.
    Object(ObjectReply),
    /// `object get`.
    ObjectData(ObjectDataReply),
    /// `bucket reencrypt`, `work-request get|wait|cancel`.
    WorkRequest(Box<WorkRequest>),
    /// `work-request list`.
    WorkRequests(Vec<WorkRequest>),
    /// `kms encrypt`.
    KmsEncrypt(EncryptReply),
    /// `kms decrypt` (carries a plaintext, zeroized when dropped).
    KmsDecrypt(DecryptReply),
    /// `kms generate-data-key` (carries a plaintext, zeroized when dropped).
    KmsDataKey(DataKeyReply),
    /// `kms re-encrypt`.
    KmsReEncrypt(ReEncryptReply),
    /// `status`.
    Status(Box<StatusReply>),
    /// `fsck`.
    Fsck(Report),
    /// `headers export`.
    HeadersExport(ExportSummary),
    /// `headers import`.
    HeadersImport(ImportSummary),
    /// `sse-c add` (a mount's key ring).
    SseCAdded(SseCAdded),
    /// `sse-c remove` (a mount's key ring).
    SseCRemoved(SseCRemoved),
    /// `sse-c list` (a mount's key ring), sorted by fingerprint.
    SseCKeys(Vec<SseCKey>),
}

/// What `sse-c add` did to a mount's key ring.
#[derive(Debug, Clone, Serialize)]
pub struct SseCAdded {
    /// False if the key was loaded already.
    pub added: bool,
    /// The key's fingerprint (64 hex digits).
    pub fingerprint: String,
    /// Keys in the ring now.
    pub keys: usize,
}

/// What `sse-c remove` did to a mount's key ring.
#[derive(Debug, Clone, Serialize)]
pub struct SseCRemoved {
    /// The removed key's fingerprint (64 hex digits).
    pub fingerprint: String,
    /// Keys in the ring now.
    pub keys: usize,
    /// Always true (a key that is not loaded is an error).
    pub removed: bool,
}

/// One key of `sse-c list`.
#[derive(Debug, Clone, Serialize)]
pub struct SseCKey {
    /// The key's fingerprint (64 hex digits).
    pub fingerprint: String,
}

/// The reply of a control write that failed: `{"error": {...}, "ok": false}`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorReply {
    /// Why.
    pub error: ErrorBody,
    /// Always false.
    pub ok: bool,
}

/// The error of an [`ErrorReply`] (docs/ERRORS.md).
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    /// The errno the write failed with.
    pub errno: i32,
    /// The error's kind ([`Error::kind`]).
    pub kind: &'static str,
    /// The message.
    pub message: String,
}

impl ErrorReply {
    /// The reply of an error.
    pub fn of(e: &Error) -> Self {
        ErrorReply {
            error: ErrorBody {
                errno: e.errno(),
                kind: e.kind(),
                message: e.to_string(),
            },
            ok: false,
        }
    }
}

/// The reply of a control write that succeeded: `{"ok": true, "result": ...}`.
#[derive(Debug, Serialize)]
pub struct OkReply<'a> {
    /// Always true.
    pub ok: bool,
    /// The command's result.
    pub result: &'a Output,
}

/// An object's metadata (`object put|head|reencrypt`).
#[derive(Debug, Clone, Serialize)]
pub struct ObjectReply {
    /// The bucket.
    pub bucket: String,
    /// Its header's metadata.
    #[serde(flatten)]
    pub header: HeaderInfo,
    /// The object's name in the bucket.
    pub name: String,
    /// `object reencrypt --rekey`: the object id before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_object_id: Option<String>,
    /// `object reencrypt`: `REWRAPPED`, `REKEYED` or `SKIPPED: reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Plaintext size in bytes.
    pub size: u64,
}

/// What `object get` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectDataReply {
    /// The bucket.
    pub bucket: String,
    /// The object's name in the bucket.
    pub name: String,
    /// Bytes written.
    pub size: u64,
}

/// A command's JSON result. Its strings are zeroized when it is dropped: the results of
/// `kms decrypt` and `kms generate-data-key` carry a plaintext, and every result is treated
/// alike so that none escapes by a path that forgot. It is rendered only into a
/// [`crate::hygiene::WipingBuf`] (`cli::output::render`, the control file's reply).
#[derive(Debug, Default)]
pub struct Output(Value);

impl Output {
    /// Wraps a result.
    pub fn new(v: Value) -> Self {
        Output(v)
    }

    /// The JSON of a typed reply. Its secret fields are copied only into the value, which is
    /// wiped when the output is dropped.
    pub fn of<T: Serialize + ?Sized>(reply: &T) -> Result<Self> {
        serde_json::to_value(reply)
            .map(Output)
            .map_err(|e| Error::io("encoding the reply", std::io::Error::other(e)))
    }

    /// Moves the value out, leaving `null`: for results that carry no secret (a work
    /// request, a report), which the caller keeps as a plain value.
    pub fn take(&mut self) -> Value {
        self.0.take()
    }
}

impl std::ops::Deref for Output {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0
    }
}

impl Serialize for Output {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        wipe_strings(&mut self.0);
    }
}

/// Zeroizes every string in a JSON value (object keys, which are field names, stay).
pub fn wipe_strings(v: &mut Value) {
    match v {
        Value::String(s) => zeroize::Zeroize::zeroize(s),
        Value::Array(a) => a.iter_mut().for_each(wipe_strings),
        Value::Object(m) => m.values_mut().for_each(wipe_strings),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}
