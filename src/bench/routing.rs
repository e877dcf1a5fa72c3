//! Routed request/response through the console, against this machine's baselines measured in
//! the same run: the raw pipe ping-pong, the bare batched hub (blocking threads; its rate with
//! 64 in flight and its round trip with one), a hub of one thread that polls instead of
//! sleeping (the console's design with nothing else in it), and the design Switchboard
//! replaces, a hub over Python `multiprocessing.Queue`.

use std::time::Duration;

use switchboard_protocol::{Body, Envelope, Kind, Status};

use super::{BenchStack, Figure, percentile, pipes};
use crate::{router::GATEWAY, supervisor::SupervisorOptions};

const PYTHON_BASELINE: &str = include_str!("../../scripts/mp_queue_baseline.py");

#[derive(Debug, Clone, Copy, Default)]
struct Routed {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
}

fn figure(name: &str, value: f64, unit: &str, detail: impl Into<String>) -> Figure {
    Figure {
        name: name.into(),
        value,
        unit: unit.into(),
        detail: detail.into(),
    }
}

pub async fn run(options: &SupervisorOptions, scale: usize) -> Vec<Figure> {
    let exe = options.builtin_exe.clone();
    let mut figures = Vec::new();

    let ping = tokio::task::spawn_blocking({
        let exe = exe.clone();
        move || pipes::ping_pong(&exe, 2000 * scale)
    })
    .await;
    let ping_p50 = match ping {
        Ok(Ok(mut times)) => {
            times.sort();
            let us: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e6).collect();
            let p50 = percentile(&us, 0.5);
            figures.push(figure(
                "pipe ping-pong round trip, p50",
                p50,
                "µs",
                "two processes, blocking 64-byte frames",
            ));
            figures.push(figure(
                "pipe ping-pong round trip, p99",
                percentile(&us, 0.99),
                "µs",
                "",
            ));
            p50
        }
        _ => f64::NAN,
    };
    let hub = tokio::task::spawn_blocking({
        let exe = exe.clone();
        move || pipes::batched_hub(&exe, 64, 50_000 * scale)
    })
    .await;
    let hub_rate = match hub {
        Ok(Ok(hub)) => {
            figures.push(figure(
                "bare batched pipe hub, 64 in flight",
                hub.rate,
                "req/s",
                "A → hub → B → hub → A, plain threads",
            ));
            hub.rate
        }
        _ => f64::NAN,
    };
    // The same hub with one frame in flight: the round trip any hub over pipes starts from,
    // four wakeups where the ping-pong has two.
    let hub_one = tokio::task::spawn_blocking({
        let exe = exe.clone();
        move || pipes::batched_hub(&exe, 1, 2000 * scale)
    })
    .await;
    let hub_p50 = match hub_one {
        Ok(Ok(pipes::HubRun { p50: Some(p50), .. })) => {
            let us = p50.as_secs_f64() * 1e6;
            figures.push(figure(
                "bare hub round trip, 1 in flight, p50",
                us,
                "µs",
                format!("{:.2}× the ping-pong", us / ping_p50),
            ));
            us
        }
        _ => f64::NAN,
    };
    // And a hub that polls instead of sleeping, as the console does while messages come: only
    // the two ends are woken, so this is the floor for the console's design.
    let polling = tokio::task::spawn_blocking({
        let exe = exe.clone();
        move || pipes::polling_hub(&exe, 2000 * scale)
    })
    .await;
    let polling_p50 = match polling {
        Ok(Ok(pipes::HubRun { p50: Some(p50), .. })) => {
            let us = p50.as_secs_f64() * 1e6;
            figures.push(figure(
                "polling hub round trip, 1 in flight, p50",
                us,
                "µs",
                format!("{:.2}× the ping-pong", us / ping_p50),
            ));
            us
        }
        _ => f64::NAN,
    };

    let one = routed(options, 1, 2000 * scale).await;
    let many = routed(options, 64, 25_000 * scale).await;
    if let Some(one) = one {
        figures.push(figure(
            "routed round trip, 1 in flight, p50",
            one.p50_us,
            "µs",
            format!(
                "{:.2}× the ping-pong, {:.2}× the bare hub, {:.2}× the polling hub",
                one.p50_us / ping_p50,
                one.p50_us / hub_p50,
                one.p50_us / polling_p50
            ),
        ));
        figures.push(figure(
            "routed round trip, 1 in flight, p99",
            one.p99_us,
            "µs",
            "",
        ));
        figures.push(figure(
            "routed requests/s, 1 in flight",
            one.rate,
            "req/s",
            "",
        ));
    }
    if let Some(many) = many {
        figures.push(figure(
            "routed requests/s, 64 in flight",
            many.rate,
            "req/s",
            format!("{:.2}× the bare hub", many.rate / hub_rate),
        ));
        figures.push(figure(
            "routed round trip, 64 in flight, p50",
            many.p50_us,
            "µs",
            "",
        ));
    }
    for (in_flight, count, routed) in [(1, 1000 * scale, one), (64, 10_000 * scale, many)] {
        match python_baseline(in_flight, count).await {
            Some(python) => {
                let ratio = routed.map_or(String::new(), |r| {
                    format!("routed ÷ python = {:.1}×", r.rate / python.rate)
                });
                figures.push(figure(
                    &format!("python mp.Queue hub, {in_flight} in flight"),
                    python.rate,
                    "req/s",
                    format!("p50 {:.0} µs; {ratio}", python.p50_us),
                ));
            }
            None => figures.push(figure(
                &format!("python mp.Queue hub, {in_flight} in flight"),
                f64::NAN,
                "req/s",
                "python3 not available",
            )),
        }
    }
    figures
}

