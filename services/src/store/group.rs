//! The storage thread, and its group commit: the writes queued while the last commit was being
//! synced are committed together, in one transaction and one fsync.
//!
//! Why: with `synchronous=FULL` every commit waits for the disk, so a service whose callers
//! each committed alone did at most one write per fsync, however many callers waited. Now
//! each write runs in its own savepoint inside the shared transaction, so one that fails is
//! rolled back alone and the others are committed; each caller is answered only after the
//! commit that holds its write has returned (and so has reached the disk).
//!
//! The other jobs ([`Job::Alone`]: reads, and work with its own transaction) run before the
//! group, in the order they were queued. That reorders them only against writes that nobody
//! has been told about yet: a job that depends on a write is queued after the write's answer.

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use rusqlite::{Connection, TransactionBehavior};

/// What the storage thread does with the connection.
pub enum Job {
    /// Runs with the connection to itself, outside any transaction.
    Alone(Box<dyn FnOnce(&mut Connection) + Send>),
    /// Joins the next group commit: runs inside a savepoint of the group's transaction.
    Write(Write),
}

/// A write waiting for its group: runs, and says whether to keep it and how to answer.
pub type Write = Box<dyn FnOnce(&Connection) -> Written + Send>;

/// A write that has run and waits for the commit that holds it.
pub struct Written {
    /// It succeeded: its savepoint is kept. A failed write is rolled back alone.
    pub kept: bool,
    /// Answers the caller, given the group's commit error if the commit failed.
    pub answer: Box<dyn FnOnce(Option<Arc<rusqlite::Error>>) + Send>,
}

/// Serves jobs until every sender is gone. Each pass takes all that is queued (up to `most`),
/// then commits its writes together, counting the commit in `commits`.
pub fn serve(
    mut connection: Connection,
    mut queue: tokio::sync::mpsc::Receiver<Job>,
    most: usize,
    commits: &AtomicU64,
) {
    let mut writes = Vec::new();
    while let Some(first) = queue.blocking_recv() {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(job) = next.take() {
            taken += 1;
            match job {
                Job::Alone(run) => {
                    // A panic in one job drops its answer (that caller gets `Lost`); the
                    // connection and the thread carry on for the others.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| run(&mut connection)));
                }
                Job::Write(write) => writes.push(write),
            }
            if taken < most {
                next = queue.try_recv().ok();
            }
        }
        if !writes.is_empty() {
            commit(&mut connection, &mut writes, commits);
        }
    }
}

/// Runs `writes` in one transaction, each in its own savepoint, commits, counts the commit in
/// `commits`, then answers each (counted first: a caller that has its answer sees its commit
/// counted).
fn commit(connection: &mut Connection, writes: &mut Vec<Write>, commits: &AtomicU64) {
    let mut answers = Vec::with_capacity(writes.len());
    let outcome = (|| {
        // Immediate: take the write lock now (waiting out another replica's commit under the
        // busy timeout) rather than fail half-way through the group.
        let mut tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for write in writes.drain(..) {
            let savepoint = tx.savepoint()?;
            // A panic drops that caller's answer (`Lost`) and, with the savepoint, its changes.
            let Ok(written) = std::panic::catch_unwind(AssertUnwindSafe(|| write(&savepoint)))
            else {
                continue;
            };
            if written.kept {
                savepoint.commit()?;
            }
            // Dropped uncommitted, a savepoint rolls back to where it began.
            answers.push(written.answer);
        }
        tx.commit()
    })();
    commits.fetch_add(1, Ordering::Relaxed);
    // Writes that did not run (the transaction could not begin) are answered `Lost`.
    writes.clear();
    let failed = outcome.err().map(|err| {
        tracing::error!(cause = %err, writes = answers.len(), "a group commit failed");
        Arc::new(err)
    });
    for answer in answers {
        answer(failed.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use crate::store::{Store, StoreError};

    /// A store whose thread is held inside a job until the answer sender is used, so that
    /// writes can be queued behind it; answers the sender.
    async fn held(store: &Store) -> (mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (started, is_started) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let holder = store.clone();
        let held = tokio::spawn(async move {
            let _ = holder
                .run(move |_c| {
                    let _ = started.send(());
                    let _ = released.recv();
                    Ok(())
                })
                .await;
        });
        tokio::task::spawn_blocking(move || is_started.recv())
            .await
            .unwrap()
            .unwrap();
        (release, held)
    }

    /// Waits (yielding, not sleeping) until `n` jobs are queued behind the held thread. On a
    /// current-thread runtime, as these tests use: a sender takes its place in the queue and
    /// puts its job in it within one poll, so a counted place always holds its job.
    async fn until_queued(store: &Store, n: usize) {
        while store.queued() < n {
            tokio::task::yield_now().await;
        }
    }

    fn insert(store: &Store, x: i64) -> tokio::task::JoinHandle<Result<(), StoreError>> {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .write(move |c| {
                    c.execute("INSERT INTO t VALUES (?1)", [x])?;
                    Ok(())
                })
                .await
        })
    }

    fn rows(store: &Store) -> Vec<i64> {
        let c = rusqlite::Connection::open(store.path()).unwrap();
        let mut s = c.prepare("SELECT x FROM t ORDER BY x").unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[tokio::test]
    async fn writes_queued_together_share_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open_path(&dir.path().join("t.db"), "CREATE TABLE t (x INTEGER);", &[]).unwrap();
        let (release, held) = held(&store).await;
        let writes: Vec<_> = (0..16).map(|x| insert(&store, x)).collect();
        until_queued(&store, 16).await;
        release.send(()).unwrap();
        held.await.unwrap();
        for write in writes {
            write.await.unwrap().unwrap();
        }
        assert_eq!(store.commits(), 1, "16 queued writes, one commit");
        assert_eq!(rows(&store), (0..16).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_failing_or_panicking_write_leaves_the_others_of_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_path(
            &dir.path().join("t.db"),
            "CREATE TABLE t (x INTEGER UNIQUE);",
            &[],
        )
        .unwrap();
        let (release, held) = held(&store).await;
        let mut writes: Vec<_> = (0..3).map(|x| insert(&store, x)).collect();
        // Rows 0-2 queued first: the spawned writes race each other to the queue, and the
        // failing write must meet row 0 already written in its group.
        until_queued(&store, 3).await;
        // Writes its own row, then breaks the UNIQUE constraint on a row of the same group.
        let failing = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(|c| {
                        c.execute("INSERT INTO t VALUES (3)", [])?;
                        c.execute("INSERT INTO t VALUES (0)", [])?;
                        Ok(())
                    })
                    .await
            })
        };
        let panicking = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(|c| -> Result<(), StoreError> {
                        c.execute("INSERT INTO t VALUES (4)", [])?;
                        panic!("a bug in one handler")
                    })
                    .await
            })
        };
        writes.extend((5..8).map(|x| insert(&store, x)));
        until_queued(&store, 8).await;
        release.send(()).unwrap();
        held.await.unwrap();
        let failed = failing.await.unwrap();
        assert!(matches!(failed, Err(StoreError::Sqlite(_))), "{failed:?}");
        let lost = panicking.await.unwrap();
        assert!(matches!(lost, Err(StoreError::Lost)), "{lost:?}");
        for write in writes {
            write.await.unwrap().unwrap();
        }
        assert_eq!(store.commits(), 1);
        assert_eq!(
            rows(&store),
            [0, 1, 2, 5, 6, 7],
            "3 and 4 rolled back alone"
        );
    }
}
