//! A real Garage cluster on loopback for the object-store tests, run by `scripts/garage.sh`.
//!
//! [`Cluster::start`] makes a temp dir (`/tmp/gaXXXXXX`), starts three Garage nodes in it
//! (replication factor 3, fsync off), creates an access key and the bucket
//! `envelopefs-test`, and stops every node on drop. The binary is the one `scripts/garage.sh`
//! finds (`GARAGE_BIN`, PATH, or cargo's bin dir; version 2.5.0). When Garage is missing or
//! does not start, the test panics with the script's message and the nodes' log tails: it is
//! never skipped.
#![allow(dead_code)]

use super::{run_cmd, CmdOut};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The script that installs and runs Garage.
pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/garage.sh");

/// Longest a script command (start, stop, start-node) may take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Variables of a caller's AWS setup that would change which endpoint, credentials or
/// region a client uses; [`Cluster::apply_env`] removes them.
pub const SCRUBBED_AWS_ENV: [&str; 6] = [
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_PROFILE",
];

/// A running Garage cluster; stopped (and its temp dir removed) on drop.
pub struct Cluster {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    nodes: usize,
    /// S3 endpoint of node 1, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Access key id of the cluster's key.
    pub access_key: String,
    /// Its secret.
    pub secret_key: String,
    /// S3 region (`garage`).
    pub region: String,
    /// The bucket made at start (`envelopefs-test`), which the key may read, write and own.
    pub bucket: String,
}

/// Runs `scripts/garage.sh ARGS`.
#[track_caller]
pub fn script(args: &[&str]) -> CmdOut {
    let mut c = Command::new("bash");
    c.arg(SCRIPT).args(args);
    let mut out = run_cmd(&mut c, SCRIPT_TIMEOUT);
    out.what = format!("scripts/garage.sh {}", args.join(" "));
    out
}

/// Panics with the script's output unless it succeeded.
#[track_caller]
fn script_ok(args: &[&str]) -> CmdOut {
    let o = script(args);
    if o.code != 0 {
        panic!(
            "`{}` failed (exit code {}); Garage 2.5.0 is needed: `scripts/garage.sh install` \
             builds it (or set GARAGE_BIN)\nstdout:\n{}\nstderr:\n{}",
            o.what, o.code, o.stdout, o.stderr
        );
    }
    o
}

/// Parses the `export NAME='VALUE'` lines of DIR/env.
fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

impl Cluster {
    /// A three-node cluster.
    #[track_caller]
    pub fn start() -> Cluster {
        Self::start_nodes(3)
    }

