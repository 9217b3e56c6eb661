//! Golden bytes of on-disk format version 1, and the vector files in tests/vectors/v1/.
//!
//! Fixed keys, nonces and ids go in; the exact bytes docs/FORMAT.md specifies must come out.
//! If one of these tests fails, the format changed: bump the format version and keep a
//! reader for version 1 (whose vectors stay here), never edit the expected bytes.
//!
//! The expected values were cross-checked once against an independent implementation
//! (Python `cryptography`: AES-256-GCM, Argon2id; `hashlib`: SHA-256) built from the layout
//! in docs/FORMAT.md, not from this crate's code.
//!
//! Fixed inputs: store id 00..0f, bucket id 10..1f, object id 20..2f, key id 30..3f,
//! master key (KEK) 40..5f, DEK 60..7f, wrap nonce 80..8b, chunk nonce 90..9b,
//! customer key a0..bf, keystore sealing key c0..df, keystore nonce e0..eb, salt f0..ff
//! (each byte one more than the last).

use envelopefs::format::chunk::{chunk_aad, parse_preamble, preamble, Geometry};
use envelopefs::format::config::StoreConfig;
use envelopefs::format::context::dek_context;
use envelopefs::format::records::{
    BucketRecord, KdfParams, KeyVersionRecord, KeystoreBody, KeystoreFile, KeystorePrefix,
    MasterKeyRecord, ObjectHeader, VersionState, Wrapping, HEADER_MAGIC, KEYSTORE_MAGIC,
};
use envelopefs::format::{hex, Id16};
use envelopefs::keys::crypto::{self, ChunkCipher, Key32};
use envelopefs::keys::keystore::{KeyStore, Secret};
use envelopefs::Error;
use std::path::Path;

const BUMP: &str = "format version bump required";

const DEK_CONTEXT_MASTER: &str = concat!(
    "656e76656c6f706566732e64656b2e7631000102030405060708090a0b0c0d0e",
    "0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e",
    "2f15cd853dfe9c971701303132333435363738393a3b3c3d3e3f03000000",
);
const DEK_CONTEXT_CUSTOMER: &str = concat!(
    "656e76656c6f706566732e64656b2e7631000102030405060708090a0b0c0d0e",
    "0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e",
    "2f15cd853dfe9c971702578d229d84fdfcc7e147b2f75b45e36af2a63ad52968",
    "6ca00f4578462cfd134e",
);
const CUSTOMER_FINGERPRINT: &str =
    "578d229d84fdfcc7e147b2f75b45e36af2a63ad529686ca00f4578462cfd134e";
const WRAPPED_DEK_MASTER: &str = concat!(
    "4d3fdca446114ce40003fa431ecffb4d888dbba13912906386f702afad681f03",
    "872e56a09c88194fa324842da3647dfc",
);
const WRAPPED_DEK_CUSTOMER: &str = concat!(
    "07b6a3612c48c37a5c376d84e6734fdc1119a2de5937a8c893f396894e74ae57",
    "0291f48fa891b8a65e274fd762104b1e",
);
const HEADER_MASTER: &str = concat!(
    "45465348010000400000202122232425262728292a2b2c2d2e2f15cd853dfe9c",
    "971700000000303132333435363738393a3b3c3d3e3f03000000808182838485",
    "868788898a8b4d3fdca446114ce40003fa431ecffb4d888dbba13912906386f7",
    "02afad681f03872e56a09c88194fa324842da3647dfc",
);
const HEADER_CUSTOMER: &str = concat!(
    "45465348010000400000202122232425262728292a2b2c2d2e2f15cd853dfe9c",
    "971701000000578d229d84fdfcc7e147b2f75b45e36af2a63ad529686ca00f45",
    "78462cfd134e808182838485868788898a8b07b6a3612c48c37a5c376d84e673",
    "4fdc1119a2de5937a8c893f396894e74ae570291f48fa891b8a65e274fd76210",
    "4b1e",
);
const BUCKET_RECORD_ASSIGNED: &str = concat!(
    "454653420100101112131415161718191a1b1c1d1e1f01303132333435363738",
    "393a3b3c3d3e3f00f1536500000000",
);
const BUCKET_RECORD_DEFAULT: &str =
    "454653420100101112131415161718191a1b1c1d1e1f0000f1536500000000";
