//! A store that lives in an object store, driven through the CLI against a real three-node
//! Garage cluster: init, keys, buckets, objects (small and multipart), a key rotation and a
//! bucket re-encrypt with work requests, the ETag kept by the rewrap, the lease that keeps a
//! second process out, and clear errors for a wrong endpoint or wrong credentials.
//!
//! One test function runs the cases in turn on one cluster (starting one takes seconds).
//! Garage missing is a failure that says so (common::garage), never a skip.
#![allow(clippy::unwrap_used)]

mod common;

use common::garage::Cluster;
use common::{envelopefs_cmd, fails_with, run_cmd, CmdOut};
use envelopefs::store::s3::client::{S3Client, S3Options, MULTIPART_THRESHOLD};
use serde_json::Value;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(300);
const PREFIX: &str = "vault";

struct Fixture {
    cluster: Cluster,
    dir: tempfile::TempDir,
    store: String,
    key: PathBuf,
}

impl Fixture {
    fn cmd(&self) -> Command {
        let mut c = envelopefs_cmd();
        self.cluster.apply_env(&mut c);
        c
    }

    /// `envelopefs ARGS` with the store and key given through the environment.
    #[track_caller]
    /// `object head --bucket-name BUCKET --name NAME`.
    fn object_head(&self, bucket: &str, name: &str) -> CmdOut {
        self.cli(&["object", "head", "--bucket-name", bucket, "--name", name])
    }

    /// `bucket reencrypt --bucket-name BUCKET --wait-for-state SUCCEEDED`: its work request.
    fn reencrypt_and_wait(&self, bucket: &str) -> serde_json::Value {
        self.cli(&[
            "bucket",
            "reencrypt",
            "--bucket-name",
            bucket,
            "--wait-for-state",
            "SUCCEEDED",
        ])
        .ok()
        .json()
    }

    fn cli(&self, args: &[&str]) -> CmdOut {
        let mut c = self.cmd();
        c.env("ENVELOPEFS_STORE", &self.store)
            .env("ENVELOPEFS_KEY_FILE", &self.key)
            .args(args);
        run_cmd(&mut c, TIMEOUT)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s3(&self) -> S3Client {
        for (k, v) in self.cluster.env() {
            std::env::set_var(k, v);
        }
        S3Client::connect(&self.cluster.bucket, &S3Options::default()).unwrap()
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn random_key(path: &Path) {
    let mut k = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut k))
        .unwrap();
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(&k))
        .unwrap();
}

fn field<'a>(v: &'a Value, name: &str) -> &'a Value {
    v.get(name)
        .unwrap_or_else(|| panic!("no field {name:?} in {v}"))
}

#[test]
fn a_store_in_a_three_node_garage_cluster() {
    let cluster = Cluster::start();
    let dir = tempfile::Builder::new()
        .prefix("efs3")
        .tempdir_in("/tmp")
        .unwrap();
    let key = dir.path().join("key");
    random_key(&key);
    let store = format!("s3://{}/{PREFIX}", cluster.bucket);
    let f = Fixture {
        cluster,
        dir,
        store,
        key,
    };

    init_and_buckets(&f);
    objects_round_trip(&f);
    rotation_and_bucket_reencrypt(&f);
    the_lease_refuses_a_second_process(&f);
    wrong_endpoint_and_credentials(&f);
}

