//! Binary records: the object header xattr, the bucket record xattr and the keystore file.
//!
//! Each starts with a 4-byte magic and a u16 format version, checked before decoding.

use super::{check_magic_version, check_magic_version_is, decode_record, encode_record, Id16};
use super::{FORMAT_VERSION, NAMES_FORMAT_VERSION};
use super::{KEYSTORE_CONFIG, KEYSTORE_LIMIT};
use crate::error::{Error, Result};
use bincode::{Decode, Encode};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Magic of an object header.
pub const HEADER_MAGIC: [u8; 4] = *b"EFSH";
/// Magic of a bucket record.
pub const BUCKET_MAGIC: [u8; 4] = *b"EFSB";
/// Magic of a keystore file.
pub const KEYSTORE_MAGIC: [u8; 4] = *b"EFSK";

/// Length of a wrapped DEK: 32 bytes of key + 16 bytes of tag.
pub const WRAPPED_DEK_LEN: usize = 48;

/// How an object's DEK is wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum Wrapping {
    /// Under a master key version of the keystore.
    Master {
        /// The master key's id.
        key_id: Id16,
        /// The version of that key.
        version: u32,
    },
    /// Under a customer-provided key the store never keeps (SSE-C).
    Customer {
        /// SHA-256 fingerprint of the customer key (see docs/FORMAT.md).
        fingerprint: [u8; 32],
    },
}

/// The per-object header, stored in the backing file's `user.envelopefs.header` xattr.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ObjectHeader {
    /// `EFSH`.
    pub magic: [u8; 4],
    /// Format version (1).
    pub version: u16,
    /// Plaintext bytes per chunk (must equal the store's).
    pub chunk_size: u32,
    /// The object id (also in the data preamble and every chunk's AAD).
    pub object_id: Id16,
    /// Creation time, nanoseconds since the Unix epoch (scopes bucket work requests).
    pub created_ns: u64,
    /// How the DEK is wrapped.
    pub wrapping: Wrapping,
    /// Nonce of the DEK wrap.
    pub wrap_nonce: [u8; 12],
    /// AES-256-GCM(KEK, wrap_nonce, DEK, encryption context) = ciphertext | tag.
    pub wrapped_dek: [u8; WRAPPED_DEK_LEN],
}

impl ObjectHeader {
    /// Encodes the header.
    pub fn encode(&self) -> Vec<u8> {
        encode_record(self)
    }

    /// Decodes a header, refusing unknown versions and malformed bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        check_magic_version(bytes, &HEADER_MAGIC, "object header")?;
        decode_record(bytes, "object header")
    }
}

/// A bucket's name key, wrapped under a master key version (docs/FORMAT.md "Encrypted
/// names"): `wrapped = seal(KEK, nonce, name-key context, name key)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct WrappedNameKey {
    /// The master key that wraps it.
    pub key_id: Id16,
    /// The version of that key.
    pub version: u32,
    /// Nonce of the wrap, fresh on every (re)wrap.
    pub nonce: [u8; 12],
    /// AES-256-GCM(KEK, nonce, name key, name-key context) = ciphertext | tag.
    pub wrapped: [u8; WRAPPED_DEK_LEN],
}

/// The name keys of a bucket of a version 2 store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct NameKeys {
    /// The key every name is encrypted under.
    pub current: WrappedNameKey,
    /// Only while a name rekey of the bucket runs: the key it is renaming entries away from.
    pub previous: Option<WrappedNameKey>,
}

/// The bucket record, stored in the bucket directory's `user.envelopefs.bucket` xattr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketRecord {
    /// `EFSB`.
    pub magic: [u8; 4],
    /// 1 (plaintext names, no `names`) or 2 (encrypted names, `names` present).
    pub version: u16,
    /// The bucket id (bound into every DEK wrap of the bucket).
    pub bucket_id: Id16,
    /// The assigned master key, or `None` for the store's default key.
    pub kms_key_id: Option<Id16>,
    /// Creation time, seconds since the Unix epoch.
    pub created_s: u64,
    /// The wrapped name keys: present exactly in version 2 records.
    pub names: Option<NameKeys>,
}

/// The version 1 layout (docs/FORMAT.md "Bucket record").
#[derive(Encode, Decode)]
struct BucketRecordV1 {
    magic: [u8; 4],
    version: u16,
    bucket_id: Id16,
    kms_key_id: Option<Id16>,
    created_s: u64,
}