const CHUNK_AAD_2_FINAL: &str = "202122232425262728292a2b2c2d2e2f020000000000000001";
const CHUNK_AAD_0: &str = "202122232425262728292a2b2c2d2e2f000000000000000000";
const CHUNK_2_FINAL: &str = concat!(
    "909192939495969798999a9bc62417d3a832ce08a231564366be6c67f56d3b5e",
    "1740d17292765afa6dd83d0a4ff8a79e51ad9a0afd9c1265",
);
const CHUNK_EMPTY_FINAL: &str = "909192939495969798999a9b0c9bc867b9df6efbd207d02d6e2ea832";
const OBJECT_HELLO: &str = concat!(
    "4546534401000000202122232425262728292a2b2c2d2e2f9091929394959697",
    "98999a9bcb2f0ddaab541621446d468bde4fb5e5bedbd4709a",
);
const PREAMBLE: &str = "4546534401000000202122232425262728292a2b2c2d2e2f";
const ARGON2ID_KEY: &str = "ad61b4a05a44f75038273e2d8801033a27ca0bca062b3669e04d392638c91341";
const KEYSTORE_PREFIX_ARGON2ID: &str = concat!(
    "4546534b0100000102030405060708090a0b0c0d0e0f00000000000001000300",
    "000001000000f0f1f2f3f4f5f6f7f8f9fafbfcfdfeffe0e1e2e3e4e5e6e7e8e9",
    "eaeb",
);
const KEYSTORE_PREFIX_RAW_KEY: &str = concat!(
    "4546534b0100000102030405060708090a0b0c0d0e0f01000000e0e1e2e3e4e5",
    "e6e7e8e9eaeb",
);
const KEYSTORE_BODY: &str = concat!(
    "00400000303132333435363738393a3b3c3d3e3f010000000000000030313233",
    "3435363738393a3b3c3d3e3f01070000000000000064656661756c7400f15365",
    "000000000f00000001000000000000000100000000f153650000000000000000",
    "00404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e",
    "5f",
);
const KEYSTORE_FILE: &str = concat!(
    "4546534b0100000102030405060708090a0b0c0d0e0f01000000e0e1e2e3e4e5",
    "e6e7e8e9eaebae359e33789b15557c3724bbfac7755d2ec990bbaff6265d07db",
    "e9bf5cf20fb7cf7d3cb07d0ccd744e607b17bbbf4cd46441e181fa2eb7c126fb",
    "46d45189db420b257cef6d718052173268178f6ff64f8cdf9f03ed88c26e63ef",
    "e9964f7c6c6aa3b7ff0ee9f6581bd75113d75d57703ab80685471bb7bd331dac",
    "888851c5c6ae5e4f6b5777e7a1a0df23819ef14bbc7447",
);

const CREATED_NS: u64 = 1_700_000_000_123_456_789;
const CREATED_S: u64 = 1_700_000_000;
const PASSPHRASE: &[u8] = b"correct horse battery staple";

fn seq<const N: usize>(start: u8) -> [u8; N] {
    let mut a = [0u8; N];
    for (i, b) in a.iter_mut().enumerate() {
        *b = start.wrapping_add(i as u8);
    }
    a
}

const STORE_ID: Id16 = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
];
fn bucket_id() -> Id16 {
    seq(0x10)
}
fn object_id() -> Id16 {
    seq(0x20)
}
fn key_id() -> Id16 {
    seq(0x30)
}
fn kek() -> Key32 {
    Key32::from_bytes(seq(0x40))
}
fn dek() -> Key32 {
    Key32::from_bytes(seq(0x60))
}
fn wrap_nonce() -> [u8; 12] {
    seq(0x80)
}
fn chunk_nonce() -> [u8; 12] {
    seq(0x90)
}
fn customer_key() -> Key32 {
    Key32::from_bytes(seq(0xa0))
}
fn sealing_key() -> Key32 {
    Key32::from_bytes(seq(0xc0))
}
fn keystore_nonce() -> [u8; 12] {
    seq(0xe0)
}
fn salt() -> [u8; 16] {
    seq(0xf0)
}

