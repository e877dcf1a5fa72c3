//! A request's way to one replica: who may call whom, the target's breaker, the least loaded
//! ready replica (in turn among equals), holding it while its service restarts; then its answer
//! back to the caller, and the flights of an instance that is gone.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use switchboard_protocol::{Envelope, ErrorCode, Kind, Status};

use super::{Caller, GATEWAY, INITIAL_CREDIT, InFlight, Router, error_answer, hold, lock, trace};
use crate::{
    registry::{self, InstanceHandle},
    transport::SendError,
};

/// Why no instance was picked.
enum Miss {
    /// Answer the caller with this.
    Fail(ErrorCode, String),
    /// The service is wanted but has no ready instance right now: hold the request.
    Restarting,
}

/// Why a request may not go on at all.
enum Barred {
    /// No such service: answered `not found`.
    Unknown(String),
    /// Refused, and counted on its route like any failure.
    Refused(ErrorCode, String),
}

impl Router {
    /// Sends a request on to the least loaded ready instance of its destination, or answers
    /// it at once with the reason it cannot go; `now` starts its deadline.
    pub(super) fn dispatch(
        &self,
        from: &Arc<str>,
        caller: Caller,
        envelope: &mut Envelope,
        now: Instant,
    ) {
        self.dispatch_since(from, caller, envelope, now, now);
    }

