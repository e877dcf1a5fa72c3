//! Arbitrary bytes as the inside of one frame, and as a postcard envelope.
//!
//! `decode_frame` must reject anything without panicking, and its envelope reader (written by
//! hand, for speed) must take exactly what postcard takes, as the same envelope. Whatever
//! postcard does accept as an envelope must survive framing: encoded, it holds no zero between its delimiters and decodes
//! back to the same envelope, both through `decode_frame` and through the streaming codec.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchboard_protocol::{
    Envelope,
    codec::{Frame, FrameCodec, decode_frame, encode_frame},
};
use tokio_util::codec::{Decoder, Encoder};

/// COBS as the spec describes it (the textbook encoder: it may end with an empty block after
/// a full one, which decoders take too).
fn cobs(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    let (mut code_at, mut code) = (0, 1u8);
    for &byte in data {
        if byte != 0 {
            out.push(byte);
            code += 1;
        }
        if byte == 0 || code == 0xFF {
            out[code_at] = code;
            code_at = out.len();
            out.push(0);
            code = 1;
        }
    }
    out[code_at] = code;
    out
}

fuzz_target!(|data: &[u8]| {
    let _ = decode_frame(data);

    // The data as postcard bytes, framed: our reader and postcard agree.
    let theirs = match postcard::take_from_bytes::<Envelope>(data) {
        Ok((envelope, [])) => Some(envelope),
        _ => None,
    };
    assert_eq!(decode_frame(&cobs(data)).ok(), theirs, "the reader and postcard disagree");

    let Ok(envelope) = postcard::from_bytes::<Envelope>(data) else {
        return;
    };
    let mut wire = BytesMut::new();
    encode_frame(&envelope, &mut wire).expect("an envelope always encodes");
    let inner = wire
        .get(1..wire.len().saturating_sub(1))
        .expect("a frame has two delimiters");
    assert!(!inner.contains(&0), "a zero inside a frame");
    assert_eq!(decode_frame(inner).as_ref(), Ok(&envelope));

    let mut codec = FrameCodec::with_max_frame(usize::MAX);
    let mut stream = BytesMut::new();
    codec
        .encode(&envelope, &mut stream)
        .expect("no limit to exceed");
    assert_eq!(stream, wire, "the codec and encode_frame agree");
    assert_eq!(
        codec.decode(&mut stream).expect("decode never fails"),
        Some(Frame::Message(envelope))
    );
    assert!(stream.is_empty());
});
