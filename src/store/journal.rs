//! The write journal: makes every change to an object's backing file all-or-nothing across a
//! crash of the mount process.
//!
//! A change to an object rewrites chunk slots in place with one `pwrite`. A chunk slot is
//! `chunk size + 28` bytes, so it always spans a page boundary, and the kernel copies a
//! `pwrite` into the page cache one page at a time, checking for a fatal signal before each
//! page. A `kill -9` can therefore stop a `pwrite` halfway through a chunk: the chunk then
//! mixes new and old bytes and fails authentication, and a write that extends an object can
//! leave it without its short final chunk. Both read as EIO forever after.
//!
//! So before such a change, what makes the object whole again is copied into a slot of this
//! journal, a file (`STORE/.envelopefs/journal`) that the mount maps into memory, with the
//! backing length:
//! - a write that grows the object, or a shrink, saves the old bytes it overwrites (the old
//!   final chunk: at most one chunk slot, read with one `pread` into the mapping); putting them
//!   back and cutting the file to its old length undoes the change;
//! - an overwrite saves its new, encrypted bytes (a copy in memory, in pieces of at most
//!   [`PIECE_BYTES`]); putting them back completes it.
//!
//! Marking the record active and clearing it again are stores to memory. Pages of a shared
//! file mapping are the page cache itself, so what the process stored survives its death. When
//! the store is next opened, every record still active is applied, and the object is whole:
//! as before the interrupted change or with it complete, either of which its caller (who
//! never saw the change acknowledged) must expect.
//!
//! Shrinking has two phases: first the new final chunk is written (undone like any write),
//! then the record is switched to "cut to N" before the file is cut, so a crash after the cut
//! completes the cut instead of undoing it.
//!
//! The journal protects against the death of the process (kill -9, a panic that aborts, the
//! OOM killer). It is not flushed to disk, so it does not make unsynced writes survive a power
//! loss or a kernel crash; as on any filesystem, only what was fsynced is promised then
//! (docs/SECURITY.md, docs/DECISIONS.md). Worse, what reached the disk of it may be older than
//! what the process last stored: a record written back while active and freed later. Applied
//! after a power loss, such a stale record would put old bytes over newer, fsynced ones. So
//! the journal carries the kernel's boot id, and its records are applied only in the boot
//! that wrote them, when the page cache (which is what a read of the file sees) holds exactly
//! what the dead process stored; records from an earlier boot are discarded.
#![allow(unsafe_code)]

use crate::error::{Error, IoContext, Result};
use crate::format::chunk::Geometry;
use crate::format::journal::{
    JournalHead, SlotHeader, FILE_HEADER, FREE, SLOT_HEADER, TRUNCATE, UNDO,
};
use crate::format::{hex, Id16};
use crate::sync::{LockUnpoisoned, WaitUnpoisoned};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};

/// Largest part of an overwrite journaled as one record (plaintext bytes, rounded to whole
/// chunks, at least one chunk). Larger overwrites are done piece by piece; each piece is
/// all-or-nothing.
pub const PIECE_BYTES: u64 = 256 << 10;

/// Total bytes of all slots aimed at (the slot count follows from the slot size).
const TARGET_BYTES: u64 = 8 << 20;

/// What a record saves: putting it back at its offset and restoring the length makes the
/// object whole, whatever part of the change had reached the file.
#[derive(Clone, Copy)]
pub enum Saved<'b> {
    /// The file's current bytes there (this many, fewer if the file ends first), read with
    /// one `pread`: putting them back undoes the change. For changes that overwrite little of
    /// the old file (growth, shrinking).
    FromFile(u64),
    /// These bytes, copied from memory: the new bytes of an overwrite (putting them back
    /// completes it), or old bytes the caller already knows (putting them back undoes).
    Bytes(&'b [u8]),
}

/// An active record read back from the journal file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub(crate) slot: u32,
    pub(crate) state: u32,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) object_id: Id16,
    pub(crate) saved_off: u64,
    pub(crate) restore_len: u64,
    pub(crate) saved: Vec<u8>,
}

impl Record {
    /// What the record is about, for reports: the object id in hex.
    pub fn object_id_hex(&self) -> String {
        hex(&self.object_id)
    }
}

