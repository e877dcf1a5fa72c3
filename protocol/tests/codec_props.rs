//! Round trips of every message kind, and property tests of the frame decoder: random bytes in
//! random pieces never panic and never end the stream, and valid frames survive garbage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use switchboard_protocol::{
    Body, Envelope, ErrorCode, Hello, Kind, Priority, Status, Welcome,
    codec::{Frame, FrameCodec},
};
use tokio_util::codec::{Decoder, Encoder};

fn every_kind() -> Vec<Kind> {
    let error = Status::error(ErrorCode::CircuitOpen, "breaker open");
    vec![
        Kind::Hello(Box::new(Hello {
            name: "order".into(),
            version: "2.1.0".into(),
            protocol_version: 1,
            methods: vec!["create".into(), "get".into()],
            topics: vec!["user.*".into()],
        })),
        Kind::Welcome(Box::new(Welcome {
            protocol_version: 1,
            service: "order".into(),
            instance: 3,
            heartbeat_ms: 250,
            settings: vec![("rate".into(), "20".into())],
            params: "{\"pace_ms\":10}".into(),
        })),
        Kind::Ready,
        Kind::Request,
        Kind::Response(Status::Ok),
        Kind::Response(error.clone()),
        Kind::Event,
        Kind::Subscribe,
        Kind::Unsubscribe,
        Kind::StreamItem,
        Kind::StreamEnd(error.clone()),
        Kind::Credit(64),
        Kind::Shutdown,
        Kind::JobResult(error),
        Kind::Cancel,
    ]
}

fn envelope(id: u64, kind: Kind, body: Body) -> Envelope {
    Envelope {
        id,
        correlation: id.wrapping_mul(7),
        trace: u64::MAX - id,
        deadline_us: 1_500_000,
        priority: Priority::HIGH,
        kind,
        destination: "order.created".into(),
        method: "create".into(),
        body,
    }
}

fn encode_all(envelopes: &[Envelope]) -> BytesMut {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::new();
    for e in envelopes {
        codec.encode(e, &mut buf).unwrap();
    }
    buf
}

/// Decodes `bytes` fed in pieces of the given sizes (cycled), plus EOF.
fn decode_in_pieces(bytes: &[u8], pieces: &[usize]) -> Vec<Frame> {
    decode_with_limit(bytes, pieces, 4096)
}

fn decode_with_limit(bytes: &[u8], pieces: &[usize], max_frame: usize) -> Vec<Frame> {
    let mut codec = FrameCodec::with_max_frame(max_frame);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < bytes.len() {
        let size = pieces
            .get(i % pieces.len().max(1))
            .copied()
            .unwrap_or(1)
            .max(1);
        let end = (at + size).min(bytes.len());
        buf.extend_from_slice(&bytes[at..end]);
        at = end;
        i += 1;
        while let Some(frame) = codec.decode(&mut buf).expect("decode must never fail") {
            out.push(frame);
        }
        assert!(
            buf.len() <= max_frame + size,
            "{} bytes buffered, limit {max_frame}",
            buf.len()
        );
    }
    while let Some(frame) = codec
        .decode_eof(&mut buf)
        .expect("decode_eof must never fail")
    {
        out.push(frame);
    }
    out
}

fn messages(frames: Vec<Frame>) -> Vec<Envelope> {
    frames
        .into_iter()
        .filter_map(|f| match f {
            Frame::Message(e) => Some(e),
            Frame::Malformed(_) => None,
        })
        .collect()
}

#[test]
fn every_kind_round_trips_with_every_body() {
    let bodies = [
        Body::Empty,
        Body::Postcard(Bytes::from_static(&[0, 1, 2, 0, 255])),
        Body::Json(Bytes::from_static(b"{\"a\":[1,2]}")),
    ];
    let mut envelopes = Vec::new();
    for (i, kind) in every_kind().into_iter().enumerate() {
        for body in &bodies {
            envelopes.push(envelope(i as u64 + 1, kind.clone(), body.clone()));
        }
    }
    let decoded = messages(decode_in_pieces(&encode_all(&envelopes), &[4096]));
    assert_eq!(decoded, envelopes);
}

fn arb_envelope() -> impl Strategy<Value = Envelope> {
    (
        any::<u64>(),
        0..every_kind().len(),
        prop::collection::vec(any::<u8>(), 0..300),
        "[a-z.]{0,20}",
        any::<bool>(),
    )
        .prop_map(|(id, kind, body, destination, json)| {
            let mut e = envelope(
                id,
                every_kind()[kind].clone(),
                if json {
                    Body::Json(body.into())
                } else {
                    Body::Postcard(body.into())
                },
            );
            e.destination = destination.into();
            e
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic_or_end_the_stream(
        bytes in prop::collection::vec(any::<u8>(), 0..8192),
        pieces in prop::collection::vec(1usize..700, 1..8),
        // Small limits too, so that oversize frames (runs without a zero) are common.
        max_frame in prop_oneof![1usize..600, Just(4096)],
    ) {
        let frames = decode_with_limit(&bytes, &pieces, max_frame);
        // How the bytes arrive changes nothing: the decoder's memory of how far it scanned and
        // of the oversize frame it is dropping must give exactly what one big read gives.
        let whole = decode_with_limit(&bytes, &[bytes.len()], max_frame);
        prop_assert_eq!(&frames, &whole);
        // Bytes are never invented: what is reported dropped fits in the input.
        let dropped: usize = frames
            .iter()
            .map(|f| match f {
                Frame::Malformed(m) => m.len,
                Frame::Message(_) => 0,
            })
            .sum();
        prop_assert!(dropped <= bytes.len());
    }

    #[test]
    fn valid_frames_survive_garbage_between_them(
        envelopes in prop::collection::vec(arb_envelope(), 1..8),
        garbage in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 8),
        zero_free in any::<bool>(),
        pieces in prop::collection::vec(1usize..300, 1..6),
    ) {
        let mut codec = FrameCodec::new();
        let mut wire = BytesMut::new();
        for (i, e) in envelopes.iter().enumerate() {
            let mut noise = garbage[i % garbage.len()].clone();
            if zero_free {
                noise.retain(|b| *b != 0);
            }
            wire.extend_from_slice(&noise);
            codec.encode(e, &mut wire).unwrap();
        }
        let decoded = messages(decode_in_pieces(&wire, &pieces));
        prop_assert_eq!(decoded, envelopes);
    }

    #[test]
    fn truncated_frames_do_not_hide_the_next_ones(
        envelopes in prop::collection::vec(arb_envelope(), 2..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut wire = BytesMut::new();
        // A frame cut short (its closing zero never written), then the rest intact.
        let first = encode_all(&envelopes[..1]);
        let keep = cut.index(first.len() - 1);
        wire.extend_from_slice(&first[..keep]);
        wire.extend_from_slice(&encode_all(&envelopes[1..]));
        let decoded = messages(decode_in_pieces(&wire, &[64]));
        prop_assert_eq!(&decoded[..], &envelopes[1..]);
    }
}
