//! Rewrap never rewrites data: bucket re-encrypt work requests, object re-encrypt, and the
//! key-state rules around them, driven through the one command language
//! (`command::parse_line` + `command::execute`) on a real temporary store.

use envelopefs::command::{self, Env, NoStreams};
use envelopefs::format::records::{ObjectHeader, Wrapping};
use envelopefs::keys::crypto::Key32;
use envelopefs::keys::keystore::{parse_key_id, Secret};
use envelopefs::ops::workreq::{self, State, WorkRequest};
use envelopefs::store::object::NoCustomerKeys;
use envelopefs::store::{xattr, Store, StoreLock};
use envelopefs::Error;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

fn secret() -> Secret {
    Secret::KeyFile(Key32::from_bytes([0x33; 32]))
}

struct Fx {
    dir: tempfile::TempDir,
    root: PathBuf,
    store: Store,
}

fn fixture(chunk_size: u32) -> Fx {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("store");
    Store::init(&root, chunk_size, &secret()).expect("init");
    let store = open_store(&root);
    Fx { dir, root, store }
}

fn open_store(root: &Path) -> Store {
    let lock = StoreLock::acquire(root).expect("lock");
    Store::open(root, lock, &secret()).expect("open")
}

fn exec(store: &Store, line: &str) -> envelopefs::Result<Value> {
    let cmd = command::parse_line(line)?;
    let mut streams = NoStreams;
    let mut progress = |_: &WorkRequest| {};
    let mut env = Env {
        customer: &NoCustomerKeys,
        streams: &mut streams,
        progress: &mut progress,
        spawn_work: None,
    };
    command::execute(store, &cmd, &mut env).map(|mut o| o.take())
}

fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed) ^ ((i >> 9) as u8))
        .collect()
}

