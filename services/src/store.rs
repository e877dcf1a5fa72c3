//! SQLite storage shared by the example services: one file per service under the stack's data
//! directory, in WAL mode with `synchronous=FULL`, so a committed transaction survives a
//! `kill -9` (and a power cut) the moment the call that made it returns.
//!
//! rusqlite is blocking, and the services run on a single-threaded runtime that also reads and
//! writes the console's pipes, so every statement runs on tokio's blocking pool through
//! [`Store::run`]. One connection behind a mutex is enough: SQLite serialises writers anyway,
//! and these services do a few hundred statements a second at most.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
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
    #[error("the storage thread failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("the storage connection was poisoned by a panic")]
    Poisoned,
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

/// A SQLite database file, shared by the tasks of one service.
#[derive(Clone)]
pub struct Store {
    connection: Arc<Mutex<Connection>>,
    path: Arc<Path>,
}

impl Store {
    /// Opens (creating if needed) `file` in the data directory and applies `schema`, a batch of
    /// idempotent `CREATE ... IF NOT EXISTS` statements.
    pub fn open(file: &str, schema: &str) -> Result<Store, StoreError> {
        let dir = data_dir();
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::DataDir {
            path: dir.clone(),
            source,
        })?;
        Store::open_path(&dir.join(file), schema)
    }

    pub fn open_path(path: &Path, schema: &str) -> Result<Store, StoreError> {
        let connection = Connection::open(path)?;
        // WAL lets the report job and tests read while the service writes; FULL makes every
        // commit wait for the WAL to reach the disk, which is what "acknowledged" promises.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.busy_timeout(Duration::from_secs(5))?;
        connection.execute_batch(schema)?;
        Ok(Store {
            connection: Arc::new(Mutex::new(connection)),
            path: path.into(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` with the connection on the blocking pool.
    pub async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().map_err(|_| StoreError::Poisoned)?;
            work(&mut connection)
        })
        .await?
    }
}

/// Milliseconds since the Unix epoch, for timestamps stored in the databases.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_in_wal_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_path(
            &dir.path().join("t.db"),
            "CREATE TABLE IF NOT EXISTS t (x INTEGER);",
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
}
