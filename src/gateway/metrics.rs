//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4), written by hand at
//! scrape time from the registry, the segment sampler, the router's breakers and its per-route
//! statistics. Nothing is registered ahead of time, so there is nothing to keep in sync.
//!
//! Latency histograms come from the log2 µs buckets of the segments and the router: bucket `b`
//! holds latencies below `2^b` µs, so `le` is `2^b` µs in seconds, and the last bucket is
//! folded into `+Inf`.

use std::fmt::Write;

use axum::{
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

use super::AppState;
use crate::{
    monitor::metrics,
    registry::{self, InstanceState},
    router::breaker::BreakerState,
    supervisor::Supervisor,
};

const STATES: [InstanceState; 9] = [
    InstanceState::Starting,
    InstanceState::Ready,
    InstanceState::Degraded,
    InstanceState::Stopping,
    InstanceState::Stopped,
    InstanceState::Exited,
    InstanceState::Crashed,
    InstanceState::Backoff,
    InstanceState::Failed,
];

/// One metric family: its `# HELP`/`# TYPE` header once, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// `_bucket`, `_sum` and `_count` of a histogram in log2 µs buckets.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], buckets: &[u64], sum_us: u64) {
        let mut cumulative = 0u64;
        let last = buckets.len().saturating_sub(1);
        for (bucket, count) in buckets.iter().enumerate() {
            cumulative += count;
            if bucket == last {
                break;
            }
            let le = number((1u64 << bucket.min(62)) as f64 / 1e6);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &with_le, cumulative as f64);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &with_le, cumulative as f64);
        self.sample(&format!("{name}_sum"), labels, sum_us as f64 / 1e6);
        self.sample(&format!("{name}_count"), labels, cumulative as f64);
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(value: f64) -> String {
    // `-0.0` prints as `-0` (a CPU share of a tiny negative rounding, say); a scrape should
    // never read negative zero. `== 0.0` holds for both zeros.
    if value == 0.0 {
        "0".into()
    } else if value.is_finite() {
        format!("{value}")
    } else if value.is_nan() {
        "NaN".into()
    } else if value > 0.0 {
        "+Inf".into()
    } else {
        "-Inf".into()
    }
}

/// A service's numbers, copied out under the locks and written after they are released.
struct Row {
    name: String,
    state: InstanceState,
    ready: usize,
    replicas: u32,
    restarts: u32,
    cpu: f64,
    rss: u64,
    breaker: Option<BreakerState>,
    metrics: Option<metrics::ServiceMetrics>,
    log_dropped: u64,
}

pub fn render(state: &AppState) -> String {
    let supervisor = &state.supervisor;
    let rows = service_rows(supervisor);
    let mut out = String::with_capacity(4096 + rows.len() * 2048);
    service_families(&mut out, &rows);
    service_health_families(&mut out, &rows);
    route_families(&mut out, supervisor);
    console_families(&mut out, supervisor);
    out
}

/// One row per service: what its families report.
fn service_rows(supervisor: &Supervisor) -> Vec<Row> {
    let rows: Vec<Row> = {
        let metrics = metrics::read(supervisor.metrics());
        let registry = registry::read(supervisor.registry());
        registry
            .services
            .iter()
            .map(|s| {
                let live = s.instances.iter().filter(|i| i.state.has_process());
                Row {
                    name: s.name().to_string(),
                    state: s.state(),
                    ready: s.ready_instances(),
                    replicas: s.replicas,
                    restarts: s.restarts(),
                    cpu: live.clone().map(|i| f64::from(i.cpu_percent)).sum(),
                    rss: live.map(|i| i.rss_bytes).sum(),
                    breaker: None,
                    metrics: metrics.service(s.name()).cloned(),
                    log_dropped: 0,
                }
            })
            .collect()
    };
    let rows: Vec<Row> = rows
        .into_iter()
        .map(|mut row| {
            row.breaker = supervisor.router().breaker_state(&row.name);
            row.log_dropped = supervisor.logs().dropped_lines(&row.name);
            row
        })
        .collect();
    rows
}

/// `switchboard_service_*` and `switchboard_log_lines_dropped_total`, one sample per service.
/// One value per service, in the order scraped: name, type, help, and the value (`None` leaves
/// the service out of the family).
type PerService = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Row) -> Option<f64>,
);

