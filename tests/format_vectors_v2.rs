//! Golden bytes of on-disk format version 2 (encrypted names), and the vector files in
//! tests/vectors/v2/. The version 1 vectors stay in tests/format_vectors.rs, unchanged.
//!
//! If one of these tests fails, the format changed: a new format version is required; never
//! edit the expected bytes. They were cross-checked once against an independent
//! implementation (Python `cryptography`: HKDF-SHA256, AES-SIV, AES-256-GCM; `hashlib`:
//! SHA-256) written from docs/FORMAT.md "Encrypted names", not from this crate's code.
//!
//! Fixed inputs, as in version 1 (each byte one more than the last): store id 00..0f, bucket
//! id 10..1f (also the directory id of the bucket's top directory), key id 30..3f version 3,
//! KEK 40..5f, wrap nonce 80..8b, created 1700000000; and for version 2: name key d0..ef,
//! a second directory id 20..2f, target nonce 90..9f.

use envelopefs::format::context::name_key_context;
use envelopefs::format::hex;
use envelopefs::format::names::{
    classify, DirRecord, EntryKind, NameCipher, StoredName, StoredTarget,
};
use envelopefs::format::records::{BucketRecord, NameKeys, WrappedNameKey};
use envelopefs::format::{Id16, NAMES_FORMAT_VERSION};
use envelopefs::keys::crypto::Key32;
use envelopefs::keys::name_key;
use envelopefs::Error;
use std::path::Path;

const BUMP: &str = "format version bump required";

const SIV_KEY: &str = concat!(
    "b676310f23afa3cd7b3180e789381210678d4148c8fc214c771a9cfdc8a39345",
    "3494a13b2caebaf7aaecdded59599a62a99e03ff00385a465e5f21f32607b2c0",
);
const NAME_NOTES: &str = "SqQVzZ9wC_CwziDUVX5rKzbSw3CmH9u-Wf6lH_kQRJ4";
const NAME_NOTES_OTHER_DIR: &str = "RCfg_0LSDx8heN8xNJtKtESun5VlEjw9c2Il0e1_kic";
const NAME_NON_UTF8: &str = "S3I3_dNAu_mIzy5e1WkyQl-Xs1hEVAWmDA2P2BRvqcE";
const NAME_160: &str = concat!(
    "w5WyvKjnCcETyzIZwSrB8M-5qDgPn32amBVosjp2wfyM9DVC2PPwNMruW4zccReg",
    "YFv24EBWZ8Teej0NAA0zLgY2LsqkbXJFuTu7HWmyouUx5eaktugJZ7c-jeWAHCIB",
    "RrxO93drJ__c31lO4RuZYHTc8lvi519Uxv5kMIyMWA8k3-pyq4H_gfyt7L8YVpnZ",
    "VxYMg46K07OleTsz5NZv3DAQjiFR_k7b5T_fokAWDUI",
);
const NAME_161_ENTRY: &str = "~lJHLR8oaLLgonmOrl8YREULnP7G5rW_naRp6UnMRECow";
const NAME_161_FULL_ENTRY: &str = "~nJHLR8oaLLgonmOrl8YREULnP7G5rW_naRp6UnMRECow";
const NAME_161_FULL: &str = concat!(
    "15664b944e7d6d495d90c1218eea032b6e98513c97e467adf5a7cacc86a774d8",
    "c88e16504bc67e64c791b9a27ecd0b7ffed476bac36d5aa5118d7394447ca75c",
    "99fe6ac24fd230daec92a7d3a7ae76e6d9473c0f30e24cd3d4b48955351eb3aa",
    "ae14922645837792de3d47e47a4aa515c214365fd45acf3112f3ddb4d7fc958b",
    "7f9e9933e2a105eb32ad7e9ad24f005ef6e13508eab6649db0c38998b29cda7a",
    "03a621bd1edae14216a61b1770f035e17c26d8d8d84cc8f7c15c778143b4803e",
);
const TARGET: &str = concat!(
    "kJGSk5SVlpeYmZqbnJ2en337ZGIerEV8jph-uk7nUwemjbY7wa_4QOMBI_C9rwN0",
    "RxvkxEZTvSlH1_RFOMiiQQ",
);
const DIR_RECORD: &str = "454653490200202122232425262728292a2b2c2d2e2f";
const NAME_KEY_CONTEXT: &str = concat!(
    "656e76656c6f706566732e6e616d656b65792e7632000102030405060708090a",
    "0b0c0d0e0f101112131415161718191a1b1c1d1e1f01303132333435363738",
    "393a3b3c3d3e3f03000000",
);
const WRAPPED_NAME_KEY: &str = concat!(
    "fd8f6c14f6a1fc54b0b34af3ae7f4bfd181d2b31a98200f31667923f3df88f93",
    "f23880fe0805c9475094b1157592b37f",
);
const BUCKET_RECORD_V2_DEFAULT: &str = concat!(
    "454653420200101112131415161718191a1b1c1d1e1f0000f153650000000030",
    "3132333435363738393a3b3c3d3e3f03000000808182838485868788898a8bfd",
    "8f6c14f6a1fc54b0b34af3ae7f4bfd181d2b31a98200f31667923f3df88f93f2",
    "3880fe0805c9475094b1157592b37f00",
);
const BUCKET_RECORD_V2_ASSIGNED: &str = concat!(
    "454653420200101112131415161718191a1b1c1d1e1f01303132333435363738",
    "393a3b3c3d3e3f00f1536500000000303132333435363738393a3b3c3d3e3f03",
    "000000808182838485868788898a8bfd8f6c14f6a1fc54b0b34af3ae7f4bfd18",
    "1d2b31a98200f31667923f3df88f93f23880fe0805c9475094b1157592b37f00",
);

