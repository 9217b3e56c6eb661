//! Standalone envelope blobs (`kms encrypt | decrypt | generate-data-key | re-encrypt`) and
//! the store-wide side of the key lifecycle (`key usage`, `key schedule-deletion`, and the
//! destruction of versions whose deletion date has passed).
//!
//! A blob is self-describing: it names its master key and version, so `decrypt` and
//! `re-encrypt` need no key id. The encryption context (string pairs) is authenticated, not
//! stored: the same context must be given again to decrypt (as in AWS KMS).
//!
//! ```text
//! "EFKB" (4) | version u16 LE = 1 (2) | key id (16) | key version u32 LE (4) | nonce (12)
//!     | ciphertext (1..=4096) | tag (16)
//! AAD = "envelopefs.kms.v1" (17) | the first 38 bytes of the blob | context bytes
//! context bytes = count u32 LE | per pair, sorted by key: key len u32 LE | key | value len u32 LE | value
//! ```

use crate::error::{Error, Result};
use crate::format::kms_blob::{
    blob_aad, parse_blob, BlobHeader, Context, BLOB_HEADER_LEN, BLOB_TAG_LEN, MAX_CONTEXT_KEY,
    MAX_CONTEXT_PAIRS, MAX_CONTEXT_VALUE, MAX_PLAINTEXT,
};
use crate::format::records::Wrapping;
use crate::format::Id16;
use crate::keys::crypto::{self, Key32};
use crate::keys::keystore::{self, key_id_text, ops};
use crate::store::{object, Store};
use base64::Engine;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use zeroize::Zeroizing;

/// Largest data key of `generate-data-key` (bytes).
pub const MAX_DATA_KEY: usize = 1024;

/// Parses `--encryption-context` values: each `k=v,k2=v2` (repeatable). The value is
/// everything after the first `=` up to the next `,`. Keys must be unique and non-empty.
pub fn parse_context(args: &[String]) -> Result<Context> {
    let mut ctx = Context::new();
    for arg in args {
        for pair in arg.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                Error::InvalidArgument(format!("encryption context pair {pair:?} is not key=value"))
            })?;
            if k.is_empty() || k.len() > MAX_CONTEXT_KEY || v.len() > MAX_CONTEXT_VALUE {
                return Err(Error::InvalidArgument(format!(
                    "encryption context pair {pair:?}: keys are 1-{MAX_CONTEXT_KEY} bytes, values at most {MAX_CONTEXT_VALUE}"
                )));
            }
            if ctx.insert(k.to_string(), v.to_string()).is_some() {
                return Err(Error::InvalidArgument(format!(
                    "encryption context key {k:?} is given twice"
                )));
            }
        }
    }
    if ctx.len() > MAX_CONTEXT_PAIRS {
        return Err(Error::InvalidArgument(format!(
            "encryption context has {} pairs; the limit is {MAX_CONTEXT_PAIRS}",
            ctx.len()
        )));
    }
    Ok(ctx)
}

/// Seals `plaintext` (1 to 4096 bytes) into a blob under one master key version.
pub fn seal_blob(
    kek: &Key32,
    header: &BlobHeader,
    ctx: &Context,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
        return Err(Error::InvalidArgument(format!(
            "plaintext is {} bytes; it must be 1 to {MAX_PLAINTEXT}",
            plaintext.len()
        )));
    }
    let head = header.encode();
    // The plaintext is encrypted in place in a buffer that is zeroized if sealing fails.
    let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len()));
    buf.extend_from_slice(plaintext);
    let tag = crypto::seal_in_place(
        kek,
        &header.nonce,
        &blob_aad(&head, ctx),
        buf.as_mut_slice(),
    )?;
    let mut out = Vec::with_capacity(BLOB_HEADER_LEN + buf.len() + BLOB_TAG_LEN);
    out.extend_from_slice(&head);
    out.extend_from_slice(&buf);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens a blob with the key version it names. A wrong context, wrong key or altered byte is
