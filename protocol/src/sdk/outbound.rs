//! Frames on their way to the console. A sender encodes its frame straight into one shared
//! buffer, and the writer task writes whatever is buffered with one system call per wakeup.
//!
//! Encoding at the sender, instead of queueing envelopes for the writer to encode, moves each
//! envelope once instead of through a channel and a sink, and the writer's turn is a swap of
//! two buffers and a write. For a service answering many small requests that was a tenth of
//! its work per message (the probe, `switchboard bench --only routing`, 64 in flight).
//!
//! Bounded: past [`MAX_FRAMES`] frames or [`MAX_BYTES`] bytes waiting, `send` waits for the
//! writer and `try_send` refuses. The service's own output is back-pressured by its stdout
//! pipe, and the console drains that pipe promptly.

use std::{
    pin::pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use bytes::BytesMut;
use tokio::{
    io::{AsyncWrite, AsyncWriteExt},
    sync::Notify,
};
use tokio_util::{codec::Encoder, sync::CancellationToken};

use crate::{codec::FrameCodec, envelope::Envelope};

/// Frames waiting for the writer before senders wait.
pub(crate) const MAX_FRAMES: usize = 1024;
/// Bytes waiting for the writer before senders wait: a bound on memory whatever the frames
/// carry (a frame is at most 1 MiB, so one always fits).
pub(crate) const MAX_BYTES: usize = 4 << 20;
/// The most capacity the writer's spare buffer keeps after a write: one burst of big frames
/// must not pin its size for good.
const SPARE_KEEP: usize = 256 * 1024;

/// The buffer shared by the senders and the writer task.
pub(crate) struct Outbound {
    state: Mutex<State>,
    /// Wakes the writer: the buffer went from empty to not.
    ready: Notify,
    /// Wakes senders waiting for room, or for the news that the writer is gone.
    room: Notify,
}

struct State {
    buf: BytesMut,
    frames: usize,
    codec: FrameCodec,
    /// The writer is gone or closing: nothing sent now would be written.
    closed: bool,
}

/// Why a frame was not taken.
pub(crate) enum Refused {
    /// No room now; the frame is handed back.
    Full(Envelope),
    /// The writer is gone.
    Closed,
}

impl Outbound {
    pub(crate) fn new() -> Outbound {
        Outbound {
            state: Mutex::new(State {
                buf: BytesMut::new(),
                frames: 0,
                codec: FrameCodec::new(),
                closed: false,
            }),
            ready: Notify::new(),
            room: Notify::new(),
        }
    }

    /// Encodes `envelope` into the buffer if there is room now. A frame that cannot be encoded
    /// (too large) is this service's own bug: it is dropped and logged, and counts as sent.
    // The envelope comes back by value when there is no room: the sender waits and tries
    // again with it, and boxing it would allocate on every such round.
    #[allow(clippy::result_large_err)]
    pub(crate) fn try_send(&self, envelope: Envelope) -> Result<(), Refused> {
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Closed);
        }
        if state.frames >= MAX_FRAMES || state.buf.len() >= MAX_BYTES {
            return Err(Refused::Full(envelope));
        }
        let was_empty = state.frames == 0;
        let State { codec, buf, .. } = &mut *state;
        if let Err(err) = codec.encode(&envelope, buf) {
            tracing::error!(cause = %err, "dropping a frame that cannot be encoded");
            return Ok(());
        }
        state.frames += 1;
        drop(state);
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Encodes `envelope` into the buffer, waiting for room. Fails only once the writer is gone.
    pub(crate) async fn send(&self, envelope: Envelope) -> Result<(), Closed> {
        // Almost always there is room: no waiter is registered for that (registering and
        // dropping one locks the Notify twice).
        let mut envelope = match self.try_send(envelope) {
            Ok(()) => return Ok(()),
            Err(Refused::Closed) => return Err(Closed),
            Err(Refused::Full(back)) => back,
        };
        loop {
            // Registered before trying, so room made between the try and the wait wakes it.
            let mut room = pin!(self.room.notified());
            room.as_mut().enable();
            match self.try_send(envelope) {
                Ok(()) => return Ok(()),
                Err(Refused::Closed) => return Err(Closed),
                Err(Refused::Full(back)) => envelope = back,
            }
            room.await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change under this lock is a single append or swap: a panic elsewhere cannot
        // leave it half done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(&self) {
        self.lock().closed = true;
        self.room.notify_waiters();
    }
}

/// The writer is gone.
#[derive(Debug)]
pub(crate) struct Closed;

/// Closes the outbound buffer however the writer ends, so that no sender waits for room that
/// will never come.
struct CloseOnDrop(Arc<Outbound>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Writes what the senders buffered, everything at once on each wakeup, until `close` is
/// cancelled; then refuses new frames, writes what is left, and ends.
pub(crate) async fn write_loop<W>(
    outbound: Arc<Outbound>,
    mut writer: W,
    close: CancellationToken,
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let outbound = CloseOnDrop(outbound);
    let outbound = &*outbound.0;
    let mut spare = BytesMut::new();
    loop {
        let mut ready = pin!(outbound.ready.notified());
        ready.as_mut().enable();
        let closing = close.is_cancelled();
        {
            let mut state = outbound.lock();
            state.closed |= closing;
            std::mem::swap(&mut state.buf, &mut spare);
            state.frames = 0;
        }
        if !spare.is_empty() {
            outbound.room.notify_waiters();
            writer.write_all(&spare).await?;
            writer.flush().await?;
            spare.clear();
            if spare.capacity() > SPARE_KEEP {
                spare = BytesMut::new();
            }
            continue;
        }
        if closing {
            writer.flush().await?;
            return Ok(());
        }
        tokio::select! {
            biased;
            () = ready => {}
            () = close.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tokio_util::codec::FramedRead;

    use super::*;
    use crate::codec::Frame;

    fn frame(id: u64) -> Envelope {
        Envelope {
            id,
            ..Envelope::default()
        }
    }

    #[tokio::test]
    async fn frames_arrive_in_order_and_the_writer_drains_on_close() {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let outbound = Arc::new(Outbound::new());
        let close = CancellationToken::new();
        let writer = tokio::spawn(write_loop(outbound.clone(), ours, close.clone()));
        for id in 1..=100 {
            outbound.send(frame(id)).await.unwrap();
        }
        close.cancel();
        writer.await.unwrap().unwrap();
        assert!(matches!(
            outbound.try_send(frame(101)),
            Err(Refused::Closed)
        ));
        let ids: Vec<u64> = FramedRead::new(theirs, FrameCodec::new())
            .map(|f| match f.unwrap() {
                Frame::Message(e) => e.id,
                Frame::Malformed(bad) => panic!("{bad:?}"),
            })
            .collect()
            .await;
        assert_eq!(ids, (1..=100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_full_buffer_refuses_then_makes_room_as_the_writer_drains() {
        let outbound = Arc::new(Outbound::new());
        for id in 0..MAX_FRAMES as u64 {
            assert!(outbound.try_send(frame(id)).is_ok());
        }
        assert!(matches!(outbound.try_send(frame(0)), Err(Refused::Full(_))));
        // A sender waits for room; the writer, once started, makes it.
        let waiting = tokio::spawn({
            let outbound = outbound.clone();
            async move { outbound.send(frame(9999)).await.is_ok() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let (ours, mut theirs) = tokio::io::duplex(64 << 20);
        let close = CancellationToken::new();
        let writer = tokio::spawn(write_loop(outbound.clone(), ours, close.clone()));
        assert!(waiting.await.unwrap(), "the waiting sender got room");
        close.cancel();
        writer.await.unwrap().unwrap();
        let mut written = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut theirs, &mut written)
            .await
            .unwrap();
        let frames = written.iter().filter(|&&b| b == 0).count() / 2;
        assert_eq!(frames, MAX_FRAMES + 1);
    }

    #[tokio::test]
    async fn senders_waiting_for_room_fail_once_the_writer_is_gone() {
        let outbound = Arc::new(Outbound::new());
        for id in 0..MAX_FRAMES as u64 {
            assert!(outbound.try_send(frame(id)).is_ok());
        }
        let waiting = tokio::spawn({
            let outbound = outbound.clone();
            async move { outbound.send(frame(1)).await.is_err() }
        });
        tokio::task::yield_now().await;
        // A writer whose pipe is closed fails at its first write and ends.
        let (ours, theirs) = tokio::io::duplex(16);
        drop(theirs);
        let result = write_loop(outbound.clone(), ours, CancellationToken::new()).await;
        assert!(result.is_err());
        assert!(waiting.await.unwrap(), "the waiting sender was told");
    }
}