const CREATED_S: u64 = 1_700_000_000;

fn seq<const N: usize>(start: u8) -> [u8; N] {
    let mut a = [0u8; N];
    for (i, b) in a.iter_mut().enumerate() {
        *b = start.wrapping_add(i as u8);
    }
    a
}

const STORE_ID: Id16 = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

fn bucket_id() -> Id16 {
    seq(0x10)
}
fn other_dir() -> Id16 {
    seq(0x20)
}
fn key_id() -> Id16 {
    seq(0x30)
}
fn cipher() -> NameCipher {
    NameCipher::new(&seq::<32>(0xd0)).expect("cipher")
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0);
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn wrapped_name_key() -> WrappedNameKey {
    name_key::wrap(
        &Key32::from_bytes(seq(0x40)),
        seq(0x80),
        &STORE_ID,
        &bucket_id(),
        key_id(),
        3,
        &Key32::from_bytes(seq(0xd0)),
    )
    .expect("wrap")
}

fn short(stored: StoredName) -> String {
    match stored {
        StoredName::Short(s) => s,
        other => panic!("{BUMP}: a short form was expected, got {other:?}"),
    }
}

// ---------------------------------------------------------------- golden vectors

#[test]
fn the_siv_key_is_hkdf_of_the_name_key() {
    // Reached through the names it encrypts: AES-SIV under this 64-byte key with the RFC
    // 5297 test procedure gives NAME_NOTES (cross-checked in Python); here the HKDF output
    // itself is pinned through aws-lc-rs directly.
    use aws_lc_rs::hkdf::{KeyType, Salt, HKDF_SHA256};
    struct L;
    impl KeyType for L {
        fn len(&self) -> usize {
            64
        }
    }
    let prk = Salt::new(HKDF_SHA256, &[]).extract(&seq::<32>(0xd0));
    let info = [&b"envelopefs.names.aes-siv.v2"[..]];
    let mut out = [0u8; 64];
    prk.expand(&info, L)
        .expect("expand")
        .fill(&mut out)
        .expect("fill");
    assert_eq!(hex(&out), SIV_KEY, "{BUMP}: SIV key derivation");
}

