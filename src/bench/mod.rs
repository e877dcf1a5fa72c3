//! `switchboard bench`: measurements on this machine, with real processes under a real
//! supervisor: crash-to-ready restart latency, hang-detection delay, the console's CPU with a
//! stack, render time, routed request/response against this machine's pipe baselines
//! ([`routing`]), pub/sub fan-out (`fanout`), and N idle services for N = 10, 100, 500, 1,000
//! (`scale`), what an attached console costs and how fresh it is ([`attach`]), what two
//! services flooding their logs cost routing and the gateway (`noisy`), how fast autoscaling
//! stops a growing backlog (`backlog`), whether a routed call costs more with more services
//! (`growth`), and a call to a service on another host against bare NATS (`hosts`).

pub mod attach;
mod backlog;
mod callgrind;
pub mod check;
mod cpu;
mod fanout;
pub mod gateway;
mod growth;
mod hosts;
mod http_load;
mod noisy;
pub mod pipes;
pub mod routing;
mod scale;
pub mod spread_hub;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::{
    event::{Event, EventKind},
    registry::InstanceState,
    stack::{self, Stack},
    supervisor::{Supervisor, SupervisorOptions},
};

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub detail: String,
}

/// Which measurements to run.
#[derive(Debug, Clone, Copy)]
pub struct Selection {
    pub restart: bool,
    pub hang: bool,
    pub idle: bool,
    pub render: bool,
    pub routing: bool,
    pub fanout: bool,
    pub gateway: bool,
    pub scale: bool,
    pub attach: bool,
    pub noisy: bool,
    pub backlog: bool,
    pub growth: bool,
    pub hosts: bool,
    /// What sends the gateway's HTTP load, over how many connections.
    pub http_load: gateway::LoadClient,
    /// Measure `scale` and `growth` at this many services only, instead of each of their sizes.
    pub size: Option<usize>,
}

impl Selection {
    pub const NAMES: &[&str] = &[
        "restart", "hang", "idle", "render", "routing", "fanout", "gateway", "scale", "attach",
        "noisy", "backlog", "growth", "hosts",
    ];

    /// The measurements named in `only` (all of them when it is empty), or the unknown name.
    pub fn from_names(only: &[String]) -> Result<Selection, String> {
        if let Some(unknown) = only
            .iter()
            .find(|o| !Selection::NAMES.contains(&o.as_str()))
        {
            return Err(unknown.clone());
        }
        let wants = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
        Ok(Selection {
            restart: wants("restart"),
            hang: wants("hang"),
            idle: wants("idle"),
            render: wants("render"),
            routing: wants("routing"),
            fanout: wants("fanout"),
            gateway: wants("gateway"),
            scale: wants("scale"),
            attach: wants("attach"),
            noisy: wants("noisy"),
            backlog: wants("backlog"),
            growth: wants("growth"),
            hosts: wants("hosts"),
            http_load: gateway::LoadClient::default(),
            size: None,
        })
    }
}

pub async fn run(
    stack_file: Option<&std::path::Path>,
    selection: Selection,
    options: SupervisorOptions,
    rounds: usize,
    idle_for: Duration,
) -> Vec<Figure> {
    let mut figures = Vec::new();
    if selection.restart {
        figures.extend(restart_latency(&options, rounds).await);
    }
    if selection.hang {
        figures.extend(hang_detection(&options, rounds.min(10)).await);
    }
    if selection.idle {
        figures.extend(idle_cpu(stack_file, &options, idle_for).await);
    }
    if selection.render {
        figures.extend(render_time(500));
    }
    if selection.routing {
        figures.extend(routing::run(&options, 1).await);
    }
    if selection.fanout {
        figures.extend(fanout::run(&options, 1).await);
    }
    if selection.gateway {
        figures.extend(gateway::run(&options, selection.http_load).await);
    }
    if selection.scale {
        figures.extend(
            scale::run(
                &options,
                selection.size.as_slice(),
                idle_for.min(Duration::from_secs(5)),
            )
            .await,
        );
    }
    if selection.attach {
        figures.extend(attach::run(&options, idle_for).await);
    }
    if selection.noisy {
        figures.extend(noisy::run(&options, selection.http_load).await);
    }
    if selection.backlog {
        figures.extend(backlog::run(&options).await);
    }
    if selection.growth {
        figures.extend(growth::run(&options, selection.size.as_slice()).await);
    }
    if selection.hosts {
        figures.extend(hosts::run(&options).await);
    }
    figures
}

