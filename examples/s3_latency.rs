//! Latency of small S3 requests through `store::s3::client` (docs/DECISIONS.md,
//! "dependency: aws-sdk-s3").
//!
//! ```text
//! scripts/garage.sh start DIR --nodes 3
//! (set -a; . DIR/env; set +a; cargo run --example s3_latency -- "$GARAGE_TEST_BUCKET" 200)
//! scripts/garage.sh stop DIR
//! ```
//! N sequential copies of a 10 KiB object onto itself (metadata REPLACE with
//! copy-source-if-match, as a rewrap does), N HEADs, N PUTs of 1 KiB: p50, p90 and the rate;
//! then the same copies from 16 threads on one client (one object each): the rate.
#![allow(clippy::unwrap_used)]

use envelopefs::store::s3::client::{S3Client, S3Options};
use std::time::Instant;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn report(what: &str, v: &mut [f64]) {
    let total: f64 = v.iter().sum();
    let rate = v.len() as f64 / (total / 1e3);
    let (p50, p90) = (pct(v, 0.5), pct(v, 0.9));
    println!("{what}\tp50 {p50:.1} ms\tp90 {p90:.1} ms\t{rate:.0}/s");
}

fn copies(c: &S3Client, key: &str, etag: &str, n: usize) -> Vec<f64> {
    (0..n)
        .map(|j| {
            let md = [("h".to_string(), j.to_string())];
            let t = Instant::now();
            assert_eq!(c.copy(key, key, &md, Some(etag)).unwrap(), etag);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let bucket = args
        .next()
        .or_else(|| std::env::var("GARAGE_TEST_BUCKET").ok())
        .expect("usage: s3_latency BUCKET [N] (or set GARAGE_TEST_BUCKET)");
    let n: usize = args.next().map(|s| s.parse().unwrap()).unwrap_or(200);
    let c = S3Client::connect(&bucket, &S3Options::default()).unwrap();
    println!("endpoint {} bucket {bucket}, N = {n}", c.endpoint());
    let etag = c.put("latency/a", vec![7u8; 10 << 10], &[]).unwrap();
    c.head("latency/a").unwrap();
    report("copy-onto-itself", &mut copies(&c, "latency/a", &etag, n));
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            c.head("latency/a").unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    report("head", &mut v);
    let mut v: Vec<f64> = (0..n)
        .map(|j| {
            let t = Instant::now();
            c.put(&format!("latency/p{j}"), vec![1u8; 1024], &[])
                .unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    report("put-1KiB", &mut v);
    let threads = 16;
    let per = n.div_ceil(threads);
    let t = Instant::now();
    std::thread::scope(|s| {
        for i in 0..threads {
            let c = c.clone();
            s.spawn(move || {
                let key = format!("latency/t{i}");
                let e = c.put(&key, vec![7u8; 10 << 10], &[]).unwrap();
                copies(&c, &key, &e, per);
            });
        }
    });
    let secs = t.elapsed().as_secs_f64();
    println!(
        "copy-onto-itself x{threads} threads\t{:.0}/s (puts included)",
        (threads * (per + 1)) as f64 / secs
    );
    c.delete("latency/a").unwrap();
    for j in 0..n {
        c.delete(&format!("latency/p{j}")).unwrap();
    }
    for i in 0..threads {
        c.delete(&format!("latency/t{i}")).unwrap();
    }
}
