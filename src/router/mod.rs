//! The router: services never talk to each other directly. Every request, answer and event
//! arrives on a service's stdout and is routed here, down the right service's stdin.
//!
//! This is the hot path, so `route` never blocks and never awaits: it decodes nothing more than
//! the envelope, looks the target up, re-stamps ids and deadlines, and `try_send`s to the
//! target's bounded inbox. A full inbox means the target is congested and the caller is
//! answered `overloaded` at once.
//!
//! Every failure becomes a Response with an error code, so a caller never hangs: unknown
//! service or method (not_found), no ready instance (unavailable), a full inbox (overloaded), a
//! call its stack entry does not allow (forbidden), a deadline that passes (timeout, answered by
//! the console's deadline sweeper), and a target that dies with the request in flight
//! (unavailable, at once).
//!
//! Every instance is reached through a [`Link`](crate::transport::Link) (see
//! [`crate::transport`]).
//!
//! - `stream`: streams under the receiver's credit ([`LocalStream`] for callers in the console).
//! - `hold`: requests and events held for a service that is restarting.
//! - [`breaker`]: one circuit breaker per target service.
//! - [`trace`]: recent hops and per-route metrics.

pub mod breaker;
mod hold;
mod stream;
pub mod trace;

pub use stream::{INITIAL_CREDIT, LocalStream, StreamStep};

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use switchboard_protocol::{
    Body, Envelope, ErrorCode, Kind, Status, busy_poll, topic::topic_matches,
};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::transport::SendError;

use self::breaker::{Breaker, BreakerState};
use crate::{
    audit::AuditLog,
    event::{Event, EventKind, EventSender},
    registry::{self, InstanceHandle, InstanceId, SharedRegistry},
    stack::Stack,
};

/// Maps hashed on every routed message: foldhash, not SipHash, which showed in the router's
/// profile. Still seeded at random per map, so a service choosing its request ids cannot aim
/// at collisions; most keys are router-assigned ids and the stack's service names anyway.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// The caller name of the HTTP gateway and the console's own tools.
pub const GATEWAY: &str = "gateway";

/// How often the deadline sweeper looks at in-flight requests while any are waiting.
const SWEEP_EVERY: Duration = Duration::from_millis(5);

/// Why no instance was picked.
enum Miss {
    /// Answer the caller with this.
    Fail(ErrorCode, String),
    /// The service is wanted but has no ready instance right now: hold the request.
    Restarting,
}

/// Who is waiting for an answer.
pub(crate) enum Caller {
    /// A service instance: the answer goes down its stdin.
    Instance(Arc<InstanceHandle>),
    /// A caller inside the console (the gateway, the CLI, a test).
    Local(oneshot::Sender<Envelope>),
    /// A caller inside the console reading a stream (see [`LocalStream`]).
    LocalStream(mpsc::Sender<Envelope>),
}

impl Caller {
    fn is(&self, id: InstanceId) -> bool {
        matches!(self, Caller::Instance(handle) if handle.id == id)
    }

    fn deliver(self, mut answer: Envelope) {
        self.deliver_from(&mut answer);
    }

    /// Delivers `answer` from where it lies: an instance's inbox encodes it there, a caller in
    /// the console takes it.
    fn deliver_from(self, answer: &mut Envelope) {
        match self {
            Caller::Instance(handle) => deliver(&handle, answer),
            Caller::Local(reply) => {
                let _ = reply.send(std::mem::take(answer));
            }
            // The channel has room for the whole window and the end (see `call_stream`).
            Caller::LocalStream(items) => {
                let _ = items.try_send(std::mem::take(answer));
            }
        }
    }

    /// How the receiver of a stream names it in its grants and cancels.
    fn stream_key(&self, caller_id: u64) -> stream::StreamKey {
        match self {
            Caller::Instance(handle) => (Some(handle.id), caller_id),
            Caller::Local(_) | Caller::LocalStream(_) => (None, caller_id),
        }
    }
}

/// A request in flight: who asked, under which id, and where it went.
struct InFlight {
    caller: Caller,
    caller_id: u64,
    /// The caller's service name (or the gateway's), for traces and route metrics.
    from: Arc<str>,
    method: switchboard_protocol::Name,
    target: Arc<InstanceHandle>,
    deadline: Option<Instant>,
    started: Instant,
    trace: u64,
    /// Stream items the receiver will still take (see [`stream`]).
    credit: u32,
    /// At least one stream item has flowed.
    streaming: bool,
}

