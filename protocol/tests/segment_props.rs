//! A hostile segment: whatever bytes the service leaves in its memory, the reader never
//! panics, and what it accepts as valid is sane and is exactly what was there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    fs::File,
    os::fd::AsFd,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use memmap2::{MmapOptions, MmapRaw};
use proptest::prelude::*;
use switchboard_protocol::segment::{
    LABEL_MAX, SEGMENT_LEN, SegmentReader, Snapshot, TASK_SLOTS, TaskState, Validity,
    layout::HEADER,
};

/// A sealed memfd of the segment's size and a writable shared mapping of it: the service's
/// view, through which the test plays the hostile writer.
fn hostile_segment() -> (File, MmapRaw) {
    let fd = rustix::fs::memfd_create(
        "hostile",
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    )
    .unwrap();
    rustix::fs::ftruncate(&fd, SEGMENT_LEN as u64).unwrap();
    rustix::fs::fcntl_add_seals(
        &fd,
        rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::GROW,
    )
    .unwrap();
    let file = File::from(fd);
    let map = MmapOptions::new().len(SEGMENT_LEN).map_raw(&file).unwrap();
    (file, map)
}

/// Word `index` of the writable mapping (the test's own side of the shared memory).
fn word(map: &MmapRaw, index: usize) -> &AtomicU64 {
    assert!(index < SEGMENT_LEN / 8);
    // SAFETY: in bounds of a live, page-aligned mapping that is only accessed atomically.
    unsafe { AtomicU64::from_ptr(map.as_mut_ptr().cast::<u64>().add(index)) }
}

fn write_words(map: &MmapRaw, words: &[u64]) {
    for (i, value) in words.iter().enumerate() {
        word(map, i).store(*value, Ordering::Relaxed);
    }
}

