//! The object API (`store::object`: `create_object`, `open_object`, `ObjectIo`) against an
//! in-memory `Vec<u8>` model, on a real temporary store.
//!
//! Random sequences of `write_at` / `set_len` / `read_at` / reopen-from-disk steps, with
//! offsets biased towards chunk boundaries, for chunk sizes 4096 and 16384. After every step
//! the object's size, its backing file's size and its full contents are compared with the
//! model. Deterministic tests cover the edge sizes (0, 1, chunk-1, chunk, chunk+1, ...) and
//! writes of several MiB (which cross the 4 MiB write batches of `ObjectIo`).

use envelopefs::format::chunk::Geometry;
use envelopefs::format::records::BucketRecord;
use envelopefs::keys::crypto::Key32;
use envelopefs::keys::keystore::Secret;
use envelopefs::store::object::{self, NoCustomerKeys, ObjectIo};
use envelopefs::store::{Store, StoreLock};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

/// A temporary store (key-file secret, so no Argon2) with one bucket `b`.
struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    bucket: BucketRecord,
    root: PathBuf,
}

fn secret() -> Secret {
    Secret::KeyFile(Key32::from_bytes([0x5a; 32]))
}

fn fixture(chunk_size: u32) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("store");
    Store::init(&root, chunk_size, &secret()).expect("init store");
    let lock = StoreLock::acquire(&root).expect("lock store");
    let store = Store::open(&root, lock, &secret()).expect("open store");
    let bucket = store
        .create_bucket("b", None, 0o755)
        .expect("create bucket");
    Fixture {
        _dir: dir,
        store,
        bucket,
        root,
    }
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.root.join("b").join(name)
    }

    fn create(&self, name: &str) -> ObjectIo {
        object::create_object(
            &self.store,
            &self.bucket,
            &self.path(name),
            0o644,
            true,
            &mut |_| Ok(()),
        )
        .expect("create object")
    }

    fn create_with(&self, name: &str, data: &[u8]) -> ObjectIo {
        object::create_object(
            &self.store,
            &self.bucket,
            &self.path(name),
            0o644,
            true,
            &mut |io| io.write_at(0, data),
        )
        .expect("create object with data")
    }

    fn reopen(&self, name: &str) -> ObjectIo {
        object::open_object(
            &self.store,
            &self.bucket,
            &self.path(name),
            true,
            &NoCustomerKeys,
        )
        .expect("reopen object")
    }
}

/// Deterministic, position-dependent bytes (never all zero, so zero-fill bugs show).
fn pattern(seed: u8, start: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let p = start + i;
            let x = p
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(u64::from(seed) << 3);
            ((x >> 29) as u8) | 1
        })
        .collect()
}

fn model_write(model: &mut Vec<u8>, off: u64, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let off = usize::try_from(off).expect("offset fits usize");
    if model.len() < off + data.len() {
        model.resize(off + data.len(), 0);
    }
    model[off..off + data.len()].copy_from_slice(data);
}

fn model_read(model: &[u8], off: u64, len: usize) -> &[u8] {
    let start = usize::try_from(off).unwrap_or(usize::MAX).min(model.len());
    let end = start.saturating_add(len).min(model.len());
    &model[start..end]
}

/// Every invariant after a step: plaintext size, backing size, size from backing size
/// alone, full contents, and nothing past the end.
fn check(io: &ObjectIo, model: &[u8], path: &Path, geometry: Geometry) -> Result<(), String> {
    let size = io.size();
    if size != model.len() as u64 {
        return Err(format!("size {size} != model {}", model.len()));
    }
    let backing = std::fs::metadata(path)
        .map_err(|e| format!("stat backing: {e}"))?
        .len();
    if backing != geometry.backing_len(size) {
        return Err(format!(
            "backing len {backing} != expected {} for size {size}",
            geometry.backing_len(size)
        ));
    }
    if geometry.plain_len(backing) != Some(size) {
        return Err(format!("plain_len({backing}) != Some({size})"));
    }
    let mut buf = vec![0xEEu8; model.len() + 7];
    let n = io
        .read_at(0, &mut buf)
        .map_err(|e| format!("full read: {e}"))?;
    if n != model.len() {
        return Err(format!("full read returned {n}, want {}", model.len()));
    }
    if buf[..n] != *model {
        let first = buf[..n]
            .iter()
            .zip(model)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!("contents differ from the model at byte {first}"));
    }
    let mut one = [0u8; 1];
    let past = io
        .read_at(size, &mut one)
        .map_err(|e| format!("read at end: {e}"))?;
    if past != 0 {
        return Err(format!("read at the end returned {past} bytes"));
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    Write { off: u64, len: usize, seed: u8 },
    SetLen(u64),
    Read { off: u64, len: usize },
    Reopen,
}