#[test]
fn short_names() {
    let c = cipher();
    for (dir, name, want) in [
        (bucket_id(), &b"notes.txt"[..], NAME_NOTES),
        (other_dir(), b"notes.txt", NAME_NOTES_OTHER_DIR),
        (bucket_id(), &[0xff, 0xfe, 0x80, 0x41], NAME_NON_UTF8),
        (bucket_id(), &[b'n'; 160], NAME_160),
    ] {
        let got = short(c.encrypt_name(&dir, name).expect("encrypt"));
        assert_eq!(got, want, "{BUMP}: encrypted name of {name:?}");
        assert_eq!(
            c.decrypt_short_name(&dir, want.as_bytes())
                .expect("decrypt"),
            name,
            "{BUMP}: decrypting {want}"
        );
    }
    assert_eq!(NAME_160.len(), 235, "{BUMP}: the longest short form");
}

#[test]
fn long_name_at_161_bytes() {
    let c = cipher();
    let name = [b'l'; 161];
    let StoredName::Long {
        entry,
        full_entry,
        full,
    } = c.encrypt_name(&bucket_id(), &name).expect("encrypt")
    else {
        panic!("{BUMP}: 161 bytes take the long form");
    };
    assert_eq!(entry, NAME_161_ENTRY, "{BUMP}: long entry");
    assert_eq!(full_entry, NAME_161_FULL_ENTRY, "{BUMP}: long full entry");
    assert_eq!(hex(&full), NAME_161_FULL, "{BUMP}: long full encryption");
    assert_eq!(
        c.decrypt_long_name(
            &bucket_id(),
            NAME_161_ENTRY.as_bytes(),
            &unhex(NAME_161_FULL)
        )
        .expect("decrypt"),
        name
    );
}

#[test]
fn symlink_target() {
    let c = cipher();
    let StoredTarget::Short(t) = c
        .encrypt_target(&seq(0x90), b"../shared/report.pdf")
        .expect("encrypt")
    else {
        panic!("{BUMP}: a short target");
    };
    assert_eq!(t, TARGET, "{BUMP}: encrypted symlink target");
    assert_eq!(
        c.decrypt_short_target(TARGET.as_bytes()).expect("decrypt"),
        b"../shared/report.pdf"
    );
}

#[test]
fn directory_record() {
    let r = DirRecord::new(other_dir());
    assert_eq!(hex(&r.encode()), DIR_RECORD, "{BUMP}: directory record");
    assert_eq!(DirRecord::decode(&unhex(DIR_RECORD)).expect("decode"), r);
}

#[test]
fn name_key_context_and_wrap() {
    let ctx = name_key_context(&STORE_ID, &bucket_id(), &key_id(), 3);
    assert_eq!(hex(&ctx), NAME_KEY_CONTEXT, "{BUMP}: name-key context");
    assert_eq!(ctx.len(), 74, "{BUMP}: name-key context length");
    let w = wrapped_name_key();
    assert_eq!(
        hex(&w.wrapped),
        WRAPPED_NAME_KEY,
        "{BUMP}: wrapped name key"
    );
    let back = name_key::unwrap(&Key32::from_bytes(seq(0x40)), &STORE_ID, &bucket_id(), &w)
        .expect("unwrap");
    assert_eq!(back.expose(), &seq::<32>(0xd0));
}

#[test]
fn bucket_records_of_version_2() {
    let w = wrapped_name_key();
    for (kms, want, len) in [
        (None, BUCKET_RECORD_V2_DEFAULT, 112),
        (Some(key_id()), BUCKET_RECORD_V2_ASSIGNED, 128),
    ] {
        let r = BucketRecord::with_name_key(bucket_id(), kms, CREATED_S, w);
        let bytes = r.encode();
        assert_eq!(hex(&bytes), want, "{BUMP}: version 2 bucket record");
        assert_eq!(bytes.len(), len, "{BUMP}: version 2 bucket record length");
        assert_eq!(
            BucketRecord::decode_in(&bytes, NAMES_FORMAT_VERSION).expect("decode"),
            r
        );
        // A version 1 store does not read it.
        assert!(matches!(
            BucketRecord::decode(&bytes),
            Err(Error::UnsupportedVersion(_))
        ));
        assert!(matches!(
            BucketRecord::decode_in(&bytes, 1),
            Err(Error::UnsupportedVersion(_))
        ));
    }
    let mut r = BucketRecord::with_name_key(bucket_id(), None, CREATED_S, w);
    r.names = Some(NameKeys {
        current: w,
        previous: Some(w),
    });
    assert_eq!(r.encode().len(), 192, "{BUMP}: with a previous name key");
}