fn words_of(bytes: &[u8]) -> Vec<u64> {
    let mut padded = bytes.to_vec();
    padded.resize(SEGMENT_LEN, 0);
    padded
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// What must hold for every snapshot, whatever the memory held.
fn check_sane(snapshot: &Snapshot) -> Result<(), TestCaseError> {
    if !snapshot.header_ok {
        prop_assert_eq!(
            snapshot,
            &Snapshot {
                problems: snapshot.problems.clone(),
                ..Snapshot::default()
            }
        );
    }
    prop_assert!(snapshot.tasks.len() <= TASK_SLOTS);
    for task in &snapshot.tasks {
        prop_assert!(task.slot < TASK_SLOTS);
        // Lossy decoding may widen bad bytes to U+FFFD, but never past 64 characters.
        prop_assert!(task.label.chars().count() <= LABEL_MAX);
        prop_assert!(!task.label.chars().any(char::is_control));
        if task.validity == Validity::Valid {
            prop_assert!(task.total == 0 || task.done <= task.total);
            prop_assert!(task.label.len() <= LABEL_MAX);
            prop_assert!(task.state != TaskState::Free);
            prop_assert!(task.id != 0);
        }
    }
    Ok(())
}

/// A slot's 16 words, shaped like a real slot often enough that valid records come out.
fn slot_words() -> impl Strategy<Value = Vec<u64>> {
    (
        prop_oneof![Just(0u64), Just(2), Just(3), any::<u64>()],
        prop_oneof![Just(0u64), 1..5u64, any::<u64>()],
        prop_oneof![0..6u64, any::<u64>()],
        prop_oneof![0..20u64, any::<u64>()],
        prop_oneof![0..20u64, any::<u64>()],
        prop_oneof![0..=70u64, any::<u64>()],
        prop_oneof![
            prop::collection::vec(0x20..0x7fu8, LABEL_MAX),
            prop::collection::vec(any::<u8>(), LABEL_MAX),
        ],
    )
        .prop_map(|(seq, id, state, done, total, label_len, label)| {
            let mut words = vec![seq, id, state, done, total, label_len, 0, 0];
            words.extend(words_of(&label).into_iter().take(8));
            words
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..=SEGMENT_LEN),
        header in any::<bool>(),
    ) {
        let (file, map) = hostile_segment();
        let mut words = words_of(&bytes);
        if header {
            words[..HEADER.len()].copy_from_slice(&HEADER);
        }
        write_words(&map, &words);
        let reader = SegmentReader::from_fd(file.as_fd()).unwrap();
        let snapshot = reader.read();
        prop_assert_eq!(snapshot.header_ok, words[..HEADER.len()] == HEADER);
        // The hang check's cheap read agrees with the full one.
        prop_assert_eq!(reader.heartbeat(), snapshot.header_ok.then_some(snapshot.heartbeat));
        check_sane(&snapshot)?;
    }

    #[test]
    fn valid_records_are_exactly_what_was_written(
        slots in prop::collection::vec(slot_words(), TASK_SLOTS),
        counters in prop::collection::vec(any::<u64>(), 10),
    ) {
        let (file, map) = hostile_segment();
        let mut words = vec![0u64; SEGMENT_LEN / 8];
        words[..HEADER.len()].copy_from_slice(&HEADER);
        words[8..18].copy_from_slice(&counters);
        for (i, slot) in slots.iter().enumerate() {
            words[128 + 16 * i..128 + 16 * (i + 1)].copy_from_slice(slot);
        }
        write_words(&map, &words);
        let snapshot = SegmentReader::from_fd(file.as_fd()).unwrap().read();
        prop_assert!(snapshot.header_ok);
        prop_assert_eq!(snapshot.heartbeat, counters[0]);
        prop_assert_eq!(snapshot.raw_state, counters[1]);
        prop_assert_eq!(snapshot.latency_sum_us, counters[9]);
        check_sane(&snapshot)?;
        for task in &snapshot.tasks {
            let slot = &slots[task.slot];
            prop_assert!(slot[1] != 0 || slot[2] != 0, "a free slot was reported");
            if task.validity == Validity::Valid {
                prop_assert_eq!(slot[0] & 1, 0, "accepted an odd sequence");
                prop_assert_eq!((task.id, task.done, task.total), (slot[1], slot[3], slot[4]));
                let len = usize::try_from(slot[5]).unwrap();
                let bytes: Vec<u8> = slot[8..].iter().flat_map(|w| w.to_le_bytes()).collect();
                let expected: String = std::str::from_utf8(&bytes[..len])
                    .unwrap()
                    .chars()
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect();
                prop_assert_eq!(&task.label, &expected);
            }
            if slot[0] & 1 == 1 {
                prop_assert_eq!(&task.validity, &Validity::Torn);
            }
        }
    }
}

/// A writer scribbling random words over the whole segment while the console reads it.
#[test]
fn concurrent_scribbling_never_breaks_the_reader() {
    let (file, map) = hostile_segment();
    write_words(&map, &HEADER);
    let reader = SegmentReader::from_fd(file.as_fd()).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            // xorshift: enough chaos, no dependency. Mostly slots, sometimes the header.
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let index = if x.is_multiple_of(16) {
                    (x >> 8) as usize % 8
                } else {
                    128 + (x >> 8) as usize % (16 * TASK_SLOTS)
                };
                word(&map, index).store(x.rotate_left(17) % 97, Ordering::Relaxed);
                if x.is_multiple_of(64) {
                    write_words(&map, &HEADER);
                }
            }
        });
        let mut header_ok = 0;
        for _ in 0..20_000 {
            let snapshot = reader.read();
            header_ok += usize::from(snapshot.header_ok);
            check_sane(&snapshot).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        assert!(header_ok > 0, "the header was never intact");
    });
}

#[test]
fn a_file_too_small_is_refused_not_mapped() {
    let fd = rustix::fs::memfd_create(
        "tiny",
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    )
    .unwrap();
    rustix::fs::ftruncate(&fd, 100).unwrap();
    rustix::fs::fcntl_add_seals(&fd, rustix::fs::SealFlags::SHRINK).unwrap();
    assert!(SegmentReader::from_fd(fd.as_fd()).is_err());
}
