//! The service's end of the connection: one writer task fed by a bounded buffer (see
//! [`outbound`](super::outbound)), a table of calls waiting for their answers, and id
//! allocation.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use tokio::{
    io::AsyncWrite,
    sync::{Notify, mpsc, oneshot},
};
use tokio_util::sync::CancellationToken;

use super::{
    outbound::{Outbound, Refused, write_loop},
    stream::Gate,
};
use crate::{
    busy_poll::{self, Activity, PollFor},
    envelope::{Envelope, Kind},
    segment::SegmentWriter,
};

/// Room in a called stream's queue: the credit window plus its end, with margin. The console
/// never forwards more than the window, so it does not fill.
const STREAM_QUEUE: usize = 2 * super::stream::INITIAL_CREDIT as usize + 2;

/// What a waiting call gets: the console's answer, or `None` when the backstop gave up on it.
pub(crate) type Answer = Option<Envelope>;

/// A call waiting for its answer.
struct Waiting {
    answer: oneshot::Sender<Answer>,
    /// When the backstop gives up on the answer.
    give_up_at: Instant,
}

/// The calls waiting for their answers, and when the backstop next looks at them.
#[derive(Default)]
struct Pending {
    calls: HashMap<u64, Waiting>,
    /// When the backstop wakes next; `None` while it sleeps until told.
    backstop_at: Option<Instant>,
}

/// Shared by every [`Context`](super::Context) of one connection.
pub(crate) struct Link {
    outbound: Arc<Outbound>,
    pending: Mutex<Pending>,
    /// Wakes the backstop when a call must be given up before it would wake.
    backstop_wake: Notify,
    /// Streams this service is reading, by the id of its request.
    receivers: Mutex<HashMap<u64, mpsc::Sender<Envelope>>>,
    /// Streams this service is producing, by the id of the request they answer.
    producers: Mutex<HashMap<u64, Arc<Gate>>>,
    next_id: AtomicU64,
    /// Calls made and answered, for the poller (see [`poll_for_answers`]).
    activity: Arc<Activity>,
    pub(crate) segment: Arc<SegmentWriter>,
    /// Cancelled when the service starts draining: no new work is taken. Only through
    /// [`Link::drain`], which also sets `drained`.
    draining: CancellationToken,
    /// Whether draining has started, read for every request: a token's `is_cancelled` takes
    /// its lock.
    drained: AtomicBool,
}

