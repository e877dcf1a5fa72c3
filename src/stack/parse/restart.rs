//! A service's `backoff = { … }` and `restart_limit = { … }`: how long it waits before each
//! restart, and how many restarts in a window before it is failed.

use std::{ops::Range, time::Duration};

use toml::de::DeTable;

use super::{BACKOFF_KEYS, LIMIT_KEYS, Walker};
use crate::stack::spec::{AfterLimit, Backoff, RestartLimit};

impl Walker<'_> {
    pub(super) fn backoff(&mut self, table: &DeTable<'_>, span: Range<usize>) -> Backoff {
        let mut backoff = Backoff::default();
        // The limits are checked after the loop, when both values are known; each is reported
        // at the value that was written, or at the table when the default is the one in conflict.
        let mut initial_span = span.clone();
        let mut max_span = span;
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "initial" => {
                    if let Some(d) = self.duration(value) {
                        backoff.initial = d;
                        initial_span = value.span();
                    }
                }
                "max" => {
                    if let Some(d) = self.duration(value) {
                        backoff.max = d;
                        max_span = value.span();
                    }
                }
                "reset_after" => {
                    if let Some(d) = self.duration(value) {
                        backoff.reset_after = d;
                    }
                }
                "multiplier" => {
                    if let Some(m) = self.number(value) {
                        if m >= 1.0 && m.is_finite() {
                            backoff.multiplier = m;
                        } else {
                            self.error(
                                value.span(),
                                format!("multiplier must be at least 1, not {m}"),
                            );
                        }
                    }
                }
                "jitter" => {
                    if let Some(j) = self.number(value) {
                        if (0.0..=1.0).contains(&j) {
                            backoff.jitter = j;
                        } else {
                            self.error(
                                value.span(),
                                format!("jitter must be between 0 and 1, not {j}"),
                            );
                        }
                    }
                }
                _ => self.unknown(key, BACKOFF_KEYS, "in backoff"),
            }
        }
        if backoff.initial.is_zero() {
            self.error(initial_span, "backoff.initial must be more than zero");
        } else if backoff.max < backoff.initial {
            self.error(
                max_span,
                format!(
                    "backoff.max ({:?}) must be at least backoff.initial ({:?})",
                    backoff.max, backoff.initial
                ),
            );
        }
        backoff
    }

    pub(super) fn restart_limit(&mut self, table: &DeTable<'_>) -> RestartLimit {
        let mut limit = RestartLimit::default();
        let mut stay_failed = false;
        let (mut after, mut max) = match limit.then {
            AfterLimit::Retry { after, max } => (after, max),
            AfterLimit::StayFailed => (Duration::ZERO, Duration::ZERO),
        };
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "count" => {
                    if let Some(n) = self.integer(value) {
                        match u32::try_from(n) {
                            Ok(n) if n > 0 => limit.count = n,
                            _ => self.error(
                                value.span(),
                                format!("count must be a positive number, not {n}"),
                            ),
                        }
                    }
                }
                "window" => {
                    if let Some(d) = self.duration(value) {
                        limit.window = d;
                    }
                }
                "then" => {
                    stay_failed =
                        self.choice(value, &["retry", "stay-failed"]) == Some("stay-failed")
                }
                "retry_after" => match self.duration(value) {
                    Some(d) if d.is_zero() => {
                        self.error(value.span(), "retry_after must be more than zero")
                    }
                    Some(d) => after = d,
                    None => {}
                },
                "retry_max" => {
                    if let Some(d) = self.duration(value) {
                        max = d;
                    }
                }
                _ => self.unknown(key, LIMIT_KEYS, "in restart_limit"),
            }
        }
        limit.then = if stay_failed {
            AfterLimit::StayFailed
        } else {
            // A max below the first wait would make the first wait the longest.
            AfterLimit::Retry {
                after,
                max: max.max(after),
            }
        };
        limit
    }
}