/// The journal of one open store.
pub struct Journal {
    file: File,
    base: *mut u8,
    map_len: usize,
    slots: u32,
    slot_size: usize,
    free: Mutex<FreeSlots>,
    freed: Condvar,
    /// Whether a slot's pages were written with `pwrite` by this process, so that storing into
    /// the mapping cannot meet a full disk (which would be SIGBUS instead of ENOSPC).
    ready: Vec<AtomicBool>,
}

/// Free slots, and how many threads wait for one (so that giving a slot back wakes nobody,
/// and makes no system call, when no one waits).
struct FreeSlots {
    slots: Vec<u32>,
    waiting: usize,
}

// SAFETY: the mapping is shared memory owned by the Journal for its whole life. Each slot is
// used by one Guard at a time (slots are handed out under the `free` mutex), the state word
// is accessed atomically, and the mapping is unmapped only in Drop.
unsafe impl Send for Journal {}
// SAFETY: as above.
unsafe impl Sync for Journal {}

/// Geometry of the journal for a chunk geometry: (slot count, slot size).
fn layout(g: Geometry) -> (u32, usize) {
    let cap = PIECE_BYTES.max(g.stride()) + g.stride();
    let slot = (SLOT_HEADER as u64 + cap).div_ceil(4096) * 4096;
    let slots = (TARGET_BYTES / slot).clamp(8, 32) as u32;
    (slots, slot as usize)
}

/// Chunks per journaled piece of an overwrite.
pub fn piece_chunks(g: Geometry) -> u64 {
    (PIECE_BYTES / g.stride()).max(1)
}

fn path_of(meta: &Path) -> PathBuf {
    meta.join("journal")
}

/// The active records of a journal file.
#[derive(Debug, Default)]
pub struct Contents {
    /// Records written in this boot: they are what the process stored last, and are applied.
    pub records: Vec<Record>,
    /// Records written in an earlier boot: possibly stale (see the module documentation), so
    /// they are discarded, not applied.
    pub stale: usize,
}

/// The kernel's boot id (16 bytes from `/proc/sys/kernel/random/boot_id`; zeros if it cannot
/// be read, which never happens on Linux).
pub fn boot_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    if let Ok(text) = fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        let digits: Vec<u8> = text
            .bytes()
            .filter(u8::is_ascii_hexdigit)
            .map(|c| match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => c - b'A' + 10,
            })
            .collect();
        for (i, pair) in digits.chunks_exact(2).take(16).enumerate() {
            id[i] = pair[0] << 4 | pair[1];
        }
    }
    id
}

/// Reads the active records of a journal file without changing it (fsck uses this).
/// A missing journal has none. Reads the file header and the 64-byte slot headers, and the
/// saved bytes of active slots only (the file is mostly free slots).
pub fn read_records(meta: &Path) -> Result<Contents> {
    let path = path_of(meta);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Contents::default()),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    let len = file
        .metadata()
        .ctx(|| format!("reading {}", path.display()))?
        .len();
    let mut read = |at: u64, n: usize| -> io::Result<Option<Vec<u8>>> {
        if at.saturating_add(n as u64) > len {
            return Ok(None);
        }
        let mut b = vec![0u8; n];
        let got = super::object::read_full_at(&file, &mut b, at)?;
        Ok((got == n).then_some(b))
    };
    let records =
        parse_with(&mut read).map_err(|e| e.or_io(|| format!("reading {}", path.display())))?;
    let file_boot = read(24, 16).ctx(|| format!("reading {}", path.display()))?;
    Ok(by_boot(records, file_boot.as_deref(), &boot_id()))
}

/// The active records of the journal file `bytes` (held in memory), sorted by the boot that
/// wrote them: kept if it is `boot`, counted as stale otherwise.
pub(crate) fn contents(bytes: &[u8], boot: &[u8; 16]) -> Result<Contents> {
    let records = parse_records(bytes)?;
    Ok(by_boot(records, bytes.get(24..40), boot))
}

/// Keeps `records` if the journal's boot id `file_boot` is `boot`; else counts them stale.
fn by_boot(records: Vec<Record>, file_boot: Option<&[u8]>, boot: &[u8; 16]) -> Contents {
    if records.is_empty() || file_boot == Some(&boot[..]) {
        return Contents { records, stale: 0 };
    }
    Contents {
        stale: records.len(),
        records: Vec::new(),
    }
}

