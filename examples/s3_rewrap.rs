//! The object-store re-encrypt benchmark's helpers (scripts/bench-s3.sh, docs/BENCHMARKS.md
//! "Object store: bucket re-encrypt").
//!
//! ```text
//! s3_rewrap populate s3://BUCKET/PREFIX KEY_FILE ENVELOPEFS_BUCKET COUNT SIZE [THREADS]
//! s3_rewrap plain S3_BUCKET KEY_PREFIX CONCURRENCY copy|head-copy [REPEAT]
//! s3_rewrap etags S3_BUCKET KEY_PREFIX
//! ```
//!
//! `populate` makes COUNT objects of SIZE bytes (`o/000000`, ...) in an envelopefs bucket of
//! a store in an object store, through the library as `object put` does (staged ciphertext,
//! one PUT or a multipart upload without checksums), on THREADS threads (default 8). It
//! takes no lease: run it only while nothing else uses the store.
//!
//! `plain` is the plain S3 client the engine is compared with: aws-sdk-s3 called directly
//! (async, no envelopefs code), configured as the store's client is (path-style, checksums
//! only when required, the same timeouts and retries). It lists every key under KEY_PREFIX
//! (ListObjectsV2, pages of 1,000) and copies each object onto itself with metadata
//! directive REPLACE and `x-amz-copy-source-if-match`, CONCURRENCY copies in flight:
//! - `copy`: the copy only, with the ETag and user metadata of an untimed HEAD of every
//!   object made before the clock starts (the metadata is written back as it was, so the
//!   objects stay valid envelopefs objects);
//! - `head-copy`: a HEAD then the copy per object, timed: the requests envelopefs sends.
//!
//! The timed part is the listing plus every object's requests. REPEAT (default 1) repeats it
//! (ETags are refreshed from each copy's answer). It prints one line per repeat: `key=value`
//! fields (objects/s, list time, per-object latency p50/p90/p99 in ms, requests sent).
//!
//! `etags` prints every key under KEY_PREFIX and its ETag, tab-separated.
#![allow(clippy::unwrap_used)]

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::types::MetadataDirective;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!(
        "usage: s3_rewrap populate s3://BUCKET/PREFIX KEY_FILE ENVELOPEFS_BUCKET COUNT SIZE [THREADS]\n\
         \x20      s3_rewrap plain S3_BUCKET KEY_PREFIX CONCURRENCY copy|head-copy [REPEAT]\n\
         \x20      s3_rewrap etags S3_BUCKET KEY_PREFIX"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("populate") if (6..=7).contains(&args.len()) => populate(&args[1..]),
        Some("plain") if (5..=6).contains(&args.len()) => plain(&args[1..]),
        Some("etags") if args.len() == 3 => etags(&args[1], &args[2]),
        _ => usage(),
    }
}

fn populate(a: &[String]) {
    use envelopefs::keys::crypto::parse_key_file;
    use envelopefs::keys::keystore::Secret;
    use envelopefs::store::object::{self, Create};
    use envelopefs::store::s3::backend::{ObjectStoreBackend, S3Location};
    use envelopefs::store::s3::client::{S3Client, S3Options};
    use envelopefs::store::Store;

    let at = S3Location::parse(&a[0]).unwrap_or_else(|| usage()).unwrap();
    let key = zeroize::Zeroizing::new(std::fs::read(&a[1]).unwrap());
    let secret = Secret::KeyFile(parse_key_file(&key).unwrap());
    let bucket_name = a[2].clone();
    let count: usize = a[3].parse().unwrap_or_else(|_| usage());
    let size: usize = a[4].parse().unwrap_or_else(|_| usage());
    let threads: usize = a
        .get(5)
        .map_or(8, |s| s.parse().unwrap_or_else(|_| usage()));
    let client = S3Client::connect(&at.bucket, &S3Options::default()).unwrap();
    let staging = std::env::var_os("ENVELOPEFS_STAGING_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let backend = Arc::new(ObjectStoreBackend::new(client, at, staging));
    let store = Store::open_on(backend, None, &secret).unwrap();
    let bucket = store.bucket(&bucket_name).unwrap();
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                // Contents do not matter (they are encrypted); 1 MiB writes as `object put`.
                let piece = vec![0x5au8; size.min(1 << 20)];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let name = PathBuf::from(format!("o/{i:06}"));
                    let create = Create {
                        exclusive: false,
                        ..Create::default()
                    };
                    object::create_object_in(
                        &store,
                        &bucket_name,
                        &bucket,
                        &name,
                        &create,
                        &mut |obj| {
                            let mut off = 0;
                            while off < size {
                                let n = piece.len().min(size - off);
                                obj.write_at(off as u64, &piece[..n])?;
                                off += n;
                            }
                            Ok(())
                        },
                    )
                    .unwrap();
                }
            });
        }
    });
    println!(
        "populated bucket={bucket_name} objects={count} size={size} threads={threads} secs={:.2}",
        t.elapsed().as_secs_f64()
    );
}