/// EINVAL (deliberately without saying which).
pub fn open_blob(kek: &Key32, blob: &[u8], ctx: &Context) -> Result<Zeroizing<Vec<u8>>> {
    let header = parse_blob(blob)?;
    crypto::open(
        kek,
        &header.nonce,
        &blob_aad(&blob[..BLOB_HEADER_LEN], ctx),
        &blob[BLOB_HEADER_LEN..],
    )
    .ok_or_else(|| {
        Error::InvalidArgument(format!(
            "the ciphertext blob does not decrypt under key {} version {} with this encryption context (wrong context, or an altered blob)",
            key_id_text(&header.key_id),
            header.key_version
        ))
    })
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Decodes a base64 argument (whitespace trimmed).
pub fn decode_b64(what: &str, text: &str) -> Result<Zeroizing<Vec<u8>>> {
    b64()
        .decode(text.trim())
        .map(Zeroizing::new)
        .map_err(|_| Error::InvalidArgument(format!("{what} is not valid base64")))
}

/// The current version of a key and its material, after checking `op`.
fn current_for(store: &Store, key_ref: &str, op: u32) -> Result<(Id16, u32, Key32)> {
    let ks = store.keys();
    let id = ks.resolve(key_ref)?.id;
    ks.check_allowed(&id, op)?;
    let (v, k) = ks.current(&id)?;
    Ok((id, v, k))
}

/// The version a blob names and its material, after checking `op`.
fn blob_key(store: &Store, header: &BlobHeader, op: u32) -> Result<Key32> {
    let ks = store.keys();
    ks.check_allowed(&header.key_id, op)?;
    ks.version(&header.key_id, header.key_version)
}

fn check_expected(header: &BlobHeader, store: &Store, expected: Option<&str>) -> Result<()> {
    if let Some(k) = expected {
        let want = store.resolve_key(k)?;
        if want != header.key_id {
            return Err(Error::InvalidArgument(format!(
                "the ciphertext blob is under key {}, not {}",
                key_id_text(&header.key_id),
                key_id_text(&want)
            )));
        }
    }
    Ok(())
}

/// `kms encrypt`: seals a base64 plaintext under the key's current version.
pub fn encrypt(
    store: &Store,
    key_ref: &str,
    plaintext_b64: &str,
    ctx: &Context,
) -> Result<EncryptReply> {
    let plain = decode_b64("--plaintext", plaintext_b64)?;
    let (id, version, kek) = current_for(store, key_ref, ops::ENCRYPT)?;
    let header = BlobHeader {
        key_id: id,
        key_version: version,
        nonce: crypto::random_array()?,
    };
    let blob = seal_blob(&kek, &header, ctx, &plain)?;
    Ok(EncryptReply {
        ciphertext_blob: b64().encode(&blob),
        key_id: key_id_text(&id),
        key_version_id: version,
    })
}

/// `kms decrypt`: opens a blob (needs decrypt on its key).
pub fn decrypt(
    store: &Store,
    blob_b64: &str,
    ctx: &Context,
    expected_key: Option<&str>,
) -> Result<DecryptReply> {
    let blob = decode_b64("--ciphertext-blob", blob_b64)?;
    let header = parse_blob(&blob)?;
    check_expected(&header, store, expected_key)?;
    let kek = blob_key(store, &header, ops::DECRYPT)?;
    let plain = open_blob(&kek, &blob, ctx)?;
    Ok(DecryptReply {
        key_id: key_id_text(&header.key_id),
        key_version_id: header.key_version,
        plaintext: Zeroizing::new(b64().encode(plain.as_slice())),
    })
}

/// `kms generate-data-key`: a random data key, in clear and sealed (needs encrypt).
pub fn generate_data_key(
    store: &Store,
    key_ref: &str,
    bytes: usize,
    ctx: &Context,
) -> Result<DataKeyReply> {
    if bytes == 0 || bytes > MAX_DATA_KEY {
        return Err(Error::InvalidArgument(format!(
            "--number-of-bytes {bytes}: a data key is 1 to {MAX_DATA_KEY} bytes"
        )));
    }
    let (id, version, kek) = current_for(store, key_ref, ops::ENCRYPT)?;
    let mut dk = Zeroizing::new(vec![0u8; bytes]);
    crypto::fill_random(dk.as_mut_slice())?;
    let header = BlobHeader {
        key_id: id,
        key_version: version,
        nonce: crypto::random_array()?,
    };
    let blob = seal_blob(&kek, &header, ctx, &dk)?;
    Ok(DataKeyReply {
        ciphertext_blob: b64().encode(&blob),
        key_id: key_id_text(&id),
        key_version_id: version,
        plaintext: Zeroizing::new(b64().encode(dk.as_slice())),
    })
}

/// `kms re-encrypt`: opens a blob and seals its plaintext under another key (or the newest
/// version of the same key) without the plaintext leaving this function. Needs
/// re-encrypt-from on the source key and re-encrypt-to on the destination (not decrypt or
/// encrypt).
pub fn re_encrypt(
    store: &Store,
    blob_b64: &str,
    src_ctx: &Context,
    expected_src: Option<&str>,
    dst_key: &str,
    dst_ctx: &Context,
) -> Result<ReEncryptReply> {
    let blob = decode_b64("--ciphertext-blob", blob_b64)?;
    let header = parse_blob(&blob)?;
    check_expected(&header, store, expected_src)?;
    // Both authorizations before any decryption.
    let (src_kek, (dst_id, dst_version, dst_kek)) = {
        let ks = store.keys();
        ks.check_allowed(&header.key_id, ops::REENCRYPT_FROM)?;
        let dst = ks.resolve(dst_key)?.id;
        ks.check_allowed(&dst, ops::REENCRYPT_TO)?;
        let src = ks.version(&header.key_id, header.key_version)?;
        let (v, k) = ks.current(&dst)?;
        (src, (dst, v, k))
    };
    let plain = open_blob(&src_kek, &blob, src_ctx)?;
    let new_header = BlobHeader {
        key_id: dst_id,
        key_version: dst_version,
        nonce: crypto::random_array()?,
    };
    let out = seal_blob(&dst_kek, &new_header, dst_ctx, &plain)?;
    drop(plain);
    Ok(ReEncryptReply {
        ciphertext_blob: b64().encode(&out),
        key_id: key_id_text(&dst_id),
        key_version_id: dst_version,
        source_key_id: key_id_text(&header.key_id),
        source_key_version_id: header.key_version,
    })
}

/// The reply of `kms encrypt`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptReply {
    /// The blob, base64.
    pub ciphertext_blob: String,
    /// The key it is sealed under.
    pub key_id: String,
    /// The version of that key.
    pub key_version_id: u32,
}

