//! Latency of small S3 requests through `store::s3::client` (docs/GARAGE.md, "The 40 ms
//! stall").
//!
//! ```text
//! scripts/garage.sh start DIR --nodes 3
//! (set -a; . DIR/env; set +a; cargo run --example s3_latency -- "$GARAGE_TEST_BUCKET" 200)
//! scripts/garage.sh stop DIR
//! ```
//! The client connects as the CLI does (`S3Client::connect`, endpoint and keys from
//! `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`), then
//! times N sequential requests of each kind, one kind after the other: HEAD of a 4 KiB
//! object, PUT of 4 KiB (N keys), GET of the 4 KiB object, GET of an 8 MiB object (N/10
//! times, at least 5), ranged GETs of 4 KiB of it, COPY of the 4 KiB object onto itself with the
//! metadata replaced (with copy-source-if-match, as a rewrap does) and LIST (ListObjectsV2)
//! of a prefix of 20 objects. Each kind runs on two clients of the same cluster, their
//! requests taking turns: `quickack`, the client as `S3Client::connect` makes it (the
//! quick-ACK transport on http endpoints), and `sdk`, the SDK's own HTTP client
//! (`Transport::Sdk`). It prints p50, p90 and max per kind and client, the rate, and how
//! many requests took 35 ms or more ("stalled"). With a third argument T > 1 it then times
//! copies from T threads on one client, for each client. Everything it wrote is deleted at
//! the end.
#![allow(clippy::unwrap_used)]

use envelopefs::store::s3::client::{S3Client, S3Options, Transport};
use std::time::Instant;

/// Objects under the listed prefix.
const LISTED: usize = 20;
/// A request this slow counts as stalled (the stalls are multiples of ~40 ms).
const STALL_MS: f64 = 35.0;

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(what: &str, v: &[f64]) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let total: f64 = s.iter().sum();
    let rate = s.len() as f64 / (total / 1e3);
    let stalled = s.iter().filter(|&&x| x >= STALL_MS).count();
    println!(
        "{what:<19} p50 {:>6.1} ms  p90 {:>6.1} ms  max {:>6.1} ms  {rate:>5.0}/s  stalled {stalled}/{}",
        pct(&s, 0.5),
        pct(&s, 0.9),
        pct(&s, 1.0),
        s.len()
    );
}

/// Runs `f(client, j)` for j in 0..n on each client in turn (which goes first alternates) and
/// prints the milliseconds each client's calls took.
fn measure(
    what: &str,
    clients: &[(&str, &S3Client)],
    n: usize,
    mut f: impl FnMut(&S3Client, usize),
) {
    let mut ms = vec![Vec::with_capacity(n); clients.len()];
    for j in 0..n {
        for k in 0..clients.len() {
            let i = (j + k) % clients.len();
            let t = Instant::now();
            f(clients[i].1, j * clients.len() + i);
            ms[i].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    for (i, (name, _)) in clients.iter().enumerate() {
        report(&format!("{what} {name}"), &ms[i]);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let bucket = args
        .next()
        .or_else(|| std::env::var("GARAGE_TEST_BUCKET").ok())
        .expect("usage: s3_latency BUCKET [N [THREADS]] (or set GARAGE_TEST_BUCKET)");
    let n: usize = args.next().map(|s| s.parse().unwrap()).unwrap_or(200);
    let threads: usize = args.next().map(|s| s.parse().unwrap()).unwrap_or(1);
    let quick = S3Client::connect(&bucket, &S3Options::default()).unwrap();
    let sdk = S3Client::connect_with(&bucket, &S3Options::default(), Transport::Sdk).unwrap();
    let clients = [("quickack", &quick), ("sdk", &sdk)];
    println!("endpoint {} bucket {bucket}, N = {n}", quick.endpoint());

    let obj = "latency/obj";
    let body = vec![7u8; 4 << 10];
    let mut etag = quick.put(obj, body.clone(), &[]).unwrap();
    for i in 0..LISTED {
        quick
            .put(&format!("latency/list/{i:02}"), vec![1u8; 16], &[])
            .unwrap();
    }
    // Warm both connection pools.
    for (_, c) in &clients {
        c.head(obj).unwrap();
    }

    measure("HEAD", &clients, n, |c, _| {
        assert!(c.head(obj).unwrap().is_some());
    });
    measure("PUT 4KiB", &clients, n, |c, j| {
        c.put(&format!("latency/p{j}"), body.clone(), &[]).unwrap();
    });
    measure("GET 4KiB", &clients, n, |c, _| {
        assert_eq!(c.get(obj).unwrap().unwrap().0.len(), body.len());
    });
    let big = vec![9u8; 8 << 20];
    quick.put("latency/big", big.clone(), &[]).unwrap();
    measure("GET 8MiB", &clients, (n / 10).max(5), |c, _| {
        assert_eq!(c.get("latency/big").unwrap().unwrap().0.len(), big.len());
    });
    measure("RANGE 4KiB", &clients, n, |c, j| {
        let off = (j as u64 * 4096) % (8 << 20);
        assert_eq!(c.get_range("latency/big", off, 4096).unwrap().len(), 4096);
    });
    measure("COPY self", &clients, n, |c, j| {
        let md = [("h".to_string(), j.to_string())];
        etag = c.copy(obj, obj, &md, Some(&etag)).unwrap();
    });
    measure("LIST 20", &clients, n, |c, _| {
        let page = c.list("latency/list/", None, None, 1000).unwrap();
        assert_eq!(page.objects.len(), LISTED);
    });

    if threads > 1 {
        for (name, c) in &clients {
            let per = n.div_ceil(threads);
            let t = Instant::now();
            std::thread::scope(|s| {
                for i in 0..threads {
                    let c = (*c).clone();
                    s.spawn(move || {
                        let key = format!("latency/t{i}");
                        let mut e = c.put(&key, vec![7u8; 4 << 10], &[]).unwrap();
                        for j in 0..per {
                            let md = [("h".to_string(), j.to_string())];
                            e = c.copy(&key, &key, &md, Some(&e)).unwrap();
                        }
                    });
                }
            });
            let secs = t.elapsed().as_secs_f64();
            println!(
                "COPY self x{threads} threads {name}: {:.0}/s (their PUTs included)",
                (threads * (per + 1)) as f64 / secs
            );
        }
        for i in 0..threads {
            quick.delete(&format!("latency/t{i}")).unwrap();
        }
    }

    quick.delete(obj).unwrap();
    quick.delete("latency/big").unwrap();
    for j in 0..n * clients.len() {
        quick.delete(&format!("latency/p{j}")).unwrap();
    }
    for i in 0..LISTED {
        quick.delete(&format!("latency/list/{i:02}")).unwrap();
    }
}
