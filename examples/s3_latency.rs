//! Latency of sequential small S3 requests, SDK default HTTP client against the
//! TCP_QUICKACK transport, in one run (docs/DECISIONS.md, "dependency: aws-sdk-s3").
//!
//! ```text
//! eval "$(cat CLUSTER_DIR/env)"   # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ..., GARAGE_TEST_BUCKET
//! cargo run --release --example s3_latency -- [BUCKET] [N]
//! ```
//! For each transport: N copies of a small object onto itself (metadata REPLACE, with
//! copy-source-if-match, as a rewrap does), then N HEADs and N PUTs of 1 KiB; prints p50, p90
//! and the rate. The transports alternate in rounds of 50 so that load on the machine hits
//! both alike.
#![allow(clippy::unwrap_used)]

use envelopefs::store::s3::client::{S3Client, S3Options, Transport};
use std::time::Instant;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let bucket = args
        .next()
        .or_else(|| std::env::var("GARAGE_TEST_BUCKET").ok())
        .expect("usage: s3_latency BUCKET [N] (or set GARAGE_TEST_BUCKET)");
    let n: usize = args.next().map(|s| s.parse().unwrap()).unwrap_or(200);
    let opts = S3Options::default();
    let transports = [Transport::SdkDefault, Transport::QuickAck];
    let clients: Vec<S3Client> = transports
        .iter()
        .map(|t| S3Client::connect_with(&bucket, &opts, *t).unwrap())
        .collect();
    println!(
        "endpoint {} bucket {bucket}, {n} requests of each kind per transport",
        clients[0].endpoint()
    );
    let ops = ["copy-onto-itself", "head", "put-1KiB"];
    // samples[transport][op]
    let mut samples = vec![vec![Vec::new(); ops.len()]; transports.len()];
    let mut etags = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let key = format!("latency/{i}");
        let e = c
            .put(&key, vec![7u8; 10 << 10], &[("h".into(), "0".into())])
            .unwrap();
        etags.push(e);
        // Warm the connection pool.
        c.head(&key).unwrap();
    }
    let round = 50;
    let mut done = 0;
    while done < n {
        let m = round.min(n - done);
        for (i, c) in clients.iter().enumerate() {
            let key = format!("latency/{i}");
            for j in 0..m {
                let md = [("h".to_string(), format!("{}", done + j))];
                let t = Instant::now();
                let e = c.copy(&key, &key, &md, Some(&etags[i])).unwrap();
                samples[i][0].push(t.elapsed().as_secs_f64() * 1e3);
                assert_eq!(e, etags[i]);
            }
            for _ in 0..m {
                let t = Instant::now();
                c.head(&key).unwrap();
                samples[i][1].push(t.elapsed().as_secs_f64() * 1e3);
            }
            for j in 0..m {
                let t = Instant::now();
                c.put(&format!("latency/put-{i}-{j}"), vec![1u8; 1024], &[])
                    .unwrap();
                samples[i][2].push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        done += m;
    }
    for (i, t) in transports.iter().enumerate() {
        for (k, op) in ops.iter().enumerate() {
            let v = &mut samples[i][k];
            let total: f64 = v.iter().sum();
            let rate = v.len() as f64 / (total / 1e3);
            let (p50, p90) = (pct(v, 0.5), pct(v, 0.9));
            println!("{t:?}\t{op}\tp50 {p50:.1} ms\tp90 {p90:.1} ms\t{rate:.0}/s");
        }
    }
    for (i, c) in clients.iter().enumerate() {
        c.delete(&format!("latency/{i}")).unwrap();
        for j in 0..round.min(n) {
            c.delete(&format!("latency/put-{i}-{j}")).unwrap();
        }
    }
}