impl Fx {
    fn ok(&self, line: &str) -> Value {
        exec(&self.store, line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn err(&self, line: &str) -> Error {
        match exec(&self.store, line) {
            Ok(v) => panic!("{line}: expected an error, got {v}"),
            Err(e) => e,
        }
    }

    fn put(&self, bucket: &str, name: &str, data: &[u8]) -> Value {
        let src = self.dir.path().join("put-src");
        fs::write(&src, data).expect("write source");
        self.ok(&format!(
            "object put --bucket-name {bucket} --name {name} --file {}",
            src.display()
        ))
    }

    fn get(&self, bucket: &str, name: &str) -> envelopefs::Result<Vec<u8>> {
        let dst = self.dir.path().join("get-dst");
        let _ = fs::remove_file(&dst);
        exec(
            &self.store,
            &format!(
                "object get --bucket-name {bucket} --name {name} --file {}",
                dst.display()
            ),
        )?;
        Ok(fs::read(&dst).expect("read output"))
    }

    fn backing(&self, bucket: &str, name: &str) -> PathBuf {
        self.root.join(bucket).join(name)
    }

    fn header(&self, bucket: &str, name: &str) -> ObjectHeader {
        let bytes = xattr::get(&self.backing(bucket, name), xattr::HEADER.as_bytes())
            .expect("getxattr")
            .expect("header present");
        ObjectHeader::decode(&bytes).expect("decode header")
    }

    fn key_id(&self, key_ref: &str) -> [u8; 16] {
        self.store.resolve_key(key_ref).expect("resolve key")
    }
}

fn master(h: &ObjectHeader) -> ([u8; 16], u32) {
    match h.wrapping {
        Wrapping::Master { key_id, version } => (key_id, version),
        Wrapping::Customer { .. } => panic!("expected a master-key wrapping"),
    }
}

/// Content bytes and data mtime (seconds and nanoseconds) of a backing file.
#[derive(Debug, PartialEq, Eq)]
struct Data {
    bytes: Vec<u8>,
    mtime: (i64, i64),
}

fn data_of(p: &Path) -> Data {
    let m = fs::metadata(p).expect("stat backing");
    Data {
        bytes: fs::read(p).expect("read backing"),
        mtime: (m.mtime(), m.mtime_nsec()),
    }
}

const SIZES: [(&str, usize); 8] = [
    ("empty", 0),
    ("one", 1),
    ("chunk-minus-1", 4095),
    ("chunk", 4096),
    ("chunk-plus-1", 4097),
    ("dir/nested/obj", 70_003),
    ("dir/two", 12_288),
    ("big", 3 * 1024 * 1024 + 17),
];

/// A store (chunk 4096) with key `k1` assigned to bucket `photos` holding objects of
/// several sizes; returns their plaintexts by name.
fn photos() -> (Fx, BTreeMap<&'static str, Vec<u8>>) {
    let fx = fixture(4096);
    fx.ok("key create --alias k1");
    fx.ok("bucket create --name photos --kms-key-id k1");
    let mut plain = BTreeMap::new();
    for (i, (name, size)) in SIZES.into_iter().enumerate() {
        let data = content(i as u8, size);
        let v = fx.put("photos", name, &data);
        assert_eq!(v["size"], size as u64, "{name}");
        plain.insert(name, data);
    }
    (fx, plain)
}

#[test]
fn bucket_reencrypt_rewraps_headers_and_never_touches_data() {
    let (fx, plain) = photos();
    let k1 = fx.key_id("k1");
    let before: BTreeMap<_, _> = plain
        .keys()
        .map(|n| (*n, data_of(&fx.backing("photos", n))))
        .collect();
    for n in plain.keys() {
        assert_eq!(master(&fx.header("photos", n)), (k1, 1), "{n} starts at v1");
    }
    // Let a coarse-timestamp filesystem tick, so a data rewrite would show in the mtime.
    std::thread::sleep(std::time::Duration::from_millis(20));

    let rotated = fx.ok("key rotate k1");
    assert_eq!(rotated["current_version"], 2);
    let wr = fx.ok("bucket reencrypt --bucket-name photos");
    assert_eq!(wr["status"], "SUCCEEDED", "{wr}");
    assert_eq!(wr["objects_total"], SIZES.len() as u64);
    assert_eq!(wr["objects_rewrapped"], SIZES.len() as u64);
    assert_eq!(wr["objects_skipped"], 0);
    assert_eq!(wr["objects_failed"], 0);
    assert_eq!(wr["target_key_version"], 2);
    assert_eq!(wr["percent_complete"], 100.0);

    for (n, data) in &plain {
        assert_eq!(
            data_of(&fx.backing("photos", n)),
            before[n],
            "{n}: backing bytes or data mtime changed"
        );
        let h = fx.header("photos", n);
        assert_eq!(master(&h), (k1, 2), "{n}: header names the new version");
        assert_eq!(&fx.get("photos", n).expect("get"), data, "{n}: decrypts");
    }

    // Old version off: everything still reads, because nothing is under it any more.
    let disabled = fx.ok("key disable k1 --version 1");
    assert_eq!(disabled["versions"][0]["state"], "DISABLED");
    assert_eq!(disabled["versions"][1]["state"], "ENABLED");
    for (n, data) in &plain {
        assert_eq!(
            &fx.get("photos", n).expect("get after disabling v1"),
            data,
            "{n}"
        );
    }
    // Reopening the store from disk keeps all of it.
    let root = fx.root.clone();
    let Fx { dir, store, .. } = fx;
    drop(store);
    let fx = Fx {
        dir,
        root: root.clone(),
        store: open_store(&root),
    };
    for (n, data) in &plain {
        assert_eq!(&fx.get("photos", n).expect("get after reopen"), data, "{n}");
    }
}

#[test]
fn work_request_is_persisted_with_its_counts_and_a_second_run_skips_everything() {
    let (fx, plain) = photos();
    fx.ok("key rotate k1");
    let wr = fx.ok("bucket reencrypt --bucket-name photos");
    let id = wr["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("wr-") && id.len() == 35, "{id}");
    let file = fx
        .root
        .join(".envelopefs/work-requests")
        .join(format!("{id}.json"));
    let on_disk: Value = serde_json::from_slice(&fs::read(&file).expect("work request file"))
        .expect("work request JSON");
    assert_eq!(on_disk, wr, "the persisted request is the one returned");
    assert_eq!(on_disk["status"], "SUCCEEDED");
    assert_eq!(on_disk["operation_type"], "REENCRYPT_BUCKET");
    assert_eq!(on_disk["bucket_name"], "photos");
    assert_eq!(on_disk["objects_rewrapped"], plain.len() as u64);
    assert!(on_disk["time_finished"].as_u64().is_some());
    assert_eq!(fx.ok(&format!("work-request get {id}")), wr);

    let again = fx.ok("bucket reencrypt --bucket-name photos");
    assert_eq!(again["status"], "SUCCEEDED");
    assert_eq!(again["objects_rewrapped"], 0, "{again}");
    assert_eq!(again["objects_skipped"], plain.len() as u64);
    assert_ne!(again["id"], wr["id"]);
    let list = fx.ok("work-request list --bucket-name photos");
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    assert_eq!(
        fx.ok("work-request list --bucket-name nothing"),
        serde_json::json!([])
    );
}

#[test]
fn bucket_reencrypt_without_an_assigned_key_is_a_clear_error() {
    let fx = fixture(4096);
    fx.ok("bucket create --name plain");
    fx.put("plain", "x", b"data");
    let e = fx.err("bucket reencrypt --bucket-name plain");
    assert_eq!(e.errno(), libc::EINVAL, "{e}");
    assert!(e.to_string().contains("no assigned key"), "{e}");
    let requests = fs::read_dir(fx.root.join(".envelopefs/work-requests"))
        .expect("list")
        .count();
    assert_eq!(requests, 0, "no work request was persisted");
    let e = fx.err("bucket reencrypt --bucket-name missing");
    assert_eq!(e.errno(), libc::ENOENT, "{e}");
}

#[test]
fn objects_created_after_acceptance_are_out_of_scope() {
    let (fx, _) = photos();
    let k1 = fx.key_id("k1");
    fx.ok("key rotate k1");
    let mut wr = workreq::accept(&fx.store, "photos", None).expect("accept");
    assert_eq!(wr.status, State::Accepted);
    assert_eq!(wr.target_key_version, 2);
    // A second request for the same bucket conflicts while this one is unfinished.
    let busy = workreq::accept(&fx.store, "photos", None).expect_err("conflict");
    assert_eq!(busy.errno(), libc::EBUSY, "{busy}");
    // After acceptance: the key moves on to v3 and a new object is written under it.
    fx.ok("key rotate k1");
    fx.put("photos", "late", b"written after the request was accepted");
    assert_eq!(master(&fx.header("photos", "late")), (k1, 3));
    workreq::run(&fx.store, &mut wr, &workreq::never_stop, &mut |_| {}).expect("run");
    assert_eq!(wr.status, State::Succeeded);
    assert_eq!(wr.objects_rewrapped, SIZES.len() as u64);
    assert_eq!(wr.objects_skipped, 1, "the late object is out of scope");
    assert_eq!(
        master(&fx.header("photos", "late")),
        (k1, 3),
        "not rewrapped back to the request's v2"
    );
    assert_eq!(master(&fx.header("photos", "one")), (k1, 2));
}

#[test]
fn an_accepted_request_survives_reopening_the_store_and_resumes() {
    let (fx, plain) = photos();
    let k1 = fx.key_id("k1");
    fx.ok("key rotate k1");
    let wr = workreq::accept(&fx.store, "photos", None).expect("accept");
    let root = fx.root.clone();
    let Fx { dir, store, .. } = fx;
    drop(store); // "crash" before running
    let fx = Fx {
        dir,
        root: root.clone(),
        store: open_store(&root),
    };
    let mut pending = workreq::unfinished(&fx.store).expect("unfinished");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, wr.id);
    let mut wr = pending.remove(0);
    workreq::run(&fx.store, &mut wr, &workreq::never_stop, &mut |_| {}).expect("resume");
    assert_eq!(wr.status, State::Succeeded);
    for n in plain.keys() {
        assert_eq!(master(&fx.header("photos", n)), (k1, 2), "{n}");
    }
    assert!(workreq::unfinished(&fx.store).expect("list").is_empty());
}

#[test]
fn cancel_of_an_accepted_request_is_immediate_and_rewraps_nothing() {
    let (fx, _) = photos();
    let k1 = fx.key_id("k1");
    fx.ok("key rotate k1");
    let wr = workreq::accept(&fx.store, "photos", None).expect("accept");
    let c = fx.ok(&format!("work-request cancel {}", wr.id));
    assert_eq!(c["status"], "CANCELED");
    let mut wr = workreq::load(&fx.store, &wr.id).expect("load");
    workreq::run(&fx.store, &mut wr, &workreq::never_stop, &mut |_| {}).expect("run");
    assert_eq!(wr.status, State::Canceled);
    assert_eq!(master(&fx.header("photos", "one")), (k1, 1));
}

#[test]
fn object_reencrypt_to_another_key_moves_one_object() {
    let (fx, plain) = photos();
    let k1 = fx.key_id("k1");
    let other = fx.ok("key create --alias other");
    let other_id = parse_key_id(other["id"].as_str().expect("id")).expect("key id");
    let before = data_of(&fx.backing("photos", "dir/nested/obj"));
    let v = fx.ok("object reencrypt --bucket-name photos --name dir/nested/obj --kms-key-id other");
    assert_eq!(v["result"], "REWRAPPED");
    assert_eq!(v["key_id"], other["id"]);
    assert_eq!(v["key_version"], 1);
    assert_eq!(
        master(&fx.header("photos", "dir/nested/obj")),
        (other_id, 1)
    );
    assert_eq!(data_of(&fx.backing("photos", "dir/nested/obj")), before);
    assert_eq!(
        fx.get("photos", "dir/nested/obj").expect("get"),
        plain["dir/nested/obj"]
    );
    for n in plain.keys().filter(|n| **n != "dir/nested/obj") {
        assert_eq!(master(&fx.header("photos", n)), (k1, 1), "{n} untouched");
    }
    // Again to the same key: nothing to do.
    let v = fx.ok("object reencrypt --bucket-name photos --name dir/nested/obj --kms-key-id other");
    assert!(
        v["result"]
            .as_str()
            .is_some_and(|r| r.starts_with("SKIPPED")),
        "{v}"
    );
    // Default target: the bucket key's newest version.
    fx.ok("key rotate k1");
    let v = fx.ok("object reencrypt --bucket-name photos --name dir/nested/obj");
    assert_eq!(v["result"], "REWRAPPED");
    assert_eq!(master(&fx.header("photos", "dir/nested/obj")), (k1, 2));
}

#[test]
fn disabled_versions_are_enokey_on_open_and_never_a_destination() {
    let (fx, plain) = photos();
    // v1 of k1 is current; disabling it makes its objects unreadable, not garbage.
    fx.ok("key disable k1");
    let e = fx.get("photos", "one").expect_err("disabled version");
    assert_eq!(e.errno(), libc::ENOKEY, "{e}");
    // New objects cannot be written under a disabled current version.
    let src = fx.dir.path().join("src");
    fs::write(&src, b"x").expect("write");
    let e = fx.err(&format!(
        "object put --bucket-name photos --name new --file {}",
        src.display()
    ));
    assert_eq!(e.errno(), libc::ENOKEY, "{e}");
    // A bucket re-encrypt to a disabled current version is refused before any work.
    let e = fx.err("bucket reencrypt --bucket-name photos");
    assert_eq!(e.errno(), libc::ENOKEY, "{e}");
    // Nor can an object under the disabled version be the source of a rewrap.
    fx.ok("key create --alias dest");
    let e = fx.err("object reencrypt --bucket-name photos --name one --kms-key-id dest");
    assert_eq!(e.errno(), libc::ENOKEY, "{e}");
    fx.ok("key enable k1");
    assert_eq!(
        fx.get("photos", "one").expect("enabled again"),
        plain["one"]
    );

    // A disabled destination: every rewrap to it is refused and the header is unchanged.
    let before = fx.header("photos", "one");
    fx.ok("key disable dest");
    let e = fx.err("object reencrypt --bucket-name photos --name one --kms-key-id dest");
    assert_eq!(e.errno(), libc::ENOKEY, "{e}");
    assert_eq!(fx.header("photos", "one"), before);
    // And after a rotation, disabling only the new current version refuses the bucket
    // re-encrypt too.
    fx.ok("key rotate k1");
    fx.ok("key disable k1 --version 2");
    let e = fx.err("bucket reencrypt --bucket-name photos");
    assert_eq!(e.errno(), libc::ENOKEY, "{e}");
    assert_eq!(fx.header("photos", "one"), before);
}

#[test]
fn customer_keys_round_trip_and_are_skipped_by_bucket_reencrypt() {
    let (fx, plain) = photos();
    let k1 = fx.key_id("k1");
    let key_file = fx.dir.path().join("customer.key");
    // base64 of 32 bytes 0x07.
    fs::write(&key_file, "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n").expect("key");
    let before = data_of(&fx.backing("photos", "chunk"));
    let v = fx.ok(&format!(
        "object reencrypt --bucket-name photos --name chunk --encryption-key-file {}",
        key_file.display()
    ));
    assert_eq!(v["encryption"], "sse-c", "{v}");
    assert_eq!(data_of(&fx.backing("photos", "chunk")), before);
    let e = fx
        .get("photos", "chunk")
        .expect_err("customer key not loaded");
    assert_eq!(e.errno(), libc::ENOKEY, "{e}");

    fx.ok("key rotate k1");
    let wr = fx.ok("bucket reencrypt --bucket-name photos");
    assert_eq!(wr["status"], "SUCCEEDED");
    assert_eq!(
        wr["objects_skipped"], 1,
        "customer-keyed object skipped: {wr}"
    );
    assert_eq!(wr["objects_rewrapped"], SIZES.len() as u64 - 1);

    let v = fx.ok(&format!(
        "object reencrypt --bucket-name photos --name chunk --source-encryption-key-file {}",
        key_file.display()
    ));
    assert_eq!(v["encryption"], "master");
    assert_eq!(master(&fx.header("photos", "chunk")), (k1, 2));
    assert_eq!(data_of(&fx.backing("photos", "chunk")), before);
    assert_eq!(fx.get("photos", "chunk").expect("get"), plain["chunk"]);
}

#[test]
fn a_corrupt_object_fails_the_request_and_the_rest_are_rewrapped() {
    let (fx, plain) = photos();
    let k1 = fx.key_id("k1");
    xattr::set(
        &fx.backing("photos", "one"),
        xattr::HEADER.as_bytes(),
        b"garbage",
        0,
    )
    .expect("setxattr");
    fx.ok("key rotate k1");
    let wr = fx.ok("bucket reencrypt --bucket-name photos");
    assert_eq!(wr["status"], "FAILED", "{wr}");
    assert_eq!(wr["objects_failed"], 1);
    assert_eq!(wr["objects_rewrapped"], plain.len() as u64 - 1);
    assert_eq!(wr["errors"][0]["object"], "one");
    assert_eq!(master(&fx.header("photos", "big")), (k1, 2));
}
