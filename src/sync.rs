//! Locks that recover from poisoning: the one place that decides it.
//!
//! A thread that panics while it holds a lock poisons it. Recovering (taking the guard out of
//! the poison error) is right here: the FUSE adapter catches a panic per request and answers
//! it with an error while the mount goes on serving, and the work-request and trash threads
//! go on too, so passing the poison on would turn one failed request into the failure of
//! every later request that takes the lock. What the locks guard stays usable after such a
//! panic: tables of handles, nodes and open objects, whose entries are inserted or removed
//! whole, and objects whose changes are crash-atomic through the write journal. The order in
//! which the locks are taken is written down in [`crate::vfs`] (section "Locks").

use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// [`Mutex::lock`], recovering from poisoning.
pub trait LockUnpoisoned<T: ?Sized> {
    /// Locks, waiting if needed; a poisoned lock is taken as it is.
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockUnpoisoned<T> for Mutex<T> {
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// [`RwLock::read`] and [`RwLock::write`], recovering from poisoning.
pub trait RwLockUnpoisoned<T: ?Sized> {
    /// Shared access; a poisoned lock is taken as it is.
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T>;
    /// Exclusive access; a poisoned lock is taken as it is.
    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockUnpoisoned<T> for RwLock<T> {
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// [`Condvar::wait`], recovering from poisoning.
pub trait WaitUnpoisoned {
    /// Waits for a notification (or a spurious wakeup); the mutex is locked again on return,
    /// poisoned or not.
    fn wait_unpoisoned<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T>;
}

impl WaitUnpoisoned for Condvar {
    fn wait_unpoisoned<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.wait(guard).unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisoned_locks_are_taken_as_they_are() {
        let m = Mutex::new(1);
        let rw = RwLock::new(2);
        let _ = std::thread::scope(|s| {
            s.spawn(|| {
                let _m = m.lock();
                let _rw = rw.write();
                panic!("poisoning on purpose");
            })
            .join()
        });
        assert!(m.is_poisoned() && rw.is_poisoned());
        *m.lock_unpoisoned() += 1;
        *rw.write_unpoisoned() += 1;
        assert_eq!(*m.lock_unpoisoned(), 2);
        assert_eq!(*rw.read_unpoisoned(), 3);
    }
}