fn init_and_buckets(f: &Fixture) {
    let mut c = f.cmd();
    c.args(["init", &f.store, "--key-file"]).arg(&f.key);
    run_cmd(&mut c, TIMEOUT).ok();
    // A second init of the same place is refused and changes nothing.
    let mut c = f.cmd();
    c.args(["init", &f.store, "--key-file"]).arg(&f.key);
    run_cmd(&mut c, TIMEOUT).fails();

    // The records are where FORMAT.md says.
    let s3 = f.s3();
    for k in ["config.json", "keystore"] {
        let key = format!("{PREFIX}/.envelopefs/{k}");
        assert!(s3.head(&key).unwrap().is_some(), "no {key}");
    }

    f.cli(&["bucket", "create", "--name", "photos"]).ok();
    f.cli(&["bucket", "create", "--name", "docs"]).ok();
    assert!(s3
        .head(&format!("{PREFIX}/.envelopefs/buckets/photos"))
        .unwrap()
        .is_some());
    let list = f.cli(&["bucket", "list"]).ok().json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap_or_else(|| panic!("bucket list: {list}"))
        .iter()
        .map(|b| field(b, "name").as_str().unwrap())
        .collect();
    assert_eq!(names, ["docs", "photos"]);
    fails_with(f.cli(&["bucket", "create", "--name", "photos"]), "photos");
}

fn objects_round_trip(f: &Fixture) {
    let small = pattern(10_000, 1);
    let large = pattern(MULTIPART_THRESHOLD as usize + 3 * 1024 * 1024 + 17, 2);
    fs::write(f.path("small"), &small).unwrap();
    fs::write(f.path("large"), &large).unwrap();
    let small_p = f.path("small").display().to_string();
    let large_p = f.path("large").display().to_string();
    f.cli(&[
        "object",
        "put",
        "--bucket-name",
        "photos",
        "--name",
        "a/small",
        "--file",
        &small_p,
    ])
    .ok();
    f.cli(&[
        "object",
        "put",
        "--bucket-name",
        "photos",
        "--name",
        "large",
        "--file",
        &large_p,
    ])
    .ok();
    for i in 0..20 {
        let name = format!("many/{i:02}");
        f.cli(&[
            "object",
            "put",
            "--bucket-name",
            "photos",
            "--name",
            &name,
            "--file",
            &small_p,
        ])
        .ok();
    }

    // The body is ciphertext: no plaintext run of the file is in the S3 object.
    let s3 = f.s3();
    let (body, head) = s3
        .get(&format!("{PREFIX}/photos/a/small"))
        .unwrap()
        .unwrap();
    assert!(
        !body.windows(64).any(|w| w == &small[1000..1064]),
        "plaintext in the S3 object"
    );
    assert!(
        head.metadata.contains_key("envelopefs-header"),
        "no header metadata: {:?}",
        head.metadata
    );

    for (name, data) in [("a/small", &small), ("large", &large)] {
        let out = f.path("out");
        let _ = fs::remove_file(&out);
        let out_p = out.display().to_string();
        f.cli(&[
            "object",
            "get",
            "--bucket-name",
            "photos",
            "--name",
            name,
            "--file",
            &out_p,
        ])
        .ok();
        assert!(fs::read(&out).unwrap() == *data, "{name} read back differs");
    }
    let h = f.object_head("photos", "large").ok().json();
    assert_eq!(field(&h, "size").as_u64(), Some(large.len() as u64), "{h}");

    // A missing object is a clear error.
    fails_with(f.object_head("photos", "nope"), "nope");
}