fn offset_strategy(cs: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => (0u64..8, -2i64..=2).prop_map(move |(k, d)| (k * cs).saturating_add_signed(d)),
        2 => 0..3 * cs,
        1 => 0u64..200 * 1024,
    ]
}

fn len_strategy(cs: u64) -> impl Strategy<Value = usize> {
    let cs = cs as usize;
    prop_oneof![
        2 => 0usize..=3,
        2 => prop::sample::select(vec![cs - 1, cs, cs + 1, 2 * cs, 2 * cs + 1]),
        3 => 0..2 * cs,
        1 => 0usize..40 * 1024,
    ]
}

fn op_strategy(cs: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (offset_strategy(cs), len_strategy(cs), any::<u8>())
            .prop_map(|(off, len, seed)| Op::Write { off, len, seed }),
        2 => offset_strategy(cs).prop_map(Op::SetLen),
        2 => (offset_strategy(cs), len_strategy(cs)).prop_map(|(off, len)| Op::Read { off, len }),
        1 => Just(Op::Reopen),
    ]
}

/// Runs a sequence of operations on a fresh object, checking against the model after each.
fn run_ops(chunk_size: u32, ops: &[Op]) -> Result<(), String> {
    let fx = fixture(chunk_size);
    let g = fx.store.geometry();
    let path = fx.path("obj");
    let mut io = fx.create("obj");
    let id = *io.object_id();
    let mut model = Vec::new();
    check(&io, &model, &path, g).map_err(|e| format!("after create: {e}"))?;
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Write { off, len, seed } => {
                let data = pattern(*seed, *off, *len);
                io.write_at(*off, &data)
                    .map_err(|e| format!("step {i} {op:?}: {e}"))?;
                model_write(&mut model, *off, &data);
            }
            Op::SetLen(n) => {
                io.set_len(*n)
                    .map_err(|e| format!("step {i} {op:?}: {e}"))?;
                model.resize(usize::try_from(*n).expect("len fits usize"), 0);
            }
            Op::Read { off, len } => {
                let mut buf = vec![0u8; *len];
                let n = io
                    .read_at(*off, &mut buf)
                    .map_err(|e| format!("step {i} {op:?}: {e}"))?;
                let want = model_read(&model, *off, *len);
                if buf[..n] != *want {
                    return Err(format!(
                        "step {i} {op:?}: read {n} bytes, want {} bytes equal to the model",
                        want.len()
                    ));
                }
            }
            Op::Reopen => {
                drop(io);
                io = fx.reopen("obj");
                if *io.object_id() != id {
                    return Err(format!("step {i}: object id changed on reopen"));
                }
            }
        }
        check(&io, &model, &path, g).map_err(|e| format!("after step {i} {op:?}: {e}"))?;
    }
    // Finally from disk once more.
    drop(io);
    let io = fx.reopen("obj");
    check(&io, &model, &path, g).map_err(|e| format!("after final reopen: {e}"))
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    // 256 cases per chunk size by default (about a second with the dev profile's optimized
    // dependencies); PROPTEST_CASES=N runs more or fewer.
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn model_chunk_4096(ops in prop::collection::vec(op_strategy(4096), 1..20)) {
        run_ops(4096, &ops).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn model_chunk_16384(ops in prop::collection::vec(op_strategy(16384), 1..20)) {
        run_ops(16384, &ops).map_err(TestCaseError::fail)?;
    }
}

fn edge_sizes(cs: u64) -> Vec<u64> {
    vec![
        0,
        1,
        cs - 1,
        cs,
        cs + 1,
        2 * cs - 1,
        2 * cs,
        2 * cs + 1,
        3 * cs + 5,
    ]
}

