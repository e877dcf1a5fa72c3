//! Streams: a request answered item by item. The producer sends `StreamItem` frames and one
//! `StreamEnd`; the receiver grants `Credit`. The console forwards each item to the caller and
//! each grant to the producer, and enforces the credit itself: a producer that sends past what
//! was granted has its stream ended (`overloaded`) and cancelled, so one fast producer can never
//! fill a slow receiver's queue.
//!
//! The request's deadline covers the whole stream. If either end dies, the other gets a clean
//! end: the receiver a `StreamEnd` with `unavailable`, the producer a `Cancel`.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use switchboard_protocol::{Body, Envelope, ErrorCode, Kind, Status};
use tokio::sync::mpsc;

use super::{Caller, InFlight, Router, deliver, lock};
use crate::registry::{InstanceHandle, InstanceId};

/// Items a receiver may have outstanding before its first grant (SPEC.md, "Streams").
pub const INITIAL_CREDIT: u32 = 8;
/// The most credit a receiver may bank; grants beyond it are capped.
pub const MAX_CREDIT: u32 = 4096;

/// Who receives a stream, as its grants and cancels identify it: the caller instance (`None`
/// for a caller inside the console) and the id of its request.
pub(super) type StreamKey = (Option<InstanceId>, u64);

impl Router {
    /// A `StreamItem` from the producer: forward it under the receiver's credit.
    pub(super) fn stream_item(&self, from: &Arc<InstanceHandle>, mut item: Envelope) {
        let routed_id = item.correlation;
        let mut in_flight = self.in_flight();
        let Some(flight) = in_flight.get_mut(&routed_id) else {
            drop(in_flight);
            self.inner
                .counters
                .late_replies
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        if flight.target.id != from.id {
            tracing::warn!(service = %from.service, "stream item for a stream it does not produce");
            return;
        }
        if !flight.streaming {
            flight.streaming = true;
            let key = flight.caller.stream_key(flight.caller_id);
            lock(&self.inner.streams).insert(key, routed_id);
        }
        if flight.credit == 0 {
            let flight = in_flight.remove(&routed_id);
            drop(in_flight);
            if let Some(flight) = flight {
                tracing::warn!(service = %from.service, "stream producer exceeded its credit; stream ended");
                self.end_flight(
                    routed_id,
                    flight,
                    ErrorCode::Overloaded,
                    "the producer sent more items than the receiver granted",
                    true,
                );
            }
            return;
        }
        flight.credit -= 1;
        item.correlation = flight.caller_id;
        item.trace = flight.trace;
        let receiver_gone = match &flight.caller {
            Caller::Instance(handle) => {
                deliver(handle, &item);
                false
            }
            Caller::LocalStream(items) => {
                matches!(
                    items.try_send(item),
                    Err(mpsc::error::TrySendError::Closed(_))
                )
            }
            Caller::Local(_) => false,
        };
        if receiver_gone {
            // The caller inside the console dropped its end: stop the producer.
            if let Some(flight) = in_flight.remove(&routed_id) {
                drop(in_flight);
                self.cancel_flight(routed_id, &flight);
            }
        }
    }

    /// A `Credit` or `Cancel` from the receiver instance `from` for its request `correlation`.
    pub(super) fn receiver_control(&self, from: &Arc<InstanceHandle>, envelope: &Envelope) {
        self.receiver_says((Some(from.id), envelope.correlation), &envelope.kind);
    }

    fn receiver_says(&self, key: StreamKey, kind: &Kind) {
        let Some(routed_id) = lock(&self.inner.streams).get(&key).copied() else {
            return; // not streaming (yet), or already over
        };
        let mut in_flight = self.in_flight();
        match kind {
            Kind::Credit(more) => {
                let Some(flight) = in_flight.get_mut(&routed_id) else {
                    return;
                };
                flight.credit = flight.credit.saturating_add(*more).min(MAX_CREDIT);
                let target = flight.target.clone();
                drop(in_flight);
                deliver(&target, &control(routed_id, Kind::Credit(*more)));
            }
            Kind::Cancel => {
                if let Some(flight) = in_flight.remove(&routed_id) {
                    drop(in_flight);
                    self.cancel_flight(routed_id, &flight);
                }
            }
            _ => {}
        }
    }

    /// Calls a streaming method from inside the console (the gateway, tests). Items arrive on
    /// the returned [`LocalStream`], which grants credit as they are taken.
    pub fn call_stream(&self, from: &str, mut envelope: Envelope) -> LocalStream {
        // Room for the full window plus the end; the console never forwards beyond the credit.
        let (items, rx) = mpsc::channel(MAX_LOCAL_WINDOW as usize + 2);
        let caller_id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        envelope.id = caller_id;
        let caller = Caller::LocalStream(items);
        self.dispatch(
            &super::local_caller(from),
            caller,
            &mut envelope,
            Instant::now(),
        );
        LocalStream {
            router: self.clone(),
            caller_id,
            rx,
            taken: 0,
            done: false,
        }
    }

    /// Ends a flight that is removed from the table: the receiver gets `code` (as a StreamEnd
    /// once items have flowed, else as a Response), the producer a Cancel when `cancel`.
    pub(super) fn end_flight(
        &self,
        routed_id: u64,
        flight: InFlight,
        code: ErrorCode,
        message: &str,
        cancel: bool,
    ) {
        flight.target.outstanding.fetch_sub(1, Ordering::Relaxed);
        self.forget_stream(&flight);
        self.finished(&flight, Some(code), Instant::now());
        if cancel {
            deliver(&flight.target, &control(routed_id, Kind::Cancel));
        }
        let end = ending(&flight, code, message);
        flight.caller.deliver(end);
    }

    /// The receiver no longer wants the stream: stop the producer. Not the target's fault, so
    /// its breaker is not fed.
    pub(super) fn cancel_flight(&self, routed_id: u64, flight: &InFlight) {
        flight.target.outstanding.fetch_sub(1, Ordering::Relaxed);
        self.forget_stream(flight);
        deliver(&flight.target, &control(routed_id, Kind::Cancel));
    }

    /// Drops the receiver's index entry of a flight that is over.
    pub(super) fn forget_stream(&self, flight: &InFlight) {
        if flight.streaming {
            lock(&self.inner.streams).remove(&flight.caller.stream_key(flight.caller_id));
        }
    }
}

/// The error that ends `flight` for its caller: a StreamEnd once it is streaming.
pub(super) fn ending(flight: &InFlight, code: ErrorCode, message: &str) -> Envelope {
    let status = Status::error(code, message);
    Envelope {
        correlation: flight.caller_id,
        trace: flight.trace,
        kind: if flight.streaming {
            Kind::StreamEnd(status)
        } else {
            Kind::Response(status)
        },
        body: Body::Empty,
        ..Envelope::default()
    }
}

fn control(routed_id: u64, kind: Kind) -> Envelope {
    Envelope {
        correlation: routed_id,
        kind,
        ..Envelope::default()
    }
}

/// The window a [`LocalStream`] keeps open: it grants half of it back at a time.
const MAX_LOCAL_WINDOW: u32 = INITIAL_CREDIT;

/// The receiving end of a stream called from inside the console.
pub struct LocalStream {
    router: Router,
    caller_id: u64,
    rx: mpsc::Receiver<Envelope>,
    taken: u32,
    done: bool,
}

/// One step of a stream.
#[derive(Debug, PartialEq)]
pub enum StreamStep {
    Item(Body),
    /// The stream ended; `Err` carries the error code and message.
    End(Result<(), (ErrorCode, String)>),
}

impl LocalStream {
    /// The next item, or the end. After the end, keeps answering the end. A plain answer from
    /// a method that does not stream comes as one item, then the end.
    pub async fn next(&mut self) -> StreamStep {
        if self.done {
            return StreamStep::End(Ok(()));
        }
        let Some(envelope) = self.rx.recv().await else {
            self.done = true;
            return StreamStep::End(Err((
                ErrorCode::Unavailable,
                "the console is shutting down".into(),
            )));
        };
        match envelope.kind {
            Kind::StreamItem => {
                self.taken += 1;
                if self.taken >= MAX_LOCAL_WINDOW / 2 {
                    let more = std::mem::take(&mut self.taken);
                    self.router
                        .receiver_says((None, self.caller_id), &Kind::Credit(more));
                }
                StreamStep::Item(envelope.body)
            }
            // A method that is not a stream answers once: its answer is the one item.
            Kind::Response(Status::Ok) if envelope.body != Body::Empty => {
                self.done = true;
                StreamStep::Item(envelope.body)
            }
            Kind::StreamEnd(Status::Ok) | Kind::Response(Status::Ok) => {
                self.done = true;
                StreamStep::End(Ok(()))
            }
            Kind::StreamEnd(Status::Error(err)) | Kind::Response(Status::Error(err)) => {
                self.done = true;
                StreamStep::End(Err((err.code, err.message.to_string())))
            }
            other => {
                self.done = true;
                StreamStep::End(Err((ErrorCode::Internal, format!("unexpected {other:?}"))))
            }
        }
    }
}

impl Drop for LocalStream {
    fn drop(&mut self) {
        if !self.done {
            self.router
                .receiver_says((None, self.caller_id), &Kind::Cancel);
        }
    }
}
