//! `switchboard bench --only noisy`: what two services flooding their logs cost everything
//! else. One stack runs the shop's user service behind the gateway, a probe with the bench
//! client calling it, and two plain programs that write `yes` lines to stdout as fast as they
//! can. Quiet (the flooders paused) and noisy (running) alternate, the order swapped each pair:
//!
//! - the routed round trip with one request in flight (bench client → console → probe), p50,
//!   in [`ROUTED_PAIRS`] pairs of short runs;
//! - `GET /users/{id}` through the gateway, requests/s ([`super::gateway`]'s load client), in
//!   [`GET_PAIRS`] pairs;
//! - the console's CPU over all quiet and all noisy runs, the load client's thread taken out
//!   (it runs in this process), and the log-ingest thread's share of it.
//!
//! The flooders are paused with SIGSTOP to their process groups, not stopped: quiet and noisy
//! then alternate every few tenths of a second, and a pair shares the state of this shared
//! machine, whose load moved single runs by more than 2× either way when pairs were seconds
//! apart. A task on the console's runtime takes every log line kept, as the console's log pane
//! does.
//!
//! Target (issue 21): noisy within 1.25× of quiet for both, and the console under one core.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use hyper::Method;

use super::{
    BenchStack, Figure,
    gateway::LoadClient,
    http_load::{self, Shot},
    median, named_threads_cpu_seconds, own_cpu_seconds, routing,
};
use crate::{
    gateway::Gateway, registry, supervisor::SupervisorOptions, supervisor::spawn::signal_group,
};

/// Pairs of routed runs, and requests per run (one in flight).
const ROUTED_PAIRS: usize = 21;
const ROUTED: usize = 2_000;
/// Pairs of GET loads (each 1.8 s).
const GET_PAIRS: usize = 11;
/// How long the flooders run before a noisy run starts: the budget left from the pause is
/// spent, and the steady state is what is measured.
const SETTLE: Duration = Duration::from_millis(150);
const FLOODERS: [&str; 2] = ["flood-a", "flood-b"];

/// Each flooder stops (killing its `yes`) when stdin closes: a stop is a clean one.
const STACK: &str = r#"
name = "bench-noisy"
[gateway]
request_timeout = "10s"
routes = [{ route = "GET /users/{id}", call = "user.get" }]
[services.user]
builtin = "user"
[services.echo]
builtin = "probe"
[services.client]
builtin = "bench-client"
calls = ["echo"]
[services.flood-a]
command = "sh"
args = ["-c", "yes '2026-12-06T12:00:00.000Z INFO flood-a: handled GET /things/12345 in 1.2ms status=200' & y=$!; read x; kill $y"]
shutdown_grace = "1s"
[services.flood-b]
command = "sh"
args = ["-c", "yes '2026-12-06T12:00:00.000Z INFO flood-b: handled GET /things/12345 in 1.2ms status=200' & y=$!; read x; kill $y"]
shutdown_grace = "1s"
"#;

/// Time and CPU spent in quiet or in noisy runs.
#[derive(Debug, Default, Clone, Copy)]
struct Spent {
    seconds: f64,
    /// The console's CPU seconds, without the load client's thread.
    cpu: f64,
    ingest_cpu: f64,
    dropped: u64,
}

/// Every run of one kind (quiet or noisy).
#[derive(Debug, Default)]
struct Runs {
    routed_p50_us: Vec<f64>,
    get_rate: Vec<f64>,
    get_p50_us: Vec<f64>,
    spent: Spent,
}

