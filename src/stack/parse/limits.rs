//! A service's `limits = { memory, open_files, cpu_time, core }`: checked here, so that
//! `switchboard check` rejects a value that could only fail at spawn, or starve the process
//! before it can start.

use toml::de::{DeTable, DeValue};

use super::{RESOURCE_LIMITS_KEYS, Value, Walker};
use crate::stack::{spec::ResourceLimits, units};

/// The smallest `memory` accepted: below it not even a small program maps its libraries.
pub const MEMORY_FLOOR: u64 = 1 << 20;
/// The fewest `open_files` accepted: stdin, stdout, stderr and the metrics segment.
pub const OPEN_FILES_FLOOR: u64 = 4;

impl Walker<'_> {
    pub(super) fn resource_limits(&mut self, table: &DeTable<'_>) -> ResourceLimits {
        let mut limits = ResourceLimits::default();
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "memory" => limits.memory = self.memory_limit(value),
                "open_files" => {
                    if let Some(n) = self.integer(value) {
                        match u64::try_from(n) {
                            Ok(n) if n >= OPEN_FILES_FLOOR => limits.open_files = Some(n),
                            _ => self.error(
                                value.span(),
                                format!(
                                    "open_files must be at least {OPEN_FILES_FLOOR} (stdin, stdout, stderr and the segment), not {n}"
                                ),
                            ),
                        }
                    }
                }
                "cpu_time" => {
                    if let Some(d) = self.duration(value) {
                        if d.is_zero() {
                            self.error(value.span(), "cpu_time must be more than zero");
                        } else {
                            // RLIMIT_CPU counts whole seconds: a part of one counts as one.
                            let whole = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                            limits.cpu_time = Some(whole);
                        }
                    }
                }
                "core" => limits.core = self.boolean(value),
                _ => self.unknown(key, RESOURCE_LIMITS_KEYS, "in limits"),
            }
        }
        limits
    }

    fn memory_limit(&mut self, value: &Value<'_>) -> Option<u64> {
        let bytes = match value.get_ref() {
            DeValue::Integer(_) => {
                let n = self.integer(value)?;
                u64::try_from(n).ok().or_else(|| {
                    self.error(
                        value.span(),
                        format!("memory must be a size such as \"512MiB\", not {n}"),
                    );
                    None
                })?
            }
            DeValue::String(text) => match units::size(text) {
                Ok(n) => n as u64,
                Err(message) => {
                    self.error(value.span(), message);
                    return None;
                }
            },
            _ => {
                self.mismatch(value, "a size such as \"512MiB\"");
                return None;
            }
        };
        if bytes < MEMORY_FLOOR {
            self.error(
                value.span(),
                format!("memory must be at least 1MiB, not {bytes} bytes"),
            );
            return None;
        }
        Some(bytes)
    }
}
