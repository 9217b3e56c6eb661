//! The bodies of the fuzz targets in `fuzz/`: one function per parser of untrusted bytes.
//!
//! They live in the library, not in `fuzz/`, so that `tests/fuzz_corpora.rs` replays every
//! kept corpus through exactly the same code under plain `cargo test` (no nightly, no
//! libFuzzer). Each one must never panic, and checks what must hold of any input the parser
//! accepts: a decoded record encodes back to the same bytes (one encoding per value), a
//! parsed config serializes and parses to the same config.

use crate::crypto::Key32;
use crate::format::config::StoreConfig;
use crate::format::records::{BucketRecord, KeystoreBody, KeystoreFile, ObjectHeader};
use crate::keystore::{KeyStore, Secret};

/// The object header xattr (`user.envelopefs.header`).
pub fn header(data: &[u8]) {
    if let Ok(h) = ObjectHeader::decode(data) {
        assert_eq!(h.encode(), data, "a decoded header re-encodes to its bytes");
    }
}

/// The bucket record xattr (`user.envelopefs.bucket`).
pub fn bucket_record(data: &[u8]) {
    if let Ok(r) = BucketRecord::decode(data) {
        assert_eq!(
            r.encode(),
            data,
            "a decoded bucket record re-encodes to its bytes"
        );
    }
}

/// The keystore file: the clear prefix, the unseal path with a raw key (the AEAD refuses
/// anything not sealed by that key, without running Argon2), and the body decoder that runs
/// after a successful unseal.
pub fn keystore(data: &[u8]) {
    if let Ok(f) = KeystoreFile::decode(data) {
        assert_eq!(
            f.encode(),
            data,
            "a decoded keystore file re-encodes to its bytes"
        );
        let secret = Secret::KeyFile(Key32::from_bytes([7u8; 32]));
        let _ = KeyStore::unseal(data, &f.prefix.store_id, &secret);
    }
    if let Ok(body) = KeystoreBody::decode(data) {
        if let Ok(bytes) = body.encode() {
            assert_eq!(
                bytes, data,
                "a decoded keystore body re-encodes to its bytes"
            );
        }
    }
}

/// The store config (`config.json`).
pub fn config(data: &[u8]) {
    if let Ok(c) = StoreConfig::parse(data) {
        let again = StoreConfig::parse(&c.to_bytes());
        assert!(
            matches!(&again, Ok(c2) if *c2 == c),
            "a parsed config round-trips"
        );
    }
}

/// A control-file command line (`.envelopefs/ctl`), as the mount decodes a write.
pub fn ctl(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::command::parse_line(text.trim());
}

/// A header backup file given to `headers import` (its JSON, and the paths in it, which
/// must never lead out of the store or into `.envelopefs`).
pub fn headers_backup(data: &[u8]) {
    if let Ok(b) = crate::headers::Backup::parse(data) {
        if let Ok(again) = serde_json::to_vec(&b) {
            let back = crate::headers::Backup::parse(&again);
            assert!(
                matches!(&back, Ok(b2) if *b2 == b),
                "a parsed backup round-trips"
            );
        }
        let entries = b
            .buckets
            .iter()
            .map(|e| (&e.name_hex, Some(1)))
            .chain(b.objects.iter().map(|e| (&e.path_hex, None)));
        for (h, n) in entries {
            if let Some(p) = crate::headers::safe_rel(h, n) {
                assert!(p.is_relative(), "an imported path is relative");
                assert!(
                    p.components()
                        .all(|c| matches!(c, std::path::Component::Normal(_))),
                    "an imported path has only normal components"
                );
                assert!(!p.starts_with(crate::store::META_DIR));
            }
        }
    }
}
