//! Work requests: persisted, resumable bucket jobs: re-encrypt (`REENCRYPT_BUCKET`, rewraps
//! headers) and rekey (`REKEY_BUCKET`, new DEKs and rewritten data, see [`crate::ops::rekey`]).
//!
//! A work request is a JSON file in `STORE/.envelopefs/work-requests/ID.json`. Its target
//! key version is fixed when it is accepted; its scope is the objects created before then.
//! Running it is idempotent (objects already under the target are skipped), so a request
//! interrupted by a crash simply runs again. SUCCEEDED is written only after syncfs, so every
//! rewrapped header is durable by then.
//!
//! A rekey cannot replace an object the mount has open (its handles hold the old data key).
//! It goes on with the others, then retries the open ones until they are closed, for at most
//! the request's `open_wait_seconds`; what is still open then is not rekeyed, and the request
//! ends FAILED with those objects named in `errors`: SUCCEEDED means every object in scope
//! has a new data key. Customer-keyed and hard-linked objects, which a job cannot rekey, are
//! failures named in `errors` too, each with what to do instead.

use crate::error::{Error, Result};
use crate::format::{hex, unhex};
use crate::keys::keystore::{key_id_text, now_s, parse_key_id};
use crate::ops::rekey;
use crate::ops::rewrap::{self, Outcome, SkipReason, Target};
use crate::store::object::now_ns;
use crate::store::object::NoCustomerKeys;
use crate::store::seam::{self, BackendKind, Blob, Record};
use crate::store::Store;
use crate::sync::LockUnpoisoned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// States of a work request (OCI's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// Persisted, not started.
    Accepted,
    /// Running.
    InProgress,
    /// Done; every object in scope is under the target version (durably); for a rekey,
    /// every one that a job can rekey has a new data key.
    Succeeded,
    /// Done; some objects failed, or (a rekey) stayed open in the mount (see `errors`).
    Failed,
    /// A cancel was asked for and is taking effect.
    Canceling,
    /// Stopped by a cancel.
    Canceled,
}

impl State {
    /// Whether the request will not change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Succeeded | State::Failed | State::Canceled)
    }

    /// Parses a state name (case-insensitive, `-` or `_`).
    pub fn parse(s: &str) -> Result<State> {
        let norm = s.trim().to_ascii_uppercase().replace('-', "_");
        serde_json::from_value(serde_json::Value::String(norm)).map_err(|_| {
            Error::InvalidArgument(format!(
                "unknown state {s:?}: one of ACCEPTED, IN_PROGRESS, SUCCEEDED, FAILED, CANCELING, CANCELED"
            ))
        })
    }
}

string_enum! {
    /// What a work request does (its `operation_type`).
    pub enum Operation {
        /// Rewrap every data key under the target.
        ReencryptBucket = "REENCRYPT_BUCKET",
        /// Give every object a new data key, wrapped under the target.
        RekeyBucket = "REKEY_BUCKET",
    }
}

/// One failed object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectError {
    /// Object name in its bucket.
    pub object: String,
    /// What went wrong.
    pub message: String,
}

/// Most per-object errors kept in a work request.
pub const MAX_ERRORS: usize = 100;

/// A work request as persisted and printed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkRequest {
    /// `wr-<32 hex>`.
    pub id: String,
    /// `REENCRYPT_BUCKET` (rewrap) or `REKEY_BUCKET` (new data keys).
    pub operation_type: Operation,
    /// Current state.
    pub status: State,
    /// The bucket's name when accepted.
    pub bucket_name: String,
    /// The bucket's id (hex).
    pub bucket_id: String,
    /// The target master key.
    pub target_key_id: String,
    /// The target key version, fixed at acceptance.
    pub target_key_version: u32,
    /// 0 to 100.
    pub percent_complete: f64,
    /// Objects in the bucket when the run (last) started.
    pub objects_total: u64,
    /// Objects whose header was replaced.
    pub objects_rewrapped: u64,
    /// Objects given a new data key (`REKEY_BUCKET`).
    #[serde(default)]
    pub objects_rekeyed: u64,
    /// Objects left alone (already current, created later, customer-keyed).
    pub objects_skipped: u64,
    /// The skipped objects counted by reason.
    #[serde(default)]
    pub skipped_reasons: BTreeMap<SkipReason, u64>,
    /// Objects that failed.
    pub objects_failed: u64,
    /// Unix seconds.
    pub time_accepted: u64,
    /// Unix seconds.
    pub time_started: Option<u64>,
    /// Unix seconds.
    pub time_finished: Option<u64>,
    /// Objects created at or after this (Unix ns) are out of scope.
    pub scope_created_before_ns: u64,
    /// A cancel was asked for.
    pub cancel_requested: bool,
    /// Per-object errors (at most [`MAX_ERRORS`]).
    pub errors: Vec<ObjectError>,
    /// A rekey: how long it waits for objects open in the mount to close (seconds). Absent
    /// in re-encrypts and in rekeys accepted before it existed, which wait
    /// [`DEFAULT_OPEN_WAIT_SECONDS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_wait_seconds: Option<u64>,
    /// While IN_PROGRESS: the last object (hex of its name's bytes, in the backend's listing
    /// order) that the counts of this record include; every header they count was durable
    /// before the record was saved. A resumed run keeps the counts and goes on after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_after: Option<String>,
    /// While IN_PROGRESS: objects a rekey found open in the mount and retries at its end
    /// (hex names), not yet counted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_retry: Vec<String>,
}