/// Hex (whitespace ignored) to bytes.
fn unhex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len() % 2 == 0, "odd number of hex digits");
    digits
        .chunks(2)
        .map(|p| {
            let t = std::str::from_utf8(p).expect("ascii");
            u8::from_str_radix(t, 16).unwrap_or_else(|_| panic!("bad hex {t:?}"))
        })
        .collect()
}

fn master_wrapping() -> Wrapping {
    Wrapping::Master {
        key_id: key_id(),
        version: 3,
    }
}

fn customer_wrapping() -> Wrapping {
    Wrapping::Customer {
        fingerprint: crypto::customer_fingerprint(&customer_key()),
    }
}

fn header(wrapping: Wrapping, kek: &Key32) -> ObjectHeader {
    let ctx = dek_context(&STORE_ID, &bucket_id(), &object_id(), CREATED_NS, &wrapping);
    ObjectHeader {
        magic: HEADER_MAGIC,
        version: 1,
        chunk_size: 16384,
        object_id: object_id(),
        created_ns: CREATED_NS,
        wrapping,
        wrap_nonce: wrap_nonce(),
        wrapped_dek: crypto::wrap_dek(kek, &wrap_nonce(), &ctx, &dek()).expect("wrap"),
    }
}

fn keystore_prefix(kdf: KdfParams) -> KeystorePrefix {
    KeystorePrefix {
        magic: KEYSTORE_MAGIC,
        version: 1,
        store_id: STORE_ID,
        kdf,
        nonce: keystore_nonce(),
    }
}

fn keystore_body() -> KeystoreBody {
    KeystoreBody {
        chunk_size: 16384,
        default_key: key_id(),
        keys: vec![MasterKeyRecord {
            id: key_id(),
            alias: Some("default".into()),
            created_s: CREATED_S,
            allowed_ops: 15,
            versions: vec![KeyVersionRecord {
                version: 1,
                created_s: CREATED_S,
                state: VersionState::Enabled,
                deletion_s: None,
                material: *kek().expose(),
            }],
        }],
    }
}

// ---------------------------------------------------------------- golden bytes

#[test]
fn object_header_master_wrapping() {
    let h = header(master_wrapping(), &kek());
    let bytes = h.encode();
    assert_eq!(hex(&bytes), HEADER_MASTER, "{BUMP}: object header (master)");
    assert_eq!(bytes.len(), 118, "{BUMP}: master header length");
    assert_eq!(
        ObjectHeader::decode(&unhex(HEADER_MASTER)).expect("decode"),
        h,
        "{BUMP}: decoding the golden master header"
    );
    // Field offsets of docs/FORMAT.md.
    assert_eq!(&bytes[0..4], b"EFSH", "{BUMP}: magic at 0");
    assert_eq!(&bytes[4..6], &[1, 0], "{BUMP}: version at 4");
    assert_eq!(
        &bytes[6..10],
        &16384u32.to_le_bytes(),
        "{BUMP}: chunk size at 6"
    );
    assert_eq!(&bytes[10..26], &object_id(), "{BUMP}: object id at 10");
    assert_eq!(
        &bytes[26..34],
        &CREATED_NS.to_le_bytes(),
        "{BUMP}: created at 26"
    );
    assert_eq!(&bytes[34..38], &[0, 0, 0, 0], "{BUMP}: wrapping tag at 34");
    assert_eq!(&bytes[38..54], &key_id(), "{BUMP}: key id at 38");
    assert_eq!(
        &bytes[54..58],
        &3u32.to_le_bytes(),
        "{BUMP}: key version at 54"
    );
    assert_eq!(&bytes[58..70], &wrap_nonce(), "{BUMP}: wrap nonce at 58");
    assert_eq!(
        hex(&bytes[70..118]),
        WRAPPED_DEK_MASTER,
        "{BUMP}: wrapped DEK at 70"
    );
}

