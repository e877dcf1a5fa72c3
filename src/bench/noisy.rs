//! `switchboard bench --only noisy`: what two services flooding their logs cost everything
//! else. One stack runs the shop's user service behind the gateway, a probe with the bench
//! client calling it, and two plain programs that write `yes` lines to stdout as fast as they
//! can. Each round measures, quiet (the flooders stopped) and noisy (running), in alternating
//! order:
//!
//! - the routed round trip with one request in flight (bench client → console → probe), p50;
//! - `GET /users/{id}` through the gateway, requests/s ([`super::gateway`]'s load client);
//! - the console's CPU over the phase, the load client's thread taken out (it runs in this
//!   process), and the log-ingest thread's share of it.
//!
//! A task on the console's runtime takes every log line kept, as the console's log pane does.
//!
//! Target (issue 21): noisy within 1.25× of quiet for both, and the console under one core.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use hyper::Method;

use super::{
    BenchStack, Figure,
    gateway::{self, LoadClient, Shot},
    named_threads_cpu_seconds, own_cpu_seconds,
    routing::{self, Routed},
};
use crate::{gateway::Gateway, registry, supervisor::Command, supervisor::SupervisorOptions};

/// Quiet/noisy pairs, in alternating order: the machine drifts between runs by more than the
/// differences measured, and a pair measured back to back shares the drift.
const ROUNDS: usize = 5;
/// Routed requests per phase, one in flight.
const ROUTED: usize = 10_000;
/// How long the flooders run before a noisy phase is measured: their pipes fill, the budget
/// empties, and the steady state is what is measured.
const SETTLE: Duration = Duration::from_millis(500);
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

/// One phase's figures.
#[derive(Debug, Clone, Copy)]
struct Phase {
    routed: Routed,
    get_rate: f64,
    get_p50_us: f64,
    /// The console's CPU, percent of one core, without the load client's thread.
    console_cpu: f64,
    /// The log-ingest thread's CPU, percent of one core.
    ingest_cpu: f64,
    dropped_lines: f64,
}

