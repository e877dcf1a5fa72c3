//! How the console reads an instance's metrics segment: mapped, for a process on this host, or
//! relayed, for one on another host, whose agent reads the segment there and sends what it
//! read with its status every second.
//!
//! A relayed snapshot comes off the network from an agent, so it is checked as the mapped one
//! is: at most [`TASK_SLOTS`] tasks, labels at most [`LABEL_MAX`] bytes, at most
//! [`PROBLEMS_KEPT`] problems. The counters may hold anything; every sum over them saturates
//! (see `monitor::metrics`).

use std::sync::{Arc, Mutex};

use switchboard_protocol::segment::{
    LABEL_MAX, PublishedBacklog, SegmentReader, Snapshot, TASK_SLOTS,
};

/// Problems kept from a relayed snapshot.
pub const PROBLEMS_KEPT: usize = 8;

/// An instance's segment, wherever it is.
#[derive(Clone)]
pub enum Segment {
    /// Mapped here, read in place.
    Mapped(SegmentReader),
    /// On another host: the last snapshot its agent sent.
    Relayed(Arc<Mutex<Snapshot>>),
}

impl Segment {
    /// An empty relayed segment, filled by [`relay`](Self::relay).
    pub fn relayed() -> Segment {
        Segment::Relayed(Arc::default())
    }

    /// Copies everything out.
    pub fn read(&self) -> Snapshot {
        match self {
            Segment::Mapped(reader) => reader.read(),
            Segment::Relayed(last) => last.lock().map(|s| s.clone()).unwrap_or_default(),
        }
    }

    /// Only the published backlog.
    pub fn backlog(&self) -> Option<PublishedBacklog> {
        match self {
            Segment::Mapped(reader) => reader.backlog(),
            Segment::Relayed(last) => last.lock().ok().and_then(|s| s.backlog),
        }
    }

    /// Only the heartbeat counter.
    pub fn heartbeat(&self) -> Option<u64> {
        match self {
            Segment::Mapped(reader) => reader.heartbeat(),
            Segment::Relayed(last) => last
                .lock()
                .ok()
                .and_then(|s| s.header_ok.then_some(s.heartbeat)),
        }
    }

    /// Takes `snapshot` as the latest of a relayed segment (a mapped one ignores it).
    pub fn relay(&self, mut snapshot: Snapshot) {
        let Segment::Relayed(last) = self else {
            return;
        };
        snapshot.tasks.truncate(TASK_SLOTS);
        for task in &mut snapshot.tasks {
            if task.label.len() > LABEL_MAX {
                let mut end = LABEL_MAX;
                while !task.label.is_char_boundary(end) {
                    end -= 1;
                }
                task.label.truncate(end);
            }
        }
        snapshot.problems.truncate(PROBLEMS_KEPT);
        for problem in &mut snapshot.problems {
            problem.truncate(problem.floor_char_boundary(200));
        }
        if let Ok(mut last) = last.lock() {
            *last = snapshot;
        }
    }
}

#[cfg(test)]
mod tests {
    use switchboard_protocol::segment::{TaskRecord, TaskState, Validity};

    use super::*;

    #[test]
    fn a_relayed_snapshot_is_held_to_the_segment_s_bounds() {
        let segment = Segment::relayed();
        let task = TaskRecord {
            slot: 0,
            id: 1,
            label: "é".repeat(100),
            done: 1,
            total: 2,
            state: TaskState::Running,
            validity: Validity::Valid,
        };
        segment.relay(Snapshot {
            header_ok: true,
            heartbeat: 7,
            tasks: vec![task; 100],
            problems: vec!["x".repeat(10_000); 100],
            ..Snapshot::default()
        });
        let read = segment.read();
        assert_eq!(read.tasks.len(), TASK_SLOTS);
        assert!(read.tasks.iter().all(|t| t.label.len() <= LABEL_MAX));
        assert_eq!(read.problems.len(), PROBLEMS_KEPT);
        assert_eq!(segment.heartbeat(), Some(7));
    }
}