#[test]
fn object_header_customer_wrapping() {
    let h = header(customer_wrapping(), &customer_key());
    let bytes = h.encode();
    assert_eq!(
        hex(&bytes),
        HEADER_CUSTOMER,
        "{BUMP}: object header (customer)"
    );
    assert_eq!(bytes.len(), 130, "{BUMP}: customer header length");
    assert_eq!(&bytes[34..38], &[1, 0, 0, 0], "{BUMP}: wrapping tag at 34");
    assert_eq!(
        hex(&bytes[38..70]),
        CUSTOMER_FINGERPRINT,
        "{BUMP}: fingerprint at 38"
    );
    assert_eq!(&bytes[70..82], &wrap_nonce(), "{BUMP}: wrap nonce at 70");
    assert_eq!(
        hex(&bytes[82..130]),
        WRAPPED_DEK_CUSTOMER,
        "{BUMP}: wrapped DEK at 82"
    );
    assert_eq!(
        ObjectHeader::decode(&unhex(HEADER_CUSTOMER)).expect("decode"),
        h,
        "{BUMP}: decoding the golden customer header"
    );
}

#[test]
fn bucket_records() {
    let assigned = BucketRecord::new(bucket_id(), Some(key_id()), CREATED_S);
    let bytes = assigned.encode();
    assert_eq!(
        hex(&bytes),
        BUCKET_RECORD_ASSIGNED,
        "{BUMP}: bucket record (assigned key)"
    );
    assert_eq!(bytes.len(), 47, "{BUMP}: bucket record length with a key");
    assert_eq!(bytes[22], 1, "{BUMP}: Option tag at 22");
    assert_eq!(
        &bytes[39..47],
        &CREATED_S.to_le_bytes(),
        "{BUMP}: created at 39"
    );
    let default = BucketRecord::new(bucket_id(), None, CREATED_S);
    let bytes = default.encode();
    assert_eq!(
        hex(&bytes),
        BUCKET_RECORD_DEFAULT,
        "{BUMP}: bucket record (default key)"
    );
    assert_eq!(
        bytes.len(),
        31,
        "{BUMP}: bucket record length without a key"
    );
    assert_eq!(
        BucketRecord::decode(&unhex(BUCKET_RECORD_ASSIGNED)).expect("decode"),
        assigned,
        "{BUMP}: decoding the golden bucket record"
    );
    assert_eq!(
        BucketRecord::decode(&unhex(BUCKET_RECORD_DEFAULT)).expect("decode"),
        default,
        "{BUMP}: decoding the golden bucket record"
    );
}

#[test]
fn dek_wrap_encryption_context() {
    let m = dek_context(
        &STORE_ID,
        &bucket_id(),
        &object_id(),
        CREATED_NS,
        &master_wrapping(),
    );
    assert_eq!(
        hex(&m),
        DEK_CONTEXT_MASTER,
        "{BUMP}: DEK-wrap context (master)"
    );
    assert_eq!(m.len(), 17 + 56 + 21, "{BUMP}: master context length");
    let c = dek_context(
        &STORE_ID,
        &bucket_id(),
        &object_id(),
        CREATED_NS,
        &customer_wrapping(),
    );
    assert_eq!(
        hex(&c),
        DEK_CONTEXT_CUSTOMER,
        "{BUMP}: DEK-wrap context (customer)"
    );
    assert_eq!(c.len(), 17 + 56 + 33, "{BUMP}: customer context length");
}

