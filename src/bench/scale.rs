//! Scale: N idle services under one console, for N = 10, 100, 500 and 1,000. For each N: the time to
//! start all and see every one ready, the console's CPU and RSS while they idle, the time to
//! restart all (a kill of each, restarted by policy, until all are ready again) and the time
//! to stop all. The console here is this process: supervisor and router, without the UI.

use std::time::{Duration, Instant};

use super::{BenchStack, Figure, own_cpu_seconds, own_rss_bytes};
use crate::{
    registry::InstanceState,
    supervisor::{Command, SupervisorOptions},
};

pub const SIZES: [usize; 4] = [10, 100, 500, 1000];
/// Plain programs (`sleep`), as a supervisord user runs them: idle cost and exit lag.
pub const PLAIN_SIZES: [usize; 2] = [100, 500];

/// Measures at each of [`SIZES`] and [`PLAIN_SIZES`], or at `only` services of each kind.
pub async fn run(options: &SupervisorOptions, only: &[usize], idle_for: Duration) -> Vec<Figure> {
    let mut figures = Vec::new();
    for &n in if only.is_empty() { &SIZES[..] } else { only } {
        figures.extend(measure(options, n, idle_for).await);
    }
    for &n in if only.is_empty() {
        &PLAIN_SIZES[..]
    } else {
        only
    } {
        figures.extend(plain(options, n, idle_for).await);
    }
    figures
}