/// One object to copy: key, ETag (quoted as the server sent it), user metadata.
type Item = (String, String, HashMap<String, String>);

fn plain(a: &[String]) {
    let bucket = a[0].clone();
    let prefix = a[1].clone();
    let concurrency: usize = a[2].parse().unwrap_or_else(|_| usage());
    let with_head = match a[3].as_str() {
        "copy" => false,
        "head-copy" => true,
        _ => usage(),
    };
    let repeat: usize = a
        .get(4)
        .map_or(1, |s| s.parse().unwrap_or_else(|_| usage()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let c = client().await;
        // Untimed: the ETag and metadata of every object (the `copy` mode writes them back).
        let keys = list(&c, &bucket, &prefix).await;
        let items: Vec<Item> = keys
            .iter()
            .map(|(k, e)| (k.clone(), e.clone(), HashMap::new()))
            .collect();
        let items = Arc::new(Mutex::new(items));
        run(&c, &bucket, &items, concurrency, Step::Head).await;
        for r in 0..repeat {
            let t = Instant::now();
            let listed = list(&c, &bucket, &prefix).await;
            let list_s = t.elapsed().as_secs_f64();
            assert_eq!(
                listed.len(),
                items.lock().unwrap().len(),
                "objects came or went"
            );
            let step = if with_head {
                Step::HeadCopy
            } else {
                Step::Copy
            };
            let mut lat = run(&c, &bucket, &items, concurrency, step).await;
            let secs = t.elapsed().as_secs_f64();
            let n = lat.len();
            lat.sort_by(|a, b| a.total_cmp(b));
            let p = |q: f64| lat[((n - 1) as f64 * q).round() as usize] * 1e3;
            let pages = n.div_ceil(1000).max(1);
            let requests = pages + if with_head { 2 * n } else { n };
            println!(
                "plain mode={} round={r} objects={n} concurrency={concurrency} secs={secs:.3} \
                 objects_per_s={:.1} list_s={list_s:.3} p50_ms={:.1} p90_ms={:.1} p99_ms={:.1} \
                 requests={requests}",
                a[3],
                n as f64 / secs,
                p(0.5),
                p(0.9),
                p(0.99)
            );
        }
    });
}

fn etags(bucket: &str, prefix: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for (k, e) in list(&client().await, bucket, prefix).await {
            println!("{k}\t{e}");
        }
    });
}

async fn client() -> aws_sdk_s3::Client {
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(region))
        .credentials_provider(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(60))
                .operation_timeout(Duration::from_secs(150))
                .build(),
        )
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if let Ok(e) = std::env::var("AWS_ENDPOINT_URL") {
        loader = loader.endpoint_url(e);
    }
    let conf = loader.load().await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(true)
            .build(),
    )
}

/// Every key under `prefix` with its ETag, in pages of 1,000.
async fn list(c: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let o = c
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(1000)
            .set_continuation_token(token.take())
            .send()
            .await
            .unwrap();
        for x in o.contents() {
            out.push((
                x.key().unwrap().to_string(),
                x.e_tag().unwrap_or_default().to_string(),
            ));
        }
        match o.next_continuation_token() {
            Some(t) if o.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => return out,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Step {
    /// HEAD only: fills in ETag and metadata (untimed).
    Head,
    /// The copy, with the ETag and metadata known.
    Copy,
    /// HEAD, then the copy with what it said.
    HeadCopy,
}

/// Runs `step` on every item, `concurrency` at a time; the per-object seconds.
async fn run(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    items: &Arc<Mutex<Vec<Item>>>,
    concurrency: usize,
    step: Step,
) -> Vec<f64> {
    let n = items.lock().unwrap().len();
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (c, bucket, items, next) = (c.clone(), bucket.to_string(), items.clone(), next.clone());
        set.spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return lat;
                }
                let (key, mut etag, mut meta) = items.lock().unwrap()[i].clone();
                let t = Instant::now();
                if step != Step::Copy {
                    let h = c
                        .head_object()
                        .bucket(&bucket)
                        .key(&key)
                        .send()
                        .await
                        .unwrap();
                    etag = h.e_tag().unwrap_or_default().to_string();
                    meta = h.metadata().cloned().unwrap_or_default();
                }
                if step != Step::Head {
                    let o = c
                        .copy_object()
                        .bucket(&bucket)
                        .key(&key)
                        .copy_source(format!("{bucket}/{key}"))
                        .metadata_directive(MetadataDirective::Replace)
                        .set_metadata(Some(meta.clone()))
                        .copy_source_if_match(&etag)
                        .send()
                        .await
                        .unwrap();
                    if let Some(e) = o.copy_object_result().and_then(|r| r.e_tag()) {
                        etag = e.to_string();
                    }
                }
                lat.push(t.elapsed().as_secs_f64());
                items.lock().unwrap()[i] = (key, etag, meta);
            }
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        all.extend(r.unwrap());
    }
    all
}
