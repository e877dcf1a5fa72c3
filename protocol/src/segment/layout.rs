//! The segment's fixed layout (version 1): `#[repr(C)]`-style u64 words at fixed offsets. Every
//! offset here is also in `SPEC.md`; changing one is a new layout version.

/// `b"SWBDSEG\0"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SWBDSEG\0");
pub const LAYOUT_VERSION: u64 = 1;
pub const HEADER_LEN: u64 = 64;
pub const SEGMENT_LEN: usize = 4096;
pub const SLOT_OFFSET: usize = 1024;
pub const SLOT_LEN: usize = 128;
pub const TASK_SLOTS: usize = 16;
pub const HIST_BUCKETS: usize = 32;
pub const LABEL_MAX: usize = 64;

/// Word indexes (byte offset / 8).
pub mod word {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 1;
    pub const HEADER_LEN: usize = 2;
    pub const TOTAL_LEN: usize = 3;
    pub const SLOT_OFFSET: usize = 4;
    pub const SLOT_LEN: usize = 5;
    pub const SLOT_COUNT: usize = 6;
    pub const HIST_BUCKETS: usize = 7;
    pub const HEARTBEAT: usize = 8;
    pub const STATE: usize = 9;
    pub const RECEIVED: usize = 10;
    pub const OK: usize = 11;
    pub const ERROR: usize = 12;
    pub const TIMEOUT: usize = 13;
    pub const IN_FLIGHT: usize = 14;
    pub const EVENTS_PUBLISHED: usize = 15;
    pub const EVENTS_RECEIVED: usize = 16;
    pub const LATENCY_SUM_US: usize = 17;
    /// Gauge: items the service has accepted and not yet finished (its own queue).
    pub const BACKLOG: usize = 18;
    /// Unix time in ms at which the oldest item still waiting was accepted; 0 = none waiting.
    pub const OLDEST_ACCEPTED_UNIX_MS: usize = 19;
    /// 1 once the service publishes `BACKLOG`; 0 = the console derives a backlog itself.
    pub const BACKLOG_PUBLISHED: usize = 20;
    pub const HISTOGRAM: usize = 32;
}

/// Word indexes within a task slot.
pub mod slot {
    pub const SEQ: usize = 0;
    pub const ID: usize = 1;
    pub const STATE: usize = 2;
    pub const DONE: usize = 3;
    pub const TOTAL: usize = 4;
    pub const LABEL_LEN: usize = 5;
    pub const LABEL: usize = 8;
    pub const LABEL_WORDS: usize = 8;
}

// The layout must fit together; checked when compiling.
const _: () = assert!(HEADER_LEN as usize == 8 * 8);
const _: () = assert!(word::BACKLOG_PUBLISHED * 8 < 256);
const _: () = assert!(word::HISTOGRAM * 8 + HIST_BUCKETS * 8 == 512);
const _: () = assert!(SLOT_OFFSET + TASK_SLOTS * SLOT_LEN <= SEGMENT_LEN);
const _: () = assert!(slot::LABEL * 8 + LABEL_MAX == SLOT_LEN);

/// The header words as the console writes them.
pub const HEADER: [u64; 8] = [
    MAGIC,
    LAYOUT_VERSION,
    HEADER_LEN,
    SEGMENT_LEN as u64,
    SLOT_OFFSET as u64,
    SLOT_LEN as u64,
    TASK_SLOTS as u64,
    HIST_BUCKETS as u64,
];

/// The service's own view of its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(u64)]
pub enum ServiceState {
    Starting = 0,
    Ready = 1,
    Busy = 2,
    Draining = 3,
    Finished = 4,
}

impl ServiceState {
    pub fn from_word(word: u64) -> Option<Self> {
        Some(match word {
            0 => ServiceState::Starting,
            1 => ServiceState::Ready,
            2 => ServiceState::Busy,
            3 => ServiceState::Draining,
            4 => ServiceState::Finished,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TaskState {
    Free,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl TaskState {
    pub fn word(self) -> u64 {
        match self {
            TaskState::Free => 0,
            TaskState::Running => 1,
            TaskState::Done => 2,
            TaskState::Failed => 3,
            TaskState::Cancelled => 4,
        }
    }

    pub fn from_word(word: u64) -> Option<Self> {
        Some(match word {
            0 => TaskState::Free,
            1 => TaskState::Running,
            2 => TaskState::Done,
            3 => TaskState::Failed,
            4 => TaskState::Cancelled,
            _ => return None,
        })
    }
}

/// How a request ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Error,
    Timeout,
}

/// The histogram bucket of a latency of `us` microseconds: bucket 0 is 0 µs, bucket i holds
/// [2^(i-1), 2^i) µs, the last bucket everything from 2^30 µs up.
pub fn latency_bucket(us: u64) -> usize {
    ((64 - us.leading_zeros()) as usize).min(HIST_BUCKETS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 1);
        assert_eq!(latency_bucket(2), 2);
        assert_eq!(latency_bucket(3), 2);
        assert_eq!(latency_bucket(4), 3);
        assert_eq!(latency_bucket(1 << 29), 30);
        assert_eq!(latency_bucket(1 << 30), 31);
        assert_eq!(latency_bucket(u64::MAX), 31);
    }
}
