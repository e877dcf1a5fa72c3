//! The log store: bounded rings of recent lines, per service and interleaved, and a live feed.
//! The services' pipes are read into it by [`super::ingest`].

use std::{
    collections::{HashMap, VecDeque},
    os::fd::OwnedFd,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use tokio::{sync::broadcast, task::JoinHandle};

use super::{
    file::FileSink,
    ingest::{Ingest, Source},
};

/// Lines kept per service.
pub const RING_PER_SERVICE: usize = 5000;
/// Lines kept in the interleaved ring (all services).
pub const RING_ALL: usize = 10_000;
/// Live-feed buffer. A subscriber that lags further loses the oldest lines (it is told how
/// many) and can re-read the rings.
const FEED_BUFFER: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
    /// Written by the console itself about the service (lifecycle).
    Console,
    /// Written by the console in place of lines it dropped over the service's log budget.
    Dropped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Sequence number, increasing across all services.
    pub seq: u64,
    pub at: SystemTime,
    pub service: Arc<str>,
    pub replica: u32,
    pub stream: Stream,
    pub text: String,
}

#[derive(Default)]
struct Rings {
    per_service: HashMap<Arc<str>, VecDeque<Arc<LogLine>>>,
    all: VecDeque<Arc<LogLine>>,
}

pub struct LogStore {
    rings: Mutex<Rings>,
    feed: broadcast::Sender<Arc<LogLine>>,
    file: Option<FileSink>,
    ingest: Ingest,
    seq: AtomicU64,
}

impl LogStore {
    /// A store that also writes per-service files under `dir` (when given).
    pub fn new(dir: Option<&Path>) -> Arc<LogStore> {
        let file = dir.and_then(|dir| match FileSink::start(dir) {
            Ok(sink) => Some(sink),
            Err(err) => {
                tracing::warn!(dir = %dir.display(), cause = %err, "log files disabled");
                None
            }
        });
        Arc::new(LogStore {
            rings: Mutex::new(Rings::default()),
            feed: broadcast::channel(FEED_BUFFER).0,
            file,
            ingest: Ingest::start(),
            seq: AtomicU64::new(1),
        })
    }

    pub fn push(&self, service: &Arc<str>, replica: u32, stream: Stream, text: String) {
        let line = Arc::new(LogLine {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            at: SystemTime::now(),
            service: service.clone(),
            replica,
            stream,
            text,
        });
        {
            let mut rings = self.lock();
            let ring = rings.per_service.entry(service.clone()).or_default();
            if ring.len() == RING_PER_SERVICE {
                ring.pop_front();
            }
            ring.push_back(line.clone());
            if rings.all.len() == RING_ALL {
                rings.all.pop_front();
            }
            rings.all.push_back(line.clone());
        }
        if let Some(file) = &self.file {
            file.write(line.clone());
        }
        // No receiver is fine: nobody is watching live.
        let _ = self.feed.send(line);
    }

    /// The last `n` lines of `service`, oldest first.
    pub fn tail(&self, service: &str, n: usize) -> Vec<Arc<LogLine>> {
        let rings = self.lock();
        rings
            .per_service
            .get(service)
            .map(|ring| {
                ring.iter()
                    .skip(ring.len().saturating_sub(n))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The last `n` lines of all services, interleaved, oldest first.
    pub fn tail_all(&self, n: usize) -> Vec<Arc<LogLine>> {
        let rings = self.lock();
        rings
            .all
            .iter()
            .skip(rings.all.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LogLine>> {
        self.feed.subscribe()
    }

    /// Reads `pipe` into the store on the log-ingest thread, within the source's budget, until
    /// the pipe ends.
    pub fn read(
        self: &Arc<Self>,
        pipe: OwnedFd,
        source: Source,
    ) -> Result<JoinHandle<()>, tokio::runtime::TryCurrentError> {
        self.ingest.read(self.clone(), pipe, source)
    }

    /// Lines of `service` dropped over its log budget since the console started.
    pub fn dropped_lines(&self, service: &str) -> u64 {
        self.ingest.dropped(service)
    }

    /// Lines the file writer had to drop because it fell behind.
    pub fn dropped_file_lines(&self) -> u64 {
        self.file.as_ref().map_or(0, FileSink::dropped)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rings> {
        self.rings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_are_bounded_and_ordered() {
        let store = LogStore::new(None);
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        for i in 0..RING_PER_SERVICE + 10 {
            store.push(&a, 0, Stream::Stderr, format!("a{i}"));
        }
        store.push(&b, 0, Stream::Stderr, "b0".into());
        let tail = store.tail("a", 3);
        let texts: Vec<&str> = tail.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                format!("a{}", RING_PER_SERVICE + 7),
                format!("a{}", RING_PER_SERVICE + 8),
                format!("a{}", RING_PER_SERVICE + 9)
            ]
        );
        assert_eq!(store.tail("a", usize::MAX).len(), RING_PER_SERVICE);
        let all = store.tail_all(2);
        assert_eq!(all[1].text, "b0");
        assert!(all[0].seq < all[1].seq);
        assert!(store.tail("missing", 5).is_empty());
    }
}