pub async fn run(options: &SupervisorOptions, client: LoadClient) -> Vec<Figure> {
    let mut options = options.clone();
    options.log_files = true;
    let Some(stack) = BenchStack::start(STACK, &options) else {
        return Vec::new();
    };
    // A console always watches the log: its log pane, headless output or an attached console
    // takes every line kept, on the routing thread.
    let mut feed = stack.supervisor.logs().subscribe();
    let watcher = tokio::spawn(async move {
        while let Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) =
            feed.recv().await
        {}
    });
    stack.supervisor.begin().await;
    if !stack.until_ready(Duration::from_secs(15)).await {
        eprintln!("bench: noisy: the stack did not become ready");
        stack.finish().await;
        return Vec::new();
    }
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let gateway = match Gateway::start_at(&stack.supervisor, loopback).await {
        Ok(gateway) => gateway,
        Err(err) => {
            eprintln!("bench: noisy: {err}");
            stack.finish().await;
            return Vec::new();
        }
    };
    let figures = measure(&stack, gateway.address(), client).await;
    // Running again, so that they stop when told.
    let _ = floods(&stack, true).await;
    gateway.stop().await;
    stack.finish().await;
    watcher.abort();
    figures.unwrap_or_else(|why| {
        eprintln!("bench: noisy: {why}");
        Vec::new()
    })
}

async fn measure(
    stack: &BenchStack,
    address: SocketAddr,
    client: LoadClient,
) -> Result<Vec<Figure>, String> {
    let user = http_load::once(
        address,
        Method::POST,
        "/call/user/create",
        r#"{"name": "Bench", "email": "bench@example.com"}"#,
    )
    .await?;
    let id = serde_json::from_slice::<serde_json::Value>(&user)
        .ok()
        .and_then(|v| v["id"].as_i64())
        .ok_or("no user id in the answer to user.create")?;
    let path = format!("/users/{id}");
    let json = http_load::once(address, Method::GET, &path, "").await?;
    let get = Shot {
        method: Method::GET,
        path,
        body: None,
        expect: Some(json),
    };
    let mut quiet = Runs::default();
    let mut noisy = Runs::default();
    for pair in 0..ROUTED_PAIRS {
        for flooding in [pair % 2 == 1, pair % 2 == 0] {
            let runs = if flooding { &mut noisy } else { &mut quiet };
            floods(stack, flooding).await?;
            let (routed, spent) = measured(stack, routing::routed(stack, 1, ROUTED)).await;
            let routed = routed.ok_or("the routed run failed")?;
            runs.routed_p50_us.push(routed.p50_us);
            runs.add(spent);
        }
    }
    for pair in 0..GET_PAIRS {
        for flooding in [pair % 2 == 1, pair % 2 == 0] {
            let runs = if flooding { &mut noisy } else { &mut quiet };
            floods(stack, flooding).await?;
            let (load, mut spent) =
                measured(stack, http_load::send_load(client, address, get.clone())).await;
            if load.errors > 0 {
                return Err(format!("{} GET errors", load.errors));
            }
            spent.cpu -= load.client_cpu;
            runs.get_rate.push(load.rate);
            runs.get_p50_us.push(load.p50_us);
            runs.add(spent);
        }
    }
    Ok(figures(&quiet, &noisy, client))
}

impl Runs {
    fn add(&mut self, spent: Spent) {
        self.spent.seconds += spent.seconds;
        self.spent.cpu += spent.cpu;
        self.spent.ingest_cpu += spent.ingest_cpu;
        self.spent.dropped += spent.dropped;
    }
}

/// What `run` gives, and the time, CPU and dropped lines it took.
async fn measured<T>(stack: &BenchStack, run: impl Future<Output = T>) -> (T, Spent) {
    let dropped = || -> u64 {
        FLOODERS
            .iter()
            .map(|name| stack.supervisor.logs().dropped_lines(name))
            .sum()
    };
    let (cpu, ingest, dropped_before, start) = (
        own_cpu_seconds(),
        named_threads_cpu_seconds("log-ingest"),
        dropped(),
        Instant::now(),
    );
    let out = run.await;
    let spent = Spent {
        seconds: start.elapsed().as_secs_f64(),
        cpu: own_cpu_seconds() - cpu,
        ingest_cpu: named_threads_cpu_seconds("log-ingest") - ingest,
        dropped: dropped() - dropped_before,
    };
    (out, spent)
}

