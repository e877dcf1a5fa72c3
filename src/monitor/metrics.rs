//! Per-service figures from the instances' segments: request and error rates, latency
//! quantiles, heartbeat age and task progress, sampled once a second into short histories for
//! the console's sparklines and the gateway's `/metrics`.
//!
//! Counters restart from zero when an instance is replaced, so rates are computed per instance
//! (keyed by its generation) and summed.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, RwLock, Weak},
    time::{Duration, Instant},
};

use switchboard_protocol::segment::{HIST_BUCKETS, Snapshot, TaskRecord};

use super::{
    backlog::{Backlog, OldestWaits, ReplicaBacklog},
    tasks::FinishedTasks,
};
use crate::registry::{self, InstanceId, Registry};

/// Samples kept per service: five minutes at one per second.
pub const HISTORY: usize = 300;
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// What the console and the gateway show for one service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceMetrics {
    /// Requests finished per second, over the last sample.
    pub request_rate: f64,
    /// Events taken per second (a subscriber's work), over the last sample.
    pub event_rate: f64,
    pub error_rate: f64,
    /// 99th percentile latency over the last sample, µs (upper bound of its bucket).
    pub p99_us: Option<u64>,
    pub p50_us: Option<u64>,
    pub in_flight: u64,
    /// Totals since the console started, across restarts.
    pub requests: u64,
    pub errors: u64,
    pub timeouts: u64,
    /// Events taken, across restarts.
    pub events: u64,
    /// Requests this service made through the console per second, over the last sample (the
    /// router counts them by caller).
    pub call_rate: f64,
    /// Requests it made, since the console started.
    pub calls: u64,
    /// Cumulative latency histogram (counts per log2 bucket), across restarts.
    pub histogram: Vec<u64>,
    pub latency_sum_us: u64,
    /// Longest time any instance's heartbeat has been still, on the console's clock.
    pub heartbeat_age: Option<Duration>,
    /// Request rate history, oldest first.
    pub rate_history: VecDeque<u64>,
    /// Task slots of every instance (replica, record): running ones, and finished ones for
    /// a while (see [`super::tasks`]).
    pub tasks: Vec<(u32, TaskRecord)>,
    /// Problems the segment reader found (torn slots, absurd values).
    pub segment_problems: Vec<String>,
    /// The work waiting inside the service (see [`super::backlog`]).
    pub backlog: Backlog,
}

#[derive(Debug)]
struct InstanceSample {
    snapshot: Snapshot,
    heartbeat_moved: Instant,
    finished: FinishedTasks,
    backlog: ReplicaBacklog,
}

#[derive(Default)]
pub struct Metrics {
    services: HashMap<String, ServiceMetrics>,
    instances: HashMap<InstanceId, InstanceSample>,
    /// Counts samples taken, so a reader that pushes changes (an attached console's stream)
    /// can wake when there is a new one instead of polling.
    samples: tokio::sync::watch::Sender<u64>,
}

/// Requests made so far by each caller, as the router counts them.
pub type CallTotals = Box<dyn Fn() -> Vec<(Arc<str>, u64)> + Send + Sync>;

/// Since when the oldest requests the router still owes answers have waited (the age of a
/// derived backlog).
pub type Waits = Box<dyn Fn() -> OldestWaits + Send + Sync>;

impl Metrics {
    /// Changes after every sample.
    pub fn samples(&self) -> tokio::sync::watch::Receiver<u64> {
        self.samples.subscribe()
    }
}

impl Metrics {
    pub fn service(&self, name: &str) -> Option<&ServiceMetrics> {
        self.services.get(name)
    }

    /// One live instance's backlog at the last sample.
    pub fn replica_backlog(&self, id: InstanceId) -> Option<ReplicaBacklog> {
        self.instances.get(&id).map(|i| i.backlog)
    }

