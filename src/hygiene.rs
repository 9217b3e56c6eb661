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
