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
