//! The per-service metrics segment: shared memory that the service writes and the console only
//! reads, so the console sees heartbeats, counters and task progress without sending a message.
//!
//! - [`layout`]: the fixed word offsets (also in `SPEC.md`), states and histogram buckets.
//! - `memory`: the mapping and bounds-checked atomic access to its words.
//! - [`memfd`]: creating the sealed memfd the console hands to a child as fd 3.
//! - [`writer`]: the service side: counters, heartbeat, task slots under a seqlock.
//! - [`reader`]: the console side: copies values out and judges them, never trusts them.
//!
//! Why a memfd with seals: a file in `/dev/shm` could be truncated by the service (or anyone),
//! and a reader touching a truncated mapping dies of SIGBUS. Sealing against shrinking and
//! growing makes the size a fact the console can rely on (a reader refuses an fd without the
//! shrink seal), and the fd is inherited, not named, so no other process can open it by accident.
//! `SEGMENT-NOTES.md` beside this crate has the rest of the reasoning and the benchmark figures.

pub mod layout;
pub mod memfd;
mod memory;
pub mod reader;
pub mod writer;

pub use layout::{
    HIST_BUCKETS, LABEL_MAX, Outcome, SEGMENT_LEN, ServiceState, TASK_SLOTS, TaskState,
    latency_bucket,
};
pub use memfd::create_segment;
pub use reader::{PublishedBacklog, SegmentReader, Snapshot, TaskRecord, Validity};
pub use writer::{SegmentWriter, TaskSlot};

/// The environment variable naming the fd the segment is inherited as.
pub const SEGMENT_FD_ENV: &str = "SWITCHBOARD_SEGMENT_FD";

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("segment I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a switchboard segment: {0}")]
    BadHeader(String),
    #[error("bad {SEGMENT_FD_ENV}: {0}")]
    BadEnv(String),
    /// A reader maps only files sealed against shrinking: a truncated mapping is SIGBUS.
    #[error("segment is not sealed against shrinking")]
    Unsealed,
}

impl From<rustix::io::Errno> for SegmentError {
    fn from(errno: rustix::io::Errno) -> Self {
        SegmentError::Io(errno.into())
    }
}