    /// Turns the router's totals of requests made by each caller into each service's call
    /// rate over `elapsed` (callers that are not services, such as the gateway, are skipped).
    pub fn sample_calls(&mut self, totals: &[(Arc<str>, u64)], elapsed: Duration) {
        let seconds = elapsed.as_secs_f64().max(0.001);
        for (name, entry) in &mut self.services {
            let total = totals
                .iter()
                .find(|(caller, _)| **caller == **name)
                .map_or(0, |(_, total)| *total);
            entry.call_rate = total.saturating_sub(entry.calls) as f64 / seconds;
            entry.calls = total;
        }
    }

    /// Takes one sample of every live instance's segment; `waits` ages derived backlogs.
    pub fn sample(&mut self, registry: &Registry, elapsed: Duration, waits: &OldestWaits) {
        let seconds = elapsed.as_secs_f64().max(0.001);
        let now = Instant::now();
        let mut seen = Vec::new();
        for service in &registry.services {
            let entry = self
                .services
                .entry(service.name().to_string())
                .or_insert_with(|| ServiceMetrics {
                    histogram: vec![0; HIST_BUCKETS],
                    ..ServiceMetrics::default()
                });
            let mut finished: u64 = 0;
            let mut errors: u64 = 0;
            let mut events: u64 = 0;
            let mut window = [0u64; HIST_BUCKETS];
            entry.begin_sample();
            let wall = std::time::SystemTime::now();
            let mut sampled = false;
            for instance in &service.instances {
                let Some(handle) = instance.handle.as_ref() else {
                    continue;
                };
                let Some(segment) = handle.segment.as_ref() else {
                    continue;
                };
                let mut snapshot = segment.read();
                let routed = waits.routed.get(&instance.id).copied();
                let backlog = ReplicaBacklog::of(&snapshot, handle, wall, routed, now);
                entry.backlog.add(&backlog);
                seen.push(instance.id);
                sampled = true;
                let previous = self.instances.remove(&instance.id);
                let before = previous.as_ref().map(|p| &p.snapshot);
                let delta = |now: u64, then: Option<u64>| now.saturating_sub(then.unwrap_or(0));
                let ok = delta(snapshot.ok, before.map(|b| b.ok));
                let error = delta(snapshot.error, before.map(|b| b.error));
                let timeout = delta(snapshot.timeout, before.map(|b| b.timeout));
                let taken = delta(snapshot.events_received, before.map(|b| b.events_received));
                events = events.saturating_add(taken);
                entry.events = entry.events.saturating_add(taken);
                // The service writes these counters, so they may hold anything: every sum
                // saturates rather than overflow (a panic in debug builds would end the
                // sampler for every service).
                let failed = error.saturating_add(timeout);
                let done = ok.saturating_add(failed);
                finished = finished.saturating_add(done);
                errors = errors.saturating_add(failed);
                entry.requests = entry.requests.saturating_add(done);
                entry.errors = entry.errors.saturating_add(failed);
                entry.timeouts = entry.timeouts.saturating_add(timeout);
                entry.latency_sum_us = entry.latency_sum_us.saturating_add(delta(
                    snapshot.latency_sum_us,
                    before.map(|b| b.latency_sum_us),
                ));
                for (bucket, count) in snapshot.histogram.iter().enumerate() {
                    let d = delta(*count, before.map(|b| b.histogram[bucket]));
                    window[bucket] = window[bucket].saturating_add(d);
                    if let Some(total) = entry.histogram.get_mut(bucket) {
                        *total = total.saturating_add(d);
                    }
                }
                entry.in_flight = entry.in_flight.saturating_add(snapshot.in_flight);
                let heartbeat_moved = match &previous {
                    Some(p) if p.snapshot.heartbeat == snapshot.heartbeat => p.heartbeat_moved,
                    _ => now,
                };
                let mut finished = previous.map(|p| p.finished).unwrap_or_default();
                let tasks = finished.visible(std::mem::take(&mut snapshot.tasks), now);
                let age = now.saturating_duration_since(heartbeat_moved);
                entry.heartbeat_age = Some(entry.heartbeat_age.map_or(age, |a| a.max(age)));
                entry
                    .tasks
                    .extend(tasks.into_iter().map(|t| (instance.id.replica, t)));
                entry
                    .segment_problems
                    .extend(snapshot.problems.iter().cloned());
                self.instances.insert(
                    instance.id,
                    InstanceSample {
                        snapshot,
                        heartbeat_moved,
                        finished,
                        backlog,
                    },
                );
            }
            let (held, held_age) = held_backlog(service, waits, now);
            entry.backlog.end(sampled, held, held_age);
            entry.request_rate = finished as f64 / seconds;
            entry.event_rate = events as f64 / seconds;
            entry.error_rate = errors as f64 / seconds;
            entry.p99_us = quantile(&window, 0.99);
            entry.p50_us = quantile(&window, 0.50);
            entry.push_rate();
        }
        self.instances.retain(|id, _| seen.contains(id));
    }
}

