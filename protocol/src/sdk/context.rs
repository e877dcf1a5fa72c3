//! What a handler gets: calls to other services, publishes, progress, and its request's
//! deadline and trace.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{Serialize, de::DeserializeOwned};

use super::{
    body::{Encoding, decode, encode},
    error::CallError,
    progress::Progress,
    stream::ItemStream,
    wire::Link,
};
use crate::envelope::{Body, Envelope, Kind, Priority, Status, Welcome};

/// The budget of a call made outside any request (from a background task), when the caller
/// gives none.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of one call.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    /// Upper bound on this call. The effective budget is the smaller of this and what is left
    /// of the current request's deadline.
    pub timeout: Option<Duration>,
    /// `None` inherits the current request's priority.
    pub priority: Option<Priority>,
}

impl CallOptions {
    pub fn timeout(timeout: Duration) -> Self {
        CallOptions {
            timeout: Some(timeout),
            priority: None,
        }
    }
}

/// A handle on the service's connection, scoped to one request (or to a background task).
/// Cheap to clone.
#[derive(Clone)]
pub struct Context {
    pub(crate) link: Arc<Link>,
    pub(crate) welcome: Arc<Welcome>,
    deadline: Option<Instant>,
    received: Instant,
    trace: u64,
    priority: Priority,
}

impl Context {
    pub(crate) fn new(link: Arc<Link>, welcome: Arc<Welcome>) -> Self {
        Context {
            link,
            welcome,
            deadline: None,
            received: Instant::now(),
            trace: 0,
            priority: Priority::NORMAL,
        }
    }

    /// The context of an incoming request or event.
    pub(crate) fn for_message(&self, envelope: &Envelope, received: Instant) -> Self {
        Context {
            link: self.link.clone(),
            welcome: self.welcome.clone(),
            deadline: (envelope.deadline_us > 0)
                .then(|| received + Duration::from_micros(envelope.deadline_us)),
            received,
            trace: envelope.trace,
            priority: envelope.priority,
        }
    }

    /// When the current request (or event) was read from the console's pipe; for a background
    /// task's context, when the service became ready. The caller sent it before this instant,
    /// so anything acknowledged to anyone before then happened before it too: a handler that
    /// reuses state read at a later instant (one read snapshot for several requests, say)
    /// still answers as if it had read afresh.
    pub fn received(&self) -> Instant {
        self.received
    }

    /// When the current request must be answered by, if it has a deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The trace id of the current request (0 outside a request).
    pub fn trace(&self) -> u64 {
        self.trace
    }

    /// The service's name in the stack, as the console told it.
    pub fn service_name(&self) -> &str {
        &self.welcome.service
    }

    /// Replica index of this instance.
    pub fn instance(&self) -> u32 {
        self.welcome.instance
    }

    /// A setting from the stack file's `settings` table.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.welcome
            .settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the service has been told to drain. Long-running background work should stop.
    pub fn is_draining(&self) -> bool {
        self.link.is_draining()
    }

    /// Resolves when the service starts draining.
    pub async fn draining(&self) {
        self.link.until_draining().await;
    }