fn bench_stack(toml: &str) -> Option<(Stack, PathBuf)> {
    let dir = std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("stack.toml");
    match stack::parse(toml, &path) {
        Ok(stack) => Some((stack, dir)),
        Err(diagnostics) => {
            for d in diagnostics {
                eprintln!("{d}");
            }
            None
        }
    }
}

/// A supervisor running a stack made for one measurement, in a temporary directory. Started
/// without its services: subscribe to what the measurement watches, then `begin`.
pub(crate) struct BenchStack {
    pub supervisor: Supervisor,
    task: tokio::task::JoinHandle<crate::supervisor::ShutdownReport>,
    dir: PathBuf,
}

impl BenchStack {
    pub fn start(toml: &str, options: &SupervisorOptions) -> Option<BenchStack> {
        let (stack, dir) = bench_stack(toml)?;
        let (supervisor, task) = Supervisor::start(stack, options.clone()).ok()?;
        Some(BenchStack {
            supervisor,
            task,
            dir,
        })
    }

    /// Waits until every service of the stack has a ready instance.
    pub async fn until_ready(&self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            let ready = crate::registry::read(self.supervisor.registry())
                .services
                .iter()
                .all(|s| s.ready_instances() > 0);
            if ready {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    /// The pids of `service`'s running instances.
    pub fn pids(&self, service: &str) -> Vec<u32> {
        let registry = crate::registry::read(self.supervisor.registry());
        registry
            .services
            .iter()
            .filter(|s| s.spec.name == service)
            .flat_map(|s| s.instances.iter().filter_map(|i| i.pid))
            .collect()
    }

    /// Stops everything and removes the directory; returns when the supervisor had ended.
    pub async fn finish_at(self) -> std::time::SystemTime {
        self.supervisor.shutdown().await;
        let _ = self.task.await;
        let ended = std::time::SystemTime::now();
        let _ = std::fs::remove_dir_all(self.dir);
        ended
    }

    /// Stops everything and removes the directory.
    pub async fn finish(self) {
        self.supervisor.shutdown().await;
        let _ = self.task.await;
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

async fn next(
    events: &mut broadcast::Receiver<Event>,
    limit: Duration,
    wanted: impl Fn(&Event) -> bool,
) -> Option<Event> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) if wanted(&event) => return Some(event),
            Ok(Ok(_) | Err(broadcast::error::RecvError::Lagged(_))) => {}
            _ => return None,
        }
    }
}

/// The median of `values`, NaNs (measurements that could not be made) left out; NaN when none
/// is left.
pub(super) fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().filter(|v| !v.is_nan()).collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// From a crash (the exit reaped) to the replacement's Ready frame, minus the configured
/// backoff (1 ms here): the supervisor's own overhead plus process start-up.
async fn restart_latency(options: &SupervisorOptions, rounds: usize) -> Vec<Figure> {
    let toml = r#"
        name = "bench-restart"
        [services.crasher]
        builtin = "probe"
        env = { PROBE_CRASH_AFTER_MS = "20" }
        backoff = { initial = "1ms", max = "1ms", multiplier = 1.0, jitter = 0.0 }
        restart_limit = { count = 100000, window = "1s" }
        "#;
    let Some(bench) = BenchStack::start(toml, options) else {
        return Vec::new();
    };
    let mut events = bench.supervisor.events().subscribe();
    bench.supervisor.begin().await;
    let ready = |e: &Event| {
        matches!(
            e.kind,
            EventKind::State {
                to: InstanceState::Ready,
                ..
            }
        )
    };
    let mut samples = Vec::new();
    if next(&mut events, Duration::from_secs(10), ready)
        .await
        .is_some()
    {
        for _ in 0..rounds {
            let Some(_) = next(&mut events, Duration::from_secs(10), |e| {
                matches!(e.kind, EventKind::Exited { .. })
            })
            .await
            else {
                break;
            };
            let crashed = Instant::now();
            if next(&mut events, Duration::from_secs(10), ready)
                .await
                .is_none()
            {
                break;
            }
            let took = crashed.elapsed().as_secs_f64() * 1000.0 - 1.0;
            samples.push(took.max(0.0));
        }
    }
    bench.finish().await;
    samples.sort_by(f64::total_cmp);
    vec![
        Figure {
            name: "crash → ready, p50 (beyond the 1 ms backoff)".into(),
            value: percentile(&samples, 0.5),
            unit: "ms".into(),
            detail: format!("{} restarts of a Rust probe service", samples.len()),
        },
        Figure {
            name: "crash → ready, p99".into(),
            value: percentile(&samples, 0.99),
            unit: "ms".into(),
            detail: String::new(),
        },
    ]
}