#[test]
fn edge_sizes_create_reopen_and_read_around_boundaries() {
    for cs in [4096u32, 16384] {
        let fx = fixture(cs);
        let g = fx.store.geometry();
        for (k, size) in edge_sizes(u64::from(cs)).into_iter().enumerate() {
            let name = format!("edge-{k}");
            let data = pattern(k as u8, 0, size as usize);
            let io = fx.create_with(&name, &data);
            check(&io, &data, &fx.path(&name), g)
                .unwrap_or_else(|e| panic!("cs {cs} size {size} created: {e}"));
            drop(io);
            let io = fx.reopen(&name);
            check(&io, &data, &fx.path(&name), g)
                .unwrap_or_else(|e| panic!("cs {cs} size {size} reopened: {e}"));
            // Reads of every length 1..=3 straddling each chunk boundary.
            let c = u64::from(cs);
            for b in [0, c, 2 * c, 3 * c] {
                for start in b.saturating_sub(2)..b + 2 {
                    for len in 1..=3usize {
                        let mut buf = [0u8; 3];
                        let n = io
                            .read_at(start, &mut buf[..len])
                            .unwrap_or_else(|e| panic!("cs {cs} size {size} read: {e}"));
                        assert_eq!(
                            &buf[..n],
                            model_read(&data, start, len),
                            "cs {cs} size {size} read at {start} len {len}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn edge_sizes_every_set_len_transition() {
    for cs in [4096u32, 16384] {
        let fx = fixture(cs);
        let g = fx.store.geometry();
        let sizes = edge_sizes(u64::from(cs));
        for (a, &from) in sizes.iter().enumerate() {
            for (b, &to) in sizes.iter().enumerate() {
                let name = format!("t-{a}-{b}");
                let mut model = pattern(a as u8 ^ 0x40, 0, from as usize);
                let mut io = fx.create_with(&name, &model);
                io.set_len(to)
                    .unwrap_or_else(|e| panic!("cs {cs} set_len {from} -> {to}: {e}"));
                model.resize(to as usize, 0);
                check(&io, &model, &fx.path(&name), g)
                    .unwrap_or_else(|e| panic!("cs {cs} set_len {from} -> {to}: {e}"));
                drop(io);
                let io = fx.reopen(&name);
                check(&io, &model, &fx.path(&name), g)
                    .unwrap_or_else(|e| panic!("cs {cs} set_len {from} -> {to} reopened: {e}"));
            }
        }
    }
}

#[test]
fn byte_by_byte_appends_across_a_boundary() {
    for cs in [4096u32, 16384] {
        let fx = fixture(cs);
        let g = fx.store.geometry();
        let c = u64::from(cs);
        let start = pattern(1, 0, (c - 3) as usize);
        let mut io = fx.create_with("grow", &start);
        let mut model = start;
        for off in c - 3..c + 3 {
            let byte = [(off as u8) | 0x80];
            io.write_at(off, &byte).expect("append one byte");
            model.push(byte[0]);
            check(&io, &model, &fx.path("grow"), g)
                .unwrap_or_else(|e| panic!("cs {cs} appended at {off}: {e}"));
        }
        drop(io);
        check(&fx.reopen("grow"), &model, &fx.path("grow"), g)
            .unwrap_or_else(|e| panic!("cs {cs} reopened: {e}"));
    }
}

#[test]
fn empty_writes_and_reads_change_nothing() {
    let fx = fixture(4096);
    let g = fx.store.geometry();
    let data = pattern(3, 0, 5000);
    let mut io = fx.create_with("e", &data);
    // A zero-length write past the end does not extend the object (as write(2)).
    io.write_at(100_000, &[]).expect("empty write");
    io.write_at(4096, &[]).expect("empty write");
    assert_eq!(io.read_at(10, &mut []).expect("empty read"), 0);
    assert_eq!(
        io.read_at(u64::MAX - 1, &mut [0u8; 4]).expect("far read"),
        0
    );
    io.set_len(5000).expect("same-size set_len");
    check(&io, &data, &fx.path("e"), g).expect("unchanged");
}

#[test]
fn writes_beyond_the_largest_offset_are_refused() {
    let fx = fixture(4096);
    let mut io = fx.create("huge");
    let e = io
        .write_at(u64::MAX - 1, &[1, 2, 3])
        .expect_err("an offset overflow must be an error");
    assert_eq!(e.errno(), libc::EINVAL, "{e}");
    assert_eq!(io.size(), 0);
}

#[test]
fn several_mib_write_in_one_call_crosses_write_batches() {
    for cs in [4096u32, 16384] {
        let fx = fixture(cs);
        let g = fx.store.geometry();
        let len = (5 * MIB + 3) as usize;
        let data = pattern(9, 1000, len);
        let mut io = fx.create("big");
        io.write_at(1000, &data).expect("5 MiB write");
        let mut model = vec![0u8; 1000];
        model.extend_from_slice(&data);
        check(&io, &model, &fx.path("big"), g).unwrap_or_else(|e| panic!("cs {cs}: {e}"));
        // Overwrite an unaligned 1 MiB span in the middle (read-modify-write at both ends).
        let over = pattern(10, 3 * MIB / 2 + 17, MIB as usize);
        io.write_at(3 * MIB / 2 + 17, &over).expect("overwrite");
        model_write(&mut model, 3 * MIB / 2 + 17, &over);
        drop(io);
        let io = fx.reopen("big");
        check(&io, &model, &fx.path("big"), g).unwrap_or_else(|e| panic!("cs {cs} reopened: {e}"));
    }
}

#[test]
fn sparse_write_several_mib_past_the_end_reads_zeros() {
    for cs in [4096u32, 16384] {
        let fx = fixture(cs);
        let g = fx.store.geometry();
        let head = pattern(4, 0, 10);
        let mut io = fx.create_with("sparse", &head);
        let off = 4 * MIB + 300_017;
        let tail = pattern(5, off, 10);
        io.write_at(off, &tail).expect("sparse write");
        let mut model = head;
        model_write(&mut model, off, &tail);
        check(&io, &model, &fx.path("sparse"), g).unwrap_or_else(|e| panic!("cs {cs}: {e}"));
        drop(io);
        let io = fx.reopen("sparse");
        check(&io, &model, &fx.path("sparse"), g)
            .unwrap_or_else(|e| panic!("cs {cs} reopened: {e}"));
        let mut mid = vec![0xffu8; 100];
        let n = io.read_at(3 * MIB, &mut mid).expect("read the gap");
        assert_eq!(n, 100);
        assert!(
            mid.iter().all(|b| *b == 0),
            "cs {cs}: the gap reads as zeros"
        );
    }
}

#[test]
fn set_len_grows_and_shrinks_by_mebibytes() {
    for cs in [4096u32, 16384] {
        let fx = fixture(cs);
        let g = fx.store.geometry();
        let c = u64::from(cs);
        let mut model = pattern(6, 0, (2 * c + 9) as usize);
        let mut io = fx.create_with("len", &model);
        for new in [5 * MIB + 1, 3 * c, MIB - 1, c - 1, 0, c + 1] {
            io.set_len(new)
                .unwrap_or_else(|e| panic!("cs {cs} set_len({new}): {e}"));
            model.resize(new as usize, 0);
            check(&io, &model, &fx.path("len"), g)
                .unwrap_or_else(|e| panic!("cs {cs} set_len({new}): {e}"));
        }
        drop(io);
        check(&fx.reopen("len"), &model, &fx.path("len"), g)
            .unwrap_or_else(|e| panic!("cs {cs} reopened: {e}"));
    }
}

#[test]
fn failed_exclusive_create_leaves_the_old_object() {
    let fx = fixture(4096);
    let g = fx.store.geometry();
    let data = pattern(7, 0, 100);
    drop(fx.create_with("x", &data));
    let err = object::create_object(
        &fx.store,
        &fx.bucket,
        &fx.path("x"),
        0o644,
        true,
        &mut |io| io.write_at(0, b"new"),
    )
    .err()
    .expect("exclusive create over an existing object must fail");
    assert_eq!(err.errno(), libc::EEXIST, "{err}");
    check(&fx.reopen("x"), &data, &fx.path("x"), g).expect("old object intact");
    // A fill that fails leaves the old object too, and no temporary behind.
    let err = object::create_object(
        &fx.store,
        &fx.bucket,
        &fx.path("x"),
        0o644,
        false,
        &mut |_| Err(envelopefs::Error::InvalidArgument("fill failed".into())),
    )
    .err()
    .expect("a failing fill must fail the create");
    assert_eq!(err.errno(), libc::EINVAL);
    check(&fx.reopen("x"), &data, &fx.path("x"), g).expect("old object intact");
    let tmp: Vec<_> = std::fs::read_dir(fx.root.join(".envelopefs").join("tmp"))
        .expect("list tmp")
        .collect();
    assert!(tmp.is_empty(), "temporaries left behind: {tmp:?}");
}
