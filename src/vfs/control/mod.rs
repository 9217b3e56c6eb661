//! The control tree `.envelopefs/` of a mount: ctl (a transaction file speaking the CLI's
//! command language), per-bucket `kms-key-id` and `reencrypt`, `work-requests/ID` and
//! `keys/KEY`. Contents are produced at open (reads see a snapshot) and use direct I/O, so
//! `cat` shows the whole content although `stat` says 0 bytes.
//!
//! The tree is this module; the SSE-C key ring ([`ring`]) and the work-request pool
//! ([`work`], whose workers run requests while the filesystem keeps serving) are its own.
//! It talks to the filesystem it belongs to through [`Filesystem`], given at construction.

mod ring;
mod work;

use super::{Attr, Kind};
use crate::command::WorkRequestCmd;
use crate::command::{
    self, BucketCmd, DataStreams, Env, ErrorReply, NoStreams, OkReply, Output, StoreCommand,
};
use crate::error::{Error, Result};
use crate::hygiene::WipingBuf;
use crate::keys::crypto::Key32;
use crate::keys::keystore::key_id_text;
use crate::ops::workreq::{self, WorkRequest};
use crate::store::object::CustomerKeys;
use crate::store::Store;
use crate::sync::{LockUnpoisoned, RwLockUnpoisoned};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::SystemTime;
use zeroize::Zeroizing;

/// `.envelopefs/`
pub const CTL_DIR_INO: u64 = 2;
const CTL_FILE_INO: u64 = 3;
const BUCKETS_INO: u64 = 4;
const WRS_INO: u64 = 5;
const KEYS_INO: u64 = 6;
const FIRST_DYNAMIC: u64 = 16;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Node {
    BucketDir(String),
    BucketKey(String),
    BucketReencrypt(String),
    WorkRequest(String),
    Key(String),
}

struct Open {
    content: Vec<u8>,
    /// The reply of the last command written. It is read as a stream: a read at offset 0
    /// starts it over, any other read continues where the last one ended. That serves both
    /// a shell (write, then read at the fd's offset) and pread from 0. Zeroized when
    /// replaced or closed (it may carry a plaintext: `kms decrypt`).
    result: Option<Zeroizing<Vec<u8>>>,
    cursor: usize,
}

/// What the control tree needs of the filesystem it belongs to.
pub trait Filesystem: Send + Sync {
    /// A command created or replaced the name `path` (relative to the store; the mount drops the
    /// kernel's cached entry, so the change shows at once).
    fn path_changed(&self, path: &Path);
    /// A command changed buckets (the filesystem drops its cached bucket records).
    fn buckets_changed(&self);
    /// Runs `f` while the filesystem cannot open the object with backing inode number
    /// `backing_ino`, or fails with EBUSY if it is open (a rekey puts a rewritten object in
    /// place this way; see [`crate::store::object::Live::while_closed`]).
    fn while_closed(&self, backing_ino: u64, f: &mut dyn FnMut() -> Result<()>) -> Result<()>;
}

/// The control tree, with its key ring and work-request pool.
pub struct Control {
    store: Arc<Store>,
    nodes: RwLock<(HashMap<Node, u64>, HashMap<u64, Node>)>,
    next_ino: AtomicU64,
    open: Mutex<HashMap<u64, Open>>,
    next_fh: AtomicU64,
    owner: (u32, u32),
    started: SystemTime,
    ring: ring::KeyRing,
    work: work::WorkPool,
    /// The filesystem this tree belongs to (weak: the filesystem owns the tree).
    fs: Weak<dyn Filesystem>,
}

impl CustomerKeys for Control {
    fn customer_key(&self, fingerprint: &[u8; 32]) -> Option<Key32> {
        self.ring.get(fingerprint)
    }

    fn live(&self) -> Option<&dyn crate::store::object::Live> {
        Some(self)
    }
}

