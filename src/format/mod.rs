//! The on-disk byte encoding, and the only code that turns structures into bytes.
//!
//! Everything here is specified in docs/FORMAT.md. The binary records use bincode 2 with one
//! pinned configuration (little endian, fixed-width integers, a decode limit), so a hostile
//! xattr cannot make the decoder allocate without bound. The golden-bytes tests at the bottom
//! fail with "format version bump required" when an encoding changes.

pub mod chunk;
pub mod config;
pub mod context;
pub mod journal;
pub mod kms_blob;
pub mod names;
pub mod records;
pub mod s3meta;

use crate::error::{Error, Result};
use bincode::config::{Configuration, Fixint, Limit, LittleEndian};

/// The format version of every record whose layout version 1 defined (object header, data
/// preamble, keystore, the version 1 bucket record): such records carry 1 in stores of both
/// versions.
pub const FORMAT_VERSION: u16 = 1;

/// The store format version with encrypted names (docs/FORMAT.md "Encrypted names"): its
/// bucket records carry the wrapped name key and this version, and its directories carry a
/// directory record of this version. Everything else keeps its version 1 layout.
pub const NAMES_FORMAT_VERSION: u16 = 2;

/// Largest encoded object header or bucket record we accept (bytes).
pub const RECORD_LIMIT: usize = 1024;
/// Largest sealed keystore body we accept (bytes).
pub const KEYSTORE_LIMIT: usize = 64 << 20;

/// The pinned bincode configuration for small records (headers, bucket records).
pub const RECORD_CONFIG: Configuration<LittleEndian, Fixint, Limit<RECORD_LIMIT>> =
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<RECORD_LIMIT>();

/// The pinned bincode configuration for the keystore body.
pub const KEYSTORE_CONFIG: Configuration<LittleEndian, Fixint, Limit<KEYSTORE_LIMIT>> =
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<KEYSTORE_LIMIT>();

/// 16 random bytes naming a store, bucket, object or master key.
pub type Id16 = [u8; 16];

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parses lower- or upper-case hex into exactly `N` bytes.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// Parses hex of any even length into its bytes.
pub fn unhex_vec(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks_exact(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

/// Checks the 4-byte magic and 2-byte version that begin every binary record, so an unknown
/// version is reported as such rather than as a parse error.
pub(crate) fn check_magic_version(bytes: &[u8], magic: &[u8; 4], what: &str) -> Result<()> {
    check_magic_version_is(bytes, magic, what, FORMAT_VERSION)
}

/// [`check_magic_version`] for a record whose layout has another version than 1.
pub(crate) fn check_magic_version_is(
    bytes: &[u8],
    magic: &[u8; 4],
    what: &str,
    expected: u16,
) -> Result<()> {
    if bytes.len() < 6 || &bytes[..4] != magic {
        return Err(Error::Corrupt(format!("{what}: bad magic or too short")));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != expected {
        return Err(Error::UnsupportedVersion(format!(
            "{what}: format version {version} is not supported by this build (it reads version {expected})"
        )));
    }
    Ok(())
}

/// Decodes a whole record with the pinned config; trailing bytes are an error.
pub(crate) fn decode_record<T: bincode::Decode<()>>(bytes: &[u8], what: &str) -> Result<T> {
    let (value, used) = bincode::decode_from_slice::<T, _>(bytes, RECORD_CONFIG)
        .map_err(|e| Error::Corrupt(format!("{what}: does not parse ({e})")))?;
    if used != bytes.len() {
        return Err(Error::Corrupt(format!(
            "{what}: {} trailing bytes",
            bytes.len() - used
        )));
    }
    Ok(value)
}

/// Encodes a record with the pinned config.
pub(crate) fn encode_record<T: bincode::Encode>(value: &T) -> Vec<u8> {
    // Encoding fixed-size records into a Vec cannot fail except past the limit, which
    // our own records never reach; fall back to an empty vector, which decodes as corrupt.
    bincode::encode_to_vec(value, RECORD_CONFIG).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id: Id16 = [0xab; 16];
        assert_eq!(unhex::<16>(&hex(&id)), Some(id));
        assert_eq!(unhex::<16>("zz"), None);
        assert_eq!(hex(&[0x01, 0xfe]), "01fe");
    }
}
