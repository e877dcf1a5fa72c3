//! Dispatching what the console sends to a serving service: a request to its handler (under
//! the in-flight limit, answered `overloaded` past it), an event to each matching
//! subscription, an answer or stream item to the call waiting for it, Shutdown to the drain.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{FutureExt, future::BoxFuture};
use tokio_util::task::TaskTracker;

use super::{
    context::Context,
    error::HandlerError,
    stream::{Gate, end as stream_end},
    wire::Link,
};
use crate::{
    envelope::{Body, Envelope, ErrorCode, Kind, Status},
    segment::Outcome,
    topic::topic_matches,
};

/// Handlers by method name, looked up for every request: foldhash, not SipHash. The keys are
/// the service's own methods, fixed before it serves, so a caller choosing names can only
/// make its own lookups miss.
pub(super) type Methods = HashMap<String, Handler, foldhash::fast::RandomState>;

pub(super) type MethodFn =
    Arc<dyn Fn(Context, Body) -> BoxFuture<'static, Result<Body, HandlerError>> + Send + Sync>;
pub(super) type StreamFn = Arc<
    dyn Fn(
            Context,
            Body,
            Arc<Link>,
            Envelope,
            Arc<Gate>,
        ) -> BoxFuture<'static, Result<(), HandlerError>>
        + Send
        + Sync,
>;

/// How a method answers: once, or with a stream of items.
#[derive(Clone)]
pub(super) enum Handler {
    Unary(MethodFn),
    Stream(StreamFn),
}

pub(super) type EventFn = Arc<
    dyn Fn(Context, String, Body) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync,
>;
/// Requests being handled, against the service's limit. The limit is only ever tried, never
/// waited for, so a counter does what a semaphore would, without the semaphore's lock on every
/// release (3 % of the probe's samples with 64 requests in flight).
pub(super) struct InFlight {
    count: AtomicUsize,
    limit: usize,
}

/// One request counted in [`InFlight`] until dropped.
struct Entered(Arc<InFlight>);

impl InFlight {
    pub(super) fn new(limit: usize) -> InFlight {
        InFlight {
            count: AtomicUsize::new(0),
            limit,
        }
    }

    fn try_enter(this: &Arc<InFlight>) -> Option<Entered> {
        this.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < this.limit).then_some(n + 1)
            })
            .ok()?;
        Some(Entered(this.clone()))
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Routes each incoming frame to its handler task.
pub(super) struct Dispatcher {
    pub(super) methods: Methods,
    pub(super) subscriptions: Vec<(String, EventFn)>,
    pub(super) root: Context,
    pub(super) tracker: TaskTracker,
    pub(super) in_flight: Arc<InFlight>,
    /// Run a request's handler on the reader until it first waits (see [`Dispatcher::request`]).
    pub(super) inline: bool,
}

impl Dispatcher {
    /// `received`: when the frame's last bytes were read from the console.
    pub(super) fn dispatch(&self, envelope: &mut Envelope, received: Instant) {
        match envelope.kind {
            Kind::Request => self.request(envelope, received),
            Kind::Event => self.event(envelope, received),
            Kind::Response(_) | Kind::StreamEnd(_) => {
                self.root.link.answer(std::mem::take(envelope));
            }
            Kind::StreamItem => self.root.link.stream_item(std::mem::take(envelope)),
            Kind::Credit(_) | Kind::Cancel => self.root.link.control(envelope),
            Kind::Shutdown => {
                tracing::info!("shutdown requested: draining");
                self.root.link.drain();
            }
            // A Cancel for a plain request is not acted on: it runs to completion and the
            // console drops its answer.
            _ => tracing::debug!(kind = ?envelope.kind, "ignoring frame"),
        }
    }

