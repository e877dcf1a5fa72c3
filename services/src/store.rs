//! SQLite storage shared by the example services: one file per service under the stack's data
//! directory, in WAL mode with `synchronous=FULL`, so a committed transaction survives a
//! `kill -9` (and a power cut) the moment the call that made it returns.
//!
//! rusqlite is blocking, and the services run on a single-threaded runtime that also reads and
//! writes the console's pipes, so every statement runs on the store's own thread, which owns
//! the one connection: [`Store::run`] sends it the work and awaits the answer. One connection
//! is enough (SQLite serialises writers anyway), and one thread owning it beats tokio's blocking
//! pool here: under load that pool grew a thread per waiting request, all queued on the
//! connection's mutex, and each new thread cost a fresh 2 MiB heap page to zero.
//!
//! The queue to the thread holds [`QUEUE`] jobs; when it is full, callers wait their turn
//! (back-pressure into the handler, whose caller's deadline still applies).
//!
//! Writes made with [`Store::write`] are group-committed: all that are queued share one
//! transaction and one fsync, each in its own savepoint (`store/group.rs` says why and how).
//!
//! Point reads by key ([`Store::read_now`]) skip the thread: they run at once on a second,
//! read-only connection (WAL lets it read while the thread writes). They take microseconds, less
//! than the two thread wakeups of a handoff, which dominated `user.get` under load. The reads of
//! requests that arrived together share one read snapshot (`store/snapshot.rs` says when that
//! is safe).

mod group;
mod snapshot;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rusqlite::Connection;
use switchboard_protocol::sdk::HandlerError;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot start the storage thread: {0}")]
    Thread(std::io::Error),
    #[error("the storage work panicked, or its thread is gone")]
    Lost,
    /// The group commit holding this write failed, so the write is not stored.
    #[error("the commit holding this write failed: {0}")]
    Commit(Arc<rusqlite::Error>),
}

impl From<StoreError> for HandlerError {
    fn from(err: StoreError) -> Self {
        tracing::error!(cause = %err, "storage failure");
        HandlerError::internal("storage failure")
    }
}