/// The reply of `kms decrypt`: carries the plaintext, zeroized when dropped.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptReply {
    /// The key the blob was sealed under.
    pub key_id: String,
    /// The version of that key.
    pub key_version_id: u32,
    /// The plaintext, base64.
    #[serde(serialize_with = "secret_str")]
    pub plaintext: Zeroizing<String>,
}

/// The reply of `kms generate-data-key`: the data key in clear (zeroized when dropped) and
/// sealed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DataKeyReply {
    /// The sealed data key, base64.
    pub ciphertext_blob: String,
    /// The key it is sealed under.
    pub key_id: String,
    /// The version of that key.
    pub key_version_id: u32,
    /// The data key, base64.
    #[serde(serialize_with = "secret_str")]
    pub plaintext: Zeroizing<String>,
}

/// The reply of `kms re-encrypt`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReEncryptReply {
    /// The new blob, base64.
    pub ciphertext_blob: String,
    /// The key it is sealed under now.
    pub key_id: String,
    /// The version of that key.
    pub key_version_id: u32,
    /// The key the blob was sealed under.
    pub source_key_id: String,
    /// The version of that key.
    pub source_key_version_id: u32,
}

/// Serializes a secret string in place (no copy is made on the way).
fn secret_str<S: serde::Serializer>(
    v: &Zeroizing<String>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(v.as_str())
}

// ----- the key lifecycle over the store -----

/// Objects of one key version.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VersionUsage {
    /// Objects whose DEK is wrapped under the version.
    pub objects: u64,
    /// The same, per bucket.
    pub buckets: BTreeMap<String, u64>,
}

/// What `key usage` found.
#[derive(Debug, Default, Clone)]
pub struct Usage {
    /// Per version number.
    pub versions: BTreeMap<u32, VersionUsage>,
    /// Objects whose header could not be read (they may depend on any version).
    pub unreadable: Vec<String>,
    /// How many there were (the list keeps the first 100).
    pub unreadable_count: u64,
}

/// Walks every bucket's objects and counts, per version of key `id`, the objects whose DEK
/// is wrapped under it. Hard links are counted once.
pub fn key_usage(store: &Store, id: &Id16) -> Result<Usage> {
    use std::os::unix::fs::MetadataExt;
    let mut usage = Usage::default();
    for (bucket, _) in store.buckets()? {
        let mut seen = HashSet::new();
        for rel in store.backend().object_names(&bucket)? {
            let what = format!("{bucket}/{}", rel.display());
            let header = store.open_object(&bucket, &rel, &what).and_then(|f| {
                // A hard link (local stores only) is counted once.
                let ino = f
                    .as_file()
                    .and_then(|f| f.metadata().ok())
                    .map_or(0, |m| m.ino());
                let first = ino == 0 || seen.insert(ino);
                first.then(|| object::read_header(&*f, &what)).transpose()
            });
            match header {
                Ok(Some(h)) => {
                    if let Wrapping::Master { key_id, version } = h.wrapping {
                        if &key_id == id {
                            let u = usage.versions.entry(version).or_default();
                            u.objects += 1;
                            *u.buckets.entry(bucket.clone()).or_default() += 1;
                        }
                    }
                }
                Ok(None) | Err(Error::NotFound(_)) => {}
                Err(e) => {
                    usage.unreadable_count += 1;
                    if usage.unreadable.len() < 100 {
                        usage.unreadable.push(format!("{what}: {e}"));
                    }
                }
            }
        }
    }
    Ok(usage)
}

