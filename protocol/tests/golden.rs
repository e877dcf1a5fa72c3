//! SPEC.md's examples, byte for byte: the spec cannot drift from the code. Each checked block is
//! the fenced block right after a `<!-- golden: NAME -->` line.
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

/// The contents of the fenced block after `<!-- golden: NAME -->`.
fn block(name: &str) -> String {
    let spec = spec();
    let marker = format!("<!-- golden: {name} -->");
    let at = spec
        .find(&marker)
        .unwrap_or_else(|| panic!("SPEC.md has no {marker}"));
    let after = &spec[at + marker.len()..];
    let fence = after.find("```").expect("no fenced block after the marker");
    let body_start = fence + after[fence..].find('\n').unwrap() + 1;
    let body_len = after[body_start..].find("```").expect("unclosed block");
    after[body_start..body_start + body_len].to_owned()
}

/// Hex bytes separated by spaces; `…` stands for every byte value between its neighbours.
fn hex(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pending_range = false;
    for token in text.split_whitespace() {
        if token == "…" {
            pending_range = true;
            continue;
        }
        let byte = u8::from_str_radix(token, 16)
            .unwrap_or_else(|_| panic!("{token:?} is not a hex byte in {text:?}"));
        if std::mem::take(&mut pending_range) {
            let from = *out.last().expect("… with nothing before it");
            out.extend(from + 1..byte);
        }
        out.push(byte);
    }
    assert!(!pending_range, "… with nothing after it in {text:?}");
    out
}

/// An annotated dump: each line is hex bytes, two or more spaces, then a comment.
fn annotated_hex(text: &str) -> Vec<u8> {
    text.lines()
        .flat_map(|line| hex(line.split("  ").next().unwrap_or_default()))
        .collect()
}

fn check(name: &str, envelope: &Envelope) {
    let postcard = postcard::to_allocvec(envelope).unwrap();
    let documented = annotated_hex(&block(&format!("{name} postcard")));
    assert_eq!(
        postcard, documented,
        "{name}: postcard bytes differ from SPEC.md's breakdown"
    );

    let expected = hex(&block(name));
    let mut encoded = BytesMut::new();
    encode_frame(envelope, &mut encoded).unwrap();
    assert_eq!(
        &encoded[..],
        &expected[..],
        "{name}: the frame differs from SPEC.md"
    );
    let mut wire = BytesMut::from(&expected[..]);
    let decoded = FrameCodec::new().decode(&mut wire).unwrap();
    assert_eq!(decoded, Some(Frame::Message(envelope.clone())), "{name}");
    assert!(wire.is_empty(), "{name}: bytes left over");
}

#[test]
fn hello_frame() {
    check(
        "hello",
        &Envelope {
            id: 1,
            kind: Kind::Hello(Box::new(Hello {
                name: "user".into(),
                version: "0.1.0".into(),
                protocol_version: 1,
                methods: vec!["create".into(), "get".into()],
                topics: vec![],
            })),
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

/// The COBS examples in §2 against the reference implementation (the codec's own COBS is
/// checked against the same reference, byte for byte, in `src/codec.rs`).
#[test]
fn cobs_examples() {
    let examples = block("cobs");
    let mut checked = 0;
    for line in examples.lines().filter(|l| !l.trim().is_empty()) {
        let (input, encoded) = line.split_once('→').expect("input → encoded");
        let (input, encoded) = (hex(input), hex(encoded));
        assert_eq!(cobs::encode_vec(&input), encoded, "{line}");
        assert_eq!(cobs::decode_vec(&encoded).unwrap(), input, "{line}");
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} examples found");
}

#[test]
fn segment_magic_matches() {
    assert!(spec().contains(&format!("{MAGIC:#018x}")), "{MAGIC:#018x}");
}
