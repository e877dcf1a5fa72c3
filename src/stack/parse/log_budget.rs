//! `log_budget = { lines = 2000, bytes = "1MiB" }` (a service) and `output_budget` (`[console]`):
//! how many log lines a second are kept, or printed.

use toml::de::DeValue;

use super::{LOG_BUDGET_KEYS, Value, Walker};
use crate::stack::{spec::LogBudget, units};

/// More lines a second than any console shows or any disk keeps up with for long.
const MOST_LINES: i64 = 1_000_000;
/// A gibibyte a second of one service's log is no budget at all.
const MOST_BYTES: u64 = 1 << 30;

impl Walker<'_> {
    /// The table at `value`; what it leaves out is taken from `default`.
    pub(super) fn log_budget(&mut self, value: &Value<'_>, default: LogBudget) -> LogBudget {
        let mut budget = default;
        let Some(table) = self.table(value) else {
            return budget;
        };
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "lines" => {
                    if let Some(n) = self.integer(value) {
                        match u32::try_from(n) {
                            Ok(n) if (1..=MOST_LINES).contains(&i64::from(n)) => budget.lines = n,
                            _ => self.error(
                                value.span(),
                                format!(
                                    "lines must be between 1 and {MOST_LINES} a second, not {n}"
                                ),
                            ),
                        }
                    }
                }
                "bytes" => {
                    if let Some(bytes) = self.byte_size(value) {
                        // A line longer than a second's bytes could never be kept.
                        if (LogBudget::MIN_BYTES..=MOST_BYTES).contains(&bytes) {
                            budget.bytes = bytes;
                        } else {
                            self.error(
                                value.span(),
                                format!(
                                    "bytes must be between 8KiB (the longest line kept) and 1GiB a second, not {bytes}"
                                ),
                            );
                        }
                    }
                }
                _ => self.unknown(key, LOG_BUDGET_KEYS, "in a log budget"),
            }
        }
        budget
    }

    /// An integer of bytes, or a size such as "1MiB".
    fn byte_size(&mut self, value: &Value<'_>) -> Option<u64> {
        match value.get_ref() {
            DeValue::Integer(_) => self.integer(value).and_then(|n| u64::try_from(n).ok()),
            _ => self
                .string(value)
                .and_then(|text| match units::size(&text) {
                    Ok(size) => u64::try_from(size).ok(),
                    Err(message) => {
                        self.error(value.span(), message);
                        None
                    }
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::stack::{self, LogBudget};

    fn parse(toml: &str) -> Result<stack::Stack, String> {
        stack::parse(toml, Path::new("stack.toml")).map_err(|diagnostics| {
            diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    #[test]
    fn budgets_have_defaults_and_take_what_is_written() {
        let stack = parse(
            r#"
            name = "t"
            [console]
            output_budget = { lines = 100 }
            [services.quiet]
            command = "true"
            [services.chatty]
            command = "true"
            log_budget = { lines = 10, bytes = "64KiB" }
            [services.counted]
            command = "true"
            log_budget = { bytes = 10000 }
            "#,
        )
        .unwrap_or_else(|why| panic!("{why}"));
        let budget = |name: &str| stack.service(name).map(|s| s.log_budget);
        assert_eq!(budget("quiet"), Some(LogBudget::SERVICE));
        assert_eq!(
            budget("chatty"),
            Some(LogBudget {
                lines: 10,
                bytes: 64 << 10
            })
        );
        assert_eq!(
            budget("counted"),
            Some(LogBudget {
                lines: LogBudget::SERVICE.lines,
                bytes: 10_000
            })
        );
        assert_eq!(
            stack.console.output_budget,
            LogBudget {
                lines: 100,
                bytes: LogBudget::HEADLESS_OUTPUT.bytes
            }
        );
    }

    #[test]
    fn a_budget_that_could_keep_nothing_is_refused() {
        let errors = parse(
            r#"
            name = "t"
            [services.a]
            command = "true"
            log_budget = { lines = 0, bytes = "1KiB", rate = 3 }
            "#,
        )
        .err()
        .unwrap_or_default();
        assert!(errors.contains("lines must be between 1"), "{errors}");
        assert!(errors.contains("the longest line kept"), "{errors}");
        assert!(errors.contains("`rate`"), "{errors}");
    }
}
