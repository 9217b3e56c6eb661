//! Golden bytes of the standalone envelope blob (`kms encrypt`), blob format version 1, and
//! its negative vectors. docs/FORMAT.md ("KMS ciphertext blob") specifies the layout.
//!
//! The expected bytes were computed once with an independent implementation (Python
//! `cryptography` AES-GCM, from the layout in docs/FORMAT.md, not from this crate's code).
//! If one of these tests fails, the blob format changed: bump the blob version and keep a
//! reader for version 1, never edit the expected bytes.
//!
//! Fixed inputs (as in tests/format_vectors.rs): key id 30..3f, master key 40..5f, nonce
//! 80..8b; key version 3; plaintext "attack at dawn"; context purpose=test, bucket=photos.
#![allow(clippy::unwrap_used)]

use envelopefs::format::kms_blob::{
    context_bytes, parse_blob, BlobHeader, Context, BLOB_HEADER_LEN, MAX_BLOB,
};
use envelopefs::keys::crypto::Key32;
use envelopefs::ops::kms::{open_blob, parse_context, seal_blob};
use envelopefs::Error;
use std::path::Path;

const BUMP: &str = "blob format version bump required";

const CONTEXT_BYTES: &str = concat!(
    "02000000060000006275636b65740600000070686f746f7307000000707572706f",
    "73650400000074657374",
);
const BLOB: &str = concat!(
    "45464b420100303132333435363738393a3b3c3d3e3f03000000808182838485",
    "868788898a8b4c2acaa6411f0ae21c4af44905cc3fce959198a877d3e6e4accc",
    "0decc645",
);
const BLOB_EMPTY_CONTEXT: &str = concat!(
    "45464b420100303132333435363738393a3b3c3d3e3f03000000808182838485",
    "868788898a8b4c2acaa6411f0ae21c4af44905cc6f18d74bfbee78404bd0e938",
    "13789980",
);
const PLAINTEXT: &[u8] = b"attack at dawn";

fn seq<const N: usize>(start: u8) -> [u8; N] {
    let mut a = [0u8; N];
    for (i, b) in a.iter_mut().enumerate() {
        *b = start.wrapping_add(i as u8);
    }
    a
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn kek() -> Key32 {
    Key32::from_bytes(seq(0x40))
}

fn header() -> BlobHeader {
    BlobHeader {
        key_id: seq(0x30),
        key_version: 3,
        nonce: seq(0x80),
    }
}

fn context() -> Context {
    parse_context(&["purpose=test,bucket=photos".to_string()]).expect("context")
}

#[test]
fn context_encoding_is_sorted_and_length_prefixed() {
    assert_eq!(hex(&context_bytes(&context())), CONTEXT_BYTES, "{BUMP}");
    // The order given does not matter; the bytes are canonical.
    let other = parse_context(&["bucket=photos".into(), "purpose=test".into()]).unwrap();
    assert_eq!(context_bytes(&other), context_bytes(&context()));
    assert_eq!(hex(&context_bytes(&Context::new())), "00000000");
}

#[test]
fn golden_blob_seals_and_opens() {
    let blob = seal_blob(&kek(), &header(), &context(), PLAINTEXT).unwrap();
    assert_eq!(hex(&blob), BLOB, "{BUMP}: blob with context");
    assert_eq!(blob.len(), BLOB_HEADER_LEN + PLAINTEXT.len() + 16);
    let empty = seal_blob(&kek(), &header(), &Context::new(), PLAINTEXT).unwrap();
    assert_eq!(
        hex(&empty),
        BLOB_EMPTY_CONTEXT,
        "{BUMP}: blob, empty context"
    );
    assert_eq!(parse_blob(&unhex(BLOB)).unwrap(), header());
    assert_eq!(
        open_blob(&kek(), &unhex(BLOB), &context())
            .unwrap()
            .as_slice(),
        PLAINTEXT
    );
    assert_eq!(
        open_blob(&kek(), &unhex(BLOB_EMPTY_CONTEXT), &Context::new())
            .unwrap()
            .as_slice(),
        PLAINTEXT
    );
}

#[track_caller]
fn einval(r: Result<impl std::fmt::Debug, Error>, needle: &str, what: &str) {
    match r {
        Ok(v) => panic!("{what}: opened ({v:?}) but must fail"),
        Err(e) => {
            assert_eq!(e.errno(), libc::EINVAL, "{what}: {e}");
            let msg = e.to_string();
            assert!(
                msg.contains(needle),
                "{what}: message {msg:?} lacks {needle:?}"
            );
        }
    }
}

#[test]
fn negative_vectors_are_clear_errors() {
    let good = unhex(BLOB);
    // A flipped bit anywhere after the magic and version: header (key id, key version,
    // nonce), ciphertext or tag. Key id and version are in the AAD, so even the header is
    // authenticated.
    for i in 6..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        einval(
            open_blob(&kek(), &bad, &context()),
            "does not decrypt",
            &format!("bit flipped in byte {i}"),
        );
    }
    // Wrong contexts: none, a changed value, an extra pair, a missing pair.
    for c in [
        "",
        "purpose=test,bucket=photoz",
        "purpose=test,bucket=photos,x=y",
        "purpose=test",
    ] {
        let ctx = parse_context(&[c.to_string()]).unwrap();
        einval(
            open_blob(&kek(), &good, &ctx),
            "with this encryption context",
            &format!("context {c:?}"),
        );
    }
    // The wrong master key.
    einval(
        open_blob(&Key32::from_bytes(seq(0x41)), &good, &context()),
        "does not decrypt",
        "wrong key",
    );
    // Truncated: inside the header, right after it, without the whole tag.
    for len in [
        0,
        5,
        20,
        BLOB_HEADER_LEN,
        BLOB_HEADER_LEN + 16,
        good.len() - 1,
    ] {
        let r = open_blob(&kek(), &good[..len], &context());
        let e = r.expect_err("truncated blob");
        assert_eq!(e.errno(), libc::EINVAL, "truncated to {len}: {e}");
    }
    einval(
        open_blob(&kek(), &good[..BLOB_HEADER_LEN + 16], &context()),
        "truncated",
        "header and tag only",
    );
    // Too long.
    let mut long = good.clone();
    long.resize(MAX_BLOB + 1, 0);
    einval(open_blob(&kek(), &long, &context()), "bytes", "too long");
    // Wrong version byte: a clear "not supported", not an authentication failure.
    let mut v2 = good.clone();
    v2[4] = 2;
    einval(
        open_blob(&kek(), &v2, &context()),
        "format version 2 is not supported",
        "version 2",
    );
    // Wrong magic.
    let mut magic = good.clone();
    magic[0] = b'X';
    einval(open_blob(&kek(), &magic, &context()), "magic", "bad magic");
}

/// docs/FORMAT.md carries the golden blob and context bytes.
#[test]
fn format_md_carries_the_blob_vectors() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/FORMAT.md"))
        .expect("docs/FORMAT.md");
    let flat: String = doc.chars().filter(|c| !c.is_whitespace()).collect();
    for (name, value) in [
        ("CONTEXT_BYTES", CONTEXT_BYTES),
        ("BLOB", BLOB),
        ("BLOB_EMPTY_CONTEXT", BLOB_EMPTY_CONTEXT),
    ] {
        assert!(
            flat.contains(value),
            "{BUMP}: docs/FORMAT.md does not carry vector {name} as the test has it"
        );
    }
}