/// docs/FORMAT.md carries every golden vector of this file, byte for byte.
#[test]
fn format_md_carries_the_version_2_vectors() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/FORMAT.md"))
        .expect("docs/FORMAT.md");
    let flat: String = doc.chars().filter(|c| !c.is_whitespace()).collect();
    for (name, value) in [
        ("SIV_KEY", SIV_KEY),
        ("NAME_NOTES", NAME_NOTES),
        ("NAME_NOTES_OTHER_DIR", NAME_NOTES_OTHER_DIR),
        ("NAME_NON_UTF8", NAME_NON_UTF8),
        ("NAME_160", NAME_160),
        ("NAME_161_ENTRY", NAME_161_ENTRY),
        ("NAME_161_FULL_ENTRY", NAME_161_FULL_ENTRY),
        ("NAME_161_FULL", NAME_161_FULL),
        ("TARGET", TARGET),
        ("DIR_RECORD", DIR_RECORD),
        ("NAME_KEY_CONTEXT", NAME_KEY_CONTEXT),
        ("WRAPPED_NAME_KEY", WRAPPED_NAME_KEY),
        ("BUCKET_RECORD_V2_DEFAULT", BUCKET_RECORD_V2_DEFAULT),
        ("BUCKET_RECORD_V2_ASSIGNED", BUCKET_RECORD_V2_ASSIGNED),
    ] {
        assert!(
            flat.contains(value),
            "{BUMP}: docs/FORMAT.md does not carry vector {name} as the test has it"
        );
    }
}

// ---------------------------------------------------------------- negative vectors, one per defect

fn corrupt<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) {
    assert!(
        matches!(r, Err(Error::Corrupt(_))),
        "{what}: expected corrupt, got {r:?}"
    );
}

#[test]
fn a_tampered_name_is_an_error() {
    // NAME_NOTES with its 10th character changed.
    let mut t = NAME_NOTES.as_bytes().to_vec();
    t[10] = if t[10] == b'A' { b'B' } else { b'A' };
    corrupt(cipher().decrypt_short_name(&bucket_id(), &t), "tampered");
}

#[test]
fn a_truncated_name_is_an_error() {
    // NAME_NOTES cut to 42 characters, and to 22 (one block less: a valid length).
    for n in [42, 22] {
        corrupt(
            cipher().decrypt_short_name(&bucket_id(), &NAME_NOTES.as_bytes()[..n]),
            "truncated",
        );
    }
}

#[test]
fn a_name_from_another_directory_is_an_error() {
    // NAME_NOTES_OTHER_DIR (notes.txt in 20..2f) looked at in the bucket's top 10..1f.
    corrupt(
        cipher().decrypt_short_name(&bucket_id(), NAME_NOTES_OTHER_DIR.as_bytes()),
        "swapped directory",
    );
    corrupt(
        cipher().decrypt_long_name(
            &other_dir(),
            NAME_161_ENTRY.as_bytes(),
            &unhex(NAME_161_FULL),
        ),
        "long name, swapped directory",
    );
}

#[test]
fn a_name_under_another_key_is_an_error() {
    let other = NameCipher::new(&seq::<32>(0xd1)).expect("cipher");
    corrupt(
        other.decrypt_short_name(&bucket_id(), NAME_NOTES.as_bytes()),
        "wrong key",
    );
}

#[test]
fn a_long_name_with_a_damaged_full_entry_is_an_error() {
    let mut full = unhex(NAME_161_FULL);
    full[100] ^= 0x01;
    corrupt(
        cipher().decrypt_long_name(&bucket_id(), NAME_161_ENTRY.as_bytes(), &full),
        "damaged full entry",
    );
}

#[test]
fn a_long_name_with_a_truncated_full_entry_is_an_error() {
    let full = unhex(NAME_161_FULL);
    corrupt(
        cipher().decrypt_long_name(&bucket_id(), NAME_161_ENTRY.as_bytes(), &full[..176]),
        "truncated full entry",
    );
}