/// The version 2 layout: version 1's fields, then the name keys.
#[derive(Encode, Decode)]
struct BucketRecordV2 {
    magic: [u8; 4],
    version: u16,
    bucket_id: Id16,
    kms_key_id: Option<Id16>,
    created_s: u64,
    names: NameKeys,
}

impl BucketRecord {
    /// A new version 1 record (a store of format version 1: plaintext names).
    pub fn new(bucket_id: Id16, kms_key_id: Option<Id16>, created_s: u64) -> Self {
        BucketRecord {
            magic: BUCKET_MAGIC,
            version: FORMAT_VERSION,
            bucket_id,
            kms_key_id,
            created_s,
            names: None,
        }
    }

    /// A new version 2 record (a store of format version 2: encrypted names).
    pub fn with_name_key(
        bucket_id: Id16,
        kms_key_id: Option<Id16>,
        created_s: u64,
        name_key: WrappedNameKey,
    ) -> Self {
        BucketRecord {
            magic: BUCKET_MAGIC,
            version: NAMES_FORMAT_VERSION,
            bucket_id,
            kms_key_id,
            created_s,
            names: Some(NameKeys {
                current: name_key,
                previous: None,
            }),
        }
    }

    /// Encodes the record: the version 2 layout when it has name keys, else version 1's.
    pub fn encode(&self) -> Vec<u8> {
        match self.names {
            None => encode_record(&BucketRecordV1 {
                magic: self.magic,
                version: self.version,
                bucket_id: self.bucket_id,
                kms_key_id: self.kms_key_id,
                created_s: self.created_s,
            }),
            Some(names) => encode_record(&BucketRecordV2 {
                magic: self.magic,
                version: self.version,
                bucket_id: self.bucket_id,
                kms_key_id: self.kms_key_id,
                created_s: self.created_s,
                names,
            }),
        }
    }

    /// Decodes a record of a version 1 store, refusing other versions and malformed bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        check_magic_version(bytes, &BUCKET_MAGIC, "bucket record")?;
        let r: BucketRecordV1 = decode_record(bytes, "bucket record")?;
        Ok(BucketRecord {
            magic: r.magic,
            version: r.version,
            bucket_id: r.bucket_id,
            kms_key_id: r.kms_key_id,
            created_s: r.created_s,
            names: None,
        })
    }

    /// Decodes a record of a store of format version `store_version`. A store holds records
    /// of its own version only: a version 1 record in a version 2 store (which would turn
    /// the bucket's names into plaintext names) is *corrupt*.
    pub fn decode_in(bytes: &[u8], store_version: u16) -> Result<Self> {
        match store_version {
            FORMAT_VERSION => Self::decode(bytes),
            NAMES_FORMAT_VERSION => {
                if bytes.len() >= 6
                    && bytes[..4] == BUCKET_MAGIC
                    && u16::from_le_bytes([bytes[4], bytes[5]]) == FORMAT_VERSION
                {
                    return Err(Error::Corrupt(
                        "bucket record: a version 1 record (plaintext names) in a store of format version 2"
                            .into(),
                    ));
                }
                check_magic_version_is(
                    bytes,
                    &BUCKET_MAGIC,
                    "bucket record",
                    NAMES_FORMAT_VERSION,
                )?;
                let r: BucketRecordV2 = decode_record(bytes, "bucket record")?;
                Ok(BucketRecord {
                    magic: r.magic,
                    version: r.version,
                    bucket_id: r.bucket_id,
                    kms_key_id: r.kms_key_id,
                    created_s: r.created_s,
                    names: Some(r.names),
                })
            }
            v => Err(Error::UnsupportedVersion(format!(
                "bucket record: store format version {v} is not supported by this build"
            ))),
        }
    }
}

/// How the keystore's sealing key is obtained.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum KdfParams {
    /// Argon2id over the passphrase.
    Argon2id {
        /// Memory in KiB.
        m_cost_kib: u32,
        /// Iterations.
        t_cost: u32,
        /// Lanes.
        p_cost: u32,
        /// Random salt.
        salt: [u8; 16],
    },
    /// A raw 32-byte key file is the sealing key.
    RawKey,
}