pub async fn run(options: &SupervisorOptions, client: LoadClient) -> Vec<Figure> {
    let mut options = options.clone();
    options.log_files = true;
    let Some(stack) = BenchStack::start(STACK, &options) else {
        return Vec::new();
    };
    // A console always watches the log: its log pane, headless output or an attached console
    // takes every line kept, on the routing thread.
    let mut feed = stack.supervisor.logs.subscribe();
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
    let user = gateway::once(
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
    let json = gateway::once(address, Method::GET, &path, "").await?;
    let get = Shot {
        method: Method::GET,
        path,
        body: None,
        expect: Some(json),
    };
    floods(stack, false).await?;
    let mut quiet = Vec::new();
    let mut noisy = Vec::new();
    for round in 0..ROUNDS {
        for flooding in [round % 2 == 1, round % 2 == 0] {
            floods(stack, flooding).await?;
            let phase = phase(stack, address, client, get.clone()).await?;
            if flooding {
                noisy.push(phase);
            } else {
                quiet.push(phase);
            }
        }
    }
    floods(stack, false).await?;
    Ok(figures(&quiet, &noisy, client))
}

/// Starts or stops the flooders, and waits until they run (and have run for [`SETTLE`]) or
/// are gone.
async fn floods(stack: &BenchStack, on: bool) -> Result<(), String> {
    for name in FLOODERS {
        let command = if on {
            Command::Start(name.into())
        } else {
            Command::Stop(name.into())
        };
        // Starting what runs, or stopping what is stopped, is refused: that is the state wanted.
        let _ = stack.supervisor.command(command).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let settled = {
            let registry = registry::read(&stack.supervisor.registry);
            FLOODERS.iter().all(|name| {
                registry.service(name).is_some_and(|s| {
                    if on {
                        s.ready_instances() > 0
                    } else {
                        s.instances.iter().all(|i| !i.state.has_process())
                    }
                })
            })
        };
        if settled {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the flooders did not {}",
                if on { "start" } else { "stop" }
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if on {
        tokio::time::sleep(SETTLE).await;
    }
    Ok(())
}

async fn phase(
    stack: &BenchStack,
    address: SocketAddr,
    client: LoadClient,
    get: Shot,
) -> Result<Phase, String> {
    let dropped = || -> u64 {
        FLOODERS
            .iter()
            .map(|name| stack.supervisor.logs.dropped_lines(name))
            .sum()
    };
    let (cpu, ingest, dropped_before, start) = (
        own_cpu_seconds(),
        named_threads_cpu_seconds("log-ingest"),
        dropped(),
        Instant::now(),
    );
    let routed = routing::routed(stack, 1, ROUTED)
        .await
        .ok_or("the routed run failed")?;
    let load = gateway::send_load(client, address, get).await;
    if load.errors > 0 {
        return Err(format!("{} GET errors", load.errors));
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Phase {
        routed,
        get_rate: load.rate,
        get_p50_us: load.p50_us,
        console_cpu: (own_cpu_seconds() - cpu - load.client_cpu) / seconds * 100.0,
        ingest_cpu: (named_threads_cpu_seconds("log-ingest") - ingest) / seconds * 100.0,
        dropped_lines: (dropped() - dropped_before) as f64 / seconds,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| !v.is_nan());
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn figures(quiet: &[Phase], noisy: &[Phase], client: LoadClient) -> Vec<Figure> {
    let over =
        |phases: &[Phase], pick: fn(&Phase) -> f64| median(phases.iter().map(pick).collect());
    // Each round's noisy ÷ quiet, then their median; listed so the spread shows.
    let ratio = |pick: fn(&Phase) -> f64| {
        let each: Vec<f64> = quiet
            .iter()
            .zip(noisy)
            .map(|(q, n)| pick(n) / pick(q))
            .collect();
        let listed = each
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ");
        (median(each), listed)
    };
    let of = format!("median of {ROUNDS} quiet/noisy pairs");
    let (p50_ratio, p50_each) = ratio(|p| p.routed.p50_us);
    let (rate_ratio, rate_each) = ratio(|p| p.get_rate);
    let figure = |name: &str, value: f64, unit: &str, detail: String| Figure {
        name: name.into(),
        value,
        unit: unit.into(),
        detail,
    };
    vec![
        figure(
            "routed round trip, 1 in flight, p50, quiet",
            over(quiet, |p| p.routed.p50_us),
            "µs",
            format!("{ROUTED} requests per phase; {of}"),
        ),
        figure(
            "  the same, two services flooding stdout",
            over(noisy, |p| p.routed.p50_us),
            "µs",
            format!(
                "{p50_ratio:.2}× quiet ({p50_each}); target ≤ 1.25×; {:.0} k flood lines/s dropped (2 × 2,000 kept)",
                over(noisy, |p| p.dropped_lines) / 1e3
            ),
        ),
        figure(
            "GET /users/{id} through the gateway, quiet",
            over(quiet, |p| p.get_rate),
            "req/s",
            format!(
                "p50 {:.0} µs; {} keep-alive connections",
                over(quiet, |p| p.get_p50_us),
                client.connections
            ),
        ),
        figure(
            "  the same, two services flooding stdout",
            over(noisy, |p| p.get_rate),
            "req/s",
            format!(
                "{rate_ratio:.2}× quiet ({rate_each}); target ≥ 0.8× (within 1.25×); p50 {:.0} µs",
                over(noisy, |p| p.get_p50_us)
            ),
        ),
        figure(
            "console CPU, quiet",
            over(quiet, |p| p.console_cpu),
            "% of a core",
            "over each phase (routed run, then HTTP load), the load client's thread taken out"
                .into(),
        ),
        figure(
            "console CPU, two services flooding stdout",
            over(noisy, |p| p.console_cpu),
            "% of a core",
            format!(
                "target < 100 %; the log-ingest thread {:.1} % of it",
                over(noisy, |p| p.ingest_cpu)
            ),
        ),
    ]
}
