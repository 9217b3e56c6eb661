//! Tamper detection at the library level: every edit of a backing file, its header xattr,
//! the keystore or the config is an error, never data.
//!
//! The edits are made with `std::fs` and the crate's own xattr helpers on a real temporary
//! store, then the object is opened and read with the public API.

use envelopefs::format::chunk::{Geometry, CHUNK_OVERHEAD, NONCE_LEN, PREAMBLE_LEN};
use envelopefs::format::config::StoreConfig;
use envelopefs::format::records::{BucketRecord, ObjectHeader, Wrapping};
use envelopefs::keys::crypto::Key32;
use envelopefs::keys::keystore::Secret;
use envelopefs::store::object::{self, NoCustomerKeys, ObjectIo};
use envelopefs::store::{xattr, Store, StoreLock};
use envelopefs::Error;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

const CS: u32 = 4096;
const CS64: u64 = CS as u64;
/// Three full chunks and a short final one.
const SIZE: u64 = 3 * CS64 + 100;

fn secret() -> Secret {
    Secret::KeyFile(Key32::from_bytes([0x11; 32]))
}

fn wrong_secret() -> Secret {
    Secret::KeyFile(Key32::from_bytes([0x12; 32]))
}

struct Fx {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: Store,
}

fn fixture() -> Fx {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("store");
    Store::init(&root, CS, &secret()).expect("init");
    let store = open_store(&root, &secret()).expect("open");
    store.create_bucket("b", None, 0o755).expect("bucket b");
    store.create_bucket("c", None, 0o755).expect("bucket c");
    Fx {
        _dir: dir,
        root,
        store,
    }
}

fn open_store(root: &Path, s: &Secret) -> envelopefs::Result<Store> {
    let lock = StoreLock::acquire(root)?;
    Store::open(root, lock, s)
}

fn content(seed: u8, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 8) as u8))
        .collect()
}

impl Fx {
    fn path(&self, bucket: &str, name: &str) -> PathBuf {
        self.root.join(bucket).join(name)
    }

    fn bucket(&self, name: &str) -> BucketRecord {
        self.store.bucket(name).expect("bucket record")
    }

    fn put(&self, bucket: &str, name: &str, data: &[u8]) {
        let rec = self.bucket(bucket);
        object::create_object(
            &self.store,
            &rec,
            &self.path(bucket, name),
            0o644,
            true,
            &mut |io| io.write_at(0, data),
        )
        .expect("create object");
    }

    fn open(&self, bucket: &str, name: &str) -> envelopefs::Result<ObjectIo> {
        object::open_object(
            &self.store,
            &self.bucket(bucket),
            &self.path(bucket, name),
            false,
            &NoCustomerKeys,
        )
    }

    fn header_bytes(&self, bucket: &str, name: &str) -> Vec<u8> {
        xattr::get(&self.path(bucket, name), xattr::HEADER.as_bytes())
            .expect("getxattr")
            .expect("header present")
    }

    fn set_header(&self, bucket: &str, name: &str, bytes: &[u8]) {
        xattr::set(&self.path(bucket, name), xattr::HEADER.as_bytes(), bytes, 0).expect("setxattr");
    }

    fn geometry(&self) -> Geometry {
        self.store.geometry()
    }
}

fn flip_bit(path: &Path, at: u64, bit: u8) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open backing");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).expect("read byte");
    b[0] ^= 1 << bit;
    f.write_all_at(&b, at).expect("write byte");
}

fn assert_corrupt<T>(r: envelopefs::Result<T>, what: &str) -> Error {
    match r {
        Ok(_) => panic!("{what}: tampering was not detected"),
        Err(e) => {
            assert!(
                matches!(e, Error::Corrupt(_)),
                "{what}: want Error::Corrupt, got {e:?}"
            );
            assert_eq!(e.errno(), libc::EIO, "{what}: errno");
            e
        }
    }
}

/// Reads the whole object as a reader would (stopping at EOF or the first error):
/// the bytes obtained and the error, if any.
fn read_to_end(io: &ObjectIo) -> (Vec<u8>, Option<Error>) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 3 * CS as usize + 17];
    loop {
        match io.read_at(out.len() as u64, &mut buf) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Some(e)),
        }
    }
}