/// One circuit breaker per target service, and the trace buffer with its route metrics.
struct Books {
    breakers: FastMap<String, Breaker>,
    traces: trace::Traces,
}

#[derive(Default)]
struct Counters {
    routed: AtomicU64,
    late_replies: AtomicU64,
    dropped_events: AtomicU64,
}

struct Inner {
    registry: SharedRegistry,
    audit: Option<AuditLog>,
    events: EventSender,
    /// What the router keeps of outcomes: every routed request ends by updating both, so
    /// they share one lock.
    books: Mutex<Books>,
    /// Requests and events waiting for a restarting service.
    held: Mutex<hold::Held>,
    /// The topic patterns each service subscribed to, kept while it restarts so that events
    /// for it can be held.
    topics: Mutex<HashMap<String, Vec<String>>>,
    /// Which services each service may call, from the stack's `calls`.
    allowed: FastMap<String, FastSet<String>>,
    in_flight: Mutex<FastMap<u64, InFlight>>,
    /// Streams by their receiver's key, to route its Credit and Cancel to the flight.
    streams: Mutex<FastMap<stream::StreamKey, u64>>,
    next_id: AtomicU64,
    next_trace: AtomicU64,
    /// Per service, where the next pick starts among its instances, so that replicas equally
    /// loaded (at light load, all of them idle) take turns instead of the first taking
    /// everything. One counter per service: a shared one would alias (two services called in
    /// turn would each always land on the same replica).
    rotations: FastMap<String, AtomicU64>,
    sweeper_wake: Notify,
    counters: Counters,
    activity: Arc<busy_poll::Activity>,
}

/// Handle to the router. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

impl Router {
    pub fn new(
        registry: SharedRegistry,
        stack: &Stack,
        events: EventSender,
        audit: Option<AuditLog>,
    ) -> Router {
        let breakers = stack
            .services
            .iter()
            .map(|s| (s.name.clone(), Breaker::new(s.breaker)))
            .collect();
        let mut allowed: FastMap<String, FastSet<String>> = stack
            .services
            .iter()
            .map(|s| (s.name.clone(), s.calls.iter().cloned().collect()))
            .collect();
        // The gateway is the stack's front door: it may call every service.
        allowed.insert(
            GATEWAY.to_string(),
            stack.services.iter().map(|s| s.name.clone()).collect(),
        );
        let router = Router {
            inner: Arc::new(Inner {
                registry,
                audit,
                events,
                books: Mutex::new(Books {
                    breakers,
                    traces: trace::Traces::default(),
                }),
                held: Mutex::new(hold::Held::default()),
                topics: Mutex::new(HashMap::new()),
                allowed,
                in_flight: Mutex::new(FastMap::default()),
                streams: Mutex::new(FastMap::default()),
                next_id: AtomicU64::new(1),
                next_trace: AtomicU64::new(1),
                rotations: stack
                    .services
                    .iter()
                    .map(|s| (s.name.clone(), AtomicU64::new(0)))
                    .collect(),
                sweeper_wake: Notify::new(),
                counters: Counters::default(),
                activity: Arc::new(busy_poll::Activity::new(
                    busy_poll::enabled_here(),
                    busy_poll::PollFor::Messages,
                )),
            }),
        };
        tokio::spawn(sweep_deadlines(Arc::downgrade(&router.inner)));
        // The console polls after every message it routes (see `busy_poll`).
        tokio::spawn(busy_poll::run(Arc::downgrade(&router.inner.activity)));
        router
    }