/// Parses a whole journal file held in memory (the fuzz target's entry point).
pub fn parse_records(bytes: &[u8]) -> Result<Vec<Record>> {
    let mut read = |at: u64, n: usize| -> io::Result<Option<Vec<u8>>> {
        let at = usize::try_from(at).unwrap_or(usize::MAX);
        Ok(bytes.get(at..at.saturating_add(n)).map(<[u8]>::to_vec))
    };
    parse_with(&mut read).map_err(|e| e.or_io(|| "reading the journal".to_string()))
}

/// Why parsing failed: the journal's bytes, or reading them.
enum ParseError {
    Bad(Error),
    Io(io::Error),
}

impl ParseError {
    fn or_io(self, what: impl FnOnce() -> String) -> Error {
        match self {
            ParseError::Bad(e) => e,
            ParseError::Io(e) => Error::io(what(), e),
        }
    }
}

impl From<io::Error> for ParseError {
    fn from(e: io::Error) -> Self {
        ParseError::Io(e)
    }
}

/// Parses a journal through `read(offset, len)`, which answers None past the end.
fn parse_with(
    read: &mut dyn FnMut(u64, usize) -> io::Result<Option<Vec<u8>>>,
) -> std::result::Result<Vec<Record>, ParseError> {
    let bad = |m: String| ParseError::Bad(Error::Corrupt(format!("write journal: {m}")));
    let Some(head) = read(0, JournalHead::LAYOUT_LEN)? else {
        return Ok(Vec::new());
    };
    // None: never set up (or cut to nothing and grown again), nothing recorded.
    let Some((slots, slot_size)) = JournalHead::decode_layout(&head).map_err(|m| bad(m.into()))?
    else {
        return Ok(Vec::new());
    };
    if !(1..=1024).contains(&slots) || !(SLOT_HEADER as u64 + 1..=64 << 20).contains(&slot_size) {
        return Err(bad(format!(
            "impossible layout ({slots} slots of {slot_size} bytes)"
        )));
    }
    let mut out = Vec::new();
    for s in 0..slots {
        let at = FILE_HEADER + u64::from(s) * slot_size;
        // The journal is created at full length and never cut while in use (only emptied
        // to nothing after a repair): a slot missing from it means damage.
        let h = read(at, SLOT_HEADER)?
            .ok_or_else(|| bad(format!("cut short: slot {s} of {slots} is missing")))?;
        let h: &[u8; SLOT_HEADER] = h
            .as_slice()
            .try_into()
            .map_err(|_| bad(format!("slot {s}: short header")))?;
        let SlotHeader {
            state,
            dev,
            ino,
            object_id,
            saved_off,
            saved_len,
            restore_len,
        } = SlotHeader::decode(h);
        if state == FREE {
            continue;
        }
        let cap = slot_size - SLOT_HEADER as u64;
        if (state != UNDO && state != TRUNCATE) || saved_len > cap {
            return Err(bad(format!(
                "slot {s} is damaged (state {state}, {saved_len} saved bytes)"
            )));
        }
        let saved = read(at + SLOT_HEADER as u64, saved_len as usize)?
            .ok_or_else(|| bad(format!("slot {s} is cut short")))?;
        out.push(Record {
            slot: s,
            state,
            dev,
            ino,
            object_id,
            saved_off,
            restore_len,
            saved,
        });
    }
    Ok(out)
}