fn read_chunk(io: &ObjectIo, index: u64) -> envelopefs::Result<Vec<u8>> {
    let mut buf = vec![0u8; CS as usize];
    let n = io.read_at(index * CS64, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn expected_chunk(data: &[u8], index: u64) -> &[u8] {
    let a = (index * CS64) as usize;
    &data[a..(a + CS as usize).min(data.len())]
}

// ---------------------------------------------------------------- chunks

#[test]
fn flipped_bit_in_a_chunk_fails_that_chunk_only() {
    let fx = fixture();
    let data = content(1, SIZE);
    let g = fx.geometry();
    // Flip a bit in the nonce, the ciphertext and the tag of chunk 1, each in a fresh object.
    let spots = [
        ("nonce", g.backing_offset(1) + 3),
        ("ciphertext", g.backing_offset(1) + NONCE_LEN as u64 + 1000),
        ("tag", g.backing_offset(1) + NONCE_LEN as u64 + CS64 + 5),
    ];
    for (k, (part, at)) in spots.into_iter().enumerate() {
        let name = format!("o{k}");
        fx.put("b", &name, &data);
        flip_bit(&fx.path("b", &name), at, (k % 8) as u8);
        let io = fx
            .open("b", &name)
            .expect("open succeeds: header is intact");
        assert_eq!(io.size(), SIZE);
        assert_corrupt(
            read_chunk(&io, 1),
            &format!("bit flip in the {part} of chunk 1"),
        );
        for j in [0u64, 2, 3] {
            assert_eq!(
                read_chunk(&io, j).unwrap_or_else(|e| panic!("{part}: chunk {j} must read: {e}")),
                expected_chunk(&data, j),
                "{part}: chunk {j}"
            );
        }
        // A read that spans the bad chunk fails as a whole: no partial data that a page
        // cache could take for end-of-file. The good prefix still reads on its own.
        let mut span = vec![0u8; 2 * CS as usize];
        assert_corrupt(
            io.read_at(0, &mut span).map(|_| ()),
            &format!("{part}: a read spanning chunks 0 and 1"),
        );
        let (got, err) = read_to_end(&io);
        assert!(got.is_empty(), "{part}: a failed read returns no bytes");
        assert_corrupt(err.map_or(Ok(()), Err), &format!("{part}: read to end"));
    }
}

#[test]
fn flipped_bit_in_the_final_short_chunk_and_in_the_empty_final_chunk() {
    let fx = fixture();
    let data = content(2, SIZE);
    fx.put("b", "short", &data);
    let g = fx.geometry();
    flip_bit(&fx.path("b", "short"), g.backing_offset(3) + 20, 0);
    let io = fx.open("b", "short").expect("open");
    assert_corrupt(read_chunk(&io, 3), "final short chunk");
    assert_eq!(
        read_chunk(&io, 2).expect("chunk 2"),
        expected_chunk(&data, 2)
    );

    // An empty object is one empty final chunk: nonce | tag. No read touches it, so open
    // authenticates it.
    fx.put("b", "empty", &[]);
    flip_bit(
        &fx.path("b", "empty"),
        PREAMBLE_LEN + NONCE_LEN as u64 + 2,
        4,
    );
    assert_corrupt(fx.open("b", "empty"), "tag of an empty object");
    // Same for the empty final chunk after full chunks.
    fx.put("b", "aligned", &data[..2 * CS as usize]);
    flip_bit(&fx.path("b", "aligned"), g.backing_offset(2) + 1, 2);
    assert_corrupt(
        fx.open("b", "aligned"),
        "empty final chunk after two full chunks",
    );
}

/// Found by `no_resize_of_the_backing_file_passes_as_valid`: a backing file cut to a chunk
/// boundary plus 28 bytes has a valid backing size (its last 28 bytes look like an empty
/// final chunk), and since no read touches an empty final chunk it read as a shorter, valid
/// object. Open now authenticates an empty final chunk.
#[test]
fn regression_cut_to_chunk_boundary_plus_28_bytes_is_not_a_shorter_object() {
    let fx = fixture();
    let data = content(20, SIZE);
    let g = fx.geometry();
    for k in 0..=3u64 {
        let name = format!("cut{k}");
        fx.put("b", &name, &data);
        let p = fx.path("b", &name);
        let len = g.backing_offset(k) + CHUNK_OVERHEAD;
        fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .and_then(|f| f.set_len(len))
            .expect("truncate");
        assert_eq!(g.plain_len(len), Some(k * CS64), "a plausible size");
        assert_corrupt(fx.open("b", &name), &format!("cut to chunk {k} + 28 bytes"));
    }
}

/// Found by `every_bit_flip_of_the_header_fails_except_created_ns`: the header's object id
/// field is not in the DEK wrap's context (the preamble's id is), so an edited object id
/// opened fine and was shown by `object head` and the object-id xattr. Open now checks it.
#[test]
fn regression_header_object_id_must_match_the_preamble() {
    let fx = fixture();
    fx.put("b", "id", &content(21, 10));
    let mut h = ObjectHeader::decode(&fx.header_bytes("b", "id")).expect("decode");
    h.object_id[7] ^= 0x10;
    fx.set_header("b", "id", &h.encode());
    let e = assert_corrupt(fx.open("b", "id"), "header object id edited");
    assert!(e.to_string().contains("another object"), "{e}");
}

#[test]
fn swapped_chunks_of_one_object_fail() {
    let fx = fixture();
    let data = content(3, SIZE);
    fx.put("b", "s", &data);
    let g = fx.geometry();
    let p = fx.path("b", "s");
    let mut raw = fs::read(&p).expect("read backing");
    let stride = g.stride() as usize;
    let a = g.backing_offset(0) as usize;
    let b = g.backing_offset(1) as usize;
    let chunk0 = raw[a..a + stride].to_vec();
    raw.copy_within(b..b + stride, a);
    raw[b..b + stride].copy_from_slice(&chunk0);
    fs::write(&p, &raw).expect("write back");
    let io = fx.open("b", "s").expect("open");
    assert_corrupt(read_chunk(&io, 0), "chunk 1 moved to position 0");
    assert_corrupt(read_chunk(&io, 1), "chunk 0 moved to position 1");
    assert_eq!(
        read_chunk(&io, 2).expect("chunk 2"),
        expected_chunk(&data, 2)
    );
}

#[test]
fn a_chunk_copied_from_another_object_fails() {
    let fx = fixture();
    let a = content(4, SIZE);
    let b = content(5, SIZE);
    fx.put("b", "a", &a);
    fx.put("b", "other", &b);
    let g = fx.geometry();
    let other = fs::read(fx.path("b", "other")).expect("read other");
    let at = g.backing_offset(2) as usize;
    let stride = g.stride() as usize;
    let f = fs::OpenOptions::new()
        .write(true)
        .open(fx.path("b", "a"))
        .expect("open a");
    f.write_all_at(&other[at..at + stride], at as u64)
        .expect("copy chunk 2");
    let io = fx.open("b", "a").expect("open");
    assert_corrupt(read_chunk(&io, 2), "chunk 2 copied from another object");
    assert_eq!(read_chunk(&io, 1).expect("chunk 1"), expected_chunk(&a, 1));
}

#[test]
fn truncation_at_a_chunk_boundary_fails_to_open() {
    let fx = fixture();
    let data = content(6, SIZE);
    fx.put("b", "t", &data);
    let g = fx.geometry();
    let p = fx.path("b", "t");
    let original = fs::read(&p).expect("read backing");
    for k in 0..=3u64 {
        fs::write(&p, &original[..g.backing_offset(k) as usize]).expect("truncate");
        assert_corrupt(fx.open("b", "t"), &format!("cut before chunk {k}"));
    }
    fs::write(&p, b"").expect("truncate to 0");
    assert_corrupt(fx.open("b", "t"), "empty backing file");
    fs::write(&p, &original).expect("restore");
    assert_eq!(read_to_end(&fx.open("b", "t").expect("open")).0, data);
}

/// Any truncation or extension of the backing file: opening fails, or reading ends in an
/// error after a correct prefix. Never a shorter (or longer) object that reads cleanly.
#[test]
fn no_resize_of_the_backing_file_passes_as_valid() {
    let fx = fixture();
    let data = content(7, SIZE);
    fx.put("b", "r", &data);
    let g = fx.geometry();
    let p = fx.path("b", "r");
    let original = fs::read(&p).expect("read backing");
    let full = original.len() as u64;
    let mut lens: Vec<u64> = (0..full).step_by(29).collect();
    for k in 0..=4u64 {
        let b = g.backing_offset(k);
        for d in [0u64, 1, 27, 28, 29, 100, 101, 127, 128, 129] {
            lens.push(b + d);
            lens.push(b.saturating_sub(d));
        }
    }
    let mut longer = original.clone();
    longer.extend_from_slice(&[0u8; 2 * (CS as usize + 28)]);
    for extra in [1u64, 27, 28, 29, CS64, CS64 + 28, CS64 + 29, 2 * CS64 + 56] {
        lens.push(full + extra);
    }
    lens.sort_unstable();
    lens.dedup();
    let mut opened = 0;
    for len in lens {
        if len == full {
            continue;
        }
        let bytes = if len < full {
            &original[..len as usize]
        } else {
            &longer[..len as usize]
        };
        fs::write(&p, bytes).expect("resize backing");
        match fx.open("b", "r") {
            Err(e) => {
                assert_eq!(e.errno(), libc::EIO, "len {len}: {e}");
            }
            Ok(io) => {
                opened += 1;
                let (got, err) = read_to_end(&io);
                assert!(
                    err.is_some(),
                    "backing length {len} (valid {full}) read cleanly as {} bytes",
                    got.len()
                );
                assert_eq!(
                    got,
                    &data[..got.len()],
                    "len {len}: bytes before the error are the original's"
                );
                assert_corrupt(err.map_or(Ok(()), Err), &format!("len {len}"));
            }
        }
    }
    assert!(
        opened > 0,
        "some lengths give a plausible size and must fail on read"
    );
}

#[test]
fn tampered_preamble_fails_to_open() {
    let fx = fixture();
    let data = content(8, SIZE);
    let g = fx.geometry();
    for (k, at) in [0u64, 4, 8, 20].into_iter().enumerate() {
        let name = format!("p{k}");
        fx.put("b", &name, &data);
        flip_bit(&fx.path("b", &name), at, 1);
        let r = fx.open("b", &name);
        assert_corrupt(r, &format!("preamble byte {at}"));
    }
    assert_eq!(g.backing_offset(0), PREAMBLE_LEN);
}

// ---------------------------------------------------------------- headers

#[test]
fn header_copied_from_another_object_of_the_same_bucket_fails() {
    let fx = fixture();
    fx.put("b", "victim", &content(9, 5000));
    fx.put("b", "donor", &content(10, 5000));
    let donor = fx.header_bytes("b", "donor");
    fx.set_header("b", "victim", &donor);
    let e = assert_corrupt(fx.open("b", "victim"), "header from another object");
    assert!(e.to_string().contains("another object"), "{e}");
}

#[test]
fn header_or_object_moved_from_another_bucket_fails() {
    let fx = fixture();
    fx.put("b", "victim", &content(11, 5000));
    fx.put("c", "donor", &content(12, 5000));
    // Only the header moves.
    fx.set_header("b", "victim", &fx.header_bytes("c", "donor"));
    assert_corrupt(fx.open("b", "victim"), "header from another bucket");
    // The whole object (data and header) moves: its DEK wrap is bound to bucket c.
    fs::rename(fx.path("c", "donor"), fx.path("b", "moved")).expect("rename across buckets");
    let e = assert_corrupt(fx.open("b", "moved"), "object moved to another bucket");
    assert!(e.to_string().contains("does not unwrap"), "{e}");
}

#[test]
fn header_with_an_unknown_format_version_is_unsupported() {
    let fx = fixture();
    fx.put("b", "v", &content(13, 10));
    let mut h = fx.header_bytes("b", "v");
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    fx.set_header("b", "v", &h);
    match fx.open("b", "v") {
        Err(Error::UnsupportedVersion(m)) => {
            assert!(m.contains("version 2"), "{m}");
        }
        Err(e) => panic!("want UnsupportedVersion, got {e:?}"),
        Ok(_) => panic!("a version 2 header was accepted"),
    }
}

#[test]
fn missing_header_fails_to_open() {
    let fx = fixture();
    fx.put("b", "m", &content(14, 10));
    xattr::remove(&fx.path("b", "m"), xattr::HEADER.as_bytes()).expect("removexattr");
    let e = assert_corrupt(fx.open("b", "m"), "missing header");
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn garbage_and_wrong_length_headers_fail_to_open() {
    let fx = fixture();
    fx.put("b", "g", &content(15, 10));
    let good = fx.header_bytes("b", "g");
    assert_eq!(good.len(), 118, "master-wrapped header length");
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("garbage", (0..118u32).map(|i| (i * 73 + 5) as u8).collect()),
        ("magic and version, then garbage", {
            let mut v = good[..6].to_vec();
            v.extend(std::iter::repeat_n(0xA5u8, 112));
            v
        }),
        ("one byte short", good[..good.len() - 1].to_vec()),
        ("one byte long", {
            let mut v = good.clone();
            v.push(0);
            v
        }),
        ("half", good[..59].to_vec()),
        ("oversized", {
            let mut v = good.clone();
            v.resize(2000, 0);
            v
        }),
    ];
    // An unknown wrapping variant.
    let mut bad_tag = good.clone();
    bad_tag[34..38].copy_from_slice(&7u32.to_le_bytes());
    cases.push(("unknown wrapping tag", bad_tag));
    for (what, bytes) in cases {
        fx.set_header("b", "g", &bytes);
        assert_corrupt(fx.open("b", "g"), what);
    }
    fx.set_header("b", "g", &good);
    assert!(fx.open("b", "g").is_ok(), "the restored header opens again");
}

/// Every single-bit flip of the header makes the open fail, `created_ns` included (it scopes
/// bucket work requests, so it is bound into the DEK-wrap context: see docs/FORMAT.md).
#[test]
fn every_bit_flip_of_the_header_fails() {
    let fx = fixture();
    let data = content(16, 300);
    fx.put("b", "f", &data);
    let good = fx.header_bytes("b", "f");
    for i in 0..good.len() {
        let mut h = good.clone();
        h[i] ^= 1 << (i % 8);
        fx.set_header("b", "f", &h);
        match fx.open("b", "f") {
            Ok(_) => panic!("header bit flip at byte {i} was not detected"),
            Err(e) => assert!(
                matches!(
                    e,
                    Error::Corrupt(_) | Error::UnsupportedVersion(_) | Error::NoKey(_)
                ),
                "byte {i}: {e:?}"
            ),
        }
    }
    fx.set_header("b", "f", &good);
    assert!(fx.open("b", "f").is_ok(), "the original header opens again");
}

#[test]
fn header_naming_another_version_or_key_fails() {
    let fx = fixture();
    fx.put("b", "k", &content(17, 10));
    let default = fx.store.keys().default_key();
    fx.store
        .update_keys(|ks| ks.rotate(&default))
        .expect("rotate");
    let other = fx
        .store
        .update_keys(|ks| ks.create_key(Some("other".into())))
        .expect("create key");
    let good = ObjectHeader::decode(&fx.header_bytes("b", "k")).expect("decode");
    let edits = [
        Wrapping::Master {
            key_id: default,
            version: 2,
        },
        Wrapping::Master {
            key_id: other,
            version: 1,
        },
        Wrapping::Customer {
            fingerprint: [3u8; 32],
        },
    ];
    for w in edits {
        let mut h = good.clone();
        h.wrapping = w;
        fx.set_header("b", "k", &h.encode());
        match fx.open("b", "k") {
            Ok(_) => panic!("header edited to {w:?} still opened"),
            Err(Error::Corrupt(_)) => {}
            Err(Error::NoKey(_)) if matches!(w, Wrapping::Customer { .. }) => {}
            Err(e) => panic!("{w:?}: unexpected {e:?}"),
        }
    }
    // An edited object id or chunk size in the header is refused too.
    let mut h = good.clone();
    h.object_id[0] ^= 1;
    fx.set_header("b", "k", &h.encode());
    assert_corrupt(fx.open("b", "k"), "header object id edited");
    let mut h = good.clone();
    h.chunk_size = 8192;
    fx.set_header("b", "k", &h.encode());
    assert_corrupt(fx.open("b", "k"), "header chunk size edited");
}

// ---------------------------------------------------------------- keystore and config

/// All files under `.envelopefs` with their bytes.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.join(".envelopefs")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("list") {
            let e = e.expect("entry");
            let p = e.path();
            if e.file_type().expect("type").is_dir() {
                stack.push(p.clone());
                out.insert(p, b"<dir>".to_vec());
            } else {
                out.insert(p.clone(), fs::read(&p).expect("read"));
            }
        }
    }
    out
}

