//! The audit log: one append-only JSON-lines file (`RUN_DIR/audit.jsonl`) recording who did
//! what to which service, and how it ended. The console's keyboard actions, the admin API and
//! the router's refusals of forbidden calls all write to it.
//!
//! Entries go to a writer thread through a bounded queue; when the queue is full the entry is
//! dropped and counted (the log must never hold up routing or the UI).

use std::{
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

const QUEUE: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u128,
    /// `"console"`, `"api:<token id>"`, or `"router"`.
    pub actor: String,
    pub action: String,
    pub target: String,
    /// "ok", or the error.
    pub result: String,
}

#[derive(Clone)]
pub struct AuditLog {
    queue: mpsc::SyncSender<Entry>,
    dropped: Arc<AtomicU64>,
    path: PathBuf,
}

impl AuditLog {
    /// Starts the writer thread appending to `path` (its directory is created).
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        let (queue, entries) = mpsc::sync_channel::<Entry>(QUEUE);
        std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || {
                for entry in entries {
                    let Ok(mut line) = serde_json::to_vec(&entry) else {
                        continue;
                    };
                    line.push(b'\n');
                    // One write per line, so concurrent readers never see half an entry.
                    if let Err(err) = file.write_all(&line) {
                        tracing::warn!(cause = %err, "cannot write the audit log");
                    }
                }
            })?;
        Ok(AuditLog {
            queue,
            dropped: Arc::new(AtomicU64::new(0)),
            path: path.to_path_buf(),
        })
    }

    pub fn record(&self, actor: &str, action: &str, target: &str, result: &str) {
        let entry = Entry {
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
            actor: actor.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            result: result.to_string(),
        };
        if self.queue.try_send(entry).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_appended_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.record("console", "restart", "order", "ok");
        log.record("router", "forbidden call", "user → billing", "refused");
        drop(log);
        let mut text = String::new();
        for _ in 0..100 {
            text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["action"], "restart");
        assert_eq!(lines[1]["actor"], "router");
    }
}
