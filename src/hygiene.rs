//! Process hygiene for processes that hold keys: no core dumps, and key pages kept out of
//! swap where the system allows it.
#![allow(unsafe_code)]

/// What [`protect_process`] managed to do (logged by the mount; tests read /proc instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protection {
    /// RLIMIT_CORE is 0 and the process is not dumpable.
    pub no_core_dumps: bool,
    /// The pages mapped so far are locked in memory (mlockall(MCL_CURRENT)).
    pub memory_locked: bool,
}

/// Disables core dumps (RLIMIT_CORE 0, not dumpable: no core file, no ptrace attach by
/// other users, /proc/PID/mem closed to them) and locks the process's memory with
/// `mlockall(MCL_CURRENT | MCL_ONFAULT)` when the memory-lock limit allows it (unlimited, or
/// the process has CAP_IPC_LOCK, e.g. root). With a small limit (the default 8 MiB for
/// ordinary users) locking everything would make later allocations fail, so it is skipped
/// and reported. Call it right after the keystore is opened, so that the pages holding the
/// master keys are among those locked.
///
/// Not `MCL_FUTURE`: with it, pjdfstest's open::etxtbsy failed in 3 of 3 full runs (an
/// `open(O_WRONLY)` of an executable copied into the mount, while it ran, succeeded instead
/// of ETXTBSY), and passed without it. Why is not understood. Pages mapped after the call
/// (the malloc arenas of the FUSE worker threads, where the data keys of objects opened later
/// live) are locked by [`relock`], which the mount calls every second.
pub fn protect_process() -> Protection {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit with a valid rlimit; prctl with integer arguments.
    let no_core = unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &zero) == 0
            && libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    };
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit; geteuid has no preconditions.
    let allowed = unsafe {
        libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) == 0
            && (lim.rlim_cur == libc::RLIM_INFINITY || libc::geteuid() == 0)
    };
    let locked = allowed && {
        // SAFETY: mlockall takes flags only.
        unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_ONFAULT) == 0 }
    };
    LOCKED.store(locked, std::sync::atomic::Ordering::Relaxed);
    let p = Protection {
        no_core_dumps: no_core,
        memory_locked: locked,
    };
    if !locked {
        tracing::info!(
            "memory not locked (the memory-lock limit does not allow mlockall); keys may reach swap"
        );
    }
    p
}

/// Whether [`protect_process`] locked the memory (so [`relock`] may too).
static LOCKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How often the mount calls [`relock`].
pub const RELOCK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Locks the mappings made since the last call (new malloc arenas and thread stacks), if
/// [`protect_process`] locked the memory: `mlockall(MCL_CURRENT | MCL_ONFAULT)` again, which
/// marks every mapping locked and pins the pages already present, without faulting in the
/// rest. A data key allocated in a new mapping is thus out of swap within a second.
pub fn relock() {
    if LOCKED.load(std::sync::atomic::Ordering::Relaxed) {
        // SAFETY: mlockall takes flags only.
        unsafe {
            libc::mlockall(libc::MCL_CURRENT | libc::MCL_ONFAULT);
        }
    }
}

/// A growable byte buffer that leaves no copy of its bytes behind, for text that carries a
/// secret (the JSON reply of `kms decrypt` and `generate-data-key`) from its creation to its
/// write. It is zeroized when dropped, like a `Zeroizing<Vec<u8>>`; unlike one, it also
/// zeroizes the allocation it leaves when it grows (a `Vec` frees it as it is), and the bytes
/// it cuts off when it is truncated.
#[derive(Default)]
pub struct WipingBuf(zeroize::Zeroizing<Vec<u8>>);

impl WipingBuf {
    /// An empty buffer.
    pub fn new() -> Self {
        WipingBuf::default()
    }

    /// Appends bytes, moving to a larger allocation (and wiping the old one) if needed.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let need = self.0.len().saturating_add(bytes.len());
        if need > self.0.capacity() {
            let cap = need.max(self.0.capacity().saturating_mul(2)).max(256);
            let mut bigger = zeroize::Zeroizing::new(Vec::with_capacity(cap));
            bigger.extend_from_slice(&self.0);
            // The old allocation is zeroized as it drops.
            self.0 = bigger;
        }
        self.0.extend_from_slice(bytes);
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Cuts the buffer to `len` bytes, zeroizing the rest.
    pub fn truncate(&mut self, len: usize) {
        if len < self.0.len() {
            zeroize::Zeroize::zeroize(&mut self.0[len..]);
            self.0.truncate(len);
        }
    }

    /// Removes trailing whitespace (as `str::trim_end` sees it) after byte `from`.
    pub fn trim_end_from(&mut self, from: usize) {
        let keep = match self.0.get(from..).map(std::str::from_utf8) {
            Some(Ok(tail)) => from + tail.trim_end().len(),
            _ => return,
        };
        self.truncate(keep);
    }

    /// The buffer as a zeroizing vector (no copy).
    pub fn into_inner(self) -> zeroize::Zeroizing<Vec<u8>> {
        self.0
    }
}

impl std::io::Write for WipingBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Write for WipingBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::WipingBuf;
    use std::fmt::Write;

    #[test]
    fn wiping_buf_keeps_every_byte_across_growth_and_trims_like_str() {
        let mut b = WipingBuf::new();
        let mut want = String::new();
        for i in 0..2000 {
            write!(b, "{i},").unwrap();
            want.push_str(&format!("{i},"));
        }
        assert_eq!(b.as_bytes(), want.as_bytes());
        b.extend_from_slice(b"tail \t\n ");
        let len = b.len();
        b.trim_end_from(len - 3);
        assert!(
            b.as_bytes().ends_with(b",tail "),
            "only after the byte given"
        );
        b.trim_end_from(0);
        assert!(b.as_bytes().ends_with(b",tail"));
        b.truncate(4);
        assert_eq!(b.as_bytes(), b"0,1,");
        assert_eq!(b.into_inner().as_slice(), b"0,1,");
    }
}