    fn request(&self, envelope: &mut Envelope, received: Instant) {
        let link = self.root.link.clone();
        if link.is_draining() {
            return self.reject(envelope, ErrorCode::Unavailable, "service is draining");
        }
        let Some(handler) = self.methods.get(envelope.method.as_str()).cloned() else {
            let message = format!("no method `{}`", envelope.method);
            return self.reject(envelope, ErrorCode::NotFound, &message);
        };
        let Some(permit) = InFlight::try_enter(&self.in_flight) else {
            return self.reject(
                envelope,
                ErrorCode::Overloaded,
                "too many requests in flight",
            );
        };
        let ctx = self.root.for_message(envelope, received);
        link.segment.request_started();
        let handler = match handler {
            Handler::Unary(handler) => handler,
            Handler::Stream(handler) => {
                let envelope = std::mem::take(envelope);
                self.tracker
                    .spawn(serve_stream(handler, ctx, envelope, received, permit));
                return;
            }
        };
        let deadline = ctx.deadline();
        let (id, trace) = (envelope.id, envelope.trace);
        let mut work = panic_answers_internal(handler(ctx, std::mem::take(&mut envelope.body)));
        // On a current-thread runtime the work is first polled right here, on the reader, and
        // only spawned if it has to wait: most handlers answer without waiting (a lookup, a
        // computation), and for them a task per request was a large part of the service's cost
        // per message (spawn, schedule, the tracker's bookkeeping), as were the deadline timer
        // and the futures moved into it. Nothing runs in parallel on that runtime anyway, so
        // this changes no concurrency. A multi-threaded runtime spawns at once, so a handler's
        // work runs on the workers, not on the reader. (A handler pending on the first poll
        // registered a no-op waker; the task polls it again at once, with the real one.)
        if self.inline
            && let Some(result) = (&mut work).now_or_never()
        {
            let answer = answer_request(&link, id, trace, received, result);
            if let Some(answer) = link.try_send_back(answer) {
                // The outbound queue is full: wait for room off the reader.
                self.tracker.spawn(async move {
                    let _ = link.send(answer).await;
                    drop(permit);
                });
            }
            return;
        }
        self.tracker.spawn(async move {
            let result = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline.into(), work)
                    .await
                    .unwrap_or_else(|_| {
                        Err(HandlerError::new(ErrorCode::Timeout, "deadline passed"))
                    }),
                None => work.await,
            };
            let answer = answer_request(&link, id, trace, received, result);
            let _ = link.send(answer).await;
            drop(permit);
        });
    }

    fn reject(&self, envelope: &Envelope, code: ErrorCode, message: &str) {
        let link = self.root.link.clone();
        link.segment.request_started();
        link.segment
            .request_finished(Outcome::Error, Duration::ZERO);
        let answer = reply(
            &link,
            envelope.id,
            envelope.trace,
            Status::error(code, message),
            Body::Empty,
        );
        // Answered from a task so the reader never waits on a full outbound queue.
        self.tracker.spawn(async move {
            let _ = link.send(answer).await;
        });
    }

    /// Runs every handler whose pattern matches the event's topic. A durable event (one with a
    /// `correlation`) is acknowledged once all of them have returned Ok; one that failed is not,
    /// so the console delivers it again.
    fn event(&self, envelope: &Envelope, received: Instant) {
        self.root.link.segment.event_received();
        let topic = envelope.destination.to_string();
        let mut handled = Vec::new();
        for (pattern, handler) in &self.subscriptions {
            if !topic_matches(pattern, &topic) {
                continue;
            }
            let work = handler(
                self.root.for_message(envelope, received),
                topic.clone(),
                envelope.body.clone(),
            );
            let topic = topic.clone();
            let (done, outcome) = tokio::sync::oneshot::channel();
            handled.push(outcome);
            self.tracker.spawn(async move {
                let result = work.await;
                if let Err(err) = &result {
                    tracing::warn!(%topic, cause = %err, "event handler failed");
                }
                let _ = done.send(result.is_ok());
            });
        }
        if envelope.correlation == 0 {
            return;
        }
        let (link, delivery) = (self.root.link.clone(), envelope.correlation);
        self.tracker.spawn(async move {
            for outcome in handled {
                if outcome.await != Ok(true) {
                    return;
                }
            }
            let ack = Envelope {
                id: link.next_id(),
                correlation: delivery,
                kind: Kind::Ack,
                ..Envelope::default()
            };
            let _ = link.send(ack).await;
        });
    }
}

/// Runs a streaming handler under the request's deadline and ends the stream with its outcome.
async fn serve_stream(
    handler: StreamFn,
    ctx: Context,
    request: Envelope,
    received: Instant,
    permit: Entered,
) {
    let link = ctx.link.clone();
    let gate = link.produce(request.id);
    let deadline = ctx.deadline();
    // The sink encodes items like the request, so it keeps the request (and its body's tag).
    let work = handler(
        ctx,
        request.body.clone(),
        link.clone(),
        request.clone(),
        gate.clone(),
    );
    let work = panic_answers_internal(work);
    let result = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.into(), work)
            .await
            .unwrap_or_else(|_| Err(HandlerError::new(ErrorCode::Timeout, "deadline passed"))),
        None => work.await,
    };
    link.produced(request.id);
    let outcome = match &result {
        Ok(()) => Outcome::Ok,
        Err(err) if err.code == ErrorCode::Timeout => Outcome::Timeout,
        Err(_) => Outcome::Error,
    };
    link.segment.request_finished(outcome, received.elapsed());
    // A cancelled stream needs no end: the console has already ended it for the receiver.
    if !gate.cancelled.is_cancelled() {
        let status = match result {
            Ok(()) => Status::Ok,
            Err(err) => err.into_status(),
        };
        let _ = link.send(stream_end(&link, &request, status)).await;
    }
    drop(permit);
}

/// A handler that panics answers `internal` (the panic hook logs it on stderr): its caller does
/// not wait for the deadline, and the reader, which may be running the handler inline, carries
/// on.
fn panic_answers_internal<T>(
    work: impl Future<Output = Result<T, HandlerError>>,
) -> impl Future<Output = Result<T, HandlerError>> {
    std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .map(|outcome| {
            outcome.unwrap_or_else(|_| Err(HandlerError::internal("the handler panicked")))
        })
}

/// Records a finished request in the segment and makes its answer.
fn answer_request(
    link: &Link,
    id: u64,
    trace: u64,
    received: Instant,
    result: Result<Body, HandlerError>,
) -> Envelope {
    let outcome = match &result {
        Ok(_) => Outcome::Ok,
        Err(err) if err.code == ErrorCode::Timeout => Outcome::Timeout,
        Err(_) => Outcome::Error,
    };
    link.segment.request_finished(outcome, received.elapsed());
    let (status, body) = match result {
        Ok(body) => (Status::Ok, body),
        Err(err) => (err.into_status(), Body::Empty),
    };
    reply(link, id, trace, status, body)
}

fn reply(link: &Link, correlation: u64, trace: u64, status: Status, body: Body) -> Envelope {
    Envelope {
        id: link.next_id(),
        correlation,
        trace,
        kind: Kind::Response(status),
        body,
        ..Envelope::default()
    }
}
