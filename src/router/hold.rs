//! Requests and events held for a service that is restarting, so a crash or a rolling restart
//! costs callers some latency rather than errors.
//!
//! Bounded per service: [`HOLD_REQUESTS`] requests (the next is answered `unavailable`) and
//! [`HOLD_EVENTS`] events (the oldest is dropped and counted). A held request keeps its deadline:
//! the deadline sweeper answers `timeout` for one that waits too long. A request without a
//! deadline is held at most [`HOLD_WITHOUT_DEADLINE`].

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use switchboard_protocol::Envelope;

use super::Caller;

pub const HOLD_REQUESTS: usize = 256;
pub const HOLD_EVENTS: usize = 1024;
pub const HOLD_WITHOUT_DEADLINE: Duration = Duration::from_secs(10);

pub(super) struct HeldRequest {
    pub from: std::sync::Arc<str>,
    pub caller: Caller,
    pub envelope: Envelope,
    pub deadline: Instant,
    /// When it was held: the age of a restarting service's derived backlog counts from here.
    pub since: Instant,
}

#[derive(Default)]
pub(super) struct Held {
    pub requests: HashMap<String, VecDeque<HeldRequest>>,
    pub events: HashMap<String, VecDeque<Envelope>>,
    pub dropped_events: u64,
}

impl Held {
    /// Holds a request; hands it back when the service's queue is full.
    pub fn hold_request(
        &mut self,
        service: &str,
        request: HeldRequest,
    ) -> Result<(), Box<HeldRequest>> {
        let queue = self.requests.entry(service.to_string()).or_default();
        if queue.len() >= HOLD_REQUESTS {
            return Err(Box::new(request));
        }
        queue.push_back(request);
        Ok(())
    }

    pub fn hold_event(&mut self, service: &str, event: Envelope) {
        let queue = self.events.entry(service.to_string()).or_default();
        if queue.len() >= HOLD_EVENTS {
            queue.pop_front();
            self.dropped_events += 1;
        }
        queue.push_back(event);
    }

    /// Everything held for `service`, oldest first.
    pub fn release(&mut self, service: &str) -> (Vec<HeldRequest>, Vec<Envelope>) {
        let requests = self
            .requests
            .remove(service)
            .map(Vec::from)
            .unwrap_or_default();
        let events = self
            .events
            .remove(service)
            .map(Vec::from)
            .unwrap_or_default();
        (requests, events)
    }

    /// Requests held for `service` now.
    pub fn requests_for(&self, service: &str) -> usize {
        self.requests.get(service).map_or(0, VecDeque::len)
    }

    /// Requests whose deadline has passed.
    pub fn expired(&mut self, now: Instant) -> Vec<HeldRequest> {
        let mut expired = Vec::new();
        for queue in self.requests.values_mut() {
            let (gone, kept): (Vec<_>, Vec<_>) = queue.drain(..).partition(|r| r.deadline <= now);
            expired.extend(gone);
            queue.extend(kept);
        }
        self.requests.retain(|_, q| !q.is_empty());
        expired
    }

    /// Per service, when its oldest held request was held (each queue is oldest first).
    pub fn oldest(&self) -> impl Iterator<Item = (&str, Instant)> {
        self.requests
            .iter()
            .filter_map(|(service, queue)| Some((service.as_str(), queue.front()?.since)))
    }

    pub fn has_requests(&self) -> bool {
        !self.requests.is_empty()
    }
}
