//! A blocking S3 client: the few calls the object-store backend needs, on top of aws-sdk-s3.
//!
//! The rest of envelopefs is synchronous, so [`S3Client`] owns a small tokio runtime and
//! blocks on it. One client (and its clones) shares one runtime and one connection pool.
//!
//! Choices that matter for Garage (docs/DECISIONS.md, "dependency: aws-sdk-s3"):
//! - path-style addressing (`http://host:3900/bucket/key`);
//! - checksums only when an operation requires them, on requests and responses: a multipart
//!   upload with checksums is re-copied by Garage on its first copy, which a rewrap must not do;
//! - bounded time: a connect timeout of [`CONNECT_TIMEOUT`], per-attempt and per-operation
//!   timeouts, and the SDK's standard retries ([`MAX_ATTEMPTS`] attempts in all);
//! - on `http://` endpoints, a transport of our own ([`Transport::QuickAck`]: hyper, as the
//!   SDK's client, plus `TCP_QUICKACK` before every read). Garage does not set `TCP_NODELAY`,
//!   and it writes a GET's response head and body separately: the body then waits for our
//!   ACK of the head, which Linux delays by 40 ms. The other ~40 ms stalls (HEAD, PUT, COPY,
//!   LIST on a cluster of several nodes) happen between Garage's nodes, where no client
//!   socket option reaches (docs/GARAGE.md, "The 40 ms stall").
//!
//! User metadata: callers pass bare keys (`envelopefs-header`); the SDK sends them as
//! `x-amz-meta-<key>` and servers hand them back lowercased. Keys must be lowercase ASCII
//! (`a-z0-9-`) and values must be ASCII without control characters: they travel as HTTP
//! headers, so callers base64 binary values. AWS S3 allows 2 KB of user metadata in all.
//!
//! Every error message starts `s3 ENDPOINT BUCKET/KEY:` and never contains a secret.

use crate::error::{Error, Result};
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTimeFormat};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Objects up to this size go up in one PUT; larger ones in parts of [`PART_SIZE`].
pub const MULTIPART_THRESHOLD: u64 = 8 << 20;
/// Size of the parts of a multipart upload (the last one may be shorter).
pub const PART_SIZE: u64 = 8 << 20;
/// Parts of one upload in flight at once (memory: this many parts plus the one being read).
pub const UPLOAD_PARALLELISM: usize = 4;
/// Longest wait for a TCP connection to the endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one attempt of one request may take (an 8 MiB part included).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest one operation may take, retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(150);
/// Attempts per request (the first one included), with the SDK's standard backoff.
pub const MAX_ATTEMPTS: u32 = 3;
/// Region when none is given and none is configured anywhere.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Where and how to connect. `None` fields come from the environment, as S3 tools do:
/// `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL`, `AWS_REGION`/`AWS_DEFAULT_REGION`,
/// `AWS_PROFILE`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`(/`AWS_SESSION_TOKEN`), then the
/// shared config and credentials files (`~/.aws/config`, `~/.aws/credentials`, or
/// `AWS_CONFIG_FILE`/`AWS_SHARED_CREDENTIALS_FILE`). Nothing is asked of instance metadata
/// services. The region defaults to [`DEFAULT_REGION`].
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// e.g. `http://127.0.0.1:3900`.
    pub endpoint_url: Option<String>,
    /// Signing region (Garage: its `s3_region`, often `garage`).
    pub region: Option<String>,
    /// Profile of the shared config and credentials files.
    pub profile: Option<String>,
}

/// What HEAD (or GET) says of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Size in bytes.
    pub size: u64,
    /// ETag without the quotes (`hex` or, after a multipart upload, `hex-N`).
    pub etag: String,
    /// User metadata, bare lowercase keys (no `x-amz-meta-`).
    pub metadata: BTreeMap<String, String>,
    /// Last-Modified, by the server's clock (whole seconds), if the server gave it.
    pub modified: Option<SystemTime>,
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Full key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag without the quotes.
    pub etag: String,
}

/// An unfinished multipart upload (ListMultipartUploads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The key it would create.
    pub key: String,
    /// Its upload id.
    pub upload_id: String,
    /// When it was initiated, by the server's clock (`None` if the server gave no time).
    pub initiated: Option<SystemTime>,
    /// The same, as the server gave it (RFC 3339), for messages.
    pub initiated_text: String,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListPage {
    /// Objects, in key order.
    pub objects: Vec<Listed>,
    /// Common prefixes (with a delimiter), each ending in the delimiter.
    pub prefixes: Vec<String>,
    /// `Some` when there is more: pass it as `start_after` of the next call. It is a key (or,
    /// after a common prefix `P`, `P` followed by U+10FFFF), not an opaque token.
    pub next: Option<String>,
}

/// The blocking S3 client. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct S3Client {
    rt: Arc<tokio::runtime::Runtime>,
    sdk: aws_sdk_s3::Client,
    bucket: String,
    endpoint: String,
}

impl std::fmt::Debug for S3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Client")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