#[test]
fn a_long_entry_renamed_is_an_error() {
    // The entry's hash no longer names its full encryption.
    let renamed = NAME_161_ENTRY.replace('J', "K");
    corrupt(
        cipher().decrypt_long_name(&bucket_id(), renamed.as_bytes(), &unhex(NAME_161_FULL)),
        "renamed long entry",
    );
}

#[test]
fn a_tampered_target_is_an_error() {
    let mut t = TARGET.as_bytes().to_vec();
    t[30] = if t[30] == b'A' { b'B' } else { b'A' };
    corrupt(cipher().decrypt_short_target(&t), "tampered target");
    corrupt(
        cipher().decrypt_short_target(&TARGET.as_bytes()[..TARGET.len() - 1]),
        "truncated target",
    );
    // Its nonce changed: the nonce is associated data.
    let mut n = TARGET.as_bytes().to_vec();
    n[0] = b'A';
    corrupt(cipher().decrypt_short_target(&n), "target nonce");
}

#[test]
fn entries_envelopefs_does_not_write_are_foreign() {
    for e in [&b".DS_Store"[..], b"notes.txt", b"~x", b"a=", b"~lshort"] {
        assert_eq!(classify(e), EntryKind::Foreign, "{e:?}");
    }
    assert_eq!(classify(NAME_NOTES.as_bytes()), EntryKind::Short);
    assert_eq!(classify(NAME_161_ENTRY.as_bytes()), EntryKind::Long);
    assert_eq!(
        classify(NAME_161_FULL_ENTRY.as_bytes()),
        EntryKind::LongFull
    );
    assert_eq!(classify(b"~d"), EntryKind::DirRecord);
}

// ---------------------------------------------------------------- vector files

fn parse_vector(text: &str) -> (String, Vec<u8>) {
    let mut lines = text.lines();
    let first = lines.next().expect("first line");
    let word = first
        .strip_prefix("expect:")
        .expect("`expect: ...`")
        .trim()
        .to_string();
    let digits: String = lines
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    (word, unhex(&digits))
}

fn kind(r: Result<(), Error>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(Error::Corrupt(_)) => "corrupt".into(),
        Err(Error::UnsupportedVersion(_)) => "unsupported-version".into(),
        Err(e) => panic!("an error of no expected kind: {e:?}"),
    }
}

#[test]
fn vector_files_of_version_2_decode_as_expected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/v2");
    let mut count = 0;
    for e in std::fs::read_dir(&dir).expect("tests/vectors/v2") {
        let path = e.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_string();
        let (expect, bytes) = parse_vector(&std::fs::read_to_string(&path).expect("read"));
        assert!(
            ["ok", "corrupt", "unsupported-version"].contains(&expect.as_str()),
            "{name}: unknown expectation {expect}"
        );
        let got = if name.starts_with("bucket_record_") {
            kind(
                BucketRecord::decode_in(&bytes, NAMES_FORMAT_VERSION).map(|r| {
                    assert_eq!(r.encode(), bytes, "{BUMP}: {name} re-encodes to itself");
                }),
            )
        } else if name.starts_with("dir_record_") {
            kind(DirRecord::decode(&bytes).map(|r| {
                assert_eq!(r.encode(), bytes, "{BUMP}: {name} re-encodes to itself");
            }))
        } else {
            panic!("no decoder for vector file {name}");
        };
        assert_eq!(got, expect, "{BUMP}: vector {name}");
        count += 1;
    }
    assert!(count >= 16, "{BUMP}: vector files went missing ({count})");
    for (file, value) in [
        ("bucket_record_ok.hex", BUCKET_RECORD_V2_ASSIGNED),
        ("bucket_record_ok_default_key.hex", BUCKET_RECORD_V2_DEFAULT),
        ("dir_record_ok.hex", DIR_RECORD),
    ] {
        let (_, bytes) = parse_vector(&std::fs::read_to_string(dir.join(file)).expect("read"));
        assert_eq!(
            hex(&bytes),
            value,
            "{BUMP}: {file} differs from the golden bytes"
        );
    }
}