/// Resumes the flooders (and lets them run [`SETTLE`]) or pauses them.
async fn floods(stack: &BenchStack, on: bool) -> Result<(), String> {
    let pids: Vec<u32> = {
        let registry = registry::read(stack.supervisor.registry());
        FLOODERS
            .iter()
            .filter_map(|name| registry.service(name))
            .flat_map(|s| s.instances.iter().filter_map(|i| i.pid))
            .collect()
    };
    if pids.len() != FLOODERS.len() {
        return Err("a flooder is not running".into());
    }
    for pid in pids {
        // Each flooder leads its own process group: its `yes` stops and goes on with it.
        signal_group(pid, if on { libc::SIGCONT } else { libc::SIGSTOP });
    }
    if on {
        tokio::time::sleep(SETTLE).await;
    }
    Ok(())
}

/// Each pair's noisy ÷ quiet, their median, and their spread (lowest and highest).
fn ratio(quiet: &[f64], noisy: &[f64]) -> (f64, String) {
    let mut each: Vec<f64> = quiet.iter().zip(noisy).map(|(q, n)| n / q).collect();
    each.sort_by(f64::total_cmp);
    let spread = match (each.first(), each.last()) {
        (Some(low), Some(high)) => format!("pairs {low:.2}–{high:.2}"),
        _ => String::new(),
    };
    (median(each), spread)
}

fn figures(quiet: &Runs, noisy: &Runs, client: LoadClient) -> Vec<Figure> {
    let figure = |name: &str, value: f64, unit: &str, detail: String| Figure {
        name: name.into(),
        value,
        unit: unit.into(),
        detail,
    };
    let percent = |spent: Spent, cpu: f64| cpu / spent.seconds.max(f64::EPSILON) * 100.0;
    let (p50_ratio, p50_spread) = ratio(&quiet.routed_p50_us, &noisy.routed_p50_us);
    let (rate_ratio, rate_spread) = ratio(&quiet.get_rate, &noisy.get_rate);
    vec![
        figure(
            "routed round trip, 1 in flight, p50, quiet",
            median(quiet.routed_p50_us.clone()),
            "µs",
            format!("median of {ROUTED_PAIRS} runs of {ROUTED} requests, alternating with noisy"),
        ),
        figure(
            "  the same, two services flooding stdout",
            median(noisy.routed_p50_us.clone()),
            "µs",
            format!(
                "{p50_ratio:.2}× quiet (median of the pairs' ratios; {p50_spread}); target ≤ 1.25×"
            ),
        ),
        figure(
            "GET /users/{id} through the gateway, quiet",
            median(quiet.get_rate.clone()),
            "req/s",
            format!(
                "p50 {:.0} µs; {} keep-alive connections; median of {GET_PAIRS} runs",
                median(quiet.get_p50_us.clone()),
                client.connections
            ),
        ),
        figure(
            "  the same, two services flooding stdout",
            median(noisy.get_rate.clone()),
            "req/s",
            format!(
                "{rate_ratio:.2}× quiet ({rate_spread}); target ≥ 0.8× (within 1.25×); p50 {:.0} µs",
                median(noisy.get_p50_us.clone())
            ),
        ),
        figure(
            "console CPU, quiet",
            percent(quiet.spent, quiet.spent.cpu),
            "% of a core",
            "over every run (routed, HTTP load), the load client's thread taken out".into(),
        ),
        figure(
            "console CPU, two services flooding stdout",
            percent(noisy.spent, noisy.spent.cpu),
            "% of a core",
            format!(
                "target < 100 %; the log-ingest thread {:.1} % of a core; {:.0} k flood lines/s dropped, 2 × 2,000 kept",
                percent(noisy.spent, noisy.spent.ingest_cpu),
                noisy.spent.dropped as f64 / noisy.spent.seconds.max(f64::EPSILON) / 1e3
            ),
        ),
    ]
}