impl crate::store::object::Live for Control {
    fn while_closed(&self, ino: u64, f: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        match self.fs.upgrade() {
            Some(fs) => fs.while_closed(ino, f),
            None => Err(Error::Busy("the mount is going away".into())),
        }
    }

    fn replaced(&self, path: &Path) {
        self.path_changed(path);
    }
}

fn eperm(m: &str) -> Error {
    Error::PermissionDenied(m.into())
}

impl Control {
    /// The control tree of filesystem `fs` over a store (no workers until
    /// [`Control::start_workers`]).
    pub fn new(store: Arc<Store>, fs: Weak<dyn Filesystem>) -> Self {
        // SAFETY: getuid/getgid have no preconditions.
        let owner = unsafe { (libc::getuid(), libc::getgid()) };
        Control {
            nodes: RwLock::new((HashMap::new(), HashMap::new())),
            next_ino: AtomicU64::new(FIRST_DYNAMIC),
            open: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1 << 62),
            owner,
            started: SystemTime::now(),
            ring: ring::KeyRing::default(),
            work: work::WorkPool::new(store.clone()),
            store,
            fs,
        }
    }

    /// Starts the worker pool and queues every unfinished work request (resume).
    pub fn start_workers(self: &Arc<Self>) -> Result<()> {
        let me = Arc::clone(self);
        self.work
            .start(Arc::new(move |id: &str| me.work.run(id, &*me)))
    }

    /// Stops taking work (at unmount); running requests stop at the next object and resume
    /// at the next mount.
    pub fn stop_workers(&self) {
        self.work.stop();
    }

    /// Executes one command line as the mount (the ctl file's engine).
    pub fn execute_line(&self, line: &str) -> Result<Output> {
        let cmd = command::parse_line(line)?;
        self.execute(&cmd)
    }

    /// Executes a parsed command as the mount.
    pub fn execute(&self, cmd: &StoreCommand) -> Result<Output> {
        if let StoreCommand::WorkRequest(WorkRequestCmd::Cancel { id }) = cmd {
            return self.work.cancel(id).and_then(|r| Output::of(&r));
        }
        if let StoreCommand::SseC(c) = cmd {
            return self.ring.execute(c).and_then(|r| Output::of(&r));
        }
        let mut streams = NoStreams;
        let spawn = |wr: &WorkRequest| self.work.queue(wr);
        let mut progress = |_: &WorkRequest| {};
        let mut env = Env {
            customer: self,
            streams: &mut streams as &mut dyn DataStreams,
            progress: &mut progress,
            spawn_work: Some(&spawn),
        };
        let out = command::execute(&self.store, cmd, &mut env);
        let changed = match cmd {
            StoreCommand::Object(command::ObjectCmd::Put {
                bucket_name, name, ..
            }) => Some(Path::new(bucket_name).join(name)),
            StoreCommand::Bucket(command::BucketCmd::Create { name, .. }) => {
                Some(PathBuf::from(name))
            }
            _ => None,
        };
        if let (Some(path), true) = (changed, out.is_ok()) {
            self.path_changed(&path);
        }
        if matches!(cmd, StoreCommand::Bucket(_)) {
            if let Some(fs) = self.fs.upgrade() {
                fs.buckets_changed();
            }
        }
        out
    }

    fn path_changed(&self, path: &Path) {
        if let Some(fs) = self.fs.upgrade() {
            fs.path_changed(path);
        }
    }

    /// Forgets every customer key (at unmount); each is zeroized as it is dropped.
    pub fn clear_ring(&self) {
        self.ring.clear();
    }

    // ----- inodes -----

    fn ino_of(&self, node: Node) -> u64 {
        {
            let t = self.nodes.read_unpoisoned();
            if let Some(i) = t.0.get(&node) {
                return *i;
            }
        }
        let mut t = self.nodes.write_unpoisoned();
        if let Some(i) = t.0.get(&node) {
            return *i;
        }
        let i = self.next_ino.fetch_add(1, Ordering::Relaxed);
        if super::NodeKind::of(i) != super::NodeKind::Control {
            tracing::warn!("control inode space exhausted");
        }
        t.0.insert(node.clone(), i);
        t.1.insert(i, node);
        i
    }

    fn node(&self, ino: u64) -> Option<Node> {
        self.nodes.read_unpoisoned().1.get(&ino).cloned()
    }

    fn attr(&self, ino: u64, kind: Kind) -> Attr {
        let perm = match kind {
            Kind::Dir => 0o755,
            _ => 0o644,
        };
        Attr {
            ino,
            size: 0,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            kind,
            perm,
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            uid: self.owner.0,
            gid: self.owner.1,
            rdev: 0,
            blksize: 4096,
        }
    }

    /// Attributes of `.envelopefs/`.
    pub fn root_attr(&self) -> Attr {
        self.attr(CTL_DIR_INO, Kind::Dir)
    }

    /// getattr of a control inode.
    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let kind = match ino {
            CTL_DIR_INO | BUCKETS_INO | WRS_INO | KEYS_INO => Kind::Dir,
            CTL_FILE_INO => Kind::File,
            _ => match self.node(ino) {
                Some(Node::BucketDir(_)) => Kind::Dir,
                Some(_) => Kind::File,
                None => return Err(Error::NotFound("stale control inode".into())),
            },
        };
        Ok(self.attr(ino, kind))
    }

    fn name_str(name: &OsStr) -> Result<&str> {
        name.to_str()
            .ok_or_else(|| Error::NotFound("no such control file".into()))
    }

    /// lookup in the control tree.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        let n = Self::name_str(name)?;
        let ino = match (parent, self.node(parent)) {
            (CTL_DIR_INO, _) => match n {
                "ctl" => CTL_FILE_INO,
                "buckets" => BUCKETS_INO,
                "work-requests" => WRS_INO,
                "keys" => KEYS_INO,
                _ => return Err(Error::NotFound(format!("no control file {n}"))),
            },
            (BUCKETS_INO, _) => {
                self.store.bucket(n)?;
                self.ino_of(Node::BucketDir(n.into()))
            }
            (WRS_INO, _) => {
                workreq::load(&self.store, n)?;
                self.ino_of(Node::WorkRequest(n.into()))
            }
            (KEYS_INO, _) => {
                self.store.keys().resolve(n)?;
                self.ino_of(Node::Key(n.into()))
            }
            (_, Some(Node::BucketDir(b))) => match n {
                "kms-key-id" => self.ino_of(Node::BucketKey(b)),
                "reencrypt" => self.ino_of(Node::BucketReencrypt(b)),
                _ => return Err(Error::NotFound(format!("no control file {n}"))),
            },
            _ => return Err(Error::NotFound(format!("no control file {n}"))),
        };
        self.getattr(ino)
    }

    /// Entries of a control directory.
    pub fn readdir(&self, ino: u64) -> Result<Vec<(u64, Kind, OsString)>> {
        let mut out = Vec::new();
        match (ino, self.node(ino)) {
            (CTL_DIR_INO, _) => {
                out.push((CTL_FILE_INO, Kind::File, "ctl".into()));
                out.push((BUCKETS_INO, Kind::Dir, "buckets".into()));
                out.push((WRS_INO, Kind::Dir, "work-requests".into()));
                out.push((KEYS_INO, Kind::Dir, "keys".into()));
            }
            (BUCKETS_INO, _) => {
                for (name, _) in self.store.buckets()? {
                    let i = self.ino_of(Node::BucketDir(name.clone()));
                    out.push((i, Kind::Dir, name.into()));
                }
            }
            (WRS_INO, _) => {
                for wr in workreq::list(&self.store, None)? {
                    let i = self.ino_of(Node::WorkRequest(wr.id.clone()));
                    out.push((i, Kind::File, wr.id.into()));
                }
            }
            (KEYS_INO, _) => {
                let ids: Vec<String> = self
                    .store
                    .keys()
                    .keys()
                    .iter()
                    .map(|k| key_id_text(&k.id))
                    .collect();
                for id in ids {
                    let i = self.ino_of(Node::Key(id.clone()));
                    out.push((i, Kind::File, id.into()));
                }
            }
            (_, Some(Node::BucketDir(b))) => {
                out.push((
                    self.ino_of(Node::BucketKey(b.clone())),
                    Kind::File,
                    "kms-key-id".into(),
                ));
                out.push((
                    self.ino_of(Node::BucketReencrypt(b)),
                    Kind::File,
                    "reencrypt".into(),
                ));
            }
            _ => return Err(Error::NotFound("not a control directory".into())),
        }
        Ok(out)
    }

    fn render(&self, ino: u64) -> Result<Vec<u8>> {
        let pretty = |v: Output| {
            let mut s = serde_json::to_vec_pretty(&v).unwrap_or_default();
            s.push(b'\n');
            s
        };
        Ok(match self.node(ino) {
            Some(Node::BucketKey(b)) => {
                let rec = self.store.bucket(&b)?;
                match rec.kms_key_id {
                    Some(k) => format!("{}\n", key_id_text(&k)).into_bytes(),
                    None => Vec::new(),
                }
            }
            Some(Node::BucketReencrypt(b)) => {
                let latest = workreq::list(&self.store, Some(&b))?.pop();
                match latest {
                    Some(w) => format!("{}\n", w.id).into_bytes(),
                    None => Vec::new(),
                }
            }
            Some(Node::WorkRequest(id)) => pretty(Output::of(&workreq::load(&self.store, &id)?)?),
            Some(Node::Key(k)) => {
                let ks = self.store.keys();
                pretty(Output::of(&ks.describe(ks.resolve(&k)?))?)
            }
            _ => Vec::new(),
        })
    }

    /// Opens a control file; returns a handle.
    pub fn open(&self, ino: u64, flags: i32) -> Result<u64> {
        let kind = self.getattr(ino)?.kind;
        if kind == Kind::Dir {
            return Err(Error::IsDirectory("open of a control directory".into()));
        }
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let read_only_node = matches!(
            self.node(ino),
            Some(Node::WorkRequest(_)) | Some(Node::Key(_))
        );
        if writable && read_only_node {
            return Err(eperm("this control file is read-only"));
        }
        let content = if ino == CTL_FILE_INO {
            Vec::new()
        } else {
            self.render(ino)?
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.open.lock_unpoisoned().insert(
            fh,
            Open {
                content,
                result: None,
                cursor: 0,
            },
        );
        Ok(fh)
    }

    /// Reads from a control handle: the result of the last command written, else the content.
    pub fn read(&self, _ino: u64, fh: u64, off: u64, size: u32, out: &mut Vec<u8>) -> Result<()> {
        let mut open = self.open.lock_unpoisoned();
        let o = open
            .get_mut(&fh)
            .ok_or_else(|| Error::BadHandle("unknown control file handle".into()))?;
        out.clear();
        match &o.result {
            Some(r) => {
                if off == 0 {
                    o.cursor = 0;
                }
                let start = o.cursor.min(r.len());
                let end = start.saturating_add(size as usize).min(r.len());
                out.extend_from_slice(&r[start..end]);
                o.cursor = end;
            }
            None => {
                let data = &o.content;
                let start = usize::try_from(off).unwrap_or(usize::MAX).min(data.len());
                let end = start.saturating_add(size as usize).min(data.len());
                out.extend_from_slice(&data[start..end]);
            }
        }
        Ok(())
    }

    /// Writes a command to a control handle and runs it. On failure the write fails with
    /// the command's errno and the reason is readable on the same handle.
    pub fn write(&self, ino: u64, fh: u64, _off: u64, data: &[u8]) -> Result<u32> {
        let len = u32::try_from(data.len())
            .map_err(|_| Error::InvalidArgument("write too large".into()))?;
        if data.len() > command::MAX_LINE {
            let e = Error::InvalidArgument(format!(
                "control writes are limited to {} bytes",
                command::MAX_LINE
            ));
            let res = Err(e);
            self.set_result(fh, &res);
            return res.map(|_| len);
        }
        let text = String::from_utf8_lossy(data);
        let line = text.trim();
        let res = match (ino, self.node(ino)) {
            (CTL_FILE_INO, _) => self.execute_line(line),
            // The line is the value of --kms-key-id; an empty one is refused there.
            (_, Some(Node::BucketKey(b))) => {
                self.execute(&StoreCommand::Bucket(BucketCmd::Update {
                    name: b,
                    kms_key_id: Some(line.to_string()),
                    remove_kms_key: false,
                }))
            }
            (_, Some(Node::BucketReencrypt(b))) => {
                self.execute(&StoreCommand::Bucket(BucketCmd::Reencrypt {
                    bucket_name: b,
                    kms_key_id: Some(line.to_string()),
                    rekey: false,
                    open_wait_seconds: workreq::DEFAULT_OPEN_WAIT_SECONDS,
                    wait: command::WaitArgs::default(),
                }))
            }
            _ => Err(eperm("this control file is read-only")),
        };
        self.set_result(fh, &res);
        res.map(|_| len)
    }

    fn set_result(&self, fh: u64, res: &Result<Output>) {
        let bytes = reply_bytes(res);
        if let Some(o) = self.open.lock_unpoisoned().get_mut(&fh) {
            o.result = Some(bytes);
        }
    }

    /// Closes a control handle.
    pub fn release(&self, fh: u64) {
        self.open.lock_unpoisoned().remove(&fh);
    }
}