#[test]
fn wrong_key_file_is_wrong_secret_and_changes_nothing() {
    let fx = fixture();
    fx.put("b", "x", &content(18, 10));
    let root = fx.root.clone();
    drop(fx.store);
    // Leave something in tmp/: a successful open clears it, a failed one must not.
    fs::write(root.join(".envelopefs/tmp/leftover"), b"x").expect("tmp file");
    let before = snapshot(&root);
    match open_store(&root, &wrong_secret()) {
        Err(e @ Error::WrongSecret) => assert_eq!(e.errno(), libc::EACCES),
        Err(e) => panic!("want WrongSecret, got {e:?}"),
        Ok(_) => panic!("a wrong key file opened the store"),
    }
    let pass = Secret::Passphrase(Zeroizing::new(b"not a key file".to_vec()));
    assert!(
        matches!(open_store(&root, &pass), Err(Error::InvalidArgument(_))),
        "a passphrase for a key-file store is refused with a hint"
    );
    assert_eq!(snapshot(&root), before, "a failed open changed .envelopefs");
    assert!(open_store(&root, &secret()).is_ok());
}

#[test]
fn wrong_passphrase_is_wrong_secret_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("store");
    let pass = |p: &[u8]| Secret::Passphrase(Zeroizing::new(p.to_vec()));
    Store::init(&root, CS, &pass(b"correct horse")).expect("init with passphrase");
    let before = snapshot(&root);
    assert!(
        matches!(
            open_store(&root, &pass(b"correct hors")),
            Err(Error::WrongSecret)
        ),
        "wrong passphrase"
    );
    assert!(
        matches!(open_store(&root, &secret()), Err(Error::InvalidArgument(_))),
        "a key file for a passphrase store is refused with a hint"
    );
    let after = snapshot(&root);
    // The failed attempts may have created the (empty) lock file, nothing else.
    let mut after_wo_lock = after.clone();
    after_wo_lock.retain(|p, _| !p.ends_with("lock"));
    let mut before_wo_lock = before.clone();
    before_wo_lock.retain(|p, _| !p.ends_with("lock"));
    assert_eq!(
        after_wo_lock, before_wo_lock,
        "a failed open changed .envelopefs"
    );
}

