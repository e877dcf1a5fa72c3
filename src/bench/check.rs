//! `switchboard bench --check`: a short run of the routing, gateway, restart, hang and render
//! measurements that fails when a figure is worse than half its README target (for "at most"
//! targets: more than twice the target). A guard against a change that wrecks performance,
//! not a measurement: the figures themselves are the full `switchboard bench`'s.
//!
//! Routing and the gateway are held as ratios against baselines measured in the same run (the
//! pipe ping-pong, the bare pipe hub, a bare axum handler), so a slow or busy machine moves
//! both sides. The README gives restart, hang and render as times, with nothing on this
//! machine to hold them against; they are checked against twice their target, which the
//! release build meets with room (5–7 ms of 20, 26 of 80, 0.7 of 4 here).

use super::{Figure, SupervisorOptions};

/// One figure held against its limit.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub name: &'static str,
    pub value: f64,
    pub unit: &'static str,
    /// Half of the README's target: a value past it fails.
    pub limit: f64,
    /// Whether more is better (a rate, a throughput ratio) or less (a time, a slowdown).
    pub higher_is_better: bool,
    pub target: &'static str,
}

impl Verdict {
    /// Within the limit; a figure that could not be measured (NaN) fails.
    pub fn passed(&self) -> bool {
        if self.higher_is_better {
            self.value >= self.limit
        } else {
            self.value <= self.limit
        }
    }
}

/// Runs the short measurements; every verdict, passed or not.
pub async fn run(options: &SupervisorOptions) -> Vec<Verdict> {
    let value = |figures: &[Figure], name: &str| {
        figures
            .iter()
            .find(|f| f.name.starts_with(name))
            .map_or(f64::NAN, |f| f.value)
    };
    let restart = super::restart_latency(options, 20).await;
    let hang = super::hang_detection(options, 5).await;
    let render = super::render_time(500);
    let (round_trip, rate) = super::routing::check(options).await;
    let gateway = super::gateway::run(options, super::gateway::LoadClient::default()).await;
    vec![
        Verdict {
            name: "crash → ready, p50",
            value: value(&restart, "crash → ready, p50"),
            unit: "ms",
            limit: 20.0,
            higher_is_better: false,
            target: "< 10 ms",
        },
        Verdict {
            name: "hang detected after timeout, p50",
            value: value(&hang, "hang detected after timeout, p50"),
            unit: "ms",
            limit: 80.0,
            higher_is_better: false,
            target: "≤ 40 ms",
        },
        Verdict {
            name: "render one frame, 500 services",
            value: value(&render, "render one frame"),
            unit: "ms",
            limit: 4.0,
            higher_is_better: false,
            target: "< 2 ms",
        },
        Verdict {
            name: "routed round trip ÷ pipe ping-pong, 1 in flight",
            value: round_trip,
            unit: "×",
            limit: 3.0,
            higher_is_better: false,
            target: "≤ 1.5×",
        },
        Verdict {
            name: "routed rate ÷ bare hub, 64 in flight, best of 5",
            value: rate,
            unit: "×",
            limit: 1.0 / 6.0,
            higher_is_better: true,
            target: "≥ ⅓",
        },
        Verdict {
            name: "gateway ÷ bare handler, throughput",
            value: value(&gateway, "gateway ÷ bare handler"),
            unit: "×",
            limit: 0.25,
            higher_is_better: true,
            target: "≥ 0.5",
        },
    ]
}

/// Prints the verdicts; true when all passed.
pub fn report(verdicts: &[Verdict]) -> bool {
    println!(
        "{:<50} {:>8}  {:<4} {:>8}  {:<8} verdict",
        "check", "value", "unit", "limit", "target"
    );
    for v in verdicts {
        println!(
            "{:<50} {:>8.2}  {:<4} {}{:>7.2}  {:<8} {}",
            v.name,
            v.value,
            v.unit,
            if v.higher_is_better { "≥" } else { "≤" },
            v.limit,
            v.target,
            if v.passed() { "ok" } else { "FAILED" }
        );
    }
    let failed: Vec<&str> = verdicts
        .iter()
        .filter(|v| !v.passed())
        .map(|v| v.name)
        .collect();
    if !failed.is_empty() {
        eprintln!(
            "switchboard bench --check: worse than half the README's target: {}",
            failed.join("; ")
        );
    }
    failed.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(value: f64, limit: f64, higher_is_better: bool) -> Verdict {
        Verdict {
            name: "x",
            value,
            unit: "",
            limit,
            higher_is_better,
            target: "",
        }
    }

    #[test]
    fn a_figure_past_its_limit_or_missing_fails() {
        assert!(verdict(3.0, 3.0, false).passed());
        assert!(!verdict(3.1, 3.0, false).passed());
        assert!(verdict(0.25, 0.25, true).passed());
        assert!(!verdict(0.2, 0.25, true).passed());
        assert!(!verdict(f64::NAN, 3.0, false).passed());
        assert!(!verdict(f64::NAN, 0.25, true).passed());
        assert!(!report(&[
            verdict(1.0, 3.0, false),
            verdict(0.1, 0.25, true)
        ]));
        assert!(report(&[verdict(1.0, 3.0, false)]));
    }
}