impl Link {
    /// Creates the link and starts its writer task, which ends (after flushing) once `close` is
    /// cancelled and the queue is empty.
    pub(crate) fn start<W>(
        writer: W,
        segment: Arc<SegmentWriter>,
        close: CancellationToken,
    ) -> (Arc<Link>, tokio::task::JoinHandle<std::io::Result<()>>)
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let outbound = Arc::new(Outbound::new());
        let task = tokio::spawn(write_loop(outbound.clone(), writer, close));
        let link = Arc::new(Link {
            outbound,
            pending: Mutex::new(Pending::default()),
            backstop_wake: Notify::new(),
            receivers: Mutex::new(HashMap::new()),
            producers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            activity: Arc::new(Activity::new(busy_poll::enabled_here(), PollFor::Answers)),
            segment,
            draining: CancellationToken::new(),
            drained: AtomicBool::new(false),
        });
        (link, task)
    }

    /// Starts draining: no new work is taken from now on.
    pub(crate) fn drain(&self) {
        self.drained.store(true, Ordering::Release);
        self.draining.cancel();
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.drained.load(Ordering::Acquire)
    }

    /// Resolves once the service starts draining.
    pub(crate) async fn until_draining(&self) {
        self.draining.cancelled().await;
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a frame for the console. Fails only once the writer is gone.
    pub(crate) async fn send(&self, envelope: Envelope) -> Result<(), super::CallError> {
        self.outbound
            .send(envelope)
            .await
            .map_err(|_| super::CallError::Disconnected)
    }

    /// Queues a frame without waiting (from `Drop`); false if the queue is full or closed.
    pub(crate) fn try_send(&self, envelope: Envelope) -> bool {
        self.outbound.try_send(envelope).is_ok()
    }

    /// Queues `envelope` if there is room, else hands it back (to be sent by a task that can
    /// wait). Closed: dropped, as `send` would.
    pub(crate) fn try_send_back(&self, envelope: Envelope) -> Option<Envelope> {
        match self.outbound.try_send(envelope) {
            Err(Refused::Full(envelope)) => Some(envelope),
            Ok(()) | Err(Refused::Closed) => None,
        }
    }

    /// Registers a stream call: its items, and its end, arrive on the receiver.
    pub(crate) fn expect_stream(&self, id: u64) -> mpsc::Receiver<Envelope> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        locked(&self.receivers).insert(id, tx);
        rx
    }

    pub(crate) fn forget_stream(&self, id: u64) {
        locked(&self.receivers).remove(&id);
    }

    /// Registers a stream this service produces in answer to request `id`.
    pub(crate) fn produce(&self, id: u64) -> Arc<Gate> {
        let gate = Gate::new();
        locked(&self.producers).insert(id, gate.clone());
        gate
    }

    pub(crate) fn produced(&self, id: u64) {
        locked(&self.producers).remove(&id);
    }

    /// A Credit or Cancel from the console for a stream this service produces.
    pub(crate) fn control(&self, envelope: &Envelope) {
        let gate = locked(&self.producers).get(&envelope.correlation).cloned();
        let Some(gate) = gate else { return };
        match envelope.kind {
            Kind::Credit(more) => gate.grant(more),
            Kind::Cancel => gate.cancelled.cancel(),
            _ => {}
        }
    }

    /// An item of a stream this service reads. One that overflows the queue means the console
    /// forwarded past the credit, which it never does; it is dropped and logged.
    pub(crate) fn stream_item(&self, envelope: Envelope) {
        let receiver = locked(&self.receivers).get(&envelope.correlation).cloned();
        match receiver {
            Some(receiver) => {
                if receiver.try_send(envelope).is_err() {
                    tracing::warn!("stream item dropped: the reader's queue is full");
                }
            }
            None => tracing::debug!("stream item for a stream nobody reads"),
        }
    }

    /// Registers a call waiting for the answer to request `id`, given up at `give_up_at`.
    pub(crate) fn expect_answer(&self, id: u64, give_up_at: Instant) -> oneshot::Receiver<Answer> {
        let (answer, rx) = oneshot::channel();
        let mut pending = self.pending_map();
        pending.calls.insert(id, Waiting { answer, give_up_at });
        self.activity.set_awaited(pending.calls.len());
        // Calls of one budget come in the order they give up: only one earlier than the
        // backstop's plan (or the first, while it sleeps) wakes it.
        let sooner = pending.backstop_at.is_none_or(|at| give_up_at < at);
        if sooner {
            pending.backstop_at = Some(give_up_at);
        }
        drop(pending);
        if sooner {
            self.backstop_wake.notify_one();
        }
        self.activity.message();
        rx
    }

    pub(crate) fn forget(&self, id: u64) {
        let mut pending = self.pending_map();
        pending.calls.remove(&id);
        self.activity.set_awaited(pending.calls.len());
    }

    /// Hands an answer to the call waiting for it. An answer nobody waits for any more (its
    /// caller timed out) is dropped.
    pub(crate) fn answer(&self, envelope: Envelope) {
        let waiter = {
            let mut pending = self.pending_map();
            let waiter = pending.calls.remove(&envelope.correlation);
            self.activity.set_awaited(pending.calls.len());
            waiter
        };
        if let Some(waiter) = waiter {
            self.activity.message();
            let _ = waiter.answer.send(Some(envelope));
        } else if let Some(receiver) = locked(&self.receivers).remove(&envelope.correlation) {
            // The end of a stream (or an error instead of one).
            let _ = receiver.try_send(envelope);
        } else {
            tracing::debug!(
                correlation = envelope.correlation,
                "answer for a call nobody waits for"
            );
        }
    }

    /// Fails every waiting call: the console is gone.
    pub(crate) fn disconnect(&self) {
        self.pending_map().calls.clear();
        self.activity.set_awaited(0);
        locked(&self.receivers).clear();
        for gate in locked(&self.producers).values() {
            gate.cancelled.cancel();
        }
    }

    /// Gives up on the calls whose time has come (each gets `None`); the rest go on waiting.
    /// Returns when the backstop must look again: the earliest time left, if any.
    fn give_up(&self, now: Instant) -> Option<Instant> {
        let (given_up, next): (Vec<Waiting>, Option<Instant>) = {
            let mut pending = self.pending_map();
            let late = pending
                .calls
                .extract_if(|_, waiting| waiting.give_up_at <= now)
                .map(|(_, waiting)| waiting)
                .collect();
            self.activity.set_awaited(pending.calls.len());
            // Set under the lock that inserts take, so a call added after this compares
            // against the new plan.
            let next = pending.calls.values().map(|w| w.give_up_at).min();
            pending.backstop_at = next;
            (late, next)
        };
        for waiting in given_up {
            let _ = waiting.answer.send(None);
        }
        next
    }

    fn pending_map(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still safe to use.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Polls for the answers to this service's calls while it waits for a few (see
/// [`crate::busy_poll`]), until `stop`. A service that only answers never polls.
pub(crate) async fn poll_for_answers(link: Arc<Link>, stop: CancellationToken) {
    let polled = busy_poll::run(Arc::downgrade(&link.activity));
    tokio::select! {
        () = polled => {}
        () = stop.cancelled() => {}
    }
}

/// The backstop for calls the console never answers (it is gone, or stuck): it sleeps until
/// the earliest time a waiting call gives up, fails the calls past their time, and sleeps
/// until told while none wait. The console answers `timeout` itself at a call's deadline, so
/// this rarely fails anything. One task and one timer for all calls, instead of a timer each:
/// registering and clearing a timer per call was a tenth of a busy caller's work (the bench
/// client, 64 calls in flight). A call that gives up sooner than the plan wakes it (see
/// [`Link::expect_answer`]); waking without cause only costs a look.
pub(crate) async fn give_up_late_calls(link: Arc<Link>, stop: CancellationToken) {
    let mut next: Option<Instant> = None;
    loop {
        let woken = async {
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at.into()) => {}
                        () = link.backstop_wake.notified() => {}
                    }
                }
                None => link.backstop_wake.notified().await,
            }
        };
        tokio::select! {
            () = woken => {}
            () = stop.cancelled() => return,
        }
        next = link.give_up(Instant::now());
    }
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Single inserts and removes: a poisoned lock cannot be inconsistent.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
