//! Encrypted names (store format version 2): entry names and symlink targets below a bucket,
//! encrypted under the bucket's name key. Specified byte for byte in docs/FORMAT.md
//! "Encrypted names".
//!
//! ```text
//! siv key  = HKDF-SHA256(salt = empty, IKM = name key (32), info = "envelopefs.names.aes-siv.v2", 64 bytes)
//! padded   = name | 0x00 * (to the next multiple of 16)          (names hold no NUL byte)
//! C        = AES-SIV-CMAC-512(siv key, AD = ["envelopefs.name.v2", directory id], padded)
//!          = SIV tag (16) | ciphertext (len(padded))
//! stored   = base64url(C), no padding                             when it fits NAME_MAX
//!          | "~l" | base64url(SHA-256(C)), with C in the entry "~n" | base64url(SHA-256(C))
//! target   = N (16, random) | AES-SIV(siv key, AD = ["envelopefs.target.v2", N], padded target)
//! stored   = base64url(target)                                    when it fits 4095 bytes
//!          | "~t" | base64url(SHA-256(target)), with target in the bucket's top entry of that name
//! ```
//!
//! Decryption refuses, as *corrupt*, everything the encoder cannot have written: a bad
//! alphabet, non-canonical base64, a length the padding cannot give, a failed SIV check (a
//! tampered name, one moved from another directory, one under another key), a long form
//! whose hash does not match its full name or whose name would have fitted the short form,
//! and non-canonical padding. So one plaintext name has exactly one stored name per
//! directory, and a stored name is either its one plaintext or an error, never another name.

use super::{check_magic_version_is, decode_record, encode_record, Id16, NAMES_FORMAT_VERSION};
use crate::error::{Error, Result};
use aes_siv::aead::KeyInit;
use aes_siv::siv::Aes256Siv;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bincode::{Decode, Encode};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The per-directory value names are bound to: 16 random bytes in the directory's record
/// (`~d`); a bucket's top directory has the bucket id.
pub type DirId = Id16;

/// Longest plaintext name, and longest stored entry name (bytes).
pub const NAME_MAX: usize = 255;
/// Longest plaintext name stored in the short form; 161 to 255 bytes take the long form.
pub const SHORT_NAME_MAX: usize = 160;
/// Longest plaintext symlink target, and longest stored target (PATH_MAX - 1).
pub const TARGET_MAX: usize = 4095;
/// Longest plaintext target stored in the short form.
pub const SHORT_TARGET_MAX: usize = 3024;

/// The entry of a directory (below a bucket's top) holding its directory record.
pub const DIR_RECORD_ENTRY: &str = "~d";
/// Prefix of a long name's entry (the object, directory, link or node itself).
pub const LONG_NAME_PREFIX: &str = "~l";
/// Prefix of the entry beside it holding the long name's full encryption.
pub const LONG_NAME_FULL_PREFIX: &str = "~n";
/// Prefix of a long symlink target: the backing target, and the entry at the bucket's top
/// that holds the full encryption.
pub const LONG_TARGET_PREFIX: &str = "~t";

/// Magic of a directory record.
pub const DIR_RECORD_MAGIC: [u8; 4] = *b"EFSI";
/// Length of an encoded directory record.
pub const DIR_RECORD_LEN: usize = 22;

/// HKDF info deriving the AES-SIV key from the name key.
pub const SIV_KEY_INFO: &[u8] = b"envelopefs.names.aes-siv.v2";
/// First AES-SIV associated-data component of an entry name.
pub const NAME_LABEL: &[u8] = b"envelopefs.name.v2";
/// First AES-SIV associated-data component of a symlink target.
pub const TARGET_LABEL: &[u8] = b"envelopefs.target.v2";

/// Bytes of a symlink target's random nonce.
pub const TARGET_NONCE_LEN: usize = 16;
const SIV_LEN: usize = 16;
const BLOCK: usize = 16;
/// Characters of base64url(SHA-256(..)).
const HASH_CHARS: usize = 43;

