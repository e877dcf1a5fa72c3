//! The cost of publishing into the segment (a heartbeat, a counter, a finished request with its
//! histogram bucket, a task update) and of the console's read of a segment with 16 busy slots.
//! All on a real sealed memfd, mapped shared, as in production.
//!
//! `cargo bench -p switchboard-protocol --bench segment`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{hint::black_box, sync::Arc, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use switchboard_protocol::segment::{Outcome, SegmentWriter, TASK_SLOTS, create_segment};

fn segment(c: &mut Criterion) {
    let (fd, reader) = create_segment("bench").unwrap();
    let writer = Arc::new(SegmentWriter::from_fd(fd).unwrap());

    c.bench_function("heartbeat", |b| b.iter(|| black_box(&writer).heartbeat()));
    c.bench_function("event_published", |b| {
        b.iter(|| black_box(&writer).event_published())
    });
    c.bench_function("request_finished", |b| {
        b.iter(|| {
            black_box(&writer).request_finished(Outcome::Ok, black_box(Duration::from_micros(150)))
        })
    });

    let tasks: Vec<_> = (0..TASK_SLOTS)
        .map(|i| {
            writer
                .task(&format!("import batch {i}"), 1_000_000)
                .unwrap()
        })
        .collect();
    let mut n = 0;
    c.bench_function("task.set", |b| {
        b.iter(|| {
            n += 1;
            tasks[0].set(black_box(n), 1_000_000);
        })
    });
    c.bench_function("reader.read (16 busy slots)", |b| {
        b.iter(|| black_box(reader.read()))
    });
}

criterion_group!(benches, segment);
criterion_main!(benches);
