//! A store in a real Garage cluster, driven through the CLI: the fixture of the object-store
//! tests that need one store and many commands (tests/s3_ops.rs, tests/s3_faults.rs).
#![allow(dead_code)]

use super::garage::Cluster;
use super::{envelopefs_cmd, run_cmd, CmdOut};
use envelopefs::store::s3::client::{S3Client, S3Options};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Longest one CLI command of these tests may take.
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// A store at `s3://BUCKET/PREFIX` of a running cluster, with a raw key file.
pub struct S3Store {
    /// The cluster (stopped on drop).
    pub cluster: Cluster,
    /// A temp dir for the key and data files.
    pub dir: tempfile::TempDir,
    /// `s3://BUCKET/PREFIX`.
    pub store: String,
    /// The store's prefix in the S3 bucket.
    pub prefix: String,
    /// The key file.
    pub key: PathBuf,
}

impl S3Store {
    /// Starts a three-node cluster and creates a store at `s3://envelopefs-test/PREFIX`.
    #[track_caller]
    pub fn new(prefix: &str) -> S3Store {
        let cluster = Cluster::start();
        let dir = tempfile::Builder::new()
            .prefix("efs3")
            .tempdir_in("/tmp")
            .expect("a temp dir");
        let key = dir.path().join("key");
        random_key(&key);
        let store = format!("s3://{}/{prefix}", cluster.bucket);
        let s = S3Store {
            cluster,
            dir,
            store,
            prefix: prefix.to_string(),
            key,
        };
        let mut c = s.bare_cmd();
        c.args(["init", &s.store, "--key-file"]).arg(&s.key);
        run_cmd(&mut c, TIMEOUT).ok();
        s
    }

    /// `envelopefs` reaching the cluster, without a store or secret.
    pub fn bare_cmd(&self) -> Command {
        let mut c = envelopefs_cmd();
        self.cluster.apply_env(&mut c);
        c
    }

    /// `envelopefs` with the store and key in its environment.
    pub fn cmd(&self) -> Command {
        let mut c = self.bare_cmd();
        c.env("ENVELOPEFS_STORE", &self.store)
            .env("ENVELOPEFS_KEY_FILE", &self.key);
        c
    }

    /// Runs `envelopefs ARGS` on the store.
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> CmdOut {
        let mut c = self.cmd();
        c.args(args);
        run_cmd(&mut c, TIMEOUT)
    }

    /// A path in the temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The S3 key of `rel` below the store's prefix.
    pub fn key_of(&self, rel: &str) -> String {
        format!("{}/{rel}", self.prefix)
    }

    /// A raw S3 client of the cluster (for looking at and damaging what the store wrote).
    pub fn s3(&self) -> S3Client {
        for (k, v) in self.cluster.env() {
            std::env::set_var(k, v);
        }
        S3Client::connect(&self.cluster.bucket, &S3Options::default()).expect("an S3 client")
    }

    /// `object put` of `data` as `bucket/name`.
    #[track_caller]
    pub fn put(&self, bucket: &str, name: &str, data: &[u8]) {
        let f = self.path("put.in");
        fs::write(&f, data).expect("writing the data file");
        let f = f.display().to_string();
        self.cli(&[
            "object",
            "put",
            "--bucket-name",
            bucket,
            "--name",
            name,
            "--file",
            &f,
        ])
        .ok();
    }

    /// `object get` of `bucket/name`, as a result (the command's output on failure).
    pub fn try_get(&self, bucket: &str, name: &str) -> Result<Vec<u8>, CmdOut> {
        let f = self.path("get.out");
        let _ = fs::remove_file(&f);
        let fp = f.display().to_string();
        let o = self.cli(&[
            "object",
            "get",
            "--bucket-name",
            bucket,
            "--name",
            name,
            "--file",
            &fp,
        ]);
        if o.code != 0 {
            return Err(o);
        }
        Ok(fs::read(&f).expect("reading what object get wrote"))
    }

    /// `object get` of `bucket/name`.
    #[track_caller]
    pub fn get(&self, bucket: &str, name: &str) -> Vec<u8> {
        match self.try_get(bucket, name) {
            Ok(d) => d,
            Err(o) => {
                o.ok();
                unreachable!()
            }
        }
    }

    /// `object head` of `bucket/name`, as JSON.
    #[track_caller]
    pub fn head(&self, bucket: &str, name: &str) -> serde_json::Value {
        self.cli(&["object", "head", "--bucket-name", bucket, "--name", name])
            .ok()
            .json()
    }
}

/// A pseudo-random pattern of `len` bytes, different for each seed.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// Writes a random 32-byte key file (mode 0600).
pub fn random_key(path: &Path) {
    let mut k = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut k))
        .expect("reading /dev/urandom");
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(&k))
        .expect("writing the key file");
}

/// A field of a JSON reply (panics naming it if absent).
#[track_caller]
pub fn field<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v.get(name)
        .unwrap_or_else(|| panic!("no field {name:?} in {v}"))
}