/// N plain programs that nobody watches (no console on screen, no client, no scrape): the
/// console's CPU and RSS while they idle, and how long after the last of them is gone the
/// supervisor has ended.
async fn plain(options: &SupervisorOptions, n: usize, idle_for: Duration) -> Vec<Figure> {
    let mut toml = String::from("name = \"bench-plain\"\n");
    for i in 0..n {
        toml.push_str(&format!(
            "[services.p{i:03}]\ncommand = \"sleep\"\nargs = [\"3600\"]\n"
        ));
    }
    let rss_before = own_rss_bytes();
    let Some(bench) = BenchStack::start(&toml, options) else {
        return Vec::new();
    };
    bench.supervisor.begin().await;
    if !all_ready(&bench, n, Duration::from_secs(60), 0).await {
        eprintln!("scale bench: {n} plain programs did not all run within 60 s");
        bench.finish().await;
        return Vec::new();
    }
    // Past the sampler's last look (`all_ready` reads the registry, not the figures).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu = idle_cpu_percent(idle_for).await;
    let rss = own_rss_bytes();

    let mut events = bench.supervisor.events().subscribe();
    let ended = bench.finish_at().await;
    // The newest events are kept when the stream overflows: the last exit is among them.
    let (mut exits, mut last) = (0, None);
    loop {
        match events.try_recv() {
            Ok(event) => {
                if matches!(event.kind, crate::event::EventKind::Exited { .. }) {
                    exits += 1;
                    last = last.max(Some(event.at));
                }
            }
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    let lag = last.and_then(|at| ended.duration_since(at).ok());
    let mut figures = vec![
        Figure {
            name: format!("{n} plain programs, nobody looking: console CPU"),
            value: cpu,
            unit: "% of a core".into(),
            detail: format!(
                "over {} s{}",
                idle_for.as_secs(),
                if n == 100 {
                    "; target: at most 0.07 % (supervisord)"
                } else {
                    ""
                }
            ),
        },
        Figure {
            name: format!("{n} plain programs: console RSS"),
            value: rss as f64 / (1024.0 * 1024.0),
            unit: "MiB".into(),
            detail: format!(
                "{:.1} MiB before{}",
                rss_before as f64 / (1024.0 * 1024.0),
                if n == 500 {
                    "; target: at most 40 MiB"
                } else {
                    ""
                }
            ),
        },
    ];
    if let Some(lag) = lag {
        figures.push(Figure {
            name: format!("{n} plain programs: supervisor ended after the last exit"),
            value: lag.as_secs_f64() * 1000.0,
            unit: "ms".into(),
            detail: format!(
                "{exits} exits seen (the oldest may have scrolled off){}",
                if n == 500 {
                    "; target: within 100 ms"
                } else {
                    ""
                }
            ),
        });
    }
    figures
}

fn stack(n: usize) -> String {
    let mut toml = String::from("name = \"bench-scale\"\n");
    for i in 0..n {
        toml.push_str(&format!(
            "[services.s{i:03}]\nbuiltin = \"probe\"\nheartbeat_timeout = \"10s\"\nbackoff = {{ initial = \"1ms\", max = \"1ms\", jitter = 0.0 }}\nrestart_limit = {{ count = 100, window = \"60s\" }}\n"
        ));
    }
    toml
}

async fn all_ready(bench: &BenchStack, n: usize, limit: Duration, newer_than: u64) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        let ready = {
            let registry = crate::registry::read(bench.supervisor.registry());
            registry
                .services
                .iter()
                .flat_map(|s| s.instances.iter())
                .filter(|i| i.state == InstanceState::Ready && i.id.generation >= newer_than)
                .count()
        };
        if ready == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

fn max_generation(bench: &BenchStack) -> u64 {
    let registry = crate::registry::read(bench.supervisor.registry());
    registry
        .services
        .iter()
        .flat_map(|s| s.instances.iter())
        .map(|i| i.id.generation)
        .max()
        .unwrap_or(0)
}

async fn measure(options: &SupervisorOptions, n: usize, idle_for: Duration) -> Vec<Figure> {
    let rss_before = own_rss_bytes();
    let Some(bench) = BenchStack::start(&stack(n), options) else {
        return Vec::new();
    };
    let started = Instant::now();
    bench.supervisor.begin().await;
    if !all_ready(&bench, n, Duration::from_secs(60), 0).await {
        eprintln!("scale bench: {n} services did not all become ready within 60 s");
        bench.finish().await;
        return Vec::new();
    }
    let start_time = started.elapsed();

    tokio::time::sleep(Duration::from_secs(1)).await;
    // Two whole rounds of the CPU and RSS sampler (longer with more services), so the window
    // holds the same share of its work whatever its phase.
    let idle_for = idle_for.min(crate::monitor::resources::pause_for(n) * 2);
    let cpu = idle_cpu_percent(idle_for).await;
    let rss = own_rss_bytes();

    // Restart all: kill every service; the policy restarts each (1 ms backoff).
    let generation = max_generation(&bench) + 1;
    let restarted = Instant::now();
    for i in 0..n {
        let _ = bench
            .supervisor
            .command(Command::Kill(format!("s{i:03}")))
            .await;
    }
    let restart_ok = all_ready(&bench, n, Duration::from_secs(60), generation).await;
    let restart_time = restarted.elapsed();

    let stopping = Instant::now();
    bench.finish().await;
    let stop_time = stopping.elapsed();

    let mut figures = vec![
        Figure {
            name: format!("{n} services: start all, until every one is ready"),
            value: start_time.as_secs_f64() * 1000.0,
            unit: "ms".into(),
            detail: match n {
                500 => "target: under 2.5 s".into(),
                1000 => "target: under 5 s".into(),
                _ => String::new(),
            },
        },
        Figure {
            name: format!("{n} services: console CPU while they idle"),
            value: cpu,
            unit: "% of a core".into(),
            detail: format!(
                "over {} s; hang check every 1 s per service (heartbeat_timeout 10 s), metrics every second, CPU and RSS every max(1 s, N/200 s){}",
                idle_for.as_secs(),
                if n >= 500 { "; target: under 5%" } else { "" }
            ),
        },
        Figure {
            name: format!("{n} services: console RSS"),
            value: rss as f64 / (1024.0 * 1024.0),
            unit: "MiB".into(),
            detail: format!(
                "{:.1} MiB before the stack started{}",
                rss_before as f64 / (1024.0 * 1024.0),
                match n {
                    500 => "; target: under 100 MB",
                    1000 => "; target: under 150 MB",
                    _ => "",
                }
            ),
        },
    ];
    if restart_ok {
        figures.push(Figure {
            name: format!("{n} services: kill all, until every one is ready again"),
            value: restart_time.as_secs_f64() * 1000.0,
            unit: "ms".into(),
            detail: String::new(),
        });
    }
    figures.push(Figure {
        name: format!("{n} services: stop all"),
        value: stop_time.as_secs_f64() * 1000.0,
        unit: "ms".into(),
        detail: "Shutdown frame, drain, exit, reaped".into(),
    });
    figures
}

/// This process's CPU, in percent of one core, over `idle_for` of doing nothing here.
async fn idle_cpu_percent(idle_for: Duration) -> f64 {
    let before = own_cpu_seconds();
    let start = Instant::now();
    tokio::time::sleep(idle_for).await;
    (own_cpu_seconds() - before) / start.elapsed().as_secs_f64() * 100.0
}