/// The record of a directory below a bucket's top: its directory id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct DirRecord {
    /// `EFSI`.
    pub magic: [u8; 4],
    /// 2.
    pub version: u16,
    /// The directory id its entries' names are bound to.
    pub dir_id: DirId,
}

impl DirRecord {
    /// A record for a directory id.
    pub fn new(dir_id: DirId) -> Self {
        DirRecord {
            magic: DIR_RECORD_MAGIC,
            version: NAMES_FORMAT_VERSION,
            dir_id,
        }
    }

    /// Encodes the record (22 bytes).
    pub fn encode(&self) -> Vec<u8> {
        encode_record(self)
    }

    /// Decodes a record, refusing other versions and malformed bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        check_magic_version_is(
            bytes,
            &DIR_RECORD_MAGIC,
            "directory record",
            NAMES_FORMAT_VERSION,
        )?;
        decode_record(bytes, "directory record")
    }
}

/// How an encrypted entry name is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredName {
    /// The entry's name is the encoding itself.
    Short(String),
    /// The entry is `~l` + hash; the entry `full_entry` (`~n` + hash) beside it holds `full`.
    Long {
        /// The entry's name.
        entry: String,
        /// The name of the entry holding the full encryption.
        full_entry: String,
        /// The full encryption C (the content of `full_entry`).
        full: Vec<u8>,
    },
}

impl StoredName {
    /// The name of the entry itself.
    pub fn entry(&self) -> &str {
        match self {
            StoredName::Short(s) => s,
            StoredName::Long { entry, .. } => entry,
        }
    }
}

/// How an encrypted symlink target is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredTarget {
    /// The backing symlink's target is the encoding itself.
    Short(String),
    /// The backing target is `~t` + hash; the entry of that name at the bucket's top holds
    /// `full`.
    Long {
        /// The backing symlink's target, also the name of the entry holding `full`.
        target: String,
        /// Nonce | C (the content of that entry).
        full: Vec<u8>,
    },
}

impl StoredTarget {
    /// The backing symlink's target.
    pub fn target(&self) -> &str {
        match self {
            StoredTarget::Short(s) => s,
            StoredTarget::Long { target, .. } => target,
        }
    }
}

/// What an entry of an encrypted directory is, from its stored name alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A short encrypted name.
    Short,
    /// A long name's entry (`~l` + hash).
    Long,
    /// A long name's full encryption (`~n` + hash): not shown in a listing.
    LongFull,
    /// The directory record (`~d`): not shown.
    DirRecord,
    /// A long symlink target's full encryption (`~t` + hash, at a bucket's top): not shown.
    LongTarget,
    /// Nothing envelopefs writes: skipped with a logged reason.
    Foreign,
}

fn is_b64url(b: &[u8]) -> bool {
    b.iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

fn hash_form(entry: &[u8], prefix: &str) -> bool {
    entry.len() == 2 + HASH_CHARS && entry.starts_with(prefix.as_bytes()) && is_b64url(&entry[2..])
}

/// Classifies a stored entry name of an encrypted directory.
pub fn classify(entry: &[u8]) -> EntryKind {
    if entry == DIR_RECORD_ENTRY.as_bytes() {
        EntryKind::DirRecord
    } else if hash_form(entry, LONG_NAME_PREFIX) {
        EntryKind::Long
    } else if hash_form(entry, LONG_NAME_FULL_PREFIX) {
        EntryKind::LongFull
    } else if hash_form(entry, LONG_TARGET_PREFIX) {
        EntryKind::LongTarget
    } else if !entry.is_empty() && entry.len() <= NAME_MAX && is_b64url(entry) {
        EntryKind::Short
    } else {
        EntryKind::Foreign
    }
}

/// base64url(SHA-256(bytes)): the hash part of a long form.
fn hash_b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
}

