//! The example frames in SPEC.md, byte for byte: the spec cannot drift from the code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use switchboard_protocol::{
    Body, Envelope, Hello, Kind,
    codec::{Frame, FrameCodec, encode_frame},
    segment::layout::MAGIC,
};
use tokio_util::codec::Decoder;

fn spec() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/SPEC.md")).unwrap()
}

/// The bytes of the ```hex block after `<!-- golden: NAME -->`.
fn golden(name: &str) -> Vec<u8> {
    let spec = spec();
    let marker = format!("<!-- golden: {name} -->");
    let after = &spec[spec.find(&marker).expect("marker missing") + marker.len()..];
    let start = after.find("```hex").expect("no hex block") + "```hex".len();
    let block = &after[start..start + after[start..].find("```").unwrap()];
    block
        .split_whitespace()
        .map(|byte| u8::from_str_radix(byte, 16).unwrap())
        .collect()
}

fn check(name: &str, envelope: &Envelope) {
    let expected = golden(name);
    let mut encoded = BytesMut::new();
    encode_frame(envelope, &mut encoded).unwrap();
    assert_eq!(
        &encoded[..],
        &expected[..],
        "{name}: encoding differs from SPEC.md"
    );
    let mut wire = BytesMut::from(&expected[..]);
    let decoded = FrameCodec::new().decode(&mut wire).unwrap();
    assert_eq!(decoded, Some(Frame::Message(envelope.clone())), "{name}");
}

#[test]
fn hello_frame() {
    check(
        "hello",
        &Envelope {
            id: 1,
            kind: Kind::Hello(Hello {
                name: "user".into(),
                version: "0.1.0".into(),
                protocol_version: 1,
                methods: vec!["create".into(), "get".into()],
                topics: vec![],
            }),
            ..Envelope::default()
        },
    );
}

#[test]
fn request_frame() {
    check(
        "request",
        &Envelope {
            id: 7,
            trace: 0x1234,
            deadline_us: 250_000,
            kind: Kind::Request,
            destination: "user".into(),
            method: "get".into(),
            body: Body::Json(Bytes::from_static(b"{\"id\":1}")),
            ..Envelope::default()
        },
    );
}

#[test]
fn segment_magic_matches() {
    assert!(spec().contains(&format!("{MAGIC:#018x}")), "{MAGIC:#018x}");
}
