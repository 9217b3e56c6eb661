//! The bodies of the fuzz targets in `fuzz/`: one function per parser of untrusted bytes.
//!
//! They live in the library, not in `fuzz/`, so that `tests/fuzz_corpora.rs` replays every
//! kept corpus through exactly the same code under plain `cargo test` (no nightly, no
//! libFuzzer). Each one must never panic, and checks what must hold of any input the parser
//! accepts: a decoded record encodes back to the same bytes (one encoding per value), a
//! parsed config serializes and parses to the same config, a blob that opens re-seals to
//! itself, a journal record is what the documented layout has in its slot.

use crate::format::config::StoreConfig;
use crate::format::kms_blob;
use crate::format::records::{BucketRecord, KeystoreBody, KeystoreFile, ObjectHeader};
use crate::keys::crypto::Key32;
use crate::keys::keystore::{KeyStore, Secret};
use crate::ops::kms;

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

/// A control-file command line (`.envelopefs/ctl`), as the mount decodes a write, and the
/// arguments that are parsed further before the store is touched: encryption contexts, the
/// base64 blob of `kms decrypt | re-encrypt`, and `--allowed-operations`.
pub fn ctl(data: &[u8]) {
    use crate::command::{KeyCmd, KmsCmd, StoreCommand};
    let text = String::from_utf8_lossy(data);
    let Ok(cmd) = crate::command::parse_line(text.trim()) else {
        return;
    };
    let blob = |b64: &str| {
        if let Ok(b) = kms::decode_b64("--ciphertext-blob", b64) {
            let _ = kms_blob::parse_blob(&b);
        }
    };
    match &cmd {
        StoreCommand::Kms(KmsCmd::Encrypt {
            encryption_context: c,
            ..
        })
        | StoreCommand::Kms(KmsCmd::GenerateDataKey {
            encryption_context: c,
            ..
        }) => context_checked(c),
        StoreCommand::Kms(KmsCmd::Decrypt {
            ciphertext_blob,
            encryption_context,
            ..
        }) => {
            blob(ciphertext_blob);
            context_checked(encryption_context);
        }
        StoreCommand::Kms(KmsCmd::ReEncrypt {
            ciphertext_blob,
            source_encryption_context,
            destination_encryption_context,
            ..
        }) => {
            blob(ciphertext_blob);
            context_checked(source_encryption_context);
            context_checked(destination_encryption_context);
        }
        StoreCommand::Key(KeyCmd::Update {
            allowed_operations, ..
        }) => {
            if let Ok(bits) = crate::keys::keystore::parse_ops(allowed_operations) {
                assert_eq!(
                    bits & !crate::keys::keystore::ops::ALL,
                    0,
                    "parsed operations are known bits"
                );
            }
        }
        _ => {}
    }
}

/// The master key of the KMS blob vectors (tests/kms_vectors.rs): 40..5f.
fn kms_vector_key() -> Key32 {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = 0x40 + i as u8;
    }
    Key32::from_bytes(k)
}

/// Parses `--encryption-context` values and, if they are accepted, checks the result.
fn context_checked(args: &[String]) {
    if let Ok(c) = kms::parse_context(args) {
        context_properties(&c);
    }
}

/// What holds of every context `parse_context` accepts: the documented limits; the text
/// form `k=v,...` parses back to the same context, in any order and split over any number of
/// arguments; and the canonical bytes of the AAD decode (per docs/FORMAT.md) to the same
/// pairs, sorted by key.
fn context_properties(c: &kms_blob::Context) {
    assert!(c.len() <= kms_blob::MAX_CONTEXT_PAIRS, "at most 64 pairs");
    for (k, v) in c {
        assert!(
            (1..=kms_blob::MAX_CONTEXT_KEY).contains(&k.len()),
            "a context key is 1-256 bytes"
        );
        assert!(
            v.len() <= kms_blob::MAX_CONTEXT_VALUE,
            "a context value is at most 1024 bytes"
        );
        assert!(!k.contains([',', '=']), "a context key holds no ',' or '='");
        assert!(!v.contains(','), "a context value holds no ','");
    }
    let pairs: Vec<String> = c.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let joined = kms::parse_context(&[pairs.join(",")]);
    assert!(
        matches!(&joined, Ok(c2) if c2 == c),
        "a context round-trips through its text form"
    );
    let reversed: Vec<String> = pairs.iter().rev().cloned().collect();
    let split = kms::parse_context(&reversed);
    assert!(
        matches!(&split, Ok(c2) if c2 == c),
        "a context does not depend on the order or grouping of its pairs"
    );
    let bytes = kms_blob::context_bytes(c);
    let mut at = 0;
    let u32_at = |b: &[u8], at: &mut usize| -> usize {
        let mut a = [0u8; 4];
        a.copy_from_slice(&b[*at..*at + 4]);
        *at += 4;
        u32::from_le_bytes(a) as usize
    };
    let count = u32_at(&bytes, &mut at);
    assert_eq!(count, c.len(), "context bytes start with the pair count");
    let mut decoded = Vec::with_capacity(count);
    for _ in 0..count {
        let kl = u32_at(&bytes, &mut at);
        let k = &bytes[at..at + kl];
        at += kl;
        let vl = u32_at(&bytes, &mut at);
        let v = &bytes[at..at + vl];
        at += vl;
        decoded.push((k, v));
    }
    assert_eq!(
        at,
        bytes.len(),
        "context bytes hold the pairs and nothing else"
    );
    assert!(
        decoded.windows(2).all(|w| w[0].0 < w[1].0),
        "context bytes are sorted by key, without duplicates"
    );
    assert!(
        decoded
            .iter()
            .zip(c)
            .all(|((k, v), (k2, v2))| *k == k2.as_bytes() && *v == v2.as_bytes()),
        "context bytes carry the context's pairs"
    );
}

