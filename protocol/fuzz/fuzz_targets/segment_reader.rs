//! Arbitrary bytes as a metrics segment image through the console's reader.
//!
//! The segment is written by an untrusted service, so whatever it holds, `read` must not panic
//! and its snapshot must stay within the layout's bounds: at most one record per slot, labels of
//! at most 64 bytes with no control characters (they reach the operator's terminal), nothing
//! but zeros when the header is wrong, and any quantile answerable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_protocol::segment::{
    LABEL_MAX, SegmentReader, TASK_SLOTS, Validity,
    layout::{HEADER, SEGMENT_LEN},
};

fuzz_target!(|data: &[u8]| {
    // An odd first byte puts a valid header in front, so the fuzzer spends its time past it.
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut image = Vec::with_capacity(SEGMENT_LEN);
    if mode & 1 == 1 {
        image.extend(HEADER.iter().flat_map(|w| w.to_le_bytes()));
    }
    image.extend_from_slice(rest);
    let reader = SegmentReader::from_image(&image).expect("anonymous memory");
    let snapshot = reader.read();
    if !snapshot.header_ok {
        assert!(snapshot.tasks.is_empty() && snapshot.heartbeat == 0);
        assert_eq!(snapshot.problems.len(), 1);
    }
    assert!(snapshot.tasks.len() <= TASK_SLOTS);
    for task in &snapshot.tasks {
        assert!(task.slot < TASK_SLOTS);
        assert!(task.label.len() <= LABEL_MAX * 3, "lossy decoding at most triples");
        assert!(!task.label.chars().any(char::is_control), "{:?}", task.label);
        if task.total != 0 && task.done > task.total {
            assert!(matches!(task.validity, Validity::Absurd(_) | Validity::Torn));
        }
    }
    for q in [0.0, 0.5, 0.99, 1.0, f64::NAN, -1.0, 2.0] {
        let _ = snapshot.latency_quantile_us(q);
    }
    // Nobody writes concurrently here, so a second read sees the same thing.
    assert_eq!(reader.read(), snapshot);
});
