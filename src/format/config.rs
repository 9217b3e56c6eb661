//! The store config, `STORE/.envelopefs/config.json`.
//!
//! JSON so a person can read it; unknown fields and unknown versions are refused. Its
//! security-relevant values (store id, chunk size) are also inside the sealed keystore and
//! checked against it on open.

use super::{hex, unhex, Id16, FORMAT_VERSION};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Always "envelopefs".
    pub format: String,
    /// The format version (1).
    pub format_version: u16,
    /// Hex of the 16-byte store id.
    pub store_id: String,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// "passphrase" or "keyfile".
    pub key_source: String,
    /// Seconds since the epoch.
    pub created_s: u64,
    /// Optional features in use; none are defined in version 1, and any listed is refused.
    #[serde(default)]
    pub features: Vec<String>,
}

impl StoreConfig {
    /// Parses and validates the config.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let c: StoreConfig = serde_json::from_slice(bytes)
            .map_err(|e| Error::Corrupt(format!("store config does not parse: {e}")))?;
        if c.format != "envelopefs" {
            return Err(Error::Corrupt(format!(
                "store config: format is {:?}, not \"envelopefs\"",
                c.format
            )));
        }
        if c.format_version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion(format!(
                "store config: format version {} is not supported by this build (it reads {FORMAT_VERSION})",
                c.format_version
            )));
        }
        if let Some(f) = c.features.first() {
            return Err(Error::UnsupportedVersion(format!(
                "store config: unknown feature {f:?}"
            )));
        }
        if c.store_id_bytes().is_none() {
            return Err(Error::Corrupt(
                "store config: store_id is not 32 hex digits".into(),
            ));
        }
        if !super::chunk::valid_chunk_size(c.chunk_size) {
            return Err(Error::Corrupt(format!(
                "store config: chunk_size {} is not a power of two in 4096..=1048576",
                c.chunk_size
            )));
        }
        if c.key_source != "passphrase" && c.key_source != "keyfile" {
            return Err(Error::Corrupt(format!(
                "store config: key_source {:?} is neither \"passphrase\" nor \"keyfile\"",
                c.key_source
            )));
        }
        Ok(c)
    }

    /// A new config.
    pub fn new(store_id: &Id16, chunk_size: u32, key_source: &str, created_s: u64) -> Self {
        StoreConfig {
            format: "envelopefs".into(),
            format_version: FORMAT_VERSION,
            store_id: hex(store_id),
            chunk_size,
            key_source: key_source.into(),
            created_s,
            features: Vec::new(),
        }
    }

    /// The store id as bytes.
    pub fn store_id_bytes(&self) -> Option<Id16> {
        unhex::<16>(&self.store_id)
    }

    /// Serialized form (pretty JSON with a trailing newline).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}