/// A standalone KMS blob (`kms decrypt | re-encrypt --ciphertext-blob`), with an encryption
/// context from the input: byte 0 is the length n of a context string (bytes 1..1+n, lossy
/// UTF-8, as one `--encryption-context` value), the rest is the blob. A context that does not
/// parse is replaced by the empty one, so that every input reaches the blob parser. The key
/// is that of the golden vectors, so the seeds made of them open.
pub fn kms_blob(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (ctx_text, blob) = rest.split_at(usize::from(n).min(rest.len()));
    let ctx = kms::parse_context(&[String::from_utf8_lossy(ctx_text).into_owned()]);
    if let Ok(c) = &ctx {
        context_properties(c);
    }
    let ctx = ctx.unwrap_or_default();
    let kek = kms_vector_key();
    let header = kms_blob::parse_blob(blob);
    let opened = kms::open_blob(&kek, blob, &ctx);
    let Ok(header) = header else {
        assert!(opened.is_err(), "a blob that does not parse never opens");
        return;
    };
    let len = blob.len();
    let overhead = kms_blob::BLOB_HEADER_LEN + kms_blob::BLOB_TAG_LEN;
    assert!(
        (overhead + 1..=kms_blob::MAX_BLOB).contains(&len),
        "a parsed blob is 55 to 4150 bytes"
    );
    assert_eq!(
        header.encode()[..],
        blob[..kms_blob::BLOB_HEADER_LEN],
        "a parsed blob header encodes back to its bytes"
    );
    // Sealing under the parsed header gives a blob with that header, which opens (with the
    // same key and context only) to what was sealed.
    let plain = &blob[kms_blob::BLOB_HEADER_LEN..len - kms_blob::BLOB_TAG_LEN];
    let sealed = kms::seal_blob(&kek, &header, &ctx, plain);
    let Ok(sealed) = sealed else {
        panic!("a plaintext of 1 to 4096 bytes seals");
    };
    assert_eq!(sealed.len(), len, "a blob is its plaintext plus 54 bytes");
    assert!(
        matches!(kms_blob::parse_blob(&sealed), Ok(h) if h == header),
        "a sealed blob parses to its header"
    );
    let back = kms::open_blob(&kek, &sealed, &ctx);
    assert!(
        matches!(&back, Ok(p) if p.as_slice() == plain),
        "a sealed blob opens to its plaintext"
    );
    let mut other_ctx = ctx.clone();
    other_ctx.insert(String::new(), String::new());
    assert!(
        kms::open_blob(&kek, &sealed, &other_ctx).is_err(),
        "a blob does not open with another context"
    );
    if let Ok(p) = opened {
        // A blob that opens is exactly what sealing its plaintext under its header gives
        // (one blob per header, context and plaintext), and opens only under its key.
        assert_eq!(
            p.len(),
            len - overhead,
            "a blob opens to its plaintext length"
        );
        let again = kms::seal_blob(&kek, &header, &ctx, &p);
        assert!(
            matches!(&again, Ok(b) if b == blob),
            "a blob that opens re-seals to the same bytes"
        );
        assert!(
            kms::open_blob(&Key32::from_bytes([0x41; 32]), blob, &ctx).is_err(),
            "a blob opens only under its key"
        );
    }
}

/// The boot id the `journal` target treats as the current boot (journal seeds carry it).
pub const JOURNAL_FUZZ_BOOT: [u8; 16] = *b"fuzz-boot-id-016";

