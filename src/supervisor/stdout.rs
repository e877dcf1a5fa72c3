//! A protocol service's stdout: frames, read and decoded in place, one task per instance.
//!
//! Control frames (Hello, Ready, Subscribe/Unsubscribe, JobResult) are handled here; every
//! other frame goes to the router. A malformed frame is skipped, counted and logged; a burst of
//! them marks the instance degraded until a quiet window passes ([`super::degraded`]).

use std::{
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use switchboard_protocol::{
    Envelope, Hello, Kind, PROTOCOL_VERSION, Welcome,
    codec::Malformed,
    frame_reader::{FrameReader, Read},
};
use tokio::{io::AsyncRead, sync::mpsc};
use tokio_util::sync::CancellationToken;

use super::{InstanceEvent, degraded::BadFrameWatch};
use crate::{
    logs::{LogStore, Stream},
    registry::InstanceHandle,
    router::Router,
};

/// Frames routed from one read before the writers get a turn: a big batch is forwarded in
/// chunks, so the next process starts on the first chunk while the console routes the rest.
/// 16 measured best against 8, 32 and whole batches (`switchboard bench --only routing`, 64
/// in flight: 187-231 k req/s against 137-177 k for whole batches, alternating runs).
const PIPELINE_CHUNK: usize = 16;

/// What a protocol service's stdout reader tells the supervising task.
pub struct ReaderSignals {
    /// Cancelled when stdout ends.
    pub closed: CancellationToken,
    /// Cancelled at the handshake, when the heartbeat check may start.
    pub handshake: CancellationToken,
}

/// The reader of one instance's stdout, and what it answers or reports to.
pub struct StdoutReader {
    pub handle: Arc<InstanceHandle>,
    pub events: mpsc::Sender<InstanceEvent>,
    pub logs: Arc<LogStore>,
    pub router: Router,
    pub welcome: Welcome,
    pub signals: ReaderSignals,
}

impl StdoutReader {
    /// Reads frames until stdout ends (EOF or a read error), then tells the supervising task.
    pub async fn run(mut self, stdout: impl AsyncRead + Unpin) {
        // However this ends, the supervising task hears of it.
        let _closed = self.signals.closed.clone().drop_guard();
        let mut frames = FrameReader::new(stdout);
        // Decoded into in place, frame after frame: never moved (see `FrameReader`).
        let mut envelope = Envelope::default();
        let mut since_yield = 0;
        let mut bad_frames = BadFrameWatch::default();
        loop {
            let read = match bad_frames.clears_at() {
                None => frames.read_into(&mut envelope).await,
                // Degraded: the read is cancel safe, so it can race the end of the quiet window.
                Some(at) => tokio::select! {
                    read = frames.read_into(&mut envelope) => read,
                    () = tokio::time::sleep_until(at.into()) => {
                        if bad_frames.quiet(Instant::now()) {
                            self.handle.degraded.store(false, Ordering::Relaxed);
                            let id = self.handle.id;
                            let _ = self.events.send(InstanceEvent::Recovered { id }).await;
                        }
                        continue;
                    }
                },
            };
            // Counted for every frame, bad ones too: a flood of garbage yields like traffic does.
            since_yield += 1;
            if since_yield == PIPELINE_CHUNK {
                since_yield = 0;
                tokio::task::yield_now().await;
            }
            match read {
                Ok(Read::Message) => {}
                Ok(Read::Malformed(bad)) => {
                    self.malformed(&bad, &mut bad_frames).await;
                    continue;
                }
                Ok(Read::End) => break,
                Err(err) => {
                    tracing::debug!(service = %self.handle.service, cause = %err, "stdout read failed");
                    break;
                }
            }
            if !self.control(&envelope).await {
                self.router
                    .route(&self.handle, &mut envelope, frames.last_read());
            }
        }
    }

    async fn malformed(&self, bad: &Malformed, bad_frames: &mut BadFrameWatch) {
        let id = self.handle.id;
        let count = self.handle.bad_frames.fetch_add(1, Ordering::Relaxed) + 1;
        self.logs.push(
            &self.handle.service,
            id.replica,
            Stream::Console,
            format!(
                "bad frame on stdout ({:?}, {} bytes skipped; {count} so far)",
                bad.reason, bad.len
            ),
        );
        if bad_frames.bad_frame(Instant::now()) {
            self.handle.degraded.store(true, Ordering::Relaxed);
            let _ = self
                .events
                .send(InstanceEvent::BadFrames { id, count })
                .await;
        }
    }

    /// Handles a frame meant for the console itself; false for one to route.
    async fn control(&mut self, envelope: &Envelope) -> bool {
        let id = self.handle.id;
        match &envelope.kind {
            Kind::Hello(hello) => {
                self.hello(envelope.id, hello).await;
                self.router.forward(&self.handle, envelope);
            }
            Kind::Ready => {
                self.handle.routable.store(true, Ordering::Release);
                self.router.forward(&self.handle, envelope);
                let _ = self.events.send(InstanceEvent::Ready { id }).await;
            }
            Kind::Subscribe | Kind::Unsubscribe => {
                if let Ok(mut subscriptions) = self.handle.subscriptions.write() {
                    if envelope.kind == Kind::Subscribe {
                        if !subscriptions.iter().any(|s| *s == envelope.destination) {
                            subscriptions.push(envelope.destination.to_string());
                        }
                    } else {
                        subscriptions.retain(|s| *s != envelope.destination);
                    }
                    self.router.subscriptions_changed(
                        &self.handle.service,
                        id.replica,
                        &subscriptions,
                    );
                }
                self.router.forward(&self.handle, envelope);
            }
            Kind::JobResult(status) => {
                let result = InstanceEvent::JobResult {
                    id,
                    status: status.clone(),
                    body: envelope.body.clone(),
                };
                let _ = self.events.send(result).await;
            }
            _ => return false,
        }
        true
    }

    /// The handshake: Welcome answers Hello, the topics it names are subscribed, and the
    /// heartbeat check may start (the service knows its period from now on).
    async fn hello(&mut self, correlation: u64, hello: &Hello) {
        let id = self.handle.id;
        self.welcome.protocol_version = PROTOCOL_VERSION;
        let answer = Envelope {
            id: 1,
            correlation,
            kind: Kind::Welcome(Box::new(self.welcome.clone())),
            ..Envelope::default()
        };
        if let Ok(mut subscriptions) = self.handle.subscriptions.write() {
            subscriptions.clone_from(&hello.topics);
        }
        self.router
            .subscriptions_changed(&self.handle.service, id.replica, &hello.topics);
        let _ = self.handle.link.try_send(&answer);
        self.signals.handshake.cancel();
        let hello = InstanceEvent::Hello {
            id,
            hello: hello.clone(),
        };
        let _ = self.events.send(hello).await;
    }
}