impl ServiceMetrics {
    /// Clears what one sample adds up over the instances; totals and histories stay.
    fn begin_sample(&mut self) {
        self.in_flight = 0;
        self.tasks.clear();
        self.segment_problems.clear();
        self.heartbeat_age = None;
        self.backlog.begin();
    }

    /// Records the sample's request rate in the history, dropping the oldest past its length.
    fn push_rate(&mut self) {
        if self.rate_history.len() == HISTORY {
            self.rate_history.pop_front();
        }
        self.rate_history
            .push_back(self.request_rate.round() as u64);
    }
}

/// The requests the router holds for `service` while it restarts, and how long the oldest
/// has been held.
fn held_backlog(
    service: &registry::Service,
    waits: &OldestWaits,
    now: Instant,
) -> (u64, Option<Duration>) {
    let held = service
        .held_requests
        .load(std::sync::atomic::Ordering::Relaxed);
    let age = waits
        .held
        .get(service.name())
        .map(|at| now.saturating_duration_since(*at));
    (held, age)
}

/// The upper bound (µs) of the bucket holding quantile `q` of the counts.
pub fn quantile(histogram: &[u64], q: f64) -> Option<u64> {
    let total = histogram.iter().fold(0u64, |a, c| a.saturating_add(*c));
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen: u64 = 0;
    for (bucket, count) in histogram.iter().enumerate() {
        seen = seen.saturating_add(*count);
        if seen >= rank {
            return Some(if bucket == 0 {
                0
            } else {
                1u64 << bucket.min(63)
            });
        }
    }
    None
}

pub type SharedMetrics = Arc<RwLock<Metrics>>;

pub fn read(metrics: &SharedMetrics) -> std::sync::RwLockReadGuard<'_, Metrics> {
    metrics
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts the sampler task; it ends once the registry is dropped. `calls` gives the router's
/// totals of requests made by each caller, `waits` its oldest unanswered requests.
pub fn start(
    registry: Weak<std::sync::RwLock<Registry>>,
    calls: CallTotals,
    waits: Waits,
) -> SharedMetrics {
    let metrics: SharedMetrics = Arc::default();
    let out = metrics.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SAMPLE_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last = Instant::now();
        loop {
            ticks.tick().await;
            let Some(shared) = registry.upgrade() else {
                return;
            };
            let elapsed = last.elapsed();
            last = Instant::now();
            // Read before the registry and metrics locks are taken: the router's own lock is
            // never held under them.
            let calls = calls();
            let waits = waits();
            let registry = registry::read(&shared);
            let mut metrics = metrics
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            metrics.sample(&registry, elapsed, &waits);
            metrics.sample_calls(&calls, elapsed);
            metrics.samples.send_modify(|n| *n += 1);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_from_buckets() {
        let mut histogram = vec![0u64; HIST_BUCKETS];
        histogram[3] = 98; // 4..8 µs
        histogram[10] = 2; // 512..1024 µs
        assert_eq!(quantile(&histogram, 0.5), Some(8));
        assert_eq!(quantile(&histogram, 0.99), Some(1024));
        assert_eq!(quantile(&[0; 4], 0.99), None);
    }
}