fn rotation_and_bucket_reencrypt(f: &Fixture) {
    let s3 = f.s3();
    let large_key = format!("{PREFIX}/photos/large");
    let before = s3.head(&large_key).unwrap().unwrap();
    assert!(
        before.etag.contains('-'),
        "the large object should be a multipart upload: ETag {}",
        before.etag
    );
    let old_header = before.metadata["envelopefs-header"].clone();
    let h0 = f.object_head("photos", "large").ok().json();

    // A bucket re-encrypt needs a key assigned to the bucket (DESIGN).
    f.cli(&[
        "bucket",
        "update",
        "--name",
        "photos",
        "--kms-key-id",
        "default",
    ])
    .ok();
    f.cli(&["key", "rotate", "default"]).ok();
    let wr = f.reencrypt_and_wait("photos");
    assert_eq!(field(&wr, "status").as_str(), Some("SUCCEEDED"), "{wr}");
    assert_eq!(field(&wr, "percent_complete").as_f64(), Some(100.0), "{wr}");
    assert_eq!(field(&wr, "objects_rewrapped").as_u64(), Some(22), "{wr}");
    let id = field(&wr, "id").as_str().unwrap().to_string();

    // The header changed, the data and its ETag did not (no re-copy by the server).
    let after = s3.head(&large_key).unwrap().unwrap();
    assert_eq!(
        after.etag, before.etag,
        "a rewrap must not re-copy the data"
    );
    let new_header = after.metadata["envelopefs-header"].clone();
    assert_ne!(new_header, old_header, "the header was not rewritten");
    let h1 = f.object_head("photos", "large").ok().json();
    assert_ne!(
        field(&h1, "key_version"),
        field(&h0, "key_version"),
        "{h0} -> {h1}"
    );

    // The work request is a record in the store, listed and readable.
    assert!(s3
        .head(&format!("{PREFIX}/.envelopefs/work-requests/{id}.json"))
        .unwrap()
        .is_some());
    let got = f.cli(&["work-request", "get", &id]).ok().json();
    assert_eq!(field(&got, "status").as_str(), Some("SUCCEEDED"));
    let list = f
        .cli(&["work-request", "list", "--bucket-name", "photos"])
        .ok()
        .json();
    assert!(list.to_string().contains(&id), "{list}");
    f.cli(&["work-request", "wait", &id]).ok();

    // Again: everything is under the newest version already, so every object is skipped.
    let wr2 = f.reencrypt_and_wait("photos");
    assert_eq!(field(&wr2, "objects_rewrapped").as_u64(), Some(0), "{wr2}");

    // Data still reads back.
    let out = f.path("out2");
    let out_p = out.display().to_string();
    f.cli(&[
        "object",
        "get",
        "--bucket-name",
        "photos",
        "--name",
        "large",
        "--file",
        &out_p,
    ])
    .ok();
    assert_eq!(
        fs::read(&out).unwrap().len() as u64,
        field(&h1, "size").as_u64().unwrap()
    );
}

fn the_lease_refuses_a_second_process(f: &Fixture) {
    // A long-running command holds the lease: a reader on stdin keeps `object put` waiting.
    let mut c = f.cmd();
    c.env("ENVELOPEFS_STORE", &f.store)
        .env("ENVELOPEFS_KEY_FILE", &f.key)
        .args(["object", "put", "--bucket-name", "docs", "--name", "held"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut holder = c.spawn().unwrap();
    let s3 = f.s3();
    let lease = format!("{PREFIX}/.envelopefs/lease");
    let t0 = std::time::Instant::now();
    while s3.head(&lease).unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(60), "no lease taken");
        std::thread::sleep(Duration::from_millis(50));
    }
    let msg = fails_with(f.cli(&["bucket", "list"]), "lease");
    assert!(
        msg.contains(&holder.id().to_string()),
        "the refusal should name the holder's pid: {msg}"
    );
    {
        let mut stdin = holder.stdin.take().unwrap();
        stdin.write_all(b"held data").unwrap();
    }
    assert!(holder.wait().unwrap().success());
    // Released: the next command goes through, and sees the object.
    f.object_head("docs", "held").ok();
}

fn wrong_endpoint_and_credentials(f: &Fixture) {
    // Nothing listens on port 9 of loopback.
    let mut c = f.cmd();
    c.env("ENVELOPEFS_STORE", &f.store)
        .env("ENVELOPEFS_KEY_FILE", &f.key)
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .args(["bucket", "list"]);
    let o = run_cmd(&mut c, TIMEOUT);
    fails_with(o, "127.0.0.1:9");

    let mut c = f.cmd();
    c.env("ENVELOPEFS_STORE", &f.store)
        .env("ENVELOPEFS_KEY_FILE", &f.key)
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret-0123456789")
        .args(["bucket", "list"]);
    let o = run_cmd(&mut c, TIMEOUT);
    let msg = fails_with(o, &f.cluster.endpoint);
    assert!(
        !msg.contains("not-the-secret-0123456789") && !msg.contains(&f.cluster.secret_key),
        "a secret was printed: {msg}"
    );
}
