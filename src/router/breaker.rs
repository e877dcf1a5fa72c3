//! Circuit breakers, one per target service. A breaker opens after N consecutive failures, or
//! when the failure ratio over a window crosses a threshold; while open, calls fail fast with
//! `circuit_open`. After a cooldown it half-opens and lets one probe through: success closes it,
//! failure opens it again.
//!
//! A breaker does not sit out its cooldown once its target is back: when an instance of the
//! target becomes ready again (after a restart), an open breaker half-opens at once, so the
//! next call is the probe. An operator can also close one by hand ([`Breaker::reset`]).
//!
//! Failures are what says the *target* is unwell: timeout, unavailable, overloaded and internal.
//! A caller's mistake (bad_request, not_found, forbidden) is not held against the target.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use switchboard_protocol::ErrorCode;

use crate::stack::BreakerSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// Whether an outcome counts against the target.
pub fn is_failure(code: Option<ErrorCode>) -> bool {
    matches!(
        code,
        Some(
            ErrorCode::Timeout
                | ErrorCode::Unavailable
                | ErrorCode::Overloaded
                | ErrorCode::Internal
        )
    )
}

#[derive(Debug, Clone)]
pub struct Breaker {
    spec: BreakerSpec,
    state: BreakerState,
    consecutive: u32,
    /// Outcomes per tenth of the window: (bucket start, requests, failures). Bounded whatever
    /// the request rate.
    buckets: VecDeque<(Instant, u32, u32)>,
    opened_at: Option<Instant>,
    probe_in_flight: bool,
}

