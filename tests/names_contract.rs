//! The contract of the storage seam's names interface (`store::names::Names`), checked
//! directly, without the vfs or FUSE: what the filesystem relies on of every backend. The
//! checks take a `&dyn Names`; the local store is the first backend to run them, and the
//! object store's names (in a real three-node Garage cluster) run the same function, with
//! what they refuse instead of hard links and exchanges.

mod common;

use envelopefs::error::Error;
use envelopefs::keys::crypto::Key32;
use envelopefs::keys::keystore::Secret;
use envelopefs::store::names::{Kind, Names, SetAttributes, SetTime};
use envelopefs::store::object::{self, Create};
use envelopefs::store::{Store, StoreLock};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

fn secret() -> Secret {
    Secret::KeyFile(Key32::from_bytes([0x5a; 32]))
}

fn errno(r: Result<impl std::fmt::Debug, Error>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.errno(),
    }
}

/// Creates object `name` (in bucket `b`) holding `data`, through the backend's `NewObject`.
fn put(store: &Store, b: &str, name: &str, data: &[u8]) {
    let rec = store.bucket(b).expect("bucket record");
    object::create_object_in(
        store,
        b,
        &rec,
        Path::new(name),
        &Create::default(),
        &mut |io| io.write_at(0, data),
    )
    .expect("create object");
}

/// What a backend's names can do.
#[derive(Clone, Copy)]
struct Caps {
    /// Unlinked objects' deletion is deferred.
    deferred: bool,
    /// Hard links and RENAME_EXCHANGE (else EPERM and EINVAL).
    links: bool,
}