    /// Routes one envelope that arrived from `from`'s stdout; `received` is when the read that
    /// completed it returned (see [`switchboard_protocol::read_clock`]). A request's deadline
    /// and an answer's latency count from there: one clock read per read of a pipe, instead of
    /// two per request routed.
    pub fn route(&self, from: &Arc<InstanceHandle>, envelope: &mut Envelope, received: Instant) {
        self.inner.counters.routed.fetch_add(1, Ordering::Relaxed);
        self.inner.activity.message();
        match envelope.kind {
            Kind::Request => {
                let caller = Caller::Instance(from.clone());
                self.dispatch(&from.service, caller, envelope, received);
            }
            Kind::Response(_) | Kind::StreamEnd(_) => self.answer(envelope, received),
            Kind::Event => self.event(envelope),
            Kind::StreamItem => self.stream_item(from, std::mem::take(envelope)),
            Kind::Credit(_) | Kind::Cancel => self.receiver_control(from, envelope),
            _ => {
                tracing::debug!(service = %from.service, kind = ?envelope.kind, "frame not routed")
            }
        }
    }

    /// Calls a service from inside the console (the gateway, the CLI, tests) under the name
    /// `from`, which must be allowed to call the target like any service. Resolves to the
    /// answer, which is always a Response (an error code when anything went wrong).
    pub fn call(
        &self,
        from: &str,
        mut envelope: Envelope,
    ) -> impl Future<Output = Envelope> + use<> {
        let (reply, answer) = oneshot::channel();
        let id = envelope.id;
        let trace = envelope.trace;
        let now = Instant::now();
        self.dispatch(&Arc::from(from), Caller::Local(reply), &mut envelope, now);
        async move {
            answer.await.unwrap_or_else(|_| {
                error_answer(
                    id,
                    trace,
                    ErrorCode::Unavailable,
                    "the console is shutting down",
                )
            })
        }
    }

    /// Sends a request on to the least loaded ready instance of its destination, or answers
    /// it at once with the reason it cannot go; `now` starts its deadline.
    fn dispatch(&self, from: &Arc<str>, caller: Caller, envelope: &mut Envelope, now: Instant) {
        let allowed = self
            .inner
            .allowed
            .get(&**from)
            .is_some_and(|calls| calls.contains(envelope.destination.as_str()));
        // Every service of the stack has an entry (possibly empty) in `allowed`; looked up
        // only for a call that is not allowed, to tell a name nobody has from a forbidden one.
        if envelope.destination == GATEWAY
            || !allowed
                && !self
                    .inner
                    .allowed
                    .contains_key(envelope.destination.as_str())
        {
            let message = format!("no service `{}`", envelope.destination);
            let answer = error_answer(envelope.id, envelope.trace, ErrorCode::NotFound, &message);
            return caller.deliver(answer);
        }
        if !allowed {
            let message = format!(
                "`{from}` may not call `{}` (see `calls` in the stack file)",
                envelope.destination
            );
            tracing::warn!(%from, to = %envelope.destination, "forbidden call");
            if let Some(audit) = &self.inner.audit {
                let target = format!("{}.{}", envelope.destination, envelope.method);
                audit.record(from, "call", &target, "forbidden");
            }
            return self.refuse(from, caller, envelope, ErrorCode::Forbidden, &message);
        }
        if let Some(retry_after) = self.breaker_refuses(&envelope.destination, now) {
            let message = format!(
                "circuit to `{}` is open; retry in {} ms",
                envelope.destination,
                retry_after.as_millis()
            );
            return self.refuse(from, caller, envelope, ErrorCode::CircuitOpen, &message);
        }
        let target = match self.pick(&envelope.destination, &envelope.method) {
            Ok(target) => target,
            Err(Miss::Fail(code, message)) => {
                return self.refuse(from, caller, envelope, code, &message);
            }
            // Held: the one path that keeps the request, so the one that takes it.
            Err(Miss::Restarting) => return self.hold(from, caller, std::mem::take(envelope)),
        };
        let deadline =
            (envelope.deadline_us > 0).then(|| now + Duration::from_micros(envelope.deadline_us));
        if envelope.trace == 0 {
            envelope.trace = self.inner.next_trace.fetch_add(1, Ordering::Relaxed);
        }
        let caller_id = envelope.id;
        let routed_id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        envelope.id = routed_id;
        let trace = envelope.trace;
        self.in_flight().insert(
            routed_id,
            InFlight {
                caller,
                caller_id,
                from: from.clone(),
                method: envelope.method.clone(),
                target: target.clone(),
                deadline,
                started: now,
                trace,
                credit: INITIAL_CREDIT,
                streaming: false,
            },
        );
        if deadline.is_some() {
            self.inner.sweeper_wake.notify_one();
        }
        target.outstanding.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = target.link.try_send(envelope) {
            target.outstanding.fetch_sub(1, Ordering::Relaxed);
            let (code, message) = match err {
                SendError::Full => {
                    target.congested.store(true, Ordering::Relaxed);
                    (ErrorCode::Overloaded, "target is congested")
                }
                SendError::Closed => (ErrorCode::Unavailable, "target is gone"),
                SendError::TooLarge => (ErrorCode::BadRequest, "request over the frame limit"),
            };
            let flight = self.in_flight().remove(&routed_id);
            if let Some(flight) = flight {
                self.finished(&flight, Some(code), now);
                flight
                    .caller
                    .deliver(error_answer(caller_id, trace, code, message));
            }
        }
    }

