//! Filling a bucket with many small objects fast, offline, through the library.

use super::TestMount;
use envelopefs::keys::crypto::parse_key_file;
use envelopefs::keys::keystore::Secret;
use envelopefs::store::{object, Store, StoreLock};
use std::fs;

/// Fills `bucket` (created with key alias `k`) with `n` small objects through the library,
/// offline (much faster than through the CLI).
pub fn populate(t: &TestMount, bucket: &str, n: usize) {
    let key = parse_key_file(&fs::read(&t.key).expect("populating the store"))
        .expect("populating the store");
    let lock = StoreLock::acquire(&t.store).expect("populating the store");
    let store = Store::open(&t.store, lock, &Secret::KeyFile(key)).expect("populating the store");
    store
        .update_keys(|ks| ks.create_key(Some("k".into())))
        .expect("populating the store");
    let rec = store
        .create_bucket(bucket, Some("k"), 0o755)
        .expect("populating the store");
    let dir = t.store.join(bucket);
    for i in 0..n {
        let sub = dir.join(format!("d{}", i / 1000));
        if i % 1000 == 0 {
            fs::create_dir_all(&sub).expect("populating the store");
        }
        let payload = format!("object {i}\n");
        object::create_object(
            &store,
            &rec,
            &sub.join(format!("o{i}")),
            0o644,
            true,
            &mut |o| o.write_at(0, payload.as_bytes()),
        )
        .expect("populating the store");
    }
}
