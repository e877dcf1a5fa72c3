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
//! - `dispatch`: a request's way to one replica, its answer, and the flights of an instance
//!   that is gone.
//! - `pubsub`: events, to every subscribing service.
//! - `outcomes`: circuit breakers and traces, fed by how each routed request ended.
//! - `deadlines`: the sweeper that answers `timeout` once a deadline passes.
//! - `waits`: the oldest request each replica still owes an answer to, for derived backlogs.
//! - `durable`: events of durable topics, handed to the store that keeps them
//!   ([`DurableTopics`]), and their subscribers' acknowledgements.
//! - `uplink`: an agent's router, which routes nothing itself and hands every frame to the
//!   console on another host ([`Uplink`]).
//! - this file: the [`Router`] handle and the state it shares, its construction, the entry
//!   points ([`Router::route`], [`Router::call`]) and the read-only accessors.

pub mod breaker;
mod deadlines;
mod dispatch;
mod durable;
mod hold;
mod outcomes;
mod pubsub;
mod stream;
pub mod trace;
mod uplink;
mod waits;

pub use durable::DurableTopics;
pub use stream::{INITIAL_CREDIT, LocalStream, StreamStep};
pub use uplink::Uplink;

use std::{
    collections::HashMap,
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use switchboard_protocol::{Body, Envelope, ErrorCode, Kind, Status, busy_poll};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::transport::SendError;

use self::breaker::{Breaker, BreakerState};
use crate::{
    audit::AuditLog,
    event::EventSender,
    registry::{InstanceHandle, InstanceId, SharedRegistry},
    stack::Stack,
};

/// Maps hashed on every routed message: foldhash, not SipHash, which showed in the router's
/// profile. Still seeded at random per map, so a service choosing its request ids cannot aim
/// at collisions; most keys are router-assigned ids and the stack's service names anyway.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// The caller name of the HTTP gateway and the console's own tools.
pub const GATEWAY: &str = "gateway";

/// A caller inside the console, named as the router keeps it: the gateway's name, which comes
/// with every gateway request, is allocated once rather than per call.
fn local_caller(from: &str) -> Arc<str> {
    static GATEWAY_NAME: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(GATEWAY));
    if from == GATEWAY {
        GATEWAY_NAME.clone()
    } else {
        Arc::from(from)
    }
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
    /// Since when the console has had it: `started`, or earlier when it was held while its
    /// service restarted (the age of a derived backlog, see `waits`).
    waiting_since: Instant,
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
    /// The topic patterns each replica of each service subscribed to (service → replica →
    /// patterns), kept while it restarts so that events for it can be held.
    topics: Mutex<HashMap<String, HashMap<u32, Vec<String>>>>,
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
    /// Set on an agent: every frame goes to the console instead of being routed here.
    uplink: std::sync::OnceLock<Arc<dyn Uplink>>,
    /// Set when the stack has durable topics (see `durable`).
    durable: std::sync::OnceLock<Arc<dyn DurableTopics>>,
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
                uplink: std::sync::OnceLock::new(),
                durable: std::sync::OnceLock::new(),
            }),
        };
        tokio::spawn(deadlines::sweep_deadlines(Arc::downgrade(&router.inner)));
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
        if let Some(uplink) = self.inner.uplink.get() {
            uplink.frame(from, envelope);
            return;
        }
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
            Kind::Ack => self.acked(from, envelope.correlation),
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
        self.dispatch(
            &local_caller(from),
            Caller::Local(reply),
            &mut envelope,
            now,
        );
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

    /// A fresh trace id, for a caller in the console that must know its call's trace before
    /// the answer (a stream's error can come at any point, and names its trace).
    pub fn new_trace(&self) -> u64 {
        self.inner.next_trace.fetch_add(1, Ordering::Relaxed)
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

    /// Requests made so far by each caller, read through a weak handle, for the metrics
    /// sampler: it must not keep the router (and through it the registry) alive.
    pub fn calls_made(&self) -> impl Fn() -> Vec<(Arc<str>, u64)> + Send + Sync + 'static {
        let inner = Arc::downgrade(&self.inner);
        move || {
            inner
                .upgrade()
                .map(|inner| lock(&inner.books).traces.calls_by_caller())
                .unwrap_or_default()
        }
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

/// The answer that refuses request `correlation` with `code`: what the router, and an agent or
/// the console speaking for a host, send a caller instead of the target's own answer.
pub fn error_answer(correlation: u64, trace: u64, code: ErrorCode, message: &str) -> Envelope {
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
        // An answer is never refused for draining: a draining service still waits for them.
        Ok(()) | Err(SendError::Closed | SendError::Draining) => {}
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