#[test]
fn every_bit_flip_of_the_keystore_is_an_error() {
    let fx = fixture();
    let root = fx.root.clone();
    drop(fx.store);
    let path = root.join(".envelopefs/keystore");
    let good = fs::read(&path).expect("read keystore");
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 1 << (i % 8);
        fs::write(&path, &bad).expect("write keystore");
        match open_store(&root, &secret()) {
            Ok(_) => panic!("keystore bit flip at byte {i} was not detected"),
            Err(e) => {
                let expected = match i {
                    0..=3 => matches!(e, Error::Corrupt(_)),
                    4..=5 => matches!(e, Error::UnsupportedVersion(_)),
                    6..=21 => matches!(e, Error::Corrupt(_)),
                    // kdf tag, nonce, sealed body: authentication (or a kdf mismatch).
                    _ => matches!(
                        e,
                        Error::WrongSecret | Error::Corrupt(_) | Error::InvalidArgument(_)
                    ),
                };
                assert!(expected, "keystore byte {i}: unexpected {e:?}");
            }
        }
    }
    fs::write(&path, &good[..good.len() - 1]).expect("truncate keystore");
    assert!(open_store(&root, &secret()).is_err(), "truncated keystore");
    fs::write(&path, &good[..30]).expect("truncate keystore");
    assert!(
        matches!(open_store(&root, &secret()), Err(Error::Corrupt(_))),
        "keystore cut inside its prefix"
    );
    fs::write(&path, &good).expect("restore keystore");
    assert!(open_store(&root, &secret()).is_ok());
}

