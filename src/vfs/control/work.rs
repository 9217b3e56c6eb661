//! The mount's work-request pool: a few worker threads that run queued work requests
//! (bucket re-encryption) while the filesystem keeps serving, and their cancellation.

use crate::command::Reply;
use crate::error::{Error, Result};
use crate::ops::workreq::{self, WorkRequest};
use crate::store::object::Live;
use crate::store::Store;
use crate::sync::LockUnpoisoned;
use std::collections::HashSet;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

/// Number of work-request workers.
pub const WORKERS: usize = 1;

/// The pool. Idle (requests are saved but not run) until [`WorkPool::start`].
pub(super) struct WorkPool {
    store: Arc<Store>,
    tx: Mutex<Option<Sender<String>>>,
    cancelled: Mutex<HashSet<String>>,
    running: Mutex<HashSet<String>>,
}

impl WorkPool {
    pub(super) fn new(store: Arc<Store>) -> Self {
        WorkPool {
            store,
            tx: Mutex::new(None),
            cancelled: Mutex::new(HashSet::new()),
            running: Mutex::new(HashSet::new()),
        }
    }

    /// Starts the workers, each calling `run` with the id of every request queued, and
    /// queues every unfinished work request (resume). `run` is expected to call
    /// [`WorkPool::run`]; the workers end once the pool is stopped.
    pub(super) fn start(&self, run: Arc<dyn Fn(&str) + Send + Sync>) -> Result<()> {
        let (tx, rx) = channel::<String>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..WORKERS {
            let run = Arc::clone(&run);
            let rx: Arc<Mutex<Receiver<String>>> = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("envelopefs-wr-{i}"))
                .spawn(move || loop {
                    let id = match rx.lock_unpoisoned().recv() {
                        Ok(id) => id,
                        Err(_) => return,
                    };
                    run(&id);
                })
                .map_err(|e| Error::io("starting work-request workers", e))?;
        }
        for wr in workreq::unfinished(&self.store)? {
            tracing::info!("resuming work request {}", wr.id);
            let _ = tx.send(wr.id);
        }
        *self.tx.lock_unpoisoned() = Some(tx);
        Ok(())
    }

    /// Stops taking work (at unmount); running requests stop at the next object and resume
    /// at the next mount.
    pub(super) fn stop(&self) {
        self.tx.lock_unpoisoned().take();
    }

    /// Runs one work request inside the mount (`live`: see [`workreq::run_live`]).
    pub(super) fn run(&self, id: &str, live: &dyn Live) {
        // Registered as running before it is loaded: a cancel either saved its request
        // before this load, or finds it running and only flags it (the worker is then the
        // only writer of the record).
        self.running.lock_unpoisoned().insert(id.to_string());
        let res = workreq::load(&self.store, id).and_then(|mut wr| {
            let stop = || {
                if self.cancelled.lock_unpoisoned().contains(id) {
                    workreq::Stop::Cancel
                } else if self.tx.lock_unpoisoned().is_none() {
                    workreq::Stop::Pause
                } else {
                    workreq::Stop::Continue
                }
            };
            workreq::run_live(&self.store, &mut wr, &stop, &mut |_| {}, live)
        });
        if let Err(e) = res {
            tracing::error!("work request {id}: {e}");
        }
        self.running.lock_unpoisoned().remove(id);
    }

    /// `work-request cancel`: a running request is flagged (its worker records the cancel
    /// at the next object), any other is cancelled in its record at once.
    pub(super) fn cancel(&self, id: &str) -> Result<Reply> {
        let running = self.running.lock_unpoisoned();
        self.cancelled.lock_unpoisoned().insert(id.to_string());
        let mut wr = workreq::load(&self.store, id)?;
        if running.contains(id) {
            // The worker records the cancel itself at the next object.
            if !wr.status.is_terminal() {
                wr.status = workreq::State::Canceling;
                wr.cancel_requested = true;
            }
        } else {
            wr = workreq::request_cancel(&self.store, id)?;
        }
        Ok(Reply::WorkRequest(Box::new(wr)))
    }

    /// Queues a saved work request (nothing if the pool is not running: it resumes at the
    /// next mount).
    pub(super) fn queue(&self, wr: &WorkRequest) {
        if let Some(tx) = self.tx.lock_unpoisoned().as_ref() {
            let _ = tx.send(wr.id.clone());
        }
    }
}