/// The entry holding a long name's full encryption, for that long name's entry.
pub fn long_full_entry(entry: &str) -> Result<String> {
    match entry.strip_prefix(LONG_NAME_PREFIX) {
        Some(h) if hash_form(entry.as_bytes(), LONG_NAME_PREFIX) => {
            Ok(format!("{LONG_NAME_FULL_PREFIX}{h}"))
        }
        _ => Err(Error::InvalidArgument(format!(
            "{entry:?} is not a long-name entry"
        ))),
    }
}

fn pad(plain: &[u8]) -> Zeroizing<Vec<u8>> {
    let len = plain.len().div_ceil(BLOCK) * BLOCK;
    let mut v = Zeroizing::new(Vec::with_capacity(len + SIV_LEN));
    v.extend_from_slice(plain);
    v.resize(len, 0);
    v
}

/// Strips the NUL padding, refusing a non-canonical one (16 or more NULs, or all NULs).
fn unpad(mut padded: Vec<u8>, what: &str) -> Result<Vec<u8>> {
    let len = padded.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if len == 0 || padded.len() - len >= BLOCK {
        return Err(Error::Corrupt(format!("{what}: bad padding")));
    }
    padded.truncate(len);
    Ok(padded)
}

/// Checks a plaintext entry name: 1 to 255 bytes, no NUL or `/`, not `.` or `..`.
pub fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(Error::NameTooLong(format!(
            "a name is at most {NAME_MAX} bytes ({} given)",
            name.len()
        )));
    }
    if name.is_empty() || name == b"." || name == b".." || name.iter().any(|&b| b == 0 || b == b'/')
    {
        return Err(Error::InvalidArgument(
            "a name is 1-255 bytes without NUL or '/', and not '.' or '..'".into(),
        ));
    }
    Ok(())
}

/// Checks a plaintext symlink target: 1 to 4095 bytes, no NUL.
pub fn check_target(target: &[u8]) -> Result<()> {
    if target.len() > TARGET_MAX {
        return Err(Error::NameTooLong(format!(
            "a symlink target is at most {TARGET_MAX} bytes ({} given)",
            target.len()
        )));
    }
    if target.is_empty() || target.contains(&0) {
        return Err(Error::InvalidArgument(
            "a symlink target is 1-4095 bytes without NUL".into(),
        ));
    }
    Ok(())
}

/// Short stored form of `raw` if it fits `max` characters.
fn short_form(raw: &[u8], max: usize) -> Option<String> {
    ((4 * raw.len()).div_ceil(3) <= max).then(|| URL_SAFE_NO_PAD.encode(raw))
}

/// Decodes the base64url of a short form.
fn decode_b64(stored: &[u8], what: &str) -> Result<Vec<u8>> {
    if !is_b64url(stored) {
        return Err(Error::Corrupt(format!("{what}: not base64url")));
    }
    URL_SAFE_NO_PAD
        .decode(stored)
        .map_err(|_| Error::Corrupt(format!("{what}: not canonical base64url")))
}

/// Checks a long form's hash against its full encryption.
fn check_hash(stored: &[u8], prefix: &str, full: &[u8], what: &str) -> Result<()> {
    if !hash_form(stored, prefix) {
        return Err(Error::Corrupt(format!("{what}: not a long form")));
    }
    if hash_b64(full).as_bytes() != &stored[2..] {
        return Err(Error::Corrupt(format!(
            "{what}: the full encryption does not match its hash"
        )));
    }
    Ok(())
}

/// A name key ready to encrypt and decrypt the names of one bucket.
pub struct NameCipher {
    siv_key: Zeroizing<[u8; 64]>,
}

struct Len64;

impl aws_lc_rs::hkdf::KeyType for Len64 {
    fn len(&self) -> usize {
        64
    }
}

