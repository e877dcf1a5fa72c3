//! The read model of a local supervisor: the [`ConsoleView`] snapshot built from the registry,
//! the metrics, the router and the logs, for the console, the admin API and the console stream.
//!
//! Figures are rounded to what the console shows (uptimes to whole seconds, CPU to a tenth of
//! a percent, rates to a hundredth), so a snapshot changes only when something a person could
//! see has, and an attached console is sent nothing in between.

use std::time::{Duration, Instant, SystemTime};

use crate::{
    api::{
        BacklogView, ConsoleView, DependencyView, ExitView, HopView, LogView, ReplicaBacklogView,
        ReplicaView, RouteView, RunView, ServiceRow, TaskView, millis,
    },
    logs::{LogLine, Stream},
    monitor::metrics,
    registry,
    stack::{Condition, ServiceKind},
    supervisor::Supervisor,
};

fn whole_seconds(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs())
}

/// Rounded up, so a countdown reads 1s until it is due rather than 0s for its last second.
fn ceil_seconds(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs() + u64::from(duration.subsec_nanos() > 0))
}

fn tenths(value: f32) -> f32 {
    (value * 10.0).round() / 10.0
}

fn hundredths(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Builds the snapshot of a local supervisor.
pub fn snapshot(supervisor: &Supervisor, started: Instant) -> ConsoleView {
    let own = supervisor.own_usage.own();
    let metrics = metrics::read(&supervisor.metrics);
    let registry = registry::read(&supervisor.registry);
    let now = SystemTime::now();
    let clock = Instant::now();
    let services = registry
        .services
        .iter()
        .map(|service| {
            let m = metrics.service(service.name());
            let breaker = supervisor.router.breaker_status(service.name());
            let live: Vec<_> = service
                .instances
                .iter()
                .filter(|i| i.state.has_process())
                .collect();
            let stack = &supervisor.stack;
            ServiceRow {
                name: service.name().to_string(),
                host: stack
                    .is_remote(&service.spec)
                    .then(|| stack.host_of(&service.spec).to_string()),
                job: service.spec.kind == ServiceKind::Job,
                state: service.state(),
                ready: service.ready_instances() as u32,
                replicas: service.replicas,
                pid: live.first().and_then(|i| i.pid),
                uptime: live
                    .iter()
                    .filter_map(|i| i.uptime())
                    .max()
                    .map(whole_seconds),
                restarts: service.restarts(),
                cpu: tenths(live.iter().fold(0.0, |sum, i| sum + i.cpu_percent)),
                rss: live.iter().map(|i| i.rss_bytes).sum(),
                request_rate: m.map_or(0.0, |m| hundredths(m.request_rate)),
                event_rate: m.map_or(0.0, |m| hundredths(m.event_rate)),
                call_rate: m.map_or(0.0, |m| hundredths(m.call_rate)),
                error_rate: m.map_or(0.0, |m| hundredths(m.error_rate)),
                p99_us: m.and_then(|m| m.p99_us),
                heartbeat_age: m.and_then(|m| m.heartbeat_age),
                breaker: breaker.map_or("-", |(b, _)| b.as_str()).into(),
                breaker_cooldown: breaker.and_then(|(_, left)| left).map(ceil_seconds),
                stale: live.iter().any(|i| i.stale),
                retry_in: service
                    .instances
                    .iter()
                    .filter_map(|i| retry_in(i, clock))
                    .min(),
                version: live.iter().find_map(|i| i.version.clone()),
                rate_history: m
                    .map(|m| m.rate_history.iter().copied().collect())
                    .unwrap_or_default(),
                tasks: m.map(task_views).unwrap_or_default(),
                depends_on: dependency_views(&service.spec.depends_on),
                calls: service.spec.calls.clone(),
                waiting_on: service.waiting_on.clone(),
                exits: exit_views(service, now),
                runs: run_views(service),
                instances: replica_views(service, clock, &metrics),
                backlog: m
                    .map(|m| backlog_view(&m.backlog, &service.spec))
                    .unwrap_or_default(),
            }
        })
        .collect();
    ConsoleView {
        stack: registry.stack_name.clone(),
        uptime: whole_seconds(started.elapsed()),
        attached: None,
        gateway: None,
        gateway_taken: None,
        console_cpu: tenths(own.cpu_percent),
        console_rss: own.rss_bytes,
        services,
        calls: Vec::new(),
        routes: Vec::new(),
    }
}

fn task_views(m: &metrics::ServiceMetrics) -> Vec<TaskView> {
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
}

fn dependency_views(depends_on: &[crate::stack::Dependency]) -> Vec<DependencyView> {
    depends_on
        .iter()
        .map(|d| DependencyView {
            name: d.name.clone(),
            condition: match d.condition {
                Condition::Started => "started",
                Condition::Ready => "ready",
                Condition::Completed => "completed",
            }
            .to_string(),
        })
        .collect()
}

fn exit_views(service: &registry::Service, now: SystemTime) -> Vec<ExitView> {
    service
        .exits
        .iter()
        .rev()
        .map(|exit| ExitView {
            ago: whole_seconds(now.duration_since(exit.at).unwrap_or_default()),
            replica: exit.replica,
            status: exit.to_string(),
        })
        .collect()
}

fn run_views(service: &registry::Service) -> Vec<RunView> {
    service
        .runs
        .iter()
        .rev()
        .map(|run| RunView {
            run: run.run,
            params: run.params.clone(),
            duration: run.duration,
            outcome: run.result.clone(),
        })
        .collect()
}

fn replica_views(
    service: &registry::Service,
    clock: Instant,
    metrics: &metrics::Metrics,
) -> Vec<ReplicaView> {
    service
        .instances
        .iter()
        .map(|i| ReplicaView {
            replica: i.id.replica,
            state: i.state,
            pid: i.pid.filter(|_| i.state.has_process()),
            uptime: i.uptime().map(whole_seconds),
            restarts: i.restarts,
            cpu: tenths(i.cpu_percent),
            rss: i.rss_bytes,
            stale: i.stale && i.state.has_process(),
            retry_in: retry_in(i, clock),
            backlog: metrics
                .replica_backlog(i.id)
                .filter(|_| i.handle.is_some())
                .map(replica_backlog_view)
                .unwrap_or_default(),
        })
        .collect()
}

fn replica_backlog_view(backlog: crate::monitor::backlog::ReplicaBacklog) -> ReplicaBacklogView {
    ReplicaBacklogView {
        waiting: backlog.waiting,
        published: backlog.published,
        oldest_age: backlog.oldest_age,
    }
}

/// The alert window growth is judged over when the stack sets none: the table still says how
/// fast a growing backlog grows.
const DEFAULT_GROW_WINDOW: Duration = Duration::from_secs(10);

fn backlog_view(
    backlog: &crate::monitor::backlog::Backlog,
    spec: &crate::stack::ServiceSpec,
) -> BacklogView {
    let window = spec.backlog.grow_window.unwrap_or(DEFAULT_GROW_WINDOW);
    BacklogView {
        waiting: backlog.waiting,
        published: backlog.published,
        oldest_age: backlog.oldest_age,
        trend: backlog.trend().as_str().to_string(),
        growth_per_s: backlog
            .growth(window, metrics::SAMPLE_EVERY)
            .map(hundredths),
        autoscale: spec.autoscale.map(|a| (a.min, a.max)),
    }
}

/// How long until a failed instance is tried again, when it will be.
fn retry_in(instance: &crate::registry::Instance, now: Instant) -> Option<Duration> {
    (instance.state == crate::registry::InstanceState::Failed)
        .then_some(instance.retry_at)
        .flatten()
        .map(|at| ceil_seconds(at.saturating_duration_since(now)))
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

impl From<&crate::router::trace::Hop> for HopView {
    fn from(hop: &crate::router::trace::Hop) -> Self {
        HopView {
            at_ms: millis::since_epoch(hop.at),
            trace: hop.trace,
            from: hop.from.to_string(),
            to: hop.to.to_string(),
            method: hop.method.to_string(),
            latency_us: u64::try_from(hop.latency.as_micros()).unwrap_or(u64::MAX),
            error: hop.error.map(str::to_string),
        }
    }
}

impl From<&LogLine> for LogView {
    fn from(line: &LogLine) -> Self {
        LogView {
            seq: line.seq,
            at: line.at,
            service: line.service.to_string(),
            replica: line.replica,
            console: matches!(line.stream, Stream::Console | Stream::Dropped),
            stderr: line.stream == Stream::Stderr,
            text: line.text.clone(),
        }
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
