//! Reading frames from a pipe into one envelope that the reader keeps.
//!
//! A tokio `FramedRead` hands each decoded envelope up by value, through `Result`, `Option`
//! and `Poll` and whatever the caller wraps it in (a `select!` output), and an envelope is 168
//! bytes: those moves were a visible part of the console's, a callee's and a caller's work
//! per message. Here the codec decodes straight into a slot the caller owns and passes by
//! reference, and what comes back up is a small [`Read`].
//!
//! Reading is as the codec's `FramedRead` did it: bad bytes come out as
//! [`Read::Malformed`] and reading goes on at the next delimiter; only an I/O error or the
//! end of the stream ends it.

use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{
    codec::{FrameCodec, Malformed},
    envelope::Envelope,
    read_clock::ReadClock,
};

/// Free space a read is given at least. A pipe holds 64 KiB; a batch of 64 small requests
/// is about 7 KiB, so one read takes a whole batch.
const READ_SPACE: usize = 16 * 1024;

/// What [`FrameReader::read_into`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// An envelope, now in the slot.
    Message,
    /// Bytes that were not one; the slot holds no meaningful envelope.
    Malformed(Malformed),
    /// The stream ended (and stays ended).
    End,
}

/// Frames from an [`AsyncRead`], decoded in place into the caller's envelope.
pub struct FrameReader<R> {
    reader: ReadClock<R>,
    buffer: BytesMut,
    codec: FrameCodec,
    ended: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R) -> Self {
        Self::with_codec(reader, FrameCodec::new())
    }

    pub fn with_codec(reader: R, codec: FrameCodec) -> Self {
        FrameReader {
            reader: ReadClock::new(reader),
            buffer: BytesMut::new(),
            codec,
            ended: false,
        }
    }

    /// Decodes the next frame into `slot`, reading when no whole frame is buffered.
    ///
    /// Cancel safe: the bytes read so far stay buffered, so dropping the future (a
    /// `select!` that took another branch) loses nothing.
    pub async fn read_into(&mut self, slot: &mut Envelope) -> std::io::Result<Read> {
        loop {
            if let Some(frame) = self.codec.decode_into(&mut self.buffer, slot) {
                return Ok(match frame {
                    Ok(()) => Read::Message,
                    Err(bad) => Read::Malformed(bad),
                });
            }
            if self.ended {
                return Ok(match self.codec.truncated(&mut self.buffer) {
                    Some(bad) => Read::Malformed(bad),
                    None => Read::End,
                });
            }
            if self.buffer.capacity() - self.buffer.len() < READ_SPACE / 2 {
                self.buffer.reserve(READ_SPACE);
            }
            if self.reader.read_buf(&mut self.buffer).await? == 0 {
                self.ended = true;
            }
        }
    }

    /// When the latest read that returned bytes completed: every frame decoded so far had
    /// arrived by then (see [`read_clock`](crate::read_clock)).
    pub fn last_read(&self) -> Instant {
        self.reader.last_read()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::Encoder;

    use super::*;
    use crate::{
        codec::MalformedReason,
        envelope::{Body, Kind},
    };

    fn request(id: u64, body_len: usize) -> Envelope {
        Envelope {
            id,
            kind: Kind::Request,
            destination: "user".into(),
            method: "get".into(),
            body: Body::Postcard(vec![7u8; body_len].into()),
            ..Envelope::default()
        }
    }

    #[tokio::test]
    async fn reads_frames_across_reads_skips_garbage_and_reports_a_cut_frame() {
        let (mut tx, rx) = tokio::io::duplex(256);
        let mut reader = FrameReader::with_codec(rx, FrameCodec::with_max_frame(4096));
        let mut bytes = BytesMut::new();
        let mut codec = FrameCodec::new();
        codec.encode(&request(1, 10), &mut bytes).unwrap();
        bytes.extend_from_slice(b"stray text\n");
        // Bigger than the duplex buffer: it arrives over several reads.
        codec.encode(&request(2, 1000), &mut bytes).unwrap();
        bytes.extend_from_slice(&[0, 5, 1, 2]); // a frame cut off by the end of the stream
        let writer = tokio::spawn(async move {
            tx.write_all(&bytes).await.unwrap();
        });
        let mut slot = Envelope::default();
        assert_eq!(reader.read_into(&mut slot).await.unwrap(), Read::Message);
        assert_eq!(slot, request(1, 10));
        let stray = reader.read_into(&mut slot).await.unwrap();
        assert!(
            matches!(
                stray,
                Read::Malformed(Malformed {
                    reason: MalformedReason::Cobs | MalformedReason::Postcard,
                    ..
                })
            ),
            "{stray:?}"
        );
        assert_eq!(reader.read_into(&mut slot).await.unwrap(), Read::Message);
        assert_eq!(slot, request(2, 1000));
        writer.await.unwrap();
        assert_eq!(
            reader.read_into(&mut slot).await.unwrap(),
            Read::Malformed(Malformed {
                reason: MalformedReason::Truncated,
                len: 3
            })
        );
        assert_eq!(reader.read_into(&mut slot).await.unwrap(), Read::End);
        assert_eq!(reader.read_into(&mut slot).await.unwrap(), Read::End);
    }

    #[tokio::test]
    async fn a_cancelled_read_loses_nothing() {
        let (mut tx, rx) = tokio::io::duplex(4096);
        let mut reader = FrameReader::new(rx);
        let mut slot = Envelope::default();
        let mut bytes = BytesMut::new();
        FrameCodec::new()
            .encode(&request(9, 20), &mut bytes)
            .unwrap();
        // Half a frame, then a read that is given up on.
        tx.write_all(&bytes[..10]).await.unwrap();
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            reader.read_into(&mut slot),
        )
        .await;
        assert!(gave_up.is_err(), "half a frame is not a frame");
        tx.write_all(&bytes[10..]).await.unwrap();
        assert_eq!(reader.read_into(&mut slot).await.unwrap(), Read::Message);
        assert_eq!(slot, request(9, 20));
    }
}
