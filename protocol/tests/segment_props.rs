//! A hostile segment: arbitrary bytes over the whole mapping never crash the reader, and what it
//! accepts as valid is sane.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{fs::File, io::Write, os::fd::AsFd};

use proptest::prelude::*;
use switchboard_protocol::segment::{
    LABEL_MAX, SEGMENT_LEN, SegmentReader, TaskState, Validity, layout::HEADER,
};

/// A memfd holding exactly `bytes` (padded to the segment size).
fn segment_with(bytes: &[u8]) -> File {
    let fd = rustix::fs::memfd_create("hostile", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    let mut file = File::from(fd);
    let mut content = bytes.to_vec();
    content.resize(SEGMENT_LEN, 0);
    file.write_all(&content).unwrap();
    file
}

fn with_valid_header(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.resize(SEGMENT_LEN, 0);
    for (i, word) in HEADER.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..SEGMENT_LEN), header in any::<bool>()) {
        let bytes = if header { with_valid_header(bytes) } else { bytes };
        let file = segment_with(&bytes);
        let reader = SegmentReader::from_fd(file.as_fd()).unwrap();
        let snapshot = reader.read();
        prop_assert_eq!(snapshot.header_ok, header || bytes.len() >= 64 && bytes[..64] == with_valid_header(vec![])[..64]);
        for task in &snapshot.tasks {
            prop_assert!(task.label.chars().count() <= LABEL_MAX);
            if task.validity == Validity::Valid {
                prop_assert!(task.total == 0 || task.done <= task.total);
                prop_assert!(task.state != TaskState::Free || task.id != 0);
            }
        }
    }
}

#[test]
fn a_file_too_small_is_refused_not_mapped() {
    let fd = rustix::fs::memfd_create("tiny", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&fd, 100).unwrap();
    assert!(SegmentReader::from_fd(fd.as_fd()).is_err());
}