/// The directory a service keeps its files in: `SWITCHBOARD_DATA_DIR` (set by the console from
/// the stack's `data_dir`), or `./data` when run by hand.
pub fn data_dir() -> PathBuf {
    std::env::var_os("SWITCHBOARD_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("data"))
}

/// Jobs waiting for the storage thread.
pub const QUEUE: usize = 256;

use group::{Job, Written};

/// A SQLite database file, shared by the tasks of one service.
#[derive(Clone)]
pub struct Store {
    jobs: tokio::sync::mpsc::Sender<Job>,
    /// For [`Store::read_now`]. Uncontended: the services run on one thread.
    reader: Arc<Mutex<snapshot::Reader>>,
    path: Arc<Path>,
    /// Group commits made by the storage thread (see [`Store::commits`]).
    commits: Arc<AtomicU64>,
}

/// A column added to a table after the table was first released: `(table, column,
/// declaration)`. A database made before has it added when it is opened; SQLite has no
/// `ADD COLUMN IF NOT EXISTS`.
pub type AddedColumn = (&'static str, &'static str, &'static str);

impl Store {
    /// Opens (creating if needed) `file` in the data directory and applies `schema`, a batch of
    /// idempotent `CREATE ... IF NOT EXISTS` statements, then adds any of `added` that an
    /// older file lacks.
    pub fn open(file: &str, schema: &str, added: &[AddedColumn]) -> Result<Store, StoreError> {
        let dir = data_dir();
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::DataDir {
            path: dir.clone(),
            source,
        })?;
        Store::open_path(&dir.join(file), schema, added)
    }

    pub fn open_path(
        path: &Path,
        schema: &str,
        added: &[AddedColumn],
    ) -> Result<Store, StoreError> {
        let connection = Connection::open(path)?;
        // WAL lets the report job and tests read while the service writes; FULL makes every
        // commit wait for the WAL to reach the disk, which is what "acknowledged" promises.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.busy_timeout(Duration::from_secs(5))?;
        connection.execute_batch(schema)?;
        for ColumnAdded {
            table,
            column,
            had_rows,
        } in add_missing_columns(&connection, added)?
        {
            // A new file gets every column this way too: only an upgrade is worth a line.
            if had_rows {
                tracing::info!(table, column, "added a column to an older database");
            } else {
                tracing::debug!(table, column, "added a column to an empty table");
            }
        }
        let reader = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        reader.busy_timeout(Duration::from_secs(5))?;
        let (jobs, queue) = tokio::sync::mpsc::channel::<Job>(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        // The thread ends when the last Store clone is dropped.
        std::thread::Builder::new()
            .name("sqlite".into())
            .spawn(move || group::serve(connection, queue, QUEUE, &counted))
            .map_err(StoreError::Thread)?;
        Ok(Store {
            jobs,
            reader: Arc::new(Mutex::new(snapshot::Reader::new(reader))),
            path: path.into(),
            commits,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` with the connection on the storage thread, outside any transaction: for
    /// reads, and for work that needs a transaction of its own (an immediate one, say).
    pub async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job = Job::Alone(Box::new(move |connection| {
            let _ = answer.send(work(connection));
        }));
        self.jobs.send(job).await.map_err(|_| StoreError::Lost)?;
        answered.await.map_err(|_| StoreError::Lost)?
    }

    /// Runs `write` on the storage thread as part of the next group commit, and answers once
    /// that commit has reached the disk. `write` runs in its own savepoint: its changes are
    /// atomic, and kept only if it answers `Ok` (an `Err` rolls back just this write). It must
    /// not begin or end transactions itself.
    pub async fn write<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job = Job::Write(Box::new(move |connection| {
            let result = write(connection);
            Written {
                kept: result.is_ok(),
                answer: Box::new(move |failed| {
                    let _ = answer.send(match (failed, result) {
                        (Some(err), Ok(_)) => Err(StoreError::Commit(err)),
                        (_, result) => result,
                    });
                }),
            }
        }));
        self.jobs.send(job).await.map_err(|_| StoreError::Lost)?;
        answered.await.map_err(|_| StoreError::Lost)?
    }

    /// How many group commits of [`Store::write`]s the storage thread has made so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Jobs queued for the storage thread and not yet taken.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }
}

impl Store {
    /// Runs a point read (a lookup by key, microseconds) at once on the read-only connection,
    /// on the caller's thread, for a request received at `received` (its
    /// [`Context::received`](switchboard_protocol::sdk::Context::received)): the read sees
    /// every commit made before then. Anything that may scan, or write, goes through
    /// [`Store::run`].
    pub fn read_now<T>(
        &self,
        received: Instant,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        snapshot::read(&self.reader, received, read)
    }
}

/// Adds each of `added` its table does not have yet, and says which it added and whether the
/// table already held rows. Replicas of a service open the same file at once, so the check and
/// the change are one immediate transaction.
fn add_missing_columns(
    connection: &Connection,
    added: &[AddedColumn],
) -> Result<Vec<ColumnAdded>, StoreError> {
    if added.is_empty() {
        return Ok(Vec::new());
    }
    connection.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let mut done = Vec::new();
        for &(table, column, declaration) in added {
            let present = connection
                .prepare(&format!(
                    "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
                ))?
                .exists([column])?;
            if !present {
                let had_rows = connection
                    .prepare(&format!("SELECT 1 FROM {table} LIMIT 1"))?
                    .exists([])?;
                connection.execute_batch(&format!(
                    "ALTER TABLE {table} ADD COLUMN {column} {declaration}"
                ))?;
                done.push(ColumnAdded {
                    table,
                    column,
                    had_rows,
                });
            }
        }
        Ok::<_, rusqlite::Error>(done)
    })();
    match result {
        Ok(done) => {
            connection.execute_batch("COMMIT")?;
            Ok(done)
        }
        Err(err) => {
            let _ = connection.execute_batch("ROLLBACK");
            Err(err.into())
        }
    }
}

/// A column [`add_missing_columns`] added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ColumnAdded {
    table: &'static str,
    column: &'static str,
    /// The table held rows: an older database upgraded, not a new one being completed.
    had_rows: bool,
}

/// Milliseconds since the Unix epoch, for timestamps stored in the databases.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use std::panic::AssertUnwindSafe;

    use super::*;

    #[tokio::test]
    async fn opens_in_wal_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_path(
            &dir.path().join("t.db"),
            "CREATE TABLE IF NOT EXISTS t (x INTEGER);",
            &[],
        )
        .unwrap();
        let (mode, sync): (String, i64) = store
            .run(|c| {
                let mode = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
                let sync = c.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
                Ok((mode, sync))
            })
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous=FULL is 2");
    }

    #[test]
    fn only_columns_added_to_tables_with_rows_count_as_an_upgrade() {
        let connection = Connection::open_in_memory().unwrap();
        connection
            .execute_batch("CREATE TABLE full (x INTEGER); CREATE TABLE empty (x INTEGER);")
            .unwrap();
        connection
            .execute("INSERT INTO full VALUES (1)", [])
            .unwrap();
        let added: &[AddedColumn] = &[("full", "y", "INTEGER"), ("empty", "y", "INTEGER")];
        let done = add_missing_columns(&connection, added).unwrap();
        let upgraded: Vec<_> = done.iter().map(|c| (c.table, c.had_rows)).collect();
        assert_eq!(upgraded, [("full", true), ("empty", false)]);
        assert!(add_missing_columns(&connection, added).unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_older_file_gets_the_columns_added_since_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let schema = "CREATE TABLE IF NOT EXISTS t (x INTEGER);";
        let old = Store::open_path(&path, schema, &[]).unwrap();
        old.run(|c| Ok(c.execute("INSERT INTO t (x) VALUES (7)", [])?))
            .await
            .unwrap();
        drop(old);
        let added: &[AddedColumn] = &[
            ("t", "y", "INTEGER"),
            ("t", "z", "INTEGER NOT NULL DEFAULT 1"),
        ];
        // Twice: the second open finds the columns and changes nothing.
        for _ in 0..2 {
            let store = Store::open_path(&path, schema, added).unwrap();
            let row: (i64, Option<i64>, i64) = store
                .run(|c| {
                    Ok(c.query_row("SELECT x, y, z FROM t", [], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?)
                })
                .await
                .unwrap();
            assert_eq!(row, (7, None, 1));
        }
    }

    #[tokio::test]
    async fn a_panicking_job_loses_its_answer_and_the_store_carries_on() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open_path(&dir.path().join("t.db"), "CREATE TABLE t (x INTEGER);", &[]).unwrap();
        let lost = store
            .run(|_c| -> Result<(), StoreError> { panic!("a bug in one handler") })
            .await;
        assert!(matches!(lost, Err(StoreError::Lost)), "{lost:?}");
        let n: i64 = store
            .run(|c| {
                c.execute("INSERT INTO t VALUES (1)", [])?;
                Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?)
            })
            .await
            .unwrap();
        assert_eq!(n, 1);
    }

    /// Another process's connection to the same file, as a replica's would be.
    fn other_writer(store: &Store) -> Connection {
        let c = Connection::open(store.path()).unwrap();
        c.busy_timeout(Duration::ZERO).unwrap();
        c
    }

    fn count(store: &Store, received: Instant) -> i64 {
        store
            .read_now(received, |c| {
                Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?)
            })
            .unwrap()
    }

    #[tokio::test]
    async fn reads_share_a_snapshot_only_when_received_before_it_began() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open_path(&dir.path().join("t.db"), "CREATE TABLE t (x INTEGER);", &[]).unwrap();
        let earlier = Instant::now();
        assert_eq!(count(&store, earlier), 0, "begins a snapshot");
        // Committed elsewhere while the snapshot is open (no await: the snapshot stays open).
        other_writer(&store)
            .execute("INSERT INTO t VALUES (1)", [])
            .unwrap();
        assert_eq!(
            count(&store, earlier),
            0,
            "a request received before the snapshot began is answered from it"
        );
        assert_eq!(
            count(&store, Instant::now()),
            1,
            "a request received after the commit sees it"
        );
    }

    #[tokio::test]
    async fn a_snapshot_ends_once_the_thread_turns_to_other_work() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open_path(&dir.path().join("t.db"), "CREATE TABLE t (x INTEGER);", &[]).unwrap();
        let writer = other_writer(&store);
        writer.execute("INSERT INTO t VALUES (1)", []).unwrap();
        let truncate = || -> i64 {
            writer
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(count(&store, Instant::now()), 1);
        assert_eq!(truncate(), 1, "busy: the open snapshot pins the WAL");
        tokio::task::yield_now().await;
        assert_eq!(truncate(), 0, "the snapshot ended when the task yielded");
    }

    #[test]
    fn without_a_runtime_a_read_keeps_no_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let _entered = runtime.enter();
            Store::open_path(&dir.path().join("t.db"), "CREATE TABLE t (x INTEGER);", &[]).unwrap()
        };
        let writer = other_writer(&store);
        writer.execute("INSERT INTO t VALUES (1)", []).unwrap();
        assert_eq!(count(&store, Instant::now()), 1);
        let busy: i64 = writer
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .unwrap();
        assert_eq!(busy, 0);
    }

    #[tokio::test]
    async fn a_read_that_panics_does_not_break_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open_path(&dir.path().join("t.db"), "CREATE TABLE t (x INTEGER);", &[]).unwrap();
        let panicked = std::panic::catch_unwind(AssertUnwindSafe(|| {
            store.read_now(Instant::now(), |_c| -> Result<(), StoreError> {
                panic!("a bug in one handler")
            })
        }));
        assert!(panicked.is_err());
        assert_eq!(count(&store, Instant::now()), 0);
    }
}