impl Journal {
    /// Creates the journal of a store afresh, all slots free. Call [`recover`] first: what
    /// the old journal held is gone after this.
    pub fn create(meta: &Path, g: Geometry) -> Result<Journal> {
        let (slots, slot_size) = layout(g);
        let path = path_of(meta);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(super::META_FILE_MODE)
            .open(&path)
            .ctx(|| format!("opening {}", path.display()))?;
        super::fsutil::set_mode(&file, super::META_FILE_MODE)
            .ctx(|| format!("setting the mode of {}", path.display()))?;
        let map_len = FILE_HEADER as usize + slots as usize * slot_size;
        let head = JournalHead {
            slots,
            slot_size: slot_size as u64,
            boot_id: boot_id(),
        }
        .encode();
        // A journal of this layout is kept as it is: [`recover`] ran first, so all its slots
        // are free, and it only gets this boot's id (cutting and regrowing it would free and
        // discard the blocks of the slots used before, every time the store is opened).
        // Otherwise it starts as all-free slots (zeros) in the layout of this chunk size.
        // No fsync: what an earlier boot left on disk is never applied (module docs).
        let mut cur = [0u8; 24];
        let reuse = file.metadata().is_ok_and(|m| m.len() == map_len as u64)
            && super::object::read_full_at(&file, &mut cur, 0).is_ok_and(|n| n == 24)
            && cur[..] == head[..24];
        let r = if reuse {
            file.write_all_at(&head[24..], 24)
        } else {
            file.set_len(0)
                .and_then(|()| file.set_len(map_len as u64))
                .and_then(|()| file.write_all_at(&head, 0))
        };
        r.ctx(|| format!("writing {}", path.display()))?;
        // SAFETY: a shared read/write mapping of a file we hold open, of the length just set.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Error::io(
                format!("mapping {}", path.display()),
                io::Error::last_os_error(),
            ));
        }
        Ok(Journal {
            file,
            base: base.cast::<u8>(),
            map_len,
            slots,
            slot_size,
            // Popped from the end: slot 0 first, so few slots' pages are ever touched.
            free: Mutex::new(FreeSlots {
                slots: (0..slots).rev().collect(),
                waiting: 0,
            }),
            freed: Condvar::new(),
            ready: (0..slots).map(|_| AtomicBool::new(false)).collect(),
        })
    }

    /// Starts a change of `file` (backing length `len` now) at backing offset `at`, saving
    /// what putting back makes the file whole again: its old bytes there, or the new bytes
    /// (see [`Saved`]). Marks the record active. Drop the guard once the change is complete;
    /// call [`Guard::undo`] if it failed.
    pub fn begin<'a>(
        &'a self,
        file: &'a File,
        id: (u64, u64),
        object_id: &Id16,
        at: u64,
        saved: Saved<'_>,
        len: u64,
    ) -> Result<Guard<'a>> {
        let cap = (self.slot_size - SLOT_HEADER) as u64;
        let want = match saved {
            Saved::FromFile(n) => n,
            Saved::Bytes(b) => b.len() as u64,
        };
        if want > cap {
            return Err(Error::InvalidArgument(format!(
                "write journal: a record of {want} bytes exceeds a slot ({cap})"
            )));
        }
        let slot = self.take_slot();
        self.prepare(slot)?;
        let mut guard = Guard {
            journal: self,
            slot,
            saved_off: at,
            saved_len: 0,
            len,
            file,
        };
        let data = guard.data_mut();
        let got = match saved {
            Saved::FromFile(n) => {
                let n = n.min(len.saturating_sub(at)) as usize;
                super::object::read_full_at(file, &mut data[..n], at)
                    .map_err(|e| Error::io("saving old bytes to the write journal", e))?
            }
            Saved::Bytes(b) => {
                data[..b.len()].copy_from_slice(b);
                b.len()
            }
        };
        guard.saved_len = got as u64;
        SlotHeader {
            state: UNDO,
            dev: id.0,
            ino: id.1,
            object_id: *object_id,
            saved_off: at,
            saved_len: got as u64,
            restore_len: len,
        }
        .encode_body(guard.header_mut());
        guard.state().store(UNDO, Ordering::Release);
        Ok(guard)
    }

    fn take_slot(&self) -> u32 {
        let mut free = self.free.lock_unpoisoned();
        loop {
            if let Some(s) = free.slots.pop() {
                return s;
            }
            free.waiting += 1;
            free = self.freed.wait_unpoisoned(free);
            free.waiting -= 1;
        }
    }

    fn give_slot(&self, slot: u32) {
        let mut free = self.free.lock_unpoisoned();
        free.slots.push(slot);
        if free.waiting > 0 {
            self.freed.notify_one();
        }
    }

    /// Makes sure the slot's blocks exist on disk before the mapping is stored into: a store
    /// into a page the filesystem cannot allocate kills the process with SIGBUS, whereas
    /// `pwrite` reports ENOSPC.
    fn prepare(&self, slot: u32) -> Result<()> {
        let ready = &self.ready[slot as usize];
        if ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let off = FILE_HEADER + slot as u64 * self.slot_size as u64;
        // The slot is free (all zeros since `open`): writing zeros changes nothing but
        // allocates its blocks.
        let zeros = vec![0u8; self.slot_size];
        if let Err(e) = self.file.write_all_at(&zeros, off) {
            self.give_slot(slot);
            return Err(Error::io("preparing the write journal", e));
        }
        ready.store(true, Ordering::Release);
        Ok(())
    }

    fn slot_ptr(&self, slot: u32) -> *mut u8 {
        debug_assert!(slot < self.slots);
        // SAFETY: slot < self.slots, so the offset is inside the mapping.
        unsafe {
            self.base
                .add(FILE_HEADER as usize + slot as usize * self.slot_size)
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // SAFETY: base/map_len are the mapping made in `open`, unmapped once here.
        unsafe {
            libc::munmap(self.base.cast(), self.map_len);
        }
    }
}

