//! Framing over a byte stream: every frame is `0x00, COBS(postcard(envelope)), 0x00`.
//!
//! COBS removes every zero byte from the encoded envelope, so a zero always means "frame
//! boundary" and the decoder can resynchronise after garbage: whatever lies between two zeros is
//! one frame, good or bad. The leading zero makes stray text (a `println!` in a service) end up
//! as its own bad frame instead of corrupting the next good one. Consecutive zeros are empty
//! frames and are skipped.
//!
//! Bad input never becomes a stream error: a tokio `FramedRead` ends at its first error, which
//! would cut the console off from the service. It comes out as [`Frame::Malformed`] instead,
//! counted by the caller, and decoding goes on at the next delimiter. A frame longer than the
//! limit is dropped as it arrives, never buffered whole.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::envelope::Envelope;

/// The largest frame accepted, in bytes of COBS-encoded frame without its delimiters.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// The most scratch capacity an encoder keeps between messages.
const SCRATCH_KEEP: usize = 64 * 1024;

/// One item of a framed stream: a message, or a report of bytes that were not one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // a Message is the common case; boxing it costs more
pub enum Frame {
    Message(Envelope),
    Malformed(Malformed),
}

/// Bytes between two delimiters that did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub reason: MalformedReason,
    /// How many bytes were discarded.
    pub len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedReason {
    /// Not valid COBS.
    Cobs,
    /// Valid COBS, but not an envelope (or an envelope followed by extra bytes).
    Postcard,
    /// Longer than the frame limit.
    TooLarge,
    /// The stream ended in the middle of a frame.
    Truncated,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("I/O error writing a frame: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot encode the envelope: {0}")]
    Postcard(#[from] postcard::Error),
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
}

/// The codec. Keep one per direction of a stream: it remembers how far it scanned.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame: usize,
    /// Set while dropping an over-long frame up to its closing delimiter.
    discarding: bool,
    /// Bytes dropped so far from the over-long frame.
    discarded: usize,
    /// How many bytes at the front of the buffer are known to hold no delimiter, so a frame
    /// arriving in small pieces is scanned once, not once per piece.
    scanned: usize,
    /// Reused buffer for the postcard encoding before COBS.
    scratch: Vec<u8>,
}

impl FrameCodec {
    pub fn new() -> Self {
        Self::with_max_frame(DEFAULT_MAX_FRAME)
    }