/// `key usage KEY`: every version with its state and dependents.
pub fn usage_reply(store: &Store, key_ref: &str) -> Result<UsageReply> {
    let id = store.resolve_key(key_ref)?;
    let usage = key_usage(store, &id)?;
    let ks = store.keys();
    let k = ks
        .find(&id)
        .ok_or_else(|| Error::NoKey(format!("no master key {key_ref:?}")))?;
    let versions = k
        .versions
        .iter()
        .map(|v| {
            let u = usage.versions.get(&v.version).cloned().unwrap_or_default();
            VersionUsageReply {
                buckets: u
                    .buckets
                    .into_iter()
                    .map(|(name, objects)| BucketUsageReply { name, objects })
                    .collect(),
                deletion_time: v.deletion_s,
                objects: u.objects,
                state: v.state,
                version: v.version,
            }
        })
        .collect();
    Ok(UsageReply {
        alias: k.alias.clone(),
        key_id: key_id_text(&id),
        objects_total: usage.versions.values().map(|u| u.objects).sum(),
        unreadable: usage.unreadable,
        unreadable_objects: usage.unreadable_count,
        versions,
    })
}

/// The reply of `key usage`.
#[derive(Debug, Clone, Serialize)]
pub struct UsageReply {
    /// The key's alias, or null.
    pub alias: Option<String>,
    /// `key-HEX`.
    pub key_id: String,
    /// Objects under any of its versions.
    pub objects_total: u64,
    /// Objects whose header could not be read (the first 100).
    pub unreadable: Vec<String>,
    /// How many there were.
    pub unreadable_objects: u64,
    /// Per version, oldest first.
    pub versions: Vec<VersionUsageReply>,
}

/// One version in [`UsageReply`].
#[derive(Debug, Clone, Serialize)]
pub struct VersionUsageReply {
    /// Its dependents per bucket, by bucket name.
    pub buckets: Vec<BucketUsageReply>,
    /// When it is to be destroyed, or null.
    pub deletion_time: Option<u64>,
    /// Objects whose data key it wraps.
    pub objects: u64,
    /// Its state.
    pub state: crate::format::records::VersionState,
    /// The version number.
    pub version: u32,
}

/// One bucket in [`VersionUsageReply`].
#[derive(Debug, Clone, Serialize)]
pub struct BucketUsageReply {
    /// The bucket.
    pub name: String,
    /// Its objects under the version.
    pub objects: u64,
}

/// The reply of `key schedule-deletion`: the key, and the scheduled version.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduledDeletion {
    /// The key after the change.
    #[serde(flatten)]
    pub key: keystore::KeyInfo,
    /// When the version is destroyed (seconds since the epoch).
    pub deletion_time: u64,
    /// Objects that depended on it (they become unrecoverable then).
    pub dependent_objects: u64,
    /// The version scheduled.
    pub scheduled_version: u32,
}