#[test]
fn edited_config_is_a_clear_error() {
    let fx = fixture();
    let root = fx.root.clone();
    drop(fx.store);
    let path = root.join(".envelopefs/config.json");
    let good = fs::read(&path).expect("read config");
    let cfg = StoreConfig::parse(&good).expect("parse config");
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_slice(&good).expect("json");
        f(&mut v);
        serde_json::to_vec(&v).expect("json")
    };
    let mut other_id = cfg.store_id.clone().into_bytes();
    other_id[0] = if other_id[0] == b'0' { b'1' } else { b'0' };
    let other_id = String::from_utf8(other_id).expect("utf8");
    type Case<'a> = (&'a str, Vec<u8>, fn(&Error) -> bool);
    let cases: Vec<Case> = vec![
        (
            "future format version",
            edit(&|v| v["format_version"] = 2.into()),
            |e| matches!(e, Error::UnsupportedVersion(_)),
        ),
        (
            "unknown feature",
            edit(&|v| v["features"] = serde_json::json!(["compression"])),
            |e| matches!(e, Error::UnsupportedVersion(_)),
        ),
        (
            "chunk size differs from the keystore's",
            edit(&|v| v["chunk_size"] = 8192.into()),
            |e| matches!(e, Error::Corrupt(m) if m.contains("altered")),
        ),
        (
            "invalid chunk size",
            edit(&|v| v["chunk_size"] = 5000.into()),
            |e| matches!(e, Error::Corrupt(_)),
        ),
        (
            "store id of another store",
            edit(&|v| v["store_id"] = other_id.clone().into()),
            |e| matches!(e, Error::Corrupt(m) if m.contains("another store")),
        ),
        (
            "not a store config",
            edit(&|v| v["format"] = "gocryptfs".into()),
            |e| matches!(e, Error::Corrupt(_)),
        ),
        ("unknown field", edit(&|v| v["extra"] = 1.into()), |e| {
            matches!(e, Error::Corrupt(_))
        }),
        ("not JSON", b"{\"format\": ".to_vec(), |e| {
            matches!(e, Error::Corrupt(_))
        }),
    ];
    for (what, bytes, ok) in cases {
        fs::write(&path, &bytes).expect("write config");
        match open_store(&root, &secret()) {
            Ok(_) => panic!("{what}: edited config accepted"),
            Err(e) => assert!(ok(&e), "{what}: unexpected {e:?}"),
        }
    }
    // Single-bit flips anywhere: an error, or (only for the informational created_s and
    // for whitespace) a config whose security-relevant fields are unchanged.
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 1 << (i % 8);
        fs::write(&path, &bad).expect("write config");
        if open_store(&root, &secret()).is_ok() {
            // (A hex digit's case may flip: the same id.)
            let c = StoreConfig::parse(&bad).expect("it opened, so it parses");
            assert_eq!(
                (
                    c.store_id_bytes(),
                    c.chunk_size,
                    c.format_version,
                    &c.features
                ),
                (
                    cfg.store_id_bytes(),
                    cfg.chunk_size,
                    cfg.format_version,
                    &cfg.features
                ),
                "config byte {i} changed a security-relevant field undetected"
            );
        }
    }
    fs::write(&path, &good).expect("restore config");
    assert!(open_store(&root, &secret()).is_ok());
}