/// The HTTP transport of a client (docs/GARAGE.md, "The 40 ms stall").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// On `http://` endpoints, hyper over sockets that acknowledge what they receive at once
    /// (`TCP_QUICKACK` before every read), so a server that does not set `TCP_NODELAY`
    /// (Garage) cannot hold the rest of a response back on our delayed ACK; on `https://`
    /// endpoints, the SDK's own client.
    #[default]
    QuickAck,
    /// The SDK's own HTTP client (hyper, `TCP_NODELAY`, delayed ACKs as the kernel does
    /// them), whatever the endpoint. For comparison and as a way back.
    Sdk,
}

/// Takes the first of these environment variables that is set and not empty.
fn env_first(names: &[&str]) -> Option<String> {
    names
        .iter()
        .filter_map(|n| std::env::var(n).ok())
        .find(|v| !v.trim().is_empty())
}

impl S3Client {
    /// A client for `bucket`. Does no network I/O: an unreachable endpoint or refused
    /// credentials show on the first call.
    pub fn connect(bucket: &str, opts: &S3Options) -> Result<S3Client> {
        S3Client::connect_with(bucket, opts, Transport::default())
    }

    /// [`S3Client::connect`] with the given HTTP transport.
    pub fn connect_with(bucket: &str, opts: &S3Options, transport: Transport) -> Result<S3Client> {
        if bucket.is_empty() {
            return Err(Error::InvalidArgument("s3: empty bucket name".into()));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("envelopefs-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("s3: starting the client's runtime", e))?;
        let profile = opts.profile.clone().or_else(|| env_first(&["AWS_PROFILE"]));
        let endpoint_opt = opts
            .endpoint_url
            .clone()
            .or_else(|| env_first(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]));
        let sdk_config = rt.block_on(async {
            let mut region_profile = aws_config::profile::ProfileFileRegionProvider::builder();
            let mut creds_profile = aws_config::profile::ProfileFileCredentialsProvider::builder();
            if let Some(p) = &profile {
                region_profile = region_profile.profile_name(p);
                creds_profile = creds_profile.profile_name(p);
            }
            let region = RegionProviderChain::first_try(
                opts.region.clone().map(aws_sdk_s3::config::Region::new),
            )
            .or_else(aws_config::environment::EnvironmentVariableRegionProvider::new())
            .or_else(region_profile.build())
            .or_else(aws_sdk_s3::config::Region::new(DEFAULT_REGION));
            let creds = CredentialsProviderChain::first_try(
                "Environment",
                aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
            )
            .or_else("Profile", creds_profile.build());
            let mut loader = aws_config::defaults(BehaviorVersion::latest())
                .region(region)
                .credentials_provider(creds)
                .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(CONNECT_TIMEOUT)
                        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                        .operation_timeout(OPERATION_TIMEOUT)
                        .build(),
                )
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
            if let Some(p) = &profile {
                loader = loader.profile_name(p);
            }
            if let Some(e) = &endpoint_opt {
                loader = loader.endpoint_url(e);
            }
            loader.load().await
        });
        let region = sdk_config
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| DEFAULT_REGION.to_string());
        let endpoint = endpoint_opt
            .or_else(|| sdk_config.endpoint_url().map(str::to_string))
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk_config)
            .force_path_style(true)
            .endpoint_url(&endpoint);
        if transport == Transport::QuickAck && endpoint.starts_with("http://") {
            conf = conf.http_client(quickack::http_client(CONNECT_TIMEOUT));
        }
        let sdk = aws_sdk_s3::Client::from_conf(conf.build());
        Ok(S3Client {
            rt: Arc::new(rt),
            sdk,
            bucket: bucket.to_string(),
            endpoint,
        })
    }

    /// The endpoint URL, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The prefix of every message about `key`.
    fn at(&self, key: &str) -> String {
        format!("s3 {} {}/{}", self.endpoint, self.bucket, key)
    }

    /// Size, ETag and metadata of `key`; `None` when there is no such object.
    pub fn head(&self, key: &str) -> Result<Option<Head>> {
        let r = self
            .rt
            .block_on(self.sdk.head_object().bucket(&self.bucket).key(key).send());
        match r {
            Ok(o) => Ok(Some(Head {
                size: size_of(o.content_length()),
                etag: unquote(o.e_tag()),
                metadata: meta_of(o.metadata()),
                modified: o
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok()),
            })),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.error(key, "HEAD", e)),
        }
    }

    /// The whole object, with its head; `None` when there is no such object.
    pub fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Head)>> {
        self.rt.block_on(async {
            let r = self
                .sdk
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await;
            let o = match r {
                Ok(o) => o,
                Err(e) if status_of(&e) == Some(404) => return Ok(None),
                Err(e) => return Err(self.error(key, "GET", e)),
            };
            let head = Head {
                size: size_of(o.content_length()),
                etag: unquote(o.e_tag()),
                metadata: meta_of(o.metadata()),
                modified: o
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok()),
            };
            let body = o
                .body
                .collect()
                .await
                .map_err(|e| self.body_error(key, "GET", e))?
                .into_bytes()
                .to_vec();
            Ok(Some((body, head)))
        })
    }

    /// Bytes `[off, off + len)` of `key`: fewer at the end of the object, none past it.
    /// `len == 0` returns nothing without a request. No such object: [`Error::NotFound`].
    pub fn get_range(&self, key: &str, off: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let last = off.checked_add(len - 1).ok_or_else(|| {
            Error::InvalidArgument(format!("{}: range {off}+{len} overflows", self.at(key)))
        })?;
        self.rt.block_on(async {
            let r = self
                .sdk
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .range(format!("bytes={off}-{last}"))
                .send()
                .await;
            let o = match r {
                Ok(o) => o,
                // Range not satisfiable: the offset is at or past the end.
                Err(e) if status_of(&e) == Some(416) => return Ok(Vec::new()),
                Err(e) => return Err(self.error(key, "GET range", e)),
            };
            let ranged = o.content_range().is_some();
            let body = o
                .body
                .collect()
                .await
                .map_err(|e| self.body_error(key, "GET range", e))?
                .into_bytes();
            // A server that ignores Range sends 200 and the whole object.
            let body = if !ranged && body.len() as u64 > len {
                let start = usize::try_from(off).unwrap_or(usize::MAX).min(body.len());
                let end = usize::try_from(off.saturating_add(len))
                    .unwrap_or(usize::MAX)
                    .min(body.len());
                body.slice(start..end).to_vec()
            } else {
                body.to_vec()
            };
            Ok(body)
        })
    }

    /// Puts `body` at `key` with user `metadata` (see the module doc) in one request;
    /// returns the new ETag.
    pub fn put(&self, key: &str, body: Vec<u8>, metadata: &[(String, String)]) -> Result<String> {
        self.rt.block_on(self.put_async(key, body, metadata))
    }

    async fn put_async(
        &self,
        key: &str,
        body: Vec<u8>,
        metadata: &[(String, String)],
    ) -> Result<String> {
        let len = body.len() as i64;
        let o = self
            .sdk
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(len)
            .body(ByteStream::from(body))
            .set_metadata(meta_map(metadata))
            .send()
            .await
            .map_err(|e| self.error(key, "PUT", e))?;
        Ok(unquote(o.e_tag()))
    }

    /// Puts the first `len` bytes of `file` (read with positioned reads: the file offset is
    /// left alone) at `key`: one PUT up to [`MULTIPART_THRESHOLD`], a multipart upload of
    /// [`PART_SIZE`] parts above, [`UPLOAD_PARALLELISM`] parts in flight, no checksums. On any
    /// failure the upload is aborted: no object (nor a changed one) and no upload is left.
    pub fn put_file(
        &self,
        key: &str,
        file: &File,
        len: u64,
        metadata: &[(String, String)],
    ) -> Result<String> {
        let mut pos = 0u64;
        let mut read = |buf: &mut [u8]| -> io::Result<()> {
            file.read_exact_at(buf, pos)?;
            pos += buf.len() as u64;
            Ok(())
        };
        self.put_from(key, &mut read, len, metadata)
    }

    /// [`S3Client::put_file`] from any reader, which must yield `len` bytes; a reader error
    /// (or too few bytes) aborts the upload and is returned.
    pub fn put_reader(
        &self,
        key: &str,
        reader: &mut dyn Read,
        len: u64,
        metadata: &[(String, String)],
    ) -> Result<String> {
        let mut read = |buf: &mut [u8]| reader.read_exact(buf);
        self.put_from(key, &mut read, len, metadata)
    }

    fn put_from(
        &self,
        key: &str,
        read: &mut dyn FnMut(&mut [u8]) -> io::Result<()>,
        len: u64,
        metadata: &[(String, String)],
    ) -> Result<String> {
        let read_err =
            |e: io::Error| Error::io(format!("{}: reading the data to upload", self.at(key)), e);
        if len <= MULTIPART_THRESHOLD {
            let mut body = vec![0u8; len as usize];
            read(&mut body).map_err(read_err)?;
            return self.put(key, body, metadata);
        }
        let created = self
            .rt
            .block_on(
                self.sdk
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .set_metadata(meta_map(metadata))
                    .send(),
            )
            .map_err(|e| self.error(key, "CreateMultipartUpload", e))?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(Error::io(
                format!("{}: CreateMultipartUpload", self.at(key)),
                io::Error::other("the server returned no upload id"),
            ));
        };
        let r = self.upload_parts(key, &upload_id, read, len);
        let r = match r {
            Ok(parts) => self
                .rt
                .block_on(
                    self.sdk
                        .complete_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(&upload_id)
                        .multipart_upload(
                            CompletedMultipartUpload::builder()
                                .set_parts(Some(parts))
                                .build(),
                        )
                        .send(),
                )
                .map(|o| unquote(o.e_tag()))
                .map_err(|e| self.error(key, "CompleteMultipartUpload", e)),
            Err(e) => Err(e),
        };
        if r.is_err() {
            // Best effort: the error that made us abort is the one to report.
            let _ = self.rt.block_on(
                self.sdk
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send(),
            );
        }
        r
    }

    /// Reads the parts on this thread and uploads them on the runtime, at most
    /// [`UPLOAD_PARALLELISM`] at once; the parts in order, or the first error.
    fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        read: &mut dyn FnMut(&mut [u8]) -> io::Result<()>,
        len: u64,
    ) -> Result<Vec<CompletedPart>> {
        let mut tasks: tokio::task::JoinSet<Result<CompletedPart>> = tokio::task::JoinSet::new();
        let mut parts = Vec::new();
        let mut off = 0u64;
        let mut number = 0i32;
        let mut result = Ok(());
        while off < len && result.is_ok() {
            while tasks.len() >= UPLOAD_PARALLELISM {
                result = self.join_one(&mut tasks, &mut parts);
                if result.is_err() {
                    break;
                }
            }
            // Test builds: an upload cut off after two parts (src/fault.rs).
            if result.is_ok() && parts.len() + tasks.len() >= 2 {
                if crate::fault::enabled("s3-die-mid-upload") {
                    // The parts sent are stored first: the upload is really half done.
                    while result.is_ok() && !tasks.is_empty() {
                        result = self.join_one(&mut tasks, &mut parts);
                    }
                    tracing::error!("fault s3-die-mid-upload: killing the process");
                    crate::fault::die_now();
                }
                if crate::fault::enabled("s3-fail-mid-upload") {
                    result = Err(Error::io(
                        format!("{}: UploadPart {}", self.at(key), number + 1),
                        io::Error::other("fault s3-fail-mid-upload: the connection was cut"),
                    ));
                    break;
                }
            }
            if result.is_err() {
                break;
            }
            let n = PART_SIZE.min(len - off);
            let mut buf = vec![0u8; n as usize];
            if let Err(e) = read(&mut buf) {
                result = Err(Error::io(
                    format!("{}: reading the data to upload", self.at(key)),
                    e,
                ));
                break;
            }
            number += 1;
            off += n;
            if crate::fault::enabled("s3-slow-upload") {
                // Test builds: an upload that lasts, so a test can act while it is under way.
                std::thread::sleep(Duration::from_secs(1));
            }
            let sdk = self.sdk.clone();
            let (bucket, k, id) = (self.bucket.clone(), key.to_string(), upload_id.to_string());
            let at = self.clone();
            let _guard = self.rt.enter();
            tasks.spawn(async move {
                let o = sdk
                    .upload_part()
                    .bucket(bucket)
                    .key(&k)
                    .upload_id(id)
                    .part_number(number)
                    .content_length(n as i64)
                    .body(ByteStream::from(buf))
                    .send()
                    .await
                    .map_err(|e| at.error(&k, &format!("UploadPart {number}"), e))?;
                Ok(CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(o.e_tag().map(str::to_string))
                    .build())
            });
        }
        while result.is_ok() && !tasks.is_empty() {
            result = self.join_one(&mut tasks, &mut parts);
        }
        if result.is_err() {
            tasks.abort_all();
            self.rt
                .block_on(async { while tasks.join_next().await.is_some() {} });
        }
        result?;
        parts.sort_by_key(|p| p.part_number());
        Ok(parts)
    }

    fn join_one(
        &self,
        tasks: &mut tokio::task::JoinSet<Result<CompletedPart>>,
        parts: &mut Vec<CompletedPart>,
    ) -> Result<()> {
        match self.rt.block_on(tasks.join_next()) {
            Some(Ok(Ok(p))) => {
                parts.push(p);
                Ok(())
            }
            Some(Ok(Err(e))) => Err(e),
            Some(Err(e)) => Err(Error::io(
                format!(
                    "s3 {} {}: an upload task failed",
                    self.endpoint, self.bucket
                ),
                io::Error::other(e.to_string()),
            )),
            None => Ok(()),
        }
    }

    /// Server-side copy of `src_key` to `dst_key` with the user metadata replaced by
    /// `metadata` (metadata directive REPLACE; onto itself this is a metadata-only rewrite
    /// that keeps data and ETag on Garage). With `if_match`, the copy happens only if the
    /// source's ETag is still that (copy-source-if-match): otherwise [`Error::Stale`] and
    /// nothing changes. Returns the new ETag.
    pub fn copy(
        &self,
        src_key: &str,
        dst_key: &str,
        metadata: &[(String, String)],
        if_match: Option<&str>,
    ) -> Result<String> {
        let mut req = self
            .sdk
            .copy_object()
            .bucket(&self.bucket)
            .key(dst_key)
            .copy_source(format!("{}/{}", self.bucket, encode_key(src_key)))
            .metadata_directive(MetadataDirective::Replace)
            .set_metadata(meta_map(metadata).or_else(|| Some(HashMap::new())));
        if let Some(tag) = if_match {
            req = req.copy_source_if_match(quote(tag));
        }
        let what = if src_key == dst_key {
            "COPY onto itself".to_string()
        } else {
            format!("COPY from {src_key}")
        };
        match self.rt.block_on(req.send()) {
            Ok(o) => Ok(unquote(o.copy_object_result().and_then(|r| r.e_tag()))),
            Err(e) if status_of(&e) == Some(412) => Err(Error::Stale(format!(
                "{}: {what}: the source changed (its ETag is no longer {})",
                self.at(dst_key),
                if_match.unwrap_or("the one expected")
            ))),
            Err(e) if status_of(&e) == Some(404) => Err(Error::NotFound(format!(
                "{}: {what}: no such object {}",
                self.at(dst_key),
                src_key
            ))),
            Err(e) => Err(self.error(dst_key, &what, e)),
        }
    }

    /// Server-side copy of `src_key` to `dst_key` with its user metadata as it is (metadata
    /// directive COPY). No such source: [`Error::NotFound`]. Returns the new ETag.
    pub fn copy_keep(&self, src_key: &str, dst_key: &str) -> Result<String> {
        let req = self
            .sdk
            .copy_object()
            .bucket(&self.bucket)
            .key(dst_key)
            .copy_source(format!("{}/{}", self.bucket, encode_key(src_key)))
            .metadata_directive(MetadataDirective::Copy);
        match self.rt.block_on(req.send()) {
            Ok(o) => Ok(unquote(o.copy_object_result().and_then(|r| r.e_tag()))),
            Err(e) if status_of(&e) == Some(404) => Err(Error::NotFound(format!(
                "{}: COPY from {src_key}: no such object",
                self.at(dst_key)
            ))),
            Err(e) => Err(self.error(dst_key, &format!("COPY from {src_key}"), e)),
        }
    }

    /// Deletes `key`; no such object is not an error.
    pub fn delete(&self, key: &str) -> Result<()> {
        let r = self.rt.block_on(
            self.sdk
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send(),
        );
        match r {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.error(key, "DELETE", e)),
        }
    }

    /// One page (ListObjectsV2) of at most `max_keys` entries under `prefix`, after the key
    /// `start_after` (exclusive). Continue with `start_after = page.next` (see
    /// [`ListPage::next`]): the cursor is a key, not a continuation token, so it can be stored
    /// and reused.
    pub fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: Option<&str>,
        max_keys: i32,
    ) -> Result<ListPage> {
        let mut req = self
            .sdk
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(max_keys.max(1));
        if let Some(d) = delimiter {
            req = req.delimiter(d);
        }
        if let Some(s) = start_after {
            req = req.start_after(s);
        }
        let o = self
            .rt
            .block_on(req.send())
            .map_err(|e| self.error(prefix, "LIST", e))?;
        let objects: Vec<Listed> = o
            .contents()
            .iter()
            .map(|c| Listed {
                key: c.key().unwrap_or_default().to_string(),
                size: size_of(c.size()),
                etag: unquote(c.e_tag()),
            })
            .collect();
        // Resuming after a common prefix P starts after P + U+10FFFF; a server may still roll
        // a key of P up into P again: never report P twice.
        let prefixes: Vec<String> = o
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix().map(str::to_string))
            .filter(|p| start_after.is_none_or(|s| p.as_str() > s || !s.starts_with(p.as_str())))
            .collect();
        let next = if o.is_truncated() == Some(true) {
            let last_key = objects.last().map(|l| l.key.clone());
            let last_prefix = prefixes.last().map(|p| format!("{p}\u{10FFFF}"));
            match (last_key, last_prefix) {
                (Some(k), Some(p)) => Some(if p > k { p } else { k }),
                (k, p) => k.or(p).or_else(|| start_after.map(str::to_string)),
            }
        } else {
            None
        };
        Ok(ListPage {
            objects,
            prefixes,
            next,
        })
    }

    /// Every unfinished multipart upload under `prefix` (all pages), in key order.
    pub fn list_uploads(&self, prefix: &str) -> Result<Vec<Upload>> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let o = self
                .rt
                .block_on(
                    self.sdk
                        .list_multipart_uploads()
                        .bucket(&self.bucket)
                        .prefix(prefix)
                        .set_key_marker(key_marker.clone())
                        .set_upload_id_marker(id_marker.clone())
                        .send(),
                )
                .map_err(|e| self.error(prefix, "ListMultipartUploads", e))?;
            for u in o.uploads() {
                let (Some(k), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                out.push(Upload {
                    key: k.to_string(),
                    upload_id: id.to_string(),
                    initiated: u.initiated().and_then(|t| SystemTime::try_from(*t).ok()),
                    initiated_text: u
                        .initiated()
                        .and_then(|t| t.fmt(DateTimeFormat::DateTime).ok())
                        .unwrap_or_else(|| "unknown".to_string()),
                });
            }
            if o.is_truncated() != Some(true) {
                return Ok(out);
            }
            let next = (
                o.next_key_marker().map(str::to_string),
                o.next_upload_id_marker().map(str::to_string),
            );
            if next.0.is_none() || (next.0 == key_marker && next.1 == id_marker) {
                return Ok(out);
            }
            (key_marker, id_marker) = next;
        }
    }

    /// Aborts one unfinished multipart upload; `false` if there was no such upload (any
    /// more).
    pub fn abort_upload(&self, upload: &Upload) -> Result<bool> {
        let r = self.rt.block_on(
            self.sdk
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&upload.key)
                .upload_id(&upload.upload_id)
                .send(),
        );
        match r {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.error(&upload.key, "AbortMultipartUpload", e)),
        }
    }

    /// Aborts every unfinished multipart upload under `prefix`, whoever started it (for
    /// tests and tools; a store's own clean-up is [`super::lease::Lease::abort_stale_uploads`],
    /// which spares uploads started after its lease); returns how many.
    pub fn abort_uploads(&self, prefix: &str) -> Result<usize> {
        let mut n = 0;
        for u in self.list_uploads(prefix)? {
            if self.abort_upload(&u)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// When the object `key` was last written, by the server's clock and to the
    /// millisecond (from a listing: a HEAD's `Last-Modified` has whole seconds only);
    /// `None` if there is no such object or the server gives no time.
    pub fn modified_at(&self, key: &str) -> Result<Option<SystemTime>> {
        let o = self
            .rt
            .block_on(
                self.sdk
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(key)
                    .max_keys(1)
                    .send(),
            )
            .map_err(|e| self.error(key, "LIST", e))?;
        Ok(o.contents()
            .iter()
            .find(|c| c.key() == Some(key))
            .and_then(|c| c.last_modified())
            .and_then(|t| SystemTime::try_from(*t).ok()))
    }

    /// Maps an SDK error to the project's error, naming the endpoint, bucket and key.
    fn error<E, R>(&self, key: &str, what: &str, e: SdkError<E, R>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: HasStatus + std::fmt::Debug,
    {
        let at = format!("{}: {what}", self.at(key));
        match &e {
            SdkError::ServiceError(se) => {
                let status = se.raw().status_u16();
                let code = se.err().code().unwrap_or("");
                let msg = se.err().message().unwrap_or("");
                let detail = if code.is_empty() && msg.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status} {code}: {msg}")
                };
                match (status, code) {
                    (403, "InvalidAccessKeyId" | "SignatureDoesNotMatch") => {
                        Error::PermissionDenied(format!(
                            "{at}: the credentials were refused by {} ({detail})",
                            self.endpoint
                        ))
                    }
                    (403, "") => Error::AccessDenied(format!(
                        "{at}: refused by {} (wrong credentials, or no access to the bucket; {detail})",
                        self.endpoint
                    )),
                    (403, _) => Error::AccessDenied(format!(
                        "{at}: access refused by {} ({detail})",
                        self.endpoint
                    )),
                    (404, _) => Error::NotFound(format!("{at}: not found ({detail})")),
                    (412, _) => Error::Stale(format!("{at}: precondition failed ({detail})")),
                    (400 | 411 | 413 | 416, _) => {
                        Error::InvalidArgument(format!("{at}: refused ({detail})"))
                    }
                    (409, _) => Error::Busy(format!("{at}: conflict ({detail})")),
                    _ => Error::io(at, io::Error::other(detail)),
                }
            }
            SdkError::TimeoutError(_) => Error::TimedOut(format!(
                "{at}: no answer from {} in time ({} attempts, at most {} s)",
                self.endpoint,
                MAX_ATTEMPTS,
                OPERATION_TIMEOUT.as_secs()
            )),
            SdkError::DispatchFailure(d) => {
                let chain = error_chain(&e);
                if d.is_timeout() {
                    Error::TimedOut(format!(
                        "{at}: {} did not answer in time: {chain}",
                        self.endpoint
                    ))
                } else if d.is_io() {
                    Error::io(
                        at,
                        io::Error::other(format!("cannot reach {}: {chain}", self.endpoint)),
                    )
                } else {
                    Error::io(
                        at,
                        io::Error::other(format!("request to {} failed: {chain}", self.endpoint)),
                    )
                }
            }
            SdkError::ResponseError(_) => Error::io(
                at,
                io::Error::other(format!(
                    "unreadable response from {}: {}",
                    self.endpoint,
                    error_chain(&e)
                )),
            ),
            SdkError::ConstructionFailure(_) => Error::InvalidArgument(format!(
                "{at}: the request could not be made (credentials? region?): {}",
                error_chain(&e)
            )),
            _ => Error::io(at, io::Error::other(error_chain(&e))),
        }
    }

    fn body_error(&self, key: &str, what: &str, e: impl std::error::Error) -> Error {
        Error::io(
            format!("{}: {what}: reading the body", self.at(key)),
            io::Error::other(format!("from {}: {e}", self.endpoint)),
        )
    }
}

