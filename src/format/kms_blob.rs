//! The KMS ciphertext blob of `envelopefs kms encrypt` (FORMAT.md, "KMS ciphertext blob"):
//! its clear header, the canonical bytes of an encryption context, and the AAD that binds
//! both. Sealing and opening (the cryptography) are in [`crate::ops::kms`].

use crate::error::{Error, Result};
use crate::format::Id16;
use std::collections::BTreeMap;

/// First bytes of every blob.
pub const BLOB_MAGIC: [u8; 4] = *b"EFKB";
/// The blob format version this build writes and reads.
pub const BLOB_VERSION: u16 = 1;
/// Bytes before the ciphertext: magic, version, key id, key version, nonce.
pub const BLOB_HEADER_LEN: usize = 4 + 2 + 16 + 4 + 12;
/// Bytes of the tag after the ciphertext.
pub const BLOB_TAG_LEN: usize = 16;
/// Largest plaintext of `kms encrypt` (AWS KMS's limit).
pub const MAX_PLAINTEXT: usize = 4096;
/// Largest blob (the largest plaintext sealed).
pub const MAX_BLOB: usize = BLOB_HEADER_LEN + MAX_PLAINTEXT + BLOB_TAG_LEN;
/// Domain label at the start of a blob's AAD.
pub const BLOB_AAD_LABEL: &[u8; 17] = b"envelopefs.kms.v1";
/// Most pairs in an encryption context.
pub const MAX_CONTEXT_PAIRS: usize = 64;
/// Longest key of a context pair (bytes).
pub const MAX_CONTEXT_KEY: usize = 256;
/// Longest value of a context pair (bytes).
pub const MAX_CONTEXT_VALUE: usize = 1024;
/// An encryption context: string pairs, kept sorted by key.
pub type Context = BTreeMap<String, String>;

/// The canonical bytes of a context (part of the AAD).
pub fn context_bytes(ctx: &Context) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&len32(ctx.len()).to_le_bytes());
    for (k, v) in ctx {
        out.extend_from_slice(&len32(k.len()).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&len32(v.len()).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn len32(n: usize) -> u32 {
    // Contexts are bounded far below 4 GiB by parse_context.
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The clear part of a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobHeader {
    /// The master key.
    pub key_id: Id16,
    /// Its version.
    pub key_version: u32,
    /// The AES-GCM nonce.
    pub nonce: [u8; 12],
}

impl BlobHeader {
    /// The 38 header bytes.
    pub fn encode(&self) -> [u8; BLOB_HEADER_LEN] {
        let mut h = [0u8; BLOB_HEADER_LEN];
        h[..4].copy_from_slice(&BLOB_MAGIC);
        h[4..6].copy_from_slice(&BLOB_VERSION.to_le_bytes());
        h[6..22].copy_from_slice(&self.key_id);
        h[22..26].copy_from_slice(&self.key_version.to_le_bytes());
        h[26..38].copy_from_slice(&self.nonce);
        h
    }
}

/// The AAD of a blob: the domain label, the blob's clear header, the context's bytes.
pub fn blob_aad(header: &[u8], ctx: &Context) -> Vec<u8> {
    let mut a = Vec::with_capacity(BLOB_AAD_LABEL.len() + header.len() + 4);
    a.extend_from_slice(BLOB_AAD_LABEL);
    a.extend_from_slice(header);
    a.extend_from_slice(&context_bytes(ctx));
    a
}

/// Parses a blob's clear header, checking magic, version and lengths.
pub fn parse_blob(blob: &[u8]) -> Result<BlobHeader> {
    if blob.len() < 6 || blob[..4] != BLOB_MAGIC {
        return Err(Error::InvalidArgument(
            "not an envelopefs ciphertext blob (bad magic or too short)".into(),
        ));
    }
    let version = u16::from_le_bytes([blob[4], blob[5]]);
    if version != BLOB_VERSION {
        return Err(Error::InvalidArgument(format!(
            "ciphertext blob format version {version} is not supported (this build reads version {BLOB_VERSION})"
        )));
    }
    if blob.len() < BLOB_HEADER_LEN + 1 + BLOB_TAG_LEN || blob.len() > MAX_BLOB {
        return Err(Error::InvalidArgument(format!(
            "ciphertext blob is {} bytes; a blob is {} to {MAX_BLOB} (truncated or padded?)",
            blob.len(),
            BLOB_HEADER_LEN + 1 + BLOB_TAG_LEN
        )));
    }
    let mut key_id = [0u8; 16];
    key_id.copy_from_slice(&blob[6..22]);
    let key_version = u32::from_le_bytes([blob[22], blob[23], blob[24], blob[25]]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&blob[26..38]);
    Ok(BlobHeader {
        key_id,
        key_version,
        nonce,
    })
}