impl Breaker {
    pub fn new(spec: BreakerSpec) -> Self {
        Breaker {
            spec,
            state: BreakerState::Closed,
            consecutive: 0,
            buckets: VecDeque::with_capacity(11),
            opened_at: None,
            probe_in_flight: false,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a call may go through now. May move Open to HalfOpen (returned as a transition).
    pub fn admit(&mut self, now: Instant) -> (bool, Option<BreakerState>) {
        match self.state {
            BreakerState::Closed => (true, None),
            BreakerState::Open => {
                let cooled = self
                    .opened_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= self.spec.cooldown);
                if cooled {
                    self.state = BreakerState::HalfOpen;
                    self.probe_in_flight = true;
                    (true, Some(BreakerState::HalfOpen))
                } else {
                    (false, None)
                }
            }
            BreakerState::HalfOpen if self.probe_in_flight => (false, None),
            BreakerState::HalfOpen => {
                self.probe_in_flight = true;
                (true, None)
            }
        }
    }

    /// Records an outcome; returns the new state when it changed.
    pub fn record(&mut self, now: Instant, failed: bool) -> Option<BreakerState> {
        let width = self.spec.window / 10;
        match self.buckets.back_mut() {
            Some((start, total, failures)) if now.saturating_duration_since(*start) < width => {
                *total += 1;
                *failures += u32::from(failed);
            }
            _ => self.buckets.push_back((now, 1, u32::from(failed))),
        }
        while self
            .buckets
            .front()
            .is_some_and(|(at, _, _)| now.saturating_duration_since(*at) > self.spec.window)
        {
            self.buckets.pop_front();
        }
        self.consecutive = if failed { self.consecutive + 1 } else { 0 };
        match self.state {
            BreakerState::HalfOpen => {
                self.probe_in_flight = false;
                if failed {
                    self.open(now)
                } else {
                    self.state = BreakerState::Closed;
                    self.buckets.clear();
                    Some(BreakerState::Closed)
                }
            }
            BreakerState::Closed if failed && self.tripped() => self.open(now),
            _ => None,
        }
    }

    fn tripped(&self) -> bool {
        if self.consecutive >= self.spec.failures {
            return true;
        }
        let (total, failures) = self
            .buckets
            .iter()
            .fold((0u64, 0u64), |(t, f), (_, bt, bf)| {
                (t + u64::from(*bt), f + u64::from(*bf))
            });
        total >= u64::from(self.spec.min_requests)
            && failures as f64 / total as f64 >= self.spec.ratio
    }

    fn open(&mut self, now: Instant) -> Option<BreakerState> {
        self.state = BreakerState::Open;
        self.opened_at = Some(now);
        self.probe_in_flight = false;
        Some(BreakerState::Open)
    }

    /// The target has an instance ready again: an open breaker lets the next call through as
    /// its probe instead of waiting out the cooldown. Returns the new state when it changed.
    pub fn target_ready(&mut self) -> Option<BreakerState> {
        (self.state == BreakerState::Open).then(|| {
            self.state = BreakerState::HalfOpen;
            self.probe_in_flight = false;
            BreakerState::HalfOpen
        })
    }

    /// Closes the breaker by hand and forgets past outcomes. Returns `Closed` when it was not.
    pub fn reset(&mut self) -> Option<BreakerState> {
        let was = self.state;
        self.state = BreakerState::Closed;
        self.consecutive = 0;
        self.buckets.clear();
        self.opened_at = None;
        self.probe_in_flight = false;
        (was != BreakerState::Closed).then_some(BreakerState::Closed)
    }

    /// What is left of an open breaker's cooldown; `None` unless it is open.
    pub fn cooldown_left(&self, now: Instant) -> Option<Duration> {
        (self.state == BreakerState::Open).then(|| self.retry_after(now))
    }

    /// How long until an open breaker lets a probe through.
    pub fn retry_after(&self, now: Instant) -> Duration {
        self.opened_at.map_or(Duration::ZERO, |at| {
            self.spec
                .cooldown
                .saturating_sub(now.saturating_duration_since(at))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BreakerSpec {
        BreakerSpec {
            failures: 3,
            ratio: 0.5,
            min_requests: 10,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(1),
        }
    }

    #[test]
    fn opens_after_consecutive_failures_and_recovers_through_a_probe() {
        let mut breaker = Breaker::new(spec());
        let t = Instant::now();
        assert_eq!(breaker.record(t, true), None);
        assert_eq!(breaker.record(t, false), None);
        assert_eq!(breaker.record(t, true), None);
        assert_eq!(breaker.record(t, true), None);
        assert_eq!(breaker.record(t, true), Some(BreakerState::Open));
        assert_eq!(breaker.admit(t), (false, None));
        let later = t + Duration::from_millis(1100);
        assert_eq!(breaker.admit(later), (true, Some(BreakerState::HalfOpen)));
        assert_eq!(breaker.admit(later), (false, None), "one probe at a time");
        assert_eq!(breaker.record(later, true), Some(BreakerState::Open));
        let much_later = later + Duration::from_secs(2);
        assert!(breaker.admit(much_later).0);
        assert_eq!(
            breaker.record(much_later, false),
            Some(BreakerState::Closed)
        );
        assert_eq!(breaker.admit(much_later), (true, None));
    }

    #[test]
    fn a_ready_target_is_probed_at_once_and_a_reset_closes() {
        let mut breaker = Breaker::new(spec());
        let t = Instant::now();
        for _ in 0..3 {
            breaker.record(t, true);
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.cooldown_left(t), Some(Duration::from_secs(1)));
        assert_eq!(breaker.target_ready(), Some(BreakerState::HalfOpen));
        assert_eq!(breaker.cooldown_left(t), None);
        assert_eq!(breaker.admit(t), (true, None), "the probe goes at once");
        assert_eq!(breaker.record(t, false), Some(BreakerState::Closed));
        assert_eq!(
            breaker.target_ready(),
            None,
            "a closed breaker stays closed"
        );

        for _ in 0..3 {
            breaker.record(t, true);
        }
        assert_eq!(breaker.reset(), Some(BreakerState::Closed));
        assert_eq!(breaker.reset(), None);
        assert_eq!(breaker.admit(t), (true, None));
        assert_eq!(breaker.record(t, true), None, "past failures are forgotten");
    }

    #[test]
    fn opens_on_the_failure_ratio() {
        let mut breaker = Breaker::new(spec());
        let t = Instant::now();
        let mut opened = None;
        for i in 0..20 {
            // Alternating: never three in a row, but half of them fail.
            opened = opened.or(breaker.record(t, i % 2 == 0));
        }
        assert_eq!(opened, Some(BreakerState::Open));
    }

    #[test]
    fn caller_mistakes_do_not_count() {
        assert!(!is_failure(Some(ErrorCode::BadRequest)));
        assert!(!is_failure(None));
        assert!(is_failure(Some(ErrorCode::Timeout)));
    }
}