    /// Calls `service.method` with a postcard body, propagating the current deadline.
    pub async fn call<Req, Resp>(
        &self,
        service: &str,
        method: &str,
        request: &Req,
    ) -> Result<Resp, CallError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.call_with(service, method, request, CallOptions::default())
            .await
    }

    /// [`call`](Self::call) with options.
    pub async fn call_with<Req, Resp>(
        &self,
        service: &str,
        method: &str,
        request: &Req,
        options: CallOptions,
    ) -> Result<Resp, CallError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let decode_error = |reason: String| CallError::Decode {
            service: service.to_owned(),
            method: method.to_owned(),
            reason,
        };
        let body = encode(request, Encoding::Postcard).map_err(|e| decode_error(e.message))?;
        let (status, body) = self.call_raw(service, method, body, options).await?;
        match status {
            Status::Ok => decode(&body).map_err(|e| decode_error(e.message)),
            Status::Error(err) => Err(CallError::Remote {
                service: service.to_owned(),
                method: method.to_owned(),
                code: err.code,
                message: err.message,
            }),
        }
    }

    /// Calls a streaming method: its items arrive on the returned [`ItemStream`], which grants
    /// credit as they are taken and cancels the stream when dropped early. The deadline (the
    /// options' timeout, within the current request's) covers the whole stream.
    pub async fn call_stream<Req, Item>(
        &self,
        service: &str,
        method: &str,
        request: &Req,
        options: CallOptions,
    ) -> Result<ItemStream<Item>, CallError>
    where
        Req: Serialize + ?Sized,
        Item: DeserializeOwned,
    {
        let body = encode(request, Encoding::Postcard).map_err(|e| CallError::Decode {
            service: service.to_owned(),
            method: method.to_owned(),
            reason: e.message,
        })?;
        let (request, give_up_at) = self.request(service, method, body, &options)?;
        let id = request.id;
        let rx = self.link.expect_stream(id);
        if let Err(err) = self.link.send(request).await {
            self.link.forget_stream(id);
            return Err(err);
        }
        Ok(ItemStream {
            link: self.link.clone(),
            id,
            rx,
            deadline: give_up_at,
            service: service.to_owned(),
            method: method.to_owned(),
            taken: 0,
            done: false,
            _item: std::marker::PhantomData,
        })
    }

    /// The request envelope of a call under this context's trace, priority and remaining
    /// budget (`timeout` at once when none is left), with a fresh id; and when the caller gives
    /// up waiting for its answer: a little after the deadline the console enforces.
    fn request(
        &self,
        service: &str,
        method: &str,
        body: Body,
        options: &CallOptions,
    ) -> Result<(Envelope, Instant), CallError> {
        // One clock read a call: on a virtual machine each costs as much as a small routing step.
        let now = Instant::now();
        let budget = self.budget(options.timeout, now);
        if budget.is_zero() {
            return Err(CallError::Timeout {
                service: service.to_owned(),
                method: method.to_owned(),
            });
        }
        let request = Envelope {
            id: self.link.next_id(),
            trace: self.trace,
            deadline_us: u64::try_from(budget.as_micros()).unwrap_or(u64::MAX).max(1),
            priority: options.priority.unwrap_or(self.priority),
            kind: Kind::Request,
            destination: service.into(),
            method: method.into(),
            body,
            ..Envelope::default()
        };
        Ok((request, now + budget + LOCAL_TIMEOUT_SLACK))
    }

    /// Calls `service.method` with an already encoded body and returns the answer's status and
    /// body. This is what [`call`](Self::call) is built on; the gateway-style JSON callers use
    /// it directly.
    pub async fn call_raw(
        &self,
        service: &str,
        method: &str,
        body: Body,
        options: CallOptions,
    ) -> Result<(Status, Body), CallError> {
        let (request, give_up_at) = self.request(service, method, body, &options)?;
        let id = request.id;
        // The console answers `timeout` itself when the deadline passes; the link's backstop,
        // for a console that is gone or stuck, gives up a little later.
        let answer = self.link.expect_answer(id, give_up_at);
        if let Err(err) = self.link.send(request).await {
            self.link.forget(id);
            return Err(err);
        }
        match answer.await {
            Ok(Some(reply)) => match reply.kind {
                Kind::Response(status) | Kind::StreamEnd(status) => Ok((status, reply.body)),
                other => Err(CallError::Decode {
                    service: service.to_owned(),
                    method: method.to_owned(),
                    reason: format!("unexpected answer kind {other:?}"),
                }),
            },
            Ok(None) => Err(CallError::Timeout {
                service: service.to_owned(),
                method: method.to_owned(),
            }),
            Err(_) => Err(CallError::Disconnected),
        }
    }

    /// Publishes `event` on `topic` with a postcard body.
    pub async fn publish<E: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &E,
    ) -> Result<(), CallError> {
        let body = encode(event, Encoding::Postcard).map_err(|e| CallError::Decode {
            service: String::new(),
            method: topic.to_owned(),
            reason: e.message,
        })?;
        self.publish_raw(topic, body).await
    }

    /// Publishes an already encoded body on `topic`.
    pub async fn publish_raw(&self, topic: &str, body: Body) -> Result<(), CallError> {
        let event = Envelope {
            id: self.link.next_id(),
            trace: self.trace,
            priority: self.priority,
            kind: Kind::Event,
            destination: topic.into(),
            body,
            ..Envelope::default()
        };
        self.link.send(event).await?;
        self.link.segment.event_published();
        Ok(())
    }

    /// A progress bar the console shows while the task runs: `ctx.progress("import").set(3, 10)`.
    /// When all task slots are taken, the handle still works but shows nothing.
    pub fn progress(&self, label: &str) -> Progress {
        Progress::new(self.link.segment.task(label, 0))
    }

    /// Publishes how much work waits inside this service: `waiting` items accepted and not yet
    /// finished, the oldest accepted at `oldest_accepted` (ignored when none waits). The
    /// console shows it, alerts when it keeps growing, and can scale replicas to hold it; a
    /// service that never calls this gets a backlog the console derives from its requests.
    /// Call it whenever the queue changes, or on a timer (once a second is plenty).
    pub fn set_backlog(&self, waiting: u64, oldest_accepted: Option<std::time::SystemTime>) {
        let oldest_ms = oldest_accepted
            .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        self.link.segment.set_backlog(waiting, oldest_ms);
    }

    /// What is left of the current deadline, capped by `timeout` (or the default when neither
    /// is set).
    fn budget(&self, timeout: Option<Duration>, now: Instant) -> Duration {
        let left = self
            .deadline
            .map(|deadline| deadline.saturating_duration_since(now));
        match (left, timeout) {
            (Some(left), Some(timeout)) => left.min(timeout),
            (Some(left), None) => left,
            (None, Some(timeout)) => timeout,
            (None, None) => DEFAULT_CALL_TIMEOUT,
        }
    }
}

/// How much longer than the deadline a caller waits for the console's own timeout answer.
const LOCAL_TIMEOUT_SLACK: Duration = Duration::from_millis(50);
