//! Autoscaling: how many replicas a service should have to hold its `autoscale` target.
//!
//! One replica at a time, at most once per cooldown (the caller keeps the clock): out when the
//! figure is above the target for the replicas there are and the backlog is not already
//! falling; in when it would stay below half the target with one replica fewer and the backlog
//! is not rising. The gap between the two thresholds is the hysteresis that keeps a load at the
//! target from flapping. See `docs/backlog.md`.

use std::time::Duration;

use crate::{
    monitor::backlog::Trend,
    stack::{AutoscaleSpec, ScaleTarget},
};

/// What the autoscaler reads about a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    pub waiting: u64,
    pub in_flight: u64,
    pub oldest_age: Option<Duration>,
    pub trend: Trend,
}

/// A change of replicas and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub to: u32,
    pub reason: String,
}

/// The decision for a service with `current` replicas, if any.
pub fn decide(spec: &AutoscaleSpec, current: u32, load: &Load) -> Option<Decision> {
    if current < spec.min || current > spec.max {
        let to = current.clamp(spec.min, spec.max);
        return Some(Decision {
            to,
            reason: format!("outside its range {} to {}", spec.min, spec.max),
        });
    }
    let (over, under, what) = match spec.target {
        ScaleTarget::Backlog(target) => counts(load.waiting, target, current, "backlog"),
        ScaleTarget::InFlight(target) => counts(load.in_flight, target, current, "in flight"),
        ScaleTarget::OldestAge(target) => {
            let age = load.oldest_age.unwrap_or_default();
            (
                age > target,
                age < target / 2,
                format!(
                    "oldest item {}s, target {}s",
                    age.as_secs(),
                    target.as_secs()
                ),
            )
        }
    };
    let trend = load.trend.as_str();
    if over && load.trend != Trend::Falling && current < spec.max {
        Some(Decision {
            to: current + 1,
            reason: format!("{what}, {trend}"),
        })
    } else if under && load.trend != Trend::Rising && current > spec.min {
        Some(Decision {
            to: current - 1,
            reason: format!("{what}, {trend}"),
        })
    } else {
        None
    }
}

/// Over: more than `target` per replica. Under: below half of `target` per replica even with
/// one replica fewer.
fn counts(figure: u64, target: u64, current: u32, name: &str) -> (bool, bool, String) {
    let over = figure > target.saturating_mul(u64::from(current));
    let under = figure.saturating_mul(2) < target.saturating_mul(u64::from(current - 1));
    let text = format!("{name} {figure}, target {target} × {current} replicas");
    (over, under, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(target: ScaleTarget) -> AutoscaleSpec {
        AutoscaleSpec {
            min: 1,
            max: 3,
            target,
            cooldown: Duration::from_secs(5),
        }
    }

    fn load(waiting: u64, trend: Trend) -> Load {
        Load {
            waiting,
            in_flight: 0,
            oldest_age: None,
            trend,
        }
    }

    #[test]
    fn out_above_the_target_in_well_below_it_and_nothing_between() {
        let spec = spec(ScaleTarget::Backlog(100));
        let out = decide(&spec, 1, &load(150, Trend::Rising)).unwrap();
        assert_eq!(out.to, 2);
        assert_eq!(out.reason, "backlog 150, target 100 × 1 replicas, rising");
        // Above the target but already falling: the replicas there are drain it.
        assert_eq!(decide(&spec, 1, &load(150, Trend::Falling)), None);
        // Hysteresis: 2 replicas, 60 waiting is under the target but not under half of it
        // for one replica.
        assert_eq!(decide(&spec, 2, &load(60, Trend::Flat)), None);
        assert_eq!(decide(&spec, 2, &load(40, Trend::Flat)).unwrap().to, 1);
        assert_eq!(decide(&spec, 2, &load(40, Trend::Rising)), None);
        // Never past the range.
        assert_eq!(decide(&spec, 3, &load(10_000, Trend::Rising)), None);
        assert_eq!(decide(&spec, 1, &load(0, Trend::Flat)), None);
        assert_eq!(decide(&spec, 5, &load(0, Trend::Flat)).unwrap().to, 3);
    }

    #[test]
    fn an_age_target_scales_on_the_oldest_item() {
        let spec = spec(ScaleTarget::OldestAge(Duration::from_secs(10)));
        let old = Load {
            oldest_age: Some(Duration::from_secs(12)),
            ..load(5, Trend::Flat)
        };
        assert_eq!(decide(&spec, 1, &old).unwrap().to, 2);
        let young = Load {
            oldest_age: Some(Duration::from_secs(2)),
            ..load(5, Trend::Flat)
        };
        assert_eq!(decide(&spec, 2, &young).unwrap().to, 1);
    }
}
