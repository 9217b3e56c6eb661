//! The write journal (src/store/journal.rs) at the core, without a mount: a record left
//! active by a process that died (here: a guard that is never dropped) is applied when the
//! store is next opened, and only in the boot that wrote it.

use envelopefs::keys::crypto::Key32;
use envelopefs::keys::keystore::Secret;
use envelopefs::store::journal::Saved;
use envelopefs::store::object::{self, NoCustomerKeys};
use envelopefs::store::{Store, StoreLock};
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

fn secret() -> Secret {
    Secret::KeyFile(Key32::from_bytes([0x33; 32]))
}

fn open(root: &Path) -> Store {
    let lock = StoreLock::acquire(root).expect("lock");
    Store::open(root, lock, &secret()).expect("open store")
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// Makes an object of 10,000 bytes, then starts a journaled undo of backing bytes 24..4124
/// (chunk 0) and tears that chunk the way a killed pwrite would, leaving the record active.
/// Returns the store root (the store is closed again).
fn torn_object(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("s");
    Store::init(&root, 4096, &secret()).expect("init");
    let store = open(&root);
    let bucket = store.create_bucket("b", None, 0o755).expect("bucket");
    let path = root.join("b/o");
    let mut obj = object::create_object(&store, &bucket, &path, 0o644, true, &mut |_| Ok(()))
        .expect("create");
    obj.write_at(0, &data(10_000)).expect("write");
    let md = fs::metadata(&path).expect("stat");
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    let journal = store.journal().expect("the store has a journal");
    let guard = journal
        .begin(
            &file,
            (md.dev(), md.ino()),
            obj.object_id(),
            24,
            Saved::FromFile(4100),
            md.len(),
        )
        .expect("begin");
    // What a pwrite cut at the first page boundary leaves: new bytes up to 4096 only.
    file.write_all_at(&[0xee; 4072], 24).expect("tear");
    // The process dies: the record is never cleared.
    std::mem::forget(guard);
    drop(obj);
    drop(store);
    root
}

fn read_all(root: &Path) -> envelopefs::Result<Vec<u8>> {
    let store = open(root);
    let bucket = store.bucket("b")?;
    let obj = object::open_object(&store, &bucket, &root.join("b/o"), false, &NoCustomerKeys)?;
    let mut buf = vec![0u8; obj.size() as usize];
    let n = obj.read_at(0, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

#[test]
fn an_active_record_is_undone_when_the_store_is_opened() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = torn_object(dir.path());
    let store = open(&root);
    assert_eq!(store.recovered_writes(), 1, "one record applied at open");
    drop(store);
    assert_eq!(read_all(&root).expect("reads after the undo"), data(10_000));
}

#[test]
fn a_record_from_an_earlier_boot_is_not_applied() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = torn_object(dir.path());
    // The journal as a reboot would find it: written under another boot id.
    let jpath = root.join(".envelopefs/journal");
    let j = fs::OpenOptions::new()
        .write(true)
        .open(&jpath)
        .expect("journal");
    let mut other = envelopefs::store::journal::boot_id();
    other[0] ^= 0xff;
    j.write_all_at(&other, 24).expect("boot id");
    drop(j);
    let store = open(&root);
    assert_eq!(store.recovered_writes(), 0, "a stale record is discarded");
    drop(store);
    let e = read_all(&root).expect_err("the torn chunk stays torn (detected, never returned)");
    assert_eq!(e.errno(), libc::EIO, "{e}");
    // Discarded for good: the journal now carries this boot's id, and the stale record must
    // not come back as one of this boot.
    let store = open(&root);
    assert_eq!(
        store.recovered_writes(),
        0,
        "nothing to apply at a later open"
    );
    drop(store);
    assert_eq!(read_all(&root).map_err(|e| e.errno()), Err(libc::EIO));
}

#[test]
fn a_journal_is_reused_across_opens_and_starts_free() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("s");
    Store::init(&root, 4096, &secret()).expect("init");
    let store = open(&root);
    let bucket = store.create_bucket("b", None, 0o755).expect("bucket");
    let mut obj =
        object::create_object(&store, &bucket, &root.join("b/o"), 0o644, true, &mut |_| {
            Ok(())
        })
        .expect("create");
    obj.write_at(0, &data(5000))
        .expect("write: a journal slot is used");
    drop(obj);
    drop(store);
    let jpath = root.join(".envelopefs/journal");
    let blocks = fs::metadata(&jpath).expect("journal").blocks();
    assert!(
        blocks >= 8 * 64,
        "the used slot's blocks are allocated: {blocks}"
    );
    drop(open(&root));
    assert_eq!(
        fs::metadata(&jpath).expect("journal").blocks(),
        blocks,
        "opening the store again keeps the journal's blocks (no cut and regrow)"
    );
    let j = envelopefs::store::journal::read_records(&root.join(".envelopefs")).expect("read");
    assert!(j.records.is_empty() && j.stale == 0);
}

#[test]
fn a_damaged_journal_stops_the_open_with_what_to_do_and_removing_it_opens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("s");
    Store::init(&root, 4096, &secret()).expect("init");
    drop(open(&root));
    let jpath = root.join(".envelopefs/journal");
    let j = fs::OpenOptions::new()
        .write(true)
        .open(&jpath)
        .expect("journal");
    j.write_all_at(b"garbage!", 0).expect("damage");
    drop(j);
    let lock = StoreLock::acquire(&root).expect("lock");
    let e = match Store::open(&root, lock, &secret()) {
        Ok(_) => panic!("a damaged journal must stop the open"),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert_eq!(e.errno(), libc::EIO, "{msg}");
    assert!(
        msg.contains("journal") && msg.contains("remove it"),
        "{msg}"
    );
    fs::remove_file(&jpath).expect("remove");
    let store = open(&root);
    assert_eq!(store.recovered_writes(), 0);
}
