//! The console side of the segment. Everything the service wrote is untrusted: values are
//! copied out word by word, every field is checked, and a slot that keeps changing under the
//! reader is reported torn rather than guessed at.

use std::{
    fs::File,
    os::fd::BorrowedFd,
    sync::{
        Arc,
        atomic::{Ordering, fence},
    },
};

use memmap2::MmapOptions;
use rustix::fs::SealFlags;

use super::{
    SegmentError,
    layout::{
        HEADER, HIST_BUCKETS, LABEL_MAX, SEGMENT_LEN, SLOT_LEN, SLOT_OFFSET, ServiceState,
        TASK_SLOTS, TaskState, slot, word,
    },
    memory::Mapping,
};

/// How often a slot is re-read while its writer is mid-update before it is reported torn.
const SEQLOCK_TRIES: usize = 64;

#[derive(Clone)]
pub struct SegmentReader {
    mapping: Arc<Mapping>,
}

/// Serializable, so that an agent can relay it to a console on another host (which checks
/// it again: see the console's `transport::segment`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// Magic, version and lengths as expected. When false, everything else is zero.
    pub header_ok: bool,
    pub heartbeat: u64,
    /// `None` when the state word holds an unknown value (see `raw_state`).
    pub state: Option<ServiceState>,
    pub raw_state: u64,
    pub received: u64,
    pub ok: u64,
    pub error: u64,
    pub timeout: u64,
    pub in_flight: u64,
    pub events_published: u64,
    pub events_received: u64,
    pub latency_sum_us: u64,
    pub histogram: [u64; HIST_BUCKETS],
    /// What the service says waits inside it; `None` when it does not publish a backlog.
    pub backlog: Option<PublishedBacklog>,
    /// Slots in use.
    pub tasks: Vec<TaskRecord>,
    /// What looked wrong, for the operator.
    pub problems: Vec<String>,
}

