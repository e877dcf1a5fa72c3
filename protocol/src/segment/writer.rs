//! The service side of the segment: counters with single relaxed atomic adds, the heartbeat,
//! and task slots published under a seqlock.
//!
//! The writer reads the shared memory only when it opens it (the header, and which slots are
//! in use); after that it keeps its own books about slots, so nothing in the memory, however
//! scribbled, can make it panic or loop.

use std::{
    collections::VecDeque,
    fs::File,
    os::fd::{BorrowedFd, FromRawFd, OwnedFd},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering, fence},
    },
    time::Duration,
};

use memmap2::MmapOptions;

use super::{
    SEGMENT_FD_ENV, SegmentError,
    layout::{
        HEADER, LABEL_MAX, Outcome, SEGMENT_LEN, SLOT_LEN, SLOT_OFFSET, ServiceState, TASK_SLOTS,
        TaskState, latency_bucket, slot, word,
    },
    memory::Mapping,
    reader::SegmentReader,
};

/// Set once the inherited fd has been taken: a second `OwnedFd` for it would close it twice.
static FD_TAKEN: AtomicBool = AtomicBool::new(false);

/// This process's books on the slots.
struct Slots {
    /// Slots nobody has used (or that were empty when the segment was opened).
    free: [bool; TASK_SLOTS],
    /// Slots whose task ended, oldest first: reused only when no free slot remains, so a
    /// finished task stays visible to the console as long as possible.
    finished: VecDeque<usize>,
}

/// The service's handle on its segment. `Send + Sync`; share it behind an `Arc`.
pub struct SegmentWriter {
    mapping: Arc<Mapping>,
    slots: Mutex<Slots>,
    next_task: AtomicU64,
}

