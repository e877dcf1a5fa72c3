//! What "degraded" means for a protocol service's instance, and when it ends.
//!
//! An instance is degraded when [`BAD_FRAME_ALERT`] bad frames (garbage on its stdout) arrive
//! within [`BAD_FRAME_WINDOW`] of each other; a few stray lines now and then do not flag it. It
//! is healthy again once [`QUIET`] passes without a bad frame. While degraded, the router sends
//! it requests and events only when no healthy replica of its service is ready: its good
//! frames are still routed, but a replica that writes garbage may be losing answers in it.
//!
//! [`BadFrameWatch`] is the bookkeeping, on the console's clock; the stdout reader of the
//! instance owns one and reports the two transitions to the supervisor.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// Bad frames within [`BAD_FRAME_WINDOW`] that flag an instance degraded.
pub const BAD_FRAME_ALERT: usize = 10;
/// The span the bad frames that flag an instance must fall in.
pub const BAD_FRAME_WINDOW: Duration = Duration::from_secs(10);
/// How long a degraded instance must go without a bad frame to be healthy again.
pub const QUIET: Duration = Duration::from_secs(10);

/// The recent bad frames of one instance.
#[derive(Debug, Default)]
pub struct BadFrameWatch {
    /// When the latest bad frames arrived, at most [`BAD_FRAME_ALERT`] of them, oldest first.
    recent: VecDeque<Instant>,
    degraded: bool,
}

impl BadFrameWatch {
    /// Records a bad frame seen at `now`. True when it makes a healthy instance degraded.
    pub fn bad_frame(&mut self, now: Instant) -> bool {
        if self.recent.len() == BAD_FRAME_ALERT {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        let burst = self.recent.len() == BAD_FRAME_ALERT
            && self
                .recent
                .front()
                .is_some_and(|first| now.saturating_duration_since(*first) <= BAD_FRAME_WINDOW);
        if burst && !self.degraded {
            self.degraded = true;
            return true;
        }
        false
    }

    /// When a degraded instance becomes healthy unless another bad frame comes first; `None`
    /// while it is healthy.
    pub fn clears_at(&self) -> Option<Instant> {
        if !self.degraded {
            return None;
        }
        self.recent.back().map(|last| *last + QUIET)
    }

    /// Called at or after [`Self::clears_at`]: true when the instance is healthy again (no bad
    /// frame came in the meantime).
    pub fn quiet(&mut self, now: Instant) -> bool {
        match self.clears_at() {
            Some(at) if now >= at => {
                self.degraded = false;
                self.recent.clear();
                true
            }
            _ => false,
        }
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn ten_bad_frames_within_the_window_flag_it_once() {
        let start = Instant::now();
        let mut watch = BadFrameWatch::default();
        for i in 0..9 {
            assert!(!watch.bad_frame(at(start, i * 100)));
        }
        assert!(watch.bad_frame(at(start, 900)), "the tenth flags it");
        assert!(!watch.bad_frame(at(start, 1000)), "flagged once, not again");
        assert!(watch.is_degraded());
    }

    #[test]
    fn bad_frames_spread_wider_than_the_window_do_not() {
        let start = Instant::now();
        let mut watch = BadFrameWatch::default();
        // One every 1.2 s: ten of them span 10.8 s.
        for i in 0..30 {
            assert!(!watch.bad_frame(at(start, i * 1200)), "frame {i}");
        }
        assert!(!watch.is_degraded());
    }

    #[test]
    fn it_clears_after_a_quiet_window_and_a_bad_frame_pushes_that_back() {
        let start = Instant::now();
        let mut watch = BadFrameWatch::default();
        assert_eq!(watch.clears_at(), None);
        for i in 0..10 {
            watch.bad_frame(at(start, i));
        }
        assert_eq!(watch.clears_at(), Some(at(start, 9) + QUIET));
        watch.bad_frame(at(start, 5000));
        let due = at(start, 5000) + QUIET;
        assert_eq!(watch.clears_at(), Some(due));
        assert!(!watch.quiet(due - Duration::from_millis(1)));
        assert!(watch.quiet(due));
        assert!(!watch.is_degraded());
        assert_eq!(watch.clears_at(), None);
        // Healthy again, it takes a fresh burst to flag it.
        assert!(!watch.bad_frame(due));
    }
}
