//! The service side of the segment: counters with single atomic adds, the heartbeat, and task
//! slots published under a seqlock.

use std::{
    collections::VecDeque,
    fs::File,
    os::fd::{FromRawFd, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering, fence},
    },
    time::Duration,
};

use memmap2::MmapOptions;

use super::{
    SEGMENT_FD_ENV, SegmentError,
    layout::{
        HEADER, HIST_BUCKETS, LABEL_MAX, Outcome, SEGMENT_LEN, SLOT_LEN, SLOT_OFFSET, ServiceState,
        TASK_SLOTS, TaskState, latency_bucket, slot, word,
    },
    memory::Mapping,
    reader::SegmentReader,
};

/// Which slots this process holds, and which finished ones may be reused (oldest first).
struct Slots {
    claimed: [bool; TASK_SLOTS],
    finished: VecDeque<usize>,
}

pub struct SegmentWriter {
    mapping: Arc<Mapping>,
    slots: Mutex<Slots>,
    next_task: AtomicU64,
}

impl SegmentWriter {
    /// The segment the console handed over, if `SWITCHBOARD_SEGMENT_FD` is set.
    pub fn from_env() -> Result<Option<SegmentWriter>, SegmentError> {
        let Ok(text) = std::env::var(SEGMENT_FD_ENV) else {
            return Ok(None);
        };
        let fd: i32 = text
            .trim()
            .parse()
            .map_err(|_| SegmentError::BadEnv(format!("`{text}` is not a file descriptor")))?;
        if fd < 0 {
            return Err(SegmentError::BadEnv(format!("`{text}` is negative")));
        }
        // SAFETY: fcntl(F_GETFD) on an arbitrary number only reports whether it is open.
        if unsafe { libc_getfd(fd) } < 0 {
            return Err(SegmentError::BadEnv(format!("fd {fd} is not open")));
        }
        // SAFETY: the console passed this fd to us for exactly this purpose, nothing else in
        // the process owns it, and it was just checked to be open.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Self::from_fd(owned).map(Some)
    }

    /// Maps a segment created by the console; refuses one whose header is not the expected
    /// layout.
    pub fn from_fd(fd: OwnedFd) -> Result<SegmentWriter, SegmentError> {
        let file = File::from(fd);
        let map = MmapOptions::new().len(SEGMENT_LEN).map_raw(&file)?;
        let mapping = Mapping::shared(map)
            .ok_or_else(|| SegmentError::BadHeader("mapping too small or misaligned".into()))?;
        for (index, expected) in HEADER.iter().enumerate() {
            let found = mapping.word(index).map(|w| w.load(Ordering::Acquire));
            if found != Some(*expected) {
                return Err(SegmentError::BadHeader(format!(
                    "header word {index} is {found:?}, expected {expected}"
                )));
            }
        }
        Ok(Self::new(mapping))
    }

    /// Private memory with a valid header: for tests, and for a service run by hand.
    pub fn anonymous() -> Result<SegmentWriter, SegmentError> {
        let mapping = Mapping::private()?;
        for (index, value) in HEADER.iter().enumerate() {
            if let Some(word) = mapping.word(index) {
                word.store(*value, Ordering::Release);
            }
        }
        Ok(Self::new(mapping))
    }

    fn new(mapping: Mapping) -> SegmentWriter {
        SegmentWriter {
            mapping: Arc::new(mapping),
            slots: Mutex::new(Slots {
                claimed: [false; TASK_SLOTS],
                finished: VecDeque::new(),
            }),
            next_task: AtomicU64::new(1),
        }
    }

    fn add(&self, index: usize, by: u64) {
        if let Some(word) = self.mapping.word(index) {
            word.fetch_add(by, Ordering::Relaxed);
        }
    }

    fn store(&self, index: usize, value: u64) {
        if let Some(word) = self.mapping.word(index) {
            word.store(value, Ordering::Relaxed);
        }
    }

    pub fn heartbeat(&self) {
        self.add(word::HEARTBEAT, 1);
    }

    pub fn set_state(&self, state: ServiceState) {
        self.store(word::STATE, state as u64);
    }

    pub fn request_started(&self) {
        self.add(word::RECEIVED, 1);
        self.add(word::IN_FLIGHT, 1);
    }