    /// As `dispatch`, for a request the console has had since `since` (held while its service
    /// restarted): the age of the service's derived backlog counts from there, not from
    /// this routing.
    fn dispatch_since(
        &self,
        from: &Arc<str>,
        caller: Caller,
        envelope: &mut Envelope,
        now: Instant,
        since: Instant,
    ) {
        match self.barred(from, envelope, now) {
            None => {}
            // A name nobody has: answered, not counted on a route that does not exist.
            Some(Barred::Unknown(message)) => {
                let answer =
                    error_answer(envelope.id, envelope.trace, ErrorCode::NotFound, &message);
                return caller.deliver(answer);
            }
            Some(Barred::Refused(code, message)) => {
                return self.refuse(from, caller, envelope, code, &message);
            }
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
                waiting_since: since,
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
            // Sent Shutdown between the pick and the send: it left the routable set before
            // Shutdown was queued, so dispatching again picks another replica, or holds the
            // request for the one coming back. (Never the same target: no loop.)
            if err == SendError::Draining && !target.is_routable() {
                if let Some(flight) = self.in_flight().remove(&routed_id) {
                    envelope.id = caller_id;
                    return self.dispatch_since(from, flight.caller, envelope, now, since);
                }
                return;
            }
            let (code, message) = match err {
                SendError::Full => {
                    target.congested.store(true, Ordering::Relaxed);
                    (ErrorCode::Overloaded, "target is congested")
                }
                SendError::Closed | SendError::Draining => {
                    (ErrorCode::Unavailable, "target is gone")
                }
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

    /// Why a request may not go on now: who may call whom (a forbidden call is audited), and
    /// the target's breaker. Allocates only for a refusal.
    fn barred(&self, from: &Arc<str>, envelope: &Envelope, now: Instant) -> Option<Barred> {
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
            return Some(Barred::Unknown(format!(
                "no service `{}`",
                envelope.destination
            )));
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
            return Some(Barred::Refused(ErrorCode::Forbidden, message));
        }
        let retry_after = self.breaker_refuses(&envelope.destination, now)?;
        let message = format!(
            "circuit to `{}` is open; retry in {} ms",
            envelope.destination,
            retry_after.as_millis()
        );
        Some(Barred::Refused(ErrorCode::CircuitOpen, message))
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
        // Healthy replicas first, then the least loaded (see `supervisor::degraded`).
        let rank = |h: &InstanceHandle| {
            (
                h.degraded.load(Ordering::Relaxed),
                h.outstanding.load(Ordering::Relaxed),
            )
        };
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
            if best.is_none_or(|b| rank(handle) < rank(b)) {
                best = Some(handle);
            }
        }
        if any_hello && !knows_method {
            return Err(Miss::Fail(
                ErrorCode::NotFound,
                format!("`{service}` has no method `{method}`"),
            ));
        }
        if let Some(bound) = entry.spec.backlog.admission_bound(method) {
            let waiting: u64 = entry
                .instances
                .iter()
                .filter_map(|i| i.handle.as_ref())
                .map(|h| h.waiting())
                .fold(0, u64::saturating_add);
            // Admission control (`max_backlog`): past the bound, new work waits at the caller
            // (503 + Retry-After at the gateway) instead of inside the service. Not a breaker
            // failure: the service is healthy, only full.
            if waiting >= bound {
                return Err(Miss::Fail(
                    ErrorCode::Overloaded,
                    format!("`{service}` has {waiting} waiting, at its max_backlog {bound}"),
                ));
            }
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

    /// Tells the registry how many requests are held for `service`, for its backlog.
    pub(super) fn publish_held(&self, service: &str, held: usize) {
        if let Some(entry) = registry::read(&self.inner.registry).service(service) {
            entry.held_requests.store(held as u64, Ordering::Relaxed);
        }
    }

    fn hold(&self, from: &Arc<str>, caller: Caller, envelope: Envelope) {
        let since = Instant::now();
        let deadline = since
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
            since,
        };
        let (refused, held) = {
            let mut books = lock(&self.inner.held);
            let refused = books.hold_request(&service, request);
            (refused, books.requests_for(&service))
        };
        // Outside the hold lock: the registry's lock is never taken inside it.
        self.publish_held(&service, held);
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
        self.publish_held(service, 0);
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
            self.dispatch_since(&held.from, held.caller, &mut held.envelope, now, held.since);
        }
        for event in events {
            self.deliver_event(service, &event);
        }
    }

    pub(super) fn answer(&self, envelope: &mut Envelope, received: Instant) {
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

    /// The instance is gone: its callers get `unavailable` now, and answers owed to it are
    /// dropped.
    pub fn instance_gone(&self, gone: &Arc<InstanceHandle>) {
        if let Some(uplink) = self.inner.uplink.get() {
            uplink.gone(gone);
        }
        let why = format!("`{}` exited with the request in flight", gone.service);
        self.instance_lost(gone, &why);
    }

    /// The instance can no longer be reached (it exited, or its host went silent): its
    /// callers get `unavailable` now, saying `why`, and answers owed to it are dropped.
    pub fn instance_lost(&self, gone: &Arc<InstanceHandle>, why: &str) {
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
                self.end_flight(routed_id, flight, ErrorCode::Unavailable, why, false);
            } else {
                // The caller is gone and nobody will read the answer: tell the target to stop
                // (a stream's producer stops at once; a plain request is best effort).
                self.cancel_flight(routed_id, &flight);
            }
        }
    }

    /// Where to start scanning the `len` instances of `service` for the least loaded: each
    /// pick one further.
    pub(super) fn rotation_start(&self, service: &str, len: usize) -> usize {
        if len <= 1 {
            return 0;
        }
        let Some(rotation) = self.inner.rotations.get(service) else {
            return 0;
        };
        let turn = rotation.fetch_add(1, Ordering::Relaxed);
        (turn % len as u64) as usize
    }

    /// Answers a request the router refuses itself, before it reaches an instance (forbidden,
    /// circuit open, no ready instance, no such method, held past its deadline). The refusal
    /// is counted on its route and kept as a hop like any failure, so that an open breaker
    /// shows in `/metrics` and the traces as the errors its callers get. Not fed to the
    /// breaker: the target did not fail. The destination is a service of the stack (the only
    /// caller that passes anything else answers `not found` first); a method the service does
    /// not declare is counted as [`trace::OTHER_METHOD`], so callers cannot grow the metrics
    /// by making names up.
    pub(super) fn refuse(
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
}