/// The reply of a control write: `{"ok": true, "result": ...}` or `{"ok": false, "error":
/// {...}}`, pretty-printed, with a newline. Built in a zeroizing buffer straight from the
/// result (no copy of it: it may carry a plaintext).
fn reply_bytes(res: &Result<Output>) -> Zeroizing<Vec<u8>> {
    let mut out = WipingBuf::new();
    // Both written straight from their structs, whose fields are declared in the order
    // serde_json gives a map's (sorted), as the replies had them when built as maps.
    let done = match res {
        Ok(v) => serde_json::to_writer_pretty(
            &mut out,
            &OkReply {
                ok: true,
                result: v,
            },
        ),
        Err(e) => serde_json::to_writer_pretty(&mut out, &ErrorReply::of(e)),
    };
    if done.is_err() {
        // Writing to memory does not fail; should serde_json ever, an empty reply.
        out.truncate(0);
    }
    out.extend_from_slice(b"\n");
    out.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What the reply was before it was built in a zeroizing buffer: the bytes are an ABI.
    fn old_reply(v: serde_json::Value) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(&json!({"ok": true, "result": v})).unwrap();
        b.push(b'\n');
        b
    }

    #[test]
    fn replies_are_built_in_zeroizing_buffers_byte_for_byte_as_before() {
        let kms = json!({
            "Plaintext": "3q2+7wABAgP/+A==",
            "CiphertextBlob": "RUZLQgEA/w+/=",
            "KeyId": "key-0123456789abcdef0123456789abcdef",
            "KeyVersionId": 2,
        });
        let got: Zeroizing<Vec<u8>> = reply_bytes(&Ok(Output::new(kms.clone())));
        assert_eq!(got.as_slice(), old_reply(kms).as_slice());
        let list = json!([{"id": "wr-1", "status": "SUCCEEDED"}, {"é": [1, null, true]}]);
        assert_eq!(
            reply_bytes(&Ok(Output::new(list.clone()))).as_slice(),
            old_reply(list).as_slice()
        );
        let e = Error::InvalidArgument("no key given".into());
        let mut want = serde_json::to_vec_pretty(&json!({"ok": false, "error": {
            "kind": e.kind(), "message": e.to_string(), "errno": e.errno()
        }}))
        .unwrap();
        want.push(b'\n');
        assert_eq!(reply_bytes(&Err(e)).as_slice(), want.as_slice());
    }
}
