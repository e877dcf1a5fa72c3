//! The oldest request each replica and each restarting service still owes an answer to: the
//! age of a derived backlog (see `docs/backlog.md`).
//!
//! Found by one pass over the requests in flight once a sample (a second), not kept up as
//! requests come and go: that would put an ordered structure per replica on the routing hot
//! path, paid on every request, to save a pass that the deadline sweeper already makes two
//! hundred times a second.

use std::{collections::HashMap, sync::Arc, time::Instant};

use super::{Inner, Router, lock};
use crate::monitor::backlog::OldestWaits;

impl Router {
    /// The oldest request each replica and each restarting service is owed an answer to,
    /// read through a weak handle, for the metrics sampler: it must not keep the router (and
    /// through it the registry) alive.
    pub fn oldest_waits(&self) -> impl Fn() -> OldestWaits + Send + Sync + 'static {
        let inner = Arc::downgrade(&self.inner);
        move || {
            inner
                .upgrade()
                .map(|inner| oldest_waits(&inner))
                .unwrap_or_default()
        }
    }
}

/// Per instance, when its oldest unanswered request was routed, or held before that while
/// the service restarted (streams that have started flowing are being served and do not
/// count); per service, when its oldest held request was held.
fn oldest_waits(inner: &Inner) -> OldestWaits {
    let mut routed = HashMap::new();
    for flight in lock(&inner.in_flight).values() {
        if flight.streaming {
            continue;
        }
        routed
            .entry(flight.target.id)
            .and_modify(|at: &mut Instant| *at = (*at).min(flight.waiting_since))
            .or_insert(flight.waiting_since);
    }
    let held = lock(&inner.held)
        .oldest()
        .map(|(service, since)| (service.to_string(), since))
        .collect();
    OldestWaits { routed, held }
}