    pub fn request_finished(&self, outcome: Outcome, latency: Duration) {
        let counter = match outcome {
            Outcome::Ok => word::OK,
            Outcome::Error => word::ERROR,
            Outcome::Timeout => word::TIMEOUT,
        };
        self.add(counter, 1);
        if let Some(in_flight) = self.mapping.word(word::IN_FLIGHT) {
            in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.add(
            word::HISTOGRAM + latency_bucket(us).min(HIST_BUCKETS - 1),
            1,
        );
        self.add(word::LATENCY_SUM_US, us);
    }

    pub fn event_published(&self) {
        self.add(word::EVENTS_PUBLISHED, 1);
    }

    pub fn event_received(&self) {
        self.add(word::EVENTS_RECEIVED, 1);
    }

    /// Claims a task slot: a free one, else the oldest finished one. `None` when all 16 are
    /// running.
    pub fn task(self: &Arc<Self>, label: &str, total: u64) -> Option<TaskSlot> {
        let index = {
            let mut slots = self
                .slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let free = (0..TASK_SLOTS).find(|&i| {
                !slots.claimed[i]
                    && !slots.finished.contains(&i)
                    && self
                        .slot_word(i, slot::STATE)
                        .map(|w| w.load(Ordering::Relaxed))
                        == Some(TaskState::Free.word())
            });
            let index = match free {
                Some(index) => index,
                None => slots.finished.pop_front()?,
            };
            slots.claimed[index] = true;
            index
        };
        let id = self.next_task.fetch_add(1, Ordering::Relaxed);
        let slot = TaskSlot {
            writer: self.clone(),
            index,
            id,
            done: AtomicU64::new(0),
            total: AtomicU64::new(total),
            finished: false,
        };
        slot.publish(|| {
            slot.put(slot::ID, id);
            slot.put(slot::STATE, TaskState::Running.word());
            slot.put(slot::DONE, 0);
            slot.put(slot::TOTAL, total);
            slot.put_label(label);
        });
        Some(slot)
    }

    /// A reader over the same memory (for in-process tests).
    pub fn reader(&self) -> SegmentReader {
        SegmentReader::from_mapping(self.mapping.clone())
    }

    fn slot_word(&self, index: usize, field: usize) -> Option<&AtomicU64> {
        self.mapping
            .word((SLOT_OFFSET + index * SLOT_LEN) / 8 + field)
    }

    fn release(&self, index: usize) {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.claimed[index] = false;
        slots.finished.push_back(index);
    }
}

/// F_GETFD through rustix would need a BorrowedFd, which asserts validity; this asks the kernel.
///
/// # Safety
/// None beyond passing an integer to fcntl.
unsafe fn libc_getfd(fd: i32) -> i32 {
    // SAFETY: BorrowedFd::borrow_raw requires the fd to stay open for the borrow; fcntl only
    // reads its flags and reports EBADF if it is not open, so no invariant is relied upon.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    match rustix::io::fcntl_getfd(borrowed) {
        Ok(_) => 0,
        Err(_) => -1,
    }
}

/// A claimed task slot; its owner is the only writer of it.
pub struct TaskSlot {
    writer: Arc<SegmentWriter>,
    index: usize,
    id: u64,
    done: AtomicU64,
    total: AtomicU64,
    finished: bool,
}

impl TaskSlot {
    pub fn id(&self) -> u64 {
        self.id
    }

    fn put(&self, field: usize, value: u64) {
        if let Some(word) = self.writer.slot_word(self.index, field) {
            word.store(value, Ordering::Relaxed);
        }
    }