/// How long a bucket rekey waits for open objects to close, unless told otherwise.
pub const DEFAULT_OPEN_WAIT_SECONDS: u64 = 60;
/// The longest wait for open objects a request may ask for (a day).
pub const MAX_OPEN_WAIT_SECONDS: u64 = 86_400;
/// How often a rekey retries the objects it found open.
const OPEN_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

fn validate_id(id: &str) -> Result<()> {
    let ok = id.strip_prefix("wr-").and_then(unhex::<16>).is_some();
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{id:?} is not a work request id (wr-<32 hex digits>)"
        )))
    }
}

/// How a work request record is saved. Every save flushes the record's content before the
/// rename that makes it visible, so no crash leaves an empty or torn record (on ext4 without
/// a journal, or with `noauto_da_alloc`, an unflushed rename can come back as an empty file,
/// and an unreadable record is a job that never resumes).
#[derive(Clone, Copy)]
enum Save {
    /// Content and name durable: the record must be there after a crash (ACCEPTED, a pause,
    /// a terminal state).
    Durable,
    /// Content flushed, the rename not waited for: after a crash the record is this one or
    /// the one before, and both resume the same way (IN_PROGRESS, progress counts).
    Progress,
    /// The final record, made durable by the job's own syncfs (one flush for the headers and
    /// the record), then the rename and the directory fsync: never visible before the headers
    /// it reports are durable.
    AfterSync,
}

/// Saves a work request atomically.
fn save(store: &Store, wr: &WorkRequest, how: Save) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(wr)
        .map_err(|e| Error::InvalidArgument(format!("work request does not serialize: {e}")))?;
    let barrier = || store.sync_all();
    let save = match how {
        Save::Durable => seam::Save::Durable,
        Save::Progress => seam::Save::ContentOnly,
        Save::AfterSync => seam::Save::DurableAfter(&barrier),
    };
    store
        .backend()
        .write_record(Record::WorkRequest(&wr.id), &bytes, save)
}

/// Loads a work request by id.
pub fn load(store: &Store, id: &str) -> Result<WorkRequest> {
    validate_id(id)?;
    match store.backend().read_record(Record::WorkRequest(id))? {
        Some(bytes) => parse(&bytes, id),
        None => Err(Error::NotFound(format!("no work request {id}"))),
    }
}

fn parse(bytes: &[u8], id: &str) -> Result<WorkRequest> {
    serde_json::from_slice(bytes).map_err(|e| {
        // Well-formed JSON that does not fit the record: most likely a field, operation type
        // or skip reason of a newer version (refused, as unknown fields are: DECISIONS.md).
        let hint = if e.is_data() {
            " (a field or value this version does not know: written by a newer envelopefs?)"
        } else {
            ""
        };
        Error::Corrupt(format!("work request {id} does not parse: {e}{hint}"))
    })
}

/// All work requests, oldest first, optionally of one bucket.
pub fn list(store: &Store, bucket: Option<&str>) -> Result<Vec<WorkRequest>> {
    let mut out = Vec::new();
    for id in store.backend().work_request_ids()? {
        let loaded = store
            .backend()
            .read_record(Record::WorkRequest(&id))
            .and_then(|b| match b {
                Some(bytes) => parse(&bytes, &id).map(Some),
                // Removed since it was listed.
                None => Ok(None),
            });
        match loaded {
            Ok(Some(wr)) if bucket.is_none_or(|b| b == wr.bucket_name) => out.push(wr),
            Ok(_) => {}
            Err(err) => tracing::warn!("skipping work request {id}: {err}"),
        }
    }
    // Acceptance order to the nanosecond (time_accepted is whole seconds: requests accepted
    // in the same second must still list in the order they were made).
    out.sort_by(|a, b| (a.scope_created_before_ns, &a.id).cmp(&(b.scope_created_before_ns, &b.id)));
    Ok(out)
}

/// Unfinished work requests (to resume).
pub fn unfinished(store: &Store) -> Result<Vec<WorkRequest>> {
    Ok(list(store, None)?
        .into_iter()
        .filter(|w| !w.status.is_terminal())
        .collect())
}

/// Accepts a bucket re-encrypt. `key`: `None`/`latest` for the bucket's assigned key, or a
/// key reference, which is first assigned to the bucket.
pub fn accept(store: &Store, bucket_name: &str, key: Option<&str>) -> Result<WorkRequest> {
    accept_op(store, bucket_name, key, Job::Reencrypt)
}

