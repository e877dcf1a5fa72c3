//! What the console shows, as plain data: a snapshot built from the registry, the metrics and
//! the logs. The UI reads nothing else, and everything here is serde-serialisable, so the same
//! UI can later be driven from a remote headless instance through the admin API.

use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::{
    logs::{LogLine, Stream},
    monitor::metrics,
    registry::{self, InstanceState},
    stack::{Condition, ServiceKind},
    supervisor::Supervisor,
};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsoleView {
    pub stack: String,
    pub uptime: Duration,
    pub gateway: Option<String>,
    pub console_cpu: f32,
    pub console_rss: u64,
    pub services: Vec<ServiceRow>,
    /// Recent routed calls, filled only while the console shows them (the calls overlay).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<HopView>,
    /// Totals of the routes those calls took, since the console started (same condition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteView>,
}

/// One route's totals: every call from `from` to `to.method` the router saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteView {
    pub from: String,
    pub to: String,
    pub method: String,
    pub requests: u64,
    pub errors: u64,
    /// Upper bound of the latency bucket holding the 99th percentile.
    pub p99_us: Option<u64>,
}

/// The routes from or to `service` (every route without one), busiest first.
pub fn routes_of(
    routes: Vec<(
        crate::router::trace::Route,
        crate::router::trace::RouteStats,
    )>,
    service: Option<&str>,
) -> Vec<RouteView> {
    let mut views: Vec<RouteView> = routes
        .into_iter()
        .filter(|(route, _)| service.is_none_or(|s| &*route.from == s || &*route.to == s))
        .map(|(route, stats)| RouteView {
            from: route.from.to_string(),
            to: route.to.to_string(),
            method: route.method.to_string(),
            requests: stats.requests,
            errors: stats.errors,
            p99_us: metrics::quantile(&stats.histogram, 0.99),
        })
        .collect();
    views.sort_by_key(|route| std::cmp::Reverse(route.requests));
    views
}

/// One routed call, as the router traced it: who called what, how long it took, how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HopView {
    /// When it ended, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub trace: u64,
    pub from: String,
    pub to: String,
    pub method: String,
    pub latency_us: u64,
    /// The error code (`timeout`, `circuit_open`, ...); none for success.
    pub error: Option<String>,
}