#[test]
fn wrapped_dek_and_customer_fingerprint() {
    assert_eq!(
        hex(&crypto::customer_fingerprint(&customer_key())),
        CUSTOMER_FINGERPRINT,
        "{BUMP}: customer-key fingerprint"
    );
    let ctx = unhex(DEK_CONTEXT_MASTER);
    let w = crypto::wrap_dek(&kek(), &wrap_nonce(), &ctx, &dek()).expect("wrap");
    assert_eq!(hex(&w), WRAPPED_DEK_MASTER, "{BUMP}: wrapped DEK (master)");
    let back = crypto::unwrap_dek(&kek(), &wrap_nonce(), &ctx, &w).expect("unwrap");
    assert_eq!(
        back.expose(),
        dek().expose(),
        "{BUMP}: unwrapping the golden DEK"
    );
    let other_ctx = unhex(DEK_CONTEXT_CUSTOMER);
    assert!(
        crypto::unwrap_dek(&kek(), &wrap_nonce(), &other_ctx, &w).is_none(),
        "{BUMP}: the context must bind the wrap"
    );
    let ctx = unhex(DEK_CONTEXT_CUSTOMER);
    let w = crypto::wrap_dek(&customer_key(), &wrap_nonce(), &ctx, &dek()).expect("wrap");
    assert_eq!(
        hex(&w),
        WRAPPED_DEK_CUSTOMER,
        "{BUMP}: wrapped DEK (customer)"
    );
}

#[test]
fn chunk_aad_and_encrypted_chunks() {
    assert_eq!(
        hex(&chunk_aad(&object_id(), 2, true)),
        CHUNK_AAD_2_FINAL,
        "{BUMP}: chunk AAD (index 2, final)"
    );
    assert_eq!(
        hex(&chunk_aad(&object_id(), 0, false)),
        CHUNK_AAD_0,
        "{BUMP}: chunk AAD (index 0, not final)"
    );
    let c = ChunkCipher::new(&dek()).expect("cipher");
    let mut pt = b"envelopefs chunk test vector".to_vec();
    let tag = c
        .encrypt(&chunk_nonce(), &chunk_aad(&object_id(), 2, true), &mut pt)
        .expect("encrypt");
    let stored = [chunk_nonce().as_slice(), &pt, &tag].concat();
    assert_eq!(
        hex(&stored),
        CHUNK_2_FINAL,
        "{BUMP}: encrypted chunk (nonce|ct|tag)"
    );
    let mut ct = pt.clone();
    assert!(
        c.decrypt(
            &chunk_nonce(),
            &chunk_aad(&object_id(), 2, true),
            &mut ct,
            &tag
        ),
        "{BUMP}: decrypting the golden chunk"
    );
    assert_eq!(
        ct, b"envelopefs chunk test vector",
        "{BUMP}: chunk plaintext"
    );
    let mut ct = pt.clone();
    assert!(
        !c.decrypt(
            &chunk_nonce(),
            &chunk_aad(&object_id(), 2, false),
            &mut ct,
            &tag
        ),
        "{BUMP}: the final flag must be authenticated"
    );
    let tag = c
        .encrypt(&chunk_nonce(), &chunk_aad(&object_id(), 0, true), &mut [])
        .expect("encrypt");
    let stored = [chunk_nonce().as_slice(), &tag].concat();
    assert_eq!(
        hex(&stored),
        CHUNK_EMPTY_FINAL,
        "{BUMP}: empty final chunk (nonce|tag)"
    );
}

#[test]
fn data_preamble_and_a_whole_backing_file() {
    assert_eq!(
        hex(&preamble(&object_id())),
        PREAMBLE,
        "{BUMP}: data preamble"
    );
    assert_eq!(
        parse_preamble(&unhex(PREAMBLE)),
        Ok(object_id()),
        "{BUMP}: parsing the golden preamble"
    );
    // "hello" in an object of the golden header: preamble | nonce | ct | tag.
    let c = ChunkCipher::new(&dek()).expect("cipher");
    let mut pt = b"hello".to_vec();
    let tag = c
        .encrypt(&chunk_nonce(), &chunk_aad(&object_id(), 0, true), &mut pt)
        .expect("encrypt");
    let file = [preamble(&object_id()).as_slice(), &chunk_nonce(), &pt, &tag].concat();
    assert_eq!(
        hex(&file),
        OBJECT_HELLO,
        "{BUMP}: backing file of a 5-byte object"
    );
    let g = Geometry::new(16384);
    assert_eq!(
        g.plain_len(file.len() as u64),
        Some(5),
        "{BUMP}: size from backing size"
    );
    // And the golden header opens it.
    let h = ObjectHeader::decode(&unhex(HEADER_MASTER)).expect("decode");
    let ctx = dek_context(
        &STORE_ID,
        &bucket_id(),
        &object_id(),
        h.created_ns,
        &h.wrapping,
    );
    let d = crypto::unwrap_dek(&kek(), &h.wrap_nonce, &ctx, &h.wrapped_dek).expect("unwrap");
    let bytes = unhex(OBJECT_HELLO);
    let (nonce, rest) = bytes[24..].split_at(12);
    let (ct, tag) = rest.split_at(rest.len() - 16);
    let mut buf = ct.to_vec();
    assert!(
        ChunkCipher::new(&d).expect("cipher").decrypt(
            nonce,
            &chunk_aad(&object_id(), 0, true),
            &mut buf,
            tag
        ),
        "{BUMP}: the golden object decrypts under the golden header"
    );
    assert_eq!(buf, b"hello", "{BUMP}: golden object plaintext");
}