/// What a bucket job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Rewrap every data key (`REENCRYPT_BUCKET`).
    Reencrypt,
    /// Give every object a new data key (`REKEY_BUCKET`), waiting up to `open_wait_seconds`
    /// (at most [`MAX_OPEN_WAIT_SECONDS`]) for objects open in the mount to close.
    Rekey {
        /// Seconds.
        open_wait_seconds: u64,
    },
}

/// Accepts a bucket job: a re-encrypt, or a rekey (new data keys, wrapped under the same
/// target as a re-encrypt's).
pub fn accept_op(
    store: &Store,
    bucket_name: &str,
    key: Option<&str>,
    job: Job,
) -> Result<WorkRequest> {
    let (rekey, open_wait_seconds) = match job {
        Job::Reencrypt => (false, None),
        Job::Rekey { open_wait_seconds } if open_wait_seconds > MAX_OPEN_WAIT_SECONDS => {
            return Err(Error::InvalidArgument(format!(
                "a rekey waits at most {MAX_OPEN_WAIT_SECONDS} s for open objects, not \
                 {open_wait_seconds}"
            )))
        }
        Job::Rekey { open_wait_seconds } => (true, Some(open_wait_seconds)),
    };
    let bucket = store.bucket(bucket_name)?;
    // Every check comes before the bucket is changed, so a refused request changes nothing.
    let requested = key
        .filter(|k| *k != "latest")
        .map(|k| store.resolve_key(k))
        .transpose()?;
    let key_id = requested.or(bucket.kms_key_id).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "bucket {bucket_name:?} has no assigned key: assign one first (bucket update --name {bucket_name} --kms-key-id KEY)"
        ))
    })?;
    if let Some(w) = unfinished(store)?
        .into_iter()
        .find(|w| w.bucket_id == hex(&bucket.bucket_id))
    {
        return Err(Error::Busy(format!(
            "work request {} is still {:?} for bucket {bucket_name:?}",
            w.id, w.status
        )));
    }
    let (version, _) = {
        let ks = store.keys();
        ks.check_allowed(&key_id, crate::keys::keystore::ops::REENCRYPT_TO)?;
        if rekey {
            ks.check_allowed(&key_id, crate::keys::keystore::ops::ENCRYPT)?;
        }
        ks.current(&key_id)?
    };
    if bucket.kms_key_id != Some(key_id) {
        store.update_bucket(bucket_name, Some(&key_id_text(&key_id)))?;
    }
    let wr = WorkRequest {
        id: format!("wr-{}", hex(&crate::keys::crypto::random_array::<16>()?)),
        operation_type: if rekey {
            Operation::RekeyBucket
        } else {
            Operation::ReencryptBucket
        },
        status: State::Accepted,
        bucket_name: bucket_name.into(),
        bucket_id: hex(&bucket.bucket_id),
        target_key_id: key_id_text(&key_id),
        target_key_version: version,
        percent_complete: 0.0,
        objects_total: 0,
        objects_rewrapped: 0,
        objects_rekeyed: 0,
        objects_skipped: 0,
        skipped_reasons: BTreeMap::new(),
        objects_failed: 0,
        time_accepted: now_s(),
        time_started: None,
        time_finished: None,
        scope_created_before_ns: now_ns(),
        cancel_requested: false,
        errors: Vec::new(),
        open_wait_seconds,
        resume_after: None,
        open_retry: Vec::new(),
    };
    save(store, &wr, Save::Durable)?;
    Ok(wr)
}

/// Asks a work request to stop. Terminal requests are left as they are.
pub fn request_cancel(store: &Store, id: &str) -> Result<WorkRequest> {
    let mut wr = load(store, id)?;
    if wr.status.is_terminal() {
        return Ok(wr);
    }
    wr.cancel_requested = true;
    if wr.status == State::Accepted {
        wr.status = State::Canceled;
        wr.time_finished = Some(now_s());
    } else {
        wr.status = State::Canceling;
    }
    save(store, &wr, Save::Durable)?;
    Ok(wr)
}

/// Objects per batch of a bucket job (stop requests are honoured between batches).
const JOB_BATCH: usize = 256;
/// Threads that rewrap the objects of a batch.
const JOB_THREADS: usize = 8;
/// Objects per batch of a rekey job (each object's data is rewritten).
const REKEY_BATCH: usize = 32;
/// Threads that rekey the objects of a batch.
const REKEY_THREADS: usize = 2;
/// Object names a bucket job lists at a time (its memory is bounded by this, docs/SCALING.md).
const JOB_PAGE: usize = seam::LIST_PAGE;
/// How often a running job saves its progress locally (each save after a syncfs).
const SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How often a running job saves its progress in an object store (each save is a PUT).
const OBJECT_STORE_SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Applies `f` to every item on up to `threads` scoped threads; results in item order.
fn run_parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: &(dyn Fn(&T) -> R + Sync),
) -> Vec<R> {
    let threads = threads.min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let parts: Vec<Vec<(usize, R)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        mine.push((i, f(item)));
                    }
                    mine
                })
            })
            .collect();
        join_all(handles)
    });
    in_item_order(parts)
}

/// The results of scoped worker threads (a worker's panic goes on in the caller).
fn join_all<T>(handles: Vec<std::thread::ScopedJoinHandle<'_, T>>) -> Vec<T> {
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        .collect()
}