    /// A cluster of `n` nodes (replication factor 3 from 3 nodes on, else `n`).
    #[track_caller]
    pub fn start_nodes(n: usize) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("ga")
            .tempdir_in("/tmp")
            .expect("creating a temp dir for Garage");
        let path = dir.path().to_path_buf();
        let p = path.display().to_string();
        let nodes = n.to_string();
        let mut cluster = Cluster {
            dir: Some(dir),
            path,
            nodes: n,
            endpoint: String::new(),
            access_key: String::new(),
            secret_key: String::new(),
            region: String::new(),
            bucket: String::new(),
        };
        // From here on, a panic drops `cluster`, which runs `stop`.
        script_ok(&["start", &p, "--nodes", &nodes]);
        let env_text = fs::read_to_string(cluster.path.join("env"))
            .unwrap_or_else(|e| panic!("reading {p}/env: {e}"));
        let env = parse_env(&env_text);
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{p}/env has no {k}"))
        };
        cluster.endpoint = get("AWS_ENDPOINT_URL");
        cluster.access_key = get("AWS_ACCESS_KEY_ID");
        cluster.secret_key = get("AWS_SECRET_ACCESS_KEY");
        cluster.region = get("AWS_REGION");
        cluster.bucket = get("GARAGE_TEST_BUCKET");
        cluster
    }

    /// The variables an S3 client needs to reach this cluster with its key.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", &self.endpoint),
            ("AWS_ACCESS_KEY_ID", &self.access_key),
            ("AWS_SECRET_ACCESS_KEY", &self.secret_key),
            ("AWS_REGION", &self.region),
            ("AWS_DEFAULT_REGION", &self.region),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
    }

    /// Sets [`Cluster::env`] on `cmd` and removes the caller's AWS profile, config and
    /// credential files (and other variables that would redirect the client).
    pub fn apply_env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        for k in SCRUBBED_AWS_ENV {
            cmd.env_remove(k);
        }
        cmd.envs(self.env())
    }

    /// Creates another bucket that the cluster's key may read, write and own.
    #[track_caller]
    pub fn new_bucket(&self, name: &str) {
        script_ok(&["bucket", &self.path.display().to_string(), name]);
    }

    /// Stops node `i` (1-based), keeping its data; returns when its process is gone (see
    /// [`Cluster::wait_up`]).
    #[track_caller]
    pub fn stop_node(&self, i: usize) {
        self.check_node(i);
        script_ok(&[
            "stop-node",
            &self.path.display().to_string(),
            &i.to_string(),
        ]);
    }

    /// Kills node `i` (1-based) with SIGKILL by its pid, as a crash would, keeping its data
    /// dir; returns when its process is gone. [`Cluster::start_node`] brings it back.
    #[track_caller]
    pub fn kill_node(&self, i: usize) {
        self.check_node(i);
        let pid = self
            .pids()
            .into_iter()
            .find(|(n, _)| *n == i)
            .map(|(_, p)| p)
            .unwrap_or_else(|| panic!("node {i} has no recorded pid: is it running?"));
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let config = self.config(i).display().to_string();
        assert!(
            String::from_utf8_lossy(&cmdline).contains(&config),
            "pid {pid} is not the server of node {i} any more"
        );
        // SAFETY: kill(2) of a process this cluster started, checked just above.
        #[allow(unsafe_code)]
        let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        assert_eq!(r, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
        // Gone once /proc has no such process (or only a zombie of it, until reaped).
        let t0 = std::time::Instant::now();
        loop {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if status.is_empty()
                || status
                    .lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z'))
            {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "node {i} (pid {pid}) still runs 10 s after SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every running node sees `n` storage nodes up (after [`Cluster::stop_node`]
    /// the others notice within about 10 s; requests work meanwhile).
    #[track_caller]
    pub fn wait_up(&self, n: usize) {
        script_ok(&["wait-up", &self.path.display().to_string(), &n.to_string()]);
    }

    /// Restarts node `i` (1-based) with its config and data; returns when it is back in the
    /// cluster (every running node sees every running node).
    #[track_caller]
    pub fn start_node(&self, i: usize) {
        self.check_node(i);
        script_ok(&[
            "start-node",
            &self.path.display().to_string(),
            &i.to_string(),
        ]);
    }

    /// The S3 endpoint of every node, node 1 first.
    pub fn endpoints(&self) -> Vec<String> {
        fs::read_to_string(self.path.join("endpoints"))
            .unwrap_or_else(|e| panic!("reading {}/endpoints: {e}", self.path.display()))
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The cluster's directory (configs, data, logs, `env`, `endpoints`).
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Config file of node `i`.
    pub fn config(&self, i: usize) -> PathBuf {
        self.check_node(i);
        self.path.join(format!("node{i}/garage.toml"))
    }

    /// The garage binary the cluster runs.
    pub fn garage_bin(&self) -> PathBuf {
        PathBuf::from(
            fs::read_to_string(self.path.join("garage-bin"))
                .expect("reading garage-bin")
                .trim(),
        )
    }

    /// Runs the garage CLI against node `i`: `garage -c CONFIG ARGS`.
    #[track_caller]
    pub fn garage(&self, i: usize, args: &[&str]) -> CmdOut {
        let mut c = Command::new(self.garage_bin());
        c.arg("-c").arg(self.config(i)).args(args);
        let mut out = run_cmd(&mut c, SCRIPT_TIMEOUT);
        out.what = format!("garage (node {i}) {}", args.join(" "));
        out
    }

    /// Process ids of the running nodes, from `pids` (index, pid).
    pub fn pids(&self) -> Vec<(usize, u32)> {
        fs::read_to_string(self.path.join("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (i, p) = l.split_once(' ')?;
                Some((i.parse().ok()?, p.trim().parse().ok()?))
            })
            .collect()
    }

    /// The last lines of every node's log.
    pub fn log_tails(&self) -> String {
        let mut s = String::new();
        for i in 1..=self.nodes {
            let f = self.path.join(format!("node{i}/garage.log"));
            let text = fs::read_to_string(&f).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            s += &format!("--- last lines of {} ---\n", f.display());
            for l in &lines[lines.len().saturating_sub(20)..] {
                s += l;
                s += "\n";
            }
        }
        s
    }

    #[track_caller]
    fn check_node(&self, i: usize) {
        assert!(
            (1..=self.nodes).contains(&i),
            "node {i} of a {}-node cluster",
            self.nodes
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "Garage cluster {}:\n{}",
                self.path.display(),
                self.log_tails()
            );
        }
        let mut c = Command::new("bash");
        c.arg(SCRIPT).arg("stop").arg(&self.path);
        match super::run_cmd_no_panic(&mut c, SCRIPT_TIMEOUT) {
            Some(o) if o.code == 0 => {}
            other => eprintln!(
                "Cluster: `scripts/garage.sh stop {}` failed: {:?}",
                self.path.display(),
                other.map(|o| (o.code, o.stderr))
            ),
        }
        if let Some(d) = self.dir.take() {
            if std::env::var_os("ENVELOPEFS_TEST_KEEP").is_some() {
                let _ = d.keep();
            } else if let Err(e) = d.close() {
                eprintln!("Cluster: removing the temp dir: {e}");
            }
        }
    }
}