/// The write journal (`.envelopefs/journal`), read when a store is opened after a crash.
///
/// The input is parsed twice: as the journal file itself, and, if it is at least 40 bytes,
/// as a compact journal: its first 40 bytes (magic, slot count, slot size, boot id) followed
/// by the 4056 zero bytes that complete a journal's header, then the rest of the input as
/// the slots. Inputs are at most 4096 bytes (scripts/fuzz.sh), so only the compact form
/// reaches the slots; the parser accepts slots as small as 65 bytes.
pub fn journal(data: &[u8]) {
    journal_file(data);
    if data.len() >= 40 {
        let mut file = Vec::with_capacity(data.len() + 4056);
        file.extend_from_slice(&data[..40]);
        file.resize(4096, 0);
        file.extend_from_slice(&data[40..]);
        journal_file(&file);
    }
}

/// One journal file: never a panic, and every record returned is what the layout of
/// docs/FORMAT.md ("Write journal") says is there.
fn journal_file(bytes: &[u8]) {
    use crate::store::journal::{contents, parse_records};
    let parsed = parse_records(bytes);
    let Ok(records) = parsed else {
        assert!(
            contents(bytes, &JOURNAL_FUZZ_BOOT).is_err(),
            "a journal that does not parse is refused"
        );
        return;
    };
    let le = |at: usize, n: usize| -> u64 {
        bytes[at..at + n]
            .iter()
            .rev()
            .fold(0u64, |acc, &b| acc << 8 | u64::from(b))
    };
    // A file shorter than its 24-byte header, or whose header is zeros (never set up: the
    // layout is unknown, so nothing else is read), holds no record.
    if bytes.len() >= 24 && bytes[..24].iter().any(|&b| b != 0) {
        assert_eq!(&bytes[..8], b"EFSJRNL1", "a journal starts with its magic");
        let slots = le(8, 4);
        let slot_size = le(16, 8) as usize;
        assert!((1..=1024).contains(&slots), "1 to 1024 slots");
        assert!(slot_size > 64, "a slot holds its 64-byte header and data");
        // A journal that parses holds every slot its layout names (a cut one is refused),
        // and every slot that is not free is returned, in slot order.
        assert!(
            4096 + slots as usize * slot_size - (slot_size - 64) <= bytes.len(),
            "every slot header is in the file"
        );
        let active = (0..slots as usize)
            .map(|s| 4096 + s * slot_size)
            .filter(|&at| le(at, 4) != 0)
            .count();
        assert_eq!(records.len(), active, "every active slot is returned");
        assert!(
            records.windows(2).all(|w| w[0].slot < w[1].slot),
            "records come in slot order, once each"
        );
        for r in &records {
            assert!(u64::from(r.slot) < slots, "a record's slot exists");
            let at = 4096 + r.slot as usize * slot_size;
            assert!(r.state == 1 || r.state == 2, "a record is undo or cut");
            assert_eq!(u64::from(r.state), le(at, 4));
            assert!(
                r.saved.len() <= slot_size - 64,
                "a record's saved bytes fit in its slot"
            );
            assert_eq!(
                r.saved.len() as u64,
                le(at + 48, 8),
                "saved length as stored"
            );
            assert_eq!(r.saved, bytes[at + 64..at + 64 + r.saved.len()]);
            assert_eq!((r.dev, r.ino), (le(at + 8, 8), le(at + 16, 8)));
            assert_eq!(r.object_id[..], bytes[at + 24..at + 40]);
            assert_eq!(r.saved_off, le(at + 40, 8));
            assert_eq!(r.restore_len, le(at + 56, 8));
        }
    } else {
        assert!(
            records.is_empty(),
            "a short journal, or one never set up, holds no record"
        );
    }
    // Records are applied only in the boot that wrote them (bytes 24..40).
    let Ok(c) = contents(bytes, &JOURNAL_FUZZ_BOOT) else {
        panic!("a journal that parses is classified");
    };
    assert_eq!(c.records.len() + c.stale, records.len());
    if records.is_empty() || bytes[24..40] == JOURNAL_FUZZ_BOOT {
        assert_eq!(c.records, records, "records of this boot are applied");
    } else {
        assert!(
            c.records.is_empty(),
            "records of another boot are not applied"
        );
    }
}

/// A header backup file given to `headers import` (its JSON, and the paths in it, which
/// must never lead out of the store or into `.envelopefs`).
pub fn headers_backup(data: &[u8]) {
    if let Ok(b) = crate::ops::headers::Backup::parse(data) {
        if let Ok(again) = serde_json::to_vec(&b) {
            let back = crate::ops::headers::Backup::parse(&again);
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
            if let Some(p) = crate::ops::headers::safe_rel(h, n) {
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