/// `key schedule-deletion`: refuses (EBUSY) while objects depend on the version, unless
/// `force`, and while an unfinished work request re-encrypts to it.
pub fn schedule_deletion(
    store: &Store,
    key_ref: &str,
    version: u32,
    days: u32,
    force: bool,
) -> Result<ScheduledDeletion> {
    let id = store.resolve_key(key_ref)?;
    let key = key_id_text(&id);
    // The cheap checks first (days, state, current version), before walking the store.
    store.keys().check_schedulable(&id, version, days)?;
    if let Some(w) = crate::ops::workreq::unfinished(store)?
        .into_iter()
        .find(|w| w.target_key_id == key && w.target_key_version == version)
    {
        return Err(Error::Busy(format!(
            "work request {} is still re-encrypting to version {version} of key {key}: wait for it or cancel it first",
            w.id
        )));
    }
    let usage = key_usage(store, &id)?;
    let deps = usage.versions.get(&version).cloned().unwrap_or_default();
    if deps.objects > 0 && !force {
        let buckets: Vec<String> = deps
            .buckets
            .iter()
            .map(|(b, n)| format!("{b} ({n})"))
            .collect();
        return Err(Error::Busy(format!(
            "version {version} of key {key} still wraps the data keys of {} object(s) in bucket(s) {}: re-encrypt them first (bucket reencrypt), or pass --force to make them unrecoverable once it is destroyed",
            deps.objects,
            buckets.join(", ")
        )));
    }
    let at = store.update_keys(|ks| ks.schedule_deletion(&id, version, days, keystore::now_s()))?;
    if deps.objects > 0 {
        tracing::warn!(
            "version {version} of key {key} scheduled for deletion with --force: {} object(s) will be unrecoverable",
            deps.objects
        );
    }
    let ks = store.keys();
    Ok(ScheduledDeletion {
        key: ks.describe(ks.resolve(&key)?),
        deletion_time: at,
        dependent_objects: deps.objects,
        scheduled_version: version,
    })
}

/// How often a mount looks for versions whose deletion date has passed.
pub fn sweep_interval() -> std::time::Duration {
    if crate::fault::enabled(keystore::DELETION_CLOCK_FAULT) {
        std::time::Duration::from_secs(1)
    } else {
        std::time::Duration::from_secs(60)
    }
}

/// Destroys (and persists) every key version whose deletion date has passed, by the
/// deletion clock. Called when a store is opened, before every store command, and
/// periodically by a mount. Returns what was destroyed.
pub fn destroy_due(store: &Store) -> Result<Vec<(Id16, u32)>> {
    let now = keystore::deletion_clock_now();
    if !store.keys().has_due(now) {
        return Ok(Vec::new());
    }
    let gone = store.update_keys(|ks| Ok(ks.destroy_due(now)))?;
    if crate::fault::enabled(keystore::DELETION_CLOCK_FAULT) {
        tracing::warn!(
            "fault injection {}: the deletion clock runs a year ahead",
            keystore::DELETION_CLOCK_FAULT
        );
    }
    for (id, v) in &gone {
        tracing::warn!(
            "version {v} of key {} reached its deletion date and was destroyed",
            key_id_text(id)
        );
    }
    Ok(gone)
}

/// [`destroy_due`], logging instead of failing (a version past its date is unusable
/// anyway; only the erasure of its material waits for the next try).
pub fn destroy_due_logged(store: &Store) {
    if let Err(e) = destroy_due(store) {
        tracing::warn!("destroying key versions past their deletion date: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::kms_blob::context_bytes;

    fn ctx(pairs: &[(&str, &str)]) -> Context {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn context_parses_sorted_and_rejects_duplicates() {
        let c = parse_context(&["b=2,a=1".into(), "c=x=y".into()]).unwrap();
        assert_eq!(c, ctx(&[("a", "1"), ("b", "2"), ("c", "x=y")]));
        assert_eq!(
            context_bytes(&ctx(&[("a", "1")])),
            [1, 0, 0, 0, 1, 0, 0, 0, b'a', 1, 0, 0, 0, b'1']
        );
        assert!(parse_context(&["a=1,a=2".into()]).is_err());
        assert!(parse_context(&["=1".into()]).is_err());
        assert!(parse_context(&["novalue".into()]).is_err());
        assert!(parse_context(&[]).unwrap().is_empty());
    }

    #[test]
    fn blob_round_trip_and_every_mismatch_fails() {
        let k = Key32::from_bytes([7; 32]);
        let h = BlobHeader {
            key_id: [1; 16],
            key_version: 3,
            nonce: [2; 12],
        };
        let c = ctx(&[("purpose", "test")]);
        let blob = seal_blob(&k, &h, &c, b"secret").unwrap();
        assert_eq!(parse_blob(&blob).unwrap(), h);
        assert_eq!(open_blob(&k, &blob, &c).unwrap().as_slice(), b"secret");
        assert!(open_blob(&k, &blob, &Context::new()).is_err());
        assert!(open_blob(&Key32::from_bytes([8; 32]), &blob, &c).is_err());
        let mut bad = blob.clone();
        bad[23] ^= 1; // the key version is authenticated too
        assert!(open_blob(&k, &bad, &c).is_err());
        assert!(seal_blob(&k, &h, &c, b"").is_err());
        assert!(seal_blob(&k, &h, &c, &[0; MAX_PLAINTEXT + 1]).is_err());
    }
}
