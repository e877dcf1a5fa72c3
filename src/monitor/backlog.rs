//! A service's backlog: the work waiting inside it, and how it moves.
//!
//! A service that publishes one (segment words 18–20) is taken at its word; for one that does
//! not, the console counts what it can see: requests routed to each replica and not answered
//! yet (which includes those still in its inbox), or the frames in its inbox when more, plus
//! the requests the router holds for it while it restarts; the oldest of those (as the router
//! reports in [`OldestWaits`]) gives the age. Replicas are added up; the oldest item is the
//! oldest of any replica's. Each replica's own figure is kept too ([`ReplicaBacklog`]), so a
//! console can show which replica is behind.
//!
//! The history (one sample a second, five minutes) gives the trend arrow the table shows and
//! the growth the alerts and the autoscaler read (see `docs/backlog.md`).

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use switchboard_protocol::segment::Snapshot;

use crate::registry::{InstanceHandle, InstanceId};

/// Samples kept: five minutes at one a second. A growth window longer than this is judged on
/// what is kept.
pub const BACKLOG_HISTORY: usize = 300;
/// The trend arrow compares the newest sample with the one this many samples before.
const TREND_SPAN: usize = 5;

/// Which way the backlog moves over the last few samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Trend {
    Rising,
    Falling,
    #[default]
    Flat,
}

impl Trend {
    /// The word the read model carries.
    pub fn as_str(self) -> &'static str {
        match self {
            Trend::Rising => "rising",
            Trend::Falling => "falling",
            Trend::Flat => "flat",
        }
    }
}

/// Since when the oldest request the console still owes an answer has waited, as the router
/// sees it once a sample: the age of a derived backlog.
#[derive(Debug, Default)]
pub struct OldestWaits {
    /// Per instance: when its oldest request routed and not answered was routed (a stream
    /// that has started flowing is being served, not waiting, and does not count).
    pub routed: HashMap<InstanceId, Instant>,
    /// Per service: when its oldest request held while it restarts was held.
    pub held: HashMap<String, Instant>,
}

/// One replica's backlog in one sample: what it publishes, else what the console derives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaBacklog {
    pub waiting: u64,
    /// It publishes its own (else the figure is derived).
    pub published: bool,
    /// How long its oldest waiting item has waited; `None` when nothing waits or nobody says.
    pub oldest_age: Option<Duration>,
}

impl ReplicaBacklog {
    /// Its own words when it publishes them; else the requests it owes, aged from the oldest
    /// the router routed to it (`routed`, on the console's monotonic `clock`).
    pub fn of(
        snapshot: &Snapshot,
        handle: &InstanceHandle,
        wall: SystemTime,
        routed: Option<Instant>,
        clock: Instant,
    ) -> ReplicaBacklog {
        match snapshot.backlog {
            Some(published) => ReplicaBacklog {
                waiting: published.waiting,
                published: true,
                oldest_age: published.oldest_accepted_unix_ms.map(|at| age_of(at, wall)),
            },
            None => ReplicaBacklog {
                waiting: handle.derived_waiting(),
                published: false,
                oldest_age: routed.map(|at| clock.saturating_duration_since(at)),
            },
        }
    }
}

/// One service's backlog now, and its recent past.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Backlog {
    /// Items waiting, all replicas together.
    pub waiting: u64,
    /// Every live replica publishes its own (else the figure is, at least in part, derived).
    pub published: bool,
    /// How long the oldest waiting item has waited, on the console's clock; `None` when
    /// nothing waits or nobody says.
    pub oldest_age: Option<Duration>,
    /// `waiting` once a sample, oldest first.
    pub history: VecDeque<u64>,
}

impl Backlog {
    /// Starts a sample: what the previous one added up is cleared, the history kept.
    pub fn begin(&mut self) {
        self.waiting = 0;
        self.published = true;
        self.oldest_age = None;
    }

    /// Adds one replica's backlog (see [`ReplicaBacklog::of`]).
    pub fn add(&mut self, replica: &ReplicaBacklog) {
        self.published &= replica.published;
        self.waiting = self.waiting.saturating_add(replica.waiting);
        self.older(replica.oldest_age);
    }