#[test]
fn worked_examples_of_the_size_formula() {
    let g = Geometry::new(16384);
    for (plain, backing) in [
        (0u64, 52u64),
        (1, 53),
        (16383, 16435),
        (16384, 16464),
        (16385, 16465),
        (32768, 32876),
    ] {
        assert_eq!(
            g.backing_len(plain),
            backing,
            "{BUMP}: backing size of {plain} bytes"
        );
        assert_eq!(
            g.plain_len(backing),
            Some(plain),
            "{BUMP}: plaintext size of {backing}"
        );
    }
    for invalid in [0u64, 24, 51, 16436, 16463] {
        assert_eq!(
            g.plain_len(invalid),
            None,
            "{BUMP}: {invalid} is no valid backing size"
        );
    }
}

#[test]
fn argon2id_sealing_key() {
    let kdf = KdfParams::Argon2id {
        m_cost_kib: 256,
        t_cost: 2,
        p_cost: 1,
        salt: salt(),
    };
    let k = crypto::derive_sealing_key(&kdf, PASSPHRASE).expect("argon2id");
    assert_eq!(
        hex(k.expose()),
        ARGON2ID_KEY,
        "{BUMP}: Argon2id (m=256 KiB, t=2, p=1)"
    );
}

#[test]
fn keystore_prefixes() {
    let p = keystore_prefix(KdfParams::Argon2id {
        m_cost_kib: 65536,
        t_cost: 3,
        p_cost: 1,
        salt: salt(),
    });
    let bytes = KeystoreFile::prefix_bytes(&p);
    assert_eq!(
        hex(&bytes),
        KEYSTORE_PREFIX_ARGON2ID,
        "{BUMP}: keystore prefix (Argon2id)"
    );
    assert_eq!(bytes.len(), 66, "{BUMP}: Argon2id prefix length");
    let p = keystore_prefix(KdfParams::RawKey);
    let bytes = KeystoreFile::prefix_bytes(&p);
    assert_eq!(
        hex(&bytes),
        KEYSTORE_PREFIX_RAW_KEY,
        "{BUMP}: keystore prefix (raw key)"
    );
    assert_eq!(bytes.len(), 38, "{BUMP}: raw-key prefix length");
}

#[test]
fn keystore_body_and_whole_file() {
    let body = keystore_body().encode().expect("encode body");
    assert_eq!(hex(&body), KEYSTORE_BODY, "{BUMP}: keystore body");
    let prefix = keystore_prefix(KdfParams::RawKey);
    let aad = KeystoreFile::prefix_bytes(&prefix);
    let sealed = crypto::seal(&sealing_key(), &keystore_nonce(), &aad, &body).expect("seal");
    let file = KeystoreFile { prefix, sealed }.encode();
    assert_eq!(hex(&file), KEYSTORE_FILE, "{BUMP}: keystore file");
    let ks = KeyStore::unseal(
        &unhex(KEYSTORE_FILE),
        &STORE_ID,
        &Secret::KeyFile(sealing_key()),
    )
    .expect("unseal the golden keystore");
    assert_eq!(ks.chunk_size(), 16384, "{BUMP}: keystore chunk size");
    assert_eq!(ks.default_key(), key_id(), "{BUMP}: keystore default key");
    let k = ks.resolve("default").expect("alias");
    assert_eq!(k.id, key_id(), "{BUMP}: keystore alias");
    assert_eq!(k.allowed_ops, 15, "{BUMP}: keystore allowed ops");
    assert_eq!(
        ks.version(&key_id(), 1).expect("v1").expose(),
        kek().expose(),
        "{BUMP}: keystore key material"
    );
}

