//! The S3 client layer (`store::s3::client`) against a real three-node Garage cluster.
//!
//! One test function runs every case in turn on one cluster: the client reads its
//! credentials from the process environment (as S3 tools do), which parallel tests would
//! fight over. Garage missing is a failure that says so (common::garage), never a skip.
#![allow(clippy::unwrap_used)]

mod common;

use common::garage::{Cluster, SCRUBBED_AWS_ENV};
use envelopefs::error::Error;
use envelopefs::store::s3::client::{S3Client, S3Options, MULTIPART_THRESHOLD};
use std::io::{self, Read};
use std::time::{Duration, Instant};

fn meta(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[0] ^ seed)
        .collect()
}

/// Yields `data`, then fails after `fail_at` bytes.
struct FailingReader {
    data: Vec<u8>,
    pos: usize,
    fail_at: usize,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.fail_at {
            return Err(io::Error::other("the disk went away (test)"));
        }
        let n = buf.len().min(self.fail_at - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn client(c: &Cluster) -> S3Client {
    // The endpoint and region come from the environment set below: that path is tested too.
    S3Client::connect(&c.bucket, &S3Options::default()).unwrap()
}

#[test]
fn s3_client_against_a_three_node_garage_cluster() {
    let cluster = Cluster::start();
    for k in SCRUBBED_AWS_ENV {
        std::env::remove_var(k);
    }
    for (k, v) in cluster.env() {
        std::env::set_var(k, v);
    }
    let s3 = client(&cluster);
    assert_eq!(s3.endpoint(), cluster.endpoint);

    put_and_head(&s3);
    ranges(&s3);
    copy_onto_itself(&s3);
    stale_copy(&s3);
    multipart_etag_survives_a_copy(&s3);
    list_pages(&s3);
    delete_then_head(&s3);
    cut_off_upload_leaves_nothing(&s3);
    wrong_secret_is_refused(&cluster);
    unreachable_endpoint(&cluster);
}

fn put_and_head(s3: &S3Client) {
    assert!(s3.head("ph/none").unwrap().is_none());
    assert!(s3.get("ph/none").unwrap().is_none());
    let data = pattern(1000, 1);
    let m = meta(&[("envelopefs-header", "aGVsbG8="), ("Other", "x y")]);
    let etag = s3.put("ph/a", data.clone(), &m).unwrap();
    assert!(!etag.is_empty() && !etag.contains('"'), "{etag}");
    let h = s3.head("ph/a").unwrap().unwrap();
    assert_eq!(h.size, 1000);
    assert_eq!(h.etag, etag);
    assert_eq!(h.metadata.get("envelopefs-header").unwrap(), "aGVsbG8=");
    assert_eq!(h.metadata.get("other").unwrap(), "x y", "{:?}", h.metadata);
    let (got, gh) = s3.get("ph/a").unwrap().unwrap();
    assert_eq!(got, data);
    assert_eq!(gh, h);
}

fn ranges(s3: &S3Client) {
    let data = pattern(10_000, 2);
    s3.put("rg/a", data.clone(), &[]).unwrap();
    assert_eq!(s3.get_range("rg/a", 100, 50).unwrap(), &data[100..150]);
    assert_eq!(s3.get_range("rg/a", 9_990, 100).unwrap(), &data[9_990..]);
    assert_eq!(s3.get_range("rg/a", 0, 10_000).unwrap(), data);
    assert!(s3.get_range("rg/a", 500, 0).unwrap().is_empty());
    assert!(s3.get_range("rg/a", 10_000, 10).unwrap().is_empty());
    // len 0 makes no request: not even a missing object is noticed.
    assert!(s3.get_range("rg/none", 0, 0).unwrap().is_empty());
    let e = s3.get_range("rg/none", 0, 10).unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");
    assert!(e.to_string().contains("rg/none"), "{e}");
}

fn copy_onto_itself(s3: &S3Client) {
    let data = pattern(5000, 3);
    let etag = s3
        .put(
            "cp/a",
            data.clone(),
            &meta(&[("envelopefs-header", "djE=")]),
        )
        .unwrap();
    let new = s3
        .copy(
            "cp/a",
            "cp/a",
            &meta(&[("envelopefs-header", "djI=")]),
            Some(&etag),
        )
        .unwrap();
    assert_eq!(new, etag, "a metadata-only copy keeps the ETag");
    let (got, h) = s3.get("cp/a").unwrap().unwrap();
    assert_eq!(got, data);
    assert_eq!(h.etag, etag);
    assert_eq!(h.metadata.get("envelopefs-header").unwrap(), "djI=");
    assert_eq!(
        h.metadata.len(),
        1,
        "REPLACE drops the old keys: {:?}",
        h.metadata
    );
    // A copy to another key works too, and a missing source is NotFound.
    s3.copy("cp/a", "cp/b", &[], None).unwrap();
    assert_eq!(s3.get("cp/b").unwrap().unwrap().0, data);
    let e = s3.copy("cp/none", "cp/c", &[], None).unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");
}

fn stale_copy(s3: &S3Client) {
    let etag = s3
        .put("st/a", b"one".to_vec(), &meta(&[("h", "v1")]))
        .unwrap();
    let wrong = "0123456789abcdef0123456789abcdef";
    assert_ne!(etag, wrong);
    let e = s3
        .copy("st/a", "st/a", &meta(&[("h", "v2")]), Some(wrong))
        .unwrap_err();
    assert!(matches!(e, Error::Stale(_)), "{e:?}");
    assert!(e.to_string().contains("st/a"), "{e}");
    let h = s3.head("st/a").unwrap().unwrap();
    assert_eq!(h.etag, etag);
    assert_eq!(
        h.metadata.get("h").unwrap(),
        "v1",
        "a refused copy changes nothing"
    );
}

fn multipart_etag_survives_a_copy(s3: &S3Client) {
    let len = 20 << 20;
    let data = pattern(len, 4);
    let mut f = tempfile::tempfile().unwrap();
    io::Write::write_all(&mut f, &data).unwrap();
    let etag = s3
        .put_file("mp/a", &f, len as u64, &meta(&[("h", "v1")]))
        .unwrap();
    assert!(
        etag.ends_with("-3"),
        "20 MiB in 8 MiB parts: 3 parts, got {etag}"
    );
    let t = Instant::now();
    let new = s3
        .copy("mp/a", "mp/a", &meta(&[("h", "v2")]), Some(&etag))
        .unwrap();
    let took = t.elapsed();
    assert_eq!(
        new, etag,
        "the copy re-copied the data (ETag changed) in {took:?}"
    );
    let h = s3.head("mp/a").unwrap().unwrap();
    assert_eq!((h.size, h.etag.as_str()), (len as u64, etag.as_str()));
    assert_eq!(h.metadata.get("h").unwrap(), "v2");
    // Ranged reads across a part boundary.
    let b: usize = 8 << 20;
    assert_eq!(
        s3.get_range("mp/a", (b - 10) as u64, 20).unwrap(),
        &data[b - 10..b + 10]
    );
    assert_eq!(s3.get("mp/a").unwrap().unwrap().0, data);
    // At the threshold: one PUT (no `-N`).
    let small = pattern(MULTIPART_THRESHOLD as usize, 5);
    let mut f = tempfile::tempfile().unwrap();
    io::Write::write_all(&mut f, &small).unwrap();
    let etag = s3.put_file("mp/b", &f, small.len() as u64, &[]).unwrap();
    assert!(!etag.contains('-'), "{etag}");
    assert_eq!(s3.abort_uploads("mp/").unwrap(), 0);
}

fn list_pages(s3: &S3Client) {
    let keys = ["ls/a", "ls/b", "ls/c", "ls/d/x", "ls/e"];
    for k in keys {
        s3.put(k, k.as_bytes().to_vec(), &[]).unwrap();
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let p = s3.list("ls/", None, after.as_deref(), 2).unwrap();
        pages += 1;
        assert!(p.objects.len() <= 2);
        for o in &p.objects {
            assert_eq!(o.size, o.key.len() as u64);
            assert!(!o.etag.is_empty());
        }
        seen.extend(p.objects.iter().map(|o| o.key.clone()));
        match p.next {
            Some(n) => after = Some(n),
            None => break,
        }
        assert!(pages < 10, "listing does not end: {seen:?}");
    }
    assert_eq!(seen, keys, "every key once, in order");
    // With a delimiter, one entry per page: the common prefix comes once.
    let (mut objs, mut prefixes, mut after) = (Vec::new(), Vec::new(), None::<String>);
    for _ in 0..10 {
        let p = s3.list("ls/", Some("/"), after.as_deref(), 1).unwrap();
        objs.extend(p.objects.into_iter().map(|o| o.key));
        prefixes.extend(p.prefixes);
        after = p.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(objs, ["ls/a", "ls/b", "ls/c", "ls/e"]);
    assert_eq!(prefixes, ["ls/d/"]);
}

fn delete_then_head(s3: &S3Client) {
    s3.put("dl/a", b"x".to_vec(), &[]).unwrap();
    s3.delete("dl/a").unwrap();
    assert!(s3.head("dl/a").unwrap().is_none());
    s3.delete("dl/a").unwrap();
    s3.delete("dl/never").unwrap();
}

fn cut_off_upload_leaves_nothing(s3: &S3Client) {
    let len = 30 << 20;
    let data = pattern(len, 6);
    let mut r = FailingReader {
        data: data.clone(),
        pos: 0,
        fail_at: 20 << 20,
    };
    let e = s3.put_reader("cut/a", &mut r, len as u64, &[]).unwrap_err();
    assert!(e.to_string().contains("the disk went away"), "{e}");
    assert!(e.to_string().contains("cut/a"), "{e}");
    assert!(
        s3.head("cut/a").unwrap().is_none(),
        "a cut-off upload left an object"
    );
    assert_eq!(s3.abort_uploads("cut/").unwrap(), 0, "an upload was left");
    // Over an existing object: the old one stays.
    let old = s3.put("cut/b", b"old".to_vec(), &[]).unwrap();
    let mut r = FailingReader {
        data,
        pos: 0,
        fail_at: 9 << 20,
    };
    s3.put_reader("cut/b", &mut r, len as u64, &[]).unwrap_err();
    assert_eq!(s3.head("cut/b").unwrap().unwrap().etag, old);
    // A reader that ends early is an error too.
    let mut short = io::Cursor::new(vec![0u8; 100]);
    s3.put_reader("cut/c", &mut short, 200, &[]).unwrap_err();
    assert!(s3.head("cut/c").unwrap().is_none());
    // abort_uploads finds an upload left by another client, and ends it.
    assert_eq!(s3.abort_uploads("cut/").unwrap(), 0);
}

fn wrong_secret_is_refused(cluster: &Cluster) {
    let wrong = "0000000000000000000000000000000000000000000000000000000000000000";
    assert_ne!(cluster.secret_key, wrong);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", wrong);
    let s3 = client(cluster);
    let results = [
        s3.put("auth/a", b"x".to_vec(), &[]).map(|_| ()),
        s3.head("auth/a").map(|_| ()),
        s3.list("", None, None, 10).map(|_| ()),
    ];
    std::env::set_var("AWS_SECRET_ACCESS_KEY", &cluster.secret_key);
    for r in results {
        let e = r.unwrap_err();
        assert!(
            matches!(e, Error::PermissionDenied(_) | Error::AccessDenied(_)),
            "{e:?}"
        );
        let m = e.to_string();
        assert!(m.contains(&cluster.endpoint), "{m}");
        assert!(
            !m.contains(wrong) && !m.contains(&cluster.secret_key),
            "{m}"
        );
    }
    // With the right secret back, a new client gets in.
    assert!(client(cluster).head("auth/a").unwrap().is_none());
}

fn unreachable_endpoint(cluster: &Cluster) {
    // A loopback port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let opts = S3Options {
        endpoint_url: Some(endpoint.clone()),
        region: Some(cluster.region.clone()),
        profile: None,
    };
    let s3 = S3Client::connect(&cluster.bucket, &opts).unwrap();
    assert_eq!(s3.endpoint(), endpoint);
    let t = Instant::now();
    let e = s3.head("un/a").unwrap_err();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}: {e}");
    let m = e.to_string();
    assert!(m.contains(&endpoint) && m.contains("un/a"), "{m}");
    assert!(m.contains("cannot reach"), "{m}");
}