    /// Keeps the older of the oldest age so far and `age`.
    fn older(&mut self, age: Option<Duration>) {
        if let Some(age) = age {
            self.oldest_age = Some(self.oldest_age.map_or(age, |a| a.max(age)));
        }
    }

    /// Ends a sample: adds the requests the router holds for the service while it restarts
    /// (`held`, the oldest held for `held_age`) to a derived backlog, and records it in the
    /// history.
    pub fn end(&mut self, any_instance: bool, held: u64, held_age: Option<Duration>) {
        if !any_instance {
            self.published = false;
        }
        if !self.published {
            self.waiting = self.waiting.saturating_add(held);
            self.older(held_age);
        }
        if self.history.len() == BACKLOG_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(self.waiting);
    }

    pub fn trend(&self) -> Trend {
        let n = self.history.len();
        if n < 2 {
            return Trend::Flat;
        }
        let then = self.history[n.saturating_sub(TREND_SPAN + 1)];
        let now = self.history[n - 1];
        // Moves smaller than this are noise: a queue served in batches wobbles.
        let noise = (then / 20).max(1);
        if now > then.saturating_add(noise) {
            Trend::Rising
        } else if now.saturating_add(noise) < then {
            Trend::Falling
        } else {
            Trend::Flat
        }
    }

    /// Items per second the backlog grew by over the last `window` (in samples of
    /// `every`), if it grew over all of it: it ends above where it started and never fell
    /// below that start in between. `None` when it did not, or the history is shorter.
    pub fn growth(&self, window: Duration, every: Duration) -> Option<f64> {
        growth(&self.history, window, every)
    }
}

/// See [`Backlog::growth`].
pub fn growth(history: &VecDeque<u64>, window: Duration, every: Duration) -> Option<f64> {
    let every_ms = every.as_millis().max(1);
    let span = usize::try_from(window.as_millis().div_ceil(every_ms)).unwrap_or(usize::MAX);
    let span = span.clamp(1, BACKLOG_HISTORY - 1);
    let n = history.len();
    if n <= span {
        return None;
    }
    let start = history[n - 1 - span];
    let end = history[n - 1];
    let dipped = history.iter().skip(n - span).any(|v| *v < start);
    (end > start && !dipped).then(|| (end - start) as f64 / (span as f64 * every.as_secs_f64()))
}

/// How long ago `unix_ms` was, on `now`'s clock; zero for a time in the future (a service
/// whose clock runs ahead is not believed into an alert).
fn age_of(unix_ms: u64, now: SystemTime) -> Duration {
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Duration::from_millis(now_ms.saturating_sub(unix_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(values: &[u64]) -> VecDeque<u64> {
        values.iter().copied().collect()
    }

    #[test]
    fn growth_needs_a_rise_over_the_whole_window_without_a_dip() {
        let second = Duration::from_secs(1);
        let rising = history(&[5, 10, 20, 30, 40]);
        assert_eq!(growth(&rising, Duration::from_secs(3), second), Some(10.0));
        assert_eq!(
            growth(&rising, Duration::from_secs(5), second),
            None,
            "too short"
        );
        let dipped = history(&[5, 10, 4, 30, 40]);
        assert_eq!(growth(&dipped, Duration::from_secs(3), second), None);
        let flat = history(&[10, 10, 10, 10]);
        assert_eq!(growth(&flat, Duration::from_secs(2), second), None);
    }

    #[test]
    fn the_trend_ignores_a_wobble() {
        let mut backlog = Backlog {
            history: history(&[100, 102, 99, 101, 100, 103]),
            ..Backlog::default()
        };
        assert_eq!(backlog.trend(), Trend::Flat);
        backlog.history.push_back(150);
        assert_eq!(backlog.trend(), Trend::Rising);
        backlog.history.push_back(20);
        assert_eq!(backlog.trend(), Trend::Falling);
    }

    #[test]
    fn an_age_in_the_future_is_zero() {
        let now = UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(age_of(99_000, now), Duration::from_secs(1));
        assert_eq!(age_of(200_000, now), Duration::ZERO);
    }
}