/// An active journal record; dropping it marks the change complete.
pub struct Guard<'a> {
    journal: &'a Journal,
    slot: u32,
    saved_off: u64,
    saved_len: u64,
    len: u64,
    file: &'a File,
}

impl Guard<'_> {
    fn state(&self) -> &AtomicU32 {
        // SAFETY: the slot start is page aligned (so 4-byte aligned) and inside the mapping,
        // and its first word is only ever accessed atomically.
        unsafe { &*(self.journal.slot_ptr(self.slot) as *const AtomicU32) }
    }

    fn header_mut(&mut self) -> &mut [u8; SLOT_HEADER] {
        // SAFETY: the slot is exclusively this guard's and at least SLOT_HEADER bytes long;
        // what writes through this (SlotHeader::encode_body, set_restore_len) leaves bytes
        // 0..4, the atomic state word, alone.
        unsafe { &mut *(self.journal.slot_ptr(self.slot) as *mut [u8; SLOT_HEADER]) }
    }

    #[allow(clippy::mut_from_ref)]
    fn data_mut(&self) -> &mut [u8] {
        // SAFETY: the slot's data area is exclusively this guard's and lies inside the mapping.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.journal.slot_ptr(self.slot).add(SLOT_HEADER),
                self.journal.slot_size - SLOT_HEADER,
            )
        }
    }

    /// Second phase of a shrink: from here on, a crash completes the cut to `new_len`.
    pub fn truncating(&mut self, new_len: u64) {
        SlotHeader::set_restore_len(self.header_mut(), new_len);
        self.state().store(TRUNCATE, Ordering::Release);
    }

    /// Repairs a change that failed halfway (say, ENOSPC in the middle of a `pwrite`): puts
    /// the saved bytes and the length back (undoing the change, or completing it if the new
    /// bytes were saved). If that fails too, the record stays active and the next open of
    /// the store repairs it.
    pub fn undo(self) -> Result<()> {
        let data = &self.data_mut()[..self.saved_len as usize];
        let r = self
            .file
            .write_all_at(data, self.saved_off)
            .and_then(|()| self.file.set_len(self.len));
        match r {
            Ok(()) => Ok(()),
            Err(e) => {
                // Keep the slot active for recovery; it is not given back.
                std::mem::forget(self);
                Err(Error::io("undoing a failed write", e))
            }
        }
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.state().store(FREE, Ordering::Release);
        self.journal.give_slot(self.slot);
    }
}