impl NameCipher {
    /// Derives the AES-SIV key from a 32-byte name key.
    pub fn new(name_key: &[u8; 32]) -> Result<Self> {
        use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
        let prk = Salt::new(HKDF_SHA256, &[]).extract(name_key);
        let info = [SIV_KEY_INFO];
        let okm = prk
            .expand(&info, Len64)
            .map_err(|_| Error::InvalidArgument("HKDF refused 64 bytes of output".into()))?;
        let mut siv_key = Zeroizing::new([0u8; 64]);
        okm.fill(&mut siv_key[..])
            .map_err(|_| Error::InvalidArgument("HKDF failed".into()))?;
        Ok(NameCipher { siv_key })
    }

    fn siv(&self) -> Result<Aes256Siv> {
        Aes256Siv::new_from_slice(&self.siv_key[..])
            .map_err(|_| Error::InvalidArgument("AES-SIV refused a 64-byte key".into()))
    }

    fn seal(&self, label: &[u8], ad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        let padded = pad(plain);
        self.siv()?
            .encrypt([label, ad], &padded)
            .map_err(|_| Error::InvalidArgument("AES-SIV refused the input".into()))
    }

    fn open(&self, label: &[u8], ad: &[u8], sealed: &[u8], what: &str) -> Result<Vec<u8>> {
        let padded = self.siv()?.decrypt([label, ad], sealed).map_err(|_| {
            Error::Corrupt(format!(
                "{what}: does not decrypt (tampered, moved from another directory, or under another name key)"
            ))
        })?;
        unpad(padded, what)
    }

    /// The full encryption C of an entry name in a directory (no length limit on the form).
    pub fn encrypt_name_raw(&self, dir: &DirId, name: &[u8]) -> Result<Vec<u8>> {
        check_name(name)?;
        self.seal(NAME_LABEL, dir, name)
    }

    /// How an entry name is stored in a directory. ENAMETOOLONG above 255 bytes.
    pub fn encrypt_name(&self, dir: &DirId, name: &[u8]) -> Result<StoredName> {
        let c = self.encrypt_name_raw(dir, name)?;
        if let Some(s) = short_form(&c, NAME_MAX) {
            return Ok(StoredName::Short(s));
        }
        let h = hash_b64(&c);
        Ok(StoredName::Long {
            entry: format!("{LONG_NAME_PREFIX}{h}"),
            full_entry: format!("{LONG_NAME_FULL_PREFIX}{h}"),
            full: c,
        })
    }

    /// The plaintext of a short stored name in a directory.
    pub fn decrypt_short_name(&self, dir: &DirId, entry: &[u8]) -> Result<Vec<u8>> {
        let what = "encrypted name";
        if entry.len() > NAME_MAX {
            return Err(Error::Corrupt(format!("{what}: longer than NAME_MAX")));
        }
        let c = decode_b64(entry, what)?;
        // What the short form can hold: SIV tag and 1 to SHORT_NAME_MAX / 16 blocks.
        if c.len() < SIV_LEN + BLOCK || c.len() > SIV_LEN + SHORT_NAME_MAX || c.len() % BLOCK != 0 {
            return Err(Error::Corrupt(format!("{what}: impossible length")));
        }
        let name = self.open(NAME_LABEL, dir, &c, what)?;
        check_name(&name).map_err(|_| Error::Corrupt(format!("{what}: not a valid name")))?;
        Ok(name)
    }

    /// The plaintext of a long stored name (`~l` + hash) in a directory, given the content
    /// of its `~n` entry.
    pub fn decrypt_long_name(&self, dir: &DirId, entry: &[u8], full: &[u8]) -> Result<Vec<u8>> {
        let what = "encrypted long name";
        check_hash(entry, LONG_NAME_PREFIX, full, what)?;
        // What only the long form holds: 176 to 256 bytes of padded name.
        if full.len() < SIV_LEN + SHORT_NAME_MAX + BLOCK
            || full.len() > SIV_LEN + NAME_MAX + 1
            || full.len() % BLOCK != 0
        {
            return Err(Error::Corrupt(format!("{what}: impossible length")));
        }
        let name = self.open(NAME_LABEL, dir, full, what)?;
        check_name(&name).map_err(|_| Error::Corrupt(format!("{what}: not a valid name")))?;
        Ok(name)
    }

