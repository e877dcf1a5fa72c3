//! What the router saw: a bounded buffer of recent hops (trace, from, to, method, latency,
//! outcome) and counters with latency histograms per route, for the console and the gateway.

use std::{
    collections::VecDeque,
    hash::{Hash, Hasher},
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

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Route {
    pub from: Arc<str>,
    pub to: Arc<str>,
    pub method: Name,
}

/// A route by reference, to look one up without building its key: hashed exactly as
/// [`Route`] is.
#[derive(Clone, Copy)]
struct RouteRef<'a> {
    from: &'a str,
    to: &'a str,
    method: &'a str,
}

impl Hash for Route {
    fn hash<H: Hasher>(&self, state: &mut H) {
        RouteRef {
            from: &self.from,
            to: &self.to,
            method: &self.method,
        }
        .hash(state);
    }
}

impl Hash for RouteRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.from.hash(state);
        self.to.hash(state);
        self.method.hash(state);
    }
}

impl hashbrown::Equivalent<Route> for RouteRef<'_> {
    fn equivalent(&self, route: &Route) -> bool {
        *route.from == *self.from && *route.to == *self.to && route.method == self.method
    }
}

/// A hop as it is kept: its route by index, so that recording one, once per routed request,
/// clones no `Arc` and builds no key.
struct HopRecord {
    at: SystemTime,
    trace: u64,
    route: usize,
    /// The hop's own method: its route's is [`OTHER_METHOD`] past [`ROUTES_KEPT`].
    method: Name,
    latency: Duration,
    error: Option<&'static str>,
}

pub(super) struct Traces {
    hops: VecDeque<HopRecord>,
    /// Each route's index in `routes`.
    index: hashbrown::HashMap<Route, usize, foldhash::fast::RandomState>,
    routes: Vec<(Route, RouteStats)>,
    /// The wall clock at one monotonic instant: a hop's wall-clock time is derived from the
    /// monotonic clock the router reads anyway, one clock read per hop instead of two.
    epoch: (SystemTime, Instant),
}

impl Default for Traces {
    fn default() -> Self {
        Traces {
            hops: VecDeque::new(),
            index: hashbrown::HashMap::default(),
            routes: Vec::new(),
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

    /// Records one hop from `from` to `to`: into the buffer of recent hops, and into its
    /// route's counters and histogram.
    #[allow(clippy::too_many_arguments)] // the hop's fields, taken by reference
    pub fn record(
        &mut self,
        at: SystemTime,
        trace: u64,
        from: &str,
        to: &str,
        method: &Name,
        latency: Duration,
        error: Option<&'static str>,
    ) {
        let route = self.route_index(from, to, method);
        let stats = &mut self.routes[route].1;
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        stats.requests += 1;
        stats.errors += u64::from(error.is_some());
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
        self.hops.push_back(HopRecord {
            at,
            trace,
            route,
            method: method.clone(),
            latency,
            error,
        });
    }

    /// The index of the route (from, to, method), added if new (the only time its names are
    /// copied); past [`ROUTES_KEPT`] a new route is counted under [`OTHER_METHOD`].
    fn route_index(&mut self, from: &str, to: &str, method: &str) -> usize {
        let key = RouteRef { from, to, method };
        if let Some(&index) = self.index.get(&key) {
            return index;
        }
        let method = if self.routes.len() >= ROUTES_KEPT {
            let other = RouteRef {
                method: OTHER_METHOD,
                ..key
            };
            if let Some(&index) = self.index.get(&other) {
                return index;
            }
            OTHER_METHOD
        } else {
            method
        };
        let route = Route {
            from: Arc::from(from),
            to: Arc::from(to),
            method: method.into(),
        };
        let index = self.routes.len();
        self.index.insert(route.clone(), index);
        self.routes.push((route, RouteStats::default()));
        index
    }

    fn hop(&self, record: &HopRecord) -> Hop {
        let route = &self.routes[record.route].0;
        Hop {
            at: record.at,
            trace: record.trace,
            from: route.from.clone(),
            to: route.to.clone(),
            method: record.method.clone(),
            latency: record.latency,
            error: record.error,
        }
    }

    pub fn recent(&self, n: usize) -> Vec<Hop> {
        self.hops
            .iter()
            .skip(self.hops.len().saturating_sub(n))
            .map(|record| self.hop(record))
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
            .filter(|record| {
                let route = &self.routes[record.route].0;
                &*route.from == service || &*route.to == service
            })
            .take(n)
            .map(|record| self.hop(record))
            .collect();
        hops.reverse();
        hops
    }

    pub fn trace(&self, trace: u64) -> Vec<Hop> {
        self.hops
            .iter()
            .filter(|record| record.trace == trace)
            .map(|record| self.hop(record))
            .collect()
    }

    /// Requests made so far by each caller (a service, or the gateway), summed over its routes.
    pub fn calls_by_caller(&self) -> Vec<(Arc<str>, u64)> {
        let mut totals: Vec<(Arc<str>, u64)> = Vec::new();
        for (route, stats) in &self.routes {
            match totals.iter_mut().find(|(from, _)| *from == route.from) {
                Some((_, total)) => *total = total.saturating_add(stats.requests),
                None => totals.push((route.from.clone(), stats.requests)),
            }
        }
        totals
    }

    pub fn routes(&self) -> Vec<(Route, RouteStats)> {
        let mut routes = self.routes.clone();
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

    fn record(traces: &mut Traces, method: &str) {
        traces.record(
            SystemTime::UNIX_EPOCH,
            1,
            "caller",
            "echo",
            &method.into(),
            Duration::from_micros(3),
            Some("not_found"),
        );
    }

    #[test]
    fn routes_past_the_limit_are_counted_under_other() {
        let mut traces = Traces::default();
        for i in 0..ROUTES_KEPT {
            record(&mut traces, &format!("m{i}"));
        }
        // Known routes still count apart; new ones share one.
        record(&mut traces, "m0");
        record(&mut traces, "made_up_1");
        record(&mut traces, "made_up_2");
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

    #[test]
    fn hops_are_kept_with_their_routes_oldest_first_and_bounded() {
        let mut traces = Traces::default();
        let total = HOPS_KEPT as u64 + 10;
        for i in 0..total {
            let (from, to) = if i % 2 == 0 { ("a", "b") } else { ("b", "c") };
            let latency = Duration::from_micros(i);
            traces.record(
                SystemTime::UNIX_EPOCH,
                i,
                from,
                to,
                &"get".into(),
                latency,
                None,
            );
        }
        assert_eq!(traces.recent(usize::MAX).len(), HOPS_KEPT);
        assert!(traces.trace(0).is_empty(), "the oldest hops are gone");
        let last = traces.trace(total - 1);
        assert_eq!(last.len(), 1);
        assert_eq!(
            (&*last[0].from, &*last[0].to, last[0].method.as_str()),
            ("b", "c", "get")
        );
        assert_eq!(last[0].latency, Duration::from_micros(total - 1));
        let of_a = traces.recent_of(Some("a"), 3);
        assert_eq!(of_a.len(), 3);
        assert!(of_a.iter().all(|h| &*h.from == "a" && &*h.to == "b"));
        assert!(
            of_a.windows(2).all(|w| w[0].trace < w[1].trace),
            "oldest first"
        );
        assert_eq!(of_a[2].trace, total - 2);
        let routes = traces.routes();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes.iter().map(|(_, s)| s.requests).sum::<u64>(), total);
    }
}
