//! Frame encode and decode of a Request with a 64-byte postcard body.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, criterion_group, criterion_main};
use switchboard_protocol::{Body, Envelope, Kind, codec::FrameCodec};
use tokio_util::codec::{Decoder, Encoder};

// The switchboard binary and its builtin services run on mimalloc (see src/main.rs); measure
// the codec as they use it. With the system allocator the same run gives ~345 ns.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn request() -> Envelope {
    Envelope {
        id: 123_456,
        trace: 0xdead_beef,
        deadline_us: 250_000,
        kind: Kind::Request,
        destination: "user".into(),
        method: "get".into(),
        body: Body::Postcard(Bytes::from(vec![7u8; 64])),
        ..Envelope::default()
    }
}

fn codec(c: &mut Criterion) {
    let envelope = request();
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::with_capacity(4096);

    c.bench_function("encode+decode request (64-byte body)", |b| {
        b.iter(|| {
            codec.encode(black_box(&envelope), &mut buf).unwrap();
            let frame = codec.decode(&mut buf).unwrap();
            black_box(frame)
        })
    });

    c.bench_function("encode request (64-byte body)", |b| {
        b.iter(|| {
            buf.clear();
            codec.encode(black_box(&envelope), &mut buf).unwrap();
            black_box(buf.len())
        })
    });

    let mut wire = BytesMut::new();
    codec.encode(&envelope, &mut wire).unwrap();
    let wire = wire.freeze();
    c.bench_function("decode request (64-byte body)", |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(&wire);
            black_box(codec.decode(&mut buf).unwrap())
        })
    });

    // As the console and the SDK read: into one envelope kept across frames.
    let mut slot = Envelope::default();
    c.bench_function("decode request into a kept envelope (64-byte body)", |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(&wire);
            let read = codec.decode_into(&mut buf, &mut slot).unwrap();
            black_box((read.is_ok(), slot.id))
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