impl SegmentWriter {
    /// The segment the console handed over, if `SWITCHBOARD_SEGMENT_FD` is set; `None` if it
    /// is not. Takes ownership of that fd, so it can only succeed once per process.
    pub fn from_env() -> Result<Option<SegmentWriter>, SegmentError> {
        let Some(text) = std::env::var_os(SEGMENT_FD_ENV) else {
            return Ok(None);
        };
        let text = text.to_string_lossy();
        let fd: i32 = text
            .trim()
            .parse()
            .map_err(|_| SegmentError::BadEnv(format!("`{text}` is not a file descriptor")))?;
        // 0..=2 are stdio: owning one would close the protocol pipe when the writer drops.
        if fd <= 2 {
            return Err(SegmentError::BadEnv(format!(
                "`{text}` is not a usable descriptor"
            )));
        }
        // SAFETY: the borrow lives only for this call; fcntl(F_GETFD) merely reports whether
        // the number is open (EBADF otherwise) and touches nothing.
        let open = rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(fd) }).is_ok();
        if !open {
            return Err(SegmentError::BadEnv(format!("fd {fd} is not open")));
        }
        if FD_TAKEN.swap(true, Ordering::AcqRel) {
            return Err(SegmentError::BadEnv(format!(
                "fd {fd} was already taken by another writer"
            )));
        }
        // SAFETY: the console passed this fd for exactly this purpose, it is open, and the
        // flag above makes this the only place in the process that takes ownership of it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // Programs this service starts must not inherit the segment: they would share our
        // slots. (They still inherit the variable; the header check refuses whatever fd they
        // have under that number, unless it is a segment too.)
        rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC)?;
        Self::from_fd(owned).map(Some)
    }

    /// Maps a segment created by the console read-write, shared; refuses one whose header is
    /// not the expected layout.
    pub fn from_fd(fd: OwnedFd) -> Result<SegmentWriter, SegmentError> {
        // Touching a page wholly past the end of the file is SIGBUS, so check the size first.
        let size = rustix::fs::fstat(&fd)?.st_size;
        if u64::try_from(size).unwrap_or(0) < SEGMENT_LEN as u64 {
            return Err(SegmentError::BadHeader(format!(
                "segment is {size} bytes, expected {SEGMENT_LEN}"
            )));
        }
        let file = File::from(fd);
        let map = MmapOptions::new().len(SEGMENT_LEN).map_raw(&file)?;
        let mapping = Mapping::shared(map)
            .ok_or_else(|| SegmentError::BadHeader("mapping too small or misaligned".into()))?;
        for (index, expected) in HEADER.iter().enumerate() {
            let found = mapping.word(index).map(|w| w.load(Ordering::Acquire));
            if found != Some(*expected) {
                return Err(SegmentError::BadHeader(format!(
                    "header word {index} is {found:#x?}, expected {expected:#x}"
                )));
            }
        }
        Ok(Self::new(mapping))
    }

    /// Private anonymous memory with a valid header: for tests, and for a service run by hand.
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
        // A slot already in use when the segment is opened belongs to nobody here (a reused
        // segment, or scribbles): it is reusable like a finished one, after the empty ones.
        let mut free = [false; TASK_SLOTS];
        let mut finished = VecDeque::new();
        for (index, is_free) in free.iter_mut().enumerate() {
            let base = slot_base(index);
            if mapping.load(base + slot::ID) == 0 && mapping.load(base + slot::STATE) == 0 {
                *is_free = true;
            } else {
                finished.push_back(index);
            }
        }
        SegmentWriter {
            mapping: Arc::new(mapping),
            slots: Mutex::new(Slots { free, finished }),
            next_task: AtomicU64::new(1),
        }
    }

    // Counters are single relaxed read-modify-writes: each is exact on its own, and the console
    // reads them as independent values, so no ordering between them is promised or needed.
    fn add(&self, index: usize, by: u64) {
        if let Some(word) = self.mapping.word(index) {
            word.fetch_add(by, Ordering::Relaxed);
        }
    }

    /// heartbeat += 1. The console judges liveness by this number changing on its own clock.
    pub fn heartbeat(&self) {
        self.add(word::HEARTBEAT, 1);
    }

    pub fn set_state(&self, state: ServiceState) {
        if let Some(word) = self.mapping.word(word::STATE) {
            word.store(state as u64, Ordering::Relaxed);
        }
    }

    /// received += 1, in_flight += 1.
    pub fn request_started(&self) {
        self.add(word::RECEIVED, 1);
        self.add(word::IN_FLIGHT, 1);
    }

    /// ok, error or timeout += 1, in_flight -= 1, and the latency into the histogram and sum.
    pub fn request_finished(&self, outcome: Outcome, latency: Duration) {
        let counter = match outcome {
            Outcome::Ok => word::OK,
            Outcome::Error => word::ERROR,
            Outcome::Timeout => word::TIMEOUT,
        };
        self.add(counter, 1);
        // Wrapping subtraction: an unpaired call shows up to the console as an absurd gauge
        // rather than costing every call a compare-exchange loop.
        self.add(word::IN_FLIGHT, u64::MAX);
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.add(word::HISTOGRAM + latency_bucket(us), 1);
        self.add(word::LATENCY_SUM_US, us);
    }

    pub fn event_published(&self) {
        self.add(word::EVENTS_PUBLISHED, 1);
    }

    pub fn event_received(&self) {
        self.add(word::EVENTS_RECEIVED, 1);
    }

    /// Publishes the service's own backlog: `waiting` items accepted and not yet finished, the
    /// oldest accepted at `oldest_accepted_unix_ms` (0 when none waits). Marks the backlog as
    /// published, so the console stops deriving one from what it sees of the service.
    ///
    /// Three independent relaxed stores: a reader may pair a new count with the previous
    /// oldest time for one read. Both are gauges sampled about once a second, and the next
    /// read is consistent again, so a seqlock would cost every publish for nothing.
    pub fn set_backlog(&self, waiting: u64, oldest_accepted_unix_ms: u64) {
        let oldest = if waiting == 0 {
            0
        } else {
            oldest_accepted_unix_ms
        };
        for (index, value) in [
            (word::BACKLOG, waiting),
            (word::OLDEST_ACCEPTED_UNIX_MS, oldest),
            (word::BACKLOG_PUBLISHED, 1),
        ] {
            if let Some(word) = self.mapping.word(index) {
                word.store(value, Ordering::Relaxed);
            }
        }
    }

    /// Claims a task slot: a free one, else the oldest finished one; `None` when all 16 are
    /// running. The label is cut at a character boundary to at most 64 bytes.
    pub fn task(self: &Arc<Self>, label: &str, total: u64) -> Option<TaskSlot> {
        let index = {
            let mut slots = self.lock_slots();
            match slots.free.iter().position(|free| *free) {
                Some(index) => {
                    slots.free[index] = false;
                    index
                }
                None => slots.finished.pop_front()?,
            }
        };
        // Ids are unique within this writer, so the console can tell a reused slot's new task
        // from the old one.
        let id = self.next_task.fetch_add(1, Ordering::Relaxed).max(1);
        let slot = TaskSlot {
            writer: Arc::clone(self),
            index,
            id,
            progress: Mutex::new(Progress { done: 0, total }),
            finished: false,
        };
        {
            let _progress = slot.lock();
            slot.publish(|| {
                slot.put(slot::ID, id);
                slot.put(slot::STATE, TaskState::Running.word());
                slot.put(slot::DONE, 0);
                slot.put(slot::TOTAL, total);
                slot.put_label(label);
            });
        }
        Some(slot)
    }

    /// A reader over the same memory (for in-process tests).
    pub fn reader(&self) -> SegmentReader {
        SegmentReader::from_mapping(Arc::clone(&self.mapping))
    }

    fn lock_slots(&self) -> MutexGuard<'_, Slots> {
        // The books are consistent after every statement, so a panic elsewhere while holding
        // the lock leaves nothing to repair.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn release(&self, index: usize) {
        self.lock_slots().finished.push_back(index);
    }
}

