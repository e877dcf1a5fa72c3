//! Restart decisions: exponential backoff with jitter, reset after a healthy uptime, and the
//! restart intensity limit (at most N restarts in T), after which a service is failed, as OTP
//! supervisors and systemd's StartLimit do.
//!
//! Failed is not forever unless the stack says so: by default a failed service is tried again
//! on a long backoff (30 s, doubling to 5 min), since what broke it may heal while nobody
//! watches. A crash soon after such a try fails it again at once (the restarts that led to the
//! limit are still in its window), with the next wait doubled.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use crate::stack::{Backoff, RestartLimit};

/// What to do after an instance died unexpectedly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Restart after this delay; `attempt` counts consecutive quick failures from 0.
    RestartAfter { delay: Duration, attempt: u32 },
    /// The intensity limit was hit: failed, with another try after `retry_in` (none when the
    /// stack says to stay failed).
    GiveUp {
        restarts: u32,
        window: Duration,
        retry_in: Option<Duration>,
    },
}

/// The restart history of one replica.
#[derive(Debug, Default, Clone)]
pub struct RestartTracker {
    /// Consecutive failures without a healthy run in between.
    attempt: u32,
    /// When recent restarts happened, for the intensity window.
    recent: VecDeque<Instant>,
    /// Times the limit was reached without a healthy run in between, for the long backoff.
    gave_up: u32,
}

impl RestartTracker {
    /// Decides what follows a failure at `now` of a process that had been up for `uptime`.
    /// `sample` is a uniform number in [0, 1) for the jitter.
    pub fn on_failure(
        &mut self,
        now: Instant,
        uptime: Duration,
        backoff: &Backoff,
        limit: &RestartLimit,
        sample: f64,
    ) -> Decision {
        if uptime >= backoff.reset_after {
            self.attempt = 0;
            self.gave_up = 0;
        }
        while self
            .recent
            .front()
            .is_some_and(|&at| now.saturating_duration_since(at) > limit.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= limit.count as usize {
            let retry_in = limit.then.retry_in(self.gave_up);
            self.gave_up = self.gave_up.saturating_add(1);
            return Decision::GiveUp {
                restarts: limit.count,
                window: limit.window,
                retry_in,
            };
        }
        self.recent.push_back(now);
        let attempt = self.attempt;
        self.attempt = self.attempt.saturating_add(1);
        Decision::RestartAfter {
            delay: backoff.jittered(attempt, sample),
            attempt,
        }
    }

    /// An operator's start or restart forgives the past.
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.recent.clear();
        self.gave_up = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::AfterLimit;

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.0,
            reset_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn backoff_grows_then_gives_up() {
        let limit = RestartLimit {
            count: 3,
            window: Duration::from_secs(60),
            then: AfterLimit::StayFailed,
        };
        let mut tracker = RestartTracker::default();
        let now = Instant::now();
        let delays: Vec<Decision> = (0..4)
            .map(|i| {
                tracker.on_failure(
                    now + Duration::from_millis(i * 10),
                    Duration::ZERO,
                    &backoff(),
                    &limit,
                    0.5,
                )
            })
            .collect();
        assert_eq!(
            delays[0],
            Decision::RestartAfter {
                delay: Duration::from_millis(100),
                attempt: 0
            }
        );
        assert_eq!(
            delays[1],
            Decision::RestartAfter {
                delay: Duration::from_millis(200),
                attempt: 1
            }
        );
        assert_eq!(
            delays[2],
            Decision::RestartAfter {
                delay: Duration::from_millis(400),
                attempt: 2
            }
        );
        assert!(matches!(
            delays[3],
            Decision::GiveUp {
                restarts: 3,
                retry_in: None,
                ..
            }
        ));
    }

    #[test]
    fn after_the_limit_the_retries_double_until_a_healthy_run() {
        let limit = RestartLimit {
            count: 1,
            window: Duration::from_secs(60),
            then: AfterLimit::Retry {
                after: Duration::from_secs(1),
                max: Duration::from_secs(3),
            },
        };
        let mut tracker = RestartTracker::default();
        let now = Instant::now();
        let mut fail = |uptime| tracker.on_failure(now, uptime, &backoff(), &limit, 0.0);
        assert!(matches!(
            fail(Duration::ZERO),
            Decision::RestartAfter { .. }
        ));
        let retries: Vec<Option<Duration>> = (0..3)
            .map(|_| match fail(Duration::ZERO) {
                Decision::GiveUp { retry_in, .. } => retry_in,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(retries, [1, 2, 3].map(|s| Some(Duration::from_secs(s))));
        // A healthy run forgives the long backoff too (the window still holds the restart).
        assert_eq!(
            fail(Duration::from_secs(60)),
            Decision::GiveUp {
                restarts: 1,
                window: Duration::from_secs(60),
                retry_in: Some(Duration::from_secs(1))
            }
        );
    }

    #[test]
    fn old_restarts_leave_the_window_and_healthy_runs_reset_backoff() {
        let limit = RestartLimit {
            count: 2,
            window: Duration::from_secs(1),
            then: AfterLimit::StayFailed,
        };
        let mut tracker = RestartTracker::default();
        let start = Instant::now();
        tracker.on_failure(start, Duration::ZERO, &backoff(), &limit, 0.0);
        tracker.on_failure(start, Duration::ZERO, &backoff(), &limit, 0.0);
        let later = start + Duration::from_secs(5);
        let decision = tracker.on_failure(later, Duration::from_secs(60), &backoff(), &limit, 0.0);
        assert_eq!(
            decision,
            Decision::RestartAfter {
                delay: Duration::from_millis(100),
                attempt: 0
            }
        );
    }
}