/// The checks. `store` has a bucket `b` and nothing in it; `names` are its names.
fn contract(store: &Store, names: &dyn Names, caps: Caps) {
    let expect_deferred = caps.deferred;
    let p = Path::new;

    // The root lists the bucket as a directory; a bucket starts empty.
    let root = names.list(p("")).expect("list root");
    assert!(
        root.iter().any(|e| e.name == "b" && e.kind == Kind::Dir),
        "the bucket is listed at the root as a directory: {root:?}"
    );
    assert!(names.list(p("b")).expect("list bucket").is_empty());
    assert_eq!(errno(names.stat(p("b/none"))), libc::ENOENT);

    // Directories: mkdir, EEXIST, nested entries, ENOTEMPTY, rmdir.
    names.mkdir(p("b/d"), 0o750).expect("mkdir");
    assert_eq!(errno(names.mkdir(p("b/d"), 0o750)), libc::EEXIST);
    let d = names.stat(p("b/d")).expect("stat dir");
    assert_eq!(d.kind, Kind::Dir);
    put(store, "b", "d/obj", b"hello, names");
    // Made behind the names' back, as a command through the control file does: said so.
    names.invalidate(p("b/d/obj"));
    assert_eq!(errno(names.rmdir(p("b/d"))), libc::ENOTEMPTY);

    // An object: a regular file whose stored size is the ciphertext's (more than the data).
    let o = names.stat(p("b/d/obj")).expect("stat object");
    assert_eq!(o.kind, Kind::File);
    assert!(
        o.size > 12,
        "stored size {} includes preamble and tags",
        o.size
    );
    assert_eq!(o.nlink, 1);
    let listed = names.list(p("b/d")).expect("list dir");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "obj");
    assert_eq!(listed[0].kind, Kind::File);
    assert_eq!(listed[0].ino, o.ino, "a listing's node number is stat's");
    assert_eq!(
        names.walk_objects(p("b")).expect("walk"),
        vec![p("d/obj").to_path_buf()]
    );

    // Opening its content: stat_open agrees with stat; the header reads through the seam.
    let f = names.open(p("b/d/obj"), true).expect("open object");
    assert_eq!(names.stat_open(&f).expect("fstat").ino, o.ino);
    let hf = names
        .open_for_header(p("b/d/obj"))
        .expect("open for header");
    object::read_header(&*hf, "b/d/obj").expect("the object has its header");
    assert_eq!(
        errno(names.open_for_header(p("b/d/none")).map(|_| ())),
        libc::ENOENT
    );

    // Attributes by name and on the open content, in the documented order.
    names
        .set_attributes(
            p("b/d/obj"),
            &SetAttributes {
                mode: Some(0o640),
                mtime: Some(SetTime::At(UNIX_EPOCH + Duration::from_secs(1_000_000))),
                ..SetAttributes::default()
            },
        )
        .expect("chmod + utimens");
    let o = names.stat(p("b/d/obj")).expect("stat");
    assert_eq!(o.mode & 0o7777, 0o640);
    assert_eq!(o.mtime, UNIX_EPOCH + Duration::from_secs(1_000_000));
    names
        .set_open_attributes(
            &f,
            &SetAttributes {
                mode: Some(0o600),
                ..SetAttributes::default()
            },
        )
        .expect("fchmod");
    assert_eq!(names.stat(p("b/d/obj")).expect("stat").mode & 0o7777, 0o600);

    // Symlinks: readlink gives the target back; a mode change passes over a symlink; open
    // does not follow one.
    names
        .symlink(p("../elsewhere/x"), p("b/link"))
        .expect("symlink");
    assert_eq!(names.stat(p("b/link")).expect("lstat").kind, Kind::Symlink);
    assert_eq!(
        names.readlink(p("b/link")).expect("readlink"),
        p("../elsewhere/x")
    );
    names
        .set_attributes(
            p("b/link"),
            &SetAttributes {
                mode: Some(0o600),
                ..SetAttributes::default()
            },
        )
        .expect("a mode on a symlink is passed over");
    assert_eq!(errno(names.open(p("b/link"), false)), libc::ELOOP);

    if caps.links {
        // Hard links share the node; rename moves a name atomically; NOREPLACE refuses.
        names.link(p("b/d/obj"), p("b/second")).expect("link");
        let second = names.stat(p("b/second")).expect("stat link");
        assert_eq!((second.ino, second.nlink), (o.ino, 2));
        names
            .rename(p("b/second"), p("b/third"), 0)
            .expect("rename");
        assert_eq!(errno(names.stat(p("b/second"))), libc::ENOENT);
        assert_eq!(names.stat(p("b/third")).expect("renamed").ino, o.ino);
        assert_eq!(
            errno(names.rename(p("b/third"), p("b/link"), libc::RENAME_NOREPLACE)),
            libc::EEXIST
        );
        names
            .rename(p("b/third"), p("b/link"), libc::RENAME_EXCHANGE)
            .expect("exchange");
    } else {
        // No hard links (EPERM) and no exchange (EINVAL); a rename keeps the node number
        // and replaces what was at the new name.
        assert_eq!(errno(names.link(p("b/d/obj"), p("b/second"))), libc::EPERM);
        put(store, "b", "second", b"another object");
        names.invalidate(p("b/second"));
        let second = names.stat(p("b/second")).expect("stat second");
        names
            .rename(p("b/second"), p("b/third"), 0)
            .expect("rename");
        assert_eq!(errno(names.stat(p("b/second"))), libc::ENOENT);
        assert_eq!(names.stat(p("b/third")).expect("renamed").ino, second.ino);
        assert_eq!(
            errno(names.rename(p("b/third"), p("b/link"), libc::RENAME_NOREPLACE)),
            libc::EEXIST
        );
        assert_eq!(
            errno(names.rename(p("b/third"), p("b/link"), libc::RENAME_EXCHANGE)),
            libc::EINVAL
        );
        // As the exchange leaves them: a file at b/link, the symlink at b/third.
        names
            .rename(p("b/link"), p("b/sym"), 0)
            .expect("rename symlink");
        names
            .rename(p("b/third"), p("b/link"), 0)
            .expect("rename file");
        names
            .rename(p("b/sym"), p("b/third"), 0)
            .expect("rename symlink back");
        // A directory moves with what is in it.
        names.mkdir(p("b/m"), 0o755).expect("mkdir");
        put(store, "b", "m/inner", b"inner");
        names.invalidate(p("b/m/inner"));
        names
            .rename(p("b/m"), p("b/n"), 0)
            .expect("rename a directory");
        assert_eq!(errno(names.stat(p("b/m"))), libc::ENOENT);
        assert_eq!(names.stat(p("b/n/inner")).expect("moved").kind, Kind::File);
        names.unlink(p("b/n/inner")).expect("unlink");
        names.rmdir(p("b/n")).expect("rmdir");
    }
    assert_eq!(names.stat(p("b/link")).expect("exchanged").kind, Kind::File);
    assert_eq!(
        names.stat(p("b/third")).expect("exchanged").kind,
        Kind::Symlink
    );

    // User xattrs: set, get, list, remove; ENODATA once gone.
    names
        .xattr_set(p("b/d/obj"), b"user.colour", b"blue", 0)
        .expect("setxattr");
    assert_eq!(
        names.xattr_get(p("b/d/obj"), b"user.colour").expect("get"),
        Some(b"blue".to_vec())
    );
    assert!(names
        .xattr_list(p("b/d/obj"))
        .expect("list")
        .contains(&b"user.colour".to_vec()));
    names
        .xattr_remove(p("b/d/obj"), b"user.colour")
        .expect("removexattr");
    assert_eq!(
        names.xattr_get(p("b/d/obj"), b"user.colour").expect("get"),
        None
    );
    assert_eq!(
        errno(names.xattr_remove(p("b/d/obj"), b"user.colour")),
        libc::ENODATA
    );

    // A fifo is a plain node.
    names
        .mknod(p("b/pipe"), libc::S_IFIFO | 0o644, 0)
        .expect("mknod fifo");
    assert_eq!(names.stat(p("b/pipe")).expect("stat fifo").kind, Kind::Fifo);

    // Unlink: the names go; the open content still reads (deferred or not).
    names
        .unlink(p("b/link"))
        .expect("unlink the hard link (or the other object)");
    let deferred = names.unlink(p("b/d/obj")).expect("unlink the object");
    assert_eq!(
        deferred, expect_deferred,
        "an object's last name: deferred deletion {expect_deferred} expected"
    );
    assert_eq!(errno(names.stat(p("b/d/obj"))), libc::ENOENT);
    let mut buf = [0u8; 4];
    std::os::unix::fs::FileExt::read_at(&f, &mut buf, 0).expect("the open content reads");
    names
        .rmdir(p("b/d"))
        .expect("rmdir of the emptied directory");
    names.sync_dir(p("b")).expect("sync_dir");
    let s = names.statfs().expect("statfs");
    assert!(s.blocks > 0 && s.bsize > 0, "{s:?}");
    names.make_room();
    names.shutdown();
}