/// How long after its heartbeat timeout a frozen service is declared hung.
async fn hang_detection(options: &SupervisorOptions, rounds: usize) -> Vec<Figure> {
    const TIMEOUT_MS: f64 = 200.0;
    let toml = r#"
        name = "bench-hang"
        [services.frozen]
        builtin = "probe"
        env = { PROBE_HANG_AFTER_MS = "50" }
        heartbeat_timeout = "200ms"
        backoff = { initial = "1ms", max = "1ms", multiplier = 1.0, jitter = 0.0 }
        restart_limit = { count = 100000, window = "1s" }
        "#;
    let Some(bench) = BenchStack::start(toml, options) else {
        return Vec::new();
    };
    let mut events = bench.supervisor.events().subscribe();
    let mut logs = bench.supervisor.logs().subscribe();
    bench.supervisor.begin().await;
    let mut samples = Vec::new();
    for _ in 0..rounds {
        // The probe logs this line just before it freezes: its arrival is the hang's start.
        let froze = loop {
            match tokio::time::timeout(Duration::from_secs(10), logs.recv()).await {
                Ok(Ok(line)) if line.text.contains("hanging on purpose") => break Some(line.at),
                Ok(Ok(_) | Err(broadcast::error::RecvError::Lagged(_))) => {}
                _ => break None,
            }
        };
        let Some(froze) = froze else { break };
        let hung = |e: &Event| matches!(e.kind, EventKind::HangDetected { .. });
        let Some(event) = next(&mut events, Duration::from_secs(10), hung).await else {
            break;
        };
        let waited = event.at.duration_since(froze).unwrap_or_default();
        samples.push(waited.as_secs_f64() * 1000.0 - TIMEOUT_MS);
    }
    bench.finish().await;
    samples.sort_by(f64::total_cmp);
    vec![
        Figure {
            name: "hang detected after timeout, p50".into(),
            value: percentile(&samples, 0.5),
            unit: "ms".into(),
            detail: format!(
                "{} hangs, timed from the freeze; timeout 200 ms, heartbeat every 40 ms, checks every 20 ms",
                samples.len()
            ),
        },
        Figure {
            name: "hang detected after timeout, max".into(),
            value: samples.last().copied().unwrap_or(f64::NAN),
            unit: "ms".into(),
            detail: "target: at most one heartbeat period (40 ms)".into(),
        },
    ]
}

