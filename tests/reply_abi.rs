//! The JSON every store command prints is a documented ABI (the CLI's stdout and the reply of
//! `.envelopefs/ctl`): field names, their order, which are omitted or null and how numbers
//! are written. This runs every command offline through the real binary and compares the
//! bytes it prints, with ids, times and random material replaced by placeholders (the same
//! value always by the same placeholder), to `tests/vectors/reply_abi.txt`.
//!
//! The replies only a mount gives (the SSE-C key ring, `work-request cancel` as the mount
//! runs it, error replies) are recorded the same way through a real mount: the raw bytes
//! read back from `.envelopefs/ctl`, and what the CLI prints when it goes through the mount.
//!
//! After a deliberate change of the ABI, regenerate the file with
//! `ENVELOPEFS_BLESS_REPLY_ABI=1 cargo test --features fault-injection --test reply_abi` and
//! review the diff.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::TestMount;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/reply_abi.txt");

/// Fields whose values differ from run to run (times, random ids and blobs).
const VOLATILE: &[&str] = &[
    "created",
    "created_ns",
    "deletion_time",
    "time_accepted",
    "time_started",
    "time_finished",
    "time_updated",
    "scope_created_before_ns",
    "CiphertextBlob",
    "Plaintext",
    "store",
    "path",
    "file",
    "out",
];

struct Fx {
    dir: tempfile::TempDir,
    store: PathBuf,
    key: PathBuf,
    log: String,
    names: HashMap<String, String>,
    /// Literal replacements made first (a blob given as an argument).
    subst: Vec<(String, String)>,
}

impl Fx {
    /// Runs `envelopefs --store S --key-file K ARGS`, records its stdout, returns it.
    fn run(&mut self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let mut c = common::envelopefs_cmd();
        c.arg("--store")
            .arg(&self.store)
            .arg("--key-file")
            .arg(&self.key)
            .args(args);
        self.record(args.join(" "), c, stdin)
    }