/// A new local store with a bucket `b` (the temp dir holding it, its root, the store).
fn local_store() -> (tempfile::TempDir, std::path::PathBuf, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("store");
    Store::init(&root, 4096, &secret()).expect("init");
    let lock = StoreLock::acquire(&root).expect("lock");
    let store = Store::open(&root, lock, &secret()).expect("open");
    store.create_bucket("b", None, 0o755).expect("bucket");
    (dir, root, store)
}

#[test]
fn local_names_keep_the_contract_with_deferred_deletion() {
    let (_dir, root, store) = local_store();
    let names = store.names(true).expect("a local store has names");
    contract(
        &store,
        &*names,
        Caps {
            deferred: true,
            links: true,
        },
    );
    // The deferred deletion emptied at shutdown: the trash holds nothing.
    let left: Vec<_> = std::fs::read_dir(root.join(".envelopefs/trash"))
        .expect("the trash directory")
        .filter_map(|e| e.ok())
        .collect();
    assert!(left.is_empty(), "the trash still holds {left:?}");
}

#[test]
fn local_names_keep_the_contract_without_deferred_deletion() {
    let (_dir, _root, store) = local_store();
    let names = store.names(false).expect("a local store has names");
    contract(
        &store,
        &*names,
        Caps {
            deferred: false,
            links: true,
        },
    );
    // Nothing waits: make_room has nothing to free.
    assert!(!names.make_room());
}

#[test]
fn object_store_names_keep_the_contract() {
    use envelopefs::store::s3::backend::{ObjectStoreBackend, S3Location};
    use envelopefs::store::s3::client::{S3Client, S3Options};
    use envelopefs::store::s3::names::S3Names;
    use std::sync::Arc;
    let cluster = common::garage::Cluster::start();
    // The client reads its key and region from the environment, as the CLI's does.
    for (k, v) in cluster.env() {
        std::env::set_var(k, v);
    }
    let opts = S3Options {
        endpoint_url: Some(cluster.env()[0].1.clone()),
        ..S3Options::default()
    };
    let client = S3Client::connect(&cluster.bucket, &opts).expect("connect");
    let staging = tempfile::tempdir().expect("staging dir");
    let at = S3Location {
        bucket: cluster.bucket.clone(),
        prefix: "contract".into(),
    };
    let backend = Arc::new(ObjectStoreBackend::new(
        client,
        at,
        staging.path().to_path_buf(),
    ));
    Store::init_on(&*backend, 4096, &secret()).expect("init");
    let names = Arc::new(S3Names::new(Arc::clone(&backend), Duration::from_secs(60)));
    let store = Store::open_on(backend, None, &secret())
        .expect("open")
        .with_names(names.clone());
    store.create_bucket("b", None, 0o755).expect("bucket");
    contract(
        &store,
        &*names,
        Caps {
            deferred: false,
            links: false,
        },
    );
}