/// Requests from a bench client service through the console to a probe and back.
async fn routed(options: &SupervisorOptions, in_flight: usize, count: usize) -> Option<Routed> {
    let mut options = options.clone();
    options.log_files = false;
    let bench = BenchStack::start(
        r#"
        name = "bench-routing"
        [services.echo]
        builtin = "probe"
        [services.client]
        builtin = "bench-client"
        calls = ["echo"]
        "#,
        &options,
    )?;
    let supervisor = &bench.supervisor;
    supervisor.begin().await;
    let ready = async {
        for _ in 0..500 {
            let up = {
                let registry = crate::registry::read(&supervisor.registry);
                ["echo", "client"]
                    .iter()
                    .all(|s| registry.service(s).is_some_and(|s| s.ready_instances() > 0))
            };
            if up {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    };
    let mut result = None;
    if ready.await {
        let run = serde_json::json!({
            "target": "echo", "method": "bytes", "in_flight": in_flight, "count": count, "payload": 64
        });
        let request = Envelope {
            id: 1,
            deadline_us: 300_000_000,
            kind: Kind::Request,
            destination: "client".into(),
            method: "run".into(),
            body: Body::Json(serde_json::to_vec(&run).unwrap_or_default().into()),
            ..Envelope::default()
        };
        let answer = supervisor.router.call(GATEWAY, request).await;
        if let (Kind::Response(Status::Ok), Body::Json(json)) = (&answer.kind, &answer.body) {
            if let Ok(report) = serde_json::from_slice::<serde_json::Value>(json) {
                let elapsed = report["elapsed_us"].as_f64().unwrap_or(f64::NAN) / 1e6;
                result = Some(Routed {
                    rate: report["count"].as_f64().unwrap_or(0.0) / elapsed,
                    p50_us: report["p50_us"].as_f64().unwrap_or(f64::NAN),
                    p99_us: report["p99_us"].as_f64().unwrap_or(f64::NAN),
                });
            }
        } else {
            tracing::warn!(?answer, "bench client failed");
        }
    }
    bench.finish().await;
    result
}

async fn python_baseline(in_flight: usize, count: usize) -> Option<Routed> {
    let dir = std::env::temp_dir().join(format!("switchboard-bench-py-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let script = dir.join("mp_queue_baseline.py");
    std::fs::write(&script, PYTHON_BASELINE).ok()?;
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(in_flight.to_string())
        .arg(count.to_string())
        .kill_on_drop(true)
        .output()
        .await
        .ok()?;
    let _ = std::fs::remove_dir_all(&dir);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    Some(Routed {
        rate: report["rate"].as_f64()?,
        p50_us: report["p50_us"].as_f64()?,
        p99_us: report["p99_us"].as_f64()?,
    })
}

/// `bench-peer` entry point: the processes the pipe baselines talk to.
pub fn peer(args: &[String]) -> std::io::Result<()> {
    match args {
        [kind] if kind == "echo" => pipes::echo(),
        [kind, window, count] if kind == "client" => {
            let parse = |s: &String| {
                s.parse::<usize>()
                    .map_err(|e| std::io::Error::other(e.to_string()))
            };
            pipes::client(parse(window)?, parse(count)?)
        }
        _ => Err(std::io::Error::other(
            "usage: bench-peer echo | client WINDOW COUNT",
        )),
    }
}
