//! When the bytes of an incoming message were read from its pipe.
//!
//! A request's bytes were read after its caller sent it, so the instant of the read that
//! completed a frame bounds the send from above. In a service,
//! [`Context::received`](crate::sdk::Context::received) carries it to handlers: a store that reuses one read snapshot for several requests (see the
//! example services' `Store::read_now`) may do so only for requests received before the
//! snapshot was taken, or a caller could miss a write that was acknowledged before it asked.
//! It also starts a request's deadline and latency from the read, not from when the
//! dispatcher came to the frame. The console does the same with what it routes, and so reads
//! the clock once per read of a pipe instead of twice per request it routes.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use tokio::io::{AsyncRead, ReadBuf};

/// An [`AsyncRead`] that remembers when its last read returned bytes.
pub struct ReadClock<R> {
    inner: R,
    last_read: Instant,
}

impl<R> ReadClock<R> {
    pub fn new(inner: R) -> Self {
        ReadClock {
            inner,
            last_read: Instant::now(),
        }
    }

    /// When the latest read that returned bytes completed: every frame decoded so far had
    /// arrived by then.
    pub fn last_read(&self) -> Instant {
        self.last_read
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ReadClock<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last_read = Instant::now();
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn stamps_reads_that_return_bytes_only() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut reader = ReadClock::new(rx);
        let created = reader.last_read();
        let before = Instant::now();
        tx.write_all(b"abc").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(reader.read(&mut buf).await.unwrap(), 3);
        let stamped = reader.last_read();
        assert!(stamped >= before && stamped > created);
        drop(tx);
        assert_eq!(reader.read(&mut buf).await.unwrap(), 0, "end of stream");
        assert_eq!(reader.last_read(), stamped, "an empty read is not a read");
    }
}