    pub fn with_max_frame(max_frame: usize) -> Self {
        FrameCodec {
            max_frame: max_frame.max(1),
            discarding: false,
            discarded: 0,
            scanned: 0,
            scratch: Vec::new(),
        }
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameCodec {
    /// Decodes the next whole frame in `src` into `slot`, as [`Decoder::decode`] does but
    /// without moving a decoded envelope out: a reader keeps one envelope for good (see
    /// [`FrameReader`](crate::frame_reader::FrameReader)). `None`: no whole frame yet.
    /// `Some(Err(_))`: the bytes were not a frame, and `slot` holds no meaningful envelope.
    pub fn decode_into(
        &mut self,
        src: &mut BytesMut,
        slot: &mut Envelope,
    ) -> Option<Result<(), Malformed>> {
        self.next_frame(src, |frame| {
            if crate::envelope_decode::decode_into(cobs_decoded(frame)?, slot) {
                Ok(())
            } else {
                Err(MalformedReason::Postcard)
            }
        })
    }

    /// At the end of the stream, once no whole frame is left: the report of the partial
    /// frame left in `src` (cleared), if there is one.
    pub fn truncated(&mut self, src: &mut BytesMut) -> Option<Malformed> {
        let len = if self.discarding {
            self.discarded + src.len()
        } else {
            src.len()
        };
        self.discarding = false;
        self.discarded = 0;
        self.scanned = 0;
        src.clear();
        (len > 0).then_some(Malformed {
            reason: MalformedReason::Truncated,
            len,
        })
    }

    /// Finds the next frame in `src`, hands its bytes to `decode` and consumes it. Reports
    /// an over-long frame (dropped as it arrives) as malformed.
    fn next_frame<T>(
        &mut self,
        src: &mut BytesMut,
        decode: impl FnOnce(&mut [u8]) -> Result<T, MalformedReason>,
    ) -> Option<Result<T, Malformed>> {
        if self.discarding {
            match memchr::memchr(0, src) {
                Some(at) => {
                    let len = self.discarded + at;
                    src.advance(at + 1);
                    self.discarding = false;
                    self.discarded = 0;
                    self.scanned = 0;
                    return Some(Err(Malformed {
                        reason: MalformedReason::TooLarge,
                        len,
                    }));
                }
                None => {
                    self.discarded += src.len();
                    src.clear();
                    return None;
                }
            }
        }
        // Delimiters with nothing between them are empty frames.
        let zeros = src.iter().take_while(|&&b| b == 0).count();
        if zeros > 0 {
            src.advance(zeros);
            self.scanned = 0;
        }
        let from = self.scanned.min(src.len());
        match memchr::memchr(0, &src[from..]) {
            Some(offset) => {
                let end = from + offset;
                self.scanned = 0;
                // Decoded in place inside the read buffer, which is then advanced past the
                // frame: no copy, no allocation besides the envelope's own fields.
                let frame = if end > self.max_frame {
                    Err(Malformed {
                        reason: MalformedReason::TooLarge,
                        len: end,
                    })
                } else {
                    decode(&mut src[..end]).map_err(|reason| Malformed { reason, len: end })
                };
                src.advance(end + 1);
                Some(frame)
            }
            None if src.len() > self.max_frame => {
                // Too long already: drop it now and keep dropping up to its end.
                self.discarding = true;
                self.discarded = src.len();
                self.scanned = 0;
                src.clear();
                None
            }
            None => {
                self.scanned = src.len();
                None
            }
        }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        let mut envelope = Envelope::default();
        Ok(self
            .decode_into(src, &mut envelope)
            .map(|frame| match frame {
                Ok(()) => Frame::Message(envelope),
                Err(malformed) => Frame::Malformed(malformed),
            }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        Ok(self.truncated(src).map(Frame::Malformed))
    }
}

impl Encoder<&Envelope> for FrameCodec {
    type Error = EncodeError;

    fn encode(&mut self, envelope: &Envelope, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.scratch.clear();
        let mut scratch = std::mem::take(&mut self.scratch);
        crate::envelope_encode::encode(envelope, &mut scratch)?;
        // Checked on the exact encoded length, so the encoder refuses precisely the frames the
        // peer's decoder would drop as too large. A refused frame is taken back out of `dst`.
        let start = dst.len();
        put_frame(&scratch, dst);
        self.scratch = scratch;
        // The console keeps one codec per service: one big message must not pin its size in
        // every codec for good. Ordinary messages stay well under this and reuse the buffer.
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = Vec::new();
        }
        let len = dst.len() - start - 2;
        if len > self.max_frame {
            dst.truncate(start);
            return Err(EncodeError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        Ok(())
    }
}

impl Encoder<Envelope> for FrameCodec {
    type Error = EncodeError;

    fn encode(&mut self, envelope: Envelope, dst: &mut BytesMut) -> Result<(), EncodeError> {
        Encoder::<&Envelope>::encode(self, &envelope, dst)
    }
}

/// Appends one whole frame (both delimiters included) for `envelope`, with no size check.
pub fn encode_frame(envelope: &Envelope, dst: &mut BytesMut) -> Result<(), EncodeError> {
    let mut bytes = Vec::new();
    crate::envelope_encode::encode(envelope, &mut bytes)?;
    put_frame(&bytes, dst);
    Ok(())
}

fn put_frame(postcard: &[u8], dst: &mut BytesMut) {
    dst.reserve(cobs::max_encoding_length(postcard.len()) + 2);
    dst.put_u8(0);
    cobs_encode(postcard, dst);
    dst.put_u8(0);
}

/// COBS-encodes `src` onto `dst`: each run of non-zero bytes up to a zero (or the end) becomes
/// its length + 1 followed by the run; runs of 254 bytes and more are cut into `0xFF` blocks.
/// The output is byte for byte what the `cobs` crate produces (the canonical form: no empty
/// block after a final `0xFF` block). Written here rather than taken from that crate because
/// it copies whole runs at a time, which is most of the codec's speed.
fn cobs_encode(src: &[u8], dst: &mut BytesMut) {
    let mut rest = src;
    loop {
        let run = memchr::memchr(0, rest).unwrap_or(rest.len());
        let (mut chunk, after) = rest.split_at(run);
        let mut after_full_block = false;
        while chunk.len() >= 254 {
            let (block, tail) = chunk.split_at(254);
            dst.put_u8(0xFF);
            dst.extend_from_slice(block);
            chunk = tail;
            after_full_block = true;
        }
        let last = after.is_empty();
        // At the end of the input a final `0xFF` block needs no empty block after it: neither
        // implies a zero there. (The empty input still gets its one `01` block.)
        if !(last && chunk.is_empty() && after_full_block) {
            // chunk.len() < 254 here, so the code fits a byte.
            dst.put_u8(chunk.len() as u8 + 1);
            dst.extend_from_slice(chunk);
        }
        match after.split_first() {
            // `after` starts with the zero this block stands for.
            Some((_, tail)) => rest = tail,
            None => return,
        }
    }
}

/// Decodes COBS in place; returns the decoded length, or `None` for invalid input. Never
/// panics: the write position never passes the read position.
fn cobs_decode_in_place(buf: &mut [u8]) -> Option<usize> {
    let len = buf.len();
    let mut read = 0;
    let mut write = 0;
    while read < len {
        let code = usize::from(*buf.get(read)?);
        if code == 0 {
            return None;
        }
        read += 1;
        let run = code - 1;
        let end = read.checked_add(run).filter(|&end| end <= len)?;
        buf.copy_within(read..end, write);
        write += run;
        read = end;
        if code != 0xFF && read < len {
            *buf.get_mut(write)? = 0;
            write += 1;
        }
    }
    Some(write)
}

/// Decodes the bytes of one frame, between its delimiters.
pub fn decode_frame(cobs_frame: &[u8]) -> Result<Envelope, MalformedReason> {
    let mut owned = cobs_frame.to_vec();
    decode_in_place(&mut owned)
}

fn decode_in_place(frame: &mut [u8]) -> Result<Envelope, MalformedReason> {
    crate::envelope_decode::decode(cobs_decoded(frame)?).ok_or(MalformedReason::Postcard)
}

/// The frame's bytes, COBS-decoded in place: the postcard bytes of its envelope.
fn cobs_decoded(frame: &mut [u8]) -> Result<&[u8], MalformedReason> {
    let len = cobs_decode_in_place(frame).ok_or(MalformedReason::Cobs)?;
    frame.get(..len).ok_or(MalformedReason::Cobs)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::envelope::{Body, Kind};

    fn request(id: u64, body_len: usize) -> Envelope {
        Envelope {
            id,
            trace: 9,
            deadline_us: 1000,
            kind: Kind::Request,
            destination: "user".into(),
            method: "get".into(),
            body: Body::Postcard(Bytes::from(vec![0u8; body_len])),
            ..Envelope::default()
        }
    }

    fn encoded(envelopes: &[Envelope]) -> BytesMut {
        let mut buf = BytesMut::new();
        let mut codec = FrameCodec::new();
        for envelope in envelopes {
            codec.encode(envelope, &mut buf).unwrap();
        }
        buf
    }

    /// Feeds `bytes` in pieces of `chunk` and collects everything decoded, EOF included.
    fn decode_chunked(codec: &mut FrameCodec, bytes: &[u8], chunk: usize) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                out.push(frame);
            }
            assert!(
                buf.len() <= codec.max_frame + chunk,
                "buffer grew to {} past the limit",
                buf.len()
            );
        }
        while let Some(frame) = codec.decode_eof(&mut buf).unwrap() {
            out.push(frame);
        }
        out
    }

    fn messages(frames: &[Frame]) -> Vec<Envelope> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Message(e) => Some(e.clone()),
                Frame::Malformed(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_frame_split_at_every_position_decodes() {
        let envelope = request(1, 64);
        let bytes = encoded(std::slice::from_ref(&envelope));
        for split in 0..=bytes.len() {
            let mut codec = FrameCodec::new();
            let mut buf = BytesMut::from(&bytes[..split]);
            let mut out = Vec::new();
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                out.push(frame);
            }
            buf.extend_from_slice(&bytes[split..]);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                out.push(frame);
            }
            assert_eq!(out, [Frame::Message(envelope.clone())], "split at {split}");
        }
    }

    #[test]
    fn back_to_back_frames_in_one_buffer() {
        let envelopes: Vec<Envelope> = (1..=5).map(|i| request(i, i as usize * 10)).collect();
        let frames = decode_chunked(&mut FrameCodec::new(), &encoded(&envelopes), 4096);
        assert_eq!(messages(&frames), envelopes);
        assert_eq!(frames.len(), 5);
    }

    #[test]
    fn an_incomplete_frame_is_not_an_error() {
        let bytes = encoded(&[request(1, 8)]);
        let mut buf = BytesMut::from(&bytes[..bytes.len() - 3]);
        assert_eq!(FrameCodec::new().decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn garbage_between_frames_is_one_malformed_item_each() {
        let mut bytes = BytesMut::new();
        bytes.extend_from_slice(b"hello from println!\n");
        bytes.extend_from_slice(&encoded(&[request(1, 3)]));
        bytes.extend_from_slice(b"more noise");
        bytes.extend_from_slice(&encoded(&[request(2, 3)]));
        let frames = decode_chunked(&mut FrameCodec::new(), &bytes, 7);
        assert_eq!(messages(&frames), [request(1, 3), request(2, 3)]);
        let bad: Vec<_> = frames
            .iter()
            .filter(|f| matches!(f, Frame::Malformed(_)))
            .collect();
        assert_eq!(bad.len(), 2, "{frames:?}");
    }

    #[test]
    fn oversize_frames_are_dropped_without_buffering_them() {
        let mut codec = FrameCodec::with_max_frame(256);
        let mut bytes = BytesMut::new();
        bytes.extend_from_slice(&encoded(&[request(1, 4000)]));
        bytes.extend_from_slice(&encoded(&[request(2, 10)]));
        let frames = decode_chunked(&mut codec, &bytes, 100);
        assert_eq!(messages(&frames), [request(2, 10)]);
        assert!(matches!(
            frames[0],
            Frame::Malformed(Malformed {
                reason: MalformedReason::TooLarge,
                ..
            })
        ));
        // And the encoder refuses to produce one.
        let err = codec.encode(&request(3, 4000), &mut BytesMut::new());
        assert!(matches!(err, Err(EncodeError::TooLarge { .. })));
    }

    #[test]
    fn empty_frames_are_skipped() {
        let mut bytes = BytesMut::from(&[0u8, 0, 0][..]);
        bytes.extend_from_slice(&encoded(&[request(1, 1)]));
        bytes.extend_from_slice(&[0, 0]);
        let frames = decode_chunked(&mut FrameCodec::new(), &bytes, 3);
        assert_eq!(frames, [Frame::Message(request(1, 1))]);
    }

    #[test]
    fn eof_mid_frame_is_truncated() {
        let bytes = encoded(&[request(1, 20)]);
        let frames = decode_chunked(&mut FrameCodec::new(), &bytes[..bytes.len() - 5], 8);
        assert_eq!(frames.len(), 1);
        assert!(matches!(
            frames[0],
            Frame::Malformed(Malformed {
                reason: MalformedReason::Truncated,
                ..
            })
        ));
    }

    #[test]
    fn trailing_bytes_after_an_envelope_are_malformed() {
        let mut postcard = postcard::to_allocvec(&request(1, 1)).unwrap();
        postcard.push(7);
        let mut buf = BytesMut::new();
        put_frame(&postcard, &mut buf);
        let frames = decode_chunked(&mut FrameCodec::new(), &buf, 64);
        assert!(matches!(
            frames[..],
            [Frame::Malformed(Malformed {
                reason: MalformedReason::Postcard,
                ..
            })]
        ));
    }

    #[test]
    fn cobs_agrees_with_the_reference_crate() {
        let mut inputs: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0, 0], vec![1, 0, 2]];
        for len in [1, 253, 254, 255, 507, 508, 509, 600] {
            inputs.push((1..=len).map(|i| (i % 255 + 1) as u8).collect());
            let mut with_zero: Vec<u8> = (1..=len).map(|i| (i % 255 + 1) as u8).collect();
            with_zero.push(0);
            inputs.push(with_zero);
        }
        for input in inputs {
            let mut ours = BytesMut::new();
            cobs_encode(&input, &mut ours);
            assert!(!ours.contains(&0));
            let mut reference = vec![0u8; cobs::max_encoding_length(input.len())];
            let n = cobs::encode(&input, &mut reference);
            // The reference sizes its output by `max_encoding_length`, which is 0 for the
            // empty input (never an envelope), so it has no room for the `01` block there.
            if !input.is_empty() {
                assert_eq!(
                    &ours[..],
                    &reference[..n],
                    "encoding of {} bytes",
                    input.len()
                );
            }
            // Both decoders read both encodings back to the input.
            let mut a = ours.to_vec();
            let decoded = cobs_decode_in_place(&mut a).unwrap();
            assert_eq!(&a[..decoded], &input[..], "ours → ours");
            let mut b = reference[..n].to_vec();
            let decoded = cobs_decode_in_place(&mut b).unwrap();
            assert_eq!(&b[..decoded], &input[..], "reference → ours");
            let mut c = ours.to_vec();
            let decoded = cobs::decode_in_place(&mut c).unwrap();
            assert_eq!(&c[..decoded], &input[..], "ours → reference");
        }
        assert_eq!(cobs_decode_in_place(&mut [5, 1]), None, "run past the end");
        assert_eq!(cobs_decode_in_place(&mut [0]), None);
    }

    #[test]
    fn the_encoder_limit_is_the_decoders_limit_exactly() {
        let envelope = request(1, 300);
        let frame = encoded(std::slice::from_ref(&envelope));
        let len = frame.len() - 2;
        let mut dst = BytesMut::from(&b"kept"[..]);
        let err = FrameCodec::with_max_frame(len - 1).encode(&envelope, &mut dst);
        assert!(
            matches!(err, Err(EncodeError::TooLarge { len: l, max }) if l == len && max == len - 1),
            "{err:?}"
        );
        assert_eq!(&dst[..], b"kept", "a refused frame leaves nothing behind");
        let mut codec = FrameCodec::with_max_frame(len);
        codec.encode(&envelope, &mut dst).unwrap();
        dst.advance(4);
        assert_eq!(
            codec.decode(&mut dst).unwrap(),
            Some(Frame::Message(envelope))
        );
    }

    #[test]
    fn encode_frame_matches_the_codec() {
        let envelope = request(5, 12);
        let mut a = BytesMut::new();
        encode_frame(&envelope, &mut a).unwrap();
        assert_eq!(a, encoded(std::slice::from_ref(&envelope)));
        assert_eq!(decode_frame(&a[1..a.len() - 1]), Ok(envelope));
    }
}
