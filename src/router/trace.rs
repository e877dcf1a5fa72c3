//! What the router saw: a bounded buffer of recent hops (trace, from, to, method, latency,
//! outcome) and counters with latency histograms per route, for the console and the gateway.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant, SystemTime},
};

use std::sync::Arc;

use serde::Serialize;
use switchboard_protocol::{ErrorCode, Name, segment::latency_bucket};

/// Hops kept; older ones are dropped.
pub const HOPS_KEPT: usize = 4096;
/// Routes counted apart. Routes are bounded by the stack (its services and their methods), but
/// a refused request's method is whatever its caller wrote; past this many, a new route is
/// counted under the method [`OTHER_METHOD`] instead.
pub const ROUTES_KEPT: usize = 4096;
/// The method of the catch-all route of each (from, to) past [`ROUTES_KEPT`].
pub const OTHER_METHOD: &str = "(other)";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hop {
    pub at: SystemTime,
    pub trace: u64,
    pub from: Arc<str>,
    pub to: Arc<str>,
    pub method: Name,
    pub latency: Duration,
    /// `None` for success.
    pub error: Option<&'static str>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RouteStats {
    pub requests: u64,
    pub errors: u64,
    pub latency_sum_us: u64,
    /// Counts per log2 bucket of µs, as in the metrics segment.
    pub histogram: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Route {
    pub from: Arc<str>,
    pub to: Arc<str>,
    pub method: Name,
}

pub(super) struct Traces {
    hops: VecDeque<Hop>,
    routes: HashMap<Route, RouteStats, foldhash::fast::RandomState>,
    /// The wall clock at one monotonic instant: a hop's wall-clock time is derived from the
    /// monotonic clock the router reads anyway, one clock read per hop instead of two.
    epoch: (SystemTime, Instant),
}

impl Default for Traces {
    fn default() -> Self {
        Traces {
            hops: VecDeque::new(),
            routes: HashMap::default(),
            epoch: (SystemTime::now(), Instant::now()),
        }
    }
}

impl Traces {
    /// The wall-clock time of `now`. Re-anchored every minute, so that a wall clock set by the
    /// operator or NTP shows in hop times soon.
    pub fn wall_clock(&mut self, now: Instant) -> SystemTime {
        let since = now.saturating_duration_since(self.epoch.1);
        if since > Duration::from_secs(60) {
            self.epoch = (SystemTime::now(), now);
            return self.epoch.0;
        }
        self.epoch.0 + since
    }

    pub fn record(&mut self, hop: Hop) {
        let us = u64::try_from(hop.latency.as_micros()).unwrap_or(u64::MAX);
        let mut route = Route {
            from: hop.from.clone(),
            to: hop.to.clone(),
            method: hop.method.clone(),
        };
        if self.routes.len() >= ROUTES_KEPT && !self.routes.contains_key(&route) {
            route.method = OTHER_METHOD.into();
        }
        let stats = self.routes.entry(route).or_default();
        stats.requests += 1;
        stats.errors += u64::from(hop.error.is_some());
        stats.latency_sum_us = stats.latency_sum_us.saturating_add(us);
        if stats.histogram.is_empty() {
            stats.histogram = vec![0; switchboard_protocol::segment::HIST_BUCKETS];
        }
        if let Some(bucket) = stats.histogram.get_mut(latency_bucket(us)) {
            *bucket += 1;
        }
        if self.hops.len() == HOPS_KEPT {
            self.hops.pop_front();
        }
        self.hops.push_back(hop);
    }

    pub fn recent(&self, n: usize) -> Vec<Hop> {
        self.hops
            .iter()
            .skip(self.hops.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// The most recent `n` hops from or to `service` (any, without one), oldest first.
    pub fn recent_of(&self, service: Option<&str>, n: usize) -> Vec<Hop> {
        let Some(service) = service else {
            return self.recent(n);
        };
        let mut hops: Vec<Hop> = self
            .hops
            .iter()
            .rev()
            .filter(|h| &*h.from == service || &*h.to == service)
            .take(n)
            .cloned()
            .collect();
        hops.reverse();
        hops
    }

    pub fn trace(&self, trace: u64) -> Vec<Hop> {
        self.hops
            .iter()
            .filter(|h| h.trace == trace)
            .cloned()
            .collect()
    }

    pub fn routes(&self) -> Vec<(Route, RouteStats)> {
        let mut routes: Vec<_> = self
            .routes
            .iter()
            .map(|(r, s)| (r.clone(), s.clone()))
            .collect();
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        routes
    }
}

pub fn code_name(code: Option<ErrorCode>) -> Option<&'static str> {
    code.map(ErrorCode::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(method: &str) -> Hop {
        Hop {
            at: SystemTime::UNIX_EPOCH,
            trace: 1,
            from: Arc::from("caller"),
            to: Arc::from("echo"),
            method: method.into(),
            latency: Duration::from_micros(3),
            error: Some("not_found"),
        }
    }

    #[test]
    fn routes_past_the_limit_are_counted_under_other() {
        let mut traces = Traces::default();
        for i in 0..ROUTES_KEPT {
            traces.record(hop(&format!("m{i}")));
        }
        // Known routes still count apart; new ones share one.
        traces.record(hop("m0"));
        traces.record(hop("made_up_1"));
        traces.record(hop("made_up_2"));
        let routes = traces.routes();
        assert_eq!(routes.len(), ROUTES_KEPT + 1);
        let requests = |method: &str| {
            routes
                .iter()
                .find(|(r, _)| r.method == method)
                .map(|(_, s)| s.requests)
        };
        assert_eq!(requests("m0"), Some(2));
        assert_eq!(requests(OTHER_METHOD), Some(2));
        assert_eq!(requests("made_up_1"), None);
    }
}