/// The clear part of the keystore file; its encoding is the AAD of the sealed body.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct KeystorePrefix {
    /// `EFSK`.
    pub magic: [u8; 4],
    /// Format version (1).
    pub version: u16,
    /// The store this keystore belongs to.
    pub store_id: Id16,
    /// How to derive the sealing key.
    pub kdf: KdfParams,
    /// Nonce of the body seal.
    pub nonce: [u8; 12],
}

/// The keystore file: prefix, then the sealed body (ciphertext | tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeystoreFile {
    /// Clear prefix (AAD).
    pub prefix: KeystorePrefix,
    /// AES-256-GCM(sealing key, prefix.nonce, body, AAD = encoded prefix).
    pub sealed: Vec<u8>,
}

impl KeystoreFile {
    /// Encodes the prefix alone (the AAD of the seal).
    pub fn prefix_bytes(prefix: &KeystorePrefix) -> Vec<u8> {
        encode_record(prefix)
    }

    /// Encodes the file.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Self::prefix_bytes(&self.prefix);
        out.extend_from_slice(&self.sealed);
        out
    }

    /// Decodes the file (the body stays sealed).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        check_magic_version(bytes, &KEYSTORE_MAGIC, "keystore")?;
        let (prefix, used) =
            bincode::decode_from_slice::<KeystorePrefix, _>(bytes, super::RECORD_CONFIG)
                .map_err(|e| Error::Corrupt(format!("keystore: prefix does not parse ({e})")))?;
        let sealed = bytes[used..].to_vec();
        if sealed.len() < 16 || sealed.len() > KEYSTORE_LIMIT {
            return Err(Error::Corrupt("keystore: sealed body truncated".into()));
        }
        Ok(KeystoreFile { prefix, sealed })
    }
}

/// Lifecycle state of a key version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VersionState {
    /// Usable for encrypt and decrypt.
    Enabled,
    /// Neither encrypt nor decrypt until enabled again.
    Disabled,
    /// Scheduled for deletion; unusable, can be cancelled.
    PendingDeletion,
    /// Material erased; objects under it are unrecoverable.
    Destroyed,
}

/// One version of a master key (material zeroized on drop).
#[derive(Clone, Encode, Decode, Zeroize, ZeroizeOnDrop)]
pub struct KeyVersionRecord {
    /// 1, 2, ...
    #[zeroize(skip)]
    pub version: u32,
    /// Seconds since the epoch.
    #[zeroize(skip)]
    pub created_s: u64,
    /// Lifecycle state.
    #[zeroize(skip)]
    pub state: VersionState,
    /// When a pending deletion takes effect (seconds since the epoch).
    #[zeroize(skip)]
    pub deletion_s: Option<u64>,
    /// The 256-bit key (all zero once destroyed).
    pub material: [u8; 32],
}

/// A master key with its versions.
#[derive(Clone, Encode, Decode)]
pub struct MasterKeyRecord {
    /// The key id.
    pub id: Id16,
    /// An optional human name, unique in the store.
    pub alias: Option<String>,
    /// Seconds since the epoch.
    pub created_s: u64,
    /// Allowed operations, a bit set (see `keystore::Ops`).
    pub allowed_ops: u32,
    /// Versions, oldest first; the last enabled one is current.
    pub versions: Vec<KeyVersionRecord>,
}

/// The sealed keystore body.
#[derive(Clone, Encode, Decode)]
pub struct KeystoreBody {
    /// The store's chunk size (authenticated copy of the config's).
    pub chunk_size: u32,
    /// The default master key.
    pub default_key: Id16,
    /// All master keys.
    pub keys: Vec<MasterKeyRecord>,
}

impl KeystoreBody {
    /// Encodes the body (the caller seals and zeroizes the bytes).
    pub fn encode(&self) -> Result<Vec<u8>> {
        bincode::encode_to_vec(self, KEYSTORE_CONFIG)
            .map_err(|e| Error::InvalidArgument(format!("keystore too large to encode: {e}")))
    }

    /// Decodes an opened body.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (body, used) = bincode::decode_from_slice::<Self, _>(bytes, KEYSTORE_CONFIG)
            .map_err(|e| Error::Corrupt(format!("keystore: body does not parse ({e})")))?;
        if used != bytes.len() {
            return Err(Error::Corrupt("keystore: trailing bytes in body".into()));
        }
        Ok(body)
    }
}