/// A backlog as the service published it (words 18–20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishedBacklog {
    /// Items accepted and not yet finished.
    pub waiting: u64,
    /// When the oldest of them was accepted (Unix ms); `None` when none waits.
    pub oldest_accepted_unix_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskRecord {
    pub slot: usize,
    pub id: u64,
    pub label: String,
    pub done: u64,
    pub total: u64,
    pub state: TaskState,
    pub validity: Validity,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Validity {
    Valid,
    /// The writer kept changing it; the values are not a consistent record.
    Torn,
    /// Consistent but impossible (done > total, unknown state, over-long label).
    Absurd(String),
}

impl Snapshot {
    /// The upper bound (µs, exclusive) of the histogram bucket holding quantile `q` (0..=1):
    /// 0 for bucket 0, 2^i for bucket i. The last bucket has no upper bound; it reports 2^31,
    /// read as "at least 2^30 µs". `None` when nothing was recorded.
    pub fn latency_quantile_us(&self, q: f64) -> Option<u64> {
        let total: u64 = self
            .histogram
            .iter()
            .fold(0u64, |a, b| a.saturating_add(*b));
        if total == 0 {
            return None;
        }
        // NaN clamps to NaN and `max` drops it, so a NaN q asks for the smallest value; the
        // float round trip may overshoot `total`, hence the final `min`.
        let rank = (((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64).min(total);
        let mut seen = 0u64;
        for (bucket, count) in self.histogram.iter().enumerate() {
            seen = seen.saturating_add(*count);
            if seen >= rank {
                return Some(if bucket == 0 { 0 } else { 1u64 << bucket });
            }
        }
        None
    }
}

impl SegmentReader {
    /// Maps the segment read-only. The fd must be sealed against shrinking (as
    /// [`create_segment`](super::create_segment) makes it): otherwise the service could
    /// truncate the file and the next read here would die of SIGBUS.
    pub fn from_fd(fd: BorrowedFd<'_>) -> Result<SegmentReader, SegmentError> {
        let sealed =
            rustix::fs::fcntl_get_seals(fd).is_ok_and(|seals| seals.contains(SealFlags::SHRINK));
        if !sealed {
            return Err(SegmentError::Unsealed);
        }
        let size = rustix::fs::fstat(fd)?.st_size;
        if u64::try_from(size).unwrap_or(0) < SEGMENT_LEN as u64 {
            return Err(SegmentError::BadHeader(format!(
                "segment is {size} bytes, expected {SEGMENT_LEN}"
            )));
        }
        let file = File::from(fd.try_clone_to_owned()?);
        let map = MmapOptions::new()
            .len(SEGMENT_LEN)
            .map_raw_read_only(&file)?;
        let mapping = Mapping::shared(map)
            .ok_or_else(|| SegmentError::BadHeader("mapping too small or misaligned".into()))?;
        Ok(SegmentReader {
            mapping: Arc::new(mapping),
        })
    }

    pub(crate) fn from_mapping(mapping: Arc<Mapping>) -> SegmentReader {
        SegmentReader { mapping }
    }

    /// A reader over a private copy of `image`, cut or zero-padded to the segment's length: the
    /// same checks, on bytes no service wrote. For fuzzing and tests; a console maps an fd.
    #[doc(hidden)]
    pub fn from_image(image: &[u8]) -> std::io::Result<SegmentReader> {
        let mapping = Mapping::private()?;
        for (index, chunk) in image.chunks(8).take(SEGMENT_LEN / 8).enumerate() {
            let mut bytes = [0u8; 8];
            bytes[..chunk.len()].copy_from_slice(chunk);
            if let Some(word) = mapping.word(index) {
                word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
            }
        }
        Ok(SegmentReader::from_mapping(Arc::new(mapping)))
    }

    fn load(&self, index: usize) -> u64 {
        self.mapping.load(index)
    }

    /// Only the heartbeat counter (`None` under a wrong header): what the console's hang check
    /// reads many times a second per service, without copying out, and allocating for, the rest.
    pub fn heartbeat(&self) -> Option<u64> {
        HEADER
            .iter()
            .enumerate()
            .all(|(index, expected)| self.load(index) == *expected)
            .then(|| self.load(word::HEARTBEAT))
    }

    /// Only the published backlog (`None` under a wrong header, or when the service publishes
    /// none): what the router reads per request for admission control, without a snapshot.
    pub fn backlog(&self) -> Option<PublishedBacklog> {
        let header_ok = HEADER
            .iter()
            .enumerate()
            .all(|(index, expected)| self.load(index) == *expected);
        header_ok.then(|| self.read_backlog(&mut Vec::new()))?
    }

    /// Copies everything out. Never fails: problems are reported inside the snapshot.
    pub fn read(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for (index, expected) in HEADER.iter().enumerate() {
            let found = self.load(index);
            if found != *expected {
                snapshot.problems.push(format!(
                    "header word {index} is {found:#x}, expected {expected:#x}"
                ));
                return snapshot;
            }
        }
        snapshot.header_ok = true;
        snapshot.heartbeat = self.load(word::HEARTBEAT);
        snapshot.raw_state = self.load(word::STATE);
        snapshot.state = ServiceState::from_word(snapshot.raw_state);
        if snapshot.state.is_none() {
            snapshot
                .problems
                .push(format!("unknown state {}", snapshot.raw_state));
        }
        snapshot.received = self.load(word::RECEIVED);
        snapshot.ok = self.load(word::OK);
        snapshot.error = self.load(word::ERROR);
        snapshot.timeout = self.load(word::TIMEOUT);
        snapshot.in_flight = self.load(word::IN_FLIGHT);
        if snapshot.in_flight > i64::MAX as u64 {
            // The writer decrements with a wrapping add: more finished than started.
            snapshot.problems.push(format!(
                "in_flight is negative ({})",
                snapshot.in_flight as i64
            ));
        }
        snapshot.events_published = self.load(word::EVENTS_PUBLISHED);
        snapshot.events_received = self.load(word::EVENTS_RECEIVED);
        snapshot.latency_sum_us = self.load(word::LATENCY_SUM_US);
        for (bucket, count) in snapshot.histogram.iter_mut().enumerate() {
            *count = self.load(word::HISTOGRAM + bucket);
        }
        snapshot.backlog = self.read_backlog(&mut snapshot.problems);
        for index in 0..TASK_SLOTS {
            if let Some(record) = self.read_slot(index) {
                match &record.validity {
                    Validity::Valid => {}
                    Validity::Torn => snapshot.problems.push(format!("slot {index}: torn")),
                    Validity::Absurd(why) => {
                        snapshot.problems.push(format!("slot {index}: {why}"));
                    }
                }
                snapshot.tasks.push(record);
            }
        }
        snapshot
    }

    /// Words 18–20. Any non-zero `BACKLOG_PUBLISHED` counts as published (a service writing 2
    /// meant yes); the age is the console's business, so a time in the future is kept as it
    /// is and the console's clock judges it.
    fn read_backlog(&self, problems: &mut Vec<String>) -> Option<PublishedBacklog> {
        if self.load(word::BACKLOG_PUBLISHED) == 0 {
            return None;
        }
        let waiting = self.load(word::BACKLOG);
        if waiting > i64::MAX as u64 {
            problems.push(format!("backlog is absurd ({waiting})"));
        }
        let oldest = self.load(word::OLDEST_ACCEPTED_UNIX_MS);
        Some(PublishedBacklog {
            waiting,
            oldest_accepted_unix_ms: (oldest != 0 && waiting != 0).then_some(oldest),
        })
    }

    /// One slot, or `None` when it is free.
    fn read_slot(&self, index: usize) -> Option<TaskRecord> {
        let base = (SLOT_OFFSET + index * SLOT_LEN) / 8;
        let seq = self.mapping.word(base + slot::SEQ)?;
        let mut last = None;
        for _ in 0..SEQLOCK_TRIES {
            let before = seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut words = [0u64; SLOT_LEN / 8];
            for (i, value) in words.iter_mut().enumerate() {
                *value = self.load(base + i);
            }
            fence(Ordering::Acquire);
            let after = seq.load(Ordering::Relaxed);
            last = Some(words);
            if before == after {
                return judge(index, &words, Validity::Valid);
            }
        }
        // Never caught it still: report what was seen last, marked torn.
        let words = last.unwrap_or_else(|| {
            let mut words = [0u64; SLOT_LEN / 8];
            for (i, value) in words.iter_mut().enumerate() {
                *value = self.load(base + i);
            }
            words
        });
        let mut record = judge(index, &words, Validity::Torn)?;
        record.validity = Validity::Torn;
        Some(record)
    }
}

/// Turns a copy of a slot's words into a record, checking every field. `None` for a free slot.
fn judge(index: usize, words: &[u64; SLOT_LEN / 8], validity: Validity) -> Option<TaskRecord> {
    let raw_state = words[slot::STATE];
    let id = words[slot::ID];
    if raw_state == TaskState::Free.word() && id == 0 {
        return None;
    }
    let done = words[slot::DONE];
    let total = words[slot::TOTAL];
    let label_len = words[slot::LABEL_LEN];
    let mut bytes = [0u8; LABEL_MAX];
    for (i, chunk) in bytes.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&words[slot::LABEL + i].to_le_bytes());
    }
    let used = usize::try_from(label_len)
        .unwrap_or(usize::MAX)
        .min(LABEL_MAX);
    let (label, label_problem) = decode_label(&bytes[..used]);
    let state = TaskState::from_word(raw_state);
    let mut problems = Vec::new();
    match state {
        None => problems.push(format!("unknown task state {raw_state}")),
        Some(TaskState::Free) => problems.push(format!("free slot with task id {id}")),
        Some(_) if id == 0 => problems.push("task in use with id 0".to_string()),
        Some(_) => {}
    }
    if total != 0 && done > total {
        problems.push(format!("done {done} > total {total}"));
    }
    if label_len > LABEL_MAX as u64 {
        problems.push(format!("label length {label_len} > {LABEL_MAX}"));
    }
    problems.extend(label_problem);
    let validity = if validity == Validity::Valid && !problems.is_empty() {
        Validity::Absurd(problems.join(", "))
    } else {
        validity
    };
    Some(TaskRecord {
        slot: index,
        id,
        label,
        done,
        total,
        // TaskRecord has no "unknown" state; the record is marked Absurd, and Failed is the
        // least misleading thing to show for it.
        state: state.unwrap_or(TaskState::Failed),
        validity,
    })
}

/// The label as text the console can show. Invalid UTF-8 is decoded lossily (and reported).
/// Control characters become `?`, so a service cannot send escape sequences to the operator's
/// terminal through its task label; a one-byte stand-in keeps a valid label within 64 bytes.
fn decode_label(bytes: &[u8]) -> (String, Option<String>) {
    let (text, problem) = match std::str::from_utf8(bytes) {
        Ok(text) => (std::borrow::Cow::Borrowed(text), None),
        Err(_) => (
            String::from_utf8_lossy(bytes),
            Some("label is not UTF-8".to_string()),
        ),
    };
    let label = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    (label, problem)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::segment::writer::SegmentWriter;

    fn scribble(writer: &SegmentWriter, index: usize, value: u64) {
        // Tests reach into the memory the way a buggy service would.
        let reader = writer.reader();
        if let Some(word) = reader.mapping.word(index) {
            word.store(value, Ordering::Relaxed);
        }
    }

    #[test]
    fn absurd_values_are_flagged_not_trusted() {
        let writer = Arc::new(SegmentWriter::anonymous().unwrap());
        let task = writer.task("import", 10).unwrap();
        task.set(50, 10);
        let snapshot = writer.reader().read();
        assert!(matches!(snapshot.tasks[0].validity, Validity::Absurd(_)));
        assert!(snapshot.problems[0].contains("done 50 > total 10"));

        let base = SLOT_OFFSET / 8;
        scribble(&writer, base + slot::STATE, 99);
        scribble(&writer, base + slot::LABEL_LEN, 1_000_000);
        scribble(&writer, base + slot::LABEL, u64::MAX); // invalid UTF-8
        scribble(&writer, word::STATE, 7);
        let snapshot = writer.reader().read();
        let record = &snapshot.tasks[0];
        assert!(
            matches!(&record.validity, Validity::Absurd(why) if why.contains("unknown task state"))
        );
        assert!(
            record.label.len() <= LABEL_MAX * 3,
            "lossy label stays bounded"
        );
        assert_eq!(snapshot.state, None);
        assert_eq!(snapshot.raw_state, 7);
    }

    #[test]
    fn bad_utf8_and_control_characters_in_labels() {
        let writer = Arc::new(SegmentWriter::anonymous().unwrap());
        let task = writer.task("ok", 0).unwrap();
        let base = SLOT_OFFSET / 8;
        // "a", 0xff, "b", ESC, "[2J!" : invalid UTF-8 plus a terminal escape.
        scribble(
            &writer,
            base + slot::LABEL,
            u64::from_le_bytes(*b"a\xffb\x1b[2J!"),
        );
        scribble(&writer, base + slot::LABEL_LEN, 8);
        let record = writer.reader().read().tasks[0].clone();
        assert_eq!(record.label, "a\u{fffd}b?[2J!");
        assert!(matches!(&record.validity, Validity::Absurd(why) if why.contains("not UTF-8")));

        task.set_label("tab\there");
        let record = writer.reader().read().tasks[0].clone();
        assert_eq!(record.label, "tab?here");
        assert_eq!(record.validity, Validity::Valid);
    }

    #[test]
    fn ids_and_states_must_agree() {
        let writer = Arc::new(SegmentWriter::anonymous().unwrap());
        let _task = writer.task("x", 0).unwrap();
        let base = SLOT_OFFSET / 8;
        scribble(&writer, base + slot::ID, 0);
        let snapshot = writer.reader().read();
        assert!(
            matches!(&snapshot.tasks[0].validity, Validity::Absurd(why) if why.contains("id 0"))
        );
        scribble(&writer, base + slot::ID, 9);
        scribble(&writer, base + slot::STATE, 0);
        let snapshot = writer.reader().read();
        assert!(
            matches!(&snapshot.tasks[0].validity, Validity::Absurd(why) if why.contains("free slot"))
        );
    }

    #[test]
    fn an_unpaired_finish_is_reported() {
        let writer = SegmentWriter::anonymous().unwrap();
        writer.request_finished(crate::segment::Outcome::Error, std::time::Duration::ZERO);
        let snapshot = writer.reader().read();
        assert_eq!(snapshot.in_flight, u64::MAX);
        assert!(
            snapshot
                .problems
                .iter()
                .any(|p| p.contains("in_flight is negative (-1)"))
        );
        assert_eq!(snapshot.error, 1);
        assert_eq!(snapshot.histogram[0], 1);
    }

    #[test]
    fn an_unsealed_file_is_refused() {
        let fd = rustix::fs::memfd_create("loose", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, SEGMENT_LEN as u64).unwrap();
        assert!(matches!(
            SegmentReader::from_fd(std::os::fd::AsFd::as_fd(&fd)),
            Err(SegmentError::Unsealed)
        ));
    }

    #[test]
    fn quantiles_of_an_empty_or_odd_histogram() {
        let mut snapshot = Snapshot::default();
        assert_eq!(snapshot.latency_quantile_us(0.5), None);
        snapshot.histogram[0] = 1;
        snapshot.histogram[31] = u64::MAX; // saturates, never overflows
        assert_eq!(snapshot.latency_quantile_us(0.0), Some(0));
        assert_eq!(snapshot.latency_quantile_us(f64::NAN), Some(0));
        assert_eq!(snapshot.latency_quantile_us(0.99), Some(1 << 31));
        assert_eq!(snapshot.latency_quantile_us(7.0), Some(1 << 31));
    }

    #[test]
    fn a_slot_stuck_mid_write_is_torn() {
        let writer = Arc::new(SegmentWriter::anonymous().unwrap());
        let _task = writer.task("import", 10).unwrap();
        scribble(&writer, SLOT_OFFSET / 8 + slot::SEQ, 7); // odd forever
        let snapshot = writer.reader().read();
        assert_eq!(snapshot.tasks[0].validity, Validity::Torn);
    }

    #[test]
    fn a_bad_header_hides_everything() {
        let writer = SegmentWriter::anonymous().unwrap();
        writer.heartbeat();
        scribble(&writer, 0, 0xdead);
        let snapshot = writer.reader().read();
        assert!(!snapshot.header_ok);
        assert_eq!(snapshot.heartbeat, 0);
        assert!(snapshot.tasks.is_empty());
    }
}