/// The word index where slot `index` starts.
fn slot_base(index: usize) -> usize {
    (SLOT_OFFSET + index * SLOT_LEN) / 8
}

/// What the slot last published, so `advance` can add to it.
struct Progress {
    done: u64,
    total: u64,
}

/// A claimed task slot. `set` publishes (done, total) under the seqlock; `finish` ends it.
/// Dropping it unfinished marks it Cancelled. `Send + Sync`: updates from several threads are
/// serialised, because the seqlock allows only one writer at a time.
pub struct TaskSlot {
    writer: Arc<SegmentWriter>,
    index: usize,
    id: u64,
    // Held across every publish: it is what makes this slot single-writer.
    progress: Mutex<Progress>,
    finished: bool,
}

impl TaskSlot {
    pub fn id(&self) -> u64 {
        self.id
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn put(&self, field: usize, value: u64) {
        if let Some(word) = self.writer.mapping.word(slot_base(self.index) + field) {
            word.store(value, Ordering::Relaxed);
        }
    }

    fn put_label(&self, label: &str) {
        let mut end = label.len().min(LABEL_MAX);
        while !label.is_char_boundary(end) {
            end -= 1;
        }
        let mut padded = [0u8; LABEL_MAX];
        padded[..end].copy_from_slice(&label.as_bytes()[..end]);
        for (i, chunk) in padded.chunks_exact(8).enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.put(slot::LABEL + i, u64::from_le_bytes(word));
        }
        self.put(slot::LABEL_LEN, end as u64);
    }

    /// Runs `write` as one seqlock-protected update, so a reader never accepts a half-written
    /// record. The caller holds `progress`, which makes this the slot's only writer.
    fn publish(&self, write: impl FnOnce()) {
        let Some(seq) = self.writer.mapping.word(slot_base(self.index) + slot::SEQ) else {
            return;
        };
        // Even it out first, in case the word was scribbled over: an odd start would leave
        // the slot looking mid-write forever.
        let start = seq.load(Ordering::Relaxed) & !1;
        seq.store(start.wrapping_add(1), Ordering::Relaxed);
        // Orders the odd sequence before the field stores, as seen by the reader's fence.
        fence(Ordering::Release);
        write();
        seq.store(start.wrapping_add(2), Ordering::Release);
    }

    /// Publishes `done` out of `total` units (total 0: unknown).
    pub fn set(&self, done: u64, total: u64) {
        let mut progress = self.lock();
        progress.done = done;
        progress.total = total;
        self.publish(|| {
            self.put(slot::DONE, done);
            self.put(slot::TOTAL, total);
        });
    }

    /// done += by (saturating), total unchanged.
    pub fn advance(&self, by: u64) {
        let mut progress = self.lock();
        progress.done = progress.done.saturating_add(by);
        let done = progress.done;
        self.publish(|| self.put(slot::DONE, done));
    }

    /// Replaces the label (cut at a character boundary to at most 64 bytes).
    pub fn set_label(&self, label: &str) {
        let _progress = self.lock();
        self.publish(|| self.put_label(label));
    }

    /// Ends the task as Done, Failed or Cancelled (Free or Running mean Done). Its record
    /// stays readable until the slot is reused.
    pub fn finish(mut self, state: TaskState) {
        self.end(state);
    }

