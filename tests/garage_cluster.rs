//! The Garage test clusters of `scripts/garage.sh` and `tests/common/garage.rs`: a real
//! three-node cluster starts, serves signed S3 requests on every node with the key it made,
//! keeps serving with one node down, takes the node back, and stops without leaving a
//! process behind. S3 semantics (copy with REPLACE, ranges, ...) are the S3 client's tests.
#![allow(clippy::unwrap_used)]

mod common;

use common::garage::{script, Cluster};
use common::{run_cmd, CmdOut};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A signed S3 request with curl (`--aws-sigv4`), the credentials passed on stdin so that
/// the secret is not in curl's command line. Returns the HTTP status and the body.
#[track_caller]
fn s3(
    c: &Cluster,
    endpoint: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> (u16, Vec<u8>) {
    let scratch = c.dir().join("curl");
    fs::create_dir_all(&scratch).unwrap();
    let out_file = scratch.join("out");
    let in_file = scratch.join("in");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-K", "-", "-o"])
        .arg(&out_file)
        .args(["-w", "%{http_code}", "-X", method])
        .arg("--aws-sigv4")
        .arg(format!("aws:amz:{}:s3", c.region));
    // Garage wants the payload's hash in a header; curl signs what it is given.
    let hash: String = Sha256::digest(body.unwrap_or_default())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    cmd.arg("-H").arg(format!("x-amz-content-sha256: {hash}"));
    if let Some(b) = body {
        fs::write(&in_file, b).unwrap();
        cmd.arg("--data-binary")
            .arg(format!("@{}", in_file.display()));
        cmd.args(["-H", "Content-Type: application/octet-stream"]);
    }
    cmd.arg(format!("{endpoint}{path}"));
    for k in common::garage::SCRUBBED_AWS_ENV {
        cmd.env_remove(k);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("running curl (install it: apt-get install curl)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("user = \"{}:{}\"\n", c.access_key, c.secret_key).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "curl {method} {endpoint}{path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (code, fs::read(&out_file).unwrap_or_default())
}

/// An unsigned `GET /` over plain HTTP: the status line.
fn http_status_line(endpoint: &str) -> String {
    let addr = endpoint.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut r = String::new();
    let _ = s.read_to_string(&mut r);
    r.lines().next().unwrap_or_default().to_string()
}

/// GetClusterHealth as seen by node `i`.
#[track_caller]
fn health(c: &Cluster, i: usize) -> serde_json::Value {
    c.garage(i, &["json-api", "GetClusterHealth"]).ok().json()
}

fn alive(pid: u32) -> bool {
    // A zombie (not reaped yet by its parent) has stopped all the same.
    fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(false)
}

#[track_caller]
fn assert_stopped(pids: &[(usize, u32)]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for &(i, pid) in pids {
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!alive(pid), "node {i} (pid {pid}) still runs after stop");
    }
}

#[test]
fn three_nodes_serve_survive_one_down_and_stop() {
    let t0 = Instant::now();
    let c = Cluster::start();
    eprintln!("3-node cluster started in {:?}", t0.elapsed());

    // What the helper reports.
    assert_eq!(c.nodes(), 3);
    let eps = c.endpoints();
    assert_eq!(eps.len(), 3, "{eps:?}");
    assert_eq!(eps[0], c.endpoint);
    assert_eq!(eps.iter().collect::<HashSet<_>>().len(), 3, "{eps:?}");
    assert!(
        c.endpoint.starts_with("http://127.0.0.1:"),
        "{}",
        c.endpoint
    );
    assert_eq!(c.region, "garage");
    assert_eq!(c.bucket, "envelopefs-test");
    assert!(c.access_key.starts_with("GK"), "{}", c.access_key);
    assert_eq!(c.secret_key.len(), 64);
    let env = c.env();
    for k in [
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ] {
        assert!(
            env.iter().any(|(n, v)| n == k && !v.is_empty()),
            "{k} missing"
        );
    }
    let mut cmd = Command::new("env");
    cmd.env("AWS_PROFILE", "someone-else");
    c.apply_env(&mut cmd);
    let printed = run_cmd(&mut cmd, Duration::from_secs(10)).ok().stdout;
    assert!(!printed.contains("AWS_PROFILE="), "{printed}");
    assert!(printed.contains(&format!("AWS_ENDPOINT_URL={}", c.endpoint)));

    // Files: dir 0700, env 0600, the secret nowhere but env and garage's own files.
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(c.dir()), 0o700);
    assert_eq!(mode(&c.dir().join("env")), 0o600);
    assert_eq!(mode(&c.config(1)), 0o600);
    for f in ["endpoints", "setup.log", "pids", "key-id"] {
        let text = fs::read_to_string(c.dir().join(f)).unwrap();
        assert!(!text.contains(&c.secret_key), "{f} holds the secret key");
    }

    // The cluster: 3 storage nodes up, healthy, 3 zones; the bucket and the key's rights.
    for i in 1..=3 {
        let h = health(&c, i);
        assert_eq!(h["status"], "healthy", "node {i}: {h}");
        assert_eq!(h["storageNodes"], 3, "node {i}: {h}");
        assert_eq!(h["storageNodesUp"], 3, "node {i}: {h}");
    }
    let info = c
        .garage(
            1,
            &[
                "json-api",
                "GetBucketInfo",
                r#"{"globalAlias":"envelopefs-test"}"#,
            ],
        )
        .ok()
        .json();
    let keys = info["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{info}");
    assert_eq!(keys[0]["accessKeyId"], c.access_key.as_str());
    for p in ["read", "write", "owner"] {
        assert_eq!(keys[0]["permissions"][p], true, "{p}: {info}");
    }
    c.garage(2, &["bucket", "info", "envelopefs-test"]).ok();

    // S3 on every node: unsigned requests are refused, signed ones work, and what one node
    // took the others serve.
    for ep in &eps {
        let line = http_status_line(ep);
        assert!(line.starts_with("HTTP/1.1 403"), "{ep}: {line}");
    }
    let data = b"written through node 1\n".repeat(1000);
    let (code, body) = s3(&c, &eps[0], "PUT", "/envelopefs-test/a", Some(&data));
    assert_eq!(code, 200, "PUT: {}", String::from_utf8_lossy(&body));
    for ep in &eps {
        let (code, body) = s3(&c, ep, "GET", "/envelopefs-test/a", None);
        assert_eq!(code, 200, "GET from {ep}");
        assert_eq!(body, data, "GET from {ep}");
    }
    let (code, _) = s3(&c, &eps[0], "GET", "/not-a-bucket/a", None);
    assert_eq!(code, 404);

    // One node of three down: the other two still read and write.
    let pids_before = c.pids();
    assert_eq!(pids_before.len(), 3, "{pids_before:?}");
    c.stop_node(1);
    assert_stopped(&pids_before[..1]);
    assert_eq!(c.pids().len(), 2);
    c.wait_up(2);
    let h = health(&c, 2);
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["storageNodesUp"], 2, "{h}");
    let (code, _) = s3(
        &c,
        &eps[1],
        "PUT",
        "/envelopefs-test/b",
        Some(b"while node 1 is down"),
    );
    assert_eq!(code, 200);
    let (code, body) = s3(&c, &eps[2], "GET", "/envelopefs-test/a", None);
    assert_eq!((code, body), (200, data.clone()));
    // stop-node is idempotent.
    c.stop_node(1);

    // Back to three: node 1 has its data and what was written meanwhile.
    c.start_node(1);
    let pids_after = c.pids();
    assert_eq!(pids_after.len(), 3, "{pids_after:?}");
    let h = health(&c, 1);
    assert_eq!(h["storageNodesUp"], 3, "{h}");
    let status = c.garage(3, &["status"]).ok().stdout;
    assert!(status.contains("HEALTHY NODES"), "{status}");
    let healthy = status
        .split("HEALTHY NODES")
        .nth(1)
        .unwrap()
        .lines()
        .filter(|l| l.contains("127.0.0.1:"))
        .count();
    assert_eq!(healthy, 3, "{status}");
    let (code, body) = s3(&c, &eps[0], "GET", "/envelopefs-test/b", None);
    assert_eq!((code, body.as_slice()), (200, &b"while node 1 is down"[..]));

    // Another bucket for the same key.
    c.new_bucket("second");
    let (code, _) = s3(&c, &eps[2], "PUT", "/second/x", Some(b"x"));
    assert_eq!(code, 200);

    // Drop stops every node.
    let pids = c.pids();
    let dir = c.dir().to_path_buf();
    let t0 = Instant::now();
    drop(c);
    eprintln!("3-node cluster stopped in {:?}", t0.elapsed());
    assert_stopped(&pids);
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn parallel_single_node_clusters_do_not_collide() {
    let clusters: Vec<Cluster> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| Cluster::start_nodes(1)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let eps: HashSet<String> = clusters.iter().map(|c| c.endpoint.clone()).collect();
    assert_eq!(eps.len(), 3, "{eps:?}");
    for c in &clusters {
        let h = health(c, 1);
        assert_eq!(h["status"], "healthy", "{h}");
        assert_eq!(h["storageNodesUp"], 1, "{h}");
        let (code, _) = s3(c, &c.endpoint, "PUT", "/envelopefs-test/k", Some(b"v"));
        assert_eq!(code, 200);
    }
    // Each key is refused by the other clusters.
    let (a, b) = (&clusters[0], &clusters[1]);
    let (code, _) = s3(a, &b.endpoint, "GET", "/envelopefs-test/k", None);
    assert_eq!(code, 403);
}

