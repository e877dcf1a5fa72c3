//! Streams in the SDK: a method that answers with many items ([`StreamSink`], served with
//! [`Service::stream`](super::Service::stream)), and a call that reads them
//! ([`ItemStream`], from [`Context::call_stream`](super::Context::call_stream)).
//!
//! Flow control is by credit, as SPEC.md says: the receiver starts with [`INITIAL_CREDIT`]
//! items granted and grants more as it takes them; the producer's `send` waits while it has
//! none. A slow receiver therefore slows its producer down instead of filling queues.

use std::{
    marker::PhantomData,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Instant,
};

use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::{
    body::{Encoding, decode, encode},
    error::{CallError, HandlerError},
    wire::Link,
};
use crate::envelope::{Body, Envelope, Kind, Status};

/// Items a receiver has granted before it grants anything (SPEC.md, "Streams").
pub const INITIAL_CREDIT: u32 = 8;

/// The producer's view of one stream's credit.
pub(crate) struct Gate {
    credit: AtomicU32,
    more: Notify,
    pub(crate) cancelled: CancellationToken,
}

impl Gate {
    pub(crate) fn new() -> Arc<Gate> {
        Arc::new(Gate {
            credit: AtomicU32::new(INITIAL_CREDIT),
            more: Notify::new(),
            cancelled: CancellationToken::new(),
        })
    }

    pub(crate) fn grant(&self, more: u32) {
        let _ = self
            .credit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                Some(c.saturating_add(more))
            });
        self.more.notify_one();
    }

    /// Takes one unit of credit, waiting for a grant if there is none.
    async fn take(&self) -> Result<(), StreamClosed> {
        loop {
            let notified = self.more.notified();
            if self.cancelled.is_cancelled() {
                return Err(StreamClosed);
            }
            if self
                .credit
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1))
                .is_ok()
            {
                return Ok(());
            }
            tokio::select! {
                () = notified => {}
                () = self.cancelled.cancelled() => return Err(StreamClosed),
            }
        }
    }
}

/// The receiver cancelled the stream, or the console is gone: stop producing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stream's receiver is gone")]
pub struct StreamClosed;

impl From<StreamClosed> for HandlerError {
    fn from(_: StreamClosed) -> Self {
        HandlerError::unavailable("the stream's receiver is gone")
    }
}

/// Where a streaming method sends its items, each encoded like the request (postcard or JSON).
pub struct StreamSink<T> {
    pub(crate) link: Arc<Link>,
    pub(crate) request_id: u64,
    pub(crate) trace: u64,
    pub(crate) encoding: Encoding,
    pub(crate) gate: Arc<Gate>,
    pub(crate) _item: PhantomData<fn(T)>,
}

impl<T: Serialize> StreamSink<T> {
    /// Sends one item once the receiver has credit for it.
    pub async fn send(&self, item: &T) -> Result<(), StreamClosed> {
        let body = encode(item, self.encoding).map_err(|err| {
            tracing::error!(cause = %err.message, "a stream item does not encode");
            StreamClosed
        })?;
        self.gate.take().await?;
        let envelope = Envelope {
            id: self.link.next_id(),
            correlation: self.request_id,
            trace: self.trace,
            kind: Kind::StreamItem,
            body,
            ..Envelope::default()
        };
        self.link.send(envelope).await.map_err(|_| StreamClosed)
    }

    /// Whether the receiver has cancelled.
    pub fn is_closed(&self) -> bool {
        self.gate.cancelled.is_cancelled()
    }

    /// Resolves when the receiver cancels.
    pub async fn closed(&self) {
        self.gate.cancelled.cancelled().await;
    }
}

/// Items of a stream this service called, in order.
pub struct ItemStream<T> {
    pub(crate) link: Arc<Link>,
    pub(crate) id: u64,
    pub(crate) rx: mpsc::Receiver<Envelope>,
    pub(crate) deadline: Instant,
    pub(crate) service: String,
    pub(crate) method: String,
    pub(crate) taken: u32,
    pub(crate) done: bool,
    pub(crate) _item: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> ItemStream<T> {
    /// The next item; `None` once the stream ended well. An error ends it too.
    pub async fn next(&mut self) -> Option<Result<T, CallError>> {
        if self.done {
            return None;
        }
        let received = tokio::time::timeout_at(self.deadline.into(), self.rx.recv()).await;
        let envelope = match received {
            Ok(Some(envelope)) => envelope,
            Ok(None) => return self.fail(CallError::Disconnected),
            Err(_) => {
                let err = CallError::Timeout {
                    service: self.service.clone(),
                    method: self.method.clone(),
                };
                return self.fail(err);
            }
        };
        match envelope.kind {
            Kind::StreamItem => {
                self.taken += 1;
                // Grant back half the window at a time: one Credit frame per four items.
                if self.taken >= INITIAL_CREDIT / 2 {
                    let more = std::mem::take(&mut self.taken);
                    let _ = self.link.try_send(Envelope {
                        id: self.link.next_id(),
                        correlation: self.id,
                        kind: Kind::Credit(more),
                        ..Envelope::default()
                    });
                }
                Some(decode(&envelope.body).map_err(|e| CallError::Decode {
                    service: self.service.clone(),
                    method: self.method.clone(),
                    reason: e.message,
                }))
            }
            Kind::StreamEnd(Status::Ok) | Kind::Response(Status::Ok) => {
                self.finish();
                None
            }
            Kind::StreamEnd(Status::Error(err)) | Kind::Response(Status::Error(err)) => {
                let err = CallError::Remote {
                    service: self.service.clone(),
                    method: self.method.clone(),
                    code: err.code,
                    message: err.message,
                };
                self.fail(err)
            }
            other => {
                let err = CallError::Decode {
                    service: self.service.clone(),
                    method: self.method.clone(),
                    reason: format!("unexpected frame in a stream: {other:?}"),
                };
                self.fail(err)
            }
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.link.forget_stream(self.id);
    }

    fn fail(&mut self, err: CallError) -> Option<Result<T, CallError>> {
        self.finish();
        Some(Err(err))
    }
}

impl<T> Drop for ItemStream<T> {
    fn drop(&mut self) {
        if !self.done {
            self.link.forget_stream(self.id);
            let _ = self.link.try_send(Envelope {
                id: self.link.next_id(),
                correlation: self.id,
                kind: Kind::Cancel,
                ..Envelope::default()
            });
        }
    }
}

/// Erased form of a sink, for the dispatcher.
pub(crate) fn sink<T>(link: Arc<Link>, request: &Envelope, gate: Arc<Gate>) -> StreamSink<T> {
    StreamSink {
        link,
        request_id: request.id,
        trace: request.trace,
        encoding: Encoding::of(&request.body),
        gate,
        _item: PhantomData,
    }
}

/// The final frame of a stream served by this service.
pub(crate) fn end(link: &Link, request: &Envelope, status: Status) -> Envelope {
    Envelope {
        id: link.next_id(),
        correlation: request.id,
        trace: request.trace,
        kind: Kind::StreamEnd(status),
        body: Body::Empty,
        ..Envelope::default()
    }
}
