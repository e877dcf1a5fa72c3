//! When a service's backlog raises an alert: it grew over its whole `grow_window`, or its
//! oldest item waited longer than `max_age` (the stack's `backlog` table). Each alert is raised
//! once, names how fast the backlog grows and how long until the bound at that rate, and is
//! resolved by a `backlog` event once the condition is gone.

use std::time::Duration;

use crate::{event::EventKind, monitor::backlog::Backlog, stack::BacklogSpec};

/// Which of a service's backlog alerts are raised now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertState {
    growing: bool,
    too_old: bool,
}

/// Compares the backlog with its bounds and says what changed (sampled every `every`).
pub fn judge(
    state: &mut AlertState,
    spec: &BacklogSpec,
    backlog: &Backlog,
    every: Duration,
) -> Vec<EventKind> {
    let mut changes = Vec::new();
    if let Some(window) = spec.grow_window {
        match backlog.growth(window, every) {
            Some(rate) if !state.growing => {
                state.growing = true;
                changes.push(EventKind::Backlog {
                    alert: true,
                    message: growing(spec, backlog, window, rate),
                });
            }
            None if state.growing => {
                state.growing = false;
                changes.push(EventKind::Backlog {
                    alert: false,
                    message: format!("no longer growing ({} waiting)", backlog.waiting),
                });
            }
            _ => {}
        }
    }
    if let Some(max_age) = spec.max_age {
        let age = backlog.oldest_age.unwrap_or_default();
        if age > max_age && !state.too_old {
            state.too_old = true;
            changes.push(EventKind::Backlog {
                alert: true,
                message: format!(
                    "oldest item waited {}s, over max_age {}s ({} waiting)",
                    age.as_secs(),
                    max_age.as_secs(),
                    backlog.waiting
                ),
            });
        } else if age <= max_age && state.too_old {
            state.too_old = false;
            changes.push(EventKind::Backlog {
                alert: false,
                message: format!("oldest item within max_age ({}s)", age.as_secs()),
            });
        }
    }
    changes
}

/// "grew 40 → 320 over 10s (+28.0/s); max_backlog 1000 in 24s, max_age 5m in 4m52s".
fn growing(spec: &BacklogSpec, backlog: &Backlog, window: Duration, rate: f64) -> String {
    let start = backlog
        .waiting
        .saturating_sub((rate * window.as_secs_f64()).round() as u64);
    let mut text = format!(
        "grew {start} → {} over {}s (+{rate:.1}/s)",
        backlog.waiting,
        window.as_secs()
    );
    let mut bounds = Vec::new();
    if let Some(max) = spec.max_backlog {
        let left = max.saturating_sub(backlog.waiting) as f64 / rate;
        bounds.push(format!("max_backlog {max} in {}", seconds(left)));
    }
    if let (Some(max_age), Some(age)) = (spec.max_age, backlog.oldest_age) {
        // While nothing drains, the oldest item ages a second a second.
        let left = max_age.saturating_sub(age).as_secs_f64();
        bounds.push(format!(
            "max_age {}s in {}",
            max_age.as_secs(),
            seconds(left)
        ));
    }
    if bounds.is_empty() {
        text.push_str("; no bound set");
    } else {
        text.push_str("; ");
        text.push_str(&bounds.join(", "));
    }
    text
}

fn seconds(s: f64) -> String {
    if s.is_finite() {
        format!("{}s", s.max(0.0).round() as u64)
    } else {
        "never".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backlog(history: &[u64], age: Option<u64>) -> Backlog {
        Backlog {
            waiting: history.last().copied().unwrap_or(0),
            published: true,
            oldest_age: age.map(Duration::from_secs),
            history: history.iter().copied().collect(),
        }
    }

    #[test]
    fn growth_over_the_window_alerts_once_with_rate_and_time_to_bound_then_resolves() {
        let spec = BacklogSpec {
            grow_window: Some(Duration::from_secs(3)),
            max_age: None,
            max_backlog: Some(100),
            ..BacklogSpec::default()
        };
        let second = Duration::from_secs(1);
        let mut state = AlertState::default();
        let rising = backlog(&[10, 20, 30, 40], None);
        let raised = judge(&mut state, &spec, &rising, second);
        let [
            EventKind::Backlog {
                alert: true,
                message,
            },
        ] = raised.as_slice()
        else {
            panic!("{raised:?}")
        };
        assert_eq!(
            message,
            "grew 10 → 40 over 3s (+10.0/s); max_backlog 100 in 6s"
        );
        assert!(
            judge(&mut state, &spec, &rising, second).is_empty(),
            "raised once"
        );
        let steady = backlog(&[40, 41, 35, 38], None);
        let resolved = judge(&mut state, &spec, &steady, second);
        assert!(matches!(
            resolved.as_slice(),
            [EventKind::Backlog { alert: false, .. }]
        ));
    }

    #[test]
    fn an_old_item_alerts_once_and_resolves() {
        let spec = BacklogSpec {
            grow_window: None,
            max_age: Some(Duration::from_secs(60)),
            max_backlog: None,
            ..BacklogSpec::default()
        };
        let second = Duration::from_secs(1);
        let mut state = AlertState::default();
        assert!(judge(&mut state, &spec, &backlog(&[5], Some(59)), second).is_empty());
        let old = judge(&mut state, &spec, &backlog(&[5], Some(61)), second);
        assert!(matches!(
            old.as_slice(),
            [EventKind::Backlog { alert: true, .. }]
        ));
        assert!(judge(&mut state, &spec, &backlog(&[5], Some(70)), second).is_empty());
        let young = judge(&mut state, &spec, &backlog(&[0], None), second);
        assert!(matches!(
            young.as_slice(),
            [EventKind::Backlog { alert: false, .. }]
        ));
    }
}
