//! A service's `backlog = { … }` and `autoscale = { … }` tables (see `stack::backlog`), checked
//! here so that `switchboard check` rejects a policy the console could not follow.

use std::ops::Range;

use toml::de::DeTable;

use super::{AUTOSCALE_KEYS, BACKLOG_KEYS, Value, Walker};
use crate::stack::backlog::{AutoscaleSpec, BacklogSpec, DEFAULT_COOLDOWN, ScaleTarget};

/// The longest growth window: the console keeps five minutes of backlog history.
pub const GROW_WINDOW_MAX: std::time::Duration = std::time::Duration::from_secs(300);

/// The most replicas autoscaling may keep (the supervisor's own bound on `scale`).
pub const AUTOSCALE_MAX: u32 = 1000;

impl Walker<'_> {
    pub(super) fn backlog(&mut self, table: &DeTable<'_>) -> BacklogSpec {
        let mut spec = BacklogSpec::default();
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "grow_window" => {
                    spec.grow_window = self.positive_duration(value, "grow_window");
                    if spec.grow_window.is_some_and(|w| w > GROW_WINDOW_MAX) {
                        self.error(
                            value.span(),
                            "grow_window must be at most 5m (the backlog history kept)",
                        );
                        spec.grow_window = None;
                    }
                }
                "max_age" => spec.max_age = self.positive_duration(value, "max_age"),
                "max_backlog" => spec.max_backlog = self.positive_count(value, "max_backlog"),
                "max_backlog_methods" => {
                    spec.max_backlog_methods =
                        self.strings(value).into_iter().map(|(s, _)| s).collect();
                }
                _ => self.unknown(key, BACKLOG_KEYS, "in backlog"),
            }
        }
        spec
    }

    /// `None` when the table is wrong (each error is reported where it is).
    pub(super) fn autoscale(
        &mut self,
        table: &DeTable<'_>,
        span: Range<usize>,
    ) -> Option<AutoscaleSpec> {
        let (mut min, mut max, mut cooldown) = (None, None, DEFAULT_COOLDOWN);
        let mut targets = Vec::new();
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "min" => min = self.replica_count(value, "min"),
                "max" => max = self.replica_count(value, "max"),
                "target_backlog" => {
                    let n = self.positive_count(value, "target_backlog");
                    targets.push(n.map(ScaleTarget::Backlog));
                }
                "target_age" => {
                    let d = self.positive_duration(value, "target_age");
                    targets.push(d.map(ScaleTarget::OldestAge));
                }
                "target_in_flight" => {
                    let n = self.positive_count(value, "target_in_flight");
                    targets.push(n.map(ScaleTarget::InFlight));
                }
                "cooldown" => cooldown = self.duration(value).unwrap_or(cooldown),
                _ => self.unknown(key, AUTOSCALE_KEYS, "in autoscale"),
            }
        }
        let target = match targets.as_slice() {
            [one] => (*one)?,
            [] => {
                self.error(
                    span,
                    "autoscale needs a target: target_backlog, target_age or target_in_flight",
                );
                return None;
            }
            _ => {
                self.error(span, "autoscale takes one target, not several");
                return None;
            }
        };
        let (Some(min), Some(max)) = (min, max) else {
            self.error(span, "autoscale needs both `min` and `max` replicas");
            return None;
        };
        if min > max {
            self.error(span, format!("autoscale min ({min}) is above max ({max})"));
            return None;
        }
        Some(AutoscaleSpec {
            min,
            max,
            target,
            cooldown,
        })
    }

    fn replica_count(&mut self, value: &Value<'_>, key: &str) -> Option<u32> {
        let n = self.integer(value)?;
        match u32::try_from(n) {
            Ok(n) if (1..=AUTOSCALE_MAX).contains(&n) => Some(n),
            _ => {
                self.error(
                    value.span(),
                    format!("{key} must be 1 to {AUTOSCALE_MAX} replicas, not {n}"),
                );
                None
            }
        }
    }

    fn positive_count(&mut self, value: &Value<'_>, key: &str) -> Option<u64> {
        let n = self.integer(value)?;
        match u64::try_from(n) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                self.error(value.span(), format!("{key} must be above zero, not {n}"));
                None
            }
        }
    }

    fn positive_duration(&mut self, value: &Value<'_>, key: &str) -> Option<std::time::Duration> {
        let d = self.duration(value)?;
        if d.is_zero() {
            self.error(value.span(), format!("{key} must be more than zero"));
            return None;
        }
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use crate::stack::{AutoscaleSpec, ScaleTarget, parse};

    fn service(extra: &str) -> Result<crate::stack::ServiceSpec, String> {
        let src = format!("name = \"t\"\n[services.order]\ncommand = \"true\"\n{extra}\n");
        parse(&src, Path::new("stack.toml"))
            .map(|stack| stack.services[0].clone())
            .map_err(|d| {
                d.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
    }

    #[test]
    fn backlog_and_autoscale_tables_are_read() {
        let spec = service(
            "replicas = 2\nbacklog = { grow_window = \"30s\", max_age = \"5m\", max_backlog = 900, \
             max_backlog_methods = [\"create\"] }\n\
             autoscale = { min = 1, max = 4, target_backlog = 100, cooldown = \"10s\" }",
        )
        .unwrap();
        assert_eq!(spec.backlog.grow_window, Some(Duration::from_secs(30)));
        assert_eq!(spec.backlog.max_age, Some(Duration::from_secs(300)));
        assert_eq!(spec.backlog.max_backlog, Some(900));
        assert_eq!(spec.backlog.admission_bound("create"), Some(900));
        assert_eq!(spec.backlog.admission_bound("get"), None);
        assert_eq!(
            spec.autoscale,
            Some(AutoscaleSpec {
                min: 1,
                max: 4,
                target: ScaleTarget::Backlog(100),
                cooldown: Duration::from_secs(10),
            })
        );
    }

    #[test]
    fn a_policy_the_console_could_not_follow_is_refused_where_it_is() {
        for (extra, wanted) in [
            (
                "autoscale = { min = 3, max = 2, target_backlog = 1 }",
                "above max",
            ),
            ("autoscale = { min = 1, max = 2 }", "needs a target"),
            (
                "autoscale = { min = 1, max = 2, target_backlog = 1, target_in_flight = 2 }",
                "one target",
            ),
            (
                "replicas = 5\nautoscale = { min = 1, max = 2, target_backlog = 1 }",
                "outside",
            ),
            ("backlog = { grow_window = \"10m\" }", "at most 5m"),
            ("backlog = { max_backlog = 0 }", "above zero"),
            ("backlog = { grow = \"1s\" }", "grow"),
        ] {
            let err = service(extra).unwrap_err();
            assert!(err.contains(wanted), "{extra}: {err}");
            assert!(err.starts_with("stack.toml:"), "{err}");
        }
    }
}