/// docs/FORMAT.md carries every golden vector of this file, byte for byte.
#[test]
fn format_md_carries_the_golden_vectors() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/FORMAT.md"))
        .expect("docs/FORMAT.md");
    let flat: String = doc.chars().filter(|c| !c.is_whitespace()).collect();
    for (name, value) in [
        ("DEK_CONTEXT_MASTER", DEK_CONTEXT_MASTER),
        ("DEK_CONTEXT_CUSTOMER", DEK_CONTEXT_CUSTOMER),
        ("CUSTOMER_FINGERPRINT", CUSTOMER_FINGERPRINT),
        ("WRAPPED_DEK_MASTER", WRAPPED_DEK_MASTER),
        ("WRAPPED_DEK_CUSTOMER", WRAPPED_DEK_CUSTOMER),
        ("HEADER_MASTER", HEADER_MASTER),
        ("HEADER_CUSTOMER", HEADER_CUSTOMER),
        ("BUCKET_RECORD_ASSIGNED", BUCKET_RECORD_ASSIGNED),
        ("BUCKET_RECORD_DEFAULT", BUCKET_RECORD_DEFAULT),
        ("CHUNK_AAD_2_FINAL", CHUNK_AAD_2_FINAL),
        ("CHUNK_AAD_0", CHUNK_AAD_0),
        ("CHUNK_2_FINAL", CHUNK_2_FINAL),
        ("CHUNK_EMPTY_FINAL", CHUNK_EMPTY_FINAL),
        ("OBJECT_HELLO", OBJECT_HELLO),
        ("PREAMBLE", PREAMBLE),
        ("ARGON2ID_KEY", ARGON2ID_KEY),
        ("KEYSTORE_PREFIX_ARGON2ID", KEYSTORE_PREFIX_ARGON2ID),
        ("KEYSTORE_PREFIX_RAW_KEY", KEYSTORE_PREFIX_RAW_KEY),
        ("KEYSTORE_BODY", KEYSTORE_BODY),
        ("KEYSTORE_FILE", KEYSTORE_FILE),
    ] {
        assert!(
            flat.contains(value),
            "{BUMP}: docs/FORMAT.md does not carry vector {name} as the test has it"
        );
    }
}

// ---------------------------------------------------------------- vector files

/// What decoding a vector file must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Ok,
    Corrupt,
    UnsupportedVersion,
    WrongSecret,
}

/// Parses a vector file: `expect: WORD`, then `#` comment lines and hex (whitespace ignored).
fn parse_vector(text: &str) -> Result<(Expect, Vec<u8>), String> {
    let mut lines = text.lines();
    let first = lines.next().ok_or("empty vector file")?;
    let word = first
        .strip_prefix("expect:")
        .ok_or_else(|| format!("first line {first:?} is not `expect: ...`"))?
        .trim();
    let expect = match word {
        "ok" => Expect::Ok,
        "corrupt" => Expect::Corrupt,
        "unsupported-version" => Expect::UnsupportedVersion,
        "wrong-secret" => Expect::WrongSecret,
        other => return Err(format!("unknown expectation {other:?}")),
    };
    let mut digits = String::new();
    for l in lines.filter(|l| !l.trim_start().starts_with('#')) {
        digits.extend(l.chars().filter(|c| !c.is_whitespace()));
    }
    if digits.len() % 2 != 0 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("the body is not hex".into());
    }
    Ok((expect, unhex(&digits)))
}