const SERVICE_VALUES: [PerService; 10] = [
    (
        "switchboard_service_replicas",
        "gauge",
        "Replicas wanted.",
        |r| Some(f64::from(r.replicas)),
    ),
    (
        "switchboard_service_ready_replicas",
        "gauge",
        "Replicas ready.",
        |r| Some(r.ready as f64),
    ),
    (
        "switchboard_service_restarts_total",
        "counter",
        "Restarts since the console started.",
        |r| Some(f64::from(r.restarts)),
    ),
    (
        "switchboard_service_requests_total",
        "counter",
        "Requests the service finished, from its segment.",
        |r| r.metrics.as_ref().map(|m| m.requests as f64),
    ),
    (
        "switchboard_service_events_received_total",
        "counter",
        "Events the service took (a subscriber's work), from its segment.",
        |r| r.metrics.as_ref().map(|m| m.events as f64),
    ),
    (
        "switchboard_service_calls_made_total",
        "counter",
        "Requests the service made through the console (its outgoing calls), from the router.",
        |r| r.metrics.as_ref().map(|m| m.calls as f64),
    ),
    (
        "switchboard_service_errors_total",
        "counter",
        "Requests that ended in an error or a timeout, from the segment.",
        |r| r.metrics.as_ref().map(|m| m.errors as f64),
    ),
    (
        "switchboard_service_in_flight",
        "gauge",
        "Requests in progress inside the service.",
        |r| r.metrics.as_ref().map(|m| m.in_flight as f64),
    ),
    (
        "switchboard_service_backlog",
        "gauge",
        "Items waiting inside the service: what it publishes, else requests routed to it and not answered.",
        |r| r.metrics.as_ref().map(|m| m.backlog.waiting as f64),
    ),
    (
        "switchboard_service_backlog_oldest_age_seconds",
        "gauge",
        "How long the oldest waiting item has waited: what the service publishes, else its oldest request routed and not answered, or held.",
        |r| {
            let m = r.metrics.as_ref()?;
            m.backlog
                .oldest_age
                .map(|age| age.as_secs_f64())
                .or_else(|| {
                    // Nothing waits: an age of zero, not a missing series that alerts cannot see.
                    (m.backlog.waiting == 0).then_some(0.0)
                })
        },
    ),
];

fn service_families(out: &mut String, rows: &[Row]) {
    per_service(
        out,
        rows,
        "switchboard_service_up",
        "gauge",
        "1 when at least one replica is ready.",
        &|r| Some(if r.ready > 0 { 1.0 } else { 0.0 }),
    );
    {
        let mut family = Family::new(
            out,
            "switchboard_service_state",
            "gauge",
            "The service's state: 1 for the current one, 0 for the others.",
        );
        for row in rows {
            for state in STATES {
                family.sample(
                    "switchboard_service_state",
                    &[("service", &row.name), ("state", state.as_str())],
                    if row.state == state { 1.0 } else { 0.0 },
                );
            }
        }
    }
    for (name, kind, help, value) in SERVICE_VALUES {
        per_service(out, rows, name, kind, help, &value);
    }
    {
        let name = "switchboard_service_request_duration_seconds";
        let mut family = Family::new(
            out,
            name,
            "histogram",
            "Request latency measured inside the service.",
        );
        for row in rows {
            if let Some(m) = &row.metrics {
                family.histogram(
                    name,
                    &[("service", &row.name)],
                    &m.histogram,
                    m.latency_sum_us,
                );
            }
        }
    }
}

/// `switchboard_service_*` from the OS and the console's own books: CPU, memory, heartbeat,
/// breaker, and the log lines dropped over budget.
fn service_health_families(out: &mut String, rows: &[Row]) {
    per_service(
        out,
        rows,
        "switchboard_service_cpu_percent",
        "gauge",
        "CPU of the service's processes, percent of one core.",
        &|r| Some(r.cpu),
    );
    per_service(
        out,
        rows,
        "switchboard_service_rss_bytes",
        "gauge",
        "Resident memory of the service's processes.",
        &|r| Some(r.rss as f64),
    );
    per_service(
        out,
        rows,
        "switchboard_service_heartbeat_age_seconds",
        "gauge",
        "Longest time any replica's heartbeat has been still, on the console's clock.",
        &|r| {
            r.metrics
                .as_ref()
                .and_then(|m| m.heartbeat_age)
                .map(|a| a.as_secs_f64())
        },
    );
    per_service(
        out,
        rows,
        "switchboard_service_breaker_state",
        "gauge",
        "Circuit breaker: 0 closed, 1 half-open, 2 open.",
        &|r| {
            r.breaker.map(|b| match b {
                BreakerState::Closed => 0.0,
                BreakerState::HalfOpen => 1.0,
                BreakerState::Open => 2.0,
            })
        },
    );

    per_service(
        out,
        rows,
        "switchboard_log_lines_dropped_total",
        "counter",
        "Log lines dropped over the service's log budget (stdout and stderr, all replicas).",
        &|r| Some(r.log_dropped as f64),
    );
}