    /// The ready instance of `service` with the fewest outstanding requests; of equals, the
    /// next in turn.
    fn pick(&self, service: &str, method: &str) -> Result<Arc<InstanceHandle>, Miss> {
        let registry = registry::read(&self.inner.registry);
        let Some(entry) = registry.service(service) else {
            return Err(Miss::Fail(
                ErrorCode::NotFound,
                format!("no service `{service}`"),
            ));
        };
        if !entry.spec.protocol {
            return Err(Miss::Fail(
                ErrorCode::NotFound,
                format!("`{service}` is a plain program and takes no requests"),
            ));
        }
        let mut best: Option<&Arc<InstanceHandle>> = None;
        let mut knows_method = false;
        let mut any_hello = false;
        let start = self.rotation_start(service, entry.instances.len());
        let (head, tail) = entry.instances.split_at(start);
        for instance in tail.iter().chain(head) {
            if !instance.methods.is_empty() || instance.version.is_some() {
                any_hello = true;
                knows_method |= instance.methods.iter().any(|m| m == method);
            }
            let Some(handle) = &instance.handle else {
                continue;
            };
            if !handle.is_routable() {
                continue;
            }
            let load = handle.outstanding.load(Ordering::Relaxed);
            if best.is_none_or(|b| load < b.outstanding.load(Ordering::Relaxed)) {
                best = Some(handle);
            }
        }
        if any_hello && !knows_method {
            return Err(Miss::Fail(
                ErrorCode::NotFound,
                format!("`{service}` has no method `{method}`"),
            ));
        }
        match best {
            Some(best) => Ok(best.clone()),
            // Wanted but not ready: starting, restarting or in backoff. Worth waiting for.
            None if entry.coming_back() => Err(Miss::Restarting),
            None if entry.wanted => Err(Miss::Fail(
                ErrorCode::Unavailable,
                format!(
                    "`{service}` is {} and will not restart by itself",
                    entry.state().as_str()
                ),
            )),
            None => Err(Miss::Fail(
                ErrorCode::Unavailable,
                format!("`{service}` is stopped"),
            )),
        }
    }

    fn hold(&self, from: &Arc<str>, caller: Caller, envelope: Envelope) {
        let deadline = Instant::now()
            + match envelope.deadline_us {
                0 => hold::HOLD_WITHOUT_DEADLINE,
                us => Duration::from_micros(us),
            };
        let service = envelope.destination.to_string();
        let request = hold::HeldRequest {
            from: from.clone(),
            caller,
            envelope,
            deadline,
        };
        let refused = lock(&self.inner.held).hold_request(&service, request);
        match refused {
            Ok(()) => self.inner.sweeper_wake.notify_one(),
            Err(request) => {
                let message = format!(
                    "`{service}` is restarting and {} requests already wait for it",
                    hold::HOLD_REQUESTS
                );
                self.refuse(
                    &request.from,
                    request.caller,
                    &request.envelope,
                    ErrorCode::Unavailable,
                    &message,
                );
            }
        }
    }