fn outcome(r: Result<(), Error>) -> Result<Expect, String> {
    match r {
        Ok(()) => Ok(Expect::Ok),
        Err(Error::Corrupt(_)) => Ok(Expect::Corrupt),
        Err(Error::UnsupportedVersion(_)) => Ok(Expect::UnsupportedVersion),
        Err(Error::WrongSecret) => Ok(Expect::WrongSecret),
        Err(e) => Err(format!("an error of no expected kind: {e:?}")),
    }
}

/// Decodes a vector with the decoder its file name selects.
fn decode(name: &str, bytes: &[u8]) -> Result<Expect, String> {
    let r = if name.starts_with("header_") {
        ObjectHeader::decode(bytes).map(|h| {
            assert_eq!(
                h.encode(),
                bytes,
                "{BUMP}: {name} does not re-encode to itself"
            );
        })
    } else if name.starts_with("bucket_record_") {
        BucketRecord::decode(bytes).map(|b| {
            assert_eq!(
                b.encode(),
                bytes,
                "{BUMP}: {name} does not re-encode to itself"
            );
        })
    } else if name.starts_with("keystore_") {
        KeyStore::unseal(bytes, &STORE_ID, &Secret::KeyFile(sealing_key())).map(|_| ())
    } else if name.starts_with("config_") {
        StoreConfig::parse(bytes).map(|_| ())
    } else if name.starts_with("preamble_") {
        parse_preamble(bytes).map(|_| ()).map_err(Error::Corrupt)
    } else {
        return Err(format!("no decoder for vector file {name}"));
    };
    outcome(r)
}

#[test]
fn vector_files_decode_as_expected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/v1");
    let mut seen = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(&dir).expect("tests/vectors/v1") {
        let path = e.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 file name")
            .to_string();
        assert!(name.ends_with(".hex"), "{name}: vector files end in .hex");
        let text = std::fs::read_to_string(&path).expect("read vector");
        let (expect, bytes) = parse_vector(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = decode(&name, &bytes).unwrap_or_else(|e| panic!("{BUMP}: {name}: {e}"));
        assert_eq!(got, expect, "{BUMP}: vector {name}");
        *seen.entry(format!("{expect:?}")).or_insert(0) += 1;
    }
    let total: i32 = seen.values().sum();
    assert!(
        total >= 39,
        "{BUMP}: vector files went missing ({total} left)"
    );
    for kind in ["Ok", "Corrupt", "UnsupportedVersion", "WrongSecret"] {
        assert!(seen.contains_key(kind), "{BUMP}: no vector expects {kind}");
    }
}

#[test]
fn golden_vector_files_hold_the_golden_bytes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/v1");
    for (file, value) in [
        ("header_ok_master.hex", HEADER_MASTER),
        ("header_ok_customer.hex", HEADER_CUSTOMER),
        ("bucket_record_ok.hex", BUCKET_RECORD_ASSIGNED),
        ("bucket_record_ok_default_key.hex", BUCKET_RECORD_DEFAULT),
        ("keystore_ok.hex", KEYSTORE_FILE),
        ("preamble_ok.hex", PREAMBLE),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).expect("read vector");
        let (expect, bytes) = parse_vector(&text).expect("parse vector");
        assert_eq!(expect, Expect::Ok, "{BUMP}: {file}");
        assert_eq!(
            hex(&bytes),
            value,
            "{BUMP}: {file} differs from the golden bytes"
        );
    }
}

#[test]
fn the_vector_runner_rejects_what_it_does_not_know() {
    assert!(
        parse_vector("expect: maybe\n00").is_err(),
        "unknown expectation"
    );
    assert!(
        parse_vector("expect corrupt\n00").is_err(),
        "malformed first line"
    );
    assert!(parse_vector("").is_err(), "empty file");
    assert!(parse_vector("expect: ok\n0g").is_err(), "non-hex body");
    assert!(parse_vector("expect: ok\n123").is_err(), "odd digit count");
    assert_eq!(
        parse_vector("expect: corrupt\n# note\n00 ff\n"),
        Ok((Expect::Corrupt, vec![0, 255]))
    );
    assert!(decode("mystery_thing.hex", &[]).is_err(), "unknown decoder");
}