/// One family with a sample per service, where `value` has one.
fn per_service(
    out: &mut String,
    rows: &[Row],
    name: &str,
    kind: &str,
    help: &str,
    value: &dyn Fn(&Row) -> Option<f64>,
) {
    let mut family = Family::new(out, name, kind, help);
    for row in rows {
        if let Some(v) = value(row) {
            family.sample(name, &[("service", &row.name)], v);
        }
    }
}

/// `switchboard_route_*`: per caller, target and method.
fn route_families(out: &mut String, supervisor: &Supervisor) {
    let routes = supervisor.router().routes();
    {
        let name = "switchboard_route_requests_total";
        let mut family = Family::new(
            out,
            name,
            "counter",
            "Requests routed, per caller, target and method.",
        );
        for (route, stats) in &routes {
            family.sample(name, &route_labels(route), stats.requests as f64);
        }
    }
    {
        let name = "switchboard_route_errors_total";
        let mut family = Family::new(out, name, "counter", "Routed requests that failed.");
        for (route, stats) in &routes {
            family.sample(name, &route_labels(route), stats.errors as f64);
        }
    }
    {
        let name = "switchboard_route_duration_seconds";
        let mut family = Family::new(
            out,
            name,
            "histogram",
            "Round trip through the router, per caller, target and method.",
        );
        for (route, stats) in &routes {
            family.histogram(
                name,
                &route_labels(route),
                &stats.histogram,
                stats.latency_sum_us,
            );
        }
    }
}

/// The console's own figures and the router's counters.
fn console_families(out: &mut String, supervisor: &Supervisor) {
    let own = supervisor.own_usage().own();
    let mut family = Family::new(
        out,
        "switchboard_console_cpu_percent",
        "gauge",
        "The console's own CPU, percent of one core.",
    );
    family.sample(
        "switchboard_console_cpu_percent",
        &[],
        f64::from(own.cpu_percent),
    );
    let mut family = Family::new(
        out,
        "switchboard_console_rss_bytes",
        "gauge",
        "The console's own resident memory.",
    );
    family.sample("switchboard_console_rss_bytes", &[], own.rss_bytes as f64);
    let mut family = Family::new(
        out,
        "switchboard_router_in_flight",
        "gauge",
        "Requests the router is waiting on.",
    );
    family.sample(
        "switchboard_router_in_flight",
        &[],
        supervisor.router().in_flight_count() as f64,
    );
    let mut family = Family::new(
        out,
        "switchboard_router_late_replies_total",
        "counter",
        "Answers that arrived after their request had been answered (timeout) and were dropped.",
    );
    family.sample(
        "switchboard_router_late_replies_total",
        &[],
        supervisor.router().late_replies() as f64,
    );
    let mut family = Family::new(
        out,
        "switchboard_router_dropped_events_total",
        "counter",
        "Events dropped for a congested subscriber, or held for a restarting one past the bound.",
    );
    family.sample(
        "switchboard_router_dropped_events_total",
        &[],
        supervisor.router().dropped_events() as f64,
    );
    let mut family = Family::new(
        out,
        "switchboard_router_busy_poll_seconds_total",
        "counter",
        "Time the console spent in poll rounds that found nothing (polling instead of sleeping).",
    );
    family.sample(
        "switchboard_router_busy_poll_seconds_total",
        &[],
        supervisor.router().busy_polled().as_secs_f64(),
    );
}

fn route_labels(route: &crate::router::trace::Route) -> Vec<(&str, &str)> {
    vec![
        ("from", &*route.from),
        ("to", &*route.to),
        ("method", route.method.as_str()),
    ]
}

pub async fn scrape(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        render(&state),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_negative_zero() {
        assert_eq!(number(-0.0), "0");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(-1.5), "-1.5");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf() {
        let mut out = String::new();
        let mut family = Family::new(&mut out, "h", "histogram", "test");
        family.histogram("h", &[("service", "a\"b")], &[1, 0, 2, 5], 3_000_000);
        assert!(out.contains("h_bucket{service=\"a\\\"b\",le=\"0.000001\"} 1\n"));
        assert!(out.contains("h_bucket{service=\"a\\\"b\",le=\"0.000004\"} 3\n"));
        assert!(out.contains("h_bucket{service=\"a\\\"b\",le=\"+Inf\"} 8\n"));
        assert!(out.contains("h_sum{service=\"a\\\"b\"} 3\n"));
        assert!(out.contains("h_count{service=\"a\\\"b\"} 8\n"));
    }
}