#[test]
fn tampered_bucket_record_is_an_error() {
    let fx = fixture();
    fx.put("b", "x", &content(19, 10));
    let dir = fx.root.join("b");
    let good = xattr::get(&dir, xattr::BUCKET.as_bytes())
        .expect("getxattr")
        .expect("record");
    let mut v2 = good.clone();
    v2[4] = 2;
    xattr::set(&dir, xattr::BUCKET.as_bytes(), &v2, 0).expect("setxattr");
    assert!(matches!(
        fx.store.bucket("b"),
        Err(Error::UnsupportedVersion(_))
    ));
    xattr::set(&dir, xattr::BUCKET.as_bytes(), &good[..good.len() - 1], 0).expect("setxattr");
    assert!(matches!(fx.store.bucket("b"), Err(Error::Corrupt(_))));
    xattr::remove(&dir, xattr::BUCKET.as_bytes()).expect("removexattr");
    assert!(matches!(fx.store.bucket("b"), Err(Error::Corrupt(_))));
    // A bucket id edited in the record: the objects' DEK wraps no longer match.
    let mut rec = BucketRecord::decode(&good).expect("decode");
    rec.bucket_id[15] ^= 0x80;
    xattr::set(&dir, xattr::BUCKET.as_bytes(), &rec.encode(), 0).expect("setxattr");
    assert_corrupt(fx.open("b", "x"), "bucket id edited");
    assert_eq!(CHUNK_OVERHEAD, 28);
}