    fn record(&mut self, title: String, mut c: Command, stdin: Option<&[u8]>) -> String {
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = c.spawn().expect("spawn envelopefs");
        if let Some(data) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(data).expect("feed stdin");
        }
        let out = child.wait_with_output().expect("wait");
        let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
        let code = out.status.code().unwrap_or(-1);
        let title = self.normalise(&title);
        let body = self.normalise(&stdout);
        self.log
            .push_str(&format!("$ {title}\nexit {code}\n{body}\n"));
        assert!(
            code == 0 || !stdout.is_empty(),
            "{title}: exit {code}, stderr {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Writes `line` to `.envelopefs/ctl` of `m` and records the write's errno and the raw
    /// bytes read back on the same fd.
    fn ctl(&mut self, m: &TestMount, line: &str) -> String {
        let path = m.p(".envelopefs/ctl");
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open ctl");
        let errno = match f.write(format!("{line}\n").as_bytes()) {
            Ok(_) => "0".to_string(),
            Err(e) => common::errno_name(e.raw_os_error().unwrap_or(-1)),
        };
        let bytes = common::pread_all(&f).expect("reading the ctl reply");
        let reply = String::from_utf8(bytes).expect("utf-8 reply");
        let title = self.normalise(&format!("ctl {line}"));
        let body = self.normalise(&reply);
        self.log
            .push_str(&format!("$ {title}\nwrite {errno}\n{body}\n"));
        reply
    }

    fn placeholder(&mut self, kind: &str, value: &str) -> String {
        let n = self.names.len();
        self.names
            .entry(value.to_string())
            .or_insert_with(|| format!("<{kind}{n}>"))
            .clone()
    }

    /// Replaces volatile values, line by line, keeping everything else byte for byte.
    fn normalise(&mut self, text: &str) -> String {
        let dir = self.dir.path().display().to_string();
        let mut text = text.replace(&dir, "<dir>");
        for (from, to) in &self.subst {
            text = text.replace(from.as_str(), to);
        }
        let mut out = String::new();
        for line in text.split_inclusive('\n') {
            let mut line = line.to_string();
            let trimmed = line.trim_start();
            if let Some(rest) = trimmed.strip_prefix('"') {
                if let Some((key, value)) = rest.split_once("\": ") {
                    let v = value.trim_end().trim_end_matches(',');
                    if VOLATILE.contains(&key) && v != "null" {
                        let indent = &line[..line.len() - trimmed.len()];
                        let comma = if value.trim_end().ends_with(',') {
                            ","
                        } else {
                            ""
                        };
                        let newline = if line.ends_with('\n') { "\n" } else { "" };
                        let shape = if v.starts_with('"') { "s" } else { "n" };
                        line = format!("{indent}\"{key}\": <{shape}:{key}>{comma}{newline}");
                    }
                }
            }
            out.push_str(&self.ids(&line));
        }
        out
    }

    /// Replaces ids (`key-HEX`, `wr-HEX`, runs of 16 or more hex digits) by placeholders.
    fn ids(&mut self, s: &str) -> String {
        let b = s.as_bytes();
        let mut out = String::new();
        let mut i = 0;
        while i < b.len() {
            let (prefix, start) = if s[i..].starts_with("key-") {
                ("key-", i + 4)
            } else if s[i..].starts_with("wr-") {
                ("wr-", i + 3)
            } else {
                ("", i)
            };
            let word_start = i == 0 || !b[i - 1].is_ascii_alphanumeric();
            let mut j = start;
            while j < b.len() && b[j].is_ascii_hexdigit() && !b[j].is_ascii_uppercase() {
                j += 1;
            }
            let word_end = j == b.len() || !b[j].is_ascii_alphanumeric();
            if word_start && word_end && j - start >= 16 {
                let kind = match prefix {
                    "key-" => "key",
                    "wr-" => "wr",
                    _ => "hex",
                };
                out.push_str(&self.placeholder(kind, &s[i..j]));
                i = j;
            } else {
                let c = s[i..].chars().next().expect("char");
                out.push(c);
                i += c.len_utf8();
            }
        }
        out
    }
}

/// The replies the mount builds itself: the SSE-C key ring, `work-request cancel`, errors.
fn through_a_mount(fx: &mut Fx) {
    let mut m = TestMount::init_only(Some(4096));
    let root = m.store.parent().expect("the mount's temp dir");
    fx.subst
        .push((root.display().to_string(), "<mount-dir>".into()));
    let c1 = m.scratch.join("c1.key");
    fs::write(&c1, [0x17; 32]).expect("customer key file");
    let c2 = m.scratch.join("c2.key");
    fs::write(&c2, [0x71; 32]).expect("customer key file");
    m.cli_store(&["key", "create", "--alias", "k"]).ok();
    m.cli_store(&["bucket", "create", "--name", "b", "--kms-key-id", "k"])
        .ok();
    m.put_object("b", "a", &[5u8; 10_000]);
    m.cli_store(&["key", "rotate", "k"]).ok();
    let wr = m
        .cli_store(&["bucket", "reencrypt", "--bucket-name", "b"])
        .ok()
        .json();
    let id = wr["id"].as_str().expect("work request id").to_string();
    m.cli_store(&["work-request", "wait", &id]).ok();
    m.mount();

    // The SSE-C key ring.
    fx.ctl(&m, "sse-c list");
    fx.ctl(
        &m,
        &format!("sse-c add --encryption-key-file {}", path(&c1)),
    );
    fx.ctl(
        &m,
        &format!("sse-c add --encryption-key-file {}", path(&c1)),
    );
    let added = fx.ctl(
        &m,
        &format!("sse-c add --encryption-key-file {}", path(&c2)),
    );
    let v: serde_json::Value = serde_json::from_str(&added).expect("sse-c add JSON");
    let fp2 = v["result"]["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string();
    fx.ctl(&m, "sse-c list");
    fx.ctl(&m, &format!("sse-c remove --fingerprint {}", &fp2[..12]));
    fx.ctl(
        &m,
        &format!("sse-c remove --encryption-key-file {}", path(&c1)),
    );
    fx.ctl(&m, &format!("sse-c remove --fingerprint {fp2}"));
    fx.ctl(&m, "sse-c remove --fingerprint zz");
    let mut c = common::envelopefs_cmd();
    c.arg("--store")
        .arg(&m.store)
        .args(["sse-c", "add", "--encryption-key-file", path(&c2)]);
    fx.record("sse-c add (CLI through the mount)".into(), c, None);
    let mut c = common::envelopefs_cmd();
    c.arg("--store").arg(&m.store).args(["sse-c", "list"]);
    fx.record("sse-c list (CLI through the mount)".into(), c, None);

    // work-request cancel as the mount runs it (a finished request is left as it is).
    fx.ctl(&m, &format!("work-request cancel {id}"));
    fx.ctl(
        &m,
        "work-request cancel wr-0123456789abcdef0123456789abcdef",
    );
    let mut c = common::envelopefs_cmd();
    c.arg("--store")
        .arg(&m.store)
        .args(["work-request", "cancel", &id]);
    fx.record(
        "work-request cancel (CLI through the mount)".into(),
        c,
        None,
    );

    // The control files that show a record (the same JSON as `work-request get`, `key get`).
    for rel in [format!("work-requests/{id}"), "keys/k".to_string()] {
        let text = m.read_ctl_file(&rel);
        let title = fx.normalise(&format!("cat .envelopefs/{rel}"));
        let body = fx.normalise(&text);
        fx.log.push_str(&format!("$ {title}\n{body}\n"));
    }
    m.unmount();
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn every_command_prints_the_json_it_always_printed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("kf");
    fs::write(&key, [0x2a; 32]).expect("key file");
    let sse = dir.path().join("sse.key");
    fs::write(&sse, [0x17; 32]).expect("customer key file");
    let store = dir.path().join("s");
    let mut fx = Fx {
        store,
        key,
        dir,
        log: String::new(),
        names: HashMap::new(),
        subst: Vec::new(),
    };
    let mut c = common::envelopefs_cmd();
    c.arg("init")
        .arg(&fx.store)
        .arg("--key-file")
        .arg(&fx.key)
        .args(["--chunk-size", "4096"]);
    fx.record("init".into(), c, None);

    // Keys.
    fx.run(&["key", "create", "--alias", "k"], None);
    fx.run(&["key", "create"], None);
    fx.run(&["key", "list"], None);
    fx.run(&["key", "get", "k"], None);
    fx.run(&["key", "rotate", "k"], None);
    fx.run(&["key", "disable", "k", "--version", "1"], None);
    fx.run(&["key", "enable", "k", "--version", "1"], None);
    fx.run(&["key", "update", "k", "--allowed-operations", "all"], None);

    // Buckets.
    fx.run(
        &["bucket", "create", "--name", "b", "--kms-key-id", "k"],
        None,
    );
    fx.run(&["bucket", "create", "--name", "plain"], None);
    fx.run(&["bucket", "list"], None);
    fx.run(&["bucket", "get", "--name", "plain"], None);
    fx.run(
        &["bucket", "update", "--name", "plain", "--kms-key-id", "k"],
        None,
    );
    fx.run(
        &["bucket", "update", "--name", "plain", "--remove-kms-key"],
        None,
    );

    // Objects.
    fx.run(
        &["object", "put", "--bucket-name", "b", "--name", "a"],
        Some(&[5u8; 10_000]),
    );
    fx.run(
        &["object", "put", "--bucket-name", "b", "--name", "dir/e"],
        Some(b""),
    );
    let got = fx.dir.path().join("got");
    fx.run(
        &[
            "object",
            "get",
            "--bucket-name",
            "b",
            "--name",
            "a",
            "--file",
            path(&got),
        ],
        None,
    );
    fx.run(
        &["object", "head", "--bucket-name", "b", "--name", "a"],
        None,
    );
    fx.run(&["key", "rotate", "k"], None);
    fx.run(
        &["object", "reencrypt", "--bucket-name", "b", "--name", "a"],
        None,
    );
    fx.run(
        &["object", "reencrypt", "--bucket-name", "b", "--name", "a"],
        None,
    );
    fx.run(
        &[
            "object",
            "reencrypt",
            "--bucket-name",
            "b",
            "--name",
            "a",
            "--rekey",
        ],
        None,
    );
    fx.run(
        &[
            "object",
            "reencrypt",
            "--bucket-name",
            "b",
            "--name",
            "dir/e",
            "--encryption-key-file",
            path(&sse),
        ],
        None,
    );
    fx.run(
        &["object", "head", "--bucket-name", "b", "--name", "dir/e"],
        None,
    );
    fx.run(
        &[
            "object",
            "reencrypt",
            "--bucket-name",
            "b",
            "--name",
            "dir/e",
            "--source-encryption-key-file",
            path(&sse),
        ],
        None,
    );

    // Work requests.
    fx.run(&["key", "rotate", "k"], None);
    let wr = fx.run(&["bucket", "reencrypt", "--bucket-name", "b"], None);
    let wr: serde_json::Value = serde_json::from_str(&wr).expect("work request JSON");
    let id = wr["id"].as_str().expect("work request id").to_string();
    fx.run(&["work-request", "get", &id], None);
    fx.run(&["work-request", "wait", &id], None);
    fx.run(&["work-request", "list"], None);
    fx.run(&["work-request", "list", "--bucket-name", "plain"], None);
    fx.run(
        &["bucket", "reencrypt", "--bucket-name", "b", "--rekey"],
        None,
    );

    // KMS blobs and key lifecycle.
    fx.run(&["key", "usage", "k"], None);
    fx.run(
        &[
            "kms",
            "encrypt",
            "--key-id",
            "k",
            "--plaintext",
            "aGVsbG8=",
            "--encryption-context",
            "app=web",
        ],
        None,
    );
    let blob = {
        let mut c = common::envelopefs_cmd();
        c.arg("--store")
            .arg(&fx.store)
            .arg("--key-file")
            .arg(&fx.key)
            .args(["kms", "encrypt", "--key-id", "k", "--plaintext", "aGVsbG8="]);
        let out = c.output().expect("kms encrypt");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("kms JSON");
        v["CiphertextBlob"].as_str().expect("blob").to_string()
    };
    fx.subst.push((blob.clone(), "<blob>".into()));
    fx.run(&["kms", "decrypt", "--ciphertext-blob", &blob], None);
    fx.run(
        &[
            "kms",
            "generate-data-key",
            "--key-id",
            "k",
            "--number-of-bytes",
            "16",
        ],
        None,
    );
    fx.run(
        &[
            "kms",
            "re-encrypt",
            "--ciphertext-blob",
            &blob,
            "--destination-key-id",
            "k",
        ],
        None,
    );
    fx.run(
        &[
            "key",
            "schedule-deletion",
            "k",
            "--version",
            "1",
            "--days",
            "7",
            "--force",
        ],
        None,
    );
    fx.run(&["key", "cancel-deletion", "k", "--version", "1"], None);

    // Store-wide.
    fx.run(&["status", "--output", "json"], None);
    fx.run(&["fsck", "--read-data"], None);
    let backup = fx.dir.path().join("headers.json");
    fx.run(&["headers", "export", "--out", path(&backup)], None);
    fs::remove_file(fx.store.join("b").join("dir").join("e")).ok();
    fx.run(&["headers", "import", path(&backup)], None);

    through_a_mount(&mut fx);

    let got = std::mem::take(&mut fx.log);
    if std::env::var_os("ENVELOPEFS_BLESS_REPLY_ABI").is_some() {
        fs::write(GOLDEN, &got).expect("write the golden file");
        return;
    }
    let want = fs::read_to_string(GOLDEN).expect("the golden file");
    if got != want {
        let line = got
            .lines()
            .zip(want.lines())
            .position(|(g, w)| g != w)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "the JSON of the commands changed, first at line {}:\n got: {:?}\nwant: {:?}",
            line + 1,
            got.lines().nth(line),
            want.lines().nth(line)
        );
    }
}
