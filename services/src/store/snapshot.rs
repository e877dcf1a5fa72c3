//! The read-only connection behind [`Store::read_now`](super::Store::read_now), which lets the
//! point reads of one batch of requests share a read snapshot.
//!
//! Why: in WAL mode every read transaction locks and unlocks a read mark in the shared-memory
//! index with `fcntl`, two system calls that cost more than the indexed read itself (a third of
//! `user.get`'s CPU, measured). The requests that arrive together in one read from the console's
//! pipe can all be answered from one snapshot.
//!
//! When sharing is safe: a snapshot holds every commit made before it began. A request read
//! from the pipe at `received` was sent before then, so any write acknowledged before it was
//! sent is in a snapshot that began at or after `received`. An older snapshot is ended and a
//! new one begun; callers never see older data than a fresh read would give them.
//!
//! A snapshot is ended once the service's thread turns to other work (a task spawned when it
//! begins, which runs when the reader task next waits): a snapshot left open would keep
//! checkpoints from recycling the WAL, which would then grow with every write.

use std::{
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::Instant,
};

use rusqlite::Connection;

use super::StoreError;

/// The connection and the snapshot it may be holding.
pub struct Reader {
    connection: Connection,
    /// When the open snapshot began: it holds every commit made before then.
    since: Option<Instant>,
    /// Counts snapshots, so that a late end task leaves a newer one alone.
    generation: u64,
}

impl Reader {
    pub fn new(connection: Connection) -> Reader {
        Reader {
            connection,
            since: None,
            generation: 0,
        }
    }

    /// Ends the open snapshot, if any.
    fn end(&mut self) {
        self.since = None;
        if !self.connection.is_autocommit()
            && let Err(err) = self.connection.execute_batch("ROLLBACK")
        {
            tracing::warn!(cause = %err, "cannot end a read snapshot");
        }
    }

    /// Begins a snapshot holding every commit made before now.
    fn begin(&mut self) -> Result<(), StoreError> {
        self.end();
        // Taken before BEGIN, which takes the snapshot at the first read: later, never earlier.
        let since = Instant::now();
        self.connection.execute_batch("BEGIN")?;
        self.since = Some(since);
        self.generation = self.generation.wrapping_add(1);
        Ok(())
    }
}

/// Runs `read` on a snapshot that holds every commit made before `received`.
pub fn read<T>(
    shared: &Arc<Mutex<Reader>>,
    received: Instant,
    read: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut reader = lock(shared);
    // The open snapshot, if it began after the request was received; else a new one.
    if reader.since.is_none_or(|since| since < received) {
        reader.begin()?;
        if !end_later(shared, reader.generation) {
            // No runtime to end it later: nothing shares it.
            let answer = read(&reader.connection);
            reader.end();
            return answer;
        }
    }
    let answer = read(&reader.connection);
    if answer.is_err() {
        // Whatever went wrong, the next read starts afresh.
        reader.end();
    }
    answer
}

/// Spawns the task that ends snapshot `generation`; false without a runtime to spawn it on.
fn end_later(shared: &Arc<Mutex<Reader>>, generation: u64) -> bool {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    let shared: Weak<Mutex<Reader>> = Arc::downgrade(shared);
    runtime.spawn(async move {
        if let Some(shared) = shared.upgrade() {
            let mut reader = lock(&shared);
            if reader.generation == generation {
                reader.end();
            }
        }
    });
    true
}

/// A read that panicked leaves the lock poisoned and its snapshot in an unknown state: end the
/// snapshot and carry on, so one bad handler does not fail every later read.
fn lock(shared: &Mutex<Reader>) -> MutexGuard<'_, Reader> {
    shared.lock().unwrap_or_else(|poisoned| {
        let mut reader = poisoned.into_inner();
        reader.end();
        shared.clear_poison();
        reader
    })
}