/// The HTTP status of a raw response, for the error mapping.
trait HasStatus {
    fn status_u16(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_u16(&self) -> u16 {
        self.status().as_u16()
    }
}

/// The HTTP status of a service error, if the server answered.
fn status_of<E, R: HasStatus>(e: &SdkError<E, R>) -> Option<u16> {
    match e {
        SdkError::ServiceError(se) => Some(se.raw().status_u16()),
        _ => None,
    }
}

/// An error and its sources on one line (the SDK's `Display` alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

fn size_of(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

fn unquote(etag: Option<&str>) -> String {
    etag.unwrap_or_default().trim_matches('"').to_string()
}

fn quote(etag: &str) -> String {
    format!("\"{}\"", etag.trim_matches('"'))
}

fn meta_of(m: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    })
    .unwrap_or_default()
}

fn meta_map(metadata: &[(String, String)]) -> Option<HashMap<String, String>> {
    if metadata.is_empty() {
        None
    } else {
        Some(metadata.iter().cloned().collect())
    }
}

/// Percent-encodes a key for `x-amz-copy-source` (`/` kept).
fn encode_key(key: &str) -> String {
    let mut s = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The quick-ACK transport ([`Transport::QuickAck`]): hyper's HTTP/1 client over TCP streams
/// that set `TCP_QUICKACK` before every read.
///
/// Why every read: once Linux sees a request/response exchange on a connection ("ping-pong"),
/// it holds the ACK of a small segment back (40 ms at least) until it has data to send with
/// it; `TCP_QUICKACK` leaves that mode, but the kernel enters it again at our next request,
/// so the option is a nudge, not a setting. Out of that mode, the read that empties the
/// receive queue sends the ACK of a small pushed segment at once. One `setsockopt` per read
/// is nothing next to a 40 ms stall.
///
/// Errors are sorted for the SDK's retries as its own client sorts them: timeouts, I/O
/// (refused, reset, closed: retried), an incomplete message (transient), the rest.
mod quickack {
    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
        SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::retry::ErrorKind;
    use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector as Tcp};
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;
    use tokio::net::TcpStream;

    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    pub(super) type Hyper = hyper_util::client::legacy::Client<QuickAckTcp, SdkBody>;

    /// Idle pooled connections are closed after this long (the SDK's client: 90 s).
    const POOL_IDLE: Duration = Duration::from_secs(90);

    /// One HTTP client: one connection pool, shared by every clone of the SDK client.
    pub(super) fn http_client(connect_timeout: Duration) -> SharedHttpClient {
        SharedHttpClient::new(QuickAckClient {
            connector: SharedHttpConnector::new(QuickAckHttp {
                client: hyper_client(connect_timeout),
            }),
        })
    }

    /// The hyper client under [`http_client`].
    pub(super) fn hyper_client(connect_timeout: Duration) -> Hyper {
        let mut tcp = Tcp::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        // Plain http only: https endpoints keep the SDK's client (and its TLS).
        tcp.enforce_http(true);
        let mut builder = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
        // The idle timeout needs a timer to be enforced.
        builder.pool_timer(TokioTimer::new());
        builder.pool_idle_timeout(POOL_IDLE);
        builder.build(QuickAckTcp { tcp })
    }

    #[derive(Debug, Clone)]
    struct QuickAckClient {
        connector: SharedHttpConnector,
    }

    impl HttpClient for QuickAckClient {
        fn http_connector(
            &self,
            _settings: &HttpConnectorSettings,
            _components: &RuntimeComponents,
        ) -> SharedHttpConnector {
            self.connector.clone()
        }
    }

    #[derive(Debug, Clone)]
    struct QuickAckHttp {
        client: Hyper,
    }

    impl HttpConnector for QuickAckHttp {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let request = match request.try_into_http1x() {
                Ok(r) => r,
                Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
            };
            let fut = self.client.request(request);
            HttpConnectorFuture::new(async move {
                match fut.await {
                    Ok(resp) => HttpResponse::try_from(resp.map(SdkBody::from_body_1_x))
                        .map_err(|e| ConnectorError::other(e.into(), None)),
                    Err(e) => Err(connector_error(e)),
                }
            })
        }
    }

    /// What the SDK's retries should make of a failed request.
    fn connector_error(e: hyper_util::client::legacy::Error) -> ConnectorError {
        let mut timeout = false;
        let mut io = e.is_connect();
        let mut incomplete = false;
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = src {
            if let Some(ioe) = s.downcast_ref::<std::io::Error>() {
                io = true;
                timeout |= ioe.kind() == std::io::ErrorKind::TimedOut;
            }
            if let Some(he) = s.downcast_ref::<hyper::Error>() {
                timeout |= he.is_timeout();
                io |= he.is_closed() || he.is_canceled();
                incomplete |= he.is_incomplete_message();
            }
            src = s.source();
        }
        let boxed: BoxError = Box::new(e);
        if timeout {
            ConnectorError::timeout(boxed)
        } else if io {
            ConnectorError::io(boxed)
        } else if incomplete {
            ConnectorError::other(boxed, Some(ErrorKind::TransientError))
        } else {
            ConnectorError::other(boxed, None)
        }
    }

    /// hyper's TCP connector, its streams wrapped in [`QuickAckIo`].
    #[derive(Debug, Clone)]
    pub(super) struct QuickAckTcp {
        tcp: Tcp,
    }

    impl tower_service::Service<http::Uri> for QuickAckTcp {
        type Response = QuickAckIo;
        type Error = BoxError;
        type Future = Pin<Box<dyn Future<Output = Result<QuickAckIo, BoxError>> + Send>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            self.tcp.poll_ready(cx).map_err(Into::into)
        }

        fn call(&mut self, uri: http::Uri) -> Self::Future {
            let fut = self.tcp.call(uri);
            Box::pin(async move { Ok(QuickAckIo { io: fut.await? }) })
        }
    }

    /// A TCP stream that turns on `TCP_QUICKACK` before every read.
    #[derive(Debug)]
    pub(super) struct QuickAckIo {
        io: TokioIo<TcpStream>,
    }

    impl Connection for QuickAckIo {
        fn connected(&self) -> Connected {
            self.io.connected()
        }
    }

    impl hyper::rt::Read for QuickAckIo {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: hyper::rt::ReadBufCursor<'_>,
        ) -> Poll<std::io::Result<()>> {
            // A failure only means the ACK may be delayed: nothing to report.
            let _ = socket2::SockRef::from(self.io.inner()).set_tcp_quickack(true);
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl hyper::rt::Write for QuickAckIo {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.io).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }

        fn is_write_vectored(&self) -> bool {
            self.io.is_write_vectored()
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::body::SdkBody;

    #[test]
    fn copy_source_keys_are_percent_encoded() {
        assert_eq!(encode_key("a/b c+d%é"), "a/b%20c%2Bd%25%C3%A9");
    }

    /// A server that, like Garage, leaves Nagle's algorithm on (no `TCP_NODELAY`) and writes
    /// a response's head and its body in two writes, so the body waits for the client's ACK
    /// of the head. Answers `n` GETs on one connection with 4 KiB each.
    fn split_writer(n: usize) -> (u16, std::thread::JoinHandle<()>) {
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = l.local_addr().expect("its address").port();
        let h = std::thread::spawn(move || {
            let Ok((mut s, _)) = l.accept() else { return };
            let (mut buf, mut chunk) = (Vec::new(), [0u8; 4096]);
            for _ in 0..n {
                let end = loop {
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                };
                buf.drain(..end);
                let head = b"HTTP/1.1 200 OK\r\ncontent-length: 4096\r\n\r\n";
                if s.write_all(head).is_err() || s.write_all(&[7u8; 4096]).is_err() {
                    return;
                }
            }
        });
        (port, h)
    }

    /// Milliseconds of each of `n` GETs through `client` to `split_writer(n)`.
    fn get_times<C>(client: hyper_util::client::legacy::Client<C, SdkBody>, n: usize) -> Vec<f64>
    where
        C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
    {
        let (port, server) = split_writer(n);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let times = rt.block_on(async {
            let mut times = Vec::new();
            for _ in 0..n {
                let req = http::Request::get(format!("http://127.0.0.1:{port}/b/k"))
                    .body(SdkBody::empty())
                    .expect("a request");
                let t = std::time::Instant::now();
                let resp = client.request(req).await.expect("a response");
                let body = ByteStream::from_body_1_x(resp.into_body())
                    .collect()
                    .await
                    .expect("a body")
                    .into_bytes();
                times.push(t.elapsed().as_secs_f64() * 1e3);
                assert_eq!(body.len(), 4096);
            }
            times
        });
        drop(client);
        server.join().expect("the server thread");
        times
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    }

    /// The quick-ACK transport does not wait for a Nagle-delayed body: Linux delays the ACK
    /// of a lone small segment by 40 ms at least once it sees a request/response exchange,
    /// and the quick-ACK transport's median stays well under that. (The same requests over
    /// hyper's plain connector, as the SDK's client makes it, are printed for comparison:
    /// they stall where the kernel delays ACKs, which this test does not require.)
    #[test]
    fn quickack_transport_does_not_wait_for_a_delayed_ack() {
        let n = 15;
        let quick = median(get_times(quickack::hyper_client(CONNECT_TIMEOUT), n));
        let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
        tcp.set_nodelay(true);
        let plain =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(tcp);
        let plain = median(get_times(plain, n));
        eprintln!("median GET: quick-ACK {quick:.1} ms, plain {plain:.1} ms");
        assert!(
            quick < 25.0,
            "quick-ACK transport: median GET {quick:.1} ms (plain connector: {plain:.1} ms)"
        );
    }

    #[test]
    fn etags_lose_and_gain_their_quotes() {
        assert_eq!(unquote(Some("\"abc-2\"")), "abc-2");
        assert_eq!(quote("abc"), "\"abc\"");
        assert_eq!(quote("\"abc\""), "\"abc\"");
    }
}