/// The workers' `(item index, result)` lists merged into item order.
fn in_item_order<R>(parts: Vec<Vec<(usize, R)>>) -> Vec<R> {
    let mut all: Vec<(usize, R)> = parts.into_iter().flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

/// [`run_parallel`] in two stages: `threads` threads run `first` on the items in order and
/// hand each result to `threads` other threads, which run `then` on it; results in item
/// order. An object store's rewrap reads each object's header (a HEAD) in the first stage
/// and copies it in the second, so the HEADs' latency is not added to the copies' (at most
/// `threads` copies and `threads` HEADs in flight).
fn run_staged<T: Sync, M: Send, R: Send>(
    items: &[T],
    threads: usize,
    first: &(dyn Fn(&T) -> M + Sync),
    then: &(dyn Fn(&T, M) -> R + Sync),
) -> Vec<R> {
    let threads = threads.min(items.len());
    if threads <= 1 {
        return items.iter().map(|t| then(t, first(t))).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, M)>(threads);
    // Held by the second stage only: should its threads all end early, the first stage's
    // sends fail and it stops too.
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let parts: Vec<Vec<(usize, R)>> = std::thread::scope(|s| {
        for _ in 0..threads {
            let tx = tx.clone();
            let next = &next;
            s.spawn(move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                // A failed send: the second stage has ended (its threads are gone).
                if tx.send((i, first(item))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let rx = rx.clone();
                s.spawn(move || {
                    let mut mine = Vec::new();
                    loop {
                        let got = rx.lock_unpoisoned().recv();
                        let Ok((i, m)) = got else { break };
                        mine.push((i, then(&items[i], m)));
                    }
                    mine
                })
            })
            .collect();
        drop(rx);
        join_all(handles)
    });
    in_item_order(parts)
}

/// What a running work request should do next (polled between objects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Go on.
    Continue,
    /// A cancel was asked for: end CANCELED.
    Cancel,
    /// The mount is going away: save progress and leave it to resume (stays IN_PROGRESS).
    Pause,
}

/// Never stop.
pub fn never_stop() -> Stop {
    Stop::Continue
}

/// Runs (or resumes) a work request to a terminal state, or until `stop` says to pause.
/// `progress` is called after every object. Customer-keyed objects are skipped, so no
/// customer keys are needed.
pub fn run(
    store: &Store,
    wr: &mut WorkRequest,
    stop: &dyn Fn() -> Stop,
    progress: &mut dyn FnMut(&WorkRequest),
) -> Result<()> {
    run_live(store, wr, stop, progress, &crate::store::object::Offline)
}

/// [`run`] inside a mount: a rekey skips objects the mount has open.
pub fn run_live(
    store: &Store,
    wr: &mut WorkRequest,
    stop: &dyn Fn() -> Stop,
    progress: &mut dyn FnMut(&WorkRequest),
    live: &dyn crate::store::object::Live,
) -> Result<()> {
    if wr.status.is_terminal() {
        return Ok(());
    }
    if wr.cancel_requested {
        return finish_cancel(store, wr);
    }
    let bucket = match find_bucket(store, wr) {
        Ok(b) => b,
        Err(e) => {
            wr.errors.push(ObjectError {
                object: String::new(),
                message: e.to_string(),
            });
            return finish(store, wr, State::Failed, Save::Durable);
        }
    };
    let key_id = parse_key_id(&wr.target_key_id)
        .ok_or_else(|| Error::Corrupt(format!("work request {}: bad target key id", wr.id)))?;
    let target = Target::MasterVersion(key_id, wr.target_key_version);
    let is_rekey = wr.operation_type == Operation::RekeyBucket;
    let page_size = crate::fault::number("job-page-").map_or(JOB_PAGE, |n| n.max(1) as usize);
    // A run that saved a resume point goes on after it with its counts; any other run
    // starts over, counting the objects first (a listing pass: memory stays bounded by a
    // page, docs/SCALING.md). The counting pass keeps its first page for the job, and only
    // a bucket of more than one page is listed again, after that page.
    let resume = match wr.resume_after.as_deref() {
        Some(h) if wr.status == State::InProgress => Some(cursor_name(h, &wr.id)?),
        _ => None,
    };
    let (mut ahead, walk_after) = if resume.is_some() {
        (None, Some(resume))
    } else {
        let mut counting = store.backend().object_pages(&wr.bucket_name, None)?;
        let first = counting.next_page(page_size)?;
        let mut total = first.len() as u64;
        let mut more = false;
        loop {
            let page = counting.next_page(seam::LIST_PAGE)?;
            if page.is_empty() {
                break;
            }
            more = true;
            total += page.len() as u64;
        }
        wr.objects_total = total;
        wr.objects_rewrapped = 0;
        wr.objects_rekeyed = 0;
        wr.objects_skipped = 0;
        wr.skipped_reasons.clear();
        wr.objects_failed = 0;
        wr.errors.clear();
        wr.percent_complete = 0.0;
        wr.open_retry.clear();
        let after = more.then(|| first.last().cloned());
        (Some(first), after)
    };
    wr.status = State::InProgress;
    wr.time_started.get_or_insert_with(now_s);
    save(store, wr, Save::Progress)?;
    let mut last_save = Instant::now();
    // Objects are rewrapped in batches by a few threads: with a cold cache each object costs
    // disk reads (inode, header xattr block), and several in flight keep the disk busy. Stop
    // requests are honoured between batches. The slow-work-requests fault keeps one object per
    // batch so that tests can stop a job in its middle.
    let slower = crate::fault::enabled("slower-work-requests");
    let slow = slower || crate::fault::enabled("slow-work-requests");
    let pause = std::time::Duration::from_millis(if slower { 50 } else { 2 });
    let (batch, threads) = if slow {
        (1, 1)
    } else if is_rekey {
        (REKEY_BATCH, REKEY_THREADS)
    } else {
        (JOB_BATCH, JOB_THREADS)
    };
    let scope = wr.scope_created_before_ns;
    let bucket_name = wr.bucket_name.clone();
    let one = |name: &PathBuf| -> Result<Outcome> {
        if slow {
            std::thread::sleep(pause);
        }
        let what = format!("{}/{}", bucket_name, name.display());
        if is_rekey {
            let opts = rekey::Options {
                target: &target,
                customer: &NoCustomerKeys,
                live,
                created_ns: scope,
                job_scope: Some(scope),
                durable: false,
            };
            return rekey::rekey_in(store, &bucket_name, &bucket, name, &what, &opts).map(
                |r| match r {
                    rekey::Rekeyed::Done { from, to, .. } => Outcome::Rewrapped { from, to },
                    rekey::Rekeyed::Skipped(why) => Outcome::Skipped(why),
                },
            );
        }
        let f = store.open_object(&bucket_name, name, &what)?;
        rewrap::rewrap(
            store,
            &rewrap::Request::job(&*f, &what, &bucket, &target, scope),
        )
    };
    // In an object store, opening an object is a HEAD (its header and ETag) and the rewrap a
    // copy: the two run as stages of a pipeline (docs/DECISIONS.md, "Bucket re-encrypt in an
    // object store: the HEADs ahead of the copies").
    let in_object_store = store.backend().kind() == BackendKind::ObjectStore;
    let staged = !is_rekey && !slow && in_object_store;
    // Progress is saved between batches, while no object is being worked on, with the last
    // object counted as the resume point: so each save is a durability barrier first (locally
    // a syncfs; in an object store every change is durable when acknowledged and the save is
    // a PUT, tens of ms, so there it is saved less often). Under the slow faults (test
    // builds) it is saved every second as locally: the fault tests watch the record to kill
    // a job in its middle.
    let save_every = if in_object_store && !slow {
        OBJECT_STORE_SAVE_EVERY
    } else {
        SAVE_EVERY
    };
    let open_blob = |name: &PathBuf| -> Result<Box<dyn Blob>> {
        let what = format!("{}/{}", bucket_name, name.display());
        store.open_object(&bucket_name, name, &what)
    };
    let rewrap_opened = |name: &PathBuf, f: Result<Box<dyn Blob>>| -> Result<Outcome> {
        let what = format!("{}/{}", bucket_name, name.display());
        rewrap::rewrap(
            store,
            &rewrap::Request::job(&*f?, &what, &bucket, &target, scope),
        )
    };
    let mut walk = match &walk_after {
        Some(after) => Some(
            store
                .backend()
                .object_pages(&wr.bucket_name, after.as_deref())?,
        ),
        None => None,
    };
    loop {
        let page = match (ahead.take(), walk.as_mut()) {
            (Some(page), _) => page,
            (None, Some(w)) => w.next_page(page_size)?,
            (None, None) => break,
        };
        if page.is_empty() {
            break;
        }
        for chunk in page.chunks(batch) {
            match stop() {
                Stop::Continue => {}
                Stop::Cancel => return finish_cancel(store, wr),
                Stop::Pause => return save(store, wr, Save::AfterSync),
            }
            let results = if staged {
                run_staged(chunk, threads, &open_blob, &rewrap_opened)
            } else {
                run_parallel(chunk, threads, &one)
            };
            if let Some(e) = unreachable_store(store, &results) {
                // Not the objects' fault: the job stops IN_PROGRESS (this batch is redone,
                // idempotently, after the resume point when it resumes) instead of failing
                // every object.
                let _ = save(store, wr, Save::AfterSync);
                return Err(Error::io(
                    format!(
                        "work request {} stopped IN_PROGRESS: {} did not answer (it resumes \
                         with `work-request wait {}` or the next `bucket reencrypt` of the \
                         bucket)",
                        wr.id,
                        store.backend().location(),
                        wr.id
                    ),
                    std::io::Error::other(e),
                ));
            }
            for (name, res) in chunk.iter().zip(results) {
                match res {
                    Ok(Outcome::Skipped(SkipReason::OpenInMount)) => {
                        wr.open_retry.push(cursor_hex(name));
                    }
                    res => wr.count(name, res, is_rekey),
                }
                progress(wr);
            }
            if let Some(last) = chunk.last() {
                wr.resume_after = Some(cursor_hex(last));
            }
            if last_save.elapsed() >= save_every {
                save(store, wr, Save::AfterSync)?;
                last_save = Instant::now();
            }
        }
        if crate::fault::enabled("die-after-job-page") {
            // Saved first, so a test knows where the resume point is when the process dies.
            save(store, wr, Save::AfterSync)?;
            crate::fault::die_now();
        }
    }
    drop(walk);
    // The objects a rekey found open, this run's and those a resumed run was left with: the
    // record keeps them (`open_retry`) until they are counted.
    let mut open = wr
        .open_retry
        .iter()
        .map(|h| cursor_name(h, &wr.id))
        .collect::<Result<Vec<PathBuf>>>()?;
    if !open.is_empty() {
        // Wait (bounded) for them to be closed, retrying every OPEN_RETRY_INTERVAL; a reader
        // of the record meanwhile sees IN_PROGRESS with these objects not yet counted.
        save(store, wr, Save::AfterSync)?;
        last_save = Instant::now();
        let secs = wr
            .open_wait_seconds
            .unwrap_or(DEFAULT_OPEN_WAIT_SECONDS)
            .min(MAX_OPEN_WAIT_SECONDS);
        let deadline = Instant::now() + std::time::Duration::from_secs(secs);
        while !open.is_empty() && Instant::now() < deadline {
            match stop() {
                Stop::Continue => {}
                Stop::Cancel => return finish_cancel(store, wr),
                Stop::Pause => return save(store, wr, Save::AfterSync),
            }
            std::thread::sleep(
                OPEN_RETRY_INTERVAL.min(deadline.saturating_duration_since(Instant::now())),
            );
            let results = run_parallel(&open, threads, &one);
            let mut still = Vec::new();
            for (name, res) in open.into_iter().zip(results) {
                match res {
                    Ok(Outcome::Skipped(SkipReason::OpenInMount)) => still.push(name),
                    res => wr.count(&name, res, is_rekey),
                }
                progress(wr);
            }
            open = still;
            wr.open_retry = open.iter().map(|n| cursor_hex(n)).collect();
            if last_save.elapsed() >= save_every {
                save(store, wr, Save::AfterSync)?;
                last_save = Instant::now();
            }
        }
        // Still open: not rekeyed, so the request cannot succeed; they are named in errors.
        for name in open {
            let msg = format!(
                "{}/{} was open in the mount for all of the {secs} s the rekey waited for it: \
                 it still has its old data key (close it and rekey again)",
                wr.bucket_name,
                name.display()
            );
            wr.count(&name, Err(Error::Busy(msg)), is_rekey);
            progress(wr);
        }
    }
    let state = if wr.objects_failed == 0 {
        State::Succeeded
    } else {
        State::Failed
    };
    wr.percent_complete = 100.0;
    // One syncfs makes the rewrapped headers and the final record durable together.
    finish(store, wr, state, Save::AfterSync)
}

/// A name as a work request saves it: hex of its bytes (a local name need not be UTF-8).
fn cursor_hex(name: &Path) -> String {
    hex(name.as_os_str().as_bytes())
}

/// A name saved in a work request by [`cursor_hex`].
fn cursor_name(h: &str, id: &str) -> Result<PathBuf> {
    crate::format::unhex_vec(h)
        .filter(|b| !b.is_empty())
        .map(|b| PathBuf::from(std::ffi::OsString::from_vec(b)))
        .ok_or_else(|| Error::Corrupt(format!("work request {id}: bad object name {h:?}")))
}

/// In an object store, the first error of a batch that says the store itself did not answer
/// (a connection refused or cut, a timeout, a server error such as Garage's 503 when too
/// few of its nodes are up), as text. None locally, where such errors are the object's.
fn unreachable_store(store: &Store, results: &[Result<Outcome>]) -> Option<String> {
    if store.backend().kind() != seam::BackendKind::ObjectStore {
        return None;
    }
    // The S3 client's errors name the endpoint first (`s3 ENDPOINT BUCKET/KEY: ...`); a
    // local one (a full staging directory) is the object's.
    results.iter().find_map(|r| match r {
        Err(e @ (Error::Io { .. } | Error::TimedOut(_))) => {
            Some(e.to_string()).filter(|m| m.starts_with("s3 "))
        }
        _ => None,
    })
}

impl WorkRequest {
    fn skip(&mut self, why: SkipReason) {
        self.objects_skipped += 1;
        *self.skipped_reasons.entry(why).or_insert(0) += 1;
    }

    /// Counts the outcome for the object `name`, and the percentage done.
    fn count(&mut self, name: &Path, res: Result<Outcome>, is_rekey: bool) {
        match res {
            Ok(Outcome::Rewrapped { .. }) if is_rekey => self.objects_rekeyed += 1,
            Ok(Outcome::Rewrapped { .. }) => self.objects_rewrapped += 1,
            Ok(Outcome::Skipped(why)) => self.skip(why),
            Err(Error::NotFound(_)) => self.skip(SkipReason::RemovedMeanwhile),
            Err(e) => {
                self.objects_failed += 1;
                if self.errors.len() < MAX_ERRORS {
                    self.errors.push(ObjectError {
                        object: name.to_string_lossy().into_owned(),
                        message: e.to_string(),
                    });
                }
            }
        }
        if self.objects_total > 0 {
            // Objects created after the counting pass may be walked too (and skipped as
            // created after the request): never more than 100 %.
            let done = self.objects_done().min(self.objects_total) as f64 * 100.0
                / self.objects_total as f64;
            self.percent_complete = (done * 10.0).floor() / 10.0;
        }
    }

    /// Objects handled so far (for progress displays).
    pub fn objects_done(&self) -> u64 {
        self.objects_rewrapped + self.objects_rekeyed + self.objects_skipped + self.objects_failed
    }
}

fn find_bucket(store: &Store, wr: &WorkRequest) -> Result<crate::format::records::BucketRecord> {
    let b = store.bucket(&wr.bucket_name)?;
    if hex(&b.bucket_id) != wr.bucket_id {
        return Err(Error::NotFound(format!(
            "bucket {:?} was removed or replaced after the request was accepted",
            wr.bucket_name
        )));
    }
    Ok(b)
}

fn finish_cancel(store: &Store, wr: &mut WorkRequest) -> Result<()> {
    wr.cancel_requested = true;
    finish(store, wr, State::Canceled, Save::AfterSync)
}

fn finish(store: &Store, wr: &mut WorkRequest, state: State, how: Save) -> Result<()> {
    wr.status = state;
    wr.resume_after = None;
    wr.open_retry.clear();
    wr.time_finished = Some(now_s());
    save(store, wr, how)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_runs_give_every_item_both_stages_in_item_order_and_overlap_the_stages() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::{Duration, Instant};
        let items: Vec<usize> = (0..100).collect();
        let firsts = AtomicUsize::new(0);
        let first = |i: &usize| {
            firsts.fetch_add(1, Ordering::SeqCst);
            if *i == 7 {
                Err(Error::NotFound(format!("no {i}")))
            } else {
                Ok(*i * 10)
            }
        };
        // Every second stage waits until more items have been through the first stage than
        // there are threads: a run that took each item through both stages on one thread
        // (at most `threads` items in flight) would wait here in vain and fail.
        let then = |i: &usize, m: Result<usize>| -> Result<(usize, usize)> {
            let deadline = Instant::now() + Duration::from_secs(20);
            while firsts.load(Ordering::SeqCst) < 6 {
                assert!(Instant::now() < deadline, "the stages did not overlap");
                std::thread::sleep(Duration::from_millis(1));
            }
            m.map(|m| (*i, m))
        };
        for threads in [4, 200] {
            firsts.store(0, Ordering::SeqCst);
            let r = run_staged(&items, threads, &first, &then);
            assert_eq!(r.len(), items.len());
            for (i, got) in r.into_iter().enumerate() {
                match got {
                    Ok(v) => assert_eq!(v, (i, i * 10)),
                    Err(e) => assert!(i == 7 && matches!(e, Error::NotFound(_)), "{i}: {e}"),
                }
            }
            assert_eq!(firsts.load(Ordering::SeqCst), 100, "each item opened once");
        }
        // One thread, or one item: both stages in turn.
        let plain = |i: &usize, m: Result<usize>| m.map(|m| (*i, m));
        assert_eq!(run_staged(&items, 1, &first, &plain).len(), 100);
        assert_eq!(
            run_staged(&items[..1], 8, &first, &plain)[0].as_ref().ok(),
            Some(&(0, 0))
        );
        assert!(run_staged(&[] as &[usize], 8, &first, &plain).is_empty());
    }

    #[test]
    fn list_orders_requests_accepted_in_one_second_by_acceptance() {
        let (_dir, _root, store) = crate::ops::test_support::temp_store(3);
        store.create_bucket("b", Some("default"), 0o755).unwrap();
        let mut ids = Vec::new();
        for _ in 0..20 {
            let mut wr = accept(&store, "b", None).unwrap();
            run(&store, &mut wr, &never_stop, &mut |_| {}).unwrap();
            ids.push(wr.id);
        }
        let listed: Vec<String> = list(&store, Some("b"))
            .unwrap()
            .into_iter()
            .map(|w| w.id)
            .collect();
        assert_eq!(listed, ids, "latest last, whatever the random ids");
    }

    #[test]
    fn a_rekey_asking_for_a_longer_wait_than_allowed_is_refused_and_changes_nothing() {
        let (_dir, _root, store) = crate::ops::test_support::temp_store(4);
        store.create_bucket("b", None, 0o755).unwrap();
        let too_long = Job::Rekey {
            open_wait_seconds: MAX_OPEN_WAIT_SECONDS + 1,
        };
        let e = accept_op(&store, "b", Some("default"), too_long).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        assert!(list(&store, None).unwrap().is_empty());
        assert_eq!(
            store.bucket("b").unwrap().kms_key_id,
            None,
            "no key assigned"
        );
        let wr = accept_op(
            &store,
            "b",
            Some("default"),
            Job::Rekey {
                open_wait_seconds: MAX_OPEN_WAIT_SECONDS,
            },
        )
        .unwrap();
        assert_eq!(wr.open_wait_seconds, Some(MAX_OPEN_WAIT_SECONDS));
        assert_eq!(load(&store, &wr.id).unwrap(), wr, "persisted with its wait");
    }

    #[test]
    fn operation_types_serialize_as_they_always_have() {
        let today = [
            (Operation::ReencryptBucket, "REENCRYPT_BUCKET"),
            (Operation::RekeyBucket, "REKEY_BUCKET"),
        ];
        crate::ops::test_support::assert_strings_as_today(&today, Operation::ALL);
    }

    #[test]
    fn skip_reasons_serialize_as_they_always_have_also_as_map_keys() {
        let today = [
            (
                SkipReason::AlreadyCurrent,
                "already under the target key version",
            ),
            (SkipReason::CreatedAfter, "created after the request"),
            (
                SkipReason::CustomerKey,
                "wrapped under a customer-provided key",
            ),
            (SkipReason::RekeyedByThisRequest, "rekeyed by this request"),
            (SkipReason::OpenInMount, "open in the mount"),
            (SkipReason::RemovedMeanwhile, "removed meanwhile"),
        ];
        // Also as `object reencrypt` prints it (Display).
        crate::ops::test_support::assert_strings_as_today(&today, SkipReason::ALL);
        // As map keys: the same text, in the same (string) order as the string keys had.
        let typed: BTreeMap<SkipReason, u64> = today.iter().map(|(r, _)| (*r, 1)).collect();
        let strings: BTreeMap<String, u64> =
            today.iter().map(|(_, t)| (t.to_string(), 1)).collect();
        let text = serde_json::to_string(&typed).unwrap();
        assert_eq!(text, serde_json::to_string(&strings).unwrap());
        assert_eq!(
            serde_json::from_str::<BTreeMap<SkipReason, u64>>(&text).unwrap(),
            typed
        );
    }

    /// A record as this version has always written it (pretty JSON, every field).
    const RECORD: &str = r#"{
  "id": "wr-0123456789abcdef0123456789abcdef",
  "operation_type": "REKEY_BUCKET",
  "status": "FAILED",
  "bucket_name": "b",
  "bucket_id": "000102030405060708090a0b0c0d0e0f",
  "target_key_id": "key-000102030405060708090a0b0c0d0e0f",
  "target_key_version": 2,
  "percent_complete": 100.0,
  "objects_total": 9,
  "objects_rewrapped": 0,
  "objects_rekeyed": 3,
  "objects_skipped": 5,
  "skipped_reasons": {
    "created after the request": 1,
    "rekeyed by this request": 2,
    "removed meanwhile": 2
  },
  "objects_failed": 1,
  "time_accepted": 1700000000,
  "time_started": 1700000001,
  "time_finished": 1700000002,
  "scope_created_before_ns": 1700000000000000000,
  "cancel_requested": false,
  "errors": [
    {
      "object": "o",
      "message": "busy"
    }
  ],
  "open_wait_seconds": 60
}"#;

    #[test]
    fn a_record_loads_and_saves_to_the_same_bytes() {
        let wr = parse(RECORD.as_bytes(), "wr").unwrap();
        assert_eq!(wr.operation_type, Operation::RekeyBucket);
        assert_eq!(wr.skipped_reasons[&SkipReason::RemovedMeanwhile], 2);
        assert_eq!(serde_json::to_string_pretty(&wr).unwrap(), RECORD);
    }

    /// A newer version's operation type or skip reason is refused as its unknown fields are,
    /// with an error that names the value and says where it may come from.
    #[test]
    fn a_record_with_an_operation_or_skip_reason_this_version_does_not_know_is_refused() {
        for (from, to) in [
            ("\"REKEY_BUCKET\"", "\"SHRED_BUCKET\""),
            ("\"removed meanwhile\"", "\"moved to the moon\""),
            ("\"open_wait_seconds\"", "\"new_field\""),
        ] {
            let e = parse(RECORD.replace(from, to).as_bytes(), "wr").unwrap_err();
            assert!(matches!(e, Error::Corrupt(_)), "{e}");
            let msg = e.to_string();
            let named = to.trim_matches('"');
            assert!(msg.contains(named), "{msg}");
            assert!(msg.contains("written by a newer envelopefs?"), "{msg}");
        }
        let msg = parse(&RECORD.as_bytes()[..RECORD.len() - 2], "wr")
            .unwrap_err()
            .to_string();
        assert!(
            !msg.contains("newer"),
            "a torn record is not blamed on a version: {msg}"
        );
    }

    #[test]
    fn state_names_parse() {
        assert_eq!(State::parse("succeeded").unwrap(), State::Succeeded);
        assert_eq!(State::parse("in-progress").unwrap(), State::InProgress);
        assert!(State::parse("done").is_err());
    }
}
