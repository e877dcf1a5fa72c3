//! Arbitrary bytes through the frame decoder, in arbitrary pieces.
//!
//! Beyond "never panics, never returns `Err`": the buffer never holds much more than one frame
//! limit, nothing is left behind after EOF, and feeding the stream in pieces gives exactly the
//! items that feeding it whole gives. That last one catches mistakes in the decoder's memory of
//! how far it scanned and in its discarding of oversize frames, which only show across pieces.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchboard_protocol::codec::{Frame, FrameCodec};
use tokio_util::codec::Decoder;

/// Small, so that oversize frames are common.
const MAX_FRAME: usize = 512;

fn decode(stream: &[u8], piece: usize) -> Vec<Frame> {
    let mut codec = FrameCodec::with_max_frame(MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in stream.chunks(piece) {
        buf.extend_from_slice(chunk);
        while let Some(frame) = codec.decode(&mut buf).expect("decode never fails") {
            out.push(frame);
        }
        assert!(
            buf.len() <= MAX_FRAME + piece,
            "{} bytes buffered with a limit of {MAX_FRAME}",
            buf.len()
        );
    }
    while let Some(frame) = codec.decode_eof(&mut buf).expect("decode_eof never fails") {
        out.push(frame);
    }
    assert!(buf.is_empty(), "bytes left behind after EOF");
    out
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the piece size, so one stream is tried in many chunkings.
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let in_pieces = decode(stream, usize::from(piece) + 1);
    let whole = decode(stream, stream.len().max(1));
    assert_eq!(in_pieces, whole);
});