    /// An instance of `service` became ready: what was held for the service goes to it now, in
    /// the order it arrived.
    pub fn service_ready(&self, service: &str) {
        let (requests, events) = lock(&self.inner.held).release(service);
        let now = Instant::now();
        for mut held in requests {
            let left = held.deadline.saturating_duration_since(now);
            if left.is_zero() {
                self.refuse(
                    &held.from,
                    held.caller,
                    &held.envelope,
                    ErrorCode::Timeout,
                    "deadline passed while the service restarted",
                );
                continue;
            }
            held.envelope.deadline_us = u64::try_from(left.as_micros()).unwrap_or(u64::MAX).max(1);
            self.dispatch(&held.from, held.caller, &mut held.envelope, now);
        }
        for event in events {
            self.deliver_event(service, &event);
        }
    }

    /// Records the topic patterns an instance of `service` subscribed to.
    pub fn subscriptions_changed(&self, service: &str, patterns: &[String]) {
        lock(&self.inner.topics).insert(service.to_string(), patterns.to_vec());
    }

    /// Sends an event to the least busy ready instance of `service`, or holds it while the
    /// service restarts.
    fn deliver_event(&self, service: &str, event: &Envelope) {
        let target = {
            let registry = registry::read(&self.inner.registry);
            let Some(entry) = registry.service(service) else {
                return;
            };
            let start = self.rotation_start(service, entry.instances.len());
            let (head, tail) = entry.instances.split_at(start);
            // `min_by_key` keeps the first of equals: the rotation decides which that is.
            let best = tail
                .iter()
                .chain(head)
                .filter_map(|i| i.handle.as_ref())
                .filter(|h| h.is_routable())
                .min_by_key(|h| h.outstanding.load(Ordering::Relaxed))
                .cloned();
            match best {
                Some(best) => Some(best),
                None if entry.coming_back() => None,
                None => return,
            }
        };
        let Some(target) = target else {
            lock(&self.inner.held).hold_event(service, event.clone());
            return;
        };
        if target.link.try_send(event).is_err() {
            self.inner
                .counters
                .dropped_events
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(to = %service, "event dropped: subscriber congested");
        }
    }

    fn answer(&self, envelope: &mut Envelope, received: Instant) {
        let Some(flight) = self.in_flight().remove(&envelope.correlation) else {
            self.inner
                .counters
                .late_replies
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        flight.target.outstanding.fetch_sub(1, Ordering::Relaxed);
        self.forget_stream(&flight);
        let code = match &envelope.kind {
            Kind::Response(Status::Error(err)) | Kind::StreamEnd(Status::Error(err)) => {
                Some(err.code)
            }
            _ => None,
        };
        self.finished(&flight, code, received);
        envelope.correlation = flight.caller_id;
        envelope.trace = flight.trace;
        flight.caller.deliver_from(envelope);
    }

    fn event(&self, envelope: &Envelope) {
        // Each subscribing service gets the event once, on its least busy ready replica; one
        // that is restarting gets it when it is back.
        let subscribers: Vec<String> = lock(&self.inner.topics)
            .iter()
            .filter(|(_, patterns)| {
                patterns
                    .iter()
                    .any(|p| topic_matches(p, &envelope.destination))
            })
            .map(|(service, _)| service.clone())
            .collect();
        for service in subscribers {
            self.deliver_event(&service, envelope);
        }
    }

    /// The instance is gone: its callers get `unavailable` now, and answers owed to it are
    /// dropped.
    pub fn instance_gone(&self, gone: &Arc<InstanceHandle>) {
        let failed: Vec<(u64, InFlight)> = {
            let mut in_flight = self.in_flight();
            let ids: Vec<u64> = in_flight
                .iter()
                .filter(|(_, f)| f.target.id == gone.id || f.caller.is(gone.id))
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| in_flight.remove(&id).map(|f| (id, f)))
                .collect()
        };
        for (routed_id, flight) in failed {
            if flight.target.id == gone.id {
                let message = format!("`{}` exited with the request in flight", gone.service);
                self.end_flight(routed_id, flight, ErrorCode::Unavailable, &message, false);
            } else {
                // The caller is gone and nobody will read the answer: tell the target to stop
                // (a stream's producer stops at once; a plain request is best effort).
                self.cancel_flight(routed_id, &flight);
            }
        }
    }

    /// Where to start scanning the `len` instances of `service` for the least loaded: each
    /// pick one further.
    fn rotation_start(&self, service: &str, len: usize) -> usize {
        if len <= 1 {
            return 0;
        }
        let Some(rotation) = self.inner.rotations.get(service) else {
            return 0;
        };
        let turn = rotation.fetch_add(1, Ordering::Relaxed);
        (turn % len as u64) as usize
    }

