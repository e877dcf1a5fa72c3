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
    fn the_delay_doubles_up_to_its_cap_and_jitter_takes_away_at_most_its_share() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(700),
            multiplier: 2.0,
            jitter: 0.25,
            reset_after: Duration::from_secs(10),
        };
        let limit = RestartLimit {
            count: 100,
            window: Duration::from_secs(60),
            then: AfterLimit::StayFailed,
        };
        let expected = [100, 200, 400, 700, 700, 700, 700].map(Duration::from_millis);
        // Without jitter (sample 0) the sequence itself: doubling, then held at the cap, also
        // far past it (a multiplier overflowing to infinity).
        let mut tracker = RestartTracker::default();
        let now = Instant::now();
        for (attempt, want) in expected.into_iter().enumerate() {
            let got = tracker.on_failure(now, Duration::ZERO, &backoff, &limit, 0.0);
            assert_eq!(
                got,
                Decision::RestartAfter {
                    delay: want,
                    attempt: attempt as u32
                }
            );
        }
        assert_eq!(backoff.delay(5000), backoff.max);
        // With jitter: a sample takes away its share of `jitter`, so the delays spread over
        // 75-100 % of the sequence, capped delays included, and never beyond the cap.
        for sample in [0.0, 0.5, 0.999] {
            let mut tracker = RestartTracker::default();
            for (attempt, want) in expected.into_iter().enumerate() {
                let Decision::RestartAfter { delay, .. } =
                    tracker.on_failure(now, Duration::ZERO, &backoff, &limit, sample)
                else {
                    panic!("gave up at attempt {attempt}");
                };
                let keep = 1.0 - 0.25 * sample;
                let diff = delay.as_secs_f64() - want.as_secs_f64() * keep;
                assert!(
                    diff.abs() < 1e-6,
                    "attempt {attempt}, sample {sample}: {delay:?}, not {keep} of {want:?}"
                );
                assert!(delay <= backoff.max && delay >= want.mul_f64(0.75));
            }
        }
        // Out-of-range samples and jitter are clamped: never more than the delay, never less
        // than none of it.
        assert_eq!(backoff.jittered(0, -3.0), Duration::from_millis(100));
        assert_eq!(backoff.jittered(9, 7.0), Duration::from_millis(525));
        let all = Backoff {
            jitter: 5.0,
            ..backoff
        };
        assert_eq!(all.jittered(1, 0.5), Duration::from_millis(100));
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
