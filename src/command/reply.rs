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