    /// How a symlink target is stored, under a fresh random `nonce` (a parameter so that
    /// tests can fix it). ENAMETOOLONG above 4095 bytes.
    pub fn encrypt_target(
        &self,
        nonce: &[u8; TARGET_NONCE_LEN],
        target: &[u8],
    ) -> Result<StoredTarget> {
        check_target(target)?;
        let mut full = Vec::with_capacity(TARGET_NONCE_LEN + SIV_LEN + target.len() + BLOCK);
        full.extend_from_slice(nonce);
        full.extend_from_slice(&self.seal(TARGET_LABEL, nonce, target)?);
        if let Some(s) = short_form(&full, TARGET_MAX) {
            return Ok(StoredTarget::Short(s));
        }
        Ok(StoredTarget::Long {
            target: format!("{LONG_TARGET_PREFIX}{}", hash_b64(&full)),
            full,
        })
    }

    fn open_target(&self, full: &[u8], what: &str) -> Result<Vec<u8>> {
        let (nonce, sealed) = full.split_at(TARGET_NONCE_LEN);
        let t = self.open(TARGET_LABEL, nonce, sealed, what)?;
        check_target(&t).map_err(|_| Error::Corrupt(format!("{what}: not a valid target")))?;
        Ok(t)
    }

    /// The plaintext of a short stored symlink target.
    pub fn decrypt_short_target(&self, stored: &[u8]) -> Result<Vec<u8>> {
        let what = "encrypted symlink target";
        if stored.len() > TARGET_MAX {
            return Err(Error::Corrupt(format!("{what}: longer than PATH_MAX")));
        }
        let full = decode_b64(stored, what)?;
        let n = TARGET_NONCE_LEN + SIV_LEN;
        if full.len() < n + BLOCK || full.len() > n + SHORT_TARGET_MAX || full.len() % BLOCK != 0 {
            return Err(Error::Corrupt(format!("{what}: impossible length")));
        }
        self.open_target(&full, what)
    }