    /// `Some(retry_after)` when the target's breaker is open.
    fn breaker_refuses(&self, service: &str, now: Instant) -> Option<Duration> {
        let (admitted, transition, retry_after) = {
            let mut books = lock(&self.inner.books);
            let breaker = books.breakers.get_mut(service)?;
            let (admitted, transition) = breaker.admit(now);
            (admitted, transition, breaker.retry_after(now))
        };
        if let Some(state) = transition {
            self.breaker_changed(service, state);
        }
        (!admitted).then_some(retry_after)
    }

    /// Answers a request the router refuses itself, before it reaches an instance (forbidden,
    /// circuit open, no ready instance, no such method, held past its deadline). The refusal
    /// is counted on its route and kept as a hop like any failure, so that an open breaker
    /// shows in `/metrics` and the traces as the errors its callers get. Not fed to the
    /// breaker: the target did not fail. The destination is a service of the stack (the only
    /// caller that passes anything else answers `not found` first); a method the service does
    /// not declare is counted as [`trace::OTHER_METHOD`], so callers cannot grow the metrics
    /// by making names up.
    fn refuse(
        &self,
        from: &Arc<str>,
        caller: Caller,
        request: &Envelope,
        code: ErrorCode,
        message: &str,
    ) {
        let trace = match request.trace {
            0 => self.inner.next_trace.fetch_add(1, Ordering::Relaxed),
            given => given,
        };
        let method = if self.declares(&request.destination, &request.method) {
            request.method.clone()
        } else {
            trace::OTHER_METHOD.into()
        };
        let now = Instant::now();
        {
            let traces = &mut lock(&self.inner.books).traces;
            let at = traces.wall_clock(now);
            let (to, error) = (request.destination.as_str(), Some(code.as_str()));
            traces.record(at, trace, from, to, &method, Duration::ZERO, error);
        }
        caller.deliver(error_answer(request.id, trace, code, message));
    }

    /// Whether an instance of `service` has declared `method` in its Hello.
    fn declares(&self, service: &str, method: &str) -> bool {
        registry::read(&self.inner.registry)
            .service(service)
            .is_some_and(|entry| {
                entry
                    .instances
                    .iter()
                    .any(|i| i.methods.iter().any(|m| m == method))
            })
    }

    /// A routed request ended at `now`: feed the target's breaker, the trace buffer and route
    /// metrics.
    fn finished(&self, flight: &InFlight, code: Option<ErrorCode>, now: Instant) {
        let service: &str = &flight.target.service;
        let transition = {
            let mut books = lock(&self.inner.books);
            let Books { breakers, traces } = &mut *books;
            let transition = breakers
                .get_mut(service)
                .and_then(|b| b.record(now, breaker::is_failure(code)));
            let at = traces.wall_clock(now);
            traces.record(
                at,
                flight.trace,
                &flight.from,
                &flight.target.service,
                &flight.method,
                now.saturating_duration_since(flight.started),
                trace::code_name(code),
            );
            transition
        };
        // Outside the lock: it logs and sends a lifecycle event.
        if let Some(state) = transition {
            self.breaker_changed(service, state);
        }
    }

    fn breaker_changed(&self, service: &str, state: BreakerState) {
        tracing::info!(%service, state = state.as_str(), "circuit breaker");
        let _ = self.inner.events.send(Event::new(
            service,
            None,
            EventKind::Breaker {
                state: state.as_str(),
            },
        ));
    }

    /// The breaker state of `service` ("closed", "open", "half-open").
    pub fn breaker_state(&self, service: &str) -> Option<BreakerState> {
        lock(&self.inner.books)
            .breakers
            .get(service)
            .map(Breaker::state)
    }

    /// The most recent `n` hops, oldest first.
    pub fn recent_hops(&self, n: usize) -> Vec<trace::Hop> {
        lock(&self.inner.books).traces.recent(n)
    }

    /// The most recent `n` hops from or to `service` (all hops without one), oldest first.
    pub fn hops_of(&self, service: Option<&str>, n: usize) -> Vec<trace::Hop> {
        lock(&self.inner.books).traces.recent_of(service, n)
    }