/// The console's CPU (percent of one core) while it runs the demo stack.
async fn idle_cpu(
    stack_file: Option<&std::path::Path>,
    options: &SupervisorOptions,
    duration: Duration,
) -> Vec<Figure> {
    let loaded = match stack_file {
        Some(path) => stack::load(path),
        None => stack::demo(),
    };
    let Ok(stack) = loaded else {
        return Vec::new();
    };
    let label =
        stack_file.map_or_else(|| "the demo stack".to_string(), |p| p.display().to_string());
    let Ok((supervisor, task)) = Supervisor::start(stack, options.clone()) else {
        return Vec::new();
    };
    supervisor.begin().await;
    // Let everything start and settle before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = own_cpu_seconds();
    let start = Instant::now();
    tokio::time::sleep(duration).await;
    let used = own_cpu_seconds() - before;
    let percent = used / start.elapsed().as_secs_f64() * 100.0;
    let rss = own_rss_bytes();
    supervisor.shutdown().await;
    let _ = task.await;
    vec![
        Figure {
            name: format!("console CPU, {label}"),
            value: percent,
            unit: "% of a core".into(),
            detail: format!("over {} s", duration.as_secs()),
        },
        Figure {
            name: format!("console RSS, {label}"),
            value: rss as f64 / (1024.0 * 1024.0),
            unit: "MiB".into(),
            detail: String::new(),
        },
    ]
}

/// User + system CPU time of this process, from /proc/self/stat.
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds_in("/proc/self/stat")
}

/// CPU time of the calling thread (all of it, since it started).
pub fn thread_cpu_seconds() -> f64 {
    cpu_seconds_in("/proc/thread-self/stat")
}

/// CPU time of this process's threads named `name` (as `top -H` shows them).
pub fn named_threads_cpu_seconds(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
        .map(|task| cpu_seconds_in(task.path().join("stat")))
        .sum()
}

/// User + system CPU time from a `stat` file of /proc.
fn cpu_seconds_in(path: impl AsRef<std::path::Path>) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 0; utime and stime are fields 11 and 12.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

pub fn own_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

pub fn print_table(figures: &[Figure]) {
    println!(
        "{:<48} {:>10}  {:<12} detail",
        "measurement", "value", "unit"
    );
    for f in figures {
        println!(
            "{:<48} {:>10.2}  {:<12} {}",
            f.name, f.value, f.unit, f.detail
        );
    }
}

/// Time to render one frame of the console with `services` rows, on an in-memory 200×60
/// terminal (the diffing and writing to a real terminal come on top).
fn render_time(services: usize) -> Vec<Figure> {
    use ratatui::{Terminal, backend::TestBackend};

    use crate::{
        api::ConsoleView,
        tui::{render, state::UiState, theme::Theme},
    };

    let row = |i: usize| crate::api::ServiceRow {
        ready: 1,
        pid: Some(10_000 + i as u32),
        uptime: Some(Duration::from_secs(600)),
        restarts: (i % 3) as u32,
        cpu: 0.3,
        rss: 8 << 20,
        request_rate: (i % 50) as f64,
        p99_us: Some(512),
        heartbeat_age: Some(Duration::from_millis(200)),
        version: Some("1.0.0".into()),
        rate_history: (0..120).map(|t| ((t * 7 + i) % 40) as u64).collect(),
        ..crate::api::ServiceRow::new(&format!("service-{i:03}"), InstanceState::Ready)
    };
    let view = ConsoleView {
        stack: "bench".into(),
        uptime: Duration::from_secs(3600),
        gateway: None,
        console_cpu: 1.0,
        console_rss: 40 << 20,
        services: (0..services).map(row).collect(),
        ..ConsoleView::default()
    };
    let logs: Vec<crate::api::LogView> = (0..2000)
        .map(|i| crate::api::LogView {
            seq: i,
            at: std::time::SystemTime::UNIX_EPOCH,
            service: format!("service-{:03}", i % 500),
            replica: 0,
            console: false,
            stderr: false,
            text: format!("handled request {i} in 120µs"),
        })
        .collect();
    let state = UiState::new();
    let theme = Theme::from_env();
    let Ok(mut terminal) = Terminal::new(TestBackend::new(200, 60));
    let frames = 200;
    let start = Instant::now();
    for _ in 0..frames {
        let _ = terminal.draw(|frame| {
            render::draw(frame, &view, &state, &logs, &theme);
        });
    }
    let per_frame = start.elapsed().as_secs_f64() * 1000.0 / f64::from(frames);
    vec![Figure {
        name: format!("render one frame, {services} services"),
        value: per_frame,
        unit: "ms".into(),
        detail: "200x60 terminal, 2000 log lines, mean of 200 frames".into(),
    }]
}