    /// The plaintext of a long stored target (`~t` + hash), given the content of the entry
    /// of that name at the bucket's top.
    pub fn decrypt_long_target(&self, stored: &[u8], full: &[u8]) -> Result<Vec<u8>> {
        let what = "encrypted long symlink target";
        check_hash(stored, LONG_TARGET_PREFIX, full, what)?;
        let n = TARGET_NONCE_LEN + SIV_LEN;
        if full.len() < n + SHORT_TARGET_MAX + BLOCK
            || full.len() > n + TARGET_MAX + 1
            || full.len() % BLOCK != 0
        {
            return Err(Error::Corrupt(format!("{what}: impossible length")));
        }
        self.open_target(full, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq<const N: usize>(start: u8) -> [u8; N] {
        let mut a = [0u8; N];
        for (i, b) in a.iter_mut().enumerate() {
            *b = start.wrapping_add(i as u8);
        }
        a
    }

    fn cipher() -> NameCipher {
        NameCipher::new(&seq::<32>(0xd0)).expect("cipher")
    }

    const DIR: DirId = [0x10; 16];
    const OTHER_DIR: DirId = [0x20; 16];

    fn name_of(n: usize) -> Vec<u8> {
        (0..n).map(|i| b'a' + (i % 26) as u8).collect()
    }

    fn round_trip(c: &NameCipher, dir: &DirId, name: &[u8]) -> StoredName {
        let s = c.encrypt_name(dir, name).expect("encrypt");
        assert!(s.entry().len() <= NAME_MAX);
        let back = match &s {
            StoredName::Short(e) => {
                assert_eq!(classify(e.as_bytes()), EntryKind::Short);
                c.decrypt_short_name(dir, e.as_bytes())
            }
            StoredName::Long {
                entry,
                full_entry,
                full,
            } => {
                assert_eq!(classify(entry.as_bytes()), EntryKind::Long);
                assert_eq!(classify(full_entry.as_bytes()), EntryKind::LongFull);
                assert_eq!(&long_full_entry(entry).expect("full entry"), full_entry);
                c.decrypt_long_name(dir, entry.as_bytes(), full)
            }
        };
        assert_eq!(back.expect("decrypt"), name);
        s
    }

    #[test]
    fn every_length_round_trips_and_the_form_switches_after_160() {
        let c = cipher();
        for n in 1..=NAME_MAX {
            let s = round_trip(&c, &DIR, &name_of(n));
            let long = matches!(s, StoredName::Long { .. });
            assert_eq!(long, n > SHORT_NAME_MAX, "length {n}");
        }
        // The longest short form is 235 characters; every long entry is 45.
        assert_eq!(
            c.encrypt_name(&DIR, &name_of(160))
                .expect("160")
                .entry()
                .len(),
            235
        );
        assert_eq!(
            c.encrypt_name(&DIR, &name_of(161))
                .expect("161")
                .entry()
                .len(),
            45
        );
    }

    #[test]
    fn names_of_256_bytes_and_more_are_enametoolong() {
        let c = cipher();
        assert!(matches!(
            c.encrypt_name(&DIR, &name_of(256)),
            Err(Error::NameTooLong(_))
        ));
        assert!(c.encrypt_name(&DIR, &name_of(255)).is_ok());
    }

    #[test]
    fn names_are_bytes_not_utf8() {
        let c = cipher();
        round_trip(&c, &DIR, &[0xff, 0xfe, 0x80, b'x']);
        round_trip(&c, &DIR, &[0xc3; 200]);
        round_trip(&c, &DIR, "café ☕".as_bytes());
    }

    #[test]
    fn invalid_names_are_refused() {
        let c = cipher();
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert!(
                matches!(c.encrypt_name(&DIR, bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
        // A name that is only dots and other bytes is fine.
        round_trip(&c, &DIR, b"...");
    }

    #[test]
    fn deterministic_per_directory_distinct_across_directories() {
        let c = cipher();
        let a = c.encrypt_name(&DIR, b"notes.txt").expect("a");
        assert_eq!(a, c.encrypt_name(&DIR, b"notes.txt").expect("again"));
        assert_ne!(a, c.encrypt_name(&OTHER_DIR, b"notes.txt").expect("other"));
        let long = c.encrypt_name(&DIR, &name_of(200)).expect("long");
        assert_ne!(long, c.encrypt_name(&OTHER_DIR, &name_of(200)).expect("o"));
    }

    #[test]
    fn a_name_from_another_directory_does_not_decrypt() {
        let c = cipher();
        let s = c.encrypt_name(&DIR, b"notes.txt").expect("a");
        assert!(matches!(
            c.decrypt_short_name(&OTHER_DIR, s.entry().as_bytes()),
            Err(Error::Corrupt(_))
        ));
        let StoredName::Long { entry, full, .. } = c.encrypt_name(&DIR, &name_of(200)).expect("l")
        else {
            panic!("long form expected");
        };
        assert!(matches!(
            c.decrypt_long_name(&OTHER_DIR, entry.as_bytes(), &full),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn a_name_under_another_key_does_not_decrypt() {
        let c = cipher();
        let other = NameCipher::new(&[7u8; 32]).expect("other");
        let s = c.encrypt_name(&DIR, b"notes.txt").expect("a");
        assert!(matches!(
            other.decrypt_short_name(&DIR, s.entry().as_bytes()),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn every_flipped_character_of_a_short_name_is_an_error() {
        let c = cipher();
        let s = c.encrypt_name(&DIR, b"notes.txt").expect("a");
        let e = s.entry().as_bytes();
        for i in 0..e.len() {
            let mut t = e.to_vec();
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            assert!(
                matches!(c.decrypt_short_name(&DIR, &t), Err(Error::Corrupt(_))),
                "flip at {i}"
            );
        }
    }

    #[test]
    fn truncated_and_extended_short_names_are_errors() {
        let c = cipher();
        let s = c.encrypt_name(&DIR, b"notes.txt").expect("a");
        let e = s.entry().as_bytes();
        for n in 0..e.len() {
            assert!(c.decrypt_short_name(&DIR, &e[..n]).is_err(), "cut to {n}");
        }
        let mut longer = e.to_vec();
        longer.extend_from_slice(b"AAAAAAAAAAAAAAAAAAAAAA");
        assert!(c.decrypt_short_name(&DIR, &longer).is_err());
    }

    #[test]
    fn a_long_name_with_a_wrong_or_swapped_full_entry_is_an_error() {
        let c = cipher();
        let StoredName::Long { entry, full, .. } = c.encrypt_name(&DIR, &name_of(200)).expect("l")
        else {
            panic!("long form expected");
        };
        let StoredName::Long { full: other, .. } = c.encrypt_name(&DIR, &name_of(201)).expect("m")
        else {
            panic!("long form expected");
        };
        assert!(c.decrypt_long_name(&DIR, entry.as_bytes(), &other).is_err());
        let mut flipped = full.clone();
        flipped[20] ^= 1;
        assert!(c
            .decrypt_long_name(&DIR, entry.as_bytes(), &flipped)
            .is_err());
        assert!(c
            .decrypt_long_name(&DIR, entry.as_bytes(), &full[..full.len() - 16])
            .is_err());
    }

    #[test]
    fn a_short_name_in_long_form_is_refused() {
        // The encoder never writes a 1-160 byte name in the long form; so a reader refuses
        // it, and a name has exactly one stored form.
        let c = cipher();
        let full = c.encrypt_name_raw(&DIR, b"short").expect("raw");
        let entry = format!("{LONG_NAME_PREFIX}{}", hash_b64(&full));
        assert!(matches!(
            c.decrypt_long_name(&DIR, entry.as_bytes(), &full),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn non_canonical_padding_is_refused() {
        // Built with the AES-SIV of the crate, as an attacker holding the name key could:
        // a whole block of NULs, and an all-NUL name, do not decode.
        let c = cipher();
        for padded in [
            [b'x'; 1]
                .iter()
                .chain([0u8; 31].iter())
                .copied()
                .collect::<Vec<_>>(),
            vec![0u8; 16],
        ] {
            let sealed = c
                .siv()
                .expect("siv")
                .encrypt([NAME_LABEL, &DIR[..]], &padded)
                .expect("seal");
            let entry = URL_SAFE_NO_PAD.encode(&sealed);
            assert!(matches!(
                c.decrypt_short_name(&DIR, entry.as_bytes()),
                Err(Error::Corrupt(_))
            ));
        }
    }

    #[test]
    fn non_canonical_base64_is_refused() {
        let c = cipher();
        let s = c.encrypt_name(&DIR, b"a").expect("a"); // 32 bytes: 43 chars, 2 spare bits
        let mut e = s.entry().as_bytes().to_vec();
        let last = e.len() - 1;
        // Set one of the two unused low bits of the last character.
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let v = alphabet.iter().position(|&x| x == e[last]).expect("b64");
        e[last] = alphabet[v | 1];
        assert_ne!(e, s.entry().as_bytes());
        assert!(matches!(
            c.decrypt_short_name(&DIR, &e),
            Err(Error::Corrupt(_))
        ));
        let mut padded = s.entry().as_bytes().to_vec();
        padded.push(b'=');
        assert!(c.decrypt_short_name(&DIR, &padded).is_err());
    }

    #[test]
    fn targets_round_trip_up_to_path_max_and_switch_form_after_3024() {
        let c = cipher();
        let nonce = seq::<16>(0x90);
        for n in [1, 2, 15, 16, 17, 100, 3023, 3024, 3025, 4000, 4095] {
            let t: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            let s = c.encrypt_target(&nonce, &t).expect("encrypt");
            assert!(s.target().len() <= TARGET_MAX);
            let back = match &s {
                StoredTarget::Short(x) => {
                    assert!(n <= SHORT_TARGET_MAX, "{n}");
                    c.decrypt_short_target(x.as_bytes())
                }
                StoredTarget::Long { target, full } => {
                    assert!(n > SHORT_TARGET_MAX, "{n}");
                    assert_eq!(classify(target.as_bytes()), EntryKind::LongTarget);
                    c.decrypt_long_target(target.as_bytes(), full)
                }
            };
            assert_eq!(back.expect("decrypt"), t, "{n}");
        }
        assert!(matches!(
            c.encrypt_target(&nonce, &[b'a'; 4096]),
            Err(Error::NameTooLong(_))
        ));
        assert!(matches!(
            c.encrypt_target(&nonce, b"a\0b"),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn tampered_targets_are_errors() {
        let c = cipher();
        let s = c.encrypt_target(&seq(0x90), b"../x/y").expect("t");
        let t = s.target().as_bytes();
        for i in 0..t.len() {
            let mut x = t.to_vec();
            x[i] = if x[i] == b'A' { b'B' } else { b'A' };
            assert!(c.decrypt_short_target(&x).is_err(), "flip at {i}");
        }
        assert!(c.decrypt_short_target(&t[..t.len() - 1]).is_err());
        let other = NameCipher::new(&[7u8; 32]).expect("other");
        assert!(other.decrypt_short_target(t).is_err());
        // A name's encryption is not a target's (other label), and the other way.
        let name = c.encrypt_name(&DIR, &[b'x'; 40]).expect("n");
        assert!(c.decrypt_short_target(name.entry().as_bytes()).is_err());
        assert!(c.decrypt_short_name(&DIR, t).is_err());
    }

    #[test]
    fn targets_under_fresh_nonces_differ() {
        let c = cipher();
        let a = c.encrypt_target(&[1; 16], b"same").expect("a");
        let b = c.encrypt_target(&[2; 16], b"same").expect("b");
        assert_ne!(a, b);
    }

    #[test]
    fn classify_tells_every_entry_apart() {
        let h = "A".repeat(43);
        assert_eq!(classify(b"~d"), EntryKind::DirRecord);
        assert_eq!(classify(format!("~l{h}").as_bytes()), EntryKind::Long);
        assert_eq!(classify(format!("~n{h}").as_bytes()), EntryKind::LongFull);
        assert_eq!(classify(format!("~t{h}").as_bytes()), EntryKind::LongTarget);
        assert_eq!(classify(b"abc-_09"), EntryKind::Short);
        for foreign in [
            &b""[..],
            b"~l",
            b"~x",
            b"a.b",
            b".hidden",
            b"~lAAA",
            &[b'A'; 256],
        ] {
            assert_eq!(classify(foreign), EntryKind::Foreign, "{foreign:?}");
        }
        assert!(long_full_entry("~nAAA").is_err());
    }

    #[test]
    fn dir_records_round_trip_and_refuse_bad_bytes() {
        let r = DirRecord::new(seq(0x20));
        let b = r.encode();
        assert_eq!(b.len(), DIR_RECORD_LEN);
        assert_eq!(DirRecord::decode(&b).expect("decode"), r);
        assert!(matches!(
            DirRecord::decode(&b[..21]),
            Err(Error::Corrupt(_))
        ));
        let mut v1 = b.clone();
        v1[4] = 1;
        assert!(matches!(
            DirRecord::decode(&v1),
            Err(Error::UnsupportedVersion(_))
        ));
        let mut long = b.clone();
        long.push(0);
        assert!(matches!(DirRecord::decode(&long), Err(Error::Corrupt(_))));
    }
}