    fn end(&mut self, state: TaskState) {
        if self.finished {
            return;
        }
        self.finished = true;
        let state = match state {
            TaskState::Free | TaskState::Running => TaskState::Done,
            other => other,
        };
        {
            let _progress = self.lock();
            self.publish(|| self.put(slot::STATE, state.word()));
        }
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
    fn a_published_backlog_is_read_back_and_none_waiting_has_no_age() {
        let writer = SegmentWriter::anonymous().unwrap();
        assert_eq!(writer.reader().read().backlog, None, "not published yet");
        writer.set_backlog(120, 1_700_000_000_000);
        let backlog = writer.reader().read().backlog.unwrap();
        assert_eq!(
            (backlog.waiting, backlog.oldest_accepted_unix_ms),
            (120, Some(1_700_000_000_000))
        );
        writer.set_backlog(0, 1_700_000_000_000);
        let backlog = writer.reader().read().backlog.unwrap();
        assert_eq!(
            (backlog.waiting, backlog.oldest_accepted_unix_ms),
            (0, None)
        );
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

    #[test]
    fn a_wrong_magic_or_version_is_refused() {
        for (word, value) in [(0u64, u64::from_le_bytes(*b"SWBDSEG2")), (1, 2), (5, 64)] {
            let (fd, _reader) = create_segment("altered").unwrap();
            // Seals forbid resizing, not writing.
            rustix::io::pwrite(&fd, &value.to_le_bytes(), word * 8).unwrap();
            let err = SegmentWriter::from_fd(fd).err().unwrap();
            assert!(
                matches!(&err, SegmentError::BadHeader(why) if why.contains(&format!("word {word} "))),
                "{err}"
            );
        }
    }

    #[test]
    fn a_short_file_is_refused_before_it_is_touched() {
        // Mapping an empty file and reading the header would be SIGBUS, not an error.
        let fd = rustix::fs::memfd_create("empty", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        assert!(matches!(
            SegmentWriter::from_fd(fd),
            Err(SegmentError::BadHeader(_))
        ));
    }

    #[test]
    fn handles_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<SegmentWriter>();
        check::<TaskSlot>();
        check::<SegmentReader>();
    }

    #[test]
    fn concurrent_updates_of_one_slot_are_serialised() {
        let writer = Arc::new(SegmentWriter::anonymous().unwrap());
        let slot = writer.task("shared", 4000).unwrap();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        slot.advance(1);
                    }
                });
            }
        });
        let record = writer.reader().read().tasks[0].clone();
        assert_eq!((record.done, record.total), (4000, 4000));
        assert_eq!(record.validity, Validity::Valid);
    }

    #[test]
    fn slots_in_use_at_open_are_reused_after_the_free_ones() {
        let (fd, reader) = create_segment("reopen").unwrap();
        let first = Arc::new(SegmentWriter::from_fd(fd.try_clone().unwrap()).unwrap());
        let stale = first.task("left running", 5).unwrap();
        std::mem::forget(stale); // the old service died without finishing it
        let second = Arc::new(SegmentWriter::from_fd(fd).unwrap());
        let fresh: Vec<TaskSlot> = (0..TASK_SLOTS - 1)
            .map(|i| second.task(&format!("n{i}"), 1).unwrap())
            .collect();
        assert!(
            reader
                .read()
                .tasks
                .iter()
                .any(|t| t.label == "left running"),
            "the stale record stays until every free slot is taken"
        );
        let last = second.task("last", 1).unwrap();
        let snapshot = reader.read();
        assert!(snapshot.tasks.iter().all(|t| t.label != "left running"));
        assert_eq!(snapshot.tasks.len(), TASK_SLOTS);
        assert!(second.task("none left", 1).is_none());
        drop((fresh, last));
    }

    #[test]
    fn a_scribbled_sequence_word_is_recovered() {
        let writer = Arc::new(SegmentWriter::anonymous().unwrap());
        let slot = writer.task("x", 10).unwrap();
        if let Some(seq) = writer.mapping.word(slot_base(0) + slot::SEQ) {
            seq.store(u64::MAX, Ordering::Relaxed); // odd, and about to wrap
        }
        slot.set(3, 10);
        let record = writer.reader().read().tasks[0].clone();
        assert_eq!((record.done, record.validity), (3, Validity::Valid));
    }
}
