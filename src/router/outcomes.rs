//! What the router keeps of outcomes: admission by the target's circuit breaker, and every
//! routed request's end fed to its breaker, the trace buffer and the route metrics.

use std::time::{Duration, Instant};

use switchboard_protocol::ErrorCode;

use super::{
    Books, InFlight, Router,
    breaker::{self, BreakerState},
    lock, trace,
};
use crate::event::{Event, EventKind};

impl Router {
    /// `Some(retry_after)` when the target's breaker is open.
    pub(super) fn breaker_refuses(&self, service: &str, now: Instant) -> Option<Duration> {
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

    /// A routed request ended at `now`: feed the target's breaker, the trace buffer and route
    /// metrics.
    pub(super) fn finished(&self, flight: &InFlight, code: Option<ErrorCode>, now: Instant) {
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

    /// An instance of `service` is becoming ready: its open breaker half-opens at once (see
    /// [`breaker`]), so the next call is its probe.
    pub fn breaker_target_ready(&self, service: &str) {
        let transition = lock(&self.inner.books)
            .breakers
            .get_mut(service)
            .and_then(|b| b.target_ready());
        if let Some(state) = transition {
            self.breaker_changed(service, state);
        }
    }

    /// Closes `service`'s breaker by hand. `None` for no such service, else whether it was
    /// open or half-open.
    pub fn reset_breaker(&self, service: &str) -> Option<bool> {
        let transition = lock(&self.inner.books)
            .breakers
            .get_mut(service)
            .map(|b| b.reset())?;
        if let Some(state) = transition {
            self.breaker_changed(service, state);
        }
        Some(transition.is_some())
    }

    /// The state of `service`'s breaker and, while it is open, what is left of its cooldown.
    pub fn breaker_status(&self, service: &str) -> Option<(BreakerState, Option<Duration>)> {
        let now = Instant::now();
        lock(&self.inner.books)
            .breakers
            .get(service)
            .map(|b| (b.state(), b.cooldown_left(now)))
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
}