    fn put_label(&self, label: &str) {
        let mut end = label.len().min(LABEL_MAX);
        while !label.is_char_boundary(end) {
            end -= 1;
        }
        let bytes = &label.as_bytes()[..end];
        let mut padded = [0u8; LABEL_MAX];
        padded[..bytes.len()].copy_from_slice(bytes);
        for (i, chunk) in padded.chunks_exact(8).enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.put(slot::LABEL + i, u64::from_le_bytes(word));
        }
        self.put(slot::LABEL_LEN, bytes.len() as u64);
    }

    /// Runs `write` as one seqlock-protected update: readers never accept a half-written record.
    fn publish(&self, write: impl FnOnce()) {
        let Some(seq) = self.writer.slot_word(self.index, slot::SEQ) else {
            return;
        };
        // Even it out first, in case the word was scribbled over.
        let start = seq.load(Ordering::Relaxed) & !1;
        seq.store(start.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        write();
        seq.store(start.wrapping_add(2), Ordering::Release);
    }

    /// Publishes `done` out of `total` units.
    pub fn set(&self, done: u64, total: u64) {
        self.done.store(done, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        self.publish(|| {
            self.put(slot::DONE, done);
            self.put(slot::TOTAL, total);
        });
    }

    pub fn advance(&self, by: u64) {
        let done = self
            .done
            .fetch_add(by, Ordering::Relaxed)
            .saturating_add(by);
        let total = self.total.load(Ordering::Relaxed);
        self.set(done, total);
    }

    pub fn set_label(&self, label: &str) {
        self.publish(|| self.put_label(label));
    }

    /// Ends the task; its record stays readable until the slot is reused.
    pub fn finish(mut self, state: TaskState) {
        self.end(state);
    }

    fn end(&mut self, state: TaskState) {
        if self.finished {
            return;
        }
        self.finished = true;
        let state = if state == TaskState::Free || state == TaskState::Running {
            TaskState::Done
        } else {
            state
        };
        self.publish(|| self.put(slot::STATE, state.word()));
        self.writer.release(self.index);
    }
}

impl Drop for TaskSlot {
    fn drop(&mut self) {
        self.end(TaskState::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{Validity, memfd::create_segment};

    #[test]
    fn counters_histogram_and_quantiles() {
        let writer = SegmentWriter::anonymous().unwrap();
        writer.heartbeat();
        writer.heartbeat();
        for us in [3, 5, 5, 900] {
            writer.request_started();
            writer.request_finished(Outcome::Ok, Duration::from_micros(us));
        }
        writer.request_started();
        writer.request_finished(Outcome::Timeout, Duration::from_millis(10));
        writer.request_started();
        let snapshot = writer.reader().read();
        assert!(snapshot.header_ok);
        assert_eq!(snapshot.heartbeat, 2);
        assert_eq!(
            (snapshot.received, snapshot.ok, snapshot.timeout),
            (6, 4, 1)
        );
        assert_eq!(snapshot.in_flight, 1);
        assert_eq!(snapshot.latency_sum_us, 3 + 5 + 5 + 900 + 10_000);
        assert_eq!(snapshot.histogram[2], 1);
        assert_eq!(snapshot.histogram[3], 2);
        assert_eq!(snapshot.latency_quantile_us(0.5), Some(8));
        assert_eq!(snapshot.latency_quantile_us(1.0), Some(16384));
    }

    #[test]
    fn slots_are_claimed_reused_and_cancelled_on_drop() {
        let writer = Arc::new(SegmentWriter::anonymous().unwrap());
        let slots: Vec<TaskSlot> = (0..TASK_SLOTS)
            .map(|i| writer.task(&format!("t{i}"), 10).unwrap())
            .collect();
        assert!(writer.task("one too many", 1).is_none());
        let mut slots = slots.into_iter();
        let first = slots.next().unwrap();
        first.set(4, 10);
        first.finish(TaskState::Done);
        let second = slots.next().unwrap();
        drop(second);
        let snapshot = writer.reader().read();
        let find = |label: &str| snapshot.tasks.iter().find(|t| t.label == label).cloned();
        assert_eq!(find("t0").unwrap().state, TaskState::Done);
        assert_eq!(find("t0").unwrap().done, 4);
        assert_eq!(find("t1").unwrap().state, TaskState::Cancelled);
        // The oldest finished slot is reused first.
        let reused = writer.task("again", 3).unwrap();
        let snapshot = writer.reader().read();
        assert!(snapshot.tasks.iter().all(|t| t.label != "t0"));
        assert!(
            snapshot
                .tasks
                .iter()
                .any(|t| t.label == "again" && t.id == reused.id())
        );
        assert!(snapshot.tasks.iter().all(|t| t.validity == Validity::Valid));
    }

    #[test]
    fn labels_are_cut_at_a_character_boundary() {
        let writer = Arc::new(SegmentWriter::anonymous().unwrap());
        let label = "é".repeat(40); // 80 bytes
        let slot = writer.task(&label, 0).unwrap();
        let snapshot = writer.reader().read();
        assert_eq!(snapshot.tasks[0].label, "é".repeat(32));
        slot.set_label("stage 2");
        assert_eq!(writer.reader().read().tasks[0].label, "stage 2");
    }

    #[test]
    fn the_console_segment_round_trips_and_bad_headers_are_refused() {
        let (fd, reader) = create_segment("svc").unwrap();
        let dup = fd.try_clone().unwrap();
        let writer = Arc::new(SegmentWriter::from_fd(dup).unwrap());
        writer.heartbeat();
        let task = writer.task("import", 100).unwrap();
        task.set(40, 100);
        let snapshot = reader.read();
        assert_eq!(snapshot.heartbeat, 1);
        assert_eq!((snapshot.tasks[0].done, snapshot.tasks[0].total), (40, 100));

        let file = tempfile_segment();
        assert!(matches!(
            SegmentWriter::from_fd(file),
            Err(SegmentError::BadHeader(_))
        ));
    }

    fn tempfile_segment() -> OwnedFd {
        let fd = rustix::fs::memfd_create("blank", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, SEGMENT_LEN as u64).unwrap();
        fd
    }
}
