//! Log budgets: a token bucket of lines and bytes a second ([`Bucket`]), and a service's
//! bucket shared by its replicas and both of their pipes ([`Budget`]), with the count of the
//! lines it refused and the "N lines dropped" notes that say so in the log.
//!
//! A line is kept when the bucket holds a line and its bytes; otherwise it is dropped and
//! counted. Nothing waits: a service is never slowed by its budget, only its log thinned.

use std::{
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::stack::LogBudget;

/// Dropped lines are reported at most this often per service: a flood adds one line a second
/// to the log, not one per gap.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Tokens for lines and bytes, refilled continuously at the budget's rate, holding at most one
/// second's worth: a burst after a quiet spell is kept whole up to that.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: LogBudget,
    lines: f64,
    bytes: f64,
    refilled: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: LogBudget, now: Instant) -> Bucket {
        Bucket {
            rate,
            lines: f64::from(rate.lines),
            bytes: rate.bytes as f64,
            refilled: now,
        }
    }

    pub fn rate(&self) -> LogBudget {
        self.rate
    }

    /// Adds what the time since the last refill earned.
    pub fn refill(&mut self, now: Instant) {
        let seconds = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now.max(self.refilled);
        self.lines =
            (self.lines + seconds * f64::from(self.rate.lines)).min(f64::from(self.rate.lines));
        self.bytes = (self.bytes + seconds * self.rate.bytes as f64).min(self.rate.bytes as f64);
    }

    /// Takes a line of `len` bytes when the bucket holds it.
    pub fn admit(&mut self, len: usize) -> bool {
        if self.lines < 1.0 || self.bytes < len as f64 {
            return false;
        }
        self.lines -= 1.0;
        self.bytes -= len as f64;
        true
    }
}

/// One service's budget.
#[derive(Debug)]
pub struct Budget {
    state: Mutex<State>,
    /// Every line refused since the console started, for `/metrics`.
    dropped: AtomicU64,
}

#[derive(Debug)]
struct State {
    bucket: Bucket,
    /// Refused and not yet reported in the log.
    unreported: u64,
    reported: Option<Instant>,
}

impl Budget {
    pub fn new(rate: LogBudget) -> Budget {
        Budget::carrying(rate, 0)
    }

    /// A budget at a new rate that goes on counting from `dropped`.
    pub fn carrying(rate: LogBudget, dropped: u64) -> Budget {
        Budget {
            state: Mutex::new(State {
                bucket: Bucket::new(rate, Instant::now()),
                unreported: 0,
                reported: None,
            }),
            dropped: AtomicU64::new(dropped),
        }
    }

    pub fn rate(&self) -> LogBudget {
        self.lock().bucket.rate()
    }

    /// Lines refused since the console started.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The budget refilled to `now`, held for the lines of one read: one lock per read, not
    /// per line.
    pub fn gate(&self, now: Instant) -> Gate<'_> {
        let mut state = self.lock();
        state.bucket.refill(now);
        Gate {
            state,
            dropped: &self.dropped,
        }
    }

    /// When the lines refused so far should be reported, if any are waiting.
    pub fn report_due(&self) -> Option<Instant> {
        let state = self.lock();
        (state.unreported > 0).then(|| match state.reported {
            Some(last) => last + REPORT_EVERY,
            None => Instant::now(),
        })
    }

    /// The refused lines to report now (and forgets them), when some are waiting and the last
    /// report is [`REPORT_EVERY`] old; any waiting at all with `now_or_never` (a pipe's end).
    pub fn report(&self, now: Instant, now_or_never: bool) -> Option<u64> {
        let mut state = self.lock();
        let due = state
            .reported
            .is_none_or(|last| now.saturating_duration_since(last) >= REPORT_EVERY);
        if state.unreported == 0 || !(due || now_or_never) {
            return None;
        }
        state.reported = Some(now);
        Some(std::mem::take(&mut state.unreported))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A service's budget, locked for the lines of one read.
pub struct Gate<'a> {
    state: MutexGuard<'a, State>,
    dropped: &'a AtomicU64,
}

impl Gate<'_> {
    /// Takes a line of `len` bytes when the budget holds it.
    pub fn admit(&mut self, len: usize) -> bool {
        self.state.bucket.admit(len)
    }

    /// Counts `lines` refused.
    pub fn refused(&mut self, lines: u64) {
        if lines > 0 {
            self.state.unreported += lines;
            self.dropped.fetch_add(lines, Ordering::Relaxed);
        }
    }
}

/// The note written into the log in place of `lines` dropped lines.
pub fn dropped_note(lines: u64, rate: LogBudget) -> String {
    format!(
        "{lines} lines dropped: over the log budget of {} lines/s, {}/s",
        rate.lines,
        size(rate.bytes)
    )
}

/// `1MiB`, `512KiB`, `1500B`: as the stack file writes it.
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: LogBudget = LogBudget {
        lines: 10,
        bytes: 100,
    };

    #[test]
    fn a_bucket_keeps_a_seconds_worth_then_refills_at_its_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(RATE, start);
        let kept = (0..50).filter(|_| bucket.admit(1)).count();
        assert_eq!(kept, 10, "a burst is kept up to one second's lines");
        bucket.refill(start + Duration::from_millis(500));
        assert_eq!((0..50).filter(|_| bucket.admit(1)).count(), 5);
        // A long quiet spell refills it no further than full.
        bucket.refill(start + Duration::from_secs(60));
        assert_eq!((0..50).filter(|_| bucket.admit(1)).count(), 10);
        // Bytes bound it too: 100 bytes a second is two lines of 40, not three.
        bucket.refill(start + Duration::from_secs(120));
        assert_eq!((0..5).filter(|_| bucket.admit(40)).count(), 2);
        // A clock that goes back earns nothing.
        bucket.refill(start);
        assert!(!bucket.admit(40));
    }

    #[test]
    fn refused_lines_are_counted_and_reported_at_most_once_a_second() {
        let budget = Budget::new(RATE);
        let start = Instant::now();
        assert_eq!(budget.report_due(), None);
        {
            let mut gate = budget.gate(start);
            let kept = (0..25).filter(|_| gate.admit(1)).count() as u64;
            gate.refused(25 - kept);
        }
        assert_eq!(budget.dropped(), 15);
        assert!(budget.report_due().is_some());
        assert_eq!(budget.report(start, false), Some(15));
        assert_eq!(budget.report(start, false), None, "nothing new to report");
        budget.gate(start).refused(3);
        assert_eq!(
            budget.report(start + Duration::from_millis(10), false),
            None
        );
        assert_eq!(budget.report_due(), Some(start + REPORT_EVERY));
        assert_eq!(budget.report(start + REPORT_EVERY, false), Some(3));
        budget.gate(start).refused(2);
        assert_eq!(budget.report(start + REPORT_EVERY, true), Some(2));
        assert_eq!(budget.dropped(), 20);
        assert_eq!(
            dropped_note(20, LogBudget::SERVICE),
            "20 lines dropped: over the log budget of 2000 lines/s, 1MiB/s"
        );
    }
}