/// The script itself: secrets stay out of its output, stop is idempotent, a wrong binary is
/// refused with a clear message.
#[test]
fn script_keeps_secrets_and_fails_clearly() {
    let dir = tempfile::Builder::new()
        .prefix("ga")
        .tempdir_in("/tmp")
        .unwrap();
    let d = dir.path().join("c");
    let ds = d.display().to_string();
    let start = script(&["start", &ds, "--nodes", "1", "--bucket", "other-name"]);
    let stop_all = |what: &str| {
        let o = script(&["stop", &ds]);
        assert_eq!(o.code, 0, "stop ({what}): {}", o.stderr);
    };
    if start.code != 0 {
        stop_all("after a failed start");
        panic!("start failed: {}", start.stderr);
    }
    let env = fs::read_to_string(d.join("env")).unwrap();
    let secret = env
        .lines()
        .find_map(|l| l.strip_prefix("export AWS_SECRET_ACCESS_KEY="))
        .unwrap()
        .trim_matches('\'')
        .to_string();
    assert_eq!(secret.len(), 64);
    assert!(
        env.contains("export GARAGE_TEST_BUCKET='other-name'"),
        "{env}"
    );
    let status = script(&["status", &ds]);
    for o in [&start, &status] {
        assert!(
            !o.stdout.contains(&secret) && !o.stderr.contains(&secret),
            "{}",
            o.what
        );
    }
    assert_eq!(status.code, 0, "{}", status.stderr);
    // A second start in the same dir is refused while the cluster runs.
    let again = script(&["start", &ds, "--nodes", "1"]);
    assert_ne!(again.code, 0);
    assert!(
        again.stderr.contains("already has a running cluster"),
        "{}",
        again.stderr
    );
    let pid: u32 = fs::read_to_string(d.join("pids"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    stop_all("first");
    assert_stopped(&[(1, pid)]);
    stop_all("second");
    let bad = script(&["stop-node", &ds, "2"]);
    assert_ne!(bad.code, 0);
    assert!(
        bad.stderr.contains("node index must be 1..1"),
        "{}",
        bad.stderr
    );

    // Not garage 2.5.0: refused before anything starts.
    let mut c = Command::new("bash");
    c.arg(common::garage::SCRIPT)
        .args(["start", &format!("{ds}-bad")])
        .env("GARAGE_BIN", "/bin/true");
    let o: CmdOut = run_cmd(&mut c, Duration::from_secs(30));
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("is not an executable garage 2.5.0"),
        "{}",
        o.stderr
    );
    assert!(!Path::new(&format!("{ds}-bad")).exists());
}