/// Undoes the active records of the journal in `meta` on the backing files under `root`,
/// makes the undo durable, then empties the journal. Returns how many records were undone.
/// Run it before anything else opens an object of the store.
pub fn recover(root: &Path, meta: &Path) -> Result<usize> {
    let Contents { records, stale } = read_records(meta).map_err(|e| match e {
        Error::Corrupt(m) => Error::Corrupt(format!(
            "{m}: {} cannot be read, so writes a crash cut short cannot be repaired; remove it \
             to open the store anyway (such objects then show a torn chunk: EIO on that chunk, \
             fsck `chunk`)",
            path_of(meta).display()
        )),
        other => other,
    })?;
    if records.is_empty() && stale == 0 {
        return Ok(0);
    }
    if stale > 0 {
        tracing::warn!(
            "the write journal holds {stale} record(s) from an earlier boot (a power loss or a \
             kernel crash): not applied, since they may be stale; only fsynced data is promised \
             after a power loss"
        );
    }
    let mut wanted: HashMap<(u64, u64), Option<PathBuf>> =
        records.iter().map(|r| ((r.dev, r.ino), None)).collect();
    find_by_inode(root, &mut wanted)?;
    let mut undone = 0;
    for r in &records {
        let Some(Some(path)) = wanted.get(&(r.dev, r.ino)) else {
            // Gone (deleted, or an unnamed file that was never linked): nothing to repair.
            continue;
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .ctx(|| format!("write journal: opening {}", path.display()))?;
        // The inode number may have been reused by another object since: the preamble tells.
        let mut pre = [0u8; crate::format::chunk::PREAMBLE_LEN as usize];
        let n = super::object::read_full_at(&file, &mut pre, 0)
            .ctx(|| format!("write journal: reading {}", path.display()))?;
        match crate::format::chunk::parse_preamble(&pre[..n]) {
            Ok(id) if id == r.object_id => {}
            _ => continue,
        }
        let apply = || -> io::Result<()> {
            if r.state == UNDO {
                file.write_all_at(&r.saved, r.saved_off)?;
            }
            file.set_len(r.restore_len)?;
            file.sync_all()
        };
        apply().ctx(|| format!("write journal: repairing {}", path.display()))?;
        tracing::warn!(
            object = %path.strip_prefix(root).unwrap_or(path).display(),
            object_id = %r.object_id_hex(),
            "a change interrupted by a crash was repaired (undone, or completed from the journal)"
        );
        undone += 1;
    }
    // Every record is applied and durable (or stale): empty the journal (needs no free
    // space), so that no record is ever applied twice.
    let path = path_of(meta);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(0).and_then(|()| f.sync_all()))
        .ctx(|| format!("emptying {}", path.display()))?;
    Ok(undone)
}

/// Fills in the paths of the wanted (dev, ino) pairs, walking every directory under `root`.
fn find_by_inode(root: &Path, wanted: &mut HashMap<(u64, u64), Option<PathBuf>>) -> Result<()> {
    let mut left = wanted.len();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(it) => it,
            Err(e) if d != root && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("listing {}", d.display()), e)),
        };
        for e in entries {
            let e = e.ctx(|| format!("listing {}", d.display()))?;
            let Ok(ft) = e.file_type() else { continue };
            let p = e.path();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let Ok(md) = fs::symlink_metadata(&p) else {
                    continue;
                };
                if let Some(slot) = wanted.get_mut(&(md.dev(), md.ino())) {
                    if slot.is_none() {
                        *slot = Some(p);
                        left -= 1;
                        if left == 0 {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::journal::MAGIC;

    #[test]
    fn layout_fits_a_piece_and_a_chunk_slot() {
        for cs in [4096u32, 16384, 65536, 1 << 20] {
            let g = Geometry::new(cs);
            let (slots, size) = layout(g);
            let cap = (size - SLOT_HEADER) as u64;
            assert!(cap >= piece_chunks(g) * g.stride(), "cs {cs}");
            assert!(cap >= 2 * g.stride(), "cs {cs}");
            assert!((8..=32).contains(&slots), "cs {cs}");
            assert_eq!(size % 4096, 0);
        }
    }

    #[test]
    fn a_damaged_journal_is_an_error_not_a_guess() {
        let mut b = vec![0u8; FILE_HEADER as usize + 8192];
        b[..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[16..24].copy_from_slice(&8192u64.to_le_bytes());
        assert!(parse_records(&b).expect("free journal").is_empty());
        b[FILE_HEADER as usize] = 7; // unknown state
        assert!(parse_records(&b).is_err());
        b[FILE_HEADER as usize] = 1;
        b[FILE_HEADER as usize + 48..FILE_HEADER as usize + 56]
            .copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_records(&b).is_err());
        b[..8].copy_from_slice(b"NOTJRNL!");
        assert!(parse_records(&b).is_err());
        assert!(parse_records(&[]).expect("empty").is_empty());
    }
}
