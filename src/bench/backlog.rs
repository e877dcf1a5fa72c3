//! Backlog: how long autoscaling takes to stop a growing backlog after a load step, and how
//! far the backlog overshoots. The demo shop's `order` (32 orders at a time, four 250 ms
//! stages: 32 a second per replica) under a storefront at 15 orders a second, stepped to 45 by
//! scaling the storefront to three replicas. Measured twice in the same run: with `autoscale`,
//! and, as the baseline, with the bench itself scaling `order` at the step to the replicas
//! autoscaling ended at (the reaction of an operator who knew the answer). The figures are the
//! autoscaled run's, and its ratios to the baseline's.

use std::time::{Duration, Instant};

use super::{BenchStack, Figure};
use crate::{
    registry,
    supervisor::{Command, SupervisorOptions},
};

/// The load step: the storefront (15 orders a second each) scaled to this many replicas, 45
/// a second: more than one `order` replica completes, well under what two do.
const STEP_REPLICAS: u32 = 3;
/// What autoscaling holds per replica.
const TARGET: u64 = 60;
/// The load before the step runs this long (orders flowing, the backlog steady).
const WARM_UP: Duration = Duration::from_secs(5);
/// The longest a run watches after the step.
const WATCH: Duration = Duration::from_secs(90);
/// How often the backlog is read (order publishes it every 500 ms).
const EVERY: Duration = Duration::from_millis(250);

fn stack(autoscale: bool) -> String {
    let policy = if autoscale {
        format!("autoscale = {{ min = 1, max = 4, target_backlog = {TARGET}, cooldown = \"3s\" }}")
    } else {
        String::new()
    };
    format!(
        r#"
name = "bench-backlog"
[services.user]
builtin = "user"
[services.order]
builtin = "order"
depends_on = {{ user = "ready" }}
calls = ["user"]
settings = {{ stage_ms = "250", user_timeout_ms = "2000" }}
{policy}
[services.storefront]
builtin = "storefront"
depends_on = {{ order = "ready" }}
calls = ["user", "order"]
settings = {{ rate = "15", customers = "20", invalid_percent = "0" }}
"#
    )
}

/// One run's course after the step.
#[derive(Debug, Default)]
struct Course {
    /// From the step to the highest backlog seen (after it, it never grew past it).
    to_peak: Duration,
    peak: u64,
    /// order's replicas when the run ended.
    replicas: u32,
    /// From the step until the backlog was back under the target for those replicas.
    to_drained: Option<Duration>,
}

pub async fn run(options: &SupervisorOptions) -> Vec<Figure> {
    let Some(scaled) = course(options, None).await else {
        eprintln!("backlog bench: the autoscaled run did not complete");
        return Vec::new();
    };
    let Some(baseline) = course(options, Some(scaled.replicas)).await else {
        eprintln!("backlog bench: the baseline run did not complete");
        return Vec::new();
    };
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    vec![
        Figure {
            name: "backlog: load step → growth stopped, autoscaled".into(),
            value: scaled.to_peak.as_secs_f64(),
            unit: "s".into(),
            detail: format!(
                "15 → 45 orders/s, 32/s per replica; ended at {} replicas; {:.2}× the baseline \
                 ({:.1} s, scaled to {} at the step)",
                scaled.replicas,
                ratio(scaled.to_peak.as_secs_f64(), baseline.to_peak.as_secs_f64()),
                baseline.to_peak.as_secs_f64(),
                scaled.replicas
            ),
        },
        Figure {
            name: "backlog: overshoot (peak), autoscaled".into(),
            value: scaled.peak as f64,
            unit: "orders".into(),
            detail: format!(
                "target {TARGET} per replica ({} for {} replicas); {:.2}× the baseline's peak of {}",
                TARGET * u64::from(scaled.replicas),
                scaled.replicas,
                ratio(scaled.peak as f64, baseline.peak as f64),
                baseline.peak
            ),
        },
        Figure {
            name: "backlog: load step → back under target, autoscaled".into(),
            value: secs(scaled.to_drained),
            unit: "s".into(),
            detail: format!(
                "{:.2}× the baseline ({:.1} s)",
                ratio(secs(scaled.to_drained), secs(baseline.to_drained)),
                secs(baseline.to_drained)
            ),
        },
    ]
}

/// One run: warm up, step the load, watch the backlog. `scale_to`: the baseline, which scales
/// `order` itself at the step (the stack then has no autoscale).
async fn course(options: &SupervisorOptions, scale_to: Option<u32>) -> Option<Course> {
    let bench = BenchStack::start(&stack(scale_to.is_none()), options)?;
    bench.supervisor.begin().await;
    let course = watch(&bench, scale_to).await;
    bench.finish().await;
    course
}

async fn watch(bench: &BenchStack, scale_to: Option<u32>) -> Option<Course> {
    if !bench.until_ready(Duration::from_secs(60)).await {
        return None;
    }
    tokio::time::sleep(WARM_UP).await;
    let step = Instant::now();
    let command = |c: Command| bench.supervisor.command(c);
    command(Command::Scale("storefront".into(), STEP_REPLICAS))
        .await
        .ok()?;
    if let Some(replicas) = scale_to {
        command(Command::Scale("order".into(), replicas))
            .await
            .ok()?;
    }
    let mut course = Course::default();
    let mut ticks = tokio::time::interval(EVERY);
    while step.elapsed() < WATCH {
        ticks.tick().await;
        let (waiting, replicas) = order_backlog(bench);
        course.replicas = replicas;
        if waiting > course.peak {
            course.peak = waiting;
            course.to_peak = step.elapsed();
        }
        let settled = step.elapsed() > course.to_peak + Duration::from_secs(10);
        if settled && waiting <= TARGET * u64::from(replicas) {
            course.to_drained = Some(step.elapsed());
            break;
        }
    }
    Some(course)
}

/// order's backlog, all replicas together, and its replicas.
fn order_backlog(bench: &BenchStack) -> (u64, u32) {
    let registry = registry::read(bench.supervisor.registry());
    let Some(order) = registry.service("order") else {
        return (0, 0);
    };
    let waiting = order
        .instances
        .iter()
        .filter_map(|i| i.handle.as_ref())
        .map(|h| h.waiting())
        .fold(0, u64::saturating_add);
    (waiting, order.replicas)
}
