//! The cost of publishing into the segment: a heartbeat, a finished request (counter +
//! histogram), a task update; and the console's read of a busy segment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{hint::black_box, sync::Arc, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use switchboard_protocol::segment::{Outcome, SegmentWriter, create_segment};

fn segment(c: &mut Criterion) {
    let (fd, reader) = create_segment("bench").unwrap();
    let writer = Arc::new(SegmentWriter::from_fd(fd).unwrap());

    c.bench_function("heartbeat", |b| b.iter(|| writer.heartbeat()));
    c.bench_function("request counter (started + finished)", |b| {
        b.iter(|| {
            writer.request_started();
            writer.request_finished(Outcome::Ok, black_box(Duration::from_micros(150)));
        })
    });
    let tasks: Vec<_> = (0..16)
        .map(|i| writer.task(&format!("task {i}"), 100).unwrap())
        .collect();
    let mut n = 0;
    c.bench_function("task progress set", |b| {
        b.iter(|| {
            n += 1;
            tasks[0].set(black_box(n), 1_000_000);
        })
    });
    c.bench_function("read snapshot (16 busy slots)", |b| {
        b.iter(|| black_box(reader.read()))
    });
}

criterion_group!(benches, segment);
criterion_main!(benches);
