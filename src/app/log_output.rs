//! The service log lines a headless console prints, within the stack's output budget
//! (`[console] output_budget`): every service together, a token bucket of lines and bytes a
//! second. Lines beyond it are not printed (they are still in the rings and the log files), and
//! a "N log lines not printed" line says so, at most once a second.
//!
//! Each service is held to its own log budget before this; this bounds the sum, so headless
//! stdout (a terminal, journald, a CI log) is never flooded by many services at once.

use std::time::Instant;

use crate::{
    logs::{LogLine, Stream, budget::Budget},
    stack::LogBudget,
};

pub struct LogOutput {
    budget: Budget,
}

impl LogOutput {
    pub fn new(rate: LogBudget) -> LogOutput {
        LogOutput {
            budget: Budget::new(rate),
        }
    }

    /// The line as headless prints it, if it is printed: lifecycle lines are printed as
    /// events already, notes of dropped lines always are, and service lines within the
    /// budget.
    pub fn admit(&self, line: &LogLine, now: Instant) -> Option<String> {
        match line.stream {
            Stream::Console => return None,
            Stream::Dropped => {}
            Stream::Stdout | Stream::Stderr => {
                let mut gate = self.budget.gate(now);
                if !gate.admit(line.text.len()) {
                    gate.refused(1);
                    return None;
                }
            }
        }
        Some(format!(
            "{} {}#{} | {}",
            super::headless::clock(line.at),
            line.service,
            line.replica,
            line.text
        ))
    }

    /// When lines not printed should be reported.
    pub fn report_due(&self) -> Option<Instant> {
        self.budget.report_due()
    }

    /// The line reporting the lines not printed, when it is due (or, `at_end`, when any wait).
    pub fn report(&self, now: Instant, at_end: bool) -> Option<String> {
        let lines = self.budget.report(now, at_end)?;
        let rate = self.budget.rate();
        Some(format!(
            "switchboard: {lines} log lines not printed: over the output budget of {} lines/s, {}/s",
            rate.lines,
            crate::logs::budget::size(rate.bytes)
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::SystemTime};

    use super::*;

    fn line(stream: Stream, text: &str) -> LogLine {
        LogLine {
            seq: 1,
            at: SystemTime::now(),
            service: Arc::from("svc"),
            replica: 0,
            stream,
            text: text.into(),
        }
    }

    #[test]
    fn prints_within_the_budget_and_reports_the_rest() {
        let output = LogOutput::new(LogBudget {
            lines: 3,
            bytes: 1 << 20,
        });
        let now = Instant::now();
        let printed = (0..10)
            .filter(|_| output.admit(&line(Stream::Stderr, "flood"), now).is_some())
            .count();
        assert_eq!(printed, 3);
        assert!(
            output
                .admit(&line(Stream::Console, "started"), now)
                .is_none()
        );
        let note = output.admit(&line(Stream::Dropped, "9 lines dropped"), now);
        assert!(note.is_some_and(|n| n.ends_with("svc#0 | 9 lines dropped")));
        assert!(output.report_due().is_some());
        let report = output.report(now, false).unwrap_or_default();
        assert!(
            report.starts_with("switchboard: 7 log lines not printed"),
            "{report}"
        );
        assert_eq!(output.report(now, true), None);
    }
}
