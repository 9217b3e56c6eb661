//! Key hygiene: a full scenario at trace log level (mount, buckets, keys, rotation, bucket
//! and object re-encrypt, a customer key, fsck, header export, errors, offline commands),
//! then every key in play (key file, every master key version, every DEK, the customer
//! key) is searched for in every log and output, in every usual spelling. And the mount
//! process has core dumps off and its memory locked.

mod common;

use base64::Engine;
use common::*;
use envelopefs::keys::crypto::{parse_key_file, Key32};
use envelopefs::keys::keystore::{KeyStore, Secret};
use envelopefs::store::object::{self, CustomerKeys};
use envelopefs::store::{Store, StoreLock};
use std::fs;
use std::path::{Path, PathBuf};

struct Ring(Key32);

impl CustomerKeys for Ring {
    fn customer_key(&self, fp: &[u8; 32]) -> Option<Key32> {
        (envelopefs::keys::crypto::customer_fingerprint(&self.0) == *fp).then(|| self.0.clone())
    }
}

fn spellings(key: &[u8]) -> Vec<Vec<u8>> {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64n = base64::engine::general_purpose::STANDARD_NO_PAD;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let dec: Vec<String> = key[..6].iter().map(|b| b.to_string()).collect();
    vec![
        key.to_vec(),
        hex.clone().into_bytes(),
        hex.to_uppercase().into_bytes(),
        hex[..24].to_string().into_bytes(),
        b64.encode(key).into_bytes(),
        b64n.encode(&key[..18]).into_bytes(),
        url.encode(&key[..18]).into_bytes(),
        format!("[{}", dec.join(", ")).into_bytes(),
    ]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn files_below(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_below(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn keep(texts: &mut Vec<(String, Vec<u8>)>, what: &str, o: &CmdOut) {
    texts.push((format!("{what} stdout"), o.stdout.clone().into_bytes()));
    texts.push((format!("{what} stderr"), o.stderr.clone().into_bytes()));
}

fn trace(m: &TestMount, args: &[&str]) -> CmdOut {
    let mut a = vec!["--log-level", "trace"];
    a.extend_from_slice(args);
    m.cli_store(&a)
}

#[test]
fn no_key_in_any_log_or_output_of_a_full_scenario() {
    let mut m = TestMount::init_only(None);
    m.mount_env.push(("RUST_LOG".into(), "trace".into()));
    m.mount();
    let mut texts: Vec<(String, Vec<u8>)> = Vec::new();
    fs::create_dir(m.p("b")).expect("bucket b");
    fs::create_dir(m.p("c")).expect("bucket c");
    for i in 0..4 {
        write_pattern(&m.p(&format!("b/f{i}")), i, 5000 + i as usize * 3000);
        write_pattern(&m.p(&format!("c/g{i}")), 10 + i, 7000);
    }
    keep(
        &mut texts,
        "key create",
        &trace(&m, &["key", "create", "--alias", "k1"]).ok(),
    );
    keep(
        &mut texts,
        "bucket update",
        &trace(
            &m,
            &["bucket", "update", "--name", "c", "--kms-key-id", "k1"],
        )
        .ok(),
    );
    keep(
        &mut texts,
        "key rotate",
        &trace(&m, &["key", "rotate", "k1"]).ok(),
    );
    keep(
        &mut texts,
        "key rotate default",
        &trace(&m, &["key", "rotate", "default"]).ok(),
    );
    keep(
        &mut texts,
        "bucket reencrypt",
        &trace(
            &m,
            &[
                "bucket",
                "reencrypt",
                "--bucket-name",
                "c",
                "--wait-for-state",
                "SUCCEEDED",
                "--wait-interval-seconds",
                "1",
            ],
        )
        .ok(),
    );
    keep(
        &mut texts,
        "bucket reencrypt b",
        &trace(
            &m,
            &[
                "bucket",
                "reencrypt",
                "--bucket-name",
                "b",
                "--kms-key-id",
                "default",
                "--wait-for-state",
                "SUCCEEDED",
                "--wait-interval-seconds",
                "1",
            ],
        )
        .ok(),
    );
    let ck = m.scratch.join("customer.key");
    let ck_bytes = pattern(77, 32);
    fs::write(
        &ck,
        base64::engine::general_purpose::STANDARD.encode(&ck_bytes),
    )
    .expect("ck");
    keep(
        &mut texts,
        "object reencrypt sse-c",
        &trace(
            &m,
            &[
                "object",
                "reencrypt",
                "--bucket-name",
                "b",
                "--name",
                "f0",
                "--encryption-key-file",
                &ck.display().to_string(),
            ],
        )
        .ok(),
    );
    keep(&mut texts, "key list", &trace(&m, &["key", "list"]).ok());
    keep(
        &mut texts,
        "object head",
        &trace(
            &m,
            &["object", "head", "--bucket-name", "b", "--name", "f1"],
        )
        .ok(),
    );
    for f in ["keys/k1", "keys/default"] {
        texts.push((f.into(), m.read_ctl_file(f).into_bytes()));
    }
    keep(
        &mut texts,
        "fsck",
        &trace(&m, &["fsck", "--read-data"]).ok(),
    );
    let backup = m.scratch.join("headers.json");
    keep(
        &mut texts,
        "export",
        &trace(
            &m,
            &["headers", "export", "--out", &backup.display().to_string()],
        )
        .ok(),
    );
    // Error paths: a tampered chunk (EIO, logged), an unknown key, a garbage command.
    let bp = m.backing_path("b", "f2");
    let mut bytes = fs::read(&bp).expect("backing");
    bytes[40] ^= 1;
    fs::write(&bp, &bytes).expect("tamper");
    drop_caches();
    assert!(
        fs::read(m.p("b/f2")).is_err(),
        "tampered chunk reads as an error"
    );
    keep(
        &mut texts,
        "bad key",
        &trace(&m, &["key", "get", "nope"]).fails(),
    );
    let r = m.ctl("frobnicate --now");
    texts.push(("ctl garbage".into(), r.json.to_string().into_bytes()));
    m.unmount();
    // Offline, with the key file: more commands, and a wrong key file.
    keep(
        &mut texts,
        "offline key list",
        &trace(&m, &["key", "list"]).ok(),
    );
    keep(
        &mut texts,
        "offline get",
        &trace(
            &m,
            &[
                "object",
                "get",
                "--bucket-name",
                "c",
                "--name",
                "g1",
                "--file",
                &m.scratch.join("g1").display().to_string(),
            ],
        )
        .ok(),
    );
    keep(
        &mut texts,
        "offline fsck",
        &trace(&m, &["fsck", "--read-data"]).fails(),
    );
    let wrong = m.scratch.join("wrong.key");
    fs::write(&wrong, pattern(5, 32)).expect("wrong key");
    keep(
        &mut texts,
        "wrong key",
        &run_cmd(
            envelopefs_cmd()
                .args(["--log-level", "trace", "--store"])
                .arg(&m.store)
                .arg("--key-file")
                .arg(&wrong)
                .args(["key", "list"]),
            CMD_TIMEOUT,
        )
        .fails(),
    );
    texts.push((
        "mount.log".into(),
        fs::read(m.store.join(".envelopefs/mount.log")).unwrap_or_default(),
    ));
    let mut meta_files = Vec::new();
    files_below(&m.store.join(".envelopefs/work-requests"), &mut meta_files);
    meta_files.push(m.store.join(".envelopefs/config.json"));
    meta_files.push(backup.clone());
    for f in meta_files {
        texts.push((f.display().to_string(), fs::read(&f).expect("read")));
    }
    assert!(
        texts
            .iter()
            .any(|(w, t)| w == "mount.log" && t.len() > 1000),
        "the mount logged at trace level"
    );

    // Every key in play.
    let mut keys: Vec<(String, Vec<u8>)> = Vec::new();
    let key_file = fs::read(&m.key).expect("key file");
    keys.push(("key file".into(), key_file.clone()));
    keys.push(("customer key".into(), ck_bytes.clone()));
    let secret = Secret::KeyFile(parse_key_file(&key_file).expect("key file parses"));
    let cfg = Store::read_config(&m.store).expect("config");
    let sid = cfg.store_id_bytes().expect("store id");
    let ks = KeyStore::unseal(
        &fs::read(m.store.join(".envelopefs/keystore")).expect("ks"),
        &sid,
        &secret,
    )
    .expect("unseal");
    for k in ks.keys() {
        for v in &k.versions {
            keys.push((
                format!("master {:?} v{}", k.alias, v.version),
                v.material.to_vec(),
            ));
        }
    }
    assert!(keys.len() >= 2 + 4, "default v1, v2 and k1 v1, v2");
    let store = Store::open(
        &m.store,
        StoreLock::acquire(&m.store).expect("lock"),
        &secret,
    )
    .expect("open");
    let ring = Ring(Key32::from_bytes(
        ck_bytes.clone().try_into().expect("32 bytes"),
    ));
    for (b, names) in [("b", ["f0", "f1", "f3"]), ("c", ["g0", "g1", "g2"])] {
        let rec = store.bucket(b).expect("bucket");
        for n in names {
            let f = fs::File::open(m.backing_path(b, n)).expect("open backing");
            let h = object::read_header(&f, n).expect("header");
            let oid = object::read_preamble(&f, n).expect("preamble");
            let dek = object::unwrap_header(&store, &rec, &oid, &h, &ring, n).expect("unwrap");
            keys.push((format!("DEK {b}/{n}"), dek.expose().to_vec()));
        }
    }
    drop(store);

    for (kname, key) in &keys {
        for s in spellings(key) {
            for (what, text) in &texts {
                assert!(
                    !contains(text, &s),
                    "{kname} appears in {what} (as {:?})",
                    String::from_utf8_lossy(&s)
                );
            }
        }
    }
}

#[test]
fn the_mount_process_has_no_core_dumps_and_locked_memory() {
    let m = TestMount::new();
    let pid = m.daemon_pid().expect("daemon pid");
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core limit line");
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let lck: u64 = status
        .lines()
        .find(|l| l.starts_with("VmLck:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .expect("VmLck");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert!(lck > 0, "root may lock memory, so the mount did: {status}");
    }
    // Not dumpable: its /proc files belong to root, not to the user who mounted.
    let dumpable = fs::read_to_string(format!("/proc/{pid}/stat")).is_ok();
    assert!(dumpable, "the process is alive");
}

/// The writable private mappings of the mount process that hold pages and are not locked
/// (name and size in KiB), from /proc/PID/smaps.
fn unlocked_private_mappings(pid: i32) -> Vec<(String, u64)> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    let mut out = Vec::new();
    let (mut name, mut perms, mut rss) = (String::new(), String::new(), 0u64);
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let f: Vec<&str> = line.split_whitespace().collect();
            perms = f.get(1).copied().unwrap_or_default().to_string();
            name = f.get(5).copied().unwrap_or("[anon]").to_string();
        } else if let Some(v) = line.strip_prefix("Rss:") {
            rss = v
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if let Some(flags) = line.strip_prefix("VmFlags:") {
            let locked = flags.split_whitespace().any(|f| f == "lo");
            if perms.starts_with("rw") && perms.ends_with('p') && rss > 0 && !locked {
                out.push((name.clone(), rss));
            }
        }
    }
    out
}

/// Data keys live in the malloc arenas of the FUSE worker threads, which are mapped after the
/// mount locked its memory at start; the mount locks new mappings every second, so after
/// files were created and read, every writable private mapping with pages is locked.
#[test]
fn memory_mapped_after_start_where_data_keys_live_is_locked_too() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "the mounted tests run as root (scripts/test.sh): only root may lock all its memory here"
    );
    let m = TestMount::new();
    let pid = m.daemon_pid().expect("daemon pid");
    fs::create_dir(m.p("b")).expect("bucket");
    for i in 0..200 {
        fs::write(m.p(&format!("b/f{i}")), format!("object {i}")).expect("write");
    }
    for i in 0..200 {
        fs::read(m.p(&format!("b/f{i}"))).expect("read");
    }
    let mut last = Vec::new();
    let done = (0..50).any(|_| {
        last = unlocked_private_mappings(pid);
        if last.is_empty() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        false
    });
    assert!(done, "writable mappings left unlocked after 5 s: {last:?}");
}