impl From<&crate::router::trace::Hop> for HopView {
    fn from(hop: &crate::router::trace::Hop) -> Self {
        HopView {
            at_ms: hop
                .at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            trace: hop.trace,
            from: hop.from.to_string(),
            to: hop.to.to_string(),
            method: hop.method.to_string(),
            latency_us: u64::try_from(hop.latency.as_micros()).unwrap_or(u64::MAX),
            error: hop.error.map(str::to_string),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRow {
    pub name: String,
    pub job: bool,
    pub state: InstanceState,
    pub ready: u32,
    pub replicas: u32,
    pub pid: Option<u32>,
    pub uptime: Option<Duration>,
    pub restarts: u32,
    pub cpu: f32,
    pub rss: u64,
    pub request_rate: f64,
    pub error_rate: f64,
    pub p99_us: Option<u64>,
    pub heartbeat_age: Option<Duration>,
    pub breaker: String,
    pub version: Option<String>,
    pub rate_history: Vec<u64>,
    pub tasks: Vec<TaskView>,
    pub depends_on: Vec<(String, String)>,
    pub calls: Vec<String>,
    pub waiting_on: Vec<String>,
    /// Recent exits, newest first: (how long ago, replica, status).
    pub exits: Vec<(Duration, u32, String)>,
    pub runs: Vec<RunView>,
    /// Each replica, in replica order (the row above sums them up).
    #[serde(default)]
    pub instances: Vec<ReplicaView>,
}

/// One replica of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaView {
    pub replica: u32,
    pub state: InstanceState,
    pub pid: Option<u32>,
    pub uptime: Option<Duration>,
    pub restarts: u32,
    pub cpu: f32,
    pub rss: u64,
}

impl ServiceRow {
    /// A row with nothing measured and nothing running: a start for literals that set what
    /// they need (`ServiceRow { pid: Some(7), ..ServiceRow::new("echo", state) }`).
    pub fn new(name: &str, state: InstanceState) -> ServiceRow {
        ServiceRow {
            name: name.into(),
            job: false,
            state,
            ready: 0,
            replicas: 1,
            pid: None,
            uptime: None,
            restarts: 0,
            cpu: 0.0,
            rss: 0,
            request_rate: 0.0,
            error_rate: 0.0,
            p99_us: None,
            heartbeat_age: None,
            breaker: "closed".into(),
            version: None,
            rate_history: Vec::new(),
            tasks: Vec::new(),
            depends_on: Vec::new(),
            calls: Vec::new(),
            waiting_on: Vec::new(),
            exits: Vec::new(),
            runs: Vec::new(),
            instances: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    pub replica: u32,
    pub label: String,
    pub done: u64,
    pub total: u64,
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    pub run: u64,
    pub params: String,
    pub duration: Option<Duration>,
    pub outcome: Option<Result<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogView {
    pub seq: u64,
    pub at: SystemTime,
    pub service: String,
    pub replica: u32,
    pub console: bool,
    pub text: String,
}

impl From<&LogLine> for LogView {
    fn from(line: &LogLine) -> Self {
        LogView {
            seq: line.seq,
            at: line.at,
            service: line.service.to_string(),
            replica: line.replica,
            console: line.stream == Stream::Console,
            text: line.text.clone(),
        }
    }
}

/// Builds the snapshot of a local supervisor.
pub fn snapshot(supervisor: &Supervisor, started: Instant) -> ConsoleView {
    let own = supervisor.own_usage.lock().map(|u| *u).unwrap_or_default();
    let metrics = metrics::read(&supervisor.metrics);
    let registry = registry::read(&supervisor.registry);
    let now = SystemTime::now();
    let services = registry
        .services
        .iter()
        .map(|service| {
            let m = metrics.service(service.name());
            let live: Vec<_> = service
                .instances
                .iter()
                .filter(|i| i.state.has_process())
                .collect();
            ServiceRow {
                name: service.name().to_string(),
                job: service.spec.kind == ServiceKind::Job,
                state: service.state(),
                ready: service.ready_instances() as u32,
                replicas: service.replicas,
                pid: live.first().and_then(|i| i.pid),
                uptime: live.iter().filter_map(|i| i.uptime()).max(),
                restarts: service.restarts(),
                cpu: live.iter().fold(0.0, |sum, i| sum + i.cpu_percent),
                rss: live.iter().map(|i| i.rss_bytes).sum(),
                request_rate: m.map_or(0.0, |m| m.request_rate),
                error_rate: m.map_or(0.0, |m| m.error_rate),
                p99_us: m.and_then(|m| m.p99_us),
                heartbeat_age: m.and_then(|m| m.heartbeat_age),
                breaker: supervisor
                    .router
                    .breaker_state(service.name())
                    .map_or("-", |b| b.as_str())
                    .into(),
                version: live.iter().find_map(|i| i.version.clone()),
                rate_history: m
                    .map(|m| m.rate_history.iter().copied().collect())
                    .unwrap_or_default(),
                tasks: m
                    .map(|m| {
                        let mut tasks: Vec<_> = m.tasks.iter().collect();
                        sort_tasks(&mut tasks);
                        tasks
                            .into_iter()
                            .map(|(replica, t)| TaskView {
                                replica: *replica,
                                label: t.label.clone(),
                                done: t.done,
                                total: t.total,
                                state: format!("{:?}", t.state).to_lowercase(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                depends_on: service
                    .spec
                    .depends_on
                    .iter()
                    .map(|d| {
                        let condition = match d.condition {
                            Condition::Started => "started",
                            Condition::Ready => "ready",
                            Condition::Completed => "completed",
                        };
                        (d.name.clone(), condition.to_string())
                    })
                    .collect(),
                calls: service.spec.calls.clone(),
                waiting_on: service.waiting_on.clone(),
                exits: service
                    .exits
                    .iter()
                    .rev()
                    .map(|(at, replica, status)| {
                        (
                            now.duration_since(*at).unwrap_or_default(),
                            *replica,
                            status.to_string(),
                        )
                    })
                    .collect(),
                runs: service
                    .runs
                    .iter()
                    .rev()
                    .map(|run| RunView {
                        run: run.run,
                        params: run.params.clone(),
                        duration: run.duration,
                        outcome: run.result.clone(),
                    })
                    .collect(),
                instances: service
                    .instances
                    .iter()
                    .map(|i| ReplicaView {
                        replica: i.id.replica,
                        state: i.state,
                        pid: i.pid.filter(|_| i.state.has_process()),
                        uptime: i.uptime(),
                        restarts: i.restarts,
                        cpu: i.cpu_percent,
                        rss: i.rss_bytes,
                    })
                    .collect(),
            }
        })
        .collect();
    ConsoleView {
        stack: registry.stack_name.clone(),
        uptime: started.elapsed(),
        gateway: None,
        console_cpu: own.cpu_percent,
        console_rss: own.rss_bytes,
        services,
        calls: Vec::new(),
        routes: Vec::new(),
    }
}

/// Orders `(replica, task)` pairs for the detail pane (see [`task_order`]).
fn sort_tasks(tasks: &mut [&(u32, switchboard_protocol::segment::TaskRecord)]) {
    tasks.sort_by_key(|(replica, task)| (task_order(task), *replica, task_age(task)));
}

/// Where a task goes in the detail pane: running ones first, oldest first (they are what the
/// operator watches, and the pane may only have room for a few), then failed and cancelled,
/// then done, each newest first. Slots are reused, so slot order says neither. Task ids count
/// per process, so replicas are kept apart: `(state, replica, age)`.
fn task_order(task: &switchboard_protocol::segment::TaskRecord) -> u8 {
    use switchboard_protocol::segment::TaskState;
    match task.state {
        TaskState::Running => 0,
        TaskState::Failed => 1,
        TaskState::Cancelled => 2,
        TaskState::Done => 3,
        TaskState::Free => 4,
    }
}

/// Oldest first while running, newest first once ended (see [`task_order`]).
fn task_age(task: &switchboard_protocol::segment::TaskRecord) -> u64 {
    if task.state == switchboard_protocol::segment::TaskState::Running {
        task.id
    } else {
        u64::MAX - task.id
    }
}

#[cfg(test)]
mod tests {
    use switchboard_protocol::segment::{TaskRecord, TaskState, Validity};

    use super::sort_tasks;

    fn task(id: u64, state: TaskState) -> TaskRecord {
        TaskRecord {
            slot: (id % 3) as usize,
            id,
            label: format!("task {id}"),
            done: 0,
            total: 1,
            state,
            validity: Validity::Valid,
        }
    }

    #[test]
    fn routes_of_a_service_busiest_first_with_their_p99() {
        use std::sync::Arc;

        use crate::router::trace::{Route, RouteStats};
        let route = |from: &str, to: &str, requests: u64| {
            let mut histogram = vec![0; 32];
            histogram[10] = requests; // 512–1024 µs
            (
                Route {
                    from: Arc::from(from),
                    to: Arc::from(to),
                    method: "m".into(),
                },
                RouteStats {
                    requests,
                    errors: 1,
                    latency_sum_us: 0,
                    histogram,
                },
            )
        };
        let routes = vec![route("a", "b", 5), route("c", "d", 9), route("b", "c", 7)];
        let of_b: Vec<(String, u64)> = super::routes_of(routes.clone(), Some("b"))
            .into_iter()
            .map(|r| (format!("{}>{}", r.from, r.to), r.requests))
            .collect();
        assert_eq!(of_b, [("b>c".to_string(), 7), ("a>b".to_string(), 5)]);
        let all = super::routes_of(routes, None);
        assert_eq!(all.len(), 3);
        assert_eq!((all[0].requests, all[0].p99_us), (9, Some(1024)));
    }

    #[test]
    fn running_tasks_come_first_oldest_first_by_replica_then_failures_then_the_newest_done() {
        let records = [
            (0, task(1, TaskState::Done)),
            (1, task(2, TaskState::Running)),
            (0, task(7, TaskState::Running)),
            (0, task(2, TaskState::Failed)),
            (0, task(5, TaskState::Done)),
            (0, task(3, TaskState::Running)),
            (0, task(6, TaskState::Cancelled)),
            (1, task(1, TaskState::Running)),
        ];
        let mut tasks: Vec<_> = records.iter().collect();
        sort_tasks(&mut tasks);
        let order: Vec<(u32, u64)> = tasks.iter().map(|(r, t)| (*r, t.id)).collect();
        assert_eq!(
            order,
            [
                (0, 3),
                (0, 7),
                (1, 1),
                (1, 2),
                (0, 2),
                (0, 6),
                (0, 5),
                (0, 1)
            ]
        );
    }
}