    /// Every recorded hop of one trace.
    pub fn trace(&self, trace: u64) -> Vec<trace::Hop> {
        lock(&self.inner.books).traces.trace(trace)
    }

    /// Counters and latency per (from, to, method).
    pub fn routes(&self) -> Vec<(trace::Route, trace::RouteStats)> {
        lock(&self.inner.books).traces.routes()
    }

    /// Requests in flight right now.
    pub fn in_flight_count(&self) -> usize {
        self.in_flight().len()
    }

    /// Time the console spent in poll rounds that found nothing (see `busy_poll`).
    pub fn busy_polled(&self) -> Duration {
        self.inner.activity.polled()
    }

    /// Answers that arrived after their request had been answered or timed out.
    pub fn late_replies(&self) -> u64 {
        self.inner.counters.late_replies.load(Ordering::Relaxed)
    }

    /// Events dropped: for a subscriber whose queue was full, or held for a restarting one
    /// past the bound.
    pub fn dropped_events(&self) -> u64 {
        self.inner.counters.dropped_events.load(Ordering::Relaxed)
            + lock(&self.inner.held).dropped_events
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, FastMap<u64, InFlight>> {
        lock(&self.inner.in_flight)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn error_answer(correlation: u64, trace: u64, code: ErrorCode, message: &str) -> Envelope {
    Envelope {
        correlation,
        trace,
        kind: Kind::Response(Status::error(code, message)),
        body: Body::Empty,
        ..Envelope::default()
    }
}

/// Delivers an answer to a caller. Answers have an allowance beyond the inbox's capacity (see
/// [`inbox`]); past it the answer is dropped and counted there, and the caller's deadline ends
/// its wait.
fn deliver(to: &Arc<InstanceHandle>, answer: &Envelope) {
    let (correlation, trace) = (answer.correlation, answer.trace);
    match to.link.try_send(answer) {
        Ok(()) | Err(SendError::Closed) => {}
        Err(SendError::Full) => {
            tracing::warn!(service = %to.service, "answer dropped: caller's inbox is full");
        }
        // Re-stamped, an answer right at the limit can grow past it: the caller learns why
        // instead of waiting out its deadline.
        Err(SendError::TooLarge) => {
            tracing::warn!(service = %to.service, "answer over the frame limit");
            let refusal = error_answer(
                correlation,
                trace,
                ErrorCode::Internal,
                "the answer is over the frame limit",
            );
            let _ = to.link.try_send(&refusal);
        }
    }
}

/// Answers `timeout` for requests whose deadline passed. Sleeps while nothing with a deadline is
/// in flight, so an idle console does not wake up for it.
async fn sweep_deadlines(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let has_deadlines = lock(&strong.in_flight)
            .values()
            .any(|f| f.deadline.is_some())
            || lock(&strong.held).has_requests();
        if !has_deadlines {
            // Re-checked every second so the task ends soon after the router is dropped.
            let _ =
                tokio::time::timeout(Duration::from_secs(1), strong.sweeper_wake.notified()).await;
            continue;
        }
        drop(strong);
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let now = Instant::now();
        let expired: Vec<(u64, InFlight)> = {
            let mut in_flight = lock(&strong.in_flight);
            let ids: Vec<u64> = in_flight
                .iter()
                .filter(|(_, f)| f.deadline.is_some_and(|d| d <= now))
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| in_flight.remove(&id).map(|f| (id, f)))
                .collect()
        };
        let router = Router {
            inner: strong.clone(),
        };
        let expired_held = lock(&strong.held).expired(now);
        for held in expired_held {
            let message = format!(
                "`{}` did not come back within the deadline",
                held.envelope.destination
            );
            router.refuse(
                &held.from,
                held.caller,
                &held.envelope,
                ErrorCode::Timeout,
                &message,
            );
        }
        for (routed_id, flight) in expired {
            let message = format!(
                "`{}` did not answer within the deadline",
                flight.target.service
            );
            // A stream cut short is cancelled at its producer; a plain request just ends.
            let cancel = flight.streaming;
            router.end_flight(routed_id, flight, ErrorCode::Timeout, &message, cancel);
        }
    }
}
